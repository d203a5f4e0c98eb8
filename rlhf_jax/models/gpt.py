"""GPT-2 decoder in Flax Linen, with a KV-cache decode path on the same weights.

Dimensions: B batch, T query length, S key length (cache slots), D embed, H heads,
K head dim (D = H*K), F MLP width (4D), V padded vocabulary, L layers.

GPT-2 architecture: learned positions, pre-LayerNorm (eps 1e-5), tanh-GELU MLP,
tied input/output embeddings. Params are fp32; matmuls run in `dtype`; softmax
and the final logits are fp32. Logical axis names (`embed`, `mlp`, `heads`,
`kv`, `vocab` on params; `batch`, `length`, `act_*` on activations) are mapped
to mesh axes by `rlhf_jax.sharding`.
"""
import dataclasses
import functools
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from rlhf_jax.errors import UserError

VOCAB_MULTIPLE = 128
NEG_INF = -1e9  # finite, so fully masked rows stay NaN-free


@dataclasses.dataclass(frozen=True)
class GPTConfig:
  vocab_size: int = 50257     # the tokenizer's; padded to a multiple of 128 inside
  num_layers: int = 12
  num_heads: int = 12
  embed_dim: int = 768
  max_len: int = 1024
  dropout: float = 0.0
  dtype: str = "float32"      # compute dtype: float32 | bfloat16
  attention: str = "xla"      # jax.nn.dot_product_attention implementation: xla | cudnn
  remat: bool = False

  @property
  def padded_vocab(self) -> int:
    return -(-self.vocab_size // VOCAB_MULTIPLE) * VOCAB_MULTIPLE

  @property
  def head_dim(self) -> int:
    return self.embed_dim // self.num_heads


PRESETS = {
    "tiny": dict(num_layers=2, num_heads=2, embed_dim=64, max_len=128),
    "nano": dict(num_layers=6, num_heads=6, embed_dim=384, max_len=256),
    "gpt2": dict(num_layers=12, num_heads=12, embed_dim=768, max_len=1024),
    "gpt2-medium": dict(num_layers=24, num_heads=16, embed_dim=1024, max_len=1024),
    "gpt2-large": dict(num_layers=36, num_heads=20, embed_dim=1280, max_len=1024),
    "gpt2-xl": dict(num_layers=48, num_heads=25, embed_dim=1600, max_len=1024),
}


def config_from(model_cfg, vocab_size: int) -> GPTConfig:
  """A `GPTConfig` from the config's `model` block: a preset plus overrides (0/'' keep the preset)."""
  if model_cfg.preset not in PRESETS:
    raise UserError(f"unknown model.preset {model_cfg.preset!r}; choose one of {sorted(PRESETS)}")
  fields = dict(PRESETS[model_cfg.preset])
  for key in ("num_layers", "num_heads", "embed_dim", "max_len"):
    if model_cfg[key]:
      fields[key] = model_cfg[key]
  if fields["embed_dim"] % fields["num_heads"]:
    raise UserError(f"model.embed_dim={fields['embed_dim']} is not divisible by "
                    f"model.num_heads={fields['num_heads']}; change one of them")
  if model_cfg.dtype not in ("float32", "bfloat16"):
    raise UserError(f"model.dtype={model_cfg.dtype!r}; use 'float32' or 'bfloat16'")
  if model_cfg.attention not in ("xla", "cudnn"):
    raise UserError(f"model.attention={model_cfg.attention!r}; use 'xla' or 'cudnn'")
  return GPTConfig(vocab_size=vocab_size, dropout=model_cfg.dropout, dtype=model_cfg.dtype,
                   attention=model_cfg.attention, remat=model_cfg.remat, **fields)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def tied_logits(h_BxTxD, embedding_VxD, dtype):
  """h·Eᵀ with both operands in `dtype` and fp32 output: [B, T, D] x [V, D] -> [B, T, V].

  The VJP is written out so that the two backward matmuls (dh = g·E, dE = gᵀ·h) also take
  `dtype` operands: JAX's own transpose of a `preferred_element_type=float32` product
  multiplies the fp32 cotangent with the bf16 operand, i.e. runs a third of the LM head
  (about a quarter of GPT-2 124M's FLOPs) in fp32. Both still accumulate in fp32.
  """
  return _tied_logits_fwd(h_BxTxD, embedding_VxD, dtype)[0]


def _tied_logits_fwd(h_BxTxD, embedding_VxD, dtype):
  h, e = h_BxTxD.astype(dtype), embedding_VxD.astype(dtype)
  logits = jnp.einsum("btd,vd->btv", h, e, preferred_element_type=jnp.float32)
  # Zero-size markers carry the input dtypes (residuals must be arrays).
  return logits, (h, e, jnp.zeros((0,), h_BxTxD.dtype), jnp.zeros((0,), embedding_VxD.dtype))


def _tied_logits_bwd(dtype, saved, g_BxTxV):
  h, e, h_marker, e_marker = saved
  g = g_BxTxV.astype(dtype)
  dh = jnp.einsum("btv,vd->btd", g, e, preferred_element_type=jnp.float32)
  de = jnp.einsum("btv,btd->vd", g, h, preferred_element_type=jnp.float32)
  return dh.astype(h_marker.dtype), de.astype(e_marker.dtype)


tied_logits.defvjp(_tied_logits_fwd, _tied_logits_bwd)


class KVCache(NamedTuple):
  """Per-layer keys and values for S slots, which slots hold real tokens, and where to go on.

  keys/values: tuple of L arrays [B, H, S, K]; valid_BxS: bool; index: int32 scalar, the
  next slot to write (shared by the rows: prompts are left-padded); next_position_B:
  int32 [B], each row's position for its next real token (its count of real tokens so
  far), so positions skip pads without being passed by hand.
  """
  keys: tuple
  values: tuple
  valid_BxS: jax.Array
  index: jax.Array
  next_position_B: jax.Array


def init_cache(cfg: GPTConfig, batch: int, slots: int) -> KVCache:
  if slots > cfg.max_len:  # positions past max_len have no embedding
    raise ValueError(f"a cache of {slots} slots exceeds the model's max_len={cfg.max_len}")
  shape = (batch, cfg.num_heads, slots, cfg.head_dim)
  def zeros():  # distinct buffers, so the cache can be donated
    return tuple(jnp.zeros(shape, cfg.dtype) for _ in range(cfg.num_layers))
  return KVCache(zeros(), zeros(), jnp.zeros((batch, slots), bool), jnp.zeros((), jnp.int32),
                 jnp.zeros((batch,), jnp.int32))


def _check_fits(index, num_new: int, slots: int) -> None:
  """ValueError when a concrete cache index leaves fewer than `num_new` free slots."""
  try:
    start = int(index)
  except jax.errors.ConcretizationTypeError:  # traced: hidden_states poisons with NaN instead
    return
  if start + num_new > slots:
    raise ValueError(f"writing {num_new} tokens at slot {start} overflows a cache of {slots} "
                     f"slots; allocate at least {start + num_new} slots with init_cache")


def default_positions(valid_BxT, start_B=None):
  """Positions that skip pads: start + the number of real tokens before t. [B, T] int32.

  A pad gets the position of the next real token (never more than any real position + 1).
  """
  valid_BxT = valid_BxT.astype(jnp.int32)
  before_BxT = jnp.cumsum(valid_BxT, axis=1) - valid_BxT
  return before_BxT if start_B is None else start_B[:, None] + before_BxT


class Projection(nn.Module):
  """y = x·W + b, contracting the last `num_in` axes of x; W's logical axes are `axes`.

  (An explicit kernel rather than nn.DenseGeneral, which flattens multi-axis
  kernels and so loses their logical sharding under `jax.set_mesh`.)
  """
  out_shape: tuple
  axes: tuple
  num_in: int = 1
  std: float = 0.02
  dtype: str = "float32"

  @nn.compact
  def __call__(self, x):
    in_shape = x.shape[x.ndim - self.num_in:]
    kernel = self.param("kernel", nn.with_logical_partitioning(
        nn.initializers.normal(self.std), self.axes), in_shape + self.out_shape, jnp.float32)
    bias = self.param("bias", nn.with_logical_partitioning(
        nn.initializers.zeros, self.axes[self.num_in:]), self.out_shape, jnp.float32)
    y = jnp.tensordot(x.astype(self.dtype), kernel.astype(self.dtype), axes=self.num_in)
    return y + bias.astype(self.dtype)


def _layer_norm(name):
  return nn.LayerNorm(epsilon=1e-5, dtype=jnp.float32, param_dtype=jnp.float32, name=name,
                      scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
                      bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)))


