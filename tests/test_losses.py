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


# ---------------------------------------------------------------------------- DPO / IPO

dpo_loss = jax.jit(losses.dpo_loss, static_argnames="beta")
ipo_loss = jax.jit(losses.ipo_loss, static_argnames="beta")


def plackett_luce(order, rewards):
  """P(order) under Plackett–Luce, float64: each stage picks the next item of `order`."""
  p, rest = 1.0, list(order)
  for item in order:
    p *= math.exp(rewards[item]) / sum(math.exp(rewards[j]) for j in rest)
    rest.remove(item)
  return p


def first_among(i, others, rewards):
  """P(i ranked above every item of `others`): the PL mass of all orders of {i} ∪ others
  that put i first."""
  return sum(plackett_luce(order, rewards)
             for order in itertools.permutations([i, *others]) if order[0] == i)


def enumerated_dpo(logratios, ranking, beta):
  """Σ over prompts of −Σ_i log P(i above all strictly worse), #prompts with a strict pair."""
  total, prompts = 0.0, 0
  for h, r in zip(logratios.tolist(), ranking.tolist()):
    rewards = [beta * x for x in h]
    worse = {i: [j for j in range(len(r)) if r[j] >= 0 and r[j] > r[i]]
             for i in range(len(r)) if r[i] >= 0}
    if any(worse.values()):
      total -= sum(math.log(first_among(i, w, rewards)) for i, w in worse.items())
      prompts += 1
  return total, prompts


@pytest.mark.parametrize("k,beta", [(5, 0.5), (4, 0.1), (2, 1.0)])
def test_dpo_loss_equals_enumerated_plackett_luce_with_ties_and_missing(k, beta):
  rng = np.random.default_rng(10 + k)
  logratios, ranking = random_rankings(rng, batch=10, k=k)
  logratios32 = logratios.astype(np.float32)
  want, want_count = enumerated_dpo(logratios32.astype(np.float64), ranking, beta)
  loss, count = dpo_loss(jnp.asarray(logratios32), jnp.asarray(ranking), beta=beta)
  assert float(count) == want_count < 10  # the all-tied record is not counted
  np.testing.assert_allclose(float(loss), want, rtol=2e-6)


def test_dpo_loss_of_a_strict_ranking_is_its_plackett_luce_likelihood():
  rng = np.random.default_rng(3)
  logratios = rng.normal(size=(6, 4)) * 2
  ranking = np.stack([rng.permutation(4) for _ in range(6)])
  want = -sum(math.log(plackett_luce(list(np.argsort(r)), [0.3 * x for x in h]))
              for h, r in zip(logratios.tolist(), ranking))
  loss, count = dpo_loss(jnp.asarray(logratios), jnp.asarray(ranking), beta=0.3)
  assert float(count) == 6
  np.testing.assert_allclose(float(loss), want, rtol=1e-5)


def test_dpo_loss_of_pairs_is_the_standard_dpo_loss():
  chosen, rejected = np.array([1.5, -0.2, 0.3, 4.0]), np.array([0.5, 0.7, 0.3, -3.0])
  beta = 0.2
  loss, count = dpo_loss(jnp.stack([chosen, rejected], 1), jnp.array([[0, 1]] * 4), beta=beta)
  want = sum(math.log1p(math.exp(-beta * (c - r))) for c, r in zip(chosen, rejected))
  assert float(count) == 4
  np.testing.assert_allclose(float(loss), want, rtol=1e-6)


def test_tied_responses_are_not_ordered_and_missing_ones_do_not_matter():
  logratios = jnp.array([[2.0, -1.0, 0.5, 0.0, 0.0]])
  ranking = jnp.array([[0, 0, 1, -1, -1]])  # 0 and 1 tied, both above 2
  loss, count = dpo_loss(logratios, ranking, beta=1.0)
  swapped, _ = dpo_loss(logratios[:, jnp.array([1, 0, 2, 3, 4])], ranking, beta=1.0)
  garbage, _ = dpo_loss(logratios.at[0, 3:].set(jnp.array([1e4, -1e4])), ranking, beta=1.0)
  assert float(count) == 1
  np.testing.assert_allclose(float(swapped), float(loss), rtol=1e-6)  # tie order free
  np.testing.assert_allclose(float(garbage), float(loss), rtol=1e-6)
  # Each tied response is scored only against the worse one: −log σ(r_i − r_2) each.
  want = math.log1p(math.exp(-(2.0 - 0.5))) + math.log1p(math.exp(-(-1.0 - 0.5)))
  np.testing.assert_allclose(float(loss), want, rtol=1e-6)


@pytest.mark.parametrize("k", [2, 4])
def test_at_policy_equal_reference_the_loss_is_log_k_factorial_and_pushes_chosen_up(k):
  ranking = jnp.arange(k)[None]  # response 0 best, k - 1 worst

  @jax.jit
  def losses_and_grads(h):
    dpo, dpo_grads = jax.value_and_grad(lambda x: losses.dpo_loss(x, ranking, 0.1)[0])(h)
    return dpo, dpo_grads, jax.grad(lambda x: losses.ipo_loss(x, ranking, 0.1)[0])(h)

  loss, grads, ipo_grads = losses_and_grads(jnp.zeros((1, k)))
  np.testing.assert_allclose(float(loss), math.log(math.factorial(k)), rtol=1e-6)
  assert float(grads[0, 0]) < 0 < float(grads[0, -1])  # descent raises the best, lowers the worst
  assert float(ipo_grads[0, 0]) < 0 < float(ipo_grads[0, -1])


def test_ipo_loss_equals_pair_enumeration():
  rng = np.random.default_rng(4)
  logratios, ranking = random_rankings(rng, batch=10, k=5)
  beta = 0.25
  total, prompts = 0.0, 0
  for h, r in zip(logratios.tolist(), ranking.tolist()):
    terms = [(h[i] - h[j] - 1 / (2 * beta)) ** 2 for i, j in itertools.permutations(range(5), 2)
             if 0 <= r[i] < r[j]]
    if terms:
      total, prompts = total + sum(terms) / len(terms), prompts + 1
  loss, count = ipo_loss(jnp.asarray(logratios.astype(np.float32)), jnp.asarray(ranking),
                         beta=beta)
  assert float(count) == prompts
  np.testing.assert_allclose(float(loss), total, rtol=1e-5)


@pytest.mark.parametrize("loss_fn", ["dpo_loss", "ipo_loss"])
def test_a_prompts_preference_loss_does_not_depend_on_the_other_prompts(loss_fn):
  """Each record's loss is its own: a batch's (sum, count) is the sum over its records
  taken one at a time, whatever records share the batch."""
  fn = {"dpo_loss": dpo_loss, "ipo_loss": ipo_loss}[loss_fn]  # jitted: one compile per shape
  logratios, ranking = random_rankings(np.random.default_rng(21), batch=8, k=4)
  alone = [fn(jnp.asarray(logratios[i:i + 1]), jnp.asarray(ranking[i:i + 1]), beta=0.3)
           for i in range(8)]
  for order in (np.arange(8), np.random.default_rng(2).permutation(8)):
    total, count = fn(jnp.asarray(logratios[order]), jnp.asarray(ranking[order]), beta=0.3)
    np.testing.assert_allclose(float(total), sum(float(a[0]) for a in alone), rtol=1e-6)
    assert float(count) == sum(float(a[1]) for a in alone)
