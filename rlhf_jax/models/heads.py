"""Scalar heads on the GPT backbone: the reward model, and the PPO critic's value head.

Dimensions: B rows, T positions, D embed.

`RewardModel` is `gpt.GPT` (submodule `backbone`, the same params tree as a
pretrain/SFT checkpoint) plus a `ScalarHead` (`head`) giving one value per
position. The reward of a response is the value at its last real token, the EOS
that `pipeline.preference_rows` appends (PAD ≠ EOS, so that position is
unambiguous): `last_token_values`.
"""
import flax.linen as nn
import jax.numpy as jnp

from rlhf_jax.models import gpt


class ScalarHead(nn.Module):
  """v_BxT = h_BxTxD · w + b in fp32, w ~ N(0, 1/(D+1)), b = 0.

  The 1/(D+1) variance (Stiennon et al., 2020) keeps initial values O(1) for
  unit-variance hidden states.
  """

  @nn.compact
  def __call__(self, h_BxTxD):
    d = h_BxTxD.shape[-1]
    kernel_D = self.param("kernel", nn.with_logical_partitioning(
        nn.initializers.normal((1.0 / (d + 1)) ** 0.5), ("embed",)), (d,), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (), jnp.float32)
    return jnp.einsum("btd,d->bt", h_BxTxD.astype(jnp.float32), kernel_D) + bias


class RewardModel(nn.Module):
  """Per-token values [B, T] of `ScalarHead` over `GPT.hidden_states`.

  Reward-model rows are right-padded, so causal attention alone keeps pads out of
  every real position; left-padded rows (PPO) pass positions_BxT and valid_BxT; packed
  rows pass segment_ids_BxT, and rows whose responses share their prompt also
  branch_ids_BxT and positions_BxT (`gpt.GPT.hidden_states`).
  """
  cfg: gpt.GPTConfig

  def setup(self):
    self.backbone = gpt.GPT(self.cfg)
    self.head = ScalarHead()

  def __call__(self, tokens_BxT, positions_BxT=None, valid_BxT=None, deterministic=True,
               segment_ids_BxT=None, branch_ids_BxT=None):
    h_BxTxD, _ = self.backbone.hidden_states(tokens_BxT, positions_BxT, valid_BxT,
                                             deterministic=deterministic,
                                             segment_ids_BxT=segment_ids_BxT,
                                             branch_ids_BxT=branch_ids_BxT)
    return self.head(h_BxTxD)


def last_token_index(mask_BxT):
  """Index of the last position where mask is 1 (0 for an all-zero row), int32[B]."""
  t = mask_BxT.shape[-1]
  positions_BxT = jnp.where(mask_BxT > 0, jnp.arange(t), -1)
  return jnp.maximum(jnp.max(positions_BxT, axis=-1), 0).astype(jnp.int32)


def last_token_values(values_BxT, mask_BxT):
  """values[b, last_token_index(mask)[b]], [B]: a response's reward read at its EOS."""
  index_B = last_token_index(mask_BxT)
  return jnp.take_along_axis(values_BxT, index_B[:, None], axis=-1)[:, 0]
