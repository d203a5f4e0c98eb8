"""Pure losses. Each returns (sum, count) so token-weighted means stay exact
across devices, microbatches and padding: mean = total sum / total count.

Dimensions: B batch, T positions, V vocabulary.
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
