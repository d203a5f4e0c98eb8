"""Metric writer (metrics.jsonl + TensorBoard), the device-side tally and finite check,
throughput and MFU, and the plain progress line logged when no terminal shows a progress bar.

Every logged row is `{"step": N, "time": t, "<namespace>/<name>": float, ...}`: the
metrics of that step (not averages over the steps since the last row), plus rates.
"""
import json
import math
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from rlhf_jax.errors import Diverged, UserError

# Dense bf16 peak FLOP/s per device (no sparsity), by `jax.Device.device_kind` substring.
PEAK_FLOPS = (
    ("H200", 989e12),
    ("H100", 989e12),
    ("A100", 312e12),
    ("L4", 121e12),
    ("A10G", 70e12),
    ("V100", 125e12),
    ("TPU v6", 918e12),
    ("TPU v5p", 459e12),
    ("TPU v5", 197e12),  # v5e / v5 lite
    ("TPU v4", 275e12),
    ("TPU v3", 123e12),
)


def peak_flops_per_device(configured: float = 0.0) -> float:
  """Configured value, else the table entry for this device kind, else 0 (unknown)."""
  if configured:
    return configured
  kind = jax.devices()[0].device_kind
  return next((flops for name, flops in PEAK_FLOPS if name.lower() in kind.lower()), 0.0)


def transformer_flops_per_token(num_params: int, num_layers: int, embed_dim: int,
                                seq_len: int) -> float:
  """Training FLOPs per token: 6N + 12·L·D·T (PaLM appendix B; N excludes position embeddings)."""
  return 6 * num_params + 12 * num_layers * embed_dim * seq_len


def _finite(tree) -> jax.Array:
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
            if jnp.issubdtype(x.dtype, jnp.inexact)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


@jax.jit
def all_finite(tree) -> jax.Array:
  """True (one scalar, on the device) when no float leaf of `tree` holds a NaN/Inf.

  Written here: optax and chex have no jittable reduction for it (chex's asserts fetch).
  """
  return _finite(tree)


def tally_start(metrics: dict) -> dict:
  """An empty tally for steps with `metrics` (host zeros: reusable, nothing to donate)."""
  return {"tokens": np.zeros((), np.float32), "first_bad_step": np.full((), -1, np.int32),
          "at_first_bad": {k: np.zeros(v.shape, v.dtype) for k, v in metrics.items()}}


@jax.jit
def tally_add(tally: dict, step, metrics: dict) -> dict:
  """The tally with one more step, computed on the device (no transfer): Σ train/tokens
  (for tokens/s), and the number and metrics of the first step with a NaN/Inf metric."""
  first = ~_finite(metrics) & (tally["first_bad_step"] < 0)
  tokens = metrics.get("train/tokens", jnp.zeros(()))
  return {"tokens": tally["tokens"] + tokens.astype(jnp.float32),
          "first_bad_step": jnp.where(first, step, tally["first_bad_step"]),
          "at_first_bad": jax.tree.map(lambda new, old: jnp.where(first, new, old), metrics,
                                       tally["at_first_bad"])}


def check_finite(tally: dict, state_finite: bool, step: int,
                 last_checkpoint: int | None) -> None:
  """Raises `Diverged` naming the step and metrics of a fetched tally's first NaN/Inf, or
  saying that the state after `step` holds one (`state_finite`, checked before a save).

  The loop checks before every save, so `last_checkpoint` predates the divergence.
  """
  if last_checkpoint is None:
    fix = "no checkpoint was written; lower --config.optim.lr or set optim.grad_clip"
  else:
    fix = (f"the last checkpoint (step {last_checkpoint}) is intact: rerun with the same "
           f"--workdir and a lower --config.optim.lr (or optim.grad_clip set) to resume from it")
  bad_step = int(tally["first_bad_step"])
  if bad_step >= 0:
    values = {k: float(v) for k, v in tally["at_first_bad"].items()}
    bad = sorted((k for k, v in values.items() if not math.isfinite(v)),
                 key=lambda k: (k != "train/loss", k))
    named = ", ".join(f"{k} is {values[k]}" for k in bad[:3])
    more = f" (and {len(bad) - 3} more)" if len(bad) > 3 else ""
    raise Diverged(f"{named}{more} at step {bad_step}; {fix}")
  if not state_finite:
    raise Diverged(f"the training state holds NaN/Inf after step {step} (its metrics were "
                   f"finite); {fix}")


