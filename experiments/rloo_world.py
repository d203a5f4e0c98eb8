"""RLOO against the world reward model: no critic, each response's baseline is the mean
score of the other responses to its prompt (Ahmadian et al., 2024).

Same start as `ppo_world.py`: the policy (and frozen reference) from `sft_world.py`, the
reward model from `rm_world.py`. Each iteration samples G = 4 responses to each of 8 RL
prompts; a response's return is its RM score minus β·KL(π ‖ π_ref) summed over its tokens
(k1, β = 0.05, as PPO's reward), and its advantage is that return minus the mean of the
other G − 1 returns, on every token. The update is PPO's clipped ratio over the batch's
tokens (one compiled program per iteration: the PPO task with ppo.algorithm=rloo). Metrics
are named rloo/…: rloo/score, rloo/kl, rloo/first_minibatch_ratio_error, …; every
evaluation logs gold/score against the SFT model as ppo_world.py does.

Run (after sft_world into runs/world_sft and rm_world into runs/world_rm):
  python -m rlhf_jax.main --config=experiments/rloo_world.py --workdir=runs/world_rloo
Variants:
  :smoke — ppo_world.py:smoke's tiny random policy and RM, G = 2, 6 iterations; seconds.

Model and budget: ppo_world.py's (the `nano` SFT policy, 24-token responses at temperature
0.7, 32 episodes per iteration, 25 iterations, lr 1e-5), so the two compare at equal
samples. Measured (world v4, seed 0, the main pipeline from its 400-step base, quiet
cores): 1.2 min; gold/diff_vs_sft on its 128 RL-split test prompts +0.005 [−0.011,
+0.024]; in the report's 174 SFT-split prompts −0.005 [−0.017, +0.008], KL to SFT 0.09
nats, RM score −0.276 → −0.238; on all 570 of its held-out prompts (SFT and RL splits)
−0.002 [−0.011, +0.007], KL 0.16. From the earlier 200-step base's SFT and RM: 2.0 min; on its own evaluation (128 held-out RL-split prompts) gold/diff_vs_sft
+0.021 [+0.006, +0.040]; in the report (174 SFT-split prompts) gold 0.287 [0.241, 0.331]
against SFT's 0.296, difference −0.009 [−0.026, +0.004], KL to SFT 0.24 nats, RM score
−0.256 → −0.152. On world v3 (rollouts at 1.0, 50 iterations) it did not beat SFT.
Consumes the sft_world (init_from) and rm_world (ppo.reward_from) workdirs.
"""
import os

from rlhf_jax import configs


def get_config(arg=None):
  arg = configs.variant(arg, ["smoke"])
  here = os.path.dirname(os.path.abspath(__file__))
  c = configs.experiment_module(os.path.join(here, "ppo_world.py")).get_config(
      "smoke" if arg == "smoke" else None)
  c.batch_size //= 4 if arg != "smoke" else 2   # prompts; × group_size = the same episodes
  c.ppo.update(algorithm="rloo", group_size=2 if arg == "smoke" else 4,
               whiten_advantages=False)
  return c
