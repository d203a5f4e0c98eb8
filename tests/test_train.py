"""The shared loop with the pretraining task: learning, determinism, exact resume (also past
a damaged checkpoint), data parallel / FSDP equivalence, signals, divergence, device→host
fetches, progress lines, and the files a run leaves behind."""
import collections
import io
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from rlhf_jax import configs, errors, metrics, train
from rlhf_jax.tasks import lm

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_config(corpus_path, **overrides):
  c = configs.base_config()
  c.data.path = corpus_path
  c.data.seq_len = 32
  c.model.preset = "tiny"
  c.model.num_layers = 1
  c.model.embed_dim = 32
  c.tokenizer.vocab_size = 300
  c.batch_size = 16
  c.total_steps = 12
  c.optim.lr = 3e-3
  c.optim.warmup_steps = 2
  c.log_every = 1
  c.eval_every = 6
  c.eval_steps = 2
  c.ckpt_every = 4
  return configs.override(c, **overrides)


def losses(workdir, key="train/loss"):
  return {r["step"]: r[key] for r in metrics.read_metrics(workdir) if key in r}


@pytest.fixture(scope="module")
def reference_run(corpus_path, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("reference"))
  state = train.run(tiny_config(corpus_path), workdir)
  return workdir, state


def test_run_learns_and_leaves_its_files(reference_run):
  workdir, state = reference_run
  assert int(state.step) == 12
  evals = losses(workdir, "eval/loss")
  assert sorted(evals) == [0, 6, 12]
  assert evals[12] < evals[0] - 0.5, evals
  rows = metrics.read_metrics(workdir)
  assert all("step" in r and "time" in r for r in rows)
  train_rows = [r for r in rows if "train/loss" in r]
  assert [r["step"] for r in train_rows] == list(range(1, 13))
  assert all(r["train/tokens"] == 16 * 32 for r in train_rows)
  assert any("train/tokens_per_sec" in r for r in train_rows)
  for name in ("config.json", "tokenizer.json", "info.json", "checkpoints", "tb"):
    assert os.path.exists(os.path.join(workdir, name)), name
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["12", "4", "8"]
  config = json.load(open(os.path.join(workdir, "config.json")))
  assert config["model"]["preset"] == "tiny"


def test_same_seed_same_losses_other_seed_differs(reference_run, corpus_path, tmp_path):
  again = str(tmp_path / "again")
  train.run(tiny_config(corpus_path), again)
  assert losses(again) == losses(reference_run[0])
  other = str(tmp_path / "other")
  train.run(tiny_config(corpus_path, seed=1, total_steps=3, eval_every=0), other)
  assert losses(other)[1] != losses(reference_run[0])[1]


def main_command(tmp_path, workdir, import_line, args, overrides=None):
  """`python -m rlhf_jax.main` on `make(*args, **overrides)`, a config factory imported by
  `import_line`, written as a config file."""
  config_file = os.path.join(tmp_path, "config_%s.py" % os.path.basename(workdir))
  with open(config_file, "w") as f:
    f.write("import sys\nsys.path.insert(0, %r)\n%s\n"
            "def get_config():\n  return make(*%r, **%r)\n" % (
                os.path.dirname(__file__), import_line, tuple(args), overrides or {}))
  return [sys.executable, "-m", "rlhf_jax.main", f"--config={config_file}",
          f"--workdir={workdir}"]


def test_sigterm_saves_a_checkpoint_then_resume_matches(reference_run, corpus_path, tmp_path,
                                                        monkeypatch):
  workdir = str(tmp_path / "sigterm")
  config = tiny_config(corpus_path, ckpt_every=0)
  batches_fed = []
  device_batch = train.sharding.device_batch

  def device_batch_then_signal(batch, mesh):  # SIGTERM arrives mid-run, between checkpoints
    batches_fed.append(1)
    if len(batches_fed) == 5:
      os.kill(os.getpid(), signal.SIGTERM)
    return device_batch(batch, mesh)

  monkeypatch.setattr(train.sharding, "device_batch", device_batch_then_signal)
  with pytest.raises(SystemExit) as exit_info:
    train.run(config, workdir)
  monkeypatch.undo()
  assert exit_info.value.code == 128 + signal.SIGTERM
  saved = os.listdir(os.path.join(workdir, "checkpoints"))
  assert len(saved) == 1 and 0 < int(saved[0]) < 12, saved
  assert max(losses(workdir)) == int(saved[0])
  train.run(config, workdir)
  assert losses(workdir) == losses(reference_run[0])


