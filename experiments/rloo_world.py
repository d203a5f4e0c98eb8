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
1, 32 episodes per iteration, 50 iterations, lr 1e-5), so the two compare at equal samples.
Measured (the pipeline's default world, seed 0, from its SFT and RM; cores shared with
other work): 4.8 min; gold 0.290 [0.242, 0.337] against SFT's 0.296, difference −0.005
[−0.027, +0.014], KL to SFT 0.28 nats, RM score −0.192 → −0.155.
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
