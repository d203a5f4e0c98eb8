"""PyTorch + HF `transformers` baseline for `pretrain_throughput.py`: the same training step.

GPT2LMHeadModel of the same size (tied embeddings, dropout 0, tanh GELU, LayerNorm eps
1e-5), fp32, next-token cross-entropy on random tokens [B, T+1], global-norm clipping at
1.0, AdamW (lr 6e-4, betas 0.9/0.95, eps 1e-8, weight decay 0.1 on matrices only).
The learning-rate schedule is left out (a constant lr; one scalar per step).
Warm-up steps are not timed; then `--steps` steps are timed as one interval. The output
has the fields of `pretrain_throughput.py`; MFU uses the same 6N + 12·L·D·T per token.

Benchmark-only dependencies (not in setup.py): torch (CPU build) and transformers.

  python benchmarks/hf_torch_baseline.py --preset=tiny --batch=16 --seq_len=128 --json
"""
import argparse
import json
import sys
import time

import torch
import torch.nn.functional as F
import transformers

PRESETS = {  # (layers, heads, width, max_len), as rlhf_jax.models.gpt.PRESETS
    "tiny": (2, 2, 64, 128),
    "nano": (6, 6, 384, 256),
    "gpt2": (12, 12, 768, 1024),
    "gpt2-medium": (24, 16, 1024, 1024),
}


def parse_args(argv):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--preset", default="tiny", choices=sorted(PRESETS))
  p.add_argument("--num_layers", type=int, default=0, help="0 = the preset's")
  p.add_argument("--num_heads", type=int, default=0, help="0 = the preset's")
  p.add_argument("--embed_dim", type=int, default=0, help="0 = the preset's")
  p.add_argument("--max_len", type=int, default=0, help="0 = max(preset's, seq_len)")
  p.add_argument("--vocab", type=int, default=50257)
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--seq_len", type=int, default=128)
  p.add_argument("--attn_implementation", default="sdpa", choices=("sdpa", "eager"))
  p.add_argument("--fused_adamw", action="store_true", help="torch's fused AdamW kernel")
  p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
  p.add_argument("--steps", type=int, default=10)
  p.add_argument("--warmup", type=int, default=2)
  p.add_argument("--peak_flops", type=float, default=0.0,
                 help="peak FLOP/s; 0 = measured fp32 matmul peak of this machine")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--json", action="store_true")
  return p.parse_args(argv)


def matmul_peak_flops(n: int = 2048, repeats: int = 5) -> float:
  """Best observed FLOP/s of an n×n fp32 matmul (2n³ FLOPs)."""
  a = torch.randn(n, n)
  a @ a
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    a @ a
    best = min(best, time.perf_counter() - start)
  return 2 * n**3 / best


def main(argv=None) -> dict:
  args = parse_args(argv)
  torch.set_num_threads(args.threads)
  torch.manual_seed(args.seed)
  layers, heads, width, max_len = PRESETS[args.preset]
  layers, heads, width = args.num_layers or layers, args.num_heads or heads, (
      args.embed_dim or width)
  max_len = args.max_len or max(max_len, args.seq_len)
  config = transformers.GPT2Config(
      vocab_size=args.vocab, n_positions=max_len, n_embd=width, n_layer=layers, n_head=heads,
      resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, layer_norm_epsilon=1e-5,
      activation_function="gelu_new", tie_word_embeddings=True,
      bos_token_id=args.vocab - 1, eos_token_id=args.vocab - 1,
      attn_implementation=args.attn_implementation)
  model = transformers.GPT2LMHeadModel(config).float().train()
  params = list(model.parameters())  # tied: wte appears once
  groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": 0.1},
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
  opt = torch.optim.AdamW(groups, lr=6e-4, betas=(0.9, 0.95), eps=1e-8,
                          fused=args.fused_adamw or None)
  tokens = torch.randint(0, args.vocab, (args.batch, args.seq_len + 1))
  inputs, targets = tokens[:, :-1], tokens[:, 1:]

  def step():
    logits = model(input_ids=inputs).logits
    loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1))
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss.detach()

  start = time.perf_counter()
  for _ in range(args.warmup):
    loss = step()
  warmup_s = time.perf_counter() - start
  start = time.perf_counter()
  for _ in range(args.steps):
    loss = step()
  seconds = time.perf_counter() - start

  num_params = sum(p.numel() for p in params)
  # 6N + 12·L·D·T, N without position embeddings.
  flops_per_token = 6 * (num_params - max_len * width) + 12 * layers * width * args.seq_len
  peak, peak_source = args.peak_flops, "--peak_flops"
  if not peak:
    peak, peak_source = matmul_peak_flops(), "measured fp32 2048x2048 matmul on this machine"
  tokens_per_sec = args.batch * args.seq_len * args.steps / seconds
  result = {
      "framework": "torch", "version": f"{torch.__version__} transformers "
                                       f"{transformers.__version__}",
      "device": "cpu", "devices": 1, "threads": torch.get_num_threads(),
      "preset": args.preset, "num_layers": layers, "num_heads": heads, "embed_dim": width,
      "max_len": max_len, "vocab": args.vocab, "batch": args.batch, "seq_len": args.seq_len,
      "dtype": "float32", "attention": args.attn_implementation,
      "fused_adamw": args.fused_adamw, "params": num_params,
      "flops_per_token": flops_per_token, "warmup_steps": args.warmup, "warmup_s": warmup_s,
      "steps": args.steps, "seconds": seconds, "step_ms": 1e3 * seconds / args.steps,
      "tokens_per_sec": tokens_per_sec, "peak_flops": peak, "peak_source": peak_source,
      "mfu": tokens_per_sec * flops_per_token / peak, "loss": float(loss),
  }
  if args.json:
    print(json.dumps(result))
  else:
    for key, value in result.items():
      print(f"{key:>16}: {value}")
  return result


if __name__ == "__main__":
  main(sys.argv[1:])
