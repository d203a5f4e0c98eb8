"""Reinforcement-learning math for PPO on language models: pure, jittable, masked.

Dimensions: B responses, N response positions (token j of a response is action j).
Masks are 1 on real response tokens (up to and including EOS) and 0 on padding; a
padded position never reaches a sum, a mean, a whitening statistic or a KL.
"""
import flax
import jax
import jax.numpy as jnp


# ---------------------------------------------------------------------------- masked statistics


def masked_sum(x, mask, axis=None):
  return jnp.sum(jnp.where(mask.astype(bool), x, 0.0), axis=axis)


def masked_mean(x, mask, axis=None):
  """Σ m·x / max(Σ m, 1)."""
  return masked_sum(x, mask, axis) / jnp.maximum(jnp.sum(mask, axis=axis), 1)


def masked_var(x, mask):
  """Population variance over the real entries: Σ m·(x − μ)² / Σ m."""
  mean = masked_mean(x, mask)
  return masked_mean(jnp.square(x - mean), mask)


def masked_whiten(x, mask, shift_mean: bool = True, eps: float = 1e-8):
  """(x − μ) / √(σ² + ε) over real entries (μ, σ² from `masked_mean`/`masked_var`);
  with shift_mean=False the mean is added back: x' = (x − μ)/√(σ² + ε) + μ. 0 on pads."""
  mean, var = masked_mean(x, mask), masked_var(x, mask)
  whitened = (x - mean) * jax.lax.rsqrt(var + eps)
  if not shift_mean:
    whitened = whitened + mean
  return jnp.where(mask.astype(bool), whitened, 0.0)


# ---------------------------------------------------------------------------- KL estimators


def kl_estimate(log_probs, ref_log_probs, kind: str = "k1"):
  """Per-token estimators of KL(π ‖ π_ref) from a token sampled from π (Schulman, 2020).

  With log r = log π_ref(a) − log π(a):
    k1 = −log r                    unbiased, can be negative per token
    k2 = ½ (log r)²                biased, ≥ 0, low variance
    k3 = (r − 1) − log r           unbiased, ≥ 0 (used as `approx_kl` too)
  """
  log_ratio = ref_log_probs - log_probs
  if kind == "k1":
    return -log_ratio
  if kind == "k2":
    return 0.5 * jnp.square(log_ratio)
  if kind == "k3":
    return jnp.expm1(log_ratio) - log_ratio
  raise ValueError(f"unknown KL estimator {kind!r}; use 'k1', 'k2' or 'k3'")


# ---------------------------------------------------------------------------- GAE


def gae(rewards_BxN, values_BxN, mask_BxN, gamma: float = 1.0, lam: float = 0.95):
  """Generalised advantage estimation (Schulman et al., 2016) as a reverse `lax.scan`.

  With V_{N} = 0 and every quantity past a response's last real token taken as 0:
    δ_t = r_t + γ·m_{t+1}·V_{t+1} − V_t
    A_t = δ_t + γλ·m_{t+1}·A_{t+1}
    R_t = A_t + V_t                 (the value targets)
  Returns (advantages_BxN, returns_BxN), 0 on pads. Responses are contiguous from
  position 0, so m_{t+1} = 0 exactly at the end of each episode (terminal: no bootstrap).
  """
  mask_BxN = mask_BxN.astype(rewards_BxN.dtype)
  values_BxN = values_BxN * mask_BxN
  next_mask_BxN = jnp.concatenate([mask_BxN[:, 1:], jnp.zeros_like(mask_BxN[:, :1])], 1)
  next_values_BxN = jnp.concatenate([values_BxN[:, 1:], jnp.zeros_like(values_BxN[:, :1])], 1)
  deltas_BxN = (rewards_BxN + gamma * next_mask_BxN * next_values_BxN - values_BxN) * mask_BxN

  def back(next_advantage_B, inputs):
    delta_B, next_mask_B = inputs
    advantage_B = delta_B + gamma * lam * next_mask_B * next_advantage_B
    return advantage_B, advantage_B

  _, advantages_NxB = jax.lax.scan(back, jnp.zeros_like(deltas_BxN[:, 0]),
                                   (deltas_BxN.T, next_mask_BxN.T), reverse=True)
  advantages_BxN = advantages_NxB.T * mask_BxN
  return advantages_BxN, (advantages_BxN + values_BxN) * mask_BxN


def explained_variance(values, returns, mask):
  """1 − Var(R − V) / Var(R) over real tokens (1 = perfect critic, ≤ 0 = no better than a
  constant); 0 when Var(R) = 0."""
  var_returns = masked_var(returns, mask)
  return jnp.where(var_returns > 0,
                   1.0 - masked_var(returns - values, mask) / jnp.maximum(var_returns, 1e-12),
                   0.0)


# ---------------------------------------------------------------------------- critic-free


