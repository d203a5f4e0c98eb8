"""GPT decoder: jit vs eager, causality, cached decode vs full forward, padding, presets."""
import flax.linen as nn
import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest

from rlhf_jax.models import gpt

CFG = gpt.GPTConfig(vocab_size=300, num_layers=2, num_heads=4, embed_dim=32, max_len=64)


@pytest.fixture(scope="module")
def params():
  variables = gpt.GPT(CFG).init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))
  return nn.meta.unbox(variables)["params"]


def _tokens(b, t, seed=1):
  return jax.random.randint(jax.random.key(seed), (b, t), 0, CFG.vocab_size)


def test_vocab_is_padded_and_padding_logits_are_masked(params):
  assert CFG.padded_vocab == 384
  assert params["wte"]["embedding"].shape == (384, 32)
  logits, _ = gpt.GPT(CFG).apply({"params": params}, _tokens(2, 5))
  assert logits.shape == (2, 5, 384) and logits.dtype == jnp.float32
  assert np.all(np.asarray(logits[..., 300:]) == gpt.NEG_INF)
  # Tied embeddings: there is no separate output matrix.
  assert set(params) == {"wte", "wpe", "ln_f", "h_0", "h_1"}


def test_jit_matches_eager(params):
  model = gpt.GPT(CFG)
  tokens = _tokens(2, 12)
  eager, _ = model.apply({"params": params}, tokens)
  jitted, _ = jax.jit(model.apply)({"params": params}, tokens)
  np.testing.assert_allclose(eager, jitted, atol=1e-5)


def test_causal_future_tokens_do_not_change_past_logits(params):
  model = gpt.GPT(CFG)
  apply = jax.jit(model.apply)  # eager dispatch op by op is 3-5x slower here
  tokens = _tokens(1, 12)
  changed = tokens.at[0, 8:].set((tokens[0, 8:] + 1) % CFG.vocab_size)
  a, _ = apply({"params": params}, tokens)
  b, _ = apply({"params": params}, changed)
  np.testing.assert_allclose(a[:, :8], b[:, :8], atol=1e-6)
  assert np.abs(np.asarray(a[:, 8:] - b[:, 8:])).max() > 1e-3


def test_prefill_then_one_token_decode_equals_full_forward(params):
  model = gpt.GPT(CFG)
  tokens = _tokens(3, 14)
  full, _ = model.apply({"params": params}, tokens)
  cache = gpt.init_cache(CFG, batch=3, slots=20)
  step = jax.jit(model.apply)
  prefill, cache = step({"params": params}, tokens[:, :6], cache=cache)
  pieces = [prefill]
  for t in range(6, 14):
    logits, cache = step({"params": params}, tokens[:, t:t + 1], cache=cache)
    pieces.append(logits)
  decoded = jnp.concatenate(pieces, axis=1)
  np.testing.assert_allclose(decoded[..., :300], full[..., :300], atol=1e-5, rtol=1e-5)
  assert int(cache.index) == 14


def test_left_padding_does_not_change_real_token_logits(params):
  """A left-padded prompt with positions that skip pads gives the unpadded logits."""
  model = gpt.GPT(CFG)
  apply = jax.jit(model.apply)  # eager dispatch op by op is 3-5x slower here
  tokens = _tokens(1, 7)
  plain, _ = apply({"params": params}, tokens)
  pad = 5
  padded = jnp.concatenate([jnp.full((1, pad), 299), tokens], axis=1)
  valid = jnp.arange(pad + 7)[None] >= pad
  positions = jnp.maximum(jnp.arange(pad + 7) - pad, 0)[None]
  out, _ = apply({"params": params}, padded, positions_BxT=positions, valid_BxT=valid)
  np.testing.assert_allclose(out[:, pad:, :300], plain[..., :300], atol=1e-5)
  # Same through the KV cache (prefill of the padded prompt, then decode).
  cache = gpt.init_cache(CFG, 1, pad + 9)
  pre, cache = apply({"params": params}, padded, positions_BxT=positions,
                           valid_BxT=valid, cache=cache)
  np.testing.assert_allclose(pre[:, pad:, :300], plain[..., :300], atol=1e-5)
  nxt = jnp.array([[17]])
  dec, _ = apply({"params": params}, nxt, positions_BxT=jnp.array([[7]]), cache=cache)
  ref, _ = apply({"params": params}, jnp.concatenate([tokens, nxt], 1))
  np.testing.assert_allclose(dec[:, 0, :300], ref[:, -1, :300], atol=1e-5)


