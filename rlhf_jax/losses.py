"""Pure losses. Each returns (sum, count) so token-weighted means stay exact
across devices, microbatches and padding: mean = total sum / total count.

Dimensions: B batch, T positions, V vocabulary, K responses per prompt.
"""
import jax
import jax.numpy as jnp
import optax


def token_log_probs(logits_BxTxV, targets_BxT, temperature: float = 1.0):
  """log softmax(logits / T)[target] = logit_target / T − logsumexp(logits / T), fp32 [B, T].

  Through optax's integer-label cross-entropy, which reads the target's logit and the
  normalizer without materialising a [B, T, V] log-softmax (at GPT-2 scale that tensor is
  the largest of the step).
  """
  logits_BxTxV = logits_BxTxV.astype(jnp.float32)
  if temperature != 1.0:
    logits_BxTxV = logits_BxTxV / temperature
  return -optax.losses.softmax_cross_entropy_with_integer_labels(logits_BxTxV, targets_BxT)


def next_token_xent(logits_BxTxV, targets_BxT, weights_BxT=None):
  """Cross-entropy sum and count: Σ_t w_t · (−log p(target_t)), Σ_t w_t."""
  nll_BxT = -token_log_probs(logits_BxTxV, targets_BxT)
  if weights_BxT is None:
    weights_BxT = jnp.ones_like(nll_BxT)
  weights_BxT = weights_BxT.astype(jnp.float32)
  return jnp.sum(nll_BxT * weights_BxT), jnp.sum(weights_BxT)


def preference_pairs(ranking_BxK):
  """pairs_BxKxK[b, i, j] = 1 iff response i is ranked strictly better than j, both present.

  ranking is 0 for the best; equal ranks are ties (no pair); -1 marks a missing response.
  """
  present_BxK = ranking_BxK >= 0
  better_BxKxK = ranking_BxK[:, :, None] < ranking_BxK[:, None, :]
  both_BxKxK = present_BxK[:, :, None] & present_BxK[:, None, :]
  return (better_BxKxK & both_BxKxK).astype(jnp.float32)


def pairwise_mean(values_BxKxK, ranking_BxK):
  """(Σ_b 1/|P_b| · Σ_{(i,j) ∈ P_b} v_bij, #{b : |P_b| > 0}): a per-prompt mean over labelled
  pairs P_b = {(i, j): rank_i < rank_j, both present}, summed over the prompts that have one.

  Every prompt weighs once, however many pairs it has (the reduction of the pairwise
  losses and metrics below).
  """
  pairs_BxKxK = preference_pairs(ranking_BxK)
  num_pairs_B = jnp.sum(pairs_BxKxK, axis=(1, 2))
  sum_B = jnp.sum(jnp.where(pairs_BxKxK > 0, values_BxKxK, 0.0), axis=(1, 2))
  mean_B = sum_B / jnp.maximum(num_pairs_B, 1.0)
  return jnp.sum(mean_B), jnp.sum(num_pairs_B > 0).astype(jnp.float32)


def _differences(scores_BxK):
  """d_bij = s_bi − s_bj, [B, K, K], in fp32."""
  scores_BxK = scores_BxK.astype(jnp.float32)
  return scores_BxK[:, :, None] - scores_BxK[:, None, :]


def ranking_loss(scores_BxK, ranking_BxK, margin: float = 0.0):
  """InstructGPT's K-way reward-model loss (Ouyang et al., 2022, eq. 1) as (sum, count).

  For prompt b with pairs P_b = {(i, j): rank_i < rank_j} (both present, ties excluded):
    loss_b = −1/|P_b| · Σ_{(i,j) ∈ P_b} log σ(r_i − r_j − margin)
  sum = Σ_b loss_b and count = #{b : |P_b| > 0}, so the mean over prompts weighs each
  prompt once, however many pairs it has. Each response's score r is computed once
  (by the caller) and enters all C(K, 2) of its comparisons; pairs are the K = 2 case.
  """
  return pairwise_mean(-jax.nn.log_sigmoid(_differences(scores_BxK) - margin), ranking_BxK)


