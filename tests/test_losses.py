"""Reward-model losses against plain float64 enumerations of labelled pairs."""
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlhf_jax import losses

ranking_loss = jax.jit(losses.ranking_loss)  # one compilation instead of one per eager op
ranking_accuracy = jax.jit(losses.ranking_accuracy)


def random_rankings(rng, batch, k):
  """Scores [B, K] and rankings with ties (few rank levels) and missing responses (-1)."""
  scores = rng.normal(size=(batch, k)) * 3
  ranking = rng.integers(0, 3, size=(batch, k))
  present = rng.integers(2, k + 1, size=batch)
  for b in range(batch):
    ranking[b, present[b]:] = -1
  ranking[0] = 0  # a record whose responses are all tied: no pair, not counted
  return scores, ranking


def enumerated(scores, ranking, margin):
  """Σ over prompts of −mean_{rank_i < rank_j} log σ(s_i − s_j − m), #prompts, Σ accuracy."""
  total, prompts, accuracy = 0.0, 0, 0.0
  for s, r in zip(scores.tolist(), ranking.tolist()):
    terms, right = [], []
    for i, j in itertools.permutations(range(len(r)), 2):
      if r[i] >= 0 and r[j] >= 0 and r[i] < r[j]:
        terms.append(math.log1p(math.exp(-(s[i] - s[j] - margin))))
        right.append(1.0 if s[i] > s[j] else 0.5 if s[i] == s[j] else 0.0)
    if terms:
      total += sum(terms) / len(terms)
      accuracy += sum(right) / len(right)
      prompts += 1
  return total, prompts, accuracy


@pytest.mark.parametrize("k,margin", [(9, 0.0), (5, 0.5), (2, 0.0)])
def test_ranking_loss_equals_pair_enumeration(k, margin):
  rng = np.random.default_rng(k)
  scores, ranking = random_rankings(rng, batch=12, k=k)
  scores32 = scores.astype(np.float32)
  want_loss, want_count, want_accuracy = enumerated(scores32.astype(np.float64), ranking, margin)
  loss, count = ranking_loss(jnp.asarray(scores32), jnp.asarray(ranking), margin)
  accuracy, accuracy_count = ranking_accuracy(jnp.asarray(scores32), jnp.asarray(ranking))
  assert want_count < 12  # the all-tied record (and any without a pair) is not counted
  assert float(count) == want_count == float(accuracy_count)
  np.testing.assert_allclose(float(loss), want_loss, rtol=2e-6)
  np.testing.assert_allclose(float(accuracy), want_accuracy, rtol=1e-6)


def test_pairs_are_the_two_response_case():
  chosen, rejected = np.array([1.5, -0.2, 0.3]), np.array([0.5, 0.7, 0.3])
  loss, count = ranking_loss(jnp.stack([chosen, rejected], 1), jnp.array([[0, 1]] * 3))
  want = sum(math.log1p(math.exp(-(c - r))) for c, r in zip(chosen, rejected))
  assert float(count) == 3
  np.testing.assert_allclose(float(loss), want, rtol=1e-6)


def test_ranking_loss_is_invariant_to_permuting_responses_with_their_ranks():
  rng = np.random.default_rng(0)
  scores, ranking = random_rankings(rng, batch=8, k=7)
  permutation = rng.permutation(7)
  loss, _ = ranking_loss(jnp.asarray(scores), jnp.asarray(ranking))
  permuted, _ = ranking_loss(jnp.asarray(scores[:, permutation]),
                                    jnp.asarray(ranking[:, permutation]))
  np.testing.assert_allclose(float(permuted), float(loss), rtol=1e-6)
  shuffled_scores, _ = ranking_loss(jnp.asarray(scores[:, permutation]),
                                           jnp.asarray(ranking))
  assert abs(float(shuffled_scores) - float(loss)) > 1e-3  # ranks must travel with responses


def test_missing_responses_and_their_scores_do_not_matter():
  scores = jnp.array([[2.0, 1.0, 0.0, 0.0]])
  ranking = jnp.array([[1, 0, -1, -1]])
  loss, count = ranking_loss(scores, ranking)
  garbage = scores.at[0, 2:].set(jnp.array([1e4, -1e4]))
  np.testing.assert_allclose(float(ranking_loss(garbage, ranking)[0]), float(loss))
  np.testing.assert_allclose(float(loss), math.log1p(math.exp(1.0)), rtol=1e-6)
  assert float(count) == 1
