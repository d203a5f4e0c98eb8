"""The config schema shared by every experiment (DESIGN §3.2).

Experiment files in `experiments/` start from `base_config()` and set their
stage's values. Configs hold no derived values: tasks compute those and log them.
A pipeline experiment holds one such config per stage (see rlhf_jax/pipeline_runner.py).
"""
import importlib.util
import os

import ml_collections

from rlhf_jax import sharding


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.task = "pretrain"
  c.total_steps = 1000
  c.epochs = 0.0                  # > 0: train this many passes over the data (replaces total_steps)
  c.batch_size = 64              # global, in sequences; divisible by mesh.data * mesh.fsdp
  c.log_every = 10
  c.eval_every = 200              # 0 = never
  c.eval_at_start = True          # also evaluate the initial state (step 0) of a fresh run
  c.eval_at_epoch_end = True      # also evaluate at each epoch's end (runs with epochs > 0)
  c.eval_steps = 20               # validation batches per evaluation
  c.ckpt_every = 500
  c.keep_ckpts = 3
  c.init_from = ""                # another stage's workdir (warm start)
  c.peak_flops_per_device = 0.0   # 0 = look up the device kind (for train/mfu)

  c.model = ml_collections.ConfigDict(dict(
      preset="nano",              # tiny | nano | gpt2 | gpt2-medium | gpt2-large | gpt2-xl
      num_layers=0, num_heads=0, embed_dim=0, max_len=0,  # 0 = the preset's value
      dropout=0.0, dtype="float32", attention="xla", remat=False))
  c.tokenizer = ml_collections.ConfigDict(dict(
      vocab_size=2048,            # when training a BPE on the corpus
      path=""))                   # or an existing tokenizer.json / GPT-2 vocab.json+merges.txt dir
  c.data = ml_collections.ConfigDict(dict(
      path="",                    # files, globs, dirs (comma-separated) or world:SIZE:SEED/KIND
      valid_path="",              # validation files; default: the last valid_fraction of `path`
      tfds_name="",               # a TFDS catalog dataset (needs internet the first time)
      mixture=ml_collections.ConfigDict(),  # name -> {path, tfds_name, weight}
      text_key="text",
      valid_fraction=0.1,
      seq_len=256,
      cache_dir="",               # built datasets; default $RLHF_JAX_CACHE_DIR or ~/.cache/rlhf_jax
      skip_malformed=False,
      pack=False))                # sft, reward: several whole examples per training row
  c.optim = ml_collections.ConfigDict(dict(
      lr=6e-4, schedule="cosine", warmup_steps=100, min_lr_ratio=0.1,
      b1=0.9, b2=0.95, eps=1e-8, weight_decay=0.1, grad_clip=1.0, grad_accum_steps=1))
  c.sampling = ml_collections.ConfigDict(dict(
      max_new_tokens=48,          # response budget when sampling (evaluation, PPO)
      temperature=0.0,            # 0 = greedy
      top_k=0,                    # 0 = no top-k cut
      top_p=1.0))                 # 1 = no nucleus cut
  c.gold_eval = ml_collections.ConfigDict(dict(
      num_prompts=0,              # held-out world prompts judged at each eval; 0 = all, -1 = off
      split="test",               # which split of the world data holds them
      batch_size=32,              # prompts per generation call (divisible by the devices)
      num_shots=3))               # demonstrations in a base model's few-shot prompt
  c.mesh = ml_collections.ConfigDict(dict(
      data=-1, fsdp=1, tensor=1, rules=sharding.DEFAULT_RULES))
  return c


def rm_block() -> ml_collections.ConfigDict:
  """The reward-model stage block, `config.rm`."""
  return ml_collections.ConfigDict(dict(
      num_responses=9,            # K: the most responses a record may have (error if more)
      margin=0.0,                 # m in −log σ(r_better − r_worse − m)
      normalize_gain=False,       # also scale rewards to std 1 on the reference set
      reference_path="",          # reference responses (SFT format); default: see tasks/reward.py
      reference_max=1024,         # reference responses scored for the normalisation; 0 = all
      pack_rows=0,                # with data.pack: rows per batch holding the batch's responses
      pack_len=0,                 # with data.pack: tokens per packed row; 0 = data.seq_len
      share_prompt=False,         # with data.pack: a record's responses follow one copy of
                                  # its prompt (each sees the prompt and itself)
  ))


def dpo_block() -> ml_collections.ConfigDict:
  """The DPO stage block, `config.dpo` (see rlhf_jax/tasks/dpo.py and losses.dpo_loss)."""
  return ml_collections.ConfigDict(dict(
      loss="dpo",                 # dpo: Plackett–Luce over the ranking (pairs: −log σ(r_w − r_l))
                                  # ipo: (h_w − h_l − 1/(2β))² over the ranking's pairs
      beta=0.1,                   # β of the implicit reward r = β·log(π / π_ref)
      num_responses=9,            # K: the most responses a record may have (error if more)
      kl_prompts=64,              # held-out prompts sampled at each evaluation for dpo/kl; 0 = off
  ))


def mixture_source(path: str = "", tfds_name: str = "", weight: float = 1.0):
  """One entry of `config.data.mixture`."""
  return ml_collections.ConfigDict(dict(path=path, tfds_name=tfds_name, weight=weight))


