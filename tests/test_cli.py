"""`python -m rlhf_jax.main`: a user mistake is one line on stderr and exit status 2."""
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = "--config=experiments/pretrain_shakespeare.py:smoke"


def run_main(*args, timeout=300):
  return subprocess.run([sys.executable, "-m", "rlhf_jax.main", *args], cwd=REPO,
                        capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(result, *fragments):
  assert result.returncode == 2, result.stderr[-3000:]
  errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
  assert len(errors) == 1, result.stderr[-3000:]
  assert "Traceback" not in result.stderr
  for fragment in fragments:
    assert fragment in errors[0], errors[0]


def test_missing_corpus(tmp_path):
  result = run_main(SMOKE, f"--workdir={tmp_path / 'w'}",
                    f"--config.data.path={tmp_path / 'nope.txt'}")
  assert_one_line_error(result, "nope.txt", "matches no file")


def test_empty_corpus(tmp_path):
  (tmp_path / "empty.txt").write_text("")
  result = run_main(SMOKE, f"--workdir={tmp_path / 'w'}",
                    f"--config.data.path={tmp_path / 'empty.txt'}")
  assert_one_line_error(result, "empty.txt", "empty")


def test_undecodable_bytes(tmp_path):
  (tmp_path / "bad.txt").write_bytes(b"fine line\nbad \xff\xfe bytes\n")
  result = run_main(SMOKE, f"--workdir={tmp_path / 'w'}",
                    f"--config.data.path={tmp_path / 'bad.txt'}")
  assert_one_line_error(result, "bad.txt:2", "UTF-8")


def test_unknown_config_key(tmp_path):
  result = run_main(SMOKE, f"--workdir={tmp_path / 'w'}", "--config.optim.learning_rate=0.1")
  assert_one_line_error(result, "learning_rate")


def test_missing_config_file(tmp_path):
  result = run_main("--config=experiments/nope.py", f"--workdir={tmp_path / 'w'}")
  assert_one_line_error(result, "nope.py")


def test_batch_not_divisible_by_data_parallel_devices(tmp_path, corpus_path):
  # conftest gives 8 (fake) devices; 12 sequences cannot be split 8 ways.
  result = run_main(SMOKE, f"--workdir={tmp_path / 'w'}", f"--config.data.path={corpus_path}",
                    "--config.batch_size=12")
  assert_one_line_error(result, "batch_size=12", "8 data-parallel devices")


@pytest.mark.parametrize("flag,fragment", [("--config.model.preset=huge", "model.preset"),
                                           ("--config.mesh.fsdp=3", "mesh")])
def test_bad_config_values(tmp_path, corpus_path, flag, fragment):
  result = run_main(SMOKE, f"--workdir={tmp_path / 'w'}", f"--config.data.path={corpus_path}",
                    flag)
  assert_one_line_error(result, fragment)