def test_remat_gives_the_same_loss_and_gradients(params):
  tokens = _tokens(2, 10)
  remat = gpt.GPTConfig(**{**CFG.__dict__, "remat": True})

  def loss(cfg):
    def f(p):
      logits, _ = gpt.GPT(cfg).apply({"params": p}, tokens)
      return jnp.mean(jax.nn.log_softmax(logits[..., :300])[..., 3])
    return jax.jit(jax.value_and_grad(f))(params)

  (ref_loss, ref_grads), (loss_r, grads_r) = loss(CFG), loss(remat)
  np.testing.assert_allclose(loss_r, ref_loss, rtol=1e-6)
  for a, b in zip(jax.tree.leaves(grads_r), jax.tree.leaves(ref_grads)):
    np.testing.assert_allclose(a, b, atol=1e-6)  # measured: identical


def test_bfloat16_logits_are_fp32_and_near_the_fp32_model(params):
  tokens = _tokens(2, 10)
  ref, _ = gpt.GPT(CFG).apply({"params": params}, tokens)
  bf16 = gpt.GPTConfig(**{**CFG.__dict__, "dtype": "bfloat16"})
  low, _ = gpt.GPT(bf16).apply({"params": params}, tokens)
  assert low.dtype == jnp.float32
  # Measured max |difference| 0.0028 (logits of std ~0.5); a fp32 LM head would not differ.
  np.testing.assert_allclose(low[..., :300], ref[..., :300], atol=0.01)
  assert np.abs(np.asarray(low[..., :300] - ref[..., :300])).max() > 1e-4


@pytest.mark.parametrize("preset,expected_millions", [
    ("gpt2", 124), ("gpt2-medium", 355), ("gpt2-large", 774), ("gpt2-xl", 1558)])
def test_full_size_presets_by_eval_shape(preset, expected_millions):
  cfg = gpt.GPTConfig(vocab_size=50257, **gpt.PRESETS[preset])
  shapes = jax.eval_shape(lambda: gpt.GPT(cfg).init(jax.random.key(0),
                                                     jnp.zeros((1, 8), jnp.int32)))
  count = gpt.count_params(shapes["params"])
  # GPT-2's counts with the vocabulary padded from 50257 to 50304 (+47·D).
  assert abs(count / 1e6 - expected_millions) < 1.0, count


def test_inputs_longer_than_max_len_are_refused(params):
  with pytest.raises(ValueError, match="max_len"):
    gpt.GPT(CFG).apply({"params": params}, _tokens(1, CFG.max_len + 1))
  with pytest.raises(ValueError, match="max_len"):
    gpt.init_cache(CFG, batch=1, slots=CFG.max_len + 1)


def _left_pad(rows, width, pad_id=299):
  """Left-padded tokens [B, width] and validity of a list of 1-D token arrays."""
  tokens = np.full((len(rows), width), pad_id, np.int32)
  valid = np.zeros((len(rows), width), bool)
  for i, row in enumerate(rows):
    tokens[i, width - len(row):] = row
    valid[i, width - len(row):] = True
  return jnp.asarray(tokens), jnp.asarray(valid)


