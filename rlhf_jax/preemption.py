"""Stopping a run early on every process at the same step: SIGTERM / SIGINT → a checkpoint,
then exit (the loop saves; `train.run` exits).

- One process: SIGTERM and SIGINT set a flag that the loop reads after every step; no
  collective is involved.
- Several processes (`jax.distributed`): JAX's preemption service owns SIGTERM (it installs
  its own handler, which this module leaves in place). Whichever process receives it, orbax's
  `reached_preemption(step)` turns true at the same step on all of them; it is asked every
  step, as it requires, and costs no device work. A SIGINT (Ctrl-C) reaches only the
  processes it is sent to, so that flag is agreed with one small all-gather
  (`multihost_utils.process_allgather`, which works under the loop's mesh, where orbax's
  `global_max` refuses it) at the loop's fetch points, where the host waits on the device
  anyway.
- After the first signal the previous handlers are back: a second Ctrl-C aborts at once
  (KeyboardInterrupt), a second SIGTERM ends the process; the last checkpoint stays.
"""
import logging
import signal
import threading

import jax
from jax.experimental import multihost_utils
import numpy as np
import orbax.checkpoint as ocp


def _jax_owns_sigterm() -> bool:
  """Under jax.distributed the preemption service's C++ handler takes SIGTERM; a Python
  handler set after it would replace it and keep the other processes from hearing of it."""
  return jax.process_count() > 1 and jax.config.jax_enable_preemption_service


class StopRequest:
  """Context manager: `signum` is the signal that stopped the run (None while running)."""

  def __init__(self):
    self.signum = None
    self._previous = {}

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():  # else Python refuses handlers
      signums = (signal.SIGINT,) if _jax_owns_sigterm() else (signal.SIGINT, signal.SIGTERM)
      for signum in signums:
        self._previous[signum] = signal.signal(signum, self._handle)
    return self

  def _handle(self, signum, frame):
    del frame
    self.signum = signum
    self._restore()
    logging.warning("%s: the run stops after this step and saves a checkpoint; send it again "
                    "to abort at once", signal.Signals(signum).name)

  def _restore(self):
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)
    self._previous = {}

  def __exit__(self, *exc):
    self._restore()

  def agreed(self, step: int, fetch_point: bool) -> bool:
    """Whether every process stops after `step`, saving a checkpoint first.

    `fetch_point`: `step` is one where every process fetches metrics anyway (the same steps
    on all of them), so a Ctrl-C can be agreed there without a sync of its own.
    """
    if jax.process_count() == 1:
      return self.signum is not None
    if ocp.multihost.reached_preemption(step):
      self.signum = signal.SIGTERM
      return True
    if not fetch_point:
      return False
    self.signum = int(multihost_utils.process_allgather(np.int32(self.signum or 0)).max()) or None
    return self.signum is not None
