"""Sampler: exact log-probs, padding and batch invariance, greedy, temperature, filters,
EOS, sharding. References are plain causal forward passes of unpadded rows (no cache).

Compilations dominate the run time, so tests share a few (settings, shape) programs.
"""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from rlhf_jax import configs, sampling, sharding
from rlhf_jax.models import gpt

# A small vocabulary (padded to 128) so frequencies have enough counts per token.
CFG = gpt.GPTConfig(vocab_size=40, num_layers=2, num_heads=4, embed_dim=32, max_len=64)
V = CFG.vocab_size
PAD = 39
EOS = 33  # greedy rows 1 and 2 below emit it as their third token; rows 0 and 3 never do
MODEL = gpt.GPT(CFG)
GREEDY = dict(temperature=0.0, max_new_tokens=8, eos_id=EOS, pad_id=PAD)
SAMPLED = dict(temperature=0.8, top_k=5, top_p=0.9, max_new_tokens=8, eos_id=EOS, pad_id=PAD)


@pytest.fixture(scope="module")
def params():
  variables = jax.jit(MODEL.init)(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))
  params = nn.meta.unbox(variables)["params"]
  # Random init is near uniform and greedy repeats one token; larger weights give
  # varied greedy paths and peaked distributions (top probability 0.1-0.2 at T = 1).
  params = jax.tree_util.tree_map_with_path(
      lambda path, x: x * 16.0 if "kernel" in jax.tree_util.keystr(path) else x, params)
  params["wte"]["embedding"] = params["wte"]["embedding"] * 8.0
  return params


@functools.lru_cache(maxsize=None)
def _sampler(**settings):
  return jax.jit(functools.partial(sampling.sample, MODEL, **settings))


def _left_pad(prompts, width):
  tokens = np.full((len(prompts), width), PAD, np.int32)
  mask = np.zeros((len(prompts), width), np.int32)
  for i, prompt in enumerate(prompts):
    tokens[i, width - len(prompt):] = prompt
    mask[i, width - len(prompt):] = 1
  return tokens, mask


def _run(params, prompts, width, settings, seed=0):
  """Left-pads 1-D prompts to `width` and samples; returns (numpy Samples, tokens, mask)."""
  tokens, mask = _left_pad(prompts, width)
  out = _sampler(**settings)(params, jnp.asarray(tokens), jnp.asarray(mask),
                             jax.random.key(seed))
  return jax.tree.map(np.asarray, out), tokens, mask


def _prompts(lengths, seed=1):
  rng = np.random.default_rng(seed)
  return [rng.integers(0, V - 2, size=n) for n in lengths]


PROMPTS = _prompts([7, 3, 5, 1])


@jax.jit
def _causal_forward(params, tokens_1xT):
  return MODEL.apply({"params": params}, tokens_1xT)[0]


def _row_logits(params, ids):
  """Logits [T, V] (float64) of one unpadded sequence: plain causal forward, no cache.

  Right-padded to a fixed width (one compilation); causality keeps the first T exact.
  """
  tokens = np.zeros((1, 32), np.int32)
  tokens[0, :len(ids)] = ids
  return np.asarray(_causal_forward(params, jnp.asarray(tokens))[0, :len(ids), :V], np.float64)


def _log_softmax(x):
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


@pytest.mark.parametrize("settings", [GREEDY, SAMPLED], ids=["greedy", "sampled"])
def test_log_probs_equal_one_full_forward(params, settings):
  """(a) sampler log-probs == response_log_probs == per-row unpadded forward, to 1e-5."""
  out, tokens, mask = _run(params, PROMPTS, 11, settings)
  temperature = settings["temperature"]
  score = jax.jit(functools.partial(sampling.response_log_probs, MODEL, temperature=temperature))
  full = np.asarray(score(params, tokens, mask, out.tokens_BxN, out.mask_BxN))
  np.testing.assert_allclose(out.log_probs_BxN, full, atol=1e-5, rtol=0)
  for i, prompt in enumerate(PROMPTS):
    n = out.lengths_B[i]
    logits = _row_logits(params, np.concatenate([prompt, out.tokens_BxN[i, :n]]))
    ref = _log_softmax(logits[len(prompt) - 1:-1] / (temperature or 1.0))
    np.testing.assert_allclose(out.log_probs_BxN[i, :n], ref[np.arange(n), out.tokens_BxN[i, :n]],
                               atol=1e-5, rtol=0)
  assert np.all(out.log_probs_BxN[out.mask_BxN == 0] == 0)
  assert np.all(out.log_probs_BxN[out.mask_BxN == 1] < 0)