def _cached_attention(q_BxTxHxK, k_BxTxHxK, v_BxTxHxK, mask_BxTxS, layer_cache):
  """Writes the T new keys/values at slot `index` and attends over all S slots.

  softmax(q·kᵀ/√K masked) · v with the cache kept as [B, H, S, K]: both products then
  contract without transposing the cache (a [B, S, H, K] cache is copied whole every
  decode step by XLA's layout assignment). Logits and softmax in fp32.
  """
  keys_BxHxSxK, values_BxHxSxK, index = layer_cache
  keys_BxHxSxK = jax.lax.dynamic_update_slice_in_dim(
      keys_BxHxSxK, jnp.swapaxes(k_BxTxHxK, 1, 2).astype(keys_BxHxSxK.dtype), index, axis=2)
  values_BxHxSxK = jax.lax.dynamic_update_slice_in_dim(
      values_BxHxSxK, jnp.swapaxes(v_BxTxHxK, 1, 2).astype(values_BxHxSxK.dtype), index, axis=2)
  scale = q_BxTxHxK.shape[-1] ** -0.5
  logits_BxHxTxS = jnp.einsum("bthk,bhsk->bhts", q_BxTxHxK * scale, keys_BxHxSxK,
                              preferred_element_type=jnp.float32)
  logits_BxHxTxS = jnp.where(mask_BxTxS[:, None], logits_BxHxTxS, NEG_INF)
  probs_BxHxTxS = jax.nn.softmax(logits_BxHxTxS, axis=-1).astype(values_BxHxSxK.dtype)
  out_BxTxHxK = jnp.einsum("bhts,bhsk->bthk", probs_BxHxTxS, values_BxHxSxK)
  return out_BxTxHxK, (keys_BxHxSxK, values_BxHxSxK)


