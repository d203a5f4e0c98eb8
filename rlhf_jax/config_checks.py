"""Checks of a stage config, run before anything is written, any data built or model compiled.

Each raises `UserError` naming the key, the value and the fix for the first problem:
  check(config)                values: the shared keys (`configs.base_config`), the stage
                               blocks (`rm`, `ppo`, `dpo`), choices, and lengths against the
                               model's context; pure, so a pipeline checks every stage up front;
  check_inputs(config)         the runs and files it reads: init_from / ppo.reward_from are
                               finished workdirs of a stage it can start from, with this model
                               and tokenizer; tokenizer.path, rm.reference_path, ppo.ptx_path exist;
  check_devices(config, mesh)  batch sizes against the data-parallel devices and microbatches;
  check_workdir(workdir)       the workdir is not a file.
Ranges are what the code can run with, not what is sensible: lr=1e-1 passes, lr=-1
(gradient ascent) does not.
"""
import json
import math
import numbers
import os

from rlhf_jax.errors import UserError
from rlhf_jax.tokenizer import MIN_VOCAB_SIZE

# key -> (predicate on the value, what a valid value is)
_POSITIVE = (lambda v: v > 0, "a number > 0")
_NON_NEGATIVE = (lambda v: v >= 0, "a number >= 0")
_AT_LEAST_ONE = (lambda v: v >= 1, "an integer >= 1")
_PROBABILITY = (lambda v: 0 <= v <= 1, "a number in [0, 1]")
_FRACTION = (lambda v: 0 <= v < 1, "a number in [0, 1)")

