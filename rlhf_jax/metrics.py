"""Metric writer (metrics.jsonl + TensorBoard), finite checks, throughput and MFU, and the
plain progress line logged when no terminal shows a progress bar.

Every logged row is `{"step": N, "time": t, "<namespace>/<name>": float, ...}`.
"""
import json
import math
import os
import time

import jax

from rlhf_jax.errors import UserError

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


def check_finite(step: int, metrics: dict) -> None:
  bad = [k for k, v in metrics.items() if not math.isfinite(v)]
  if bad:
    raise FloatingPointError(
        f"step {step}: {', '.join(f'{k}={metrics[k]}' for k in bad)} is not finite; "
        f"lower optim.lr, enable optim.grad_clip, or resume from an earlier checkpoint")


class Throughput:
  """Steps/s, tokens/s and MFU over the steps since the last report.

  Timing restarts after a pause (compilation, evaluation, checkpointing): the
  first step finished after a pause only starts the clock.
  """

  def __init__(self, flops_per_step: float, peak_flops: float):
    self._flops_per_step = flops_per_step
    self._peak_flops = peak_flops
    self.pause()

  def pause(self) -> None:
    self._start, self._steps, self._tokens = None, 0, 0.0

  def step_done(self, tokens: float) -> None:
    now = time.perf_counter()
    if self._start is None:
      self._start = now
    else:
      self._steps += 1
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
    self._start, self._steps, self._tokens = time.perf_counter(), 0, 0.0
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
  """Appends rows to WORKDIR/metrics.jsonl and TensorBoard event files in WORKDIR/tb."""

  def __init__(self, workdir: str, start_step: int):
    self.path = os.path.join(workdir, "metrics.jsonl")
    _drop_rows_after(self.path, start_step)
    self._file = open(self.path, "a", encoding="utf-8")
    from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
    self._tb = SummaryWriter(os.path.join(workdir, "tb"), purge_step=start_step + 1)

  def write(self, step: int, metrics: dict) -> None:
    row = {"step": step, "time": time.time(), **{k: float(v) for k, v in metrics.items()}}
    self._file.write(json.dumps(row) + "\n")
    self._file.flush()
    for name, value in metrics.items():
      self._tb.add_scalar(name, float(value), step)

  def close(self) -> None:
    self._file.close()
    self._tb.close()


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
