"""Pretrain a small GPT on the built-in world's noisy web-like corpus (stage 1).

The default first stage: needs no download. The world (rlhf_jax.data.world) is
generated once into the data cache, then tokenized, packed and trained on.

Run:
  python -m rlhf_jax.main --config=experiments/pretrain_world.py --workdir=runs/world_pretrain

Model: `nano` (6 layers, 384 wide, 11.5M params), 2k BPE, context 256, batch 16,
600 steps (2.5M tokens, about 20 passes over the small world's ~114k-token corpus).
Hardware: measured 23 minutes on 2 CPU cores (median 1.9k tokens/s).
Expected (measured, seed 0): eval/loss 7.63 (uniform over the vocabulary) → 0.93 at step
200 → 0.58 at step 500 → 0.59 at step 600. Longer runs overfit this corpus (a 1000-step
schedule ended at 0.73); use world:medium for more text. The main pipeline cuts the
schedule to 400 steps (--config.total_steps=400): 0.922 at step 200, 0.612 at 300, 0.568
at 400, in 14.5 min.
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
  c.total_steps = 600
  c.batch_size = 16
  c.optim.lr = 1e-3
  c.optim.warmup_steps = 100
  c.eval_every = 100
  c.ckpt_every = 100
  if arg == "smoke":
    configs.smoke(c)
  return c