def test_left_padded_batch_cache_needs_no_positions(params):
  """Prompts of lengths 7 and 4, no hand-passed positions: each row equals its own forward."""
  model = gpt.GPT(CFG)
  apply = jax.jit(model.apply)  # eager dispatch op by op is 3-5x slower here
  rows = [np.asarray(_tokens(1, 10, seed=2))[0], np.asarray(_tokens(1, 7, seed=3))[0]]
  prompts, valid = _left_pad([rows[0][:7], rows[1][:4]], 7)
  padded_full, _ = apply({"params": params}, prompts, valid_BxT=valid)
  cache = gpt.init_cache(CFG, 2, 10)
  pre, cache = apply({"params": params}, prompts, valid_BxT=valid, cache=cache)
  decoded = []
  for t in range(3):
    step_tokens = jnp.asarray([[rows[0][7 + t]], [rows[1][4 + t]]])
    logits, cache = apply({"params": params}, step_tokens, cache=cache)
    decoded.append(logits[:, 0])
  np.testing.assert_array_equal(cache.next_position_B, [10, 7])
  for i, (row, length) in enumerate(zip(rows, (7, 4))):
    ref, _ = apply({"params": params}, jnp.asarray(row)[None])
    np.testing.assert_allclose(padded_full[i, 7 - length:, :300], ref[0, :length, :300],
                               atol=1e-5)
    np.testing.assert_allclose(pre[i, 7 - length:, :300], ref[0, :length, :300], atol=1e-5)
    np.testing.assert_allclose(jnp.stack(decoded, 1)[i, :, :300],
                               ref[0, length:length + 3, :300], atol=1e-5)


def test_cache_overflow_is_an_error_or_nan_never_silent(params):
  model = gpt.GPT(CFG)
  cache = gpt.init_cache(CFG, 1, 8)
  _, cache = model.apply({"params": params}, _tokens(1, 6), cache=cache)
  with pytest.raises(ValueError, match="overflows a cache of 8 slots"):
    model.apply({"params": params}, _tokens(1, 3), cache=cache)
  # Under jit the index is traced: the overflowing call returns NaN, never clamped logits.
  step = jax.jit(model.apply)
  fits, cache = step({"params": params}, _tokens(1, 2), cache=cache)
  assert np.all(np.isfinite(fits))
  over, _ = step({"params": params}, _tokens(1, 1), cache=cache)
  assert np.all(np.isnan(over[..., :300]))


def test_pad_positions_past_max_len_never_reach_real_tokens(params):
  """Pads with out-of-range positions (NaN embeddings) leave real tokens' logits exact."""
  model = gpt.GPT(CFG)
  apply = jax.jit(model.apply)  # eager dispatch op by op is 3-5x slower here
  tokens = _tokens(1, 5)
  plain, _ = apply({"params": params}, tokens)
  padded, valid = _left_pad([np.asarray(tokens)[0]], 8)
  positions = jnp.where(valid, jnp.arange(8) - 3, CFG.max_len + 7)
  out, _ = apply({"params": params}, padded, positions_BxT=positions, valid_BxT=valid)
  np.testing.assert_allclose(out[:, 3:, :300], plain[..., :300], atol=1e-5)
  cache = gpt.init_cache(CFG, 1, 9)
  pre, cache = apply({"params": params}, padded, positions_BxT=positions,
                           valid_BxT=valid, cache=cache)
  np.testing.assert_allclose(pre[:, 3:, :300], plain[..., :300], atol=1e-5)
  nxt, _ = apply({"params": params}, jnp.array([[17]]), cache=cache)
  ref, _ = apply({"params": params}, jnp.concatenate([tokens, jnp.array([[17]])], 1))
  np.testing.assert_allclose(nxt[:, 0, :300], ref[:, -1, :300], atol=1e-5)


def _dot_operand_dtypes(jaxpr):
  """(operand dtypes, output size) of every dot_general in a jaxpr, nested ones included."""
  found = []
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "dot_general":
      found.append(({str(v.aval.dtype) for v in eqn.invars}, eqn.outvars[0].aval.size))
    for sub in jax.extend.core.jaxprs_in_params(eqn.params):
      found += _dot_operand_dtypes(sub)
  return found