def group_advantages(scores_B, group_size: int, kind: str, std_normalize: bool = True,
                     eps: float = 1e-6):
  """Advantages of G = group_size responses per prompt, the group as the baseline (no critic).

  Rows i·G … i·G + G − 1 answer the same prompt. With R the group's scores:
    grpo  A_i = (R_i − mean(R)) / (std(R) + eps)   (Shao et al., 2024; std with the G − 1
          denominator); std_normalize=False gives Dr. GRPO's A_i = R_i − mean(R)
    rloo  A_i = R_i − Σ_{j≠i} R_j / (G − 1)        (Ahmadian et al., 2024; Kool et al., 2019)
  Returns [B] (B = prompts · G), one advantage per response.
  """
  scores_PxG = scores_B.reshape(-1, group_size)
  mean_Px1 = jnp.mean(scores_PxG, axis=1, keepdims=True)
  if kind == "rloo":
    advantages_PxG = scores_PxG - (group_size * mean_Px1 - scores_PxG) / (group_size - 1)
  elif kind == "grpo":
    advantages_PxG = scores_PxG - mean_Px1
    if std_normalize:
      advantages_PxG = advantages_PxG / (jnp.std(scores_PxG, axis=1, keepdims=True, ddof=1)
                                         + eps)
  else:
    raise ValueError(f"unknown group baseline {kind!r}; use 'grpo' or 'rloo'")
  return advantages_PxG.reshape(-1)


def overlong_penalty(lengths_B, budget: int, buffer: int):
  """DAPO's soft overlong punishment (Yu et al., 2025): 0 for a length ≤ budget − buffer,
  then falling linearly to −1 at the budget: clip((budget − buffer − length) / buffer, −1, 0)."""
  return jnp.clip((budget - buffer - lengths_B.astype(jnp.float32)) / buffer, -1.0, 0.0)


def loss_weights(mask_BxN, aggregation: str, num_rows, num_tokens, budget: int):
  """Per-token weights w (0 on pads) such that Σ w·ℓ is a minibatch's policy loss.

  num_rows / num_tokens are the minibatch's responses / real tokens (its micro-batches
  share them, so summed micro-batch losses equal the minibatch's); budget N is the sampling
  budget (a constant, not the padded width):
    token     w = m / num_tokens               every token alike (PPO, DAPO)
    sequence  w = m / (|y_b| · num_rows)       each response's token mean, averaged (GRPO)
    constant  w = m / (num_rows · N)           a fixed normaliser, no length bias (Dr. GRPO)
  """
  mask_BxN = jnp.asarray(mask_BxN, float)  # JAX's default float (fp32; fp64 under x64)
  if aggregation == "token":
    return mask_BxN / num_tokens
  if aggregation == "sequence":
    lengths_Bx1 = jnp.maximum(jnp.sum(mask_BxN, axis=1, keepdims=True), 1.0)
    return mask_BxN / (lengths_Bx1 * num_rows)
  if aggregation == "constant":
    return mask_BxN / (num_rows * budget)
  raise ValueError(f"unknown loss aggregation {aggregation!r}; use token, sequence or constant")


# ---------------------------------------------------------------------------- KL controllers


def update_kl_coef(kl_coef, kl, num_episodes: int, *, target: float, horizon: float):
  """The KL coefficient β for the next iteration (Ziegler et al., 2019, §2.2).

  Adaptive (target > 0): e = clip(KL / target − 1, −0.2, 0.2), β ← β·(1 + e·n / horizon),
  where KL is the mean per-response KL of this iteration and n its number of episodes.
  Fixed (target = 0): β unchanged.
  """
  if target <= 0:
    return kl_coef
  error = jnp.clip(kl / target - 1.0, -0.2, 0.2)
  return kl_coef * (1.0 + error * num_episodes / horizon)


# ---------------------------------------------------------------------------- running statistics


@flax.struct.dataclass
class RunningMoments:
  """Mean and population variance of every value seen so far, and their count."""
  count: jax.Array
  mean: jax.Array
  var: jax.Array

  @classmethod
  def create(cls) -> "RunningMoments":
    return cls(jnp.zeros((), jnp.float32), jnp.zeros((), jnp.float32), jnp.ones((), jnp.float32))

  def update(self, x_B) -> "RunningMoments":
    """Merges a batch (Chan et al.'s parallel formula):
    n = n_a + n_b, μ = μ_a + δ·n_b/n, n·σ² = n_a·σ_a² + n_b·σ_b² + δ²·n_a·n_b/n, δ = μ_b − μ_a."""
    n_b = jnp.asarray(x_B.size, jnp.float32)
    mean_b, var_b = jnp.mean(x_B), jnp.var(x_B)
    n = self.count + n_b
    delta = mean_b - self.mean
    var_a = jnp.where(self.count > 0, self.var, 0.0)
    var = (self.count * var_a + n_b * var_b + jnp.square(delta) * self.count * n_b / n) / n
    return RunningMoments(n, self.mean + delta * n_b / n, var)
