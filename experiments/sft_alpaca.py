"""Supervised fine-tuning on Alpaca-format instructions (stage 2).

Reads Alpaca records ({"instruction", "input", "output"}) or the 175 human-written seed
tasks ({"instruction", "instances": [{"input", "output"}]}, one example per instance).

Run (offline, the seed tasks beside this repository):
  python -m rlhf_jax.main --config=experiments/sft_alpaca.py --workdir=runs/alpaca_sft \
      --config.data.path=../shared/data/alpaca/seed_tasks.jsonl
Add --config.init_from=DIR to start from a pretrained workdir (its tokenizer comes along).

Model: `nano` trained from scratch with a 2k BPE on the instructions, rows of 256 tokens,
batch 16, 5 epochs.
Hardware: 2 CPU cores (see the README's experiment table for the measured time and loss).
Variant `:smoke` — tiny model, 30 steps; seconds on a CPU (still needs data.path).
Consumes an Alpaca-format file (and optionally a pretraining workdir).
"""
from rlhf_jax import configs


def get_config(arg=None):
  arg = configs.variant(arg, ["smoke"])
  c = configs.base_config()
  c.task = "sft"
  c.data.seq_len = 256
  c.model.preset = "nano"
  c.tokenizer.vocab_size = 2048
  c.batch_size = 16
  c.epochs = 5.0
  c.total_steps = 0         # the length is set by epochs
  c.optim.lr = 1e-3
  c.optim.warmup_steps = 10
  c.eval_every = 1000       # evaluations fall on epoch boundaries (and the last step)
  c.eval_steps = 2
  c.ckpt_every = 50
  if arg == "smoke":
    configs.smoke(c, epochs=0.0)
  return c