@pytest.mark.parametrize("settings", [GREEDY, SAMPLED], ids=["greedy", "sampled"])
def test_output_ignores_padding_and_other_prompts(params, settings):
  """(b) a prompt's tokens and log-probs do not depend on its left padding or its batch.

  Greedy: rows moved into another batch (other companions, other row, padding 11 -> 8).
  Sampling draws with row-indexed random bits, so there the rows keep their places and
  only the padding changes.
  """
  ref, _, _ = _run(params, PROMPTS, 11, settings)
  if settings["temperature"] == 0:
    batch, rows = [PROMPTS[2]] + _prompts([6, 2], seed=5) + [PROMPTS[1]], {2: 0, 1: 3}
  else:
    batch, rows = PROMPTS, {i: i for i in range(4)}
  out, _, _ = _run(params, batch, 8, settings)
  for before, after in rows.items():
    np.testing.assert_array_equal(out.tokens_BxN[after], ref.tokens_BxN[before])
    np.testing.assert_array_equal(out.mask_BxN[after], ref.mask_BxN[before])
    np.testing.assert_allclose(out.log_probs_BxN[after], ref.log_probs_BxN[before], atol=1e-5)


def test_greedy_equals_argmax_loop_and_stops_at_eos(params):
  """(c) greedy == an argmax loop over full forwards; (e) rows stop at their first EOS."""
  out, _, _ = _run(params, PROMPTS, 11, GREEDY)
  n = GREEDY["max_new_tokens"]
  for i, prompt in enumerate(PROMPTS):
    ids = list(prompt)
    while len(ids) - len(prompt) < n and ids[-1] != EOS:
      ids.append(int(np.argmax(_row_logits(params, ids)[-1])))
    response = ids[len(prompt):]
    stop = len(response)
    np.testing.assert_array_equal(out.tokens_BxN[i, :stop], response)
    np.testing.assert_array_equal(out.tokens_BxN[i, stop:], PAD)
    np.testing.assert_array_equal(out.mask_BxN[i], np.arange(n) < stop)
    assert out.lengths_B[i] == stop and out.eos_B[i] == (response[-1] == EOS)
  np.testing.assert_array_equal(out.lengths_B, [8, 3, 3, 8])  # both kinds of rows occur
  np.testing.assert_array_equal(out.eos_B, [False, True, True, False])


def test_temperature_frequencies_match_softmax_and_eos_masks_the_rest(params):
  """(d) first-token frequencies at T = 0.7 match softmax(logits / 0.7) (chi-square);
  (e) sampled rows end at their first EOS: afterwards pad, mask 0, log-prob 0."""
  prompt = _prompts([5], seed=11)[0]
  draws, n = 2000, 10
  probs = np.exp(_log_softmax(_row_logits(params, prompt)[-1] / 0.7))
  eos = int(np.argsort(probs)[-3])  # likely enough that many rows, not all, end early
  out, _, _ = _run(params, [prompt] * draws, 5,
                   dict(temperature=0.7, max_new_tokens=n, eos_id=eos, pad_id=PAD))
  observed = np.bincount(out.tokens_BxN[:, 0], minlength=V)
  common = probs * draws >= 5  # rare tokens pooled into one bin
  obs = np.append(observed[common], observed[~common].sum())
  assert scipy.stats.chisquare(obs, np.append(probs[common], probs[~common].sum()) * draws
                               ).pvalue > 1e-3
  untempered = np.exp(_log_softmax(_row_logits(params, prompt)[-1]))  # the test has power
  assert scipy.stats.chisquare(
      obs, np.append(untempered[common], untempered[~common].sum()) * draws).pvalue < 1e-6

  assert 0.05 * draws < out.eos_B.sum() < 0.95 * draws
  is_eos = out.tokens_BxN == eos
  stop = np.where(out.eos_B, is_eos.argmax(1) + 1, n)
  after = np.arange(n)[None] >= stop[:, None]
  np.testing.assert_array_equal(out.mask_BxN, ~after)
  np.testing.assert_array_equal(out.lengths_B, stop)
  assert np.all(out.tokens_BxN[after] == PAD) and np.all(out.log_probs_BxN[after] == 0)
  assert np.all(is_eos.sum(1) == out.eos_B)


