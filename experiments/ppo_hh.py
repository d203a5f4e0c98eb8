"""PPO on Anthropic HH prompts against an HH reward model (stage 4).

The policy starts from an SFT model of `sft_hh.py` (also the frozen reference); the reward
model and the critic from `rm_hh.py`, which must share the SFT model's tokenizer (train
the RM with --config.init_from=<the SFT workdir>). Prompts are JSONL records
{"prompt": "..."} or {"messages": [...]} ending with a user turn, e.g. the human turns of
HH dialogues. There is no gold judge: evaluations log eval/score (the RM) of greedy
responses to held-out prompts, with the responses in WORKDIR/samples.jsonl.

Run:
  python -m rlhf_jax.main --config=experiments/ppo_hh.py --workdir=runs/hh_ppo \
      --config.data.path=PROMPTS.jsonl --config.init_from=runs/hh_sft \
      --config.ppo.reward_from=runs/hh_rm
Model: the SFT model's (sft_hh: 2 layers, 128 wide); prompts up to 128 tokens, 32-token
responses, batch 32, 4 PPO epochs of 2 minibatches, β = 0.05 with the adaptive controller
(target 6 nats), 100 iterations. Hardware: 2 CPU cores, about 15 minutes. Expected:
ppo/score and eval/score rise while ppo/kl stays near 6.
Variant `:smoke` — no init_from / reward_from: tiny fresh policy and RM with a BPE trained on
the prompts, 6 iterations; seconds on a CPU (still needs data.path).
Consumes sft_hh (init_from) and rm_hh (ppo.reward_from) workdirs and an HH prompts file.
"""
from rlhf_jax import configs


def get_config(arg=None):
  arg = configs.variant(arg, ["smoke"])
  c = configs.base_config()
  c.task = "ppo"
  c.model.update(preset="tiny", num_layers=2, embed_dim=128, num_heads=4, max_len=256)
  c.tokenizer.vocab_size = 4096
  c.batch_size = 32
  c.total_steps = 100
  c.optim.update(lr=1e-5, schedule="constant", warmup_steps=0, weight_decay=0.0, b2=0.999)
  c.log_every = 1
  c.eval_every = 50
  c.ckpt_every = 10
  c.sampling.max_new_tokens = 32
  c.gold_eval.num_prompts = 64        # held-out prompts for eval/score (no gold judge here)
  c.ppo = configs.ppo_block()
  c.ppo.update(max_prompt_len=128, response_len=32, kl_coef=0.05, target_kl=6.0, epochs=4,
               num_minibatches=2)
  if arg == "smoke":
    configs.smoke(c, total_steps=6, eval_every=3, ckpt_every=3, log_every=1, batch_size=16,
                  **{"optim.lr": 1e-4, "optim.warmup_steps": 0, "model.num_layers": 0,
                     "model.embed_dim": 0, "model.num_heads": 0, "model.max_len": 0,
                     "ppo.max_prompt_len": 48, "ppo.response_len": 8,
                     "sampling.max_new_tokens": 8, "gold_eval.num_prompts": 16,
                     "gold_eval.batch_size": 8})
  return c
