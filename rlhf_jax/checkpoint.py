"""Orbax checkpoints: the training state plus the data iterator's position.

Layout: `WORKDIR/checkpoints/<step>/{state,data}`. `state` is restored straight
into the target shardings (never materialised unsharded); `data` is the grain
iterator state as JSON, so a resumed run continues the same data order.
"""
import logging
import os

import jax
import orbax.checkpoint as ocp

from rlhf_jax import hf
from rlhf_jax.errors import UserError


def _abstract_with_shardings(abstract_tree, shardings):
  """Shape/dtype leaves that carry their target sharding (`shardings` may be a tree prefix)."""
  def attach(sharding, subtree):
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding),
                        subtree)
  return jax.tree.map(attach, shardings, abstract_tree)


class Checkpointer:
  """Saves every `save_every` steps (and on demand), keeps the newest `keep`."""

  def __init__(self, directory: str, keep: int):
    self.directory = os.path.abspath(directory)
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
    self._manager = ocp.CheckpointManager(self.directory, options=options,
                                          item_names=("state", "data"))

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, state, data_state: dict) -> None:
    self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state)), force=True)

  def restore(self, abstract_state, shardings):
    """(state, data_state) of the latest step, placed in `shardings`."""
    step = self.latest_step()
    target = _abstract_with_shardings(abstract_state, shardings)
    try:
      restored = self._manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(target), data=ocp.args.JsonRestore()))
    except (ValueError, KeyError, TypeError) as e:
      raise UserError(
          f"checkpoint {self.directory}/{step} does not match this config's model or task "
          f"({str(e).splitlines()[0][:200]}); resume with the config it was written with "
          f"or use a new --workdir") from None
    logging.info("restored step %d from %s", step, self.directory)
    return restored.state, restored.data

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()


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
  """The step of a workdir's newest checkpoint, None when it has none; creates nothing."""
  try:
    return saved_step(workdir, "workdir")
  except UserError:
    return None


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
  metadata = ocp.StandardCheckpointer().metadata(os.path.join(directory, str(step), "state"))
  tree = metadata.item_metadata.tree["params"]
  return _leaf_shapes(tree, is_leaf=lambda x: hasattr(x, "shape") and hasattr(x, "dtype"))


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
  manager, step, _ = _read_only_manager(workdir, name)
  restore_target = {"params": _abstract_with_shardings(abstract_params, shardings)}
  try:
    restored = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.PyTreeRestore(
            item=restore_target, partial_restore=True,
            restore_args=ocp.checkpoint_utils.construct_restore_args(restore_target))))
  except (ValueError, KeyError, TypeError) as e:
    raise UserError(f"{name}={workdir!r}: its parameters do not fit this model "
                    f"({str(e).splitlines()[0][:200]}); use the same model config") from None
  finally:
    manager.close()
  return restored.state["params"]
