"""Orbax checkpoints: the training state plus the data iterator's position.

Layout: `WORKDIR/checkpoints/<step>/{state,data}`. `state` is restored straight
into the target shardings (never materialised unsharded); `data` is the grain
iterator state as JSON, so a resumed run continues the same data order.

Damage. Orbax commits a step by renaming its temporary folder, so a save cut short (a
kill, a full disk) never shows up as a step. A committed step can still be damaged later
(a file truncated or deleted, a bad copy); orbax's metadata calls then return None rather
than raise, so the restore is the check, not a checksum manifest of our own: it reads
every byte the state and the data position are made of, and a missing or short file
fails it (tensorstore's NOT_FOUND / OUT_OF_RANGE / DATA_LOSS, a JSON item that does not
parse). Files a restore does not read (orbax's commit markers, `_CHECKPOINT_METADATA`,
`_sharding`, unreferenced OCDBT data) cannot change the restored state, so damage there is
not reported; tests/test_checkpoint_damage.py damages every file in turn.
- At resume a damaged step is renamed `<step>.damaged` (kept for the user; orbax ignores
  names that are not numbers, and a later save of that step cannot collide with it), one
  warning says which step and what is wrong, and the next older step is restored.
- No intact step left: a UserError (`error:`, exit status 2) that names the directory and
  the fix; nothing is renamed, so every rerun says the same until the user acts.
- A full disk during a save: a UserError too (exit 2: the run cannot go on until the
  user frees space; exit 1 is for a diverged run), naming the newest complete step,
  which a rerun resumes from; that run deletes the save's temporary folder.
"""
import contextlib
import logging
import os

import jax
import orbax.checkpoint as ocp

from rlhf_jax import checkpoint_damage as damage, hf
from rlhf_jax.errors import UserError


def _abstract_with_shardings(abstract_tree, shardings):
  """Shape/dtype leaves that carry their target sharding (`shardings` may be a tree prefix)."""
  def attach(sharding, subtree):
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding),
                        subtree)
  return jax.tree.map(attach, shardings, abstract_tree)


class _Retention:
  """Which checkpoints orbax keeps after a save (an orbax PreservationPolicy): the newest
  `keep` of those on the save schedule, and the newest of all. A stop's checkpoint (SIGTERM,
  Ctrl-C) is off the schedule: it is where the rerun resumes, and the next save replaces it
  without counting against `keep`, so an interrupted run ends with the checkpoints of an
  uninterrupted one (the report's reward-vs-KL curve reads PPO's)."""

  def __init__(self, keep: int):
    self.keep = keep
    self.on_schedule = lambda step: True

  def should_preserve(self, checkpoints, *, context):
    del context
    steps = [info.step for info in checkpoints]  # oldest first
    kept = set([step for step in steps if self.on_schedule(step)][-self.keep:] + steps[-1:])
    return [step in kept for step in steps]


