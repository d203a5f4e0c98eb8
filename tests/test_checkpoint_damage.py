"""Damaged checkpoints and full disks (`checkpoint.Checkpointer`): every file of a checkpoint
deleted or truncated in turn, for each kind of training state; no intact checkpoint; a
config mismatch; a save that runs out of disk space."""
import errno
import logging
import os
import shutil
import subprocess
import sys
import textwrap

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from etils import epath
from jax.sharding import NamedSharding, PartitionSpec as P

from rlhf_jax import checkpoint, configs, optim, rl
from rlhf_jax import checkpoint_damage as damage_lib
from rlhf_jax.errors import UserError
from rlhf_jax.tasks.base import TrainState
from rlhf_jax.tasks.ppo import PPOState

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TX = optim.make_optimizer(configs.base_config().optim, total_steps=10)


def lm_params(seed):
  """A GPT-like tree: boxed (logically named) leaves, one sharded over 8 devices."""
  mesh = jax.sharding.Mesh(np.array(jax.devices()), ("data",))
  wte = jax.device_put(jax.random.normal(jax.random.key(seed), (16, 8)),
                       NamedSharding(mesh, P("data")))
  return {"wte": {"embedding": nn.Partitioned(wte, ("vocab", "embed"))},
          "head": {"kernel": jax.random.normal(jax.random.key(seed + 1), (8, 3)),
                   "bias": jnp.full((3,), float(seed))}}


def train_state(seed):  # pretrain, SFT and RM
  return TrainState.create(lm_params(seed), TX)


def ppo_state(seed):
  return PPOState(step=jnp.array(seed, jnp.int32), policy=train_state(seed),
                  critic=train_state(seed + 10), reference_params=lm_params(seed + 20),
                  reward_params=lm_params(seed + 30), reward_bias=jnp.float32(0.5),
                  reward_gain=jnp.float32(2.0), kl_coef=jnp.float32(0.1),
                  score_moments=rl.RunningMoments.create(), ema_params=lm_params(seed + 40))


STATES = {"train_state": train_state, "ppo_state": ppo_state}


def abstract_and_shardings(state):
  return jax.eval_shape(lambda: state), jax.tree.map(lambda x: x.sharding, state)


def save(directory, states, keep=3):
  saver = checkpoint.Checkpointer(str(directory), keep=keep)
  for step, state in states.items():
    saver.save(step, state, {"position": step})
  saver.wait()
  saver.close()


def restore(directory, like):
  saver = checkpoint.Checkpointer(str(directory), keep=3)
  try:
    return saver.restore(*abstract_and_shardings(like))
  finally:
    saver.close()