RULES = {
    "total_steps": _NON_NEGATIVE,  # 0 only together with epochs > 0 (checked below)
    "epochs": _NON_NEGATIVE,
    "batch_size": _POSITIVE,
    "log_every": _POSITIVE,
    "eval_every": _NON_NEGATIVE,
    "eval_steps": _POSITIVE,
    "ckpt_every": _NON_NEGATIVE,
    "keep_ckpts": _POSITIVE,
    "model.num_layers": _NON_NEGATIVE,
    "model.num_heads": _NON_NEGATIVE,
    "model.embed_dim": _NON_NEGATIVE,
    "model.max_len": _NON_NEGATIVE,
    "model.dropout": _FRACTION,
    "tokenizer.vocab_size": (lambda v: v >= MIN_VOCAB_SIZE,
                             f"at least {MIN_VOCAB_SIZE} (the 256 bytes + the special tokens)"),
    "data.valid_fraction": _FRACTION,
    "data.seq_len": _POSITIVE,
    "optim.lr": _POSITIVE,
    "optim.warmup_steps": _NON_NEGATIVE,
    "optim.min_lr_ratio": _PROBABILITY,
    "optim.b1": _FRACTION,
    "optim.b2": _FRACTION,
    "optim.eps": _POSITIVE,
    "optim.weight_decay": _NON_NEGATIVE,
    "optim.grad_clip": _NON_NEGATIVE,
    "optim.grad_accum_steps": _AT_LEAST_ONE,
    "sampling.max_new_tokens": _POSITIVE,
    "sampling.temperature": _NON_NEGATIVE,
    "sampling.top_k": _NON_NEGATIVE,
    "sampling.top_p": (lambda v: 0 < v <= 1, "a number in (0, 1]"),
    "gold_eval.batch_size": _POSITIVE,
    "gold_eval.num_shots": _NON_NEGATIVE,
    # The reward-model block (configs.rm_block).
    "rm.num_responses": (lambda v: v >= 2, "an integer >= 2 (a ranking compares two or more)"),
    "rm.margin": _NON_NEGATIVE,
    "rm.reference_max": (lambda v: v >= 0, "an integer >= 0 (0 = all references)"),
    "rm.pack_rows": (lambda v: v >= 0, "an integer >= 0 (used with data.pack)"),
    "rm.pack_len": (lambda v: v >= 0, "an integer >= 0 (0 = data.seq_len)"),
    # The PPO block (configs.ppo_block).
    "ppo.max_prompt_len": _POSITIVE,
    "ppo.response_len": _POSITIVE,
    "ppo.temperature": _POSITIVE,
    "ppo.kl_coef": _NON_NEGATIVE,
    "ppo.target_kl": (lambda v: v >= 0, "a number >= 0 (0 = a fixed kl_coef)"),
    "ppo.kl_horizon": _POSITIVE,
    "ppo.gamma": _PROBABILITY,
    "ppo.lam": _PROBABILITY,
    "ppo.epochs": _AT_LEAST_ONE,
    "ppo.num_minibatches": _AT_LEAST_ONE,
    "ppo.cliprange": _POSITIVE,
    "ppo.cliprange_value": _POSITIVE,
    "ppo.vf_coef": _NON_NEGATIVE,
    "ppo.entropy_coef": _NON_NEGATIVE,
    "ppo.score_clip": _NON_NEGATIVE,
    "ppo.missing_eos_penalty": _NON_NEGATIVE,
    "ppo.ptx_coef": _NON_NEGATIVE,
    "ppo.ptx_batch_size": _POSITIVE,
    "ppo.ptx_seq_len": _POSITIVE,
    "ppo.ema_decay": _FRACTION,
    "ppo.critic_lr": (lambda v: v >= 0, "a number >= 0 (0 = optim.lr)"),
    "ppo.ratio_warn": _POSITIVE,
    "ppo.group_size": _AT_LEAST_ONE,
    "ppo.cliprange_high": (lambda v: v >= 0, "a number >= 0 (0 = ppo.cliprange)"),
    "ppo.overlong_buffer": (lambda v: 0 <= v, "an integer >= 0 (0 = off)"),
    # The DPO block (configs.dpo_block).
    "dpo.beta": _POSITIVE,
    "dpo.num_responses": (lambda v: v >= 2, "an integer >= 2 (a ranking compares two or more)"),
    "dpo.kl_prompts": (lambda v: v >= 0, "an integer >= 0 (0 = no dpo/kl)"),
}
CHOICES = {
    "ppo.critic_from": ("reward", "policy"),
    "ppo.score_norm": ("none", "running", "batch"),
    "ppo.kl_estimator": ("k1", "k2", "k3"),
    "ppo.algorithm": ("ppo", "grpo", "rloo"),
    "ppo.kl_in": ("reward", "loss"),
    "ppo.loss_agg": ("token", "sequence", "constant"),
    "ppo.ratio_level": ("token", "sequence"),
    "dpo.loss": ("dpo", "ipo"),
}
# The stages whose workdirs a stage's init_from / ppo.reward_from may name.
INPUT_STAGES = {
    "pretrain": {"init_from": ("pretrain", "sft")},
    "sft": {"init_from": ("pretrain", "sft")},
    "reward": {"init_from": ("pretrain", "sft", "reward")},
    "ppo": {"init_from": ("pretrain", "sft"), "ppo.reward_from": ("reward",)},
    "dpo": {"init_from": ("pretrain", "sft")},
}
_SHAPE_KEYS = ("num_layers", "num_heads", "embed_dim", "max_len")


def _lookup(config, dotted: str):
  node = config
  for part in dotted.split("."):
    if part not in node:
      return None
    node = node[part]
  return node


def check(config) -> None:
  """Raises UserError for the first value the run cannot use (no files, no devices)."""
  for key, (valid, meaning) in RULES.items():
    value = _lookup(config, key)
    if value is None:
      continue  # a config without this block (e.g. a pipeline's own keys)
    if (isinstance(value, bool) or not isinstance(value, numbers.Real)
        or not math.isfinite(value) or not valid(value)):
      raise UserError(f"--config.{key}={value!r}: must be {meaning}; pass "
                      f"--config.{key}= with such a value")
  for key, allowed in CHOICES.items():
    value = _lookup(config, key)
    if value is not None and value not in allowed:
      raise UserError(f"--config.{key}={value!r}: must be one of {list(allowed)}; pass "
                      f"--config.{key}= with one of them")
  if _lookup(config, "total_steps") == 0 and not _lookup(config, "epochs"):
    raise UserError("--config.total_steps=0 and epochs=0: nothing to train; set "
                    "--config.total_steps to a number of steps > 0 (or --config.epochs)")
  if _lookup(config, "total_steps") and _lookup(config, "epochs"):
    raise UserError(f"--config.total_steps={_lookup(config, 'total_steps')} and "
                    f"--config.epochs={_lookup(config, 'epochs')} both set the run's length; "
                    "keep one: add --config.epochs=0 to train for total_steps, or "
                    "--config.total_steps=0 to train for epochs")
  if "task" in config and "model" in config:
    _check_task(config.task)
    _check_lengths(config)
    _check_packing(config)
  if "ppo" in config:
    _check_ppo(config)