class Attention(nn.Module):
  cfg: GPTConfig

  @nn.compact
  def __call__(self, x_BxTxD, mask_BxTxS, layer_cache, deterministic):
    cfg = self.cfg
    # GPT-2 scales residual-branch output projections by 1/sqrt(2L).
    out_std = 0.02 / (2 * cfg.num_layers) ** 0.5
    qkv = Projection((3, cfg.num_heads, cfg.head_dim), ("embed", "qkv", "heads", "kv"),
                     dtype=cfg.dtype, name="qkv")
    q_BxTxHxK, k_BxTxHxK, v_BxTxHxK = jnp.moveaxis(qkv(x_BxTxD), 2, 0)
    if layer_cache is not None:
      out, layer_cache = _cached_attention(q_BxTxHxK, k_BxTxHxK, v_BxTxHxK, mask_BxTxS,
                                           layer_cache)
    elif mask_BxTxS is None:
      out = jax.nn.dot_product_attention(q_BxTxHxK, k_BxTxHxK, v_BxTxHxK, is_causal=True,
                                         implementation=cfg.attention)
    else:
      # Explicit masks (padding, packed segments) take the portable XLA path. For segments
      # there is no other: jax.nn.dot_product_attention (JAX 0.10.2, and its latest docs)
      # takes no segment ids (query/key_value_seq_lengths are one prefix length per row),
      # and cuDNN's packed layout (q_offsets with [B, segments] lengths) is only in the
      # private jax._src.cudnn.fused_attention_stablehlo.
      out = jax.nn.dot_product_attention(q_BxTxHxK, k_BxTxHxK, v_BxTxHxK,
                                         mask=mask_BxTxS[:, None], implementation="xla")
    out = nn.with_logical_constraint(out, ("batch", "length", "act_heads", "act_kv"))
    proj = Projection((cfg.embed_dim,), ("heads", "kv", "embed"), num_in=2, std=out_std,
                      dtype=cfg.dtype, name="out")
    y = nn.Dropout(cfg.dropout)(proj(out), deterministic=deterministic)
    return y, layer_cache


class MLP(nn.Module):
  cfg: GPTConfig

  @nn.compact
  def __call__(self, x_BxTxD, deterministic):
    cfg = self.cfg
    h_BxTxF = Projection((4 * cfg.embed_dim,), ("embed", "mlp"), dtype=cfg.dtype,
                         name="fc")(x_BxTxD)
    h_BxTxF = nn.with_logical_constraint(nn.gelu(h_BxTxF, approximate=True),
                                         ("batch", "length", "act_mlp"))
    out_std = 0.02 / (2 * cfg.num_layers) ** 0.5
    y = Projection((cfg.embed_dim,), ("mlp", "embed"), std=out_std, dtype=cfg.dtype,
                   name="proj")(h_BxTxF)
    return nn.Dropout(cfg.dropout)(y, deterministic=deterministic)


class Block(nn.Module):
  cfg: GPTConfig

  @nn.compact
  def __call__(self, x_BxTxD, mask_BxTxS, layer_cache, deterministic):
    attn, layer_cache = Attention(self.cfg, name="attn")(
        _layer_norm("ln_1")(x_BxTxD).astype(self.cfg.dtype), mask_BxTxS, layer_cache,
        deterministic)
    x_BxTxD = x_BxTxD + attn
    mlp = MLP(self.cfg, name="mlp")(_layer_norm("ln_2")(x_BxTxD).astype(self.cfg.dtype),
                                    deterministic)
    x_BxTxD = nn.with_logical_constraint(x_BxTxD + mlp, ("batch", "length", "act_embed"))
    return x_BxTxD, layer_cache