def same(a, b) -> bool:
  return jax.tree.structure(a) == jax.tree.structure(b) and all(
      np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def files_of(step_dir):
  return sorted(os.path.relpath(os.path.join(root, name), step_dir)
                for root, _, names in os.walk(step_dir) for name in names)


def damage(path, how):
  if how == "delete":
    shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
  else:
    os.truncate(path, os.path.getsize(path) // 2)


def damaged_lines(caplog):
  return [r.getMessage() for r in caplog.records if "is damaged" in r.getMessage()]


@pytest.mark.parametrize("kind,how", [("train_state", "delete"), ("ppo_state", "truncate")])
def test_every_damaged_file_is_caught_or_harmless(kind, how, tmp_path, caplog):
  """Each file of the newest checkpoint deleted (and each item folder) or halved in turn:
  the restore falls back to the older step (one warning, the damaged step renamed) or,
  for a file it does not read, returns the newest exactly."""
  old, new = STATES[kind](1), STATES[kind](2)
  pristine = tmp_path / "pristine"
  save(pristine, {4: old, 8: new})
  step_dir = pristine / "8"
  names = files_of(step_dir)
  folders = ["state", "data"] if how == "delete" else []
  caught = set()
  for name in names + folders:
    work = tmp_path / "work"
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(pristine, work)
    damage(work / "8" / name, how)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
      state, data_state = restore(work, old)
    lines = damaged_lines(caplog)
    if same(state, new):  # a file the restore does not read
      assert data_state == {"position": 8} and not lines, name
      assert sorted(os.listdir(work)) == ["4", "8"], name
      continue
    caught.add(name)
    assert same(state, old) and data_state == {"position": 4}, name
    assert sorted(os.listdir(work)) == ["4", "8.damaged"], name
    assert len(lines) == 1 and "\n" not in lines[0], lines
    assert lines[0].startswith("checkpoint step 8 is damaged (")
    assert lines[0].endswith(f"moved it to {work}/8.damaged and resuming from step 4")
  # The data position, the tree, the array index, array data (files in d/), the items:
  assert {"data/metadata", "state/_METADATA", "state/manifest.ocdbt", *folders} <= caught
  assert any("/d/" in name for name in caught), sorted(caught)


def test_a_truncated_array_file_is_named_in_the_warning(tmp_path, caplog):
  save(tmp_path, {4: train_state(1), 8: train_state(2)})
  for name in files_of(tmp_path / "8"):
    if "/d/" in name:  # OCDBT's data files: the arrays and their index
      damage(tmp_path / "8" / name, "truncate")
  with caplog.at_level(logging.WARNING):
    restore(tmp_path, train_state(1))
  assert [r.getMessage() for r in caplog.records] == damaged_lines(caplog)  # orbax is quiet
  (line,) = damaged_lines(caplog)
  assert "(training state: ValueError: OUT_OF_RANGE:" in line and "8/state/" in line, line
  assert "tensorstore_spec" not in line and len(line) < 500, line


def test_a_later_save_of_a_damaged_step_keeps_the_damaged_copy(tmp_path):
  save(tmp_path, {4: train_state(1), 8: train_state(2)})
  for attempt in (1, 2):
    damage(tmp_path / "8" / "data" / "metadata", "delete")
    state, _ = restore(tmp_path, train_state(1))
    save(tmp_path, {8: train_state(3)})  # the resumed run reaches step 8 again
  assert sorted(os.listdir(tmp_path)) == ["4", "8", "8.damaged", "8.damaged.2"]
  assert same(restore(tmp_path, train_state(1))[0], train_state(3))


def test_no_intact_checkpoint_is_a_one_line_error_that_moves_nothing(tmp_path):
  save(tmp_path, {4: train_state(1), 8: train_state(2)})
  damage(tmp_path / "8" / "data" / "metadata", "truncate")
  damage(tmp_path / "4" / "state", "delete")
  with pytest.raises(UserError) as error:
    restore(tmp_path, train_state(1))
  message = str(error.value)
  assert "\n" not in message and f"no intact checkpoint left in {tmp_path} (" in message
  assert "step 8: data-iterator state: JSONDecodeError" in message
  assert "step 4: training state: KeyError" in message
  assert message.endswith("delete the damaged step folders there to start this run over, "
                          "or use a new --workdir")
  assert sorted(os.listdir(tmp_path)) == ["4", "8"]


def test_running_out_of_memory_while_restoring_is_not_damage(tmp_path, monkeypatch):
  save(tmp_path, {4: train_state(1), 8: train_state(2)})

  def out_of_memory(*args, **kwargs):
    try:
      raise ValueError("RESOURCE_EXHAUSTED: Out of memory allocating 1.2GiB")
    except ValueError as e:  # wrapped, as orbax wraps tensorstore's errors
      raise Exception("Encountered error while reading array index: (0,)") from e

  monkeypatch.setattr(checkpoint.ocp.CheckpointManager, "restore", out_of_memory)
  with pytest.raises(Exception, match="Encountered error while reading"):
    restore(tmp_path, train_state(1))
  assert sorted(os.listdir(tmp_path)) == ["4", "8"]


def test_disk_full_is_recognised_in_both_forms():
  tensorstore = ValueError('RESOURCE_EXHAUSTED: Error writing "x": Failed to write 12 bytes '
                           "to file 4: No space left on device [os_error_code='28']")
  assert damage_lib.disk_full(tensorstore) == "No space left on device"
  assert damage_lib.disk_full(OSError(errno.EDQUOT, "quota")) == "Disk quota exceeded"
  assert damage_lib.disk_full(ValueError("OUT_OF_RANGE: short read")) is None


def test_a_checkpoint_of_another_model_is_a_config_error_not_damage(tmp_path):
  save(tmp_path, {4: train_state(1)})
  wider = TrainState.create({"head": {"kernel": jnp.zeros((8, 5))}}, TX)
  with pytest.raises(UserError, match=r"does not match this config's model or task \("
                                      r".*head/kernel \(8, 3\)/float32 vs \(8, 5\)"):
    restore(tmp_path, wider)
  assert os.listdir(tmp_path) == ["4"]


def test_a_full_disk_during_a_save_stops_with_one_line_and_keeps_the_last_checkpoint(
    tmp_path, monkeypatch, caplog):
  """The data position is written by Python (orbax's JSON handler): its write fails."""
  saver = checkpoint.Checkpointer(str(tmp_path), keep=3)
  saver.save(4, train_state(1), {"position": 4})
  saver.wait()
  path_type = type(epath.Path(str(tmp_path)))
  write_text = path_type.write_text

  def disk_full(self, *args, **kwargs):
    if self.name == "metadata" and "data" in str(self.parent):
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))
    return write_text(self, *args, **kwargs)

  monkeypatch.setattr(path_type, "write_text", disk_full)
  with pytest.raises(UserError) as error:  # from the save itself or, async, from wait()
    saver.save(8, train_state(2), {"position": 8})
    saver.wait()
  monkeypatch.undo()
  saver.close()
  assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
  message = str(error.value)
  assert "\n" not in message
  assert message.startswith(f"cannot save a checkpoint in {tmp_path}: No space left on device;")
  assert "newest complete checkpoint, step 4, is intact and a rerun resumes from it" in message
  assert [name for name in os.listdir(tmp_path) if name.isdigit()] == ["4"]
  state, data_state = restore(tmp_path, train_state(1))
  assert same(state, train_state(1)) and data_state == {"position": 4}
  save(tmp_path, {8: train_state(2)})  # space freed, the rerun saves step 8 again
  assert sorted(os.listdir(tmp_path)) == ["4", "8"]


