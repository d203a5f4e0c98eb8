"""PPO math against plain float64 references: GAE, whitening, KL estimators, clipped losses,
the KL controller, running moments, TF-style Adam."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rlhf_jax import losses, optim, rl


def random_masks(rng, b, n):
  """Contiguous response masks of lengths 1..n (at least one full and one short row)."""
  lengths = rng.integers(1, n + 1, size=b)
  lengths[0], lengths[1] = n, 1
  return (np.arange(n)[None, :] < lengths[:, None]).astype(np.int32)


def gae_loop(rewards, values, mask, gamma, lam):
  """Textbook GAE, episode by episode, in float64."""
  advantages = np.zeros_like(rewards, dtype=np.float64)
  for b in range(rewards.shape[0]):
    length = int(mask[b].sum())
    last = 0.0
    for t in reversed(range(length)):
      next_value = values[b, t + 1] if t + 1 < length else 0.0
      delta = rewards[b, t] + gamma * next_value - values[b, t]
      last = delta + gamma * lam * last
      advantages[b, t] = last
  returns = (advantages + values) * mask
  return advantages, returns


@pytest.fixture(autouse=True)
def float64():
  jax.config.update("jax_enable_x64", True)
  yield
  jax.config.update("jax_enable_x64", False)


@pytest.mark.parametrize("gamma,lam", [(1.0, 0.95), (0.9, 0.8), (1.0, 1.0)])
def test_gae_scan_matches_the_plain_loop(gamma, lam):
  rng = np.random.default_rng(0)
  mask = random_masks(rng, 6, 9)
  # Garbage past each response's end must not leak in.
  rewards = rng.normal(size=(6, 9)) + 100 * (1 - mask)
  values = rng.normal(size=(6, 9)) + 100 * (1 - mask)
  advantages, returns = rl.gae(jnp.asarray(rewards), jnp.asarray(values), jnp.asarray(mask),
                               gamma, lam)
  ref_adv, ref_ret = gae_loop(rewards * mask, values * mask, mask, gamma, lam)
  np.testing.assert_allclose(advantages, ref_adv, rtol=1e-12, atol=1e-12)
  np.testing.assert_allclose(returns, ref_ret, rtol=1e-12, atol=1e-12)
  assert np.all(np.asarray(advantages)[mask == 0] == 0)


def test_gae_float32_error_is_small():
  rng = np.random.default_rng(1)
  mask = random_masks(rng, 8, 24)
  rewards, values = rng.normal(size=(2, 8, 24))
  advantages, _ = rl.gae(jnp.asarray(rewards, jnp.float32), jnp.asarray(values, jnp.float32),
                         jnp.asarray(mask), 1.0, 0.95)
  ref, _ = gae_loop(rewards * mask, values * mask, mask, 1.0, 0.95)
  assert np.max(np.abs(np.asarray(advantages, np.float64) - ref)) < 5e-6


@pytest.mark.parametrize("shift_mean", [True, False])
def test_masked_whiten(shift_mean):
  rng = np.random.default_rng(2)
  mask = random_masks(rng, 5, 7)
  x = rng.normal(3.0, 2.0, size=(5, 7)) + 1e3 * (1 - mask)
  real = x[mask == 1]
  mean, var = real.mean(), real.var()
  expected = (x - mean) / np.sqrt(var + 1e-8) + (0.0 if shift_mean else mean)
  got = np.asarray(rl.masked_whiten(jnp.asarray(x), jnp.asarray(mask), shift_mean))
  np.testing.assert_allclose(got[mask == 1], expected[mask == 1], rtol=1e-12)
  assert np.all(got[mask == 0] == 0)
  np.testing.assert_allclose(got[mask == 1].mean(), 0.0 if shift_mean else mean, atol=1e-12)


def test_kl_estimators_against_exact_kl():
  """On samples from p, the means of k1 and k3 converge to KL(p ‖ q); k2 is ≥ 0; per-sample
  values match their formulas in float64."""
  rng = np.random.default_rng(3)
  logits_p, logits_q = rng.normal(size=(2, 5))
  logp = logits_p - np.log(np.exp(logits_p).sum())
  logq = logits_q - np.log(np.exp(logits_q).sum())
  exact = float(np.sum(np.exp(logp) * (logp - logq)))
  draws = rng.choice(5, size=400_000, p=np.exp(logp))
  lp, lq = jnp.asarray(logp[draws]), jnp.asarray(logq[draws])
  k1, k2, k3 = (np.asarray(rl.kl_estimate(lp, lq, k)) for k in ("k1", "k2", "k3"))
  log_r = logq[draws] - logp[draws]
  np.testing.assert_allclose(k1, -log_r, rtol=1e-14)
  np.testing.assert_allclose(k2, 0.5 * log_r ** 2, rtol=1e-14)
  np.testing.assert_allclose(k3, np.exp(log_r) - 1 - log_r, rtol=1e-12, atol=1e-15)
  assert np.all(k2 >= 0) and np.all(k3 >= 0) and np.any(k1 < 0)
  standard_error = max(k1.std(), k3.std()) / np.sqrt(len(draws))
  assert abs(k1.mean() - exact) < 4 * standard_error
  assert abs(k3.mean() - exact) < 4 * standard_error


def test_policy_loss_against_elementwise_reference():
  rng = np.random.default_rng(4)
  mask = random_masks(rng, 6, 5)
  old = rng.normal(-2.0, 0.5, size=(6, 5))
  new = old + rng.normal(0.0, 0.3, size=(6, 5))
  adv = rng.normal(size=(6, 5))
  total, count, aux = losses.ppo_policy_loss(*map(jnp.asarray, (new, old, adv, mask)), clip=0.2)
  ratio = np.exp(new - old)
  per_token = np.maximum(-adv * ratio, -adv * np.clip(ratio, 0.8, 1.2))
  real = mask == 1
  np.testing.assert_allclose(total, per_token[real].sum(), rtol=1e-12)
  assert float(count) == real.sum()
  clipped = (-adv * np.clip(ratio, 0.8, 1.2)) > (-adv * ratio)
  assert float(aux["clipfrac"]) == clipped[real].sum() > 0
  np.testing.assert_allclose(aux["approx_kl"], (ratio - 1 - np.log(ratio))[real].sum(), rtol=1e-10)
  np.testing.assert_allclose(aux["ratio"], ratio[real].sum(), rtol=1e-12)
  np.testing.assert_allclose(aux["ratio_max"], ratio[real].max(), rtol=1e-12)


def test_policy_loss_gradient_vanishes_where_clipped():
  old = jnp.zeros((1, 3))
  new = jnp.log(jnp.asarray([[1.5, 0.5, 1.1]]))   # ratios 1.5 (clipped), 0.5 (clipped), 1.1
  adv = jnp.asarray([[1.0, -1.0, 1.0]])
  grad = jax.grad(lambda n: losses.ppo_policy_loss(n, old, adv, jnp.ones((1, 3)), 0.2)[0])(new)
  np.testing.assert_allclose(grad, [[0.0, 0.0, -1.1]], rtol=1e-12)


def test_value_loss_against_elementwise_reference():
  rng = np.random.default_rng(5)
  mask = random_masks(rng, 6, 5)
  old_v, v, ret = rng.normal(size=(3, 6, 5))
  total, count, aux = losses.ppo_value_loss(*map(jnp.asarray, (v, old_v, ret, mask)), clip=0.2)
  clipped_v = old_v + np.clip(v - old_v, -0.2, 0.2)
  per_token = 0.5 * np.maximum((v - ret) ** 2, (clipped_v - ret) ** 2)
  real = mask == 1
  np.testing.assert_allclose(total, per_token[real].sum(), rtol=1e-12)
  assert float(count) == real.sum()
  assert float(aux["clipfrac"]) == (((clipped_v - ret) ** 2 > (v - ret) ** 2) & real).sum()


def test_entropy_against_reference():
  rng = np.random.default_rng(6)
  logits = rng.normal(size=(2, 3, 7))
  p = np.exp(logits / 0.7) / np.exp(logits / 0.7).sum(-1, keepdims=True)
  np.testing.assert_allclose(losses.entropy(jnp.asarray(logits), 0.7),
                             -(p * np.log(p)).sum(-1), rtol=1e-6)


def test_adaptive_kl_controller_updates():
  # e = clip(KL/target − 1, ±0.2); β ← β(1 + e·n/horizon)
  for kl, expected_error in [(9.0, 0.2), (6.6, 0.1), (6.0, 0.0), (5.4, -0.1), (0.0, -0.2)]:
    beta = rl.update_kl_coef(jnp.float64(0.1), jnp.float64(kl), 512, target=6.0, horizon=10000)
    np.testing.assert_allclose(beta, 0.1 * (1 + expected_error * 512 / 10000), rtol=1e-12)
  assert rl.update_kl_coef(0.1, 100.0, 512, target=0.0, horizon=10000) == 0.1  # fixed β


def test_running_moments_match_all_values_seen():
  rng = np.random.default_rng(7)
  moments, seen = rl.RunningMoments.create(), []
  for size in (5, 1, 17, 8):
    x = rng.normal(2.0, 3.0, size=size)
    seen.extend(x)
    moments = moments.update(jnp.asarray(x))
  np.testing.assert_allclose([moments.count, moments.mean, moments.var],
                             [len(seen), np.mean(seen), np.var(seen)], rtol=1e-12)


def test_explained_variance():
  rng = np.random.default_rng(8)
  mask = random_masks(rng, 4, 6)
  ret, v = rng.normal(size=(2, 4, 6))
  real = mask == 1
  expected = 1 - np.var((ret - v)[real]) / np.var(ret[real])
  np.testing.assert_allclose(rl.explained_variance(jnp.asarray(v), jnp.asarray(ret),
                                                   jnp.asarray(mask)), expected, rtol=1e-12)


def test_tf_adam_matches_tensorflow_formula():
  """u_t = lr·√(1−β2ᵗ)/(1−β1ᵗ)·m_t/(√v_t + ε), ε outside the root of the uncorrected v."""
  b1, b2, eps, lr = 0.9, 0.999, 1e-5, 0.1
  grads = [np.array([0.3, -1e-4]), np.array([-0.2, 2e-4]), np.array([0.5, 0.0])]
  tx = optax.chain(optim.scale_by_tf_adam(b1, b2, eps), optax.scale_by_learning_rate(lr))
  params = jnp.zeros(2, jnp.float64)
  state = tx.init(params)
  m = v = np.zeros(2)
  for t, g in enumerate(grads, 1):
    updates, state = tx.update(jnp.asarray(g), state)
    m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g ** 2
    expected = -lr * np.sqrt(1 - b2 ** t) / (1 - b1 ** t) * m / (np.sqrt(v) + eps)
    np.testing.assert_allclose(updates, expected, rtol=1e-12)
  # Differs from optax Adam where ε matters (the tiny second coordinate).
  adam_updates, _ = optax.adam(lr, b1, b2, eps).update(jnp.asarray(grads[0]),
                                                       optax.adam(lr, b1, b2, eps).init(params))
  first, _ = tx.update(jnp.asarray(grads[0]), tx.init(params))
  assert abs(float(first[1]) - float(adam_updates[1])) > 1e-3


# ---------------------------------------------------------------------------- critic-free


def group_advantages_loop(scores, g, kind, std_normalize=True, eps=1e-6):
  """One response at a time, its group's other scores summed in a loop."""
  out = []
  for i, score in enumerate(scores):
    members = [scores[j] for j in range(i // g * g, i // g * g + g)]
    others = [scores[j] for j in range(i // g * g, i // g * g + g) if j != i]
    if kind == "rloo":
      out.append(score - sum(others) / len(others))
      continue
    mean = sum(members) / g
    std = (sum((x - mean) ** 2 for x in members) / (g - 1)) ** 0.5
    out.append((score - mean) / (std + eps) if std_normalize else score - mean)
  return np.asarray(out)


@pytest.mark.parametrize("kind,g,std_normalize", [("grpo", 4, True), ("grpo", 3, False),
                                                  ("rloo", 4, True), ("rloo", 2, True)])
def test_group_advantages_match_the_plain_loop(kind, g, std_normalize):
  scores = np.random.default_rng(7).normal(size=5 * g)
  scores[:g] = 0.5  # a group whose responses all score alike: no signal, no NaN
  got = rl.group_advantages(jnp.asarray(scores), g, kind, std_normalize)
  want = group_advantages_loop(list(scores), g, kind, std_normalize)
  np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
  np.testing.assert_array_equal(np.asarray(got)[:g], 0.0)


def test_rloo_baseline_is_the_mean_of_the_other_responses():
  advantages = rl.group_advantages(jnp.asarray([1.0, 2.0, 6.0, 0.0, 0.0, 3.0]), 3, "rloo")
  np.testing.assert_allclose(advantages, [1 - 4, 2 - 3.5, 6 - 1.5, -1.5, -1.5, 3.0], rtol=1e-12)


def test_overlong_penalty_ramps_over_the_buffer():
  lengths = jnp.asarray([3, 6, 7, 8, 10])
  np.testing.assert_allclose(rl.overlong_penalty(lengths, budget=10, buffer=4),
                             [0.0, 0.0, -0.25, -0.5, -1.0], rtol=1e-12)


@pytest.mark.parametrize("aggregation", ["token", "sequence", "constant"])
def test_loss_weights_aggregate_as_their_plain_definitions(aggregation):
  rng = np.random.default_rng(8)
  mask = random_masks(rng, 6, 5)
  per_token = rng.normal(size=(6, 5))
  got = float(jnp.sum(rl.loss_weights(jnp.asarray(mask), aggregation, 6, mask.sum(), 7)
                      * per_token))
  rows = [[per_token[b, t] for t in range(5) if mask[b, t]] for b in range(6)]
  want = {"token": sum(map(sum, rows)) / sum(map(len, rows)),
          "sequence": sum(sum(r) / len(r) for r in rows) / len(rows),
          "constant": sum(map(sum, rows)) / (len(rows) * 7)}[aggregation]
  np.testing.assert_allclose(got, want, rtol=1e-12)


def test_policy_loss_clip_higher_and_sequence_ratio_against_plain_loops():
  rng = np.random.default_rng(9)
  mask = random_masks(rng, 6, 5)
  old = rng.normal(-2.0, 0.5, size=(6, 5))
  new = old + rng.normal(0.0, 0.3, size=(6, 5))
  adv = np.repeat(rng.normal(size=(6, 1)), 5, axis=1)
  args = tuple(map(jnp.asarray, (new, old, adv, mask)))
  total, _, _ = losses.ppo_policy_loss(*args, clip=0.1, clip_high=0.3)
  ratio = np.exp(new - old)
  per_token = np.maximum(-adv * ratio, -adv * np.clip(ratio, 0.9, 1.3))
  np.testing.assert_allclose(total, per_token[mask == 1].sum(), rtol=1e-12)
  total, _, aux = losses.ppo_policy_loss(*args, clip=0.1, sequence_ratio=True)
  want = 0.0
  for b in range(6):
    real = [t for t in range(5) if mask[b, t]]
    seq_ratio = np.exp(sum(new[b, t] - old[b, t] for t in real) / len(real))
    want += len(real) * max(-adv[b, 0] * seq_ratio, -adv[b, 0] * np.clip(seq_ratio, 0.9, 1.1))
  np.testing.assert_allclose(total, want, rtol=1e-12)
  np.testing.assert_allclose(aux["approx_kl"], (ratio - 1 - np.log(ratio))[mask == 1].sum(),
                             rtol=1e-10)  # still per token
