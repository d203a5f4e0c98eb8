"""PPO against the world reward model with a KL penalty to the SFT model (stage 4).

The policy starts from the SFT model of `sft_world.py` (also the frozen reference), the
reward model from `rm_world.py`, and the critic is a zero-initialised value head on the
policy's trunk. Each iteration samples one response per
RL prompt, scores it with the RM (normalised on the SFT demonstrations), subtracts
β·KL(policy ‖ SFT) per token, and takes PPO steps, all in one compiled program. Every
evaluation logs, on held-out test prompts, gold/score of the policy (greedy) and of the
SFT model (gold_sft/score), their paired difference gold/diff_vs_sft with its 95%
bootstrap interval, gold/win_rate_vs_sft, per-family scores and eval/score (the RM), with
the responses in WORKDIR/samples.jsonl. Training metrics: ppo/score, ppo/kl, ppo/kl_coef,
ppo/reward, ppo/clipfrac, ppo/approx_kl, ppo/first_minibatch_ratio_error, ...

Run (after sft_world into runs/world_sft and rm_world into runs/world_rm):
  python -m rlhf_jax.main --config=experiments/ppo_world.py --workdir=runs/world_ppo
Variants:
  :instructgpt — β = 0.02 fixed, 1 PPO epoch, 8 minibatches of 8 (InstructGPT's 64 of 512
                 scaled down), EMA 0.992 of the policy evaluated, PPO-ptx γ = 27.8 on the
                 world corpus.
  :lhp         — lm-human-preferences: adaptive KL (target 6 nats, horizon 10k), 4 epochs,
                 scores whitened per batch, a zero-initialised value head on the policy's
                 trunk, TF-style Adam.
  :smoke       — no init_from / reward_from: a tiny policy and a tiny random RM sharing a
                 BPE trained on the prompts, 6 iterations; seconds on a CPU.

Model: the `nano` SFT policy (6 layers, 384 wide) and RM; prompts up to 64 tokens, 24-token
responses sampled at temperature 0.7 (lm-human-preferences' value; log-probs and KL at the
same temperature), batch 32, 1 PPO epoch of 2 minibatches, lr 1e-5 (critic 5e-5, its own
copy of the SFT trunk with a zero-initialised value head: `ppo.critic_from=policy`),
β = 0.05 fixed, 25 iterations (800 episodes), gold evaluation on 128 test prompts.
Hardware: 2 CPU cores; measured 2.2 min wall on quiet cores in the main pipeline.
Measured (seed 0, world v4, the main pipeline from its 400-step base): gold/score 0.517
[0.451, 0.579] (SFT) → 0.502 [0.439, 0.561], gold/diff_vs_sft −0.015 [−0.035, +0.003],
win rate 0.488 [0.457, 0.520]; ppo/kl 0.35 nats on the last batch, and the training
batches' RM score does not rise (−0.45 at the first iteration, −0.62 at the last, noisy):
that SFT model is stronger than the RM can tell (the RM orders its samples like the gold
judge about 0.57–0.64 of the time; README: "What the main job shows"). On the RL split's
381 validation prompts, which chose nothing (24-token greedy answers): 0.596 → 0.612,
+0.016 [+0.001, +0.031]; in the pipeline's report, on all 570 held-out test prompts
(48-token answers): 0.548 → 0.534, −0.014 [−0.024, −0.004] (SFT split −0.004, RL split
−0.018), losing on facts, format and harmful requests. The settings below
were chosen with the earlier, weaker SFT model of a 200-step base.
Measured (seed 0, world v4, the 200-step base's SFT and shared-prompt RM): gold/score 0.276
[0.224, 0.333] (SFT) → 0.323 [0.266, 0.387], gold/diff_vs_sft +0.048 [+0.028, +0.068]
(paired, 95% bootstrap), win rate 0.625 [0.578, 0.672]; ppo/kl 0.90 nats on the last
training batch; by family brainstorm 0.38 → 0.61, harmful 0.88 → 0.96, format 0.099 →
0.127, list operations 0.29 → 0.31, facts 0.22 → 0.25, none lower; gold/hygiene 0.65 →
0.79. On the RL split's 381 validation prompts, which chose
nothing (24-token greedy answers): 0.346 → 0.366, +0.020 [+0.009, +0.030]
(python -m rlhf_jax.evaluate --workdir=PPO_DIR --base_workdir=SFT_DIR --base_style=chat
--data=world:small:0/prompts --split=validation --max_new_tokens=24): classify 0.42 →
0.60, harmful 0.91 → 0.99, rewrite 0.18 → 0.22. On the pipeline report's 174 held-out
SFT-split prompts (uniform over families): +0.018 [−0.005, +0.044], gold win rate 0.549
[0.514, 0.583]. How the settings were chosen, one seed each, from the same SFT model, on
the 128 RL-split test prompts:
  critic copied from the RM (InstructGPT's; `:instructgpt` keeps it): +0.039
    [+0.013, +0.065], KL 0.53, but +0.005 [−0.002, +0.012] on the validation prompts.
  zero-initialised value head on the policy's trunk: +0.048 [+0.028, +0.068] (chosen;
    the validation figure above came after the choice). Scores whitened per batch:
    +0.021; 4 PPO epochs per batch: +0.001 (KL 2.1); lr 2e-5: −0.022 (KL 1.2).
  Earlier, with the world v4 RM of one response per packed segment (critic from the RM):
  rollouts at 1.0, 25 iterations: +0.004 [−0.016, +0.022]. Among 8 samples of the SFT
    model per prompt the RM's favourite scores 0.245 gold at temperature 1.0, below the
    greedy answer's 0.296, but 0.323 at 0.7: at 1.0 a sample averages 0.231 gold (0.295
    at 0.7; many are garbled), and the RM, which orders a prompt's samples like the
    judge 0.61 of the time, cannot pick its way back above the greedy answer.
  rollouts at 0.7: +0.032 [+0.013, +0.050] at 25 iterations, +0.006 [−0.017, +0.030] at
    50 while the RM score kept rising (−0.37 → −0.08 → 0.00): over-optimisation after 25;
    on the validation prompts −0.008 [−0.020, +0.002].
  β = 0.1 at 0.7: +0.018 [+0.002, +0.034] at 25, +0.012 [−0.010, +0.038] at 50.
Earlier (world v2 RM, rollouts at 1.0, 50 iterations): the RM score rose while gold fell,
0.323 → 0.207 (−0.117 [−0.172, −0.065]), ppo/kl 3.4 nats: that RM scored refusals low
even on harmful prompts and PPO learned to stop refusing them (harmful 0.88 → 0.06).
Consumes the sft_world (init_from) and rm_world (ppo.reward_from) workdirs.
"""
from rlhf_jax import configs