def ranking_accuracy(scores_BxK, ranking_BxK):
  """(Σ_b fraction of P_b with r_i > r_j, #{b : |P_b| > 0}): pairwise accuracy per prompt.

  A score tie counts as half right.
  """
  diff_BxKxK = _differences(scores_BxK)
  return pairwise_mean((diff_BxKxK > 0) + 0.5 * (diff_BxKxK == 0), ranking_BxK)


def ranking_margin(scores_BxK, ranking_BxK):
  """(Σ_b mean_{(i,j) ∈ P_b} (r_i − r_j), #{b : |P_b| > 0}): the mean score margin per prompt."""
  return pairwise_mean(_differences(scores_BxK), ranking_BxK)


# ---------------------------------------------------------------------------- DPO / IPO
# logratios_BxK: h_k = log π(y_k | x) − log π_ref(y_k | x), summed over response k's tokens.


def dpo_loss(logratios_BxK, ranking_BxK, beta: float):
  """Plackett–Luce DPO (Rafailov et al., 2023, eq. 7 and App. A.3) as (sum, count).

  Implicit reward r_k = β·h_k. A strict ranking y_1 ≻ … ≻ y_K has the PL likelihood
    P = Π_{k=1}^{K} exp(r_k) / Σ_{j ≥ k} exp(r_j),  loss_b = −log P,
  and for K = 2 this is DPO's −log σ(r_w − r_l).
  Ties: tied responses are never compared with each other. Each present response i is
  scored as the first choice among itself and the responses ranked strictly worse,
  W_i = {j present: rank_j > rank_i}:
    loss_b = −Σ_i [r_i − log(exp(r_i) + Σ_{j ∈ W_i} exp(r_j))].
  By Luce's choice axiom every term is an exact PL probability, P(i ranked above all of
  W_i); with no ties the terms are the PL factors above, and a tied group's internal
  order (unknown) is not scored. A response with W_i = ∅ (the worst group) adds 0.
  Missing responses (rank -1) take no part. sum = Σ_b loss_b, count = #{b with a strict
  pair}; at r = 0 (policy = reference) loss_b = Σ_i log(1 + |W_i|), log K! when strict.
  """
  rewards_BxK = beta * logratios_BxK.astype(jnp.float32)
  present_BxK = ranking_BxK >= 0
  worse_BxKxK = preference_pairs(ranking_BxK) > 0        # [b, i, j]: j ∈ W_i
  k = ranking_BxK.shape[1]
  in_set_BxKxK = worse_BxKxK | jnp.eye(k, dtype=bool)[None]
  # log Σ_{j ∈ {i} ∪ W_i} exp(r_j); every set holds i, so it is never empty.
  log_norm_BxK = jax.nn.logsumexp(jnp.broadcast_to(rewards_BxK[:, None, :], in_set_BxKxK.shape),
                                  axis=-1, where=in_set_BxKxK)
  nll_BxK = jnp.where(present_BxK, log_norm_BxK - rewards_BxK, 0.0)
  scored_B = jnp.any(worse_BxKxK, axis=(1, 2))
  return (jnp.sum(jnp.where(scored_B, jnp.sum(nll_BxK, axis=1), 0.0)),
          jnp.sum(scored_B).astype(jnp.float32))


def ipo_loss(logratios_BxK, ranking_BxK, beta: float):
  """IPO (Azar et al., 2023, eq. 17) over the ranking's pairs as (sum, count).

  For each labelled pair (i better than j; ties and missing responses excluded),
  h_ij = h_i − h_j and loss_ij = (h_ij − 1/(2β))²: the log-ratio gap is regressed to a
  finite target instead of pushed to infinity. loss_b is the mean over the prompt's pairs
  (as `ranking_loss`); sum = Σ_b loss_b, count = #{b : |P_b| > 0}.
  """
  target = 1.0 / (2.0 * beta)
  return pairwise_mean(jnp.square(_differences(logratios_BxK) - target), ranking_BxK)


# ---------------------------------------------------------------------------- PPO
# Dimensions: B responses, N response positions; masks are 1 on real response tokens.