def smoke(c: ml_collections.ConfigDict, **overrides) -> ml_collections.ConfigDict:
  """The `:smoke` variant: a tiny model for a few steps, seconds on a CPU."""
  c.model.update(preset="tiny", dropout=0.0, dtype="float32", attention="xla")
  c.tokenizer.vocab_size = 512
  c.data.seq_len = 64
  c.batch_size = 16
  c.total_steps = 30
  c.optim.update(lr=3e-3, warmup_steps=5, grad_accum_steps=1)
  c.update(log_every=5, eval_every=15, eval_steps=4, ckpt_every=10)
  return override(c, **overrides)


def override(c: ml_collections.ConfigDict, **dotted) -> ml_collections.ConfigDict:
  """Sets values by dotted key, like `--config.optim.lr=...`: override(c, **{"optim.lr": 1e-3})."""
  c.update_from_flattened_dict(dotted)
  return c


def variant(arg, variants: dict) -> str:
  """Checks a `:ARG` against the experiment's variants ('' always means the full run)."""
  if arg and arg not in variants:
    raise ValueError(f"unknown variant {arg!r}; use one of {['', *variants]}")
  return arg or ""


def experiment_module(path: str):
  """The experiment file at `path` as a module (a pipeline calls its stages' `get_config`)."""
  spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def report_block() -> ml_collections.ConfigDict:
  """A pipeline's `config.report`: the evaluation written once every stage is done."""
  return ml_collections.ConfigDict(dict(
      num_prompts=256,            # held-out prompts evaluated (the first of each source);
                                  # 0 = write no report
      data="",                    # world specs, comma-separated, whose test prompts are
                                  # evaluated in order; "" = the SFT stage's data.path, then
                                  # the PPO stage's when it is another set of that world
      batch_size=32,              # prompts per generation call (divisible by the devices)
      max_new_tokens=48,          # response budget
      best_of="4,16",             # N of each best-of-N policy, comma-separated
      temperature=0.7,            # best-of-N's SFT sampling temperature (> 0)
      num_examples=6,             # example responses shown in report.md
      seed=0))


def ppo_block() -> ml_collections.ConfigDict:
  """The PPO stage block, `config.ppo` (see rlhf_jax/tasks/ppo.py for the math)."""
  return ml_collections.ConfigDict(dict(
      algorithm="ppo",            # ppo: GAE with a critic | grpo, rloo: critic-free, the
                                  # group_size responses to a prompt are the baseline (rl.py)
      group_size=1,               # G responses sampled per prompt (grpo/rloo: at least 2)
      group_std=True,             # grpo divides by the group's std (False: Dr. GRPO)
      reward_from="",             # reward-model workdir (its tokenizer must be the policy's)
      reward="model",             # "model" (the RM) or "token_count:<id>[,<id>...]" (a known
                                  # reward for tests: +1 per response token among the ids)
      critic_from="reward",       # "reward": a copy of the RM; "policy": policy trunk + zero head
      max_prompt_len=64,          # P: prompts are left-padded (longer ones keep their end)
      response_len=32,            # N: the sampling budget per response
      temperature=1.0,            # rollout sampling temperature (log-probs use the same)
      kl_coef=0.05,               # β (initial value when adaptive)
      target_kl=0.0,              # > 0: adaptive controller's target per-response KL; 0 = fixed β
      kl_horizon=10000.0,         # adaptive controller's horizon, in episodes
      kl_estimator="k1",          # per-token KL in the reward: k1 | k2 | k3
      kl_in="reward",             # reward: −β·KL_t in the per-token reward (InstructGPT) |
                                  # loss: β·k3(π, π_ref) as a loss term (GRPO)
      gamma=1.0, lam=0.95,        # GAE
      epochs=4,                   # PPO passes over each rollout batch
      num_minibatches=4,          # optimizer steps per pass (batch_size / minibatch rows)
      cliprange=0.2,              # ε of the policy ratio
      cliprange_high=0.0,         # > 0: the ratio's upper ε (DAPO's clip-higher); 0 = cliprange
      ratio_level="token",        # token | sequence (GSPO: one ratio per response, its mean log)
      loss_agg="token",           # policy loss over a minibatch: token (PPO, DAPO) | sequence
                                  # (GRPO) | constant (Dr. GRPO); see rl.loss_weights
      cliprange_value=0.2,        # ε of the value clipping
      vf_coef=0.1,                # value-loss weight
      entropy_coef=0.0,           # entropy bonus
      whiten_advantages=True,
      score_norm="none",          # none | running (running mean/std) | batch (whiten per batch)
      score_clip=0.0,             # > 0: clip the processed score to ±score_clip
      missing_eos_penalty=0.0,    # subtracted from the score of a response with no EOS
      overlong_buffer=0,          # > 0: DAPO's soft overlong penalty, 0 → −1 over the last
                                  # overlong_buffer tokens of the budget (rl.overlong_penalty)
      ptx_coef=0.0,               # γ of PPO-ptx (InstructGPT: 27.8); 0 = off
      ptx_path="",                # pretraining corpus (files or world:…/corpus)
      ptx_batch_size=8,           # corpus rows per iteration, split over the minibatches
      ptx_seq_len=64,
      ema_decay=0.0,              # > 0: EMA of policy weights (InstructGPT: 0.992); evaluated
      critic_lr=0.0,              # 0 = optim.lr
      tf_adam=False,              # TensorFlow's Adam (lm-human-preferences)
      ratio_warn=10.0))           # warn when a ratio exceeds this (or KL < 0)