def get_config(arg=None):
  arg = configs.variant(arg, ["smoke", "instructgpt", "lhp"])
  c = configs.base_config()
  c.task = "ppo"
  c.init_from = "runs/world_sft"
  c.data.path = "world:small:0/prompts"
  c.model.preset = "nano"
  c.batch_size = 32
  c.total_steps = 25
  c.optim.update(lr=1e-5, schedule="constant", warmup_steps=0, weight_decay=0.0,
                 b2=0.999, grad_clip=1.0)
  c.log_every = 1
  c.eval_every = 25
  c.ckpt_every = 10
  c.sampling.max_new_tokens = 24
  c.gold_eval.num_prompts = 128
  c.ppo = configs.ppo_block()
  c.ppo.update(reward_from="runs/world_rm", max_prompt_len=64, response_len=24, kl_coef=0.05,
               epochs=1, num_minibatches=2, critic_lr=5e-5,
               temperature=0.7,  # lm-human-preferences' rollout temperature
               critic_from="policy")  # its zero-initialised value head on the policy trunk
  if arg == "instructgpt":
    c.ppo.update(kl_coef=0.02, target_kl=0.0, epochs=1, num_minibatches=8, ema_decay=0.992,
                 critic_from="reward",  # InstructGPT's critic starts as the RM
                 ptx_coef=27.8, ptx_path="world:small:0/corpus", ptx_batch_size=16,
                 ptx_seq_len=64)
    c.batch_size = 64
  if arg == "lhp":
    c.ppo.update(kl_coef=0.15, target_kl=6.0, kl_horizon=10000.0, epochs=4,
                 score_norm="batch", critic_from="policy", tf_adam=True)
  if arg == "smoke":
    configs.smoke(c, init_from="", total_steps=6, eval_every=3, ckpt_every=3, log_every=1,
                  batch_size=16, **{"optim.lr": 1e-4, "optim.warmup_steps": 0,
                                    "ppo.reward_from": "", "ppo.max_prompt_len": 48,
                                    "ppo.response_len": 8, "sampling.max_new_tokens": 8,
                                    "gold_eval.num_prompts": 16, "gold_eval.batch_size": 8})
  return c
