"""Supervised fine-tuning on the chosen dialogues of Anthropic HH-RLHF (stage 2).

Each record's `chosen` transcript ("\n\nHuman: ...\n\nAssistant: ...") becomes a chat;
the loss covers the final assistant turn and its EOS. A tenth of the file is held out
for eval/loss (or pass --config.data.valid_path).

Run (offline, the file beside this repository):
  python -m rlhf_jax.main --config=experiments/sft_hh.py --workdir=runs/hh_sft \
      --config.data.path=../shared/data/hh-rlhf/harmless-base-test.jsonl.gz
Add --config.init_from=DIR to start from a pretrained workdir (its tokenizer comes along);
without it a `nano` model and a 4k BPE are trained from scratch on the dialogues.

Model: `nano` (6 layers, 384 wide), rows of 256 tokens (long conversations lose their
oldest turns, never the reply), batch 16, 120 steps (about one pass over the training
dialogues); the few transcripts whose final reply is empty are skipped (counted).
Hardware: 2 CPU cores; measured 13.3 min wall (11.4 min of CPU time) on
harmless-base-test from scratch. Expected (measured, seed 0): eval/loss on the held-out
tenth 8.42 → 5.42 (step 40) → 5.03 (80) → 4.90 (120).
Variant `:smoke` — tiny model, 30 steps; seconds on a CPU (still needs data.path).
Variant `:gpt2` — starts from OpenAI's GPT-2 (124M) in Hugging Face form instead: the
model's shape, weights and tokenizer come from the directory (README, "Hugging Face
GPT-2"); download it once, then
  hf download gpt2 config.json model.safetensors tokenizer.json vocab.json merges.txt \
      --local-dir hf/gpt2
  python -m rlhf_jax.main --config=experiments/sft_hh.py:gpt2 --workdir=runs/hh_sft_gpt2 \
      --config.data.path=../shared/data/hh-rlhf/harmless-base-test.jsonl.gz \
      --config.init_from=hf/gpt2
  python -m rlhf_jax.export --workdir=runs/hh_sft_gpt2 --out=runs/hh_sft_gpt2_hf
Any GPT-2 directory works (gpt2-medium … gpt2-xl, or a fine-tuned GPT2LMHeadModel).
Rows of 512 tokens, batch 16, lr 3e-5, 120 steps: about 6e12 FLOPs a step, so use an
accelerator (add --config.model.dtype=bfloat16 --config.model.attention=cudnn on an
NVIDIA GPU); on 2 CPU cores it would take hours. Not yet measured end to end (the test
suite runs it on a tiny random GPT-2 directory).
Consumes an HH file (and optionally a pretraining workdir or a GPT-2 directory); feeds
the HH reward model.
"""
from rlhf_jax import configs


def get_config(arg=None):
  arg = configs.variant(arg, ["smoke", "gpt2"])
  c = configs.base_config()
  c.task = "sft"
  c.data.seq_len = 256
  # A few HH transcripts end with an empty assistant reply (the labeler preferred no
  # answer): nothing to imitate, so they are skipped and counted in the log.
  c.data.skip_malformed = True
  c.model.preset = "nano"
  c.tokenizer.vocab_size = 4096
  c.batch_size = 16
  c.total_steps = 120
  c.optim.lr = 1e-3
  c.optim.warmup_steps = 20
  c.eval_every = 40
  c.eval_steps = 8
  c.ckpt_every = 50
  if arg == "smoke":
    configs.smoke(c)
  elif arg == "gpt2":
    # A Hugging Face GPT-2 directory: its config.json fixes layers, heads, width and
    # context (the preset only names the family for later stages), its files the tokenizer.
    c.init_from = "hf/gpt2"
    c.model.preset = "gpt2"
    c.data.seq_len = 512
    c.optim.update(lr=3e-5, warmup_steps=10, weight_decay=0.0)
  return c
