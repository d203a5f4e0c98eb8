"""Jitted KV-cache generation: prefill, then a `lax.while_loop` of one-token decode steps.

Dimensions: B batch, P prompt length (left-padded), N max new tokens, S = P + N cache
slots, V padded vocabulary.

Everything is static-shaped and free of host callbacks, so `sample` can run inside
another jitted program (the PPO iteration). Log-probs are those of the tempered,
unfiltered distribution, log_softmax(logits / T)[token] (T = 1 for greedy), exactly
what `response_log_probs` recomputes from one full forward pass: on the first PPO
minibatch the probability ratio is 1. Top-k / top-p only choose which tokens can be
drawn. Text comes from `Tokenizer.decode_responses(samples.tokens_BxN)`.
"""
from typing import NamedTuple

import jax
import jax.numpy as jnp

from rlhf_jax.models import gpt


class Samples(NamedTuple):
  tokens_BxN: jax.Array      # int32 generated ids; pad_id after a row's EOS
  log_probs_BxN: jax.Array   # float32 log_softmax(logits / T)[token]; 0 where mask is 0
  mask_BxN: jax.Array        # int32 1 on generated tokens up to and including the row's EOS
  lengths_B: jax.Array       # int32 number of generated tokens (EOS included) = mask.sum(1)
  eos_B: jax.Array           # bool whether the row ended with EOS (else it ran out of budget)


def _tempered_log_probs(logits_BxV, temperature: float):
  """log_softmax(logits / T) in fp32; T = 0 (greedy) scores with T = 1."""
  return jax.nn.log_softmax(logits_BxV.astype(jnp.float32) / (temperature or 1.0), axis=-1)


def filter_logits(logits_BxV, *, top_k: int = 0, top_p: float = 1.0):
  """-inf on tokens outside the top k and outside the nucleus; 0 / 1.0 turn a filter off.

  Nucleus: sorted by probability, a token stays while the probability mass before it
  is < top_p (the most likely token always stays). Ties at a threshold stay together.
  """
  if top_k:
    kth_B = jax.lax.top_k(logits_BxV, top_k)[0][:, -1]
    logits_BxV = jnp.where(logits_BxV < kth_B[:, None], -jnp.inf, logits_BxV)
  if top_p < 1.0:
    sorted_BxV = jnp.sort(logits_BxV, axis=-1)[:, ::-1]
    probs_BxV = jax.nn.softmax(sorted_BxV, axis=-1)
    mass_before_BxV = jnp.cumsum(probs_BxV, axis=-1) - probs_BxV
    kept_B = jnp.sum(mass_before_BxV < top_p, axis=-1)
    threshold_B = jnp.take_along_axis(sorted_BxV, kept_B[:, None] - 1, axis=-1)
    logits_BxV = jnp.where(logits_BxV < threshold_B, -jnp.inf, logits_BxV)
  return logits_BxV


def _argmax(x_BxV):
  """First index of each row's maximum, as two plain reductions (XLA:CPU runs the
  variadic reduce behind jnp.argmax several times slower)."""
  v = x_BxV.shape[-1]
  is_max_BxV = x_BxV == jnp.max(x_BxV, axis=-1, keepdims=True)
  return jnp.minimum(jnp.min(jnp.where(is_max_BxV, jnp.arange(v), v), axis=-1), v - 1)


def choose(logits_BxV, rng, *, temperature: float, top_k: int, top_p: float):
  """Next tokens [B] and their log_softmax(logits / T) [B]; T = 0 is greedy (argmax)."""
  log_probs_BxV = _tempered_log_probs(logits_BxV, temperature)
  if temperature == 0:
    token_B = _argmax(logits_BxV)
  else:
    # Filtering the tempered log-probs equals filtering logits (same order, same softmax).
    allowed_BxV = filter_logits(log_probs_BxV, top_k=top_k, top_p=top_p)
    # Gumbel-max: argmax(log p + Gumbel noise) is a draw from p (jax.random.categorical).
    token_B = _argmax(allowed_BxV + jax.random.gumbel(rng, allowed_BxV.shape))
  token_B = token_B.astype(jnp.int32)
  return token_B, jnp.take_along_axis(log_probs_BxV, token_B[:, None], axis=-1)[:, 0]


def _check(model: gpt.GPT, prompt_len: int, max_new_tokens: int, temperature, top_k, top_p):
  cfg = model.cfg
  if max_new_tokens < 1:
    raise ValueError(f"max_new_tokens={max_new_tokens}; generate at least 1 token")
  if prompt_len + max_new_tokens > cfg.max_len:
    raise ValueError(f"prompt length {prompt_len} + max_new_tokens {max_new_tokens} = "
                     f"{prompt_len + max_new_tokens} exceeds the model's max_len={cfg.max_len}; "
                     f"shorten the prompts or generate fewer tokens")
  if temperature < 0 or top_k < 0 or not 0 < top_p <= 1:
    raise ValueError(f"temperature={temperature}, top_k={top_k}, top_p={top_p}: need "
                     f"temperature >= 0, top_k >= 0 and 0 < top_p <= 1")