def test_bfloat16_training_step_has_no_fp32_matmul(params):
  """Forward and backward of the bf16 loss: every matmul takes bf16 operands (fp32 out only
  by accumulation), the tied LM head included. The exception is inside
  `jax.nn.dot_product_attention`'s XLA path: it forms the scores with fp32 output, so JAX's
  transpose computes dq and dk from the fp32 score cotangent (2 per layer; on GPU the cuDNN
  path does attention in one fused kernel instead)."""
  bf16 = gpt.GPTConfig(**{**CFG.__dict__, "dtype": "bfloat16"})
  tokens = _tokens(2, 10)

  def loss(p):
    logits, _ = gpt.GPT(bf16).apply({"params": p}, tokens)
    return -jnp.mean(jax.nn.log_softmax(logits)[..., 0])

  dots = _dot_operand_dtypes(jax.make_jaxpr(jax.grad(loss))(params).jaxpr)
  # 2 layers x (qkv, q·k, p·v, out, fc, proj) forward, x3 with backward, plus the LM head.
  assert len(dots) >= 30
  mixed = [(dtypes, size) for dtypes, size in dots if dtypes != {"bfloat16"}]
  q_size = tokens.size * bf16.embed_dim  # dq, dk: [B, T, H, K]
  assert mixed == [({"bfloat16", "float32"}, q_size)] * (2 * bf16.num_layers), mixed


def test_tied_logits_gradients_match_float32():
  """The hand-written VJP of the bf16 LM head: gradients within bf16 rounding of fp32's."""
  kh, ke, kg = jax.random.split(jax.random.key(3), 3)
  h = jax.random.normal(kh, (2, 5, 64))
  e = jax.random.normal(ke, (384, 64)) * 0.02
  g = jax.random.normal(kg, (2, 5, 384))
  def vjp(dtype):
    out, pull = jax.vjp(lambda a, b: gpt.tied_logits(a, b, dtype), h, e)
    return (out, *pull(g))
  ref, low = vjp(jnp.float32), vjp(jnp.bfloat16)
  for r, x in zip(ref, low):
    assert x.dtype == jnp.float32
    err = float(jnp.linalg.norm(x - r) / jnp.linalg.norm(r))
    assert 1e-4 < err < 1e-2, err  # bf16 operands: ~3e-3, never fp32-exact


def _packed(examples_by_row, width, pad_id=299):
  """Right-padded packed rows [B, width] and segment ids (1, 2, ... per row; 0 = pad), NumPy."""
  tokens = np.full((len(examples_by_row), width), pad_id, np.int32)
  segment_ids = np.zeros((len(examples_by_row), width), np.int32)
  for row, examples in enumerate(examples_by_row):
    start = 0
    for segment, example in enumerate(examples, 1):
      tokens[row, start:start + len(example)] = example
      segment_ids[row, start:start + len(example)] = segment
      start += len(example)
  return tokens, segment_ids


def test_packed_segments_give_each_example_its_own_logits_and_never_see_each_other(params):
  """Rows of examples (lengths 5, 9, 4 | 12, 6) with segment ids: every example's logits are
  those of the example alone (max difference measured 1.2e-7), and editing one segment
  leaves the others' logits bit-identical, which one segment per row (causal) does not."""
  apply = jax.jit(gpt.GPT(CFG).apply)  # eager dispatch op by op is 3-5x slower here
  lengths = [[5, 9, 4], [12, 6]]
  rng = np.random.default_rng(0)
  examples = [[rng.integers(0, CFG.vocab_size, n) for n in ns] for ns in lengths]
  tokens, segment_ids = _packed(examples, 20)
  edited = tokens[0].copy()
  edited[:5] = (edited[:5] + 1) % CFG.vocab_size  # segment 1 of row 0
  # One call: the packed rows, row 0 edited, and row 0 unedited and edited as one segment.
  one_segment = np.ones_like(segment_ids[0])
  out, _ = apply({"params": params}, np.stack([*tokens, edited, tokens[0], edited]),
                 segment_ids_BxT=np.stack([*segment_ids, segment_ids[0], one_segment,
                                           one_segment]))
  # Each example alone, right-padded (causal: pads never reach the real tokens before them).
  alone, _ = apply({"params": params}, _packed([[e] for row in examples for e in row], 12)[0])
  starts = [start for ns in lengths for start in np.cumsum([0] + ns[:-1])]
  rows = [row for row, ns in enumerate(lengths) for _ in ns]
  for i, (row, start, n) in enumerate(zip(rows, starts, sum(lengths, []))):
    np.testing.assert_allclose(out[row, start:start + n, :300], alone[i, :n, :300], atol=1e-6)
  np.testing.assert_array_equal(out[2, 5:18], out[0, 5:18])
  assert np.abs(np.asarray(out[4, 5:18] - out[3, 5:18])).max() > 1e-3
