"""Simulated labelers: Bradley–Terry noise on the parts the gold judge scores, plus a bias.

Labeler j perceives the judge's parts with personal weights and sensitivities:

  v_j(r) = safety(r) * hygiene(r)^h_j * (w_j . (correctness, completeness))
           * (1 - f_j + f_j * format(r)) + b_j * (log(1 + words(r)) - mean),

with content weights w_j scattered around the judge's (0.75, 0.25), a format weight f_j
around the judge's 0.4, a hygiene sensitivity h_j around 1 (some labelers forgive
repetition or filler more than others) and a length preference b_j.
Ranking = sort by u = v_j / tau + Gumbel noise, so for any two responses
P(a > b) = sigmoid((v_j(a) - v_j(b)) / tau)  (Bradley–Terry), and the whole ranking is
Plackett–Luce. tau is calibrated so two labelers agree on a pair with the target rate.
"""
from typing import NamedTuple

import numpy as np

from rlhf_jax.data.world.judge import CONTENT_WEIGHTS, FORMAT_WEIGHT


class Labelers(NamedTuple):
  weights_LxC: np.ndarray  # L labelers x C=2 content categories (correctness, completeness)
  format_weight_L: np.ndarray
  hygiene_exponent_L: np.ndarray
  length_bias_L: np.ndarray


def make_labelers(rng: np.random.Generator, n: int, spread: float,
                  length_bias: float) -> Labelers:
  """w_j = normalise(CONTENT_WEIGHTS * exp(spread * N)) with w_j0 >= 0.6,
  f_j = clip(FORMAT_WEIGHT * exp(spread * N), 0.1, 0.6), h_j = exp(spread * N),
  b_j ~ N(0, length_bias^2).

  The clips keep every labeler sensible: being right matters more than being complete,
  and no labeler prefers a wrong answer in the asked form to the right one in another.
  """
  weights = np.array(CONTENT_WEIGHTS) * np.exp(spread * rng.standard_normal((n, 2)))
  correct = np.maximum(0.6, weights[:, 0] / weights.sum(axis=1))
  fmt = np.clip(FORMAT_WEIGHT * np.exp(spread * rng.standard_normal(n)), 0.1, 0.6)
  return Labelers(np.stack([correct, 1.0 - correct], axis=1), fmt,
                  np.exp(spread * rng.standard_normal(n)), length_bias * rng.standard_normal(n))


def perceived(labelers: Labelers, j: int, parts_KxC: np.ndarray, hygiene_K: np.ndarray,
              safety_K: np.ndarray, words_K: np.ndarray) -> np.ndarray:
  """v_j for the K responses to one prompt (parts: correctness, completeness, format)."""
  content = parts_KxC[:, :2] @ labelers.weights_LxC[j]
  f = labelers.format_weight_L[j]
  form = 1.0 - f + f * parts_KxC[:, 2]
  log_len = np.log1p(words_K)
  return (safety_K * hygiene_K ** labelers.hygiene_exponent_L[j] * content * form
          + labelers.length_bias_L[j] * (log_len - log_len.mean()))


def perceived_scores(labelers: Labelers, j: int, scores, responses) -> np.ndarray:
  """`perceived` from the judge's Scores of one prompt's K responses."""
  parts = np.array([s[1:4] for s in scores])
  return perceived(labelers, j, parts, np.array([s.hygiene for s in scores]),
                   np.array([s.safety for s in scores]),
                   np.array([len(r.split()) for r in responses]))


def utilities(values_K: np.ndarray, tau: float, gumbel_K: np.ndarray) -> np.ndarray:
  return values_K / tau + gumbel_K


def dense_ranks(utilities_K: np.ndarray) -> list[int]:
  """0 = highest utility; equal utilities share a rank."""
  distinct = sorted(set(utilities_K.tolist()), reverse=True)
  return [distinct.index(u) for u in utilities_K.tolist()]


def _sigmoid(x: np.ndarray) -> np.ndarray:
  return 0.5 * (1.0 + np.tanh(0.5 * x))


def expected_agreement(diff_a_P: np.ndarray, diff_b_P: np.ndarray, tau: float) -> float:
  """Mean over pairs of P(both prefer the first) + P(both prefer the second)."""
  pa, pb = _sigmoid(diff_a_P / tau), _sigmoid(diff_b_P / tau)
  return float(np.mean(pa * pb + (1.0 - pa) * (1.0 - pb)))


def calibrate_temperature(diff_a_P: np.ndarray, diff_b_P: np.ndarray, target: float) -> float:
  """The tau whose expected labeler-labeler agreement is `target` (bisection on log tau).

  Agreement falls from its noiseless value at tau -> 0 to 1/2 as tau -> inf; if the
  target exceeds the noiseless value the smallest tau is returned.
  """
  lo, hi = np.log(1e-4), np.log(1e2)
  for _ in range(60):
    mid = 0.5 * (lo + hi)
    if expected_agreement(diff_a_P, diff_b_P, float(np.exp(mid))) > target:
      lo = mid
    else:
      hi = mid
  return float(np.exp(0.5 * (lo + hi)))


def pair_differences(values_K: np.ndarray, groups_K: np.ndarray) -> np.ndarray:
  """v_i - v_k for every pair i < k of responses with different texts."""
  i, k = np.triu_indices(len(values_K), 1)
  keep = groups_K[i] != groups_K[k]
  return values_K[i[keep]] - values_K[k[keep]]
