"""Pretrain a small GPT on the built-in world's noisy web-like corpus (stage 1).

The default first stage: needs no download. The world (rlhf_jax.data.world) is
generated once into the data cache, then tokenized, packed and trained on.

Run:
  python -m rlhf_jax.main --config=experiments/pretrain_world.py --workdir=runs/world_pretrain

Model: `nano` (6 layers, 384 wide, ~11M params), 2k BPE, context 256, batch 32,
1500 steps. Hardware: 2 CPU cores ≈ 1 hour; one GPU ≈ 2 minutes.
Expected: eval/loss well below the uniform 7.6 nats (about 2 nats/token at the end).
Variant `:smoke` — tiny model, 30 steps, < 2 minutes on 2 CPU cores.
Consumes nothing; its workdir feeds SFT via init_from.
"""
from rlhf_jax import configs


def get_config(arg=None):
  c = configs.base_config()
  c.task = "pretrain"
  c.data.path = "world:small:0/corpus"
  c.data.seq_len = 256
  c.model.preset = "nano"
  c.tokenizer.vocab_size = 2048
  c.total_steps = 1500
  c.batch_size = 32
  c.optim.lr = 1e-3
  c.optim.warmup_steps = 100
  c.eval_every = 250
  c.ckpt_every = 250
  if arg == "smoke":
    c.model.preset = "tiny"
    c.tokenizer.vocab_size = 512
    c.data.seq_len = 64
    c.batch_size = 16
    c.total_steps = 30
    c.optim.lr = 3e-3
    c.optim.warmup_steps = 5
    c.log_every = 5
    c.eval_every = 15
    c.eval_steps = 4
    c.ckpt_every = 10
  elif arg:
    raise ValueError(f"unknown variant {arg!r}; use '' or 'smoke'")
  return c
