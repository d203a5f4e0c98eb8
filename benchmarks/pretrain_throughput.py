"""Pretraining step throughput: tokens/s and MFU of the real model, optimizer and loss.

One `jax.jit` step (AdamW, global-norm clipping, donated state) on random tokens that stay
on the device, so the figure is the step alone, without data loading. Warm-up steps
(compilation included) are not timed; the timed steps are dispatched back to back and
waited on once at the end.

MFU = tokens/s · F / (peak FLOP/s · devices), F = 6N + 12·L·D·T training FLOPs per token
(N = params without position embeddings). The peak is `--peak_flops`, else the device
table in `rlhf_jax.metrics`, else (CPU) the measured fp32 matmul rate of this machine,
labelled as such in the output.

  python benchmarks/pretrain_throughput.py --preset=tiny --batch=16 --seq_len=128 --json
"""
import argparse
import collections
import glob
import json
import os
import sys
import tempfile
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from rlhf_jax import configs, metrics, optim, sharding
from rlhf_jax.models import gpt
from rlhf_jax.tasks.base import TrainState, accumulate_gradients
from rlhf_jax.tasks.lm import next_token_loss_sum


def parse_args(argv):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--preset", default="tiny", choices=sorted(gpt.PRESETS))
  p.add_argument("--num_layers", type=int, default=0, help="0 = the preset's")
  p.add_argument("--num_heads", type=int, default=0, help="0 = the preset's")
  p.add_argument("--embed_dim", type=int, default=0, help="0 = the preset's")
  p.add_argument("--max_len", type=int, default=0, help="0 = max(preset's, seq_len)")
  p.add_argument("--vocab", type=int, default=50257)
  p.add_argument("--batch", type=int, default=8, help="global batch, in sequences")
  p.add_argument("--seq_len", type=int, default=128)
  p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
  p.add_argument("--attention", default="xla", choices=("xla", "cudnn"))
  p.add_argument("--remat", action="store_true")
  p.add_argument("--grad_accum", type=int, default=1)
  p.add_argument("--data_parallel", action="store_true", help="all devices; default one")
  p.add_argument("--steps", type=int, default=10, help="timed steps")
  p.add_argument("--warmup", type=int, default=2, help="untimed steps (compilation)")
  p.add_argument("--peak_flops", type=float, default=0.0,
                 help="peak FLOP/s per device; 0 = device table, else measured matmul peak")
  p.add_argument("--profile_steps", type=int, default=0,
                 help="after timing, trace this many steps and add the device time by kernel")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--json", action="store_true", help="print one JSON line")
  return p.parse_args(argv)


def model_config(args) -> gpt.GPTConfig:
  fields = dict(gpt.PRESETS[args.preset])
  for key in ("num_layers", "num_heads", "embed_dim"):
    if getattr(args, key):
      fields[key] = getattr(args, key)
  fields["max_len"] = args.max_len or max(fields["max_len"], args.seq_len)
  if args.seq_len > fields["max_len"]:
    raise SystemExit(f"--seq_len={args.seq_len} exceeds --max_len={fields['max_len']}")
  return gpt.GPTConfig(vocab_size=args.vocab, dtype=args.dtype, attention=args.attention,
                       remat=args.remat, **fields)


def matmul_peak_flops(n: int = 2048, repeats: int = 5) -> float:
  """Best observed FLOP/s of an n×n fp32 matmul (2n³ FLOPs), the CPU's practical peak."""
  a = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
  dot = jax.jit(jnp.dot)
  dot(a, a).block_until_ready()
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    dot(a, a).block_until_ready()
    best = min(best, time.perf_counter() - start)
  return 2 * n**3 / best


def kernel_class(name: str) -> str:
  """A device kernel's class, by the names XLA and the CUDA libraries give them."""
  lowered = name.lower()
  if any(k in lowered for k in ("fmha", "flash", "cudnn", "attention")):
    return "attention (cuDNN)"
  if any(k in lowered for k in ("gemm", "nvjet", "xmma", "cublas", "matmul", "dot")):
    return "matmul"
  if "memcpy" in lowered or "memset" in lowered:
    return "copy"
  return "other (fusions: norms, softmax-xent, optimizer, casts)"


def device_time_breakdown(trace_dir: str, steps: int) -> dict:
  """Device time per step by kernel class and the top kernels, from a `jax.profiler` trace.

  Sums the kernel events of the `/device:GPU:0` plane (no such plane on a CPU: empty).
  """
  paths = sorted(glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True))
  if not paths:
    return {}
  data = jax.profiler.ProfileData.from_file(paths[-1])
  plane = data.find_plane_with_name("/device:GPU:0")
  if plane is None:
    return {}
  by_kernel = collections.Counter()
  for line in plane.lines:
    if "stream" not in line.name.lower():  # kernel lines are per CUDA stream
      continue
    for event in line.events:
      by_kernel[event.name] += event.duration_ns
  if not by_kernel:
    return {"profile_lines": [line.name for line in plane.lines]}
  by_class = collections.Counter()
  for name, ns in by_kernel.items():
    by_class[kernel_class(name)] += ns
  total = sum(by_class.values())
  return {
      "device_ms_per_step": total / 1e6 / steps,
      "by_class_ms_per_step": {k: v / 1e6 / steps for k, v in by_class.most_common()},
      "top_kernels_ms_per_step": [(k[:80], v / 1e6 / steps) for k, v in by_kernel.most_common(12)],
  }