def attention_mask(valid_BxT, segment_ids_BxT=None, branch_ids_BxT=None):
  """Causal mask over real tokens: query t sees key s iff s <= t, s is real and (given
  segment ids) s is in t's segment and (given branch ids) s is on the shared trunk
  (branch 0) or on t's own branch. [B, T, T]."""
  t = valid_BxT.shape[1]
  causal_TxT = jnp.tril(jnp.ones((t, t), bool))
  mask = causal_TxT[None] & valid_BxT[:, None, :]
  if segment_ids_BxT is not None:
    mask = mask & (segment_ids_BxT[:, :, None] == segment_ids_BxT[:, None, :])
  if branch_ids_BxT is not None:
    mask = mask & ((branch_ids_BxT[:, None, :] == 0)
                   | (branch_ids_BxT[:, :, None] == branch_ids_BxT[:, None, :]))
  # A padded query sees itself only, so its row is never empty (outputs ignored anyway).
  return mask | jnp.eye(t, dtype=bool)[None]


def segment_positions(segment_ids_BxT):
  """Each token's index within its segment (a run of equal ids), int32 [B, T].

  position_t = t − start_t, where start_t is the index where t's run begins: positions
  restart at 0 for every packed example, as if it were alone in its row.
  """
  t = segment_ids_BxT.shape[1]
  index_T = jnp.arange(t, dtype=jnp.int32)
  starts_BxT = jnp.concatenate([jnp.ones_like(segment_ids_BxT[:, :1], bool),
                                segment_ids_BxT[:, 1:] != segment_ids_BxT[:, :-1]], axis=1)
  start_BxT = jax.lax.cummax(jnp.where(starts_BxT, index_T, 0), axis=1)
  return index_T - start_BxT


