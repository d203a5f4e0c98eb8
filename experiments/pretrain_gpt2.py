"""Pretrain GPT-2 124M at context 1024 (stage 1, GPU-scale).

Run (the corpus must be given):
  python -m rlhf_jax.main --config=experiments/pretrain_gpt2.py --workdir=runs/gpt2 \
      --config.data.path='/data/owt/*.jsonl.gz'        # any corpus by path, or
  #   --config.data.tfds_name=NAME                      # a TFDS catalog dataset (online)

Model: gpt2 (12 layers, 768 wide, 124M params), bf16 compute, cuDNN flash attention,
GPT-2's own BPE when --config.tokenizer.path points at a directory with vocab.json +
merges.txt (else a 50k BPE is trained on the corpus). Batch 512 × 1024 tokens = 0.5M
tokens/step (grad accumulation 8 × 64), 20k steps ≈ 10B tokens.
Hardware: one H100; the throughput target is ≥ 40% MFU (≥ 470k tokens/s, about 6 h for
10B tokens) — see benchmarks/RESULTS.md for what has been measured.
Expected: GPT-2 124M reaches ≈ 3.3 eval/loss on web text after 10B tokens in public
reproductions; not yet measured with this code.
Variant `:smoke` — the same wiring (grad accumulation included) at tiny size on the CPU,
on the built-in world's corpus; about 15 s.
Consumes nothing; feeds SFT via init_from.
"""
from rlhf_jax import configs


def get_config(arg=None):
  arg = configs.variant(arg, ["smoke"])
  c = configs.base_config()
  c.task = "pretrain"
  c.data.seq_len = 1024
  c.model.preset = "gpt2"
  c.model.dtype = "bfloat16"
  c.model.attention = "cudnn"
  c.tokenizer.vocab_size = 50257
  c.total_steps = 20000
  c.batch_size = 512
  c.optim.grad_accum_steps = 8
  c.optim.lr = 6e-4
  c.optim.warmup_steps = 700
  c.log_every = 50
  c.eval_every = 1000
  c.ckpt_every = 1000
  if arg == "smoke":  # same wiring, tiny; grad accumulation kept on
    configs.smoke(c, total_steps=6, log_every=2, eval_every=6, eval_steps=2, ckpt_every=6,
                  **{"optim.grad_accum_steps": 2, "optim.warmup_steps": 2,
                     "data.path": "world:small:0/corpus"})
  return c