def main(argv=None) -> dict:
  args = parse_args(argv)
  cfg = model_config(args)
  devices = jax.devices() if args.data_parallel else jax.devices()[:1]
  mesh = Mesh(np.asarray(devices).reshape(len(devices), 1, 1), sharding.MESH_AXES)
  if args.batch % (args.grad_accum * len(devices)):
    raise SystemExit(f"--batch={args.batch} is not divisible by --grad_accum x devices "
                     f"= {args.grad_accum * len(devices)}")

  optim_cfg = configs.base_config().optim
  optim_cfg.grad_accum_steps = args.grad_accum
  tx = optim.make_optimizer(optim_cfg, args.warmup + args.steps)
  model = gpt.GPT(cfg)
  rules = sharding.DEFAULT_RULES

  def init(rng):
    params = model.init(rng, jnp.zeros((1, args.seq_len), jnp.int32))["params"]
    return TrainState.create(params, tx)

  def step(state, batch, rng):
    grads, loss, _, _ = accumulate_gradients(
        lambda p, b, r: next_token_loss_sum(model, p, b["tokens"], None, r, deterministic=False),
        state.params, batch, rng, args.grad_accum)
    return state.apply_gradients(grads, tx), loss

  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    init_rng, data_rng, step_rng = jax.random.split(jax.random.key(args.seed), 3)
    abstract_state = jax.eval_shape(init, init_rng)
    state_shardings = sharding.logical_shardings(abstract_state, mesh, rules)
    state = jax.jit(init, out_shardings=state_shardings)(init_rng)
    tokens = jax.random.randint(data_rng, (args.batch, args.seq_len + 1), 0, args.vocab,
                                jnp.int32)
    batch = {"tokens": jax.device_put(tokens, sharding.batch_sharding(mesh))}
    step_fn = jax.jit(step, in_shardings=(state_shardings, None, None),
                      out_shardings=(state_shardings, None), donate_argnums=0)
    rngs = list(jax.random.split(step_rng, args.warmup + args.steps))

    start = time.perf_counter()
    for rng in rngs[:args.warmup]:
      state, loss = step_fn(state, batch, rng)
    jax.block_until_ready((state, loss))
    warmup_s = time.perf_counter() - start
    start = time.perf_counter()
    for rng in rngs[args.warmup:]:
      state, loss = step_fn(state, batch, rng)
    jax.block_until_ready((state, loss))
    seconds = time.perf_counter() - start
    breakdown = {}
    if args.profile_steps:
      trace_dir = tempfile.mkdtemp(prefix="pretrain_trace_")
      with jax.profiler.trace(trace_dir):
        for rng in jax.random.split(step_rng, args.profile_steps):
          state, loss = step_fn(state, batch, rng)
        jax.block_until_ready((state, loss))
      breakdown = device_time_breakdown(trace_dir, args.profile_steps)

  num_params = gpt.count_params(abstract_state.params)
  flops_per_token = metrics.transformer_flops_per_token(
      num_params - cfg.max_len * cfg.embed_dim, cfg.num_layers, cfg.embed_dim, args.seq_len)
  peak = metrics.peak_flops_per_device(args.peak_flops)
  if args.peak_flops:
    peak_source = "--peak_flops"
  elif peak:
    peak_source = f"device table ({devices[0].device_kind}, dense bf16)"
  else:
    peak, peak_source = matmul_peak_flops(), "measured fp32 2048x2048 matmul on this machine"
  tokens_per_sec = args.batch * args.seq_len * args.steps / seconds
  result = {
      "framework": "jax", "version": jax.__version__,
      "device": devices[0].device_kind, "devices": len(devices),
      "preset": args.preset, "num_layers": cfg.num_layers, "num_heads": cfg.num_heads,
      "embed_dim": cfg.embed_dim, "max_len": cfg.max_len, "vocab": cfg.vocab_size,
      "padded_vocab": cfg.padded_vocab, "batch": args.batch, "seq_len": args.seq_len,
      "dtype": args.dtype, "attention": args.attention, "remat": args.remat,
      "grad_accum": args.grad_accum, "params": num_params, "flops_per_token": flops_per_token,
      "warmup_steps": args.warmup, "warmup_s": warmup_s, "steps": args.steps,
      "seconds": seconds, "step_ms": 1e3 * seconds / args.steps,
      "tokens_per_sec": tokens_per_sec, "peak_flops": peak, "peak_source": peak_source,
      "mfu": tokens_per_sec * flops_per_token / (peak * len(devices)),
      "loss": float(loss), **breakdown,
  }
  if args.json:
    print(json.dumps(result))
  else:
    for key, value in result.items():
      print(f"{key:>16}: {value}")
  return result


if __name__ == "__main__":
  main(sys.argv[1:])
