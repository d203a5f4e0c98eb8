"""Load the language model of any stage's workdir for inference (sample, chat, evaluate).

A workdir holds `config.json`, `tokenizer.json` and orbax checkpoints. The GPT's
parameters sit where its stage keeps them: `state.params` (pretrain, SFT, DPO),
`state.params.backbone` (reward model), `state.policy.params` (PPO).
"""
import json
import os
from typing import Any, NamedTuple

import jax
import ml_collections
import orbax.checkpoint as ocp

from rlhf_jax import tokenizer as tokenizer_lib
from rlhf_jax.errors import UserError
from rlhf_jax.models import gpt

# Where each stage's state keeps the GPT parameters, tried in order.
_GPT_PARAM_PATHS = (("policy", "params"), ("params", "backbone"), ("params",))


class Policy(NamedTuple):
  model: gpt.GPT
  params: Any          # plain arrays on one device
  tokenizer: tokenizer_lib.Tokenizer
  config: ml_collections.ConfigDict  # the workdir's resolved config
  step: int


def read_config(workdir: str) -> ml_collections.ConfigDict:
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise UserError(f"{workdir} has no config.json; pass the --workdir of a training run")
  with open(path, encoding="utf-8") as f:
    return ml_collections.ConfigDict(json.load(f))


def _unbox(tree):
  """Checkpointed `nn.Partitioned` boxes are {"value": array} dicts: keep the arrays."""
  if isinstance(tree, dict):
    if set(tree) == {"value"}:
      return _unbox(tree["value"])
    return {k: _unbox(v) for k, v in tree.items()}
  return tree


def _find(tree, path):
  for key in path:
    if not isinstance(tree, dict) or key not in tree:
      return None
    tree = tree[key]
  return tree


def restore_gpt_params(workdir: str, mesh=None, step: int | None = None) -> tuple[int, Any]:
  """(step, GPT params) of checkpoint `step` (default: the newest) as plain arrays,
  replicated over `mesh` (default: the first device)."""
  directory = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(directory):
    raise UserError(f"{workdir} has no checkpoints/; train first or pass another --workdir")
  options = ocp.CheckpointManagerOptions(read_only=True, create=False)
  manager = ocp.CheckpointManager(directory, options=options, item_handlers={
      "state": ocp.PyTreeCheckpointHandler(), "data": ocp.JsonCheckpointHandler()})
  try:
    if manager.latest_step() is None:
      raise UserError(f"{directory} holds no finished checkpoint; train first or pass another "
                      f"--workdir")
    if step is None:
      step = manager.latest_step()
    elif step not in manager.all_steps():
      raise UserError(f"{directory} keeps no checkpoint of step {step}; use one of "
                      f"{sorted(manager.all_steps())}")
    metadata = manager.item_metadata(step)["state"]
    metadata = getattr(metadata, "tree", metadata)  # orbax's tree metadata → nested dicts
    path = next((p for p in _GPT_PARAM_PATHS if isinstance(_find(metadata, p), dict)
                 and "wte" in _unbox(_find(metadata, p))), None)
    if path is None:
      raise UserError(f"the checkpoint in {directory} holds no GPT parameters; pass the "
                      f"workdir of a pretrain, SFT, reward-model or PPO run")
    device = (jax.sharding.SingleDeviceSharding(jax.devices()[0]) if mesh is None
              else jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
    target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
                          _find(metadata, path))
    for key in reversed(path):
      target = {key: target}
    restored = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.PyTreeRestore(
            item=target, partial_restore=True,
            restore_args=ocp.checkpoint_utils.construct_restore_args(target))))
  finally:
    manager.close()
  return step, _unbox(_find(restored.state, path))


def load(workdir: str, mesh=None, step: int | None = None) -> Policy:
  """The model, parameters of checkpoint `step` (default: the newest; replicated over
  `mesh`), tokenizer and config of a training workdir."""
  workdir = os.path.abspath(workdir)
  if not os.path.isdir(workdir):
    raise UserError(f"workdir {workdir} does not exist; pass the --workdir of a training run")
  config = read_config(workdir)
  tok = tokenizer_lib.load(os.path.join(workdir, tokenizer_lib.TOKENIZER_FILE))
  model_cfg = config.model
  if jax.default_backend() != "gpu":  # cuDNN attention exists on NVIDIA GPUs only
    model_cfg = ml_collections.ConfigDict({**model_cfg.to_dict(), "attention": "xla"})
  step, params = restore_gpt_params(workdir, mesh, step)
  return Policy(gpt.GPT(gpt.config_from(model_cfg, tok.vocab_size)), params, tok, config, step)