class GPT(nn.Module):
  """GPT-2. `hidden_states` feeds any head; `lm_logits` is the tied LM head.

  Three uses of one set of weights:
  - training: `hidden_states(tokens)` with causal attention (no mask);
  - padded batches: pass `valid_BxT`; positions then skip pads by default;
  - packed rows: pass `segment_ids_BxT` (0 = padding, 1, 2, ... = the examples of a row);
    a token attends only to earlier tokens of its own segment, and positions restart at
    0 in each segment by default (`segment_positions`);
  - shared prefixes (several continuations of one prompt in one segment): also pass
    `branch_ids_BxT` (0 = the shared prompt, k = continuation k) and the positions each
    token would have alone after the prompt; a continuation sees the prompt and itself;
  - generation: pass a `KVCache`; the T new tokens are written at `cache.index`
    and attend to every valid earlier slot (prefill with T = prompt length,
    then T = 1 per decoded token); each row's positions go on from its own
    `cache.next_position_B`.
  """
  cfg: GPTConfig

  def setup(self):
    cfg = self.cfg
    self.wte = nn.Embed(cfg.padded_vocab, cfg.embed_dim, param_dtype=jnp.float32,
                        embedding_init=nn.with_logical_partitioning(
                            nn.initializers.normal(0.02), ("vocab", "embed")))
    self.wpe = nn.Embed(cfg.max_len, cfg.embed_dim, param_dtype=jnp.float32,
                        embedding_init=nn.with_logical_partitioning(
                            nn.initializers.normal(0.01), ("length", "embed")))
    block = nn.remat(Block, static_argnums=(4,)) if cfg.remat else Block
    self.blocks = [block(cfg, name=f"h_{i}") for i in range(cfg.num_layers)]
    self.ln_f = _layer_norm("ln_f")
    self.drop = nn.Dropout(cfg.dropout)

  def hidden_states(self, tokens_BxT, positions_BxT=None, valid_BxT=None,
                    cache: KVCache | None = None, deterministic: bool = True,
                    segment_ids_BxT=None, branch_ids_BxT=None):
    """Final-LayerNorm hidden states [B, T, D] (fp32) and the updated cache (or None).

    Positions default to `default_positions` (counting on from the cache's per-row
    `next_position_B`), so left-padded batches need no hand-made positions. Pads enter
    as zero vectors: a pad given a position past max_len (a NaN embedding lookup)
    cannot leak NaN into real tokens through masked slots. A write past the cache's
    last slot is a ValueError when the index is concrete; under `jit` (traced index)
    it makes every output NaN instead of being silently clamped.
    """
    cfg = self.cfg
    b, t = tokens_BxT.shape
    if t > cfg.max_len:  # positions past max_len have no embedding
      raise ValueError(f"{t} tokens exceed the model's max_len={cfg.max_len}")
    if segment_ids_BxT is not None:
      if cache is not None:
        raise ValueError("segment_ids_BxT (packed rows) cannot be used with a KV cache")
      if valid_BxT is None:
        valid_BxT = segment_ids_BxT > 0
      if positions_BxT is None:
        if branch_ids_BxT is not None:
          raise ValueError("branch_ids_BxT needs positions_BxT (each branch's positions go "
                           "on from the end of its shared prompt)")
        positions_BxT = segment_positions(segment_ids_BxT)
    elif branch_ids_BxT is not None:
      raise ValueError("branch_ids_BxT needs segment_ids_BxT")
    if cache is not None and valid_BxT is None:
      valid_BxT = jnp.ones((b, t), bool)
    if valid_BxT is not None:
      valid_BxT = valid_BxT.astype(bool)
    if positions_BxT is None:
      if valid_BxT is None:
        positions_BxT = jnp.broadcast_to(jnp.arange(t), (b, t))
      else:
        positions_BxT = default_positions(
            valid_BxT, None if cache is None else cache.next_position_B)
    x = self.wte(tokens_BxT) + self.wpe(positions_BxT)
    if valid_BxT is not None:
      x = jnp.where(valid_BxT[..., None], x, 0.0)
    x = self.drop(x, deterministic=deterministic).astype(cfg.dtype)
    x = nn.with_logical_constraint(x, ("batch", "length", "act_embed"))

    mask_BxTxS = None
    if cache is not None:
      slots = cache.valid_BxS.shape[1]
      _check_fits(cache.index, t, slots)
      valid_BxS = jax.lax.dynamic_update_slice_in_dim(cache.valid_BxS, valid_BxT, cache.index, 1)
      query_slot_T = cache.index + jnp.arange(t)
      causal_TxS = jnp.arange(slots)[None, :] <= query_slot_T[:, None]
      mask_BxTxS = causal_TxS[None] & valid_BxS[:, None, :]
      mask_BxTxS = mask_BxTxS | (jnp.arange(slots)[None, :] == query_slot_T[:, None])[None]
    elif valid_BxT is not None:
      mask_BxTxS = attention_mask(valid_BxT, segment_ids_BxT, branch_ids_BxT)

    new_keys, new_values = [], []
    for i, block in enumerate(self.blocks):
      layer_cache = None if cache is None else (cache.keys[i], cache.values[i], cache.index)
      x, layer_cache = block(x, mask_BxTxS, layer_cache, deterministic)
      if layer_cache is not None:
        new_keys.append(layer_cache[0])
        new_values.append(layer_cache[1])
    h_BxTxD = self.ln_f(x)
    if cache is not None:
      # dynamic_update_slice clamps an out-of-range write onto the last slots: poison instead.
      h_BxTxD = jnp.where(cache.index + t > slots, jnp.nan, h_BxTxD)
      real_end_B = jnp.max(jnp.where(valid_BxT, positions_BxT + 1, 0), axis=1)
      cache = KVCache(tuple(new_keys), tuple(new_values), valid_BxS, cache.index + t,
                      jnp.maximum(cache.next_position_B, real_end_B).astype(jnp.int32))
    return h_BxTxD, cache

  def lm_logits(self, h_BxTxD):
    """Tied-embedding logits h·Eᵀ [B, T, V] in fp32; padded vocabulary entries are -1e9.

    The matmul runs in `dtype` with fp32 accumulation (`tied_logits`); `nn.Embed.attend`
    would promote bf16 activations back to the fp32 table.
    """
    logits = tied_logits(h_BxTxD, self.wte.embedding, self.cfg.dtype)
    logits = nn.with_logical_constraint(logits, ("batch", "length", "act_vocab"))
    real_V = jnp.arange(self.cfg.padded_vocab) < self.cfg.vocab_size
    return jnp.where(real_V, logits, NEG_INF)

  def __call__(self, tokens_BxT, positions_BxT=None, valid_BxT=None, cache=None,
               deterministic=True, segment_ids_BxT=None):
    h, cache = self.hidden_states(tokens_BxT, positions_BxT, valid_BxT, cache, deterministic,
                                  segment_ids_BxT)
    return self.lm_logits(h), cache


def count_params(params: Any) -> int:
  return sum(x.size for x in jax.tree.leaves(params))
