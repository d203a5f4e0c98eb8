"""Damaged checkpoints and full disks: one-line descriptions, setting a step aside, and
quieting the noise of orbax restores that fail halfway.

Used by `rlhf_jax.checkpoint.Checkpointer`; see its module docstring for the policy.
"""
import contextlib
import errno
import gc
import logging
import os
import re
import sys
import warnings


def _chain(error: BaseException) -> list[BaseException]:
  """The error and its causes, outermost first (orbax wraps the one that names the file)."""
  chain = [error]
  while len(chain) < 8 and (chain[-1].__cause__ or chain[-1].__context__) is not None:
    chain.append(chain[-1].__cause__ or chain[-1].__context__)
  return chain


def describe_error(error: BaseException, root: str, limit: int = 300) -> str:
  """One short line for an error from deep inside orbax/tensorstore: its innermost cause,
  without tensorstore's spec dump and driver chain, with paths shown relative to `root`."""
  error = _chain(error)[-1]
  text = re.sub(r"\s*\[tensorstore_spec.*", "", str(error), flags=re.S)
  text = re.sub(r'Error opening "\w+" driver: ', "", text)
  text = " ".join(text.replace(root + os.sep, "").split()).strip("'\"")
  text = f"{type(error).__name__}: {text}" if text else type(error).__name__
  return text if len(text) <= limit else text[:limit - 1] + "…"


def disk_full(error: BaseException) -> str | None:
  """"No space left on device" or "Disk quota exceeded" if that is what `error` (or its
  cause) is: an OSError from Python's own writes, or tensorstore's ValueError, whose text
  carries the OS message. Else None."""
  for link in _chain(error):
    for code in (errno.ENOSPC, errno.EDQUOT):
      if getattr(link, "errno", None) == code or os.strerror(code) in str(link):
        return os.strerror(code)
  return None


def out_of_memory(error: BaseException) -> bool:
  """Host or device memory ran out (XLA and tensorstore say RESOURCE_EXHAUSTED)."""
  return any(isinstance(link, MemoryError) or "RESOURCE_EXHAUSTED" in str(link)
             for link in _chain(error))


def finished_steps(directory: str) -> list[int]:
  """Committed steps under an orbax directory, oldest first: orbax names them by number
  and gives a save in progress a temporary name."""
  if not os.path.isdir(directory):
    return []
  return sorted(int(name) for name in os.listdir(directory) if name.isdigit())


def set_aside(directory: str, step: int) -> str:
  """Renames `<step>` to `<step>.damaged` (`.damaged.2`, ... if that exists); returns the
  new path. Orbax ignores the new name, and a later save of `step` cannot collide."""
  target, n = os.path.join(directory, f"{step}.damaged"), 1
  while os.path.exists(target):
    n += 1
    target = os.path.join(directory, f"{step}.damaged.{n}")
  os.rename(os.path.join(directory, str(step)), target)
  return target


def _is_straggler(unraisable) -> bool:
  value = unraisable.exc_value
  return ((isinstance(value, RuntimeError) and str(value) == "Event loop is closed")
          or str(value).startswith("Encountered error while reading array index"))


class _DropDiskFull(logging.Filter):
  def filter(self, record):
    error = record.exc_info[1] if record.exc_info else Exception(record.getMessage())
    return disk_full(error) is None


_DROP_DISK_FULL = _DropDiskFull()
_NEVER_AWAITED = r"coroutine .* was never awaited"


def quiet_orbax_failures() -> None:
  """From now on (idempotent), drops orbax's own traces of a failed save or restore:
  the Checkpointer reports the failure itself, as one line.

  - A save that runs out of space is logged by orbax's background thread, with
    tracebacks, before the Checkpointer hears of it: those records are dropped.
  - Orbax runs an operation's array reads or writes in an event loop that it closes as
    soon as one of them fails; the others finish later and their callbacks, finding the
    loop closed, print "Event loop is closed" tracebacks through `sys.unraisablehook`, as
    do the abandoned readers when collected (or warn that they were never awaited). A
    hook drops those and passes on the rest; a warnings filter drops the warnings.
  """
  logging.getLogger("absl").addFilter(_DROP_DISK_FULL)  # no-op if it is there already
  warnings.filterwarnings("ignore", _NEVER_AWAITED, RuntimeWarning, r"orbax\.")
  if getattr(sys.unraisablehook, "drops_orbax_stragglers", False):
    return
  previous = sys.unraisablehook

  def hook(unraisable):
    if not _is_straggler(unraisable):
      previous(unraisable)

  hook.drops_orbax_stragglers = True
  sys.unraisablehook = hook


@contextlib.contextmanager
def quiet_restore_attempts():
  """Silences orbax's and asyncio's logs while orbax tries checkpoints that may be
  damaged (warnings about unreadable files, "Task exception was never retrieved",
  readers never awaited); the caller reports what matters."""
  loggers = [logging.getLogger(name) for name in ("absl", "asyncio")]
  levels = [logger.level for logger in loggers]
  for logger in loggers:
    logger.setLevel(logging.CRITICAL)
  try:
    with warnings.catch_warnings():
      warnings.filterwarnings("ignore", _NEVER_AWAITED, RuntimeWarning)
      try:
        yield
      finally:
        gc.collect()  # abandoned readers report now, while they are silenced
  finally:
    for logger, level in zip(loggers, levels):
      logger.setLevel(level)
