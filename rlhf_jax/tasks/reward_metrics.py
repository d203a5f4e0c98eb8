"""Held-out reward-model metrics from scores and labels, on the host (NumPy, float64).

Named rm/* here; DPO's implicit reward β·log(π/π_ref) gets the same metrics as dpo/*.

Every labelled pair (i better than j: rank_i < rank_j, both present) of a held-out
record is one comparison. Accuracies are first averaged within a record, then over
records, and their 95% intervals (`evaluation.interval`) resample records, because the
C(K, 2) pairs of one prompt are not independent.

- rm/accuracy: fraction of pairs with r_i > r_j (a score tie counts ½); rm/loss: the
  training loss (`losses.ranking_loss`); rm/margin: mean r_i − r_j.
- rm/accuracy/family/<f> (records' meta "family") and rm/accuracy/gap/<g> (pairs with
  rank_j − rank_i = g).
- rm/ece: expected calibration error of P(i better) = σ(r_i − r_j − margin) over 10
  confidence bins: Σ_b n_b/n · |accuracy_b − confidence_b|, confidence = max(p, 1 − p).
- On gold-judged data (meta "gold" per response, or "chosen_gold"/"rejected_gold"):
  rm/label_ceiling, how often the gold judge orders a labelled pair as the label does
  (gold tie = ½), a practical ceiling for any RM; and rm/gold_agreement, how often the
  RM orders a labelled pair as the gold judge does (pairs the judge ties are skipped).

Dimensions: N records, K responses per record, M pairs.
"""
import collections
import functools

import numpy as np

from rlhf_jax import evaluation, losses, plots

NUM_BINS = 10


def _golds(meta: dict, k: int) -> np.ndarray | None:
  if "gold" in meta:
    gold = list(meta["gold"])
  elif "chosen_gold" in meta and "rejected_gold" in meta:
    gold = [meta["chosen_gold"], meta["rejected_gold"]]
  else:
    return None
  return np.asarray(gold + [np.nan] * (k - len(gold)), np.float64)


def pairs(ranking_NxK) -> list[np.ndarray]:
  """Per record, its labelled pairs as int [M_n, 2] rows (better, worse)."""
  out = []
  for ranking_K in np.asarray(ranking_NxK):
    better, worse = np.nonzero((ranking_K[:, None] < ranking_K[None, :])
                               & (ranking_K[:, None] >= 0) & (ranking_K[None, :] >= 0))
    out.append(np.stack([better, worse], axis=1))
  return out


def _with_interval(results: dict, name: str, per_record) -> None:
  mean, lo, hi = evaluation.interval(per_record)
  results.update({name: mean, f"{name}_lo": lo, f"{name}_hi": hi})


def gold_agreement(diff_M, gold_diff_M) -> np.ndarray:
  """Per pair the gold judge does not tie: 1.0 where the RM orders it as the judge does,
  sign(r_i − r_j) = sign(g_i − g_j), else 0.0 (an RM tie disagrees). Shape [M_judged]."""
  diff_M, gold_diff_M = np.asarray(diff_M, np.float64), np.asarray(gold_diff_M, np.float64)
  judged = gold_diff_M != 0
  return (np.sign(diff_M[judged]) == np.sign(gold_diff_M[judged])).astype(np.float64)


def set_gold_agreement(scores_K, gold_K) -> float | None:
  """`gold_agreement` averaged over every pair i < j of one prompt's K responses; None when
  the judge ties them all."""
  i, j = np.triu_indices(len(scores_K), k=1)
  scores_K, gold_K = np.asarray(scores_K, np.float64), np.asarray(gold_K, np.float64)
  agrees = gold_agreement(scores_K[i] - scores_K[j], gold_K[i] - gold_K[j])
  return float(agrees.mean()) if agrees.size else None


def calibration(diff_M, margin: float = 0.0):
  """(ece, bins [(confidence, accuracy, count)]) of P(better) = σ(diff − margin)."""
  p_M = 1.0 / (1.0 + np.exp(-(np.asarray(diff_M, np.float64) - margin)))
  confidence_M = np.maximum(p_M, 1.0 - p_M)
  correct_M = (p_M > 0.5) + 0.5 * (p_M == 0.5)
  edges = np.linspace(0.5, 1.0, NUM_BINS + 1)
  bin_M = np.clip(np.digitize(confidence_M, edges[1:-1]), 0, NUM_BINS - 1)
  bins, ece = [], 0.0
  for b in range(NUM_BINS):
    in_bin = bin_M == b
    if in_bin.any():
      confidence, accuracy = confidence_M[in_bin].mean(), correct_M[in_bin].mean()
      ece += in_bin.sum() / len(p_M) * abs(accuracy - confidence)
      bins.append((float(confidence), float(accuracy), int(in_bin.sum())))
  return float(ece), bins


