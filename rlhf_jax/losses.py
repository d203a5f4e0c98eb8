"""Pure losses. Each returns (sum, count) so token-weighted means stay exact
across devices, microbatches and padding: mean = total sum / total count.

Dimensions: B batch, T positions, V vocabulary, K responses per prompt.
"""
import jax
import jax.numpy as jnp


def token_log_probs(logits_BxTxV, targets_BxT, temperature: float = 1.0):
  """log softmax(logits / temperature)[target] in fp32, [B, T]."""
  logp_BxTxV = jax.nn.log_softmax(logits_BxTxV.astype(jnp.float32) / temperature, axis=-1)
  return jnp.take_along_axis(logp_BxTxV, targets_BxT[..., None], axis=-1)[..., 0]


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


def ranking_loss(scores_BxK, ranking_BxK, margin: float = 0.0):
  """InstructGPT's K-way reward-model loss (Ouyang et al., 2022, eq. 1) as (sum, count).

  For prompt b with pairs P_b = {(i, j): rank_i < rank_j} (both present, ties excluded):
    loss_b = −1/|P_b| · Σ_{(i,j) ∈ P_b} log σ(r_i − r_j − margin)
  sum = Σ_b loss_b and count = #{b : |P_b| > 0}, so the mean over prompts weighs each
  prompt once, however many pairs it has. Each response's score r is computed once
  (by the caller) and enters all C(K, 2) of its comparisons; pairs are the K = 2 case.
  """
  pairs_BxKxK = preference_pairs(ranking_BxK)
  scores_BxK = scores_BxK.astype(jnp.float32)
  diff_BxKxK = scores_BxK[:, :, None] - scores_BxK[:, None, :] - margin
  pair_loss_BxKxK = -jax.nn.log_sigmoid(diff_BxKxK) * pairs_BxKxK
  num_pairs_B = jnp.sum(pairs_BxKxK, axis=(1, 2))
  loss_B = jnp.sum(pair_loss_BxKxK, axis=(1, 2)) / jnp.maximum(num_pairs_B, 1.0)
  return jnp.sum(loss_B), jnp.sum(num_pairs_B > 0).astype(jnp.float32)


def ranking_accuracy(scores_BxK, ranking_BxK):
  """(Σ_b fraction of P_b with r_i > r_j, #{b : |P_b| > 0}): pairwise accuracy per prompt.

  A score tie counts as half right.
  """
  pairs_BxKxK = preference_pairs(ranking_BxK)
  diff_BxKxK = scores_BxK[:, :, None] - scores_BxK[:, None, :]
  right_BxKxK = ((diff_BxKxK > 0) + 0.5 * (diff_BxKxK == 0)) * pairs_BxKxK
  num_pairs_B = jnp.sum(pairs_BxKxK, axis=(1, 2))
  accuracy_B = jnp.sum(right_BxKxK, axis=(1, 2)) / jnp.maximum(num_pairs_B, 1.0)
  return jnp.sum(accuracy_B), jnp.sum(num_pairs_B > 0).astype(jnp.float32)