def _check_task(task: str) -> None:
  import importlib  # pylint: disable=g-import-not-at-top
  if task in INPUT_STAGES:
    return
  try:
    if hasattr(importlib.import_module(f"rlhf_jax.tasks.{task}"), "make_task"):
      return
  except ModuleNotFoundError:
    pass
  raise UserError(f"--config.task={task!r}: no such stage (a module rlhf_jax/tasks/<task>.py "
                  f"with a make_task); use one of {list(INPUT_STAGES)}")


def _context(config) -> int | None:
  """The model's context (max_len) from its model block; None when an init_from that is a
  Hugging Face directory fixes it later (`hf.resolve_config`)."""
  from rlhf_jax import hf  # pylint: disable=g-import-not-at-top
  from rlhf_jax.models import gpt  # pylint: disable=g-import-not-at-top
  model_cfg = gpt.config_from(config.model, vocab_size=1)  # preset, heads, dtype, attention
  if config.init_from and not config.model.max_len and hf.is_hf_directory(config.init_from):
    return None
  return model_cfg.max_len


def _check_lengths(config) -> None:
  context = _context(config)
  if context is None:
    return
  where = f"the model's context of {context} tokens (--config.model.max_len)"
  if config.sampling.max_new_tokens >= context:
    raise UserError(f"--config.sampling.max_new_tokens={config.sampling.max_new_tokens} leaves "
                    f"no room for a prompt in {where}; lower it")
  if config.task != "ppo":
    if config.data.seq_len > context:
      raise UserError(f"--config.data.seq_len={config.data.seq_len} exceeds {where}; lower "
                      f"--config.data.seq_len or raise --config.model.max_len")
    pack_len = _lookup(config, "rm.pack_len") or 0
    if pack_len > context:
      raise UserError(f"--config.rm.pack_len={pack_len} exceeds {where}; lower it")
    return
  cfg = config.ppo
  if cfg.max_prompt_len + cfg.response_len > context:
    raise UserError(f"--config.ppo.max_prompt_len={cfg.max_prompt_len} + "
                    f"--config.ppo.response_len={cfg.response_len} exceeds {where}; shorten them")
  if cfg.ptx_coef > 0 and cfg.ptx_seq_len > context:
    raise UserError(f"--config.ppo.ptx_seq_len={cfg.ptx_seq_len} exceeds {where}; lower it")


def _check_packing(config) -> None:
  """data.pack packs SFT and reward-model rows; the reward model also needs rm.pack_rows."""
  pack, pack_rows = config.data.get("pack", False), _lookup(config, "rm.pack_rows") or 0
  if pack and config.task not in ("sft", "reward"):
    raise UserError(f"--config.data.pack=True: only the sft and reward stages pack examples "
                    f"(this is a {config.task} stage); set --config.data.pack=False")
  if config.task == "reward" and pack and not pack_rows:
    raise UserError("--config.data.pack=True for the reward model needs --config.rm.pack_rows, "
                    "the rows of data.seq_len tokens holding a batch's responses (e.g. "
                    "batch_size x num_responses / 2); set it")
  for key, off in (("rm.pack_rows", 0), ("rm.pack_len", 0), ("rm.share_prompt", False)):
    value = _lookup(config, key)
    if value not in (None, off) and not pack:
      raise UserError(f"--config.{key}={value} but data.pack=False; set "
                      f"--config.data.pack=True to pack rows, or {key}={off}")


