"""GRPO against the world reward model: no critic, a group of responses per prompt is the
baseline (Shao et al., 2024), with the variants peers ship as switches of the same code.

Same start as `ppo_world.py`: the policy (and frozen reference) from `sft_world.py`, the
reward model from `rm_world.py`. Each iteration samples G = 4 responses to each of 8 RL
prompts, scores them with the RM, and sets every token's advantage to the response's score
minus its group's mean, divided by the group's std. The KL to the SFT model is a loss term,
β·k3(π, π_ref) per token (β = 0.04), and the policy loss is each response's token mean,
averaged (loss_agg=sequence); the clipped ratio is PPO's. One iteration is one compiled
program, run by the shared loop (the PPO task with ppo.algorithm=grpo). Metrics are named
grpo/…: grpo/score, grpo/kl, grpo/first_minibatch_ratio_error, grpo/clipfrac, …; every
evaluation logs gold/score against the SFT model as ppo_world.py does.

Run (after sft_world into runs/world_sft and rm_world into runs/world_rm):
  python -m rlhf_jax.main --config=experiments/grpo_world.py --workdir=runs/world_grpo
Variants:
  :dr    — Dr. GRPO (Liu et al., 2025): no std division, the loss summed and divided by a
           constant (rows × response budget), so long responses are not favoured.
  :dapo  — DAPO (Yu et al., 2025): clip-higher (ε 0.2 / 0.28), the loss averaged over all
           tokens of the batch, a soft overlong penalty over the budget's last 8 tokens,
           no KL term.
  :gspo  — GSPO (Zheng et al., 2025): one importance ratio per response (its tokens' mean
           log-ratio), clipped at 3e-4 / 4e-4.
  :smoke — ppo_world.py:smoke's tiny random policy and RM, G = 2, 6 iterations; seconds.

Model and budget: ppo_world.py's (the `nano` SFT policy, 24-token responses at temperature
0.7, 32 episodes per iteration, 25 iterations, lr 1e-5), so the two compare at equal
samples. Measured (world v4, seed 0, the main pipeline from its 400-step base, quiet
cores): 1.3 min; gold/diff_vs_sft on its 128 RL-split test prompts −0.016 [−0.046,
+0.018]; in the report's 174 SFT-split prompts −0.018 [−0.044, +0.004], KL to SFT 0.11
nats, RM score −0.276 → −0.235; on all 570 of its held-out prompts (SFT and RL splits)
−0.015 [−0.028, −0.003], KL 0.18. From the earlier 200-step base's SFT and RM: 1.9 min; on its own evaluation (128 held-out RL-split prompts) gold/diff_vs_sft
+0.039 [+0.013, +0.070]; in the report (174 SFT-split prompts) gold 0.319 [0.271, 0.368]
against SFT's 0.296, difference +0.024 [−0.013, +0.061] (not significant on these
prompts), KL to SFT 0.23 nats, RM score −0.256 → −0.127. On world v3 (rollouts at 1.0, 50
iterations) it did not beat SFT. The variants (:dr, :dapo, :gspo) have not been run at
full size.
Consumes the sft_world (init_from) and rm_world (ppo.reward_from) workdirs.
"""
import os

from rlhf_jax import configs


def get_config(arg=None):
  arg = configs.variant(arg, ["smoke", "dr", "dapo", "gspo"])
  here = os.path.dirname(os.path.abspath(__file__))
  c = configs.experiment_module(os.path.join(here, "ppo_world.py")).get_config(
      "smoke" if arg == "smoke" else None)
  c.batch_size //= 4 if arg != "smoke" else 2   # prompts; × group_size = the same episodes
  c.ppo.update(algorithm="grpo", group_size=4, kl_in="loss", kl_estimator="k3", kl_coef=0.04,
               loss_agg="sequence", whiten_advantages=False)
  if arg == "smoke":
    c.ppo.group_size = 2
  if arg == "dr":
    c.ppo.update(group_std=False, loss_agg="constant")
  if arg == "dapo":
    c.ppo.update(cliprange=0.2, cliprange_high=0.28, loss_agg="token", overlong_buffer=8,
                 kl_coef=0.0)
  if arg == "gspo":
    c.ppo.update(ratio_level="sequence", cliprange=3e-4, cliprange_high=4e-4)
  return c
