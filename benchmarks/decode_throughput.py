"""Decode throughput: generated tokens/s of `rlhf_jax.sampling.sample` vs HF `generate`.

Both sides run the same GPT-2 architecture with random weights, fp32 (JAX: `--dtype` and
`--param_dtype` for bf16), greedy, a KV cache,
B prompts of P random tokens (no padding) and exactly N new tokens per row (JAX: an EOS
id that no token can equal; HF: min_new_tokens = max_new_tokens = N). A call is the whole
generation (prefill + N - 1 decode steps); tokens/s = B·N / seconds of one call.
Compilation (JAX) and the first call (both) are warm-up, timed apart. Per setting the
timed calls alternate, JAX then HF at each torch thread count, `--repeats` times;
medians and the ratio of JAX to the best HF median are reported. HF needs the
benchmark-only dependencies (`pip install torch==2.13.0 transformers`);
`--framework=jax` runs without them.

  python benchmarks/decode_throughput.py --num_layers=4 --num_heads=4 --embed_dim=256 \
      --vocab=2048 --batches=1,8,32 --prompt_len=64 --new_tokens=128 --json
"""
import argparse
import functools
import json
import statistics
import sys
import time

import flax.linen as nn
import jax
import jax.numpy as jnp

from rlhf_jax import sampling
from rlhf_jax.models import gpt


def parse_args(argv):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--preset", default="nano", choices=sorted(gpt.PRESETS))
  p.add_argument("--num_layers", type=int, default=0, help="0 = the preset's")
  p.add_argument("--num_heads", type=int, default=0, help="0 = the preset's")
  p.add_argument("--embed_dim", type=int, default=0, help="0 = the preset's")
  p.add_argument("--vocab", type=int, default=2048)
  p.add_argument("--batches", default="1,32", help="comma-separated batch sizes")
  p.add_argument("--prompt_len", type=int, default=64)
  p.add_argument("--new_tokens", type=int, default=128)
  p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                 help="JAX compute dtype (matmuls, KV cache); HF runs fp32")
  p.add_argument("--param_dtype", default="float32", choices=("float32", "bfloat16"),
                 help="JAX weights as stored (bfloat16 halves the bytes a decode step reads)")
  p.add_argument("--framework", default="both", choices=("both", "jax", "hf"))
  p.add_argument("--repeats", type=int, default=3, help="timed calls per framework and batch")
  p.add_argument("--hf_threads", default="1,2",
                 help="torch.set_num_threads values, one HF column each")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--json", action="store_true", help="print one JSON line")
  return p.parse_args(argv)


def model_config(args) -> gpt.GPTConfig:
  fields = dict(gpt.PRESETS[args.preset])
  for key in ("num_layers", "num_heads", "embed_dim"):
    fields[key] = getattr(args, key) or fields[key]
  fields["max_len"] = max(fields["max_len"], args.prompt_len + args.new_tokens)
  return gpt.GPTConfig(vocab_size=args.vocab, dtype=args.dtype, **fields)


def jax_generator(cfg: gpt.GPTConfig, args):
  """(batch -> one timed generation call) for the JAX sampler; greedy, N tokens per row."""
  model = gpt.GPT(cfg)
  params = nn.meta.unbox(jax.jit(model.init)(jax.random.key(args.seed),
                                             jnp.zeros((1, 8), jnp.int32)))["params"]
  params = jax.tree.map(lambda x: x.astype(args.param_dtype), params)
  run = jax.jit(functools.partial(sampling.sample, model, max_new_tokens=args.new_tokens,
                                  eos_id=-1, pad_id=0, temperature=0.0))

  def generate(batch):
    prompt = jax.random.randint(jax.random.key(batch), (batch, args.prompt_len), 0,
                                cfg.vocab_size)
    mask = jnp.ones_like(prompt)
    start = time.perf_counter()
    out = jax.block_until_ready(run(params, prompt, mask, jax.random.key(0)))
    seconds = time.perf_counter() - start
    assert int(out.mask_BxN.sum()) == batch * args.new_tokens
    return seconds

  return generate


