"""Reward model on Anthropic HH-RLHF preference pairs (stage 3).

Each record's `chosen` and `rejected` transcripts share a prompt (their common prefix up
to the last "\n\nAssistant:"); the RM learns r(prompt, chosen) > r(prompt, rejected), the
K = 2 case of the ranking loss. A tenth of the file is held out (or pass
--config.data.valid_path) for rm/accuracy with its 95% interval, rm/loss, rm/margin and
rm/ece. At the last step the chosen responses of the training pairs (the SFT
demonstrations of this data) set the normalisation to mean 0.

Run (offline, the file beside this repository):
  python -m rlhf_jax.main --config=experiments/rm_hh.py --workdir=runs/hh_rm \
      --config.data.path=../shared/data/hh-rlhf/harmless-base-test.jsonl.gz
Add --config.init_from=runs/hh_sft (a workdir of experiments/sft_hh.py) to start from the
SFT model and its tokenizer; without it a `tiny`-width model and a 4k BPE are trained from
scratch on the dialogues.

Model: 2 layers, 128 wide, rows of 192 tokens (long prompts lose their oldest tokens),
batch 32 pairs, 2 epochs over the 2,081 training pairs of harmless-base-test (130 steps).
Hardware: 2 CPU cores; measured 9.4 minutes wall-clock (2.6 CPU-minutes: the cores were
shared with other jobs) and held-out rm/accuracy 0.643, 95% interval [0.585, 0.706], on
224 held-out pairs of harmless-base-test.
Variant `:smoke` — tiny model, 30 steps; seconds on a CPU (still needs data.path).
Consumes an HH file (and optionally an SFT workdir); feeds PPO on HH prompts.
"""
from rlhf_jax import configs


def get_config(arg=None):
  arg = configs.variant(arg, ["smoke"])
  c = configs.base_config()
  c.task = "reward"
  c.data.seq_len = 192
  c.model.update(preset="tiny", num_layers=2, embed_dim=128, num_heads=4, max_len=256)
  c.tokenizer.vocab_size = 4096
  c.batch_size = 32
  c.epochs = 2.0
  c.total_steps = 0         # the length is set by epochs
  c.optim.lr = 1e-3
  c.optim.warmup_steps = 10
  c.log_every = 5
  c.eval_every = 1000       # evaluations fall on epoch boundaries (and the last step)
  c.eval_steps = 1000       # all held-out pairs
  c.ckpt_every = 50
  c.rm = configs.rm_block()
  c.rm.num_responses = 2
  if arg == "smoke":
    configs.smoke(c, epochs=0.0, eval_steps=4, **{"rm.reference_max": 64,
                                                  "model.num_layers": 0, "model.embed_dim": 0,
                                                  "model.num_heads": 0, "model.max_len": 0})
  return c
