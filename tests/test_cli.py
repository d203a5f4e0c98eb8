"""`python -m rlhf_jax.main`: a user mistake is one line on stderr and exit status 2.

Here through a real interpreter (absl's app.run included); the catalogue of mistakes runs
in-process in test_bad_inputs.py."""
import os
import subprocess
import sys

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


def test_unknown_config_key(tmp_path):
  result = run_main(SMOKE, f"--workdir={tmp_path / 'w'}", "--config.optim.learning_rate=0.1")
  assert_one_line_error(result, "--config.optim.learning_rate", "not a key")


def test_missing_config_file(tmp_path):
  result = run_main("--config=experiments/nope.py", f"--workdir={tmp_path / 'w'}")
  assert_one_line_error(result, "nope.py")
