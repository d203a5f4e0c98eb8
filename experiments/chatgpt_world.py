"""The four ChatGPT stages on the built-in world in one command: pretrain → SFT → RM → PPO.

Runs the stage experiments `pretrain_world.py`, `sft_world.py`, `rm_world.py` and
`ppo_world.py` in order, each in WORKDIR/<stage> through the shared loop, chained by
`links`: SFT warm-starts from the pretrained model, the reward model from SFT, PPO's
policy and reference from SFT and its reward model and critic from the RM. Then it writes
the evaluation report (WORKDIR/report.md, report.json and plots). A finished stage has a
WORKDIR/<stage>/done.json and is skipped on a rerun; an interrupted one resumes from its
last checkpoint, so rerunning the same command after a crash or kill finishes the job.

Run:
  python -m rlhf_jax.main --config=experiments/chatgpt_world.py --workdir=runs/chatgpt_world
Any stage setting can be overridden as --config.<stage>.<key>, e.g.
  --config.ppo.total_steps=100 --config.ppo.ppo.kl_coef=0.1 --config.report.num_prompts=0
Run only some stages with --config.stages=sft,rm,ppo (a link from a stage not run leaves
that stage's own setting: pass --config.sft.init_from=runs/world_pretrain).
The other methods, each from the same SFT model and RM, are stages too: add them with
  --config.stages=pretrain,sft,rm,ppo,grpo,rloo,dpo
(`grpo_world.py`, `rloo_world.py`, `dpo_world.py`, in WORKDIR/<method>); the report then
compares every method with SFT and PPO (gold score, RM score, KL to SFT, wall-clock,
samples generated) and plots gold score against KL per method.

Stages: pretrain_world cut to 400 steps (eval/loss 0.568 at step 400, below its 600-step
run's 0.59; the earlier 200-step cut stopped at 0.93), then sft_world, rm_world and
ppo_world as they are: see their run-books for models, data and per-stage measurements.
Report: every held-out test prompt of the world (`report.data`): the SFT split's 174
(the labelers' prompts), then the RL split's 396 (the users' prompts PPO trains on);
report.json gives each policy's gold score and each paired difference on each set too.
Hardware: 2 CPU cores. Measured (seed 0, world v4), stage by stage on quiet cores: pretrain
14.5, SFT 3.3, RM 5.5, PPO 2.2 min and the report 8.8 min: about 34 min.
Measured metrics (report.json, 570 held-out prompts, 95% intervals): gold score base
(few-shot) 0.413 [0.382, 0.446], SFT 0.548 [0.516, 0.578], best-of-4 0.516, best-of-16
0.495, PPO 0.534 [0.500, 0.566]; SFT − base +0.135 [+0.095, +0.176] (gold win rate 0.644
[0.611, 0.675]; SFT split alone +0.064 [−0.004, +0.132], RL split +0.166 [+0.120,
+0.213]); PPO − SFT −0.014 [−0.024, −0.004] (SFT split −0.004, RL split −0.018; on the RL
split's 381 validation prompts +0.016 [+0.001, +0.031]); best-of-4 − SFT −0.032, best-of-16
−0.053 [−0.075, −0.033]; RM accuracy 0.720 against a label ceiling of 0.786 (6.6 points
short), gold agreement 0.853 on the world's rankings but 0.628 on the policies' own greedy
answers and 0.577 on the SFT samples best-of-N chooses among: the RM cannot tell right
answers from wrong ones, and climbing it lowers the gold score (README: "What the main job
shows"). With every method: see the README's methods table. With the earlier 200-step
base (report on the SFT split's 174 prompts): SFT 0.296 against the base's 0.188 (+0.107
[+0.058, +0.157]), PPO − SFT +0.018 [−0.005, +0.044], RM 0.715.
Variant `:smoke` — every stage's tiny smoke settings, chained the same way, with a small
report; budget 3 minutes on 2 CPU cores. Measured without the report
(--config.report.num_prompts=0): 83 s wall, 67 s CPU, on 2 shared cores with a cold data
cache; the tests run it with its report (tests/conftest.py: smoke_pipeline).
Consumes nothing; everything is generated or trained in WORKDIR.
"""
import os

import ml_collections

from rlhf_jax import configs

STAGE_EXPERIMENTS = {"pretrain": "pretrain_world", "sft": "sft_world", "rm": "rm_world",
                     "ppo": "ppo_world", "grpo": "grpo_world", "rloo": "rloo_world",
                     "dpo": "dpo_world"}


def get_config(arg=None):
  arg = configs.variant(arg, ["smoke"])
  c = ml_collections.ConfigDict()
  c.task = "pipeline"  # not a stage: main runs a config with `stages` through its runner
  c.stages = "pretrain,sft,rm,ppo"
  # <stage>.<key>=<earlier stage>: the runner sets the key to that stage's workdir.
  c.links = ",".join(["sft.init_from=pretrain", "rm.init_from=sft"] + [
      f"{method}.init_from=sft,{method}.ppo.reward_from=rm" for method in ("ppo", "grpo", "rloo")]
      + ["dpo.init_from=sft"])
  here = os.path.dirname(os.path.abspath(__file__))
  for stage, name in STAGE_EXPERIMENTS.items():
    c[stage] = configs.experiment_module(os.path.join(here, f"{name}.py")).get_config(arg)
  c.report = configs.report_block()
  # Every held-out test prompt of the world: the labelers' SFT prompts, then the RL split's
  # users' prompts (PPO's distribution); report.json also pairs each set alone.
  c.report.num_prompts = 1000
  if arg == "smoke":
    c.report.update(num_prompts=8, batch_size=8, max_new_tokens=8, best_of="2,4",
                    num_examples=2)
  else:
    c.pretrain.total_steps = 400
  return c