def _check_ppo(config) -> None:
  from rlhf_jax.tasks import ppo  # pylint: disable=g-import-not-at-top
  cfg = config.ppo
  ppo.parse_reward(cfg.reward)
  if cfg.algorithm != "ppo" and cfg.group_size < 2:
    raise UserError(f"--config.ppo.algorithm={cfg.algorithm!r} needs a group: set "
                    f"--config.ppo.group_size to 2 or more responses per prompt")
  if cfg.overlong_buffer > cfg.response_len:
    raise UserError(f"--config.ppo.overlong_buffer={cfg.overlong_buffer} exceeds "
                    f"ppo.response_len={cfg.response_len}; lower it (0 = off)")
  split = cfg.num_minibatches * config.optim.grad_accum_steps
  if config.batch_size * cfg.group_size % split:
    rows = (f"--config.batch_size={config.batch_size}" if cfg.group_size == 1 else
            f"--config.batch_size={config.batch_size} x ppo.group_size={cfg.group_size}")
    raise UserError(f"{rows} does not split into "
                    f"ppo.num_minibatches={cfg.num_minibatches} x optim.grad_accum_steps="
                    f"{config.optim.grad_accum_steps}; adjust one of them")
  if cfg.ptx_coef > 0:
    if not cfg.ptx_path:
      raise UserError(f"--config.ppo.ptx_coef={cfg.ptx_coef} needs a pretraining corpus; set "
                      f"--config.ppo.ptx_path (or ptx_coef=0)")
    if cfg.ptx_batch_size % split:
      raise UserError(f"--config.ppo.ptx_batch_size={cfg.ptx_batch_size} does not split into "
                      f"{split} minibatch x micro-batch pieces; use a multiple of {split}")
  if cfg.reward_from and not config.init_from:
    raise UserError("ppo.reward_from is set but init_from is not; set --config.init_from to "
                    "the SFT workdir the reward model was trained from")
  if config.init_from and not cfg.reward_from and cfg.reward == "model":
    raise UserError("init_from is set but ppo.reward_from is not; set --config.ppo.reward_from "
                    "to a reward-model workdir (or use ppo.reward=token_count:<id>)")


def check_devices(config, mesh) -> None:
  """Raises UserError for a batch that does not split over `mesh`'s data-parallel devices."""
  from rlhf_jax import sharding  # pylint: disable=g-import-not-at-top
  devices = sharding.batch_parallelism(mesh)
  micro = config.optim.grad_accum_steps
  if config.batch_size % (micro * devices):
    raise UserError(f"--config.batch_size={config.batch_size} is not divisible by "
                    f"optim.grad_accum_steps={micro} x {devices} data-parallel devices (mesh "
                    f"data x fsdp); use a multiple of {micro * devices}")
  sharding.check_batch_size(config.batch_size, mesh, "--config.batch_size")
  pack_rows = _lookup(config, "rm.pack_rows")
  if pack_rows:
    if pack_rows % (micro * devices):
      raise UserError(f"--config.rm.pack_rows={pack_rows} is not divisible by "
                      f"optim.grad_accum_steps={micro} x {devices} data-parallel devices; use "
                      f"a multiple of {micro * devices}")
    sharding.check_batch_size(pack_rows, mesh, "--config.rm.pack_rows")  # and the processes
  if "ppo" in config and config.ppo.ptx_coef > 0:
    sharding.check_batch_size(config.ppo.ptx_batch_size, mesh, "--config.ppo.ptx_batch_size")
  gold_eval = config.eval_every and config.gold_eval.num_prompts >= 0 and (
      config.task == "ppo"
      or (config.task in ("sft", "dpo") and config.data.path.startswith("world:")))
  sampled_kl = config.eval_every and "dpo" in config and config.dpo.kl_prompts > 0
  if gold_eval or sampled_kl:
    sharding.check_batch_size(config.gold_eval.batch_size, mesh, "--config.gold_eval.batch_size")


