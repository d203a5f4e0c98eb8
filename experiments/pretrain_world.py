"""Pretrain a small GPT on the built-in world's noisy web-like corpus (stage 1).

The default first stage: needs no download. The world (rlhf_jax.data.world) is
generated once into the data cache, then tokenized, packed and trained on.

Run:
  python -m rlhf_jax.main --config=experiments/pretrain_world.py --workdir=runs/world_pretrain

Model: `nano` (6 layers, 384 wide, 11.5M params), 2k BPE, context 256, batch 16,
1000 steps (4.1M tokens, about 6 passes over the small world's corpus). Hardware: 2 CPU
cores run ~2k tokens/s (≈ 35 minutes); one GPU takes about a minute.
Expected: eval/loss falls from 7.63 (uniform over the vocabulary) to EXPECTED.
Variant `:smoke` — tiny model, 30 steps, < 2 minutes on 2 CPU cores.
Consumes nothing; its workdir feeds SFT via init_from.
"""
from rlhf_jax import configs


def get_config(arg=None):
  arg = configs.variant(arg, ["smoke"])
  c = configs.base_config()
  c.task = "pretrain"
  c.data.path = "world:small:0/corpus"
  c.data.seq_len = 256
  c.model.preset = "nano"
  c.tokenizer.vocab_size = 2048
  c.total_steps = 1000
  c.batch_size = 16
  c.optim.lr = 1e-3
  c.optim.warmup_steps = 100
  c.eval_every = 200
  c.ckpt_every = 200
  if arg == "smoke":
    configs.smoke(c)
  return c
