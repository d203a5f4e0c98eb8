"""The compiled training step's collectives on 8 fake devices: what data and FSDP parallelism
must communicate, and nothing else (no hidden all-gather of the batch)."""
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh

from rlhf_jax import configs, optim, sharding
from rlhf_jax.models import gpt
from rlhf_jax.tasks import lm

COLLECTIVES = ("all-gather", "all-reduce", "reduce-scatter", "all-to-all", "collective-permute")
CFG = gpt.GPTConfig(vocab_size=256, num_layers=2, num_heads=2, embed_dim=64, max_len=32)


def compiled_step_collectives(mesh_shape, batch_size: int, grad_accum: int):
  """(collectives as (op, output type, op_name), param shapes) of the jitted LM step's HLO."""
  model = gpt.GPT(CFG)
  optim_cfg = configs.base_config().optim
  tx, schedule = optim.make_optimizer(optim_cfg, 10), optim.learning_rate(optim_cfg, 10)
  mesh = Mesh(np.asarray(jax.devices()).reshape(mesh_shape), sharding.MESH_AXES)
  rules = sharding.DEFAULT_RULES
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    init = lm.init_fn(model, tx, 16)
    state = jax.eval_shape(init, jax.random.key(0))
    shardings = sharding.logical_shardings(state, mesh, rules)
    step = lm.gradient_step(
        lambda p, b, r: lm.next_token_loss_sum(model, p, b["tokens"]), tx, schedule, grad_accum)
    batch = {"tokens": jax.ShapeDtypeStruct((batch_size, 17), jnp.int32,
                                            sharding=sharding.batch_sharding(mesh))}
    hlo = jax.jit(step, in_shardings=(shardings, None, None),
                  out_shardings=(shardings, None)).lower(state, batch, jax.random.key(1))
    text = hlo.compile().as_text()
  found = []
  for line in text.splitlines():
    match = re.search(rf"= (.+?) ({'|'.join(COLLECTIVES)})(?:-start)?\(", line)
    if match:
      op_name = re.search(r'op_name="([^"]*)"', line)
      found.append((match.group(2), match.group(1), op_name.group(1) if op_name else ""))
  param_shapes = {tuple(x.shape) for x in jax.tree.leaves(state.params)}
  return found, param_shapes


@pytest.mark.parametrize("grad_accum", [1, 2])
def test_data_parallel_step_only_all_reduces(grad_accum):
  """Replicated params, batch split over 8 devices: the gradients (and metrics) are
  all-reduced, and nothing moves the batch, also when microbatches are accumulated."""
  found, _ = compiled_step_collectives((8, 1, 1), batch_size=32, grad_accum=grad_accum)
  ops = {op for op, _, _ in found}
  assert ops == {"all-reduce"}, found


def test_fsdp_step_gathers_parameters_and_embedding_lookups_only():
  """Params split over 8 devices: all-gathers bring whole parameters (or the token ids
  of the split-table embedding lookup); all-to-alls come only from that lookup; no
  float activation is all-gathered."""
  found, param_shapes = compiled_step_collectives((1, 8, 1), batch_size=32, grad_accum=2)
  assert found
  for op, out_type, op_name in found:
    shapes = {tuple(int(d) for d in dims.split(",") if d)
              for dims in re.findall(r"\[([\d,]*)\]", out_type)}
    lookup = "/wte/" in op_name or "/wpe/" in op_name
    if op == "all-gather":
      assert shapes <= param_shapes or (lookup and out_type.startswith("s32")), found
    elif op == "all-to-all":
      assert lookup, (op, out_type, op_name)
    else:
      assert op in ("all-reduce", "reduce-scatter"), (op, out_type, op_name)
