"""Orbax checkpoints: the training state plus the data iterator's position.

Layout: `WORKDIR/checkpoints/<step>/{state,data}`. `state` is restored straight
into the target shardings (never materialised unsharded); `data` is the grain
iterator state as JSON, so a resumed run continues the same data order.
"""
import logging
import os

import jax
import orbax.checkpoint as ocp

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


def restore_params(workdir: str, abstract_params, shardings):
  """Params of the newest checkpoint of another stage's workdir (a warm start)."""
  directory = os.path.join(os.path.abspath(workdir), "checkpoints")
  manager = ocp.CheckpointManager(directory, item_names=("state", "data"))
  step = manager.latest_step() if os.path.isdir(directory) else None
  if step is None:
    raise UserError(f"init_from={workdir!r} holds no checkpoint under {directory}; point "
                    f"--config.init_from at a finished run's workdir")
  target = {"params": _abstract_with_shardings(abstract_params, shardings)}
  try:
    restored = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.PyTreeRestore(item=target, partial_restore=True)))
  except (ValueError, KeyError, TypeError) as e:
    raise UserError(f"init_from={workdir!r}: its parameters do not fit this model "
                    f"({str(e).splitlines()[0][:200]}); use the same model config") from None
  finally:
    manager.close()
  return restored.state["params"]
