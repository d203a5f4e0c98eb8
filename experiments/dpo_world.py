"""DPO on the built-in world's K-way rankings, from the SFT model (the DPO stage).

The policy and the frozen reference both start from the SFT model of `sft_world.py`; the
data are the reward model's (`rm_world.py`): labelers' rankings of K = 4 responses per
prompt, with ties. The loss is the Plackett–Luce form of DPO over each ranking (tied
responses are not ordered against each other; see `losses.dpo_loss`), β = 0.1. No reward
model and no sampling in training: one policy and one reference forward per response.
At each evaluation it logs, on the world's held-out test rankings, dpo/accuracy (how often
the implicit reward β·log(π/π_ref) orders a labelled pair right) with its 95% interval,
dpo/loss, dpo/reward_margin, dpo/ece, dpo/label_ceiling and dpo/gold_agreement (the same
numbers as rm_world's rm/*, for the implicit reward); dpo/kl, KL(policy ‖ SFT) of one
sampled response on 64 held-out prompts; and gold/score of the greedy responses to 128
held-out RL prompts (ppo_world's), with WORKDIR/samples.jsonl.

Run (after SFT into runs/world_sft):
  python -m rlhf_jax.main --config=experiments/dpo_world.py --workdir=runs/world_dpo
IPO instead of DPO (pairs of each ranking, target gap 1/(2β) = 5 nats):
  python -m rlhf_jax.main --config=experiments/dpo_world.py:ipo --workdir=runs/world_ipo

Model: the SFT `nano` (6 layers, 384 wide) and its tokenizer; rows of 96 tokens (longer
rows lose prompt tokens first), batch 16 prompts (64 rows), 104 steps (a third of an epoch
of world v4's 5,014 training rankings), lr 1e-5 (PPO's) constant after 10 warm-up steps,
no weight decay; evaluations at steps 0 and 104 on 352 of the 1,100 held-out rankings.
Hardware: 2 CPU cores; measured 7.5 min wall in the main pipeline (world v4, quiet cores),
from its SFT model (10.8 min in an earlier run that shared the cores for 2 minutes).
Measured (seed 0, world v4, the main pipeline's SFT of its 400-step base): dpo/accuracy
0.676 [0.651, 0.699] against a label ceiling of 0.784 (the pipeline's RM: 0.720 on all
1,100), dpo/gold_agreement 0.766, dpo/kl 0.18 nats; gold/score on 128 held-out RL prompts
0.517 (SFT) → 0.504; on the report's 174 SFT-split prompts +0.002 [−0.013, +0.019] over
SFT, on all 570 of its held-out prompts (SFT and RL splits) −0.003 [−0.010, +0.004].
From the 200-step base's SFT: held-out dpo/accuracy 0.5 (step 0, policy = reference) →
0.671 [0.646, 0.692] (the pipeline's RM: 0.715 on all 1,100), label ceiling 0.784,
dpo/gold_agreement 0.769, dpo/ece 0.063; dpo/kl 0.10 nats; gold/score on 128 held-out RL
prompts 0.276 (SFT, step 0) → 0.295. On world v3 (1 epoch of its 1,668 rankings, 17.9
min on shared cores): dpo/accuracy 0.659 [0.637, 0.681], dpo/kl 0.34 nats, gold/score
0.276 → 0.272 (−0.003 [−0.009, +0.003]).
`:ipo` (world v3, 18.1 min, same SFT): dpo/accuracy 0.672 [0.650, 0.695], dpo/gold_agreement 0.793,
dpo/kl 0.07 nats, gold/score 0.276 → 0.288 [0.233, 0.349], paired difference +0.013
[+0.001, +0.027] (100 of 128 answers unchanged; one seed).
Variant `:smoke` — no init_from: a tiny fresh policy (= reference) and its own BPE on the
preference texts, 20 steps, evaluated at steps 0 and 20 (16 prompts judged; no dpo/kl, whose
sampling is tested in tests/test_dpo.py); seconds on a CPU.
Consumes an SFT workdir (init_from) and the world's rankings; feeds evaluation and the
report (a `dpo` policy).
"""
from rlhf_jax import configs


def get_config(arg=None):
  arg = configs.variant(arg, ["smoke", "ipo"])
  c = configs.base_config()
  c.task = "dpo"
  c.init_from = "runs/world_sft"
  c.data.path = "world:small:0/rankings"
  c.data.seq_len = 96
  c.model.preset = "nano"
  c.batch_size = 16
  c.total_steps = 104       # a third of an epoch of the world's 5,014 training rankings
  c.optim.update(lr=1e-5, schedule="constant", warmup_steps=10, weight_decay=0.0)
  c.log_every = 5
  c.eval_every = 1000       # evaluations at step 0 and the last step
  c.eval_steps = 22         # 352 of the 1,100 held-out rankings (batches of 16)
  c.ckpt_every = 50
  c.sampling.max_new_tokens = 24
  c.gold_eval.num_prompts = 128
  c.dpo = configs.dpo_block()
  c.dpo.update(loss="dpo", beta=0.1, num_responses=4, kl_prompts=64)
  if arg == "ipo":
    c.dpo.loss = "ipo"
  if arg == "smoke":
    configs.smoke(c, init_from="", epochs=0.0, total_steps=20, eval_every=20, eval_steps=4,
                  ckpt_every=20, **{"optim.lr": 1e-3, "optim.schedule": "cosine",
                                    "optim.warmup_steps": 2, "sampling.max_new_tokens": 8,
                                    "gold_eval.num_prompts": 16, "gold_eval.batch_size": 16,
                                    "dpo.kl_prompts": 0})
  return c
