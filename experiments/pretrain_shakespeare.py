"""Pretrain a character-scale GPT on Tiny Shakespeare (stage 1).

Run (offline, local file):
  python -m rlhf_jax.main --config=experiments/pretrain_shakespeare.py \
      --workdir=runs/shakespeare --config.data.path=../shared/data/tinyshakespeare/input.txt
Online, the TFDS catalog copy is read instead when data.path is empty
(`tiny_shakespeare`, downloaded once into the TFDS data dir).

Model: `nano` (6 layers, 6 heads, 384 wide, ~11M params with a 2k BPE), context 256,
batch 64, 2000 steps. Hardware: one GPU (minutes) or 2 CPU cores (hours; use :smoke).
Expected: eval/loss ≈ 4.0 nats/token (2k-BPE tokens) after 2000 steps.
Variant `:smoke` — a 2-layer 64-wide model, 30 steps, finishes in < 2 minutes on 2 CPU
cores; eval/loss falls from ≈ 6.2 (uniform over the vocabulary) to ≈ 5.5.
Consumes nothing; its workdir (checkpoint + tokenizer.json) feeds SFT via init_from.
"""
from rlhf_jax import configs


def get_config(arg=None):
  arg = configs.variant(arg, ["smoke"])
  c = configs.base_config()
  c.task = "pretrain"
  c.data.tfds_name = "tiny_shakespeare"
  c.data.seq_len = 256
  c.model.preset = "nano"
  c.model.dropout = 0.1
  c.tokenizer.vocab_size = 2048
  c.total_steps = 2000
  c.batch_size = 64
  c.optim.lr = 1e-3
  c.optim.warmup_steps = 100
  c.eval_every = 250
  c.ckpt_every = 500
  if arg == "smoke":
    configs.smoke(c)
  return c
