"""Figures of the evaluation report, each written atomically as a PNG.

Figures are `matplotlib.figure.Figure`s that pyplot does not track: writing one never
switches the caller's backend, so a notebook that trains or writes a report keeps its
inline plots.

- `curves`: one panel per stage, metric values against training step.
- `intervals`: a bar per policy with its 95% interval as an error bar.
- `reward_vs_kl`: RM and gold scores of PPO checkpoints against their measured KL to the
  reference, next to PPO's own logged ppo/score and ppo/kl.
- `gold_vs_kl`: each method's gold score against its KL to SFT, both with 95% intervals.
"""
import os

import numpy as np


def figure(**kwargs):
  """A new `Figure(**kwargs)`, outside pyplot."""
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top  (light imports)
  return Figure(**kwargs)


def save(fig, path: str) -> None:
  """Writes `fig` as a PNG at `path` atomically."""
  fig.tight_layout()
  fig.savefig(path + ".tmp.png", dpi=100)
  os.replace(path + ".tmp.png", path)


def curves(panels: dict[str, dict[str, tuple[list, list]]], path: str) -> None:
  """panels: title → {metric name → (steps, values)}; one panel per title, side by side."""
  fig = figure(figsize=(4 * max(1, len(panels)), 3.2))
  axes = fig.subplots(1, max(1, len(panels)), squeeze=False)
  for ax, (title, series) in zip(axes[0], panels.items()):
    for name, (steps, values) in series.items():
      ax.plot(steps, values, "-o" if len(steps) < 20 else "-", ms=3, label=name)
    ax.set(title=title, xlabel="step")
    ax.legend(fontsize=8)
  save(fig, path)


def intervals(names: list[str], means, los, his, path: str, *, ylabel: str,
              title: str) -> None:
  """A bar per name at its mean, error bars from lo to hi."""
  means, los, his = (np.asarray(v, np.float64) for v in (means, los, his))
  fig = figure(figsize=(1.2 * len(names) + 2, 3.2))
  ax = fig.subplots()
  ax.bar(names, means, yerr=[means - los, his - means], capsize=4, color="tab:blue", alpha=0.8)
  ax.set(ylabel=ylabel, title=title, ylim=(0, max(1.0, float(np.max(his, initial=0)))))
  save(fig, path)


def reward_vs_kl(points: list[dict], logged: dict[str, tuple[list, list]], path: str) -> None:
  """points: {"kl", "rm", "gold", "label"} per checkpoint; logged: PPO's metric name →
  (steps, values) of ppo/score and ppo/kl, drawn as one dot per logged step."""
  fig = figure(figsize=(9, 3.4))
  left, right = fig.subplots(1, 2)
  kl = [p["kl"] for p in points]
  for key, marker in (("rm", "o"), ("gold", "s")):
    if all(p.get(key) is not None for p in points):
      left.plot(kl, [p[key] for p in points], f"-{marker}", label=f"{key} score (greedy)")
  for p in points:
    left.annotate(p["label"], (p["kl"], p.get("rm", p["gold"])), fontsize=7,
                  textcoords="offset points", xytext=(3, 3))
  left.set(xlabel="KL(policy ‖ SFT), nats per response", ylabel="score",
           title="checkpoints: score vs KL")
  left.legend(fontsize=8)
  score, kl_logged = logged.get("ppo/score"), logged.get("ppo/kl")
  if score and kl_logged and score[0] == kl_logged[0]:
    dots = right.scatter(kl_logged[1], score[1], c=score[0], s=12, cmap="viridis")
    fig.colorbar(dots, ax=right, label="step")
    right.set(xlabel="ppo/kl (logged)", ylabel="ppo/score (logged)",
              title="PPO training batches: score vs KL")
  save(fig, path)


def gold_vs_kl(methods: dict[str, dict], path: str) -> None:
  """methods: name → {"gold": {mean, lo, hi}, "kl": {mean, lo, hi}}; one point per method,
  error bars on both axes."""
  fig = figure(figsize=(5, 3.6))
  ax = fig.subplots()
  for name, row in methods.items():
    gold, kl = row["gold"], row["kl"]
    ax.errorbar(kl["mean"], gold["mean"], xerr=[[kl["mean"] - kl["lo"]], [kl["hi"] - kl["mean"]]],
                yerr=[[gold["mean"] - gold["lo"]], [gold["hi"] - gold["mean"]]], fmt="o",
                capsize=3, label=name)
  ax.set(xlabel="KL(policy ‖ SFT), nats per response", ylabel="gold score",
         title="methods: gold score vs KL (95% CI)")
  ax.legend(fontsize=8)
  save(fig, path)