def test_top_k_top_p_never_emit_excluded_tokens(params):
  """(d) every sampled token is among the top k and inside the nucleus of its step."""
  top_k, top_p, temperature = 5, 0.5, 0.7
  prompts = _prompts([3] * 48, seed=13)
  out, _, _ = _run(params, prompts, 3, dict(temperature=temperature, top_k=top_k, top_p=top_p,
                                            max_new_tokens=5, eos_id=V - 2, pad_id=PAD))
  ranks, k_binds, p_binds = set(), 0, 0
  for i, prompt in enumerate(prompts):
    logits = _row_logits(params, np.concatenate([prompt, out.tokens_BxN[i]]))[2:-1]
    logits /= temperature
    probs = np.exp(_log_softmax(logits))
    for t, token in enumerate(out.tokens_BxN[i, :out.lengths_B[i]]):
      higher = logits[t] > logits[t, token]
      assert higher.sum() < top_k and probs[t][higher].sum() < top_p + 1e-6
      ranks.add(int(higher.sum()))
      mass_before_sorted = np.cumsum(np.sort(probs[t])[::-1]) - np.sort(probs[t])[::-1]
      nucleus = int(np.sum(mass_before_sorted < top_p))
      k_binds += nucleus > top_k
      p_binds += nucleus < top_k
  assert len(ranks) > 1 and k_binds > 0 and p_binds > 0  # sampled, and both filters cut


def test_eight_devices_give_the_same_tokens_as_one(params):
  """(f) batch sharded over a (data, fsdp, tensor) = (2, 2, 2) mesh: same as one device."""
  ref, tokens, mask = _run(params, PROMPTS, 11, SAMPLED)
  mesh_cfg = configs.base_config().mesh
  mesh_cfg.update(data=2, fsdp=2, tensor=2)
  mesh = sharding.make_mesh(mesh_cfg)
  rules = sharding.rules(mesh_cfg)
  boxes = jax.eval_shape(MODEL.init, jax.random.key(0), jnp.zeros((1, 8), jnp.int32))["params"]
  boxed = jax.tree.map(lambda box, value: box.replace_boxed(value), boxes, params,
                       is_leaf=lambda x: isinstance(x, nn.Partitioned))
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    boxed = jax.device_put(boxed, sharding.logical_shardings(boxed, mesh, rules))
    batch = sharding.device_batch({"tokens": tokens, "mask": mask}, mesh)
    out = jax.jit(functools.partial(sampling.sample, MODEL, **SAMPLED))(
        boxed, batch["tokens"], batch["mask"], jax.random.key(0))
  assert len(out.tokens_BxN.sharding.device_set) == 8
  np.testing.assert_array_equal(np.asarray(out.tokens_BxN), ref.tokens_BxN)
  np.testing.assert_array_equal(np.asarray(out.mask_BxN), ref.mask_BxN)
  np.testing.assert_allclose(np.asarray(out.log_probs_BxN), ref.log_probs_BxN, atol=1e-5)


def test_settings_are_checked(params):
  prompts = jnp.zeros((1, 60), jnp.int32)
  with pytest.raises(ValueError, match=r"60 \+ max_new_tokens 5 = 65 exceeds .* max_len=64"):
    sampling.sample(MODEL, params, prompts, prompts + 1, jax.random.key(0), max_new_tokens=5,
                    eos_id=1, pad_id=PAD)
  with pytest.raises(ValueError, match="top_p"):
    sampling.sample(MODEL, params, prompts[:, :4], prompts[:, :4] + 1, jax.random.key(0),
                    max_new_tokens=5, eos_id=1, pad_id=PAD, top_p=0.0)