class Throughput:
  """Steps/s, tokens/s and MFU over the steps finished since the clock started.

  The loop calls `restart()` when the device is idle and only training follows (after the
  first step, which compiled, and after each evaluation or checkpoint), `add()` at each
  fetch; `report()` restarts the clock, so a logged rate covers the steps since the last.
  """

  def __init__(self, flops_per_step: float, peak_flops: float):
    self._flops_per_step = flops_per_step
    self._peak_flops = peak_flops
    self._start, self._steps, self._tokens = None, 0, 0.0

  def restart(self) -> None:
    self._start, self._steps, self._tokens = time.perf_counter(), 0, 0.0

  def add(self, steps: int, tokens: float) -> None:
    """`steps` more steps finished, `tokens` tokens among them; ignored before a restart."""
    if self._start is not None:
      self._steps += steps
      self._tokens += tokens

  def report(self) -> dict[str, float]:
    if not self._steps:
      return {}
    seconds = time.perf_counter() - self._start
    rates = {"train/steps_per_sec": self._steps / seconds}
    if self._tokens:
      rates["train/tokens_per_sec"] = self._tokens / seconds
    if self._flops_per_step and self._peak_flops:
      rates["train/mfu"] = self._flops_per_step * self._steps / seconds / self._peak_flops
    self.restart()
    return rates


def format_duration(seconds: float) -> str:
  """Seconds as '7s', '5m12s' or '1h02m05s'."""
  hours, rest = divmod(int(round(seconds)), 3600)
  minutes, secs = divmod(rest, 60)
  if hours:
    return f"{hours}h{minutes:02d}m{secs:02d}s"
  return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def _compact(value: float) -> str:
  """1234.5 → '1.2k', 2.5e6 → '2.5M', 950 → '950'."""
  for unit, scale in (("M", 1e6), ("k", 1e3)):
    if value >= scale:
      return f"{value / scale:.1f}{unit}"
  return f"{value:.0f}"


def progress_line(name: str, step: int, total: int, metrics: dict, elapsed: float,
                  steps_done: int) -> str:
  """'[ppo] step 40/50 loss 0.4123 tokens/s 1.9k elapsed 5m12s eta 1m18s'.

  `elapsed` seconds went to the `steps_done` steps of this session; the ETA assumes the
  remaining steps take as long on average (evaluations and checkpoints included).
  """
  parts = [f"[{name}] step {step}/{total}"]
  if "train/loss" in metrics:
    parts.append(f"loss {metrics['train/loss']:.4f}")
  if "train/tokens_per_sec" in metrics:
    parts.append(f"tokens/s {_compact(metrics['train/tokens_per_sec'])}")
  eta = elapsed / max(steps_done, 1) * (total - step)
  parts.append(f"elapsed {format_duration(elapsed)} eta {format_duration(eta)}")
  return " ".join(parts)


class Writer:
  """Appends rows to WORKDIR/metrics.jsonl and TensorBoard event files in WORKDIR/tb.

  Several processes log the same global metrics: process 0 writes them, the others nothing.
  """

  def __init__(self, workdir: str, start_step: int):
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._file = self._tb = None
    if jax.process_index() != 0:
      return
    # A resume keeps the rows of its checkpoint's step (that step does not run again); a
    # start at step 0 (no checkpoint yet, e.g. killed before the first) logs its step-0
    # evaluation again, so it keeps none.
    first_new = start_step + 1 if start_step else 0
    _drop_rows_after(self.path, first_new - 1)
    self._file = open(self.path, "a", encoding="utf-8")
    self._tb = _summary_writer_class()(os.path.join(workdir, "tb"), purge_step=first_new)

  def write(self, step: int, metrics: dict) -> None:
    if self._file is None:
      return
    row = {"step": step, "time": time.time(), **{k: float(v) for k, v in metrics.items()}}
    self._file.write(json.dumps(row) + "\n")
    self._file.flush()
    for name, value in metrics.items():
      self._tb.add_scalar(name, float(value), step)

  def close(self) -> None:
    if self._file is not None:
      self._file.close()
      self._tb.close()


def _summary_writer_class():
  """tensorboardX's SummaryWriter, imported without torch: where torch is installed (the HF
  tests need it) tensorboardX imports it only to name a type, and that import was 2 s of the
  start of every training process."""
  hide_torch = "torch" not in sys.modules
  if hide_torch:
    sys.modules["torch"] = None  # `import torch` raises ImportError, which tensorboardX expects
  try:
    from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
  finally:
    if hide_torch:
      del sys.modules["torch"]
  return SummaryWriter


def _drop_rows_after(path: str, step: int) -> None:
  """On resume, forget rows logged after the checkpoint: those steps run again."""
  if not os.path.exists(path):
    return
  with open(path, encoding="utf-8") as f:
    rows = [line for line in f if line.strip() and json.loads(line)["step"] <= step]
  with open(path + ".tmp", "w", encoding="utf-8") as f:
    f.writelines(rows)
  os.replace(path + ".tmp", path)


def read_metrics(workdir: str) -> list[dict]:
  """All rows of WORKDIR/metrics.jsonl (for notebooks and tests)."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    raise UserError(f"{path} does not exist; run training with --workdir={workdir} first")
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f if line.strip()]