def ppo_policy_loss(log_probs_BxN, old_log_probs_BxN, advantages_BxN, mask_BxN,
                    clip: float = 0.2, clip_high: float | None = None,
                    sequence_ratio: bool = False, weights_BxN=None):
  """PPO's clipped surrogate (Schulman et al., 2017, eq. 7) as (sum, count, aux sums).

  ρ_t = exp(log π(a_t) − log π_old(a_t)),
  loss_t = max(−A_t·ρ_t, −A_t·clip(ρ_t, 1 − ε, 1 + ε_high)), ε_high = clip_high or ε
  (DAPO's clip-higher when larger). sequence_ratio: GSPO's (Zheng et al., 2025) one ratio
  per response, ρ = exp(mean_t log ρ_t), for all its tokens. sum = Σ_t w_t·loss_t with
  `weights_BxN` (default: the mask, a plain sum; see `rl.loss_weights`).
  aux: clipfrac (tokens where the clipped branch is taken, strictly larger),
  approx_kl = Σ (ρ_t − 1) − log ρ_t (k3 of KL(π_old ‖ π), per token), ratio (Σ ρ), and
  ratio_max (max ρ).
  """
  mask = mask_BxN.astype(bool)
  token_log_ratio_BxN = jnp.where(mask, log_probs_BxN - old_log_probs_BxN, 0.0)
  log_ratio_BxN = token_log_ratio_BxN
  if sequence_ratio:
    lengths_Bx1 = jnp.maximum(jnp.sum(mask, axis=1, keepdims=True), 1)
    sequence_Bx1 = jnp.sum(token_log_ratio_BxN, axis=1, keepdims=True) / lengths_Bx1
    log_ratio_BxN = jnp.where(mask, sequence_Bx1, 0.0)
  ratio_BxN = jnp.exp(log_ratio_BxN)
  clip_high = clip if clip_high is None else clip_high
  unclipped_BxN = -advantages_BxN * ratio_BxN
  clipped_BxN = -advantages_BxN * jnp.clip(ratio_BxN, 1.0 - clip, 1.0 + clip_high)
  loss_BxN = jnp.maximum(unclipped_BxN, clipped_BxN)
  weights_BxN = mask_BxN if weights_BxN is None else weights_BxN
  aux = {"clipfrac": jnp.sum((clipped_BxN > unclipped_BxN) & mask).astype(jnp.float32),
         "approx_kl": jnp.sum(jnp.where(mask, jnp.expm1(token_log_ratio_BxN)
                                        - token_log_ratio_BxN, 0.0)),
         "ratio": jnp.sum(jnp.where(mask, ratio_BxN, 0.0)),
         "ratio_max": jnp.max(jnp.where(mask, ratio_BxN, 0.0))}
  return (jnp.sum(jnp.where(mask, weights_BxN * loss_BxN, 0.0)),
          jnp.sum(mask).astype(jnp.float32), aux)


def ppo_value_loss(values_BxN, old_values_BxN, returns_BxN, mask_BxN, clip: float = 0.2):
  """Clipped value loss (as in OpenAI baselines / lm-human-preferences) as (sum, count, aux).

  V_clip = V_old + clip(V − V_old, −ε, ε), loss_t = ½·max((V − R)², (V_clip − R)²).
  aux: clipfrac (tokens where the clipped term is strictly larger).
  """
  mask = mask_BxN.astype(bool)
  clipped_BxN = old_values_BxN + jnp.clip(values_BxN - old_values_BxN, -clip, clip)
  unclipped_loss_BxN = jnp.square(values_BxN - returns_BxN)
  clipped_loss_BxN = jnp.square(clipped_BxN - returns_BxN)
  loss_BxN = 0.5 * jnp.maximum(unclipped_loss_BxN, clipped_loss_BxN)
  aux = {"clipfrac": jnp.sum((clipped_loss_BxN > unclipped_loss_BxN) & mask).astype(
      jnp.float32)}
  return jnp.sum(jnp.where(mask, loss_BxN, 0.0)), jnp.sum(mask).astype(jnp.float32), aux


def entropy(logits_BxNxV, temperature: float = 1.0):
  """H = −Σ_v p_v log p_v of softmax(logits / temperature), [B, N], in fp32."""
  log_p = jax.nn.log_softmax(logits_BxNxV.astype(jnp.float32) / temperature, axis=-1)
  return -jnp.sum(jnp.exp(log_p) * log_p, axis=-1)