def hf_generator(cfg: gpt.GPTConfig, args, threads: int):
  """(batch -> one timed generation call) for HF GPT2LMHeadModel.generate; greedy, N tokens."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  torch.manual_seed(args.seed)
  config = transformers.GPT2Config(
      vocab_size=cfg.vocab_size, n_positions=cfg.max_len, n_embd=cfg.embed_dim,
      n_layer=cfg.num_layers, n_head=cfg.num_heads, resid_pdrop=0.0, embd_pdrop=0.0,
      attn_pdrop=0.0, layer_norm_epsilon=1e-5, activation_function="gelu_new",
      tie_word_embeddings=True, bos_token_id=0, eos_token_id=0, pad_token_id=0)
  model = transformers.GPT2LMHeadModel(config).float().eval()

  def generate(batch):
    torch.set_num_threads(threads)
    prompt = torch.randint(0, cfg.vocab_size, (batch, args.prompt_len))
    with torch.inference_mode():
      start = time.perf_counter()
      out = model.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=False,
                           use_cache=True, max_new_tokens=args.new_tokens,
                           min_new_tokens=args.new_tokens)
      seconds = time.perf_counter() - start
    assert out.shape == (batch, args.prompt_len + args.new_tokens)
    return seconds

  return generate


def main(argv=None) -> dict:
  args = parse_args(argv)
  cfg = model_config(args)
  generators, versions = {}, {"jax": jax.__version__}
  if args.framework in ("both", "jax"):
    generators["jax"] = jax_generator(cfg, args)
  if args.framework in ("both", "hf"):
    for threads in [int(t) for t in args.hf_threads.split(",")]:
      generators[f"hf_t{threads}"] = hf_generator(cfg, args, threads)
    import torch, transformers  # pylint: disable=g-import-not-at-top,multiple-imports
    versions["torch"], versions["transformers"] = torch.__version__, transformers.__version__

  rows = []
  for batch in [int(b) for b in args.batches.split(",")]:
    row = {"batch": batch}
    for name, generate in generators.items():
      row[f"{name}_warmup_s"] = generate(batch)  # JAX: compilation included
      row[f"{name}_seconds"] = []
    for _ in range(args.repeats):  # alternate the frameworks
      for name, generate in generators.items():
        row[f"{name}_seconds"].append(generate(batch))
    for name in generators:
      row[f"{name}_tokens_per_sec"] = [batch * args.new_tokens / s for s in row[f"{name}_seconds"]]
      row[f"{name}_median"] = statistics.median(row[f"{name}_tokens_per_sec"])
    hf_medians = [row[f"{name}_median"] for name in generators if name.startswith("hf")]
    if "jax" in generators and hf_medians:
      row["ratio_to_best_hf"] = row["jax_median"] / max(hf_medians)
    rows.append(row)

  result = {
      "device": jax.devices()[0].device_kind, "versions": versions,
      "num_layers": cfg.num_layers, "num_heads": cfg.num_heads, "embed_dim": cfg.embed_dim,
      "vocab": cfg.vocab_size, "prompt_len": args.prompt_len, "new_tokens": args.new_tokens,
      "dtype": args.dtype, "param_dtype": args.param_dtype, "greedy": True, "repeats": args.repeats, "rows": rows,
  }
  if args.json:
    print(json.dumps(result))
  else:
    for row in rows:
      cells = [f"batch {row['batch']:>4}"] + [
          f"{name} {row[f'{name}_median']:10.1f} tok/s" for name in generators]
      if "ratio_to_best_hf" in row:
        cells.append(f"jax/best hf {row['ratio_to_best_hf']:.2f}")
      print("  ".join(cells))
  return result


if __name__ == "__main__":
  main(sys.argv[1:])