def plot_reliability(bins, ece: float, path: str) -> None:
  """Reliability diagram: accuracy against confidence per bin, written atomically."""
  fig = plots.figure(figsize=(4, 4))
  ax = fig.subplots()
  ax.plot([0.5, 1.0], [0.5, 1.0], "k--", lw=1, label="perfectly calibrated")
  conf, acc, count = (np.array(v) for v in zip(*bins)) if bins else ([], [], [])
  ax.scatter(conf, acc, s=20 + 200 * np.asarray(count) / max(1, np.sum(count)), zorder=3)
  ax.plot(conf, acc, "-o", ms=3, label="reward model")
  ax.set(xlim=(0.5, 1.0), ylim=(0.0, 1.0), xlabel="confidence max(p, 1-p)",
         ylabel="pairwise accuracy", title=f"RM reliability (ECE {ece:.3f})")
  ax.legend(loc="lower right", fontsize=8)
  plots.save(fig, path)


def summarize(scores_NxK, ranking_NxK, metas, margin: float = 0.0, plot_path: str = "",
              prefix: str = "rm", loss_fn=None) -> dict[str, float]:
  """<prefix>/* metrics of held-out scores (see the module docstring).

  loss_fn(scores, ranking) -> (sum, count) gives <prefix>/loss; default the RM's
  `losses.ranking_loss` with `margin`. DPO passes its implicit rewards and its own loss.
  """
  scores_NxK = np.asarray(scores_NxK, np.float64)
  record_pairs = pairs(ranking_NxK)
  keep = [n for n, p in enumerate(record_pairs) if len(p)]
  loss_fn = loss_fn or functools.partial(losses.ranking_loss, margin=margin)
  loss_sum, count = loss_fn(scores_NxK[keep], np.asarray(ranking_NxK)[keep])
  results = {f"{prefix}/loss": float(loss_sum) / max(float(count), 1.0),
             f"{prefix}/records": float(len(keep))}
  accuracy, margins, ceiling, agreement, all_diffs = [], [], [], [], []
  by_family, by_gap = collections.defaultdict(list), collections.defaultdict(list)
  for n in keep:
    better, worse = record_pairs[n].T
    diff_M = scores_NxK[n, better] - scores_NxK[n, worse]
    right_M = (diff_M > 0) + 0.5 * (diff_M == 0)
    accuracy.append(right_M.mean())
    margins.append(diff_M.mean())
    all_diffs.append(diff_M)
    if "family" in metas[n]:
      by_family[str(metas[n]["family"])].append(right_M.mean())
    gap_M = np.asarray(ranking_NxK)[n, worse] - np.asarray(ranking_NxK)[n, better]
    for gap, right in zip(gap_M, right_M):
      by_gap[int(gap)].append(right)
    gold_K = _golds(metas[n], scores_NxK.shape[1])
    if gold_K is not None:
      gold_diff_M = gold_K[better] - gold_K[worse]
      ceiling.append(np.mean((gold_diff_M > 0) + 0.5 * (gold_diff_M == 0)))
      agrees = gold_agreement(diff_M, gold_diff_M)
      if agrees.size:
        agreement.append(agrees.mean())
  _with_interval(results, f"{prefix}/accuracy", accuracy)
  results[f"{prefix}/margin"] = float(np.mean(margins))
  for family, values in sorted(by_family.items()):
    results[f"{prefix}/accuracy/family/{family}"] = float(np.mean(values))
  for gap, values in sorted(by_gap.items()):
    results[f"{prefix}/accuracy/gap/{gap}"] = float(np.mean(values))
  if ceiling:
    _with_interval(results, f"{prefix}/label_ceiling", ceiling)
  if agreement:
    _with_interval(results, f"{prefix}/gold_agreement", agreement)
  ece, bins = calibration(np.concatenate(all_diffs), margin)
  results[f"{prefix}/ece"] = ece
  if plot_path:
    plot_reliability(bins, ece, plot_path)
  return results
