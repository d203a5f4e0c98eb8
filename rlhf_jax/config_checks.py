"""Checks of a stage config's shared keys, run before any data is built or model compiled.

`check(config)` raises `UserError` naming the key, the value and the fix for the first
value out of range. It covers the keys every stage shares (`configs.base_config`); a
stage's own block is checked by its task. Ranges are what the code can run with, not
what is sensible: lr=1e-1 passes, lr=-1 (gradient ascent) does not.
"""
import math
import numbers
import os

from rlhf_jax.errors import UserError

# key -> (predicate on the value, what a valid value is)
_POSITIVE = (lambda v: v > 0, "a number > 0")
_NON_NEGATIVE = (lambda v: v >= 0, "a number >= 0")
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
    "tokenizer.vocab_size": _POSITIVE,
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
    "optim.grad_accum_steps": _POSITIVE,
    "sampling.max_new_tokens": _POSITIVE,
    "sampling.temperature": _NON_NEGATIVE,
    "sampling.top_k": _NON_NEGATIVE,
    "sampling.top_p": (lambda v: 0 < v <= 1, "a number in (0, 1]"),
    "gold_eval.batch_size": _POSITIVE,
    "gold_eval.num_shots": _NON_NEGATIVE,
}


def _lookup(config, dotted: str):
  node = config
  for part in dotted.split("."):
    if part not in node:
      return None
    node = node[part]
  return node


def check(config) -> None:
  """Raises UserError for the first shared key whose value the run cannot use."""
  for key, (valid, meaning) in RULES.items():
    value = _lookup(config, key)
    if value is None:
      continue  # a config without this block (e.g. a pipeline's own keys)
    if (isinstance(value, bool) or not isinstance(value, numbers.Real)
        or not math.isfinite(value) or not valid(value)):
      raise UserError(f"--config.{key}={value!r}: must be {meaning}; pass "
                      f"--config.{key}= with such a value")
  if _lookup(config, "total_steps") == 0 and not _lookup(config, "epochs"):
    raise UserError("--config.total_steps=0 and epochs=0: nothing to train; set "
                    "--config.total_steps to a number of steps > 0 (or --config.epochs)")


def check_workdir(workdir: str) -> None:
  """Raises UserError when `--workdir` names an existing file (a run needs a directory)."""
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise UserError(f"--workdir={workdir} is a file, not a directory; choose a new --workdir")