def sample(model: gpt.GPT, params, prompt_BxP, prompt_mask_BxP, rng, *, max_new_tokens: int,
           eos_id: int, pad_id: int, temperature: float = 1.0, top_k: int = 0,
           top_p: float = 1.0) -> Samples:
  """Up to `max_new_tokens` tokens per left-padded prompt (prompt_mask 1 = real token).

  Pure; jit it with the keyword settings static. Rows stop at their first EOS (kept,
  masked 1); afterwards they hold pad_id, mask 0, log-prob 0. The loop exits early once
  every row has ended. Token i is drawn with `fold_in(rng, i)`. Each prompt needs at
  least one real token. `params` may be plain or `nn.Partitioned`-boxed.
  """
  b, p = prompt_BxP.shape
  _check(model, p, max_new_tokens, temperature, top_k, top_p)
  settings = dict(temperature=temperature, top_k=top_k, top_p=top_p)
  variables = {"params": params}
  n = max_new_tokens

  def logits_and_cache(tokens_BxT, valid_BxT, cache):
    h_BxTxD, cache = model.apply(variables, tokens_BxT, valid_BxT=valid_BxT, cache=cache,
                                 method=gpt.GPT.hidden_states)
    logits_Bx1xV = model.apply(variables, h_BxTxD[:, -1:], method=gpt.GPT.lm_logits)
    return logits_Bx1xV[:, 0], cache

  cache = gpt.init_cache(model.cfg, b, p + n)
  logits_BxV, cache = logits_and_cache(prompt_BxP, prompt_mask_BxP.astype(bool), cache)
  token_B, log_prob_B = choose(logits_BxV, jax.random.fold_in(rng, 0), **settings)
  tokens_BxN = jnp.full((b, n), pad_id, jnp.int32).at[:, 0].set(token_B)
  log_probs_BxN = jnp.zeros((b, n), jnp.float32).at[:, 0].set(log_prob_B)
  mask_BxN = jnp.zeros((b, n), jnp.int32).at[:, 0].set(1)
  done_B = token_B == eos_id

  def cond(carry):
    i, _, done_B, *_ = carry
    return (i < n) & ~jnp.all(done_B)

  def body(carry):
    i, token_B, done_B, cache, tokens_BxN, log_probs_BxN, mask_BxN = carry
    # Rows that have ended feed a pad (masked out of the cache) and record nothing.
    live_B = ~done_B
    logits_BxV, cache = logits_and_cache(token_B[:, None], live_B[:, None], cache)
    token_B, log_prob_B = choose(logits_BxV, jax.random.fold_in(rng, i), **settings)
    token_B = jnp.where(live_B, token_B, pad_id)
    tokens_BxN = jax.lax.dynamic_update_slice_in_dim(tokens_BxN, token_B[:, None], i, 1)
    log_probs_BxN = jax.lax.dynamic_update_slice_in_dim(
        log_probs_BxN, jnp.where(live_B, log_prob_B, 0.0)[:, None], i, 1)
    mask_BxN = jax.lax.dynamic_update_slice_in_dim(
        mask_BxN, live_B.astype(jnp.int32)[:, None], i, 1)
    return (i + 1, token_B, done_B | (token_B == eos_id), cache, tokens_BxN, log_probs_BxN,
            mask_BxN)

  carry = (jnp.int32(1), token_B, done_B, cache, tokens_BxN, log_probs_BxN, mask_BxN)
  _, _, done_B, _, tokens_BxN, log_probs_BxN, mask_BxN = jax.lax.while_loop(cond, body, carry)
  return Samples(tokens_BxN, log_probs_BxN, mask_BxN, mask_BxN.sum(axis=1), done_B)


def response_log_probs(model: gpt.GPT, params, prompt_BxP, prompt_mask_BxP, response_BxN,
                       response_mask_BxN, *, temperature: float = 1.0) -> jax.Array:
  """log_softmax(logits / T)[response token] [B, N] from one forward over prompt + response.

  Positions skip pads; 0 where response_mask is 0; T = 0 scores with T = 1 (as `sample`).
  The logits predicting response token j sit at column P - 1 + j.
  """
  p, n = prompt_BxP.shape[1], response_BxN.shape[1]
  tokens_BxT = jnp.concatenate([prompt_BxP, response_BxN], axis=1).astype(jnp.int32)
  valid_BxT = jnp.concatenate([prompt_mask_BxP, response_mask_BxN], axis=1).astype(bool)
  logits_BxTxV, _ = model.apply({"params": params}, tokens_BxT, valid_BxT=valid_BxT)
  log_probs_BxNxV = _tempered_log_probs(logits_BxTxV[:, p - 1:p - 1 + n], temperature)
  picked_BxN = jnp.take_along_axis(log_probs_BxNxV, response_BxN[..., None].astype(jnp.int32),
                                   axis=-1)[..., 0]
  return jnp.where(response_mask_BxN.astype(bool), picked_BxN, 0.0)