class Checkpointer:
  """Saves when the loop asks, keeps the newest `keep` on its schedule (see `_Retention`)."""

  def __init__(self, directory: str, keep: int):
    self.directory = os.path.abspath(directory)
    self._retention = _Retention(keep)
    # cleanup_tmp_directories: a save cut short (e.g. by a full disk) leaves a temporary
    # folder; the next run deletes it instead of leaving its space taken.
    options = ocp.CheckpointManagerOptions(preservation_policy=self._retention, create=True,
                                           cleanup_tmp_directories=True)
    self._manager = ocp.CheckpointManager(self.directory, options=options,
                                          item_names=("state", "data"))
    damage.quiet_orbax_failures()

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, state, data_state: dict, on_schedule=None) -> None:
    """`on_schedule(step)`: whether the loop saves `step` without being stopped there (default:
    every step is; then the newest `keep` are kept)."""
    if on_schedule is not None:
      self._retention.on_schedule = on_schedule
    # Saves run in the background: a failure surfaces here at the next save, or in wait().
    with self._stop_if_disk_full():
      self._manager.save(step, args=ocp.args.Composite(
          state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state)), force=True)

  def restore(self, abstract_state, shardings):
    """(state, data_state) of the newest intact checkpoint, placed in `shardings`.

    Newer damaged checkpoints are set aside as `<step>.damaged`, one warning each. A
    checkpoint of another model or task, or no intact checkpoint at all, is a UserError
    (and then nothing is moved).
    """
    target = _abstract_with_shardings(abstract_state, shardings)
    damaged = []  # (step, what is wrong), newest first
    with damage.quiet_restore_attempts():
      for step in sorted(self._manager.all_steps(), reverse=True):
        try:
          state, data_state = self._restore_step(step, target)
          break
        except _Damaged as e:
          self._check_fits(step, abstract_state)
          damaged.append((step, str(e)))
      else:
        problems = "; ".join(f"step {step}: {problem}" for step, problem in damaged)
        raise UserError(f"no intact checkpoint left in {self.directory} ({problems}); "
                        f"delete the damaged step folders there to start this run over, or "
                        f"use a new --workdir")
    for bad_step, problem in damaged:
      moved_to = damage.set_aside(self.directory, bad_step)
      logging.warning("checkpoint step %d is damaged (%s); moved it to %s and resuming from "
                      "step %d", bad_step, problem, moved_to, step)
    self._manager.reload()
    logging.info("restored step %d from %s", step, self.directory)
    return state, data_state

  def _restore_step(self, step: int, target):
    """One step's (state, data_state), each item read on its own so an error says which."""
    return (self._restore_item(step, "state", ocp.args.StandardRestore(target), "training state"),
            self._restore_item(step, "data", ocp.args.JsonRestore(), "data-iterator state"))

  def _restore_item(self, step: int, name: str, args, what: str):
    try:
      value = self._manager.restore(step, args=ocp.args.Composite(**{name: args}))[name]
    except Exception as e:  # pylint: disable=broad-except  (damage surfaces as anything)
      if damage.out_of_memory(e):  # the checkpoint may be fine: not a reason to skip it
        raise
      raise _Damaged(f"{what}: {damage.describe_error(e, self.directory)}") from None
    if value is None:
      raise _Damaged(f"{what}: missing")
    return value

  def _check_fits(self, step: int, abstract_state) -> None:
    """A restore failed: if the step's (readable) metadata says it holds another tree,
    that is the user's config, not damage."""
    saved = _saved_shapes(os.path.join(self.directory, str(step), "state"))
    target = _leaf_shapes(abstract_state)
    if saved is not None and saved != target:
      raise UserError(
          f"checkpoint {self.directory}/{step} does not match this config's model or task "
          f"({_describe_mismatch(saved, target)}); resume with the config it was written "
          f"with or use a new --workdir")

  @contextlib.contextmanager
  def _stop_if_disk_full(self):
    try:
      yield
    except Exception as e:  # pylint: disable=broad-except
      reason = damage.disk_full(e)
      if reason is None:
        raise
      steps = damage.finished_steps(self.directory)
      kept = (f"its newest complete checkpoint, step {steps[-1]}, is intact and a rerun "
              f"resumes from it" if steps else "it has no complete checkpoint yet")
      raise UserError(f"cannot save a checkpoint in {self.directory}: {reason}; the run "
                      f"stopped and {kept}: free disk space (or lower --config.keep_ckpts) "
                      f"and rerun the same command") from None

  def wait(self) -> None:
    with self._stop_if_disk_full():
      self._manager.wait_until_finished()

  def close(self) -> None:
    with self._stop_if_disk_full():
      self._manager.close()


class _Damaged(Exception):
  """A checkpoint item could not be read back; the message says which and why."""


def _saved_tree(path: str):
  """The tree metadata of a saved state (leaves with .shape and .dtype); None if unreadable."""
  try:
    metadata = ocp.StandardCheckpointer().metadata(path).item_metadata
  except Exception:  # pylint: disable=broad-except
    return None
  return None if metadata is None else getattr(metadata, "tree", metadata)


def _saved_shapes(path: str) -> dict[str, tuple] | None:
  """'a/b/value' → (shape, dtype name) of a saved state's leaves; None if unreadable."""
  tree = _saved_tree(path)
  if tree is None:
    return None
  return _leaf_shapes(tree, is_leaf=lambda x: hasattr(x, "shape") and hasattr(x, "dtype"))


def _damaged_source(name: str, workdir: str, step_dir: str, problem: str) -> UserError:
  return UserError(f"{name}={workdir!r}: its newest checkpoint {step_dir} is damaged "
                   f"({problem}); rerun the training that wrote it (the resume sets the "
                   f"damaged step aside and redoes it) or point {name} at another workdir")


def _key_name(key) -> str:
  for attr in ("key", "name", "idx"):
    if hasattr(key, attr):
      return str(getattr(key, attr))
  return str(key)


def _leaf_shapes(tree, is_leaf=None) -> dict[str, tuple]:
  """'a/b/value' → (shape, dtype name) of every leaf (nn.Partitioned boxes show as '/value')."""
  leaves, _ = jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_leaf)
  return {"/".join(_key_name(k) for k in path): (tuple(leaf.shape), str(leaf.dtype))
          for path, leaf in leaves}


def _describe_mismatch(source: dict, target: dict, limit: int = 6) -> str:
  missing = sorted(set(target) - set(source))
  unexpected = sorted(set(source) - set(target))
  mismatched = sorted(f"{k} {source[k][0]}/{source[k][1]} vs {target[k][0]}/{target[k][1]}"
                      for k in set(source) & set(target) if source[k] != target[k])
  parts = []
  for what, names in (("missing in the checkpoint", missing),
                      ("not in this model", unexpected),
                      ("checkpoint vs model shape/dtype", mismatched)):
    if names:
      more = f" (+{len(names) - limit} more)" if len(names) > limit else ""
      parts.append(f"{what}: {', '.join(names[:limit])}{more}")
  return "; ".join(parts)


