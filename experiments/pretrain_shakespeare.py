"""Pretrain a character-scale GPT on Tiny Shakespeare (stage 1).

Run (offline, local file):
  python -m rlhf_jax.main --config=experiments/pretrain_shakespeare.py \
      --workdir=runs/shakespeare --config.data.path=../shared/data/tinyshakespeare/input.txt
Online, the TFDS catalog copy is read instead when data.path is empty
(`tiny_shakespeare`, downloaded once into the TFDS data dir).

Model: `nano` (6 layers, 6 heads, 384 wide, 11.5M params with a 2k BPE), context 256,
batch 64 (16k tokens/step), 2000 steps ≈ 33M tokens ≈ 95 passes over the 348k-token train
split. Hardware: a GPU (minutes); 2 CPU cores manage ~1.2k tokens/s, so use :smoke there.
Expected final eval/loss: not yet measured at full size (nanoGPT's character-level run of
this data overfits after a few thousand steps; watch eval/loss and stop early).
Variant `:smoke` — a 2-layer 64-wide model, 30 steps: measured 14 s on 2 CPU cores,
eval/loss 6.24 (uniform over the 512-token vocabulary) → 5.14.
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
