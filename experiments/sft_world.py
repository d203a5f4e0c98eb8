"""Supervised fine-tuning on the built-in world's demonstrations (stage 2).

Starts from the pretrained base model of `pretrain_world.py` and teaches it to answer
chat-formatted instructions: next-token loss on the assistant's reply and its EOS only.
At every epoch boundary it logs eval/loss on validation demonstrations and the gold
judge's gold/score (95% interval, per category and family) on the held-out test prompts,
with the responses in WORKDIR/samples.jsonl.

Run (after pretraining into runs/world_pretrain):
  python -m rlhf_jax.main --config=experiments/sft_world.py --workdir=runs/world_sft \
      --config.init_from=runs/world_pretrain
Compare with the base model prompted few-shot on the same prompts:
  python -m rlhf_jax.evaluate --workdir=runs/world_sft --base_workdir=runs/world_pretrain

Model: the pretrained `nano` (6 layers, 384 wide, 11.5M params) and its tokenizer; rows of
128 tokens, batch 16, 5 epochs over the 648 train demonstrations (40 steps each, 200 steps).
Hardware: 2 CPU cores; measured 5.7 min wall (quiet machine) from a pretrain_world
workdir stopped at its step-200 checkpoint.
Expected (measured, seed 0, that base): eval/loss 5.73 → 1.11; gold/score on the 174 test
prompts 0.008 (step 0, the base model in the chat template) → 0.194, 0.267, 0.282, 0.329
at the epoch ends → 0.316 [0.270, 0.364]; the same base prompted few-shot scores 0.178
[0.135, 0.217], a paired difference of +0.139 [+0.090, +0.187].
Packed rows: add --config.data.pack=True to fill each training row with whole
demonstrations (3.7 per row: 116 of 128 tokens real instead of 32, 11 steps per epoch
instead of 40; benchmarks/packing_fill.py); each attends only to itself, so the loss per
example is unchanged (not yet trained to the numbers above).
Variant `:smoke` — no init_from: a tiny model and its own BPE trained on the
demonstrations, 30 steps, gold-judged on 16 test prompts; seconds on a CPU.
Consumes a pretraining workdir (init_from); feeds the reward model and PPO.
"""
from rlhf_jax import configs


def get_config(arg=None):
  arg = configs.variant(arg, ["smoke"])
  c = configs.base_config()
  c.task = "sft"
  c.init_from = "runs/world_pretrain"
  c.data.path = "world:small:0/sft"
  c.data.seq_len = 128
  c.model.preset = "nano"
  c.batch_size = 16
  c.data.pack = True        # whole demonstrations fill each row of 128 (3.7 per row)
  c.epochs = 15.0           # 11 steps per epoch: 165 steps
  c.total_steps = 0         # the length is set by epochs
  c.optim.lr = 6e-4
  c.optim.warmup_steps = 20
  c.optim.weight_decay = 0.0
  c.log_every = 10
  c.eval_every = 55         # every 5 epochs (and at the start)
  c.eval_at_epoch_end = False
  c.eval_steps = 8
  c.ckpt_every = 50
  c.sampling.max_new_tokens = 48
  if arg == "smoke":
    configs.smoke(c, init_from="", epochs=0.0, **{"data.seq_len": 128,"gold_eval.num_prompts": 16,
                                                  "gold_eval.batch_size": 8,
                                                  "sampling.max_new_tokens": 16,
                                                  "data.pack": False, "eval_at_epoch_end": True})
  return c