def check_inputs(config, produced: tuple[str, ...] = ()) -> None:
  """Raises UserError for a run or file the stage reads that is missing or does not fit.

  `produced`: workdirs an earlier stage of the same pipeline writes (not checked yet).
  """
  produced = {os.path.abspath(path) for path in produced}
  for key, stages in INPUT_STAGES.get(config.task, {}).items():
    path = _lookup(config, key)
    if path and os.path.abspath(path) not in produced:
      _check_run_input(config, key, path, stages, produced)
  if config.tokenizer.path and not config.init_from and not os.path.exists(config.tokenizer.path):
    raise UserError(f"--config.tokenizer.path={config.tokenizer.path} does not exist; point it "
                    f"at a tokenizer.json or a GPT-2 vocab.json + merges.txt directory")
  for key in ("rm.reference_path", "ppo.ptx_path"):
    spec = _lookup(config, key)
    if spec and (key != "ppo.ptx_path" or config.ppo.ptx_coef > 0):
      from rlhf_jax.data import readers, store  # pylint: disable=g-import-not-at-top
      if spec.startswith("world:"):
        store.parse_world_spec(spec)
      else:
        readers.expand_paths(spec, flag=f"--config.{key}")


def _check_run_input(config, key: str, path: str, stages: tuple[str, ...], produced) -> None:
  from rlhf_jax import checkpoint, hf  # pylint: disable=g-import-not-at-top
  wanted = f"a finished {' or '.join(stages)} run's workdir"
  if not os.path.isdir(path):
    raise UserError(f"--config.{key}={path} does not exist; point it at {wanted}")
  if key == "init_from" and hf.is_hf_directory(path):
    return  # hf.resolve_config checks it
  config_path = os.path.join(path, "config.json")
  if not os.path.exists(config_path):
    raise UserError(f"--config.{key}={path} has no config.json, so it is not a run's workdir; "
                    f"point it at {wanted}")
  with open(config_path, encoding="utf-8") as f:
    saved = json.load(f)
  if saved.get("task") not in stages:
    raise UserError(f"--config.{key}={path} holds a {saved.get('task')!r} run, but a "
                    f"{config.task} stage's {key} must be {wanted}; point it at one")
  checkpoint.saved_step(path, name=key)  # raises when it holds no checkpoint
  if key == "init_from":
    _check_same_model(config, path, saved["model"])
  elif os.path.abspath(config.init_from) not in produced:
    _check_reward_model(config, path, saved["model"])


def _shape(model_block: dict) -> dict[str, int]:
  """The resolved (preset + overrides) shape of a model block, e.g. a saved config's."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  from rlhf_jax import configs  # pylint: disable=g-import-not-at-top
  from rlhf_jax.models import gpt  # pylint: disable=g-import-not-at-top
  block = ml_collections.ConfigDict({**configs.base_config().model.to_dict(), **model_block})
  resolved = gpt.config_from(block, vocab_size=1)
  return {key: getattr(resolved, key) for key in _SHAPE_KEYS}


def _check_same_model(config, path: str, saved_model: dict) -> None:
  """A warm start copies every weight: init_from's model shape must be this config's."""
  saved, current = _shape(saved_model), _shape(config.model.to_dict())
  if saved != current:
    diff = ", ".join(f"model.{k}={current[k]} (its {saved[k]})" for k in _SHAPE_KEYS
                     if saved[k] != current[k])
    raise UserError(f"--config.init_from={path} was trained with another model shape: {diff}; "
                    f"set those --config.model.* keys to its values or start from another run")


def _check_reward_model(config, path: str, saved_model: dict) -> None:
  """PPO's reward model reads the policy's tokens: same tokenizer, context for P + N."""
  from rlhf_jax import tokenizer as tokenizer_lib  # pylint: disable=g-import-not-at-top
  reward_tok = tokenizer_lib.load(os.path.join(path, tokenizer_lib.TOKENIZER_FILE))
  if reward_tok.fingerprint != tokenizer_lib.load(config.init_from).fingerprint:
    raise UserError(f"--config.ppo.reward_from={path} uses a different tokenizer than the policy "
                    f"(init_from={config.init_from}); train the reward model from this SFT "
                    f"workdir or pass a matching one")
  context = _shape(saved_model)["max_len"]
  length = config.ppo.max_prompt_len + config.ppo.response_len
  if length > context:
    raise UserError(f"--config.ppo.reward_from={path} reads {context} tokens (its model.max_len) "
                    f"but ppo.max_prompt_len + ppo.response_len = {length}; shorten them")


def check_workdir(workdir: str) -> None:
  """Raises UserError when `--workdir` names an existing file (a run needs a directory)."""
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise UserError(f"--workdir={workdir} is a file, not a directory; choose a new --workdir")
