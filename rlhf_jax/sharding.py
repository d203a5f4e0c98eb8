"""Device mesh and logical-axis sharding.

Model code names axes logically (`embed`, `mlp`, `heads`, `vocab`, `batch`, ...);
`config.mesh.rules` maps each logical axis to mesh axes. Data parallel, FSDP and
tensor parallel are therefore config changes: `mesh.data`, `mesh.fsdp`,
`mesh.tensor` (-1 = all remaining devices).
"""
import logging
import math
from typing import Callable

import flax.linen as nn
import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from rlhf_jax.errors import UserError

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")  # the global batch is split over both

# Params: `embed` over fsdp (ZeRO-3 style), model-parallel dims over tensor.
# Activations (`act_*`) are sharded over batch only, plus tensor where it splits heads/mlp.
DEFAULT_RULES = (
    ("batch", BATCH_AXES),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("vocab", "tensor"),
    ("act_mlp", "tensor"),
    ("act_heads", "tensor"),
    ("act_vocab", "tensor"),
    ("act_embed", None),
    ("act_kv", None),
    ("length", None),
    ("kv", None),
    ("qkv", None),
)


def mesh_shape(mesh_cfg, num_devices: int) -> tuple[int, int, int]:
  """Sizes of (data, fsdp, tensor); one axis may be -1 to take the remaining devices."""
  sizes = [int(mesh_cfg[a]) for a in MESH_AXES]
  if sizes.count(-1) > 1 or any(s == 0 or s < -1 for s in sizes):
    raise UserError(f"mesh {dict(zip(MESH_AXES, sizes))}: use positive sizes and at most one -1")
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes and num_devices % known:
    raise UserError(f"mesh {dict(zip(MESH_AXES, sizes))} does not divide the {num_devices} "
                    f"devices; choose sizes whose product divides {num_devices}")
  sizes = [num_devices // known if s == -1 else s for s in sizes]
  if math.prod(sizes) > num_devices:
    raise UserError(f"mesh {dict(zip(MESH_AXES, sizes))} needs {math.prod(sizes)} devices but "
                    f"{num_devices} exist; make the product of the sizes at most {num_devices}")
  return tuple(sizes)


def make_mesh(mesh_cfg) -> Mesh:
  """The (data, fsdp, tensor) mesh; a mesh smaller than the machine uses the first devices."""
  shape = mesh_shape(mesh_cfg, jax.device_count())
  if math.prod(shape) < jax.device_count():
    logging.warning("mesh %s uses %d of %d devices", shape, math.prod(shape), jax.device_count())
  devices = np.asarray(jax.devices()[:math.prod(shape)]).reshape(shape)
  return Mesh(devices, MESH_AXES)


def rules(mesh_cfg) -> tuple:
  return tuple((name, tuple(ax) if isinstance(ax, list) else ax) for name, ax in mesh_cfg.rules)


def batch_parallelism(mesh: Mesh) -> int:
  return math.prod(mesh.shape[a] for a in BATCH_AXES)


def check_batch_size(batch_size: int, mesh: Mesh, name: str = "batch_size") -> None:
  n = batch_parallelism(mesh)
  if batch_size % n or batch_size % jax.process_count():
    raise UserError(f"{name}={batch_size} is not divisible by the {n} data-parallel devices "
                    f"(mesh data x fsdp); use a multiple of {n}")


def logical_shardings(abstract_tree, mesh: Mesh, logical_rules) -> object:
  """NamedShardings for a pytree whose leaves may be `nn.Partitioned` boxes (others replicate)."""
  specs = nn.get_partition_spec(abstract_tree)
  return nn.logical_to_mesh_sharding(specs, mesh, logical_rules)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(BATCH_AXES))


def device_batch(host_batch, mesh: Mesh):
  """Per-process NumPy batch (leading axis = this process's rows) → global sharded arrays."""
  sharding = batch_sharding(mesh)
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), host_batch)


def map_batches(fn: Callable, rows: dict, batch_size: int, mesh: Mesh) -> np.ndarray:
  """`fn(device_batch, first_row)` over host rows [N, ...], `batch_size` rows per call →
  NumPy [N, ...].

  The last batch is filled up with copies of row 0 (outputs dropped), so every call has
  one static shape; each process feeds its slice of a batch and gets all outputs back.
  """
  check_batch_size(batch_size, mesh, "batch size")
  n = len(next(iter(rows.values())))
  share = slice(jax.process_index() * batch_size // jax.process_count(),
                (jax.process_index() + 1) * batch_size // jax.process_count())
  outputs = []
  for start in range(0, n, batch_size):
    index = np.arange(start, start + batch_size)
    index[index >= n] = 0
    batch = device_batch({k: v[index][share] for k, v in rows.items()}, mesh)
    out = multihost_utils.process_allgather(fn(batch, start), tiled=True)
    outputs.append(np.asarray(out)[:min(batch_size, n - start)])
  return np.concatenate(outputs)