def test_a_resume_keeps_the_rows_up_to_its_step_a_start_over_keeps_none(tmp_path):
  """Killed after step 15 with a checkpoint at 10: the rerun logs from 11. Killed before the
  first checkpoint: the rerun starts over and logs its step-0 evaluation once, not twice."""
  def run(start_step, steps):
    writer = metrics.Writer(str(tmp_path), start_step)
    for step in steps:
      writer.write(step, {"loss": float(step)})
    writer.close()
    return [row["step"] for row in metrics.read_metrics(str(tmp_path))]

  run(0, [0, 5, 10, 15])
  assert run(10, [15, 20]) == [0, 5, 10, 15, 20]
  assert run(0, [0, 5]) == [0, 5]


TIMING = ("time", "train/steps_per_sec", "train/tokens_per_sec", "train/mfu")


def rows_without_timing(workdir):
  return [{k: v for k, v in row.items() if k not in TIMING}
          for row in metrics.read_metrics(workdir)]


def copy_with_damage(reference_workdir, workdir, damaged_steps):
  """A copy of a finished run whose checkpoints `damaged_steps` have their largest array
  data file cut in half."""
  shutil.copytree(reference_workdir, workdir)
  for step in damaged_steps:
    step_dir = os.path.join(workdir, "checkpoints", str(step))
    data_files = [os.path.join(root, name) for root, _, names in os.walk(step_dir)
                  for name in names if os.path.basename(root) == "d"]  # OCDBT's data
    largest = max(data_files, key=os.path.getsize)
    os.truncate(largest, os.path.getsize(largest) // 2)


def test_a_damaged_newest_checkpoint_is_set_aside_and_the_run_redone_from_the_one_before(
    reference_run, corpus_path, tmp_path, caplog):
  workdir = str(tmp_path / "damaged")
  copy_with_damage(reference_run[0], workdir, [12])
  with caplog.at_level(logging.WARNING):
    train.run(tiny_config(corpus_path), workdir)
  lines = [r.getMessage() for r in caplog.records if " is damaged " in r.getMessage()]
  assert len(lines) == 1 and lines[0].startswith("checkpoint step 12 is damaged (training "
                                                 "state: "), lines
  assert lines[0].endswith("12.damaged and resuming from step 8"), lines
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["12", "12.damaged",
                                                                      "4", "8"]
  assert rows_without_timing(workdir) == rows_without_timing(reference_run[0])
  redone = [row["time"] for row in metrics.read_metrics(workdir) if row["step"] > 8]
  assert min(redone) > max(row["time"] for row in metrics.read_metrics(reference_run[0]))


def test_no_intact_checkpoint_stops_the_command_with_one_error_line(reference_run, corpus_path,
                                                                    tmp_path):
  workdir = str(tmp_path / "all_damaged")
  copy_with_damage(reference_run[0], workdir, [4, 8, 12])
  config_file = tmp_path / "config.py"
  config_file.write_text(f"import sys\nsys.path.insert(0, {os.path.dirname(__file__)!r})\n"
                         f"from test_train import tiny_config\n"
                         f"def get_config():\n  return tiny_config({corpus_path!r})\n")
  result = subprocess.run([sys.executable, "-m", "rlhf_jax.main", f"--config={config_file}",
                           f"--workdir={workdir}"], cwd=REPO, capture_output=True, text=True,
                          check=False)
  assert result.returncode == 2, result.stderr[-3000:]
  lines = result.stderr.splitlines()
  errors = [line for line in lines if line.startswith("error:") or re.match(r"E\d{4} ", line)]
  assert errors == lines[-1:] and "Traceback" not in result.stderr, result.stderr[-3000:]
  assert errors[0].startswith(f"error: no intact checkpoint left in {workdir}/checkpoints "
                              f"(step 12: training state: "), errors
  assert errors[0].endswith("delete the damaged step folders there to start this run over, "
                            "or use a new --workdir"), errors
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["12", "4", "8"]


@pytest.mark.parametrize("mesh", [{"data": 8}, {"data": 2, "fsdp": 4}])
def test_data_parallel_and_fsdp_match_one_device(corpus_path, tmp_path, mesh):
  steps = dict(total_steps=5, eval_every=0, ckpt_every=0)
  one = str(tmp_path / "one")
  train.run(tiny_config(corpus_path, **{"mesh.data": 1}, **steps), one)
  sharded = str(tmp_path / "sharded")
  overrides = {"mesh.data": 1, "mesh.fsdp": 1, **{f"mesh.{k}": v for k, v in mesh.items()}}
  state = train.run(tiny_config(corpus_path, **overrides, **steps), sharded)
  reference, result = losses(one), losses(sharded)
  assert sorted(result) == [1, 2, 3, 4, 5]
  for step in result:
    assert abs(result[step] - reference[step]) <= 1e-5 * abs(reference[step]), step
  if "fsdp" in mesh:  # parameters really are split across devices
    wte = state.params["wte"]["embedding"].value
    shard_rows = {shard.data.shape[1] for shard in wte.addressable_shards}
    assert shard_rows == {wte.shape[1] // mesh["fsdp"]}, (wte.sharding, shard_rows)


def test_gradient_accumulation_matches_one_big_batch(corpus_path, tmp_path):
  steps = dict(total_steps=3, eval_every=0, ckpt_every=0)
  big = str(tmp_path / "big")
  train.run(tiny_config(corpus_path, **steps), big)
  accumulated = str(tmp_path / "accumulated")
  train.run(tiny_config(corpus_path, **{"optim.grad_accum_steps": 2}, **steps), accumulated)
  np.testing.assert_allclose(list(losses(accumulated).values()), list(losses(big).values()),
                             rtol=1e-5)


def test_init_from_warm_starts_params(reference_run, corpus_path, tmp_path):
  workdir = str(tmp_path / "warm")
  config = tiny_config(corpus_path, init_from=reference_run[0], total_steps=1, eval_every=1)
  state = train.run(config, workdir)
  warm_eval = losses(workdir, "eval/loss")[0]
  assert warm_eval == pytest.approx(losses(reference_run[0], "eval/loss")[12], rel=1e-5)
  assert int(jax.device_get(state.step)) == 1


def test_eval_at_start_false_skips_only_the_step_0_evaluation(corpus_path, tmp_path):
  workdir = str(tmp_path / "run")
  train.run(tiny_config(corpus_path, total_steps=4, eval_every=2, ckpt_every=0,
                        eval_at_start=False), workdir)
  assert sorted(losses(workdir, "eval/loss")) == [2, 4]


def test_a_second_interrupt_aborts_at_once(corpus_path, tmp_path, monkeypatch):
  """The first Ctrl-C asks for a checkpoint after the step; a second one before it is saved
  aborts: KeyboardInterrupt, no checkpoint, the previous handler back."""
  workdir = str(tmp_path / "interrupted")
  batches_fed = []
  device_batch = train.sharding.device_batch

  def device_batch_then_interrupt_twice(batch, mesh):
    batches_fed.append(1)
    if len(batches_fed) == 3:
      # raise_signal delivers to this thread and runs the Python handler before it returns;
      # os.kill may land on another thread, and two pending SIGINTs then count as one.
      signal.raise_signal(signal.SIGINT)
      signal.raise_signal(signal.SIGINT)
    return device_batch(batch, mesh)

  monkeypatch.setattr(train.sharding, "device_batch", device_batch_then_interrupt_twice)
  # Python's own Ctrl-C handler, as in a user's process; a test worker may hold another.
  worker_handler = signal.signal(signal.SIGINT, signal.default_int_handler)
  try:
    with pytest.raises(KeyboardInterrupt):
      train.run(tiny_config(corpus_path, ckpt_every=0, eval_every=0), workdir)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
  finally:
    signal.signal(signal.SIGINT, worker_handler)
  assert len(batches_fed) == 3
  assert not os.listdir(os.path.join(workdir, "checkpoints"))


def assert_checkpoints_finite(workdir, steps):
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == [str(s) for s in steps]
  for step in steps:
    state = ocp.StandardCheckpointer().restore(
        os.path.join(workdir, "checkpoints", str(step), "state"))
    leaves = [np.asarray(x) for x in jax.tree.leaves(state)]
    assert all(np.all(np.isfinite(x)) for x in leaves if np.issubdtype(x.dtype, np.inexact))


def test_divergence_exits_with_one_line_naming_the_step_and_metric(corpus_path, tmp_path):
  """lr 1e30, reached over the 2-step warmup: step 3's loss is NaN. No row is logged
  (log_every is beyond the run): the check before the checkpoint of step 4 stops it."""
  workdir = str(tmp_path / "diverged")
  overrides = {"total_steps": 6, "eval_every": 0, "log_every": 100, "ckpt_every": 2,
               "optim.lr": 1e30, "optim.grad_clip": 0.0}
  result = subprocess.run(main_command(tmp_path, workdir, "from test_train import tiny_config "
                                       "as make", [corpus_path], overrides),
                          cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 1, result.stderr[-3000:]
  errors_printed = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
  assert len(errors_printed) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
  assert errors_printed[0] == (
      "error: train/loss is nan, train/grad_norm is nan at step 3; the last checkpoint "
      "(step 2) is intact: rerun with the same --workdir and a lower --config.optim.lr (or "
      "optim.grad_clip set) to resume from it")
  assert_checkpoints_finite(workdir, [2])


def test_a_state_with_nan_or_inf_is_never_saved(corpus_path, tmp_path):
  """lr 3.4e38 (float32's largest) after a 1-step warmup: update 2 overflows parameters to
  ±inf, while step 2's metrics (computed before the update) are finite."""
  workdir = str(tmp_path / "diverged")
  config = tiny_config(corpus_path, total_steps=6, eval_every=0, log_every=100, ckpt_every=1,
                       **{"optim.lr": 3.4e38, "optim.warmup_steps": 1, "optim.grad_clip": 0.0})
  with pytest.raises(errors.Diverged, match=r"^the training state holds NaN/Inf after step 2 "
                                            r"\(its metrics were finite\); the last "
                                            r"checkpoint \(step 1\) is intact"):
    train.run(config, workdir)
  assert_checkpoints_finite(workdir, [1])


def count_fetches(monkeypatch, key):
  """Counter of device→host fetches by `key()`: every jax.device_get and float()/int()/bool()
  of a jax.Array goes through its `_value`. (jax's transfer guard would say the same on an
  accelerator; on the CPU an array already lives in host memory and is never guarded.)"""
  counts = collections.Counter()
  array_type = type(jnp.zeros(()))
  value = array_type._value
  monkeypatch.setattr(array_type, "_value",
                      property(lambda array: (counts.update([key()]), value.fget(array))[1]))
  return counts


def test_metrics_are_fetched_only_at_log_steps_and_boundaries(corpus_path, tmp_path,
                                                              monkeypatch):
  """12 steps, log_every=5: fetches after feeding step 1 (it compiled: the clock starts),
  steps 6 and 11 (the metrics of steps 5 and 10, one step late) and step 12 (the last, and
  its checkpoint); every step is dispatched under the device-to-host transfer guard."""
  guards = []
  device_batch = train.sharding.device_batch

  def device_batch_noting_the_guard(batch, mesh):
    guards.append(jax.config.jax_transfer_guard_device_to_host)
    return device_batch(batch, mesh)

  monkeypatch.setattr(train.sharding, "device_batch", device_batch_noting_the_guard)
  fetches = count_fetches(monkeypatch, key=lambda: len(guards))
  workdir = str(tmp_path / "run")
  train.run(tiny_config(corpus_path, log_every=5, eval_every=0, ckpt_every=0), workdir)
  monkeypatch.undo()
  assert guards == ["disallow"] * 12
  assert sorted(step for step in fetches if step) == [1, 6, 11, 12], fetches
  rows = metrics.read_metrics(workdir)
  assert [r["step"] for r in rows] == [5, 10, 12]
  assert "train/tokens_per_sec" in rows[0] and "train/loss" in rows[0]


def test_evaluation_sums_on_the_device_and_fetches_once(monkeypatch):
  def loss_sum(params, batch, rng):
    del rng
    return jnp.sum((batch["x"] - params) ** 2), (jnp.float32(batch["x"].size), {})

  batches = [{"x": jnp.arange(4.0) + i} for i in range(5)]
  evaluate = lm.eval_loss_fn(loss_sum)
  evaluate(jnp.float32(1.0), batches)  # compiles
  fetches = count_fetches(monkeypatch, key=lambda: "eval")
  results = evaluate(jnp.float32(1.0), batches)
  assert fetches["eval"] <= 2  # Σ loss and Σ count, in one jax.device_get
  assert results["eval/loss"] == pytest.approx(np.mean([(np.arange(4.0) + i - 1) ** 2
                                                        for i in range(5)]))


def test_loop_logs_plain_progress_lines_when_stderr_is_not_a_terminal(corpus_path, tmp_path,
                                                                       monkeypatch, caplog):
  monkeypatch.setattr(sys, "stderr", io.StringIO())  # a log file: tqdm shows no bar
  config = tiny_config(corpus_path, total_steps=4, log_every=2, eval_every=0, ckpt_every=0)
  with caplog.at_level(logging.INFO):
    train.run(config, str(tmp_path / "run"))
  lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("[pretrain]")]
  assert [line.split(" loss ")[0] for line in lines] == ["[pretrain] step 2/4",
                                                         "[pretrain] step 4/4"], lines
  assert all(" elapsed " in line for line in lines), lines
  assert "tokens/s" in lines[-1] and lines[-1].endswith(" eta 0s"), lines


def test_progress_line_reads_well():
  line = metrics.progress_line("ppo", 40, 50, {"train/loss": 0.41234, "train/tokens_per_sec": 1912},
                               elapsed=312, steps_done=40)
  assert line == "[ppo] step 40/50 loss 0.4123 tokens/s 1.9k elapsed 5m12s eta 1m18s"
  assert [metrics.format_duration(s) for s in (7.4, 3725)] == ["7s", "1h02m05s"]