_FULL_DISK_SCRIPT = textwrap.dedent("""
    import os, sys
    sys.path.insert(0, {tests!r})
    import conftest  # 8 fake CPU devices, as in every test
    import jax
    from rlhf_jax import checkpoint
    from rlhf_jax.errors import UserError
    from test_checkpoint_damage import TX, TrainState, same
    directory = sys.argv[1]
    def state(seed):  # ~0.5 MB of random numbers (incompressible) and their Adam moments
      return TrainState.create({{"w": jax.random.normal(jax.random.key(seed), (128, 1024))}}, TX)
    saver = checkpoint.Checkpointer(directory, keep=3)
    try:
      for step in (1, 2, 3):
        saver.save(step, state(step), {{"position": step}})
      saver.wait()
    except UserError as e:
      print("error:", e)
    saver.close()
    restored, data = checkpoint.Checkpointer(directory, keep=3).restore(
        jax.eval_shape(lambda: state(1)), jax.tree.map(lambda x: x.sharding, state(1)))
    print("restored", data["position"], same(restored, state(data["position"])))
""")


def test_a_really_full_disk(tmp_path):
  """A 1 MB tmpfs (in a user and mount namespace of its own) holds one checkpoint, not two:
  tensorstore's write fails with ENOSPC."""
  mount = tmp_path / "disk"
  mount.mkdir()
  probe = subprocess.run(["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=1m tmpfs {mount}"],
                         capture_output=True, check=False)
  if probe.returncode:
    pytest.skip(f"cannot mount a small tmpfs here: {probe.stderr.decode().strip()}")
  script = tmp_path / "full_disk.py"
  script.write_text(_FULL_DISK_SCRIPT.format(tests=os.path.dirname(__file__)))
  result = subprocess.run(
      ["unshare", "-rm", "sh", "-c", f'mount -t tmpfs -o size=1m tmpfs {mount} && '
       f'"{sys.executable}" {script} {mount}/checkpoints'],
      capture_output=True, text=True, cwd=REPO, check=False,
      env={**os.environ, "PYTHONPATH": REPO})
  lines = result.stdout.splitlines()
  assert result.returncode == 0, result.stderr[-3000:]
  assert len(lines) == 2 and lines[0].startswith("error: cannot save a checkpoint in "), lines
  assert ": No space left on device; " in lines[0] and "step 1, is intact" in lines[0], lines
  assert lines[1] == "restored 1 True", result.stdout
  assert "Traceback" not in result.stderr and "rror" not in result.stderr, result.stderr[-3000:]
