"""GPT decoder: jit vs eager, causality, cached decode vs full forward, padding, presets."""
import flax.linen as nn
import jax
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
  tokens = _tokens(1, 12)
  changed = tokens.at[0, 8:].set((tokens[0, 8:] + 1) % CFG.vocab_size)
  a, _ = model.apply({"params": params}, tokens)
  b, _ = model.apply({"params": params}, changed)
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
  tokens = _tokens(1, 7)
  plain, _ = model.apply({"params": params}, tokens)
  pad = 5
  padded = jnp.concatenate([jnp.full((1, pad), 299), tokens], axis=1)
  valid = jnp.arange(pad + 7)[None] >= pad
  positions = jnp.maximum(jnp.arange(pad + 7) - pad, 0)[None]
  out, _ = model.apply({"params": params}, padded, positions_BxT=positions, valid_BxT=valid)
  np.testing.assert_allclose(out[:, pad:, :300], plain[..., :300], atol=1e-5)
  # Same through the KV cache (prefill of the padded prompt, then decode).
  cache = gpt.init_cache(CFG, 1, pad + 9)
  pre, cache = model.apply({"params": params}, padded, positions_BxT=positions,
                           valid_BxT=valid, cache=cache)
  np.testing.assert_allclose(pre[:, pad:, :300], plain[..., :300], atol=1e-5)
  nxt = jnp.array([[17]])
  dec, _ = model.apply({"params": params}, nxt, positions_BxT=jnp.array([[7]]), cache=cache)
  ref, _ = model.apply({"params": params}, jnp.concatenate([tokens, nxt], 1))
  np.testing.assert_allclose(dec[:, 0, :300], ref[:, -1, :300], atol=1e-5)


def test_remat_and_bfloat16_run_and_agree_roughly(params):
  tokens = _tokens(2, 10)
  ref, _ = gpt.GPT(CFG).apply({"params": params}, tokens)
  remat = gpt.GPTConfig(**{**CFG.__dict__, "remat": True})
  out, _ = gpt.GPT(remat).apply({"params": params}, tokens)
  np.testing.assert_allclose(out, ref, atol=1e-5)
  bf16 = gpt.GPTConfig(**{**CFG.__dict__, "dtype": "bfloat16"})
  low, _ = gpt.GPT(bf16).apply({"params": params}, tokens)
  assert low.dtype == jnp.float32
  np.testing.assert_allclose(low[..., :300], ref[..., :300], atol=0.1)


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
