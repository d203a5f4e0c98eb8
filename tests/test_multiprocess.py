"""Two processes under jax.distributed (4 fake CPU devices each, gloo collectives) train as
one process with 8 devices does: the same losses, one set of files, one checkpoint per
step, and a rerun with more steps (on either process count) continues from it.

Both launches run `python -m rlhf_jax.main` with --coordinator_address, --num_processes and
--process_id; the reference runs in this process (8 devices, tests/conftest.py).
"""
import json
import os
import shutil
import subprocess

import jax

from rlhf_jax import train

from conftest import REPO, free_port
from test_train import losses, main_command, tiny_config

# A constant learning rate after warmup: a run cut at step 4 and resumed with total_steps=6
# follows the same schedule as one uninterrupted 6-step run. No evaluation: its compilation
# would cost each of the four processes a second (the validation batches are split as the
# training ones are: tests/test_pipeline.py).
OVERRIDES = {"total_steps": 6, "eval_every": 0, "ckpt_every": 2, "optim.schedule": "constant"}
# Measured: the two runs' losses differ by at most 1 float32 ulp (4.8e-7 at 5.6): XLA sums
# the gradients across processes (gloo) in another order than within one.
RTOL = 1e-6


def run_two_processes(command, logs_dir) -> list[str]:
  """Runs `command` as processes 0 and 1 of one jax.distributed run; returns their stderr."""
  address = f"127.0.0.1:{free_port()}"
  env = {**os.environ, "PYTHONPATH": REPO, "JAX_PLATFORMS": "cpu",
         "JAX_CPU_ENABLE_ASYNC_DISPATCH": "false",
         "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
  paths = [os.path.join(logs_dir, f"process_{i}.log") for i in range(2)]
  processes = []
  try:
    for i, path in enumerate(paths):
      with open(path, "w", encoding="utf-8") as log:
        processes.append(subprocess.Popen(
            [*command, f"--coordinator_address={address}", "--num_processes=2",
             f"--process_id={i}"], cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=log))
    for process in processes:
      process.wait(timeout=300)
  finally:
    for process in processes:  # one that failed leaves the other waiting in a collective
      if process.poll() is None:
        process.kill()
  stderr = [open(path, encoding="utf-8").read() for path in paths]
  for process, text in zip(processes, stderr):
    assert process.returncode == 0, text[-3000:]
  return stderr


def assert_close(result: dict, reference: dict, steps):
  assert sorted(result) == list(steps), result
  for step in steps:
    assert abs(result[step] - reference[step]) <= RTOL * abs(reference[step]), (
        step, result[step], reference[step])


def test_two_processes_train_save_and_resume_as_one_process(corpus_path, tmp_path):
  reference = str(tmp_path / "one_process")
  train.run(tiny_config(corpus_path, **OVERRIDES), reference)
  assert jax.process_count() == 1 and jax.device_count() == 8

  workdir = str(tmp_path / "two_processes")
  command = main_command(tmp_path, workdir, "from test_train import tiny_config as make",
                         [corpus_path], OVERRIDES)
  stderr = run_two_processes([*command, "--config.total_steps=4"], tmp_path)
  assert "process 1 of 2 (4 local devices of 8)" in stderr[1]
  assert "[pretrain] step" in stderr[0] and "[pretrain] step" not in stderr[1]
  assert_close(losses(workdir), losses(reference), range(1, 5))

  # Written once: one row per step, one TensorBoard file, one folder per checkpoint that
  # both processes wrote into, holding the data position the single process saved.
  rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  assert [r["step"] for r in rows] == [1, 2, 3, 4]
  assert len(os.listdir(os.path.join(workdir, "tb"))) == 1
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["2", "4"]
  step_dir = os.path.join(workdir, "checkpoints", "4")
  assert sorted(os.listdir(os.path.join(step_dir, "state", "array_metadatas"))) == [
      "process_0", "process_1"]
  for name in ("data/metadata", "_CHECKPOINT_METADATA"):
    assert os.path.isfile(os.path.join(step_dir, name)), name
  assert (json.load(open(os.path.join(step_dir, "data", "metadata"))) ==
          json.load(open(os.path.join(reference, "checkpoints", "4", "data", "metadata"))))
  for name in ("config.json", "info.json", "tokenizer.json"):
    assert os.path.isfile(os.path.join(workdir, name)), name

  # A single process resumes the two processes' checkpoint (a copy) ...
  single = str(tmp_path / "resumed_by_one")
  shutil.copytree(workdir, single)
  train.run(tiny_config(corpus_path, **OVERRIDES), single)
  # ... and so do two processes, with more steps: rows 1-4 stay as they were.
  run_two_processes(command, tmp_path)
  resumed = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  assert resumed[:len(rows)] == rows
  for run in (workdir, single):
    assert_close(losses(run), losses(reference), range(1, 7))
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["2", "4", "6"]