def _read_only_manager(workdir: str, name: str = "init_from"):
  """(manager, step, directory) of a workdir's newest checkpoint; creates and writes nothing."""
  directory = os.path.join(os.path.abspath(workdir), "checkpoints")
  step = None
  damage.quiet_orbax_failures()
  if os.path.isdir(directory):
    manager = ocp.CheckpointManager(
        directory, options=ocp.CheckpointManagerOptions(create=False, read_only=True),
        item_names=("state", "data"))
    step = manager.latest_step()
    if step is None:
      manager.close()
  if step is None:
    flag = f"--{name}" if name == "workdir" else f"--config.{name}"
    raise UserError(f"{name}={workdir!r} holds no checkpoint under {directory}; point "
                    f"{flag} at a finished run's workdir")
  return manager, step, directory


def latest_step(workdir: str) -> int | None:
  """The step of a workdir's newest checkpoint, None when it has none; creates nothing.

  A listing, not a CheckpointManager: under several processes a manager takes part in
  barriers, and a run's own checkpoints folder appears (process 0 creates it) while the
  others may still be asking this.
  """
  directory = os.path.join(os.path.abspath(workdir), "checkpoints")
  if not os.path.isdir(directory):
    return None
  return max(ocp.utils.checkpoint_steps(directory), default=None)


def saved_step(workdir: str, name: str = "init_from") -> int:
  """The step of a workdir's newest checkpoint."""
  manager, step, _ = _read_only_manager(workdir, name)
  manager.close()
  return step


def saved_steps(workdir: str, name: str = "init_from") -> list[int]:
  """The steps of every checkpoint a workdir keeps, oldest first."""
  manager, _, _ = _read_only_manager(workdir, name)
  steps = sorted(manager.all_steps())
  manager.close()
  return steps


def saved_params_shapes(workdir: str, name: str = "init_from") -> dict[str, tuple]:
  """'path/to/leaf' → (shape, dtype name) of the params in a workdir's newest checkpoint
  (or those a Hugging Face GPT-2 directory restores into)."""
  if hf.is_hf_directory(workdir):
    return hf.params_shapes(workdir)
  manager, step, directory = _read_only_manager(workdir, name)
  manager.close()
  step_dir = os.path.join(directory, str(step))
  with damage.quiet_restore_attempts():
    tree = _saved_tree(os.path.join(step_dir, "state"))
  if tree is None:
    raise _damaged_source(name, workdir, step_dir, "orbax cannot read its metadata")
  return _leaf_shapes(tree["params"],
                      is_leaf=lambda x: hasattr(x, "shape") and hasattr(x, "dtype"))


def restore_params(workdir: str, abstract_params, shardings, name: str = "init_from"):
  """Params of the newest checkpoint of another stage's workdir (a warm start).

  The saved params must match `abstract_params` leaf for leaf (names, shapes, dtypes);
  otherwise a UserError lists the missing, unexpected and mismatched leaves. A model
  with parts that are new by design (a reward head on an SFT backbone) restores only
  its matching sub-tree and keeps the fresh init of the rest. They are read straight
  into `shardings`; nothing is created or written in `workdir`. `name` is the setting
  that named the workdir, for error messages. A Hugging Face GPT-2 directory instead
  of a workdir is converted on the fly (rlhf_jax/hf.py).
  """
  if hf.is_hf_directory(workdir):
    return hf.restore_params(workdir, abstract_params, shardings)
  source = saved_params_shapes(workdir, name)
  target = _leaf_shapes(abstract_params)
  if source != target:
    raise UserError(f"{name}={workdir!r}: its parameters do not fit this model "
                    f"({_describe_mismatch(source, target)}); use the model config it was "
                    f"trained with, or a workdir of the stage this one builds on")
  manager, step, directory = _read_only_manager(workdir, name)
  restore_target = {"params": _abstract_with_shardings(abstract_params, shardings)}
  try:
    with damage.quiet_restore_attempts():
      restored = manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.PyTreeRestore(
              item=restore_target, partial_restore=True,
              restore_args=ocp.checkpoint_utils.construct_restore_args(restore_target))))
  except Exception as e:  # pylint: disable=broad-except  (the leaves fit: it is damage)
    if damage.out_of_memory(e):
      raise
    raise _damaged_source(name, workdir, os.path.join(directory, str(step)),
                          damage.describe_error(e, directory)) from None
  finally:
    manager.close()
  return restored.state["params"]
