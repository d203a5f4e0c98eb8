"""Stage 4, PPO(-ptx): the SFT policy learns to raise a frozen reward model's score while a
per-token KL penalty keeps it near the reference (SFT) model (Ziegler et al., 2019;
Ouyang et al., 2022). One iteration is one `Task.step`, one compiled program:

  1. generate: `sampling.sample` draws a response to each left-padded prompt (KV cache,
     inside the jit), with log π_old = log_softmax(logits / T)[token] per token;
  2. score: the RM reads prompt + response (positions skip pads) at the last real token
     (the EOS, or the last token when the budget ran out), gain·r + bias;
  3. reference and values: log π_ref from one forward of the reference model, V_t from
     the critic at the state before each response token (column P − 1 + t);
  4. rewards r_t = −β·KL_t (k1 by default), plus the processed score at the last token;
     GAE (γ, λ) as a reverse scan; advantages whitened over real tokens;
  5. update: `lax.scan` over epochs × shuffled minibatches of the clipped policy loss
     (− entropy bonus, + γ_ptx · pretraining loss) and the clipped value loss, each
     minibatch one optimizer step of the policy and of the critic, accumulated over
     `optim.grad_accum_steps` micro-batches; then the KL controller updates β.

Critic-free (ppo.algorithm = grpo | rloo): G = ppo.group_size responses per prompt (each
prompt's copies on adjacent rows); no critic (the state's `critic` is ()); step 4 takes each
response's return R = processed score − β·Σ_t KL_t (or just the score with ppo.kl_in=loss,
which adds β·k3(π, π_ref) to the loss) and its advantage from its group
(`rl.group_advantages`) on every token. Metrics are then named grpo/… or rloo/…. Switches
shared by all three: ppo.loss_agg (token, sequence, constant: `rl.loss_weights`),
ppo.cliprange_high (clip-higher), ppo.ratio_level (sequence: GSPO), ppo.overlong_buffer.

Batch: {"tokens", "mask": int32[B, P] left-padded prompts, "index": int32[B]} and, with
PPO-ptx, "ptx": int32[B_ptx, T+1] corpus windows. Dropout is off in every model.

Metrics (ppo/): score (normalised RM score), kl (mean per-response Σ_t KL_t, the
configured estimator), kl_coef (β used), reward (score − β·kl), entropy, approx_kl,
clipfrac, ratio_mean, ratio_max, value_loss, value_clipfrac, policy_loss, explained_variance,
response_length, eos_rate, first_minibatch_ratio_error (max |ρ − 1| over the first
minibatch's real tokens: sampler and trainer log-probs agree), ptx_loss. Time spent
generating vs updating cannot be split inside one program; `train/steps_per_sec` covers
the whole iteration and `benchmarks/ppo_iteration.py` times the pieces separately.

Dimensions: B responses (prompts × group_size), P prompt length, N response length,
T = P + N.
"""
import functools
import json
import logging
import os
from typing import Any, NamedTuple

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from rlhf_jax import (checkpoint, evaluation, losses, optim, rl, sampling,
                      tokenizer as tokenizer_lib)
from rlhf_jax.data import pipeline, store
from rlhf_jax.errors import UserError
from rlhf_jax.models import gpt, heads
from rlhf_jax.tasks import base, lm, sft
from rlhf_jax.tasks.base import Task, TrainState

PyTree = Any


@flax.struct.dataclass
class PPOState:
  """Everything one PPO run carries: one pytree, one checkpoint.

  step: iterations done. policy / critic: params + optimizer state (their own `step`
  counts optimizer updates). reference_params, reward_params: frozen. reward_bias,
  reward_gain: the RM's normalisation. kl_coef: β. score_moments: running statistics of
  the scores. ema_params: EMA of the policy (() when off).
  """
  step: jax.Array
  policy: TrainState
  critic: TrainState
  reference_params: PyTree
  reward_params: PyTree
  reward_bias: jax.Array
  reward_gain: jax.Array
  kl_coef: jax.Array
  score_moments: rl.RunningMoments
  ema_params: PyTree = ()


class Models(NamedTuple):
  policy: gpt.GPT            # also the reference
  reward: heads.RewardModel
  critic: heads.RewardModel | None  # None: critic-free (grpo, rloo)


class Rollout(NamedTuple):
  """One iteration's experience; every field has the batch as its leading axis."""
  prompt_BxP: jax.Array
  prompt_mask_BxP: jax.Array
  response_BxN: jax.Array
  mask_BxN: jax.Array
  log_probs_BxN: jax.Array    # log π_old (the sampler's)
  ref_log_probs_BxN: jax.Array  # log π_ref
  values_BxN: jax.Array       # V_old (0 without a critic)
  rewards_BxN: jax.Array      # −β·KL_t, plus the processed score at the last token
  advantages_BxN: jax.Array
  returns_BxN: jax.Array      # value targets (0 without a critic)


# ---------------------------------------------------------------------------- forward passes


def sequences(prompt_BxP, prompt_mask_BxP, response_BxN, mask_BxN):
  """(tokens_BxT, valid_BxT) of left-padded prompt + right-padded response."""
  tokens_BxT = jnp.concatenate([prompt_BxP, response_BxN], axis=1).astype(jnp.int32)
  valid_BxT = jnp.concatenate([prompt_mask_BxP, mask_BxN], axis=1).astype(bool)
  return tokens_BxT, valid_BxT


def reward_scores(model: heads.RewardModel, params, tokens_BxT, valid_BxT):
  """Raw RM rewards [B]: the value at each row's last real token. Positions skip pads, so a
  left-padded row scores as the same text right-padded (the RM's training layout)."""
  values_BxT = model.apply({"params": params}, tokens_BxT, valid_BxT=valid_BxT)
  return heads.last_token_values(values_BxT, valid_BxT)


def response_values(model: heads.RewardModel, params, tokens_BxT, valid_BxT, p: int):
  """V [B, N]: the critic's value of the state before response token j (column P − 1 + j)."""
  values_BxT = model.apply({"params": params}, tokens_BxT, valid_BxT=valid_BxT)
  n = tokens_BxT.shape[1] - p
  return values_BxT[:, p - 1:p - 1 + n]


def policy_outputs(model: gpt.GPT, params, tokens_BxT, valid_BxT, p: int, temperature: float):
  """(log π [B, N], entropy [B, N]) of the response tokens, both of softmax(logits / T).

  log_softmax(logits / T) in fp32 exactly as `sampling.sample` computes it (T = 0 → 1).
  """
  n = tokens_BxT.shape[1] - p
  logits_BxTxV, _ = model.apply({"params": params}, tokens_BxT, valid_BxT=valid_BxT)
  logits_BxNxV = logits_BxTxV[:, p - 1:p - 1 + n]
  temperature = temperature or 1.0
  log_probs_BxNxV = jax.nn.log_softmax(logits_BxNxV.astype(jnp.float32) / temperature, axis=-1)
  picked_BxN = jnp.take_along_axis(log_probs_BxNxV, tokens_BxT[:, p:, None], axis=-1)[..., 0]
  return picked_BxN, losses.entropy(logits_BxNxV, temperature)


def token_count_scores(response_BxN, mask_BxN, token_ids: tuple[int, ...]):
  """Score = number of response tokens that are one of `token_ids` (the `token_count` reward,
  a known reward standing in for the RM in tests)."""
  hits_BxN = jnp.isin(response_BxN, jnp.asarray(token_ids)) & mask_BxN.astype(bool)
  return jnp.sum(hits_BxN, axis=1).astype(jnp.float32)


def parse_reward(spec: str) -> tuple[int, ...] | None:
  """None for "model"; the token ids of "token_count:<id>[,<id>...]"."""
  if spec == "model":
    return None
  ids = spec.split(":", 1)[1].split(",") if spec.startswith("token_count:") else []
  if not ids or not all(i.strip().isdigit() for i in ids):
    raise UserError(f"--config.ppo.reward={spec!r}: use 'model' or "
                    f"'token_count:<token id>[,<id>...]'")
  return tuple(int(i) for i in ids)


# ---------------------------------------------------------------------------- the iteration


class Pieces(NamedTuple):
  """The iteration's parts as pure functions (the benchmark times them one by one)."""
  generate: Any    # (state, prompt, prompt_mask, rng) -> sampling.Samples
  score: Any       # (state, prompt, prompt_mask, response, mask) -> normalised score [B]
  reference: Any   # (state, prompt, prompt_mask, response, mask) -> log π_ref [B, N]
  rollout: Any     # (state, prompt, prompt_mask, samples) -> (Rollout, moments, metrics)
  loss: Any        # ((policy, critic params), {"rollout": Rollout[, "ptx"]}, totals) -> (loss, aux)
  update: Any      # (state, rollout, ptx, rng) -> (state, metrics)
  step: Any        # (state, batch, rng) -> (state, metrics)


def _summed_grads(loss_fn, params, batch, num_micro: int):
  """Σ over `num_micro` micro-batches of ∇loss_fn and of its aux (sums, maxima).

  loss_fn(params, micro) -> (loss, (sums, maxima)) with the loss already divided by the
  minibatch's totals, so the summed gradient is the whole minibatch's.
  """
  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
  if num_micro == 1:
    (_, (sums, maxima)), grads = grad_fn(params, batch)
    return grads, sums, maxima
  micro = jax.tree.map(functools.partial(base.split_microbatches, num_micro=num_micro), batch)

  def body(carry, microbatch):
    (_, (sums, maxima)), grads = grad_fn(params, microbatch)
    total_grads, total_sums, total_maxima = carry
    return (jax.tree.map(jnp.add, total_grads, grads), jax.tree.map(jnp.add, total_sums, sums),
            jax.tree.map(jnp.maximum, total_maxima, maxima)), None

  (_, (sums0, maxima0)), grads0 = jax.eval_shape(grad_fn, params,
                                                 jax.tree.map(lambda x: x[0], micro))
  zeros = lambda tree: jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), tree)
  init = (zeros(grads0), zeros(sums0), jax.tree.map(lambda x: jnp.full(x.shape, -jnp.inf),
                                                    maxima0))
  (grads, sums, maxima), _ = jax.lax.scan(body, init, micro)
  return grads, sums, maxima


def warn_if_far(metrics: dict, ratio_warn: float, prefix: str = "ppo") -> None:
  """Host-side check of a logged row: a warning when KL < 0 or the ratio runs away.

  Run by the loop on each logged row (`Task.check_metrics`), not inside the step: a
  callback in the compiled step would cost a host round trip every iteration.
  """
  kl, ratio_max = metrics.get(f"{prefix}/kl", 0.0), metrics.get(f"{prefix}/ratio_max", 1.0)
  if kl < 0 or ratio_max > ratio_warn:
    logging.warning("%s: mean KL %.4g < 0 or max ratio %.4g > %.4g: the policy moved far "
                    "from the sampler or the reference; lower the learning rate or raise β",
                    prefix.upper(), kl, ratio_max, ratio_warn)


# Loss terms already divided by their minibatch normaliser; the other sums are per token.
_NORMALISED = ("policy_loss", "kl_loss", "ptx_loss")


def minibatch_totals(rollout: Rollout, kl_coef) -> dict:
  """What a minibatch's loss is normalised by (its micro-batches share it): real tokens,
  rows, and β."""
  return {"tokens": jnp.maximum(jnp.sum(rollout.mask_BxN), 1).astype(jnp.float32),
          "rows": float(rollout.mask_BxN.shape[0]), "kl_coef": kl_coef}


def make_pieces(models: Models, cfg, *, eos_id: int, pad_id: int, policy_tx, critic_tx,
                num_micro: int, policy_lr) -> Pieces:
  """The iteration for `models` and the `config.ppo` block `cfg` (cfg.algorithm: ppo, or the
  critic-free grpo / rloo, whose metrics are named grpo/… and rloo/…)."""
  count_token = parse_reward(cfg.reward)
  temperature = cfg.temperature
  prefix, group = cfg.algorithm, cfg.group_size
  has_critic = cfg.algorithm == "ppo"

  def generate(state, prompt_BxP, prompt_mask_BxP, rng):
    return sampling.sample(models.policy, state.policy.params, prompt_BxP, prompt_mask_BxP, rng,
                           max_new_tokens=cfg.response_len, eos_id=eos_id, pad_id=pad_id,
                           temperature=temperature)

  def score(state, prompt_BxP, prompt_mask_BxP, response_BxN, mask_BxN):
    if count_token is not None:
      return token_count_scores(response_BxN, mask_BxN, count_token)
    tokens_BxT, valid_BxT = sequences(prompt_BxP, prompt_mask_BxP, response_BxN, mask_BxN)
    raw_B = reward_scores(models.reward, state.reward_params, tokens_BxT, valid_BxT)
    return state.reward_gain * raw_B + state.reward_bias

  def reference(state, prompt_BxP, prompt_mask_BxP, response_BxN, mask_BxN):
    return sampling.response_log_probs(models.policy, state.reference_params, prompt_BxP,
                                       prompt_mask_BxP, response_BxN, mask_BxN,
                                       temperature=temperature)

  def rollout(state, prompt_BxP, prompt_mask_BxP, samples: sampling.Samples):
    """B = prompts × group_size rows, each group's rows next to each other."""
    p = prompt_BxP.shape[1]
    response_BxN, mask_BxN = samples.tokens_BxN, samples.mask_BxN
    real_BxN = mask_BxN.astype(jnp.float32)
    tokens_BxT, valid_BxT = sequences(prompt_BxP, prompt_mask_BxP, response_BxN, mask_BxN)
    score_B = score(state, prompt_BxP, prompt_mask_BxP, response_BxN, mask_BxN)
    ref_log_probs_BxN = reference(state, prompt_BxP, prompt_mask_BxP, response_BxN, mask_BxN)
    kl_BxN = rl.kl_estimate(samples.log_probs_BxN, ref_log_probs_BxN, cfg.kl_estimator)
    kl_BxN = kl_BxN * real_BxN
    kl_B = jnp.sum(kl_BxN, axis=1)

    # The score that enters the reward: penalties (no EOS, overlong), normalisation, clipping.
    shaped_B = score_B - cfg.missing_eos_penalty * (~samples.eos_B).astype(jnp.float32)
    if cfg.overlong_buffer > 0:
      shaped_B = shaped_B + rl.overlong_penalty(samples.lengths_B, cfg.response_len,
                                                cfg.overlong_buffer)
    moments = state.score_moments.update(shaped_B)
    if cfg.score_norm == "running":
      shaped_B = (shaped_B - moments.mean) * jax.lax.rsqrt(moments.var + 1e-8)
    elif cfg.score_norm == "batch":
      shaped_B = (shaped_B - jnp.mean(shaped_B)) * jax.lax.rsqrt(jnp.var(shaped_B) + 1e-8)
    if cfg.score_clip > 0:
      shaped_B = jnp.clip(shaped_B, -cfg.score_clip, cfg.score_clip)

    penalty_BxN = state.kl_coef * kl_BxN if cfg.kl_in == "reward" else jnp.zeros_like(kl_BxN)
    last_BxN = jax.nn.one_hot(heads.last_token_index(mask_BxN), mask_BxN.shape[1])
    rewards_BxN = -penalty_BxN + last_BxN * shaped_B[:, None]
    metrics = {}
    if has_critic:
      values_BxN = response_values(models.critic, state.critic.params, tokens_BxT, valid_BxT,
                                   p) * real_BxN
      advantages_BxN, returns_BxN = rl.gae(rewards_BxN, values_BxN, mask_BxN, cfg.gamma,
                                           cfg.lam)
      metrics.update({
          f"{prefix}/explained_variance": rl.explained_variance(values_BxN, returns_BxN,
                                                                mask_BxN),
          f"{prefix}/value_mean": rl.masked_mean(values_BxN, mask_BxN)})
    else:  # the episode's return (γ = 1) against its group's
      advantage_B = rl.group_advantages(jnp.sum(rewards_BxN, axis=1), group, cfg.algorithm,
                                        cfg.group_std)
      advantages_BxN = advantage_B[:, None] * real_BxN
      values_BxN = returns_BxN = jnp.zeros_like(real_BxN)
    if cfg.whiten_advantages:
      advantages_BxN = rl.masked_whiten(advantages_BxN, mask_BxN)
    metrics.update({
        f"{prefix}/score": jnp.mean(score_B), f"{prefix}/kl": jnp.mean(kl_B),
        f"{prefix}/kl_coef": state.kl_coef,
        f"{prefix}/reward": jnp.mean(score_B - state.kl_coef * kl_B),
        f"{prefix}/shaped_score": jnp.mean(shaped_B),
        f"{prefix}/response_length": jnp.mean(samples.lengths_B.astype(jnp.float32)),
        f"{prefix}/eos_rate": jnp.mean(samples.eos_B.astype(jnp.float32)),
        "train/tokens": jnp.sum(real_BxN)})
    experience = Rollout(prompt_BxP, prompt_mask_BxP, response_BxN, mask_BxN,
                         samples.log_probs_BxN, ref_log_probs_BxN, values_BxN, rewards_BxN,
                         advantages_BxN, returns_BxN)
    return experience, moments, metrics

  def minibatch_loss(params, micro, totals):
    """Policy (+ critic) loss of one micro-batch, normalised by its minibatch's totals."""
    policy_params, critic_params = params
    x = micro["rollout"]
    p = x.prompt_BxP.shape[1]
    tokens_BxT, valid_BxT = sequences(x.prompt_BxP, x.prompt_mask_BxP, x.response_BxN, x.mask_BxN)
    log_probs_BxN, entropy_BxN = policy_outputs(models.policy, policy_params, tokens_BxT,
                                                valid_BxT, p, temperature)
    weights_BxN = rl.loss_weights(x.mask_BxN, cfg.loss_agg, totals["rows"], totals["tokens"],
                                  cfg.response_len)
    pg_loss, _, pg_aux = losses.ppo_policy_loss(
        log_probs_BxN, x.log_probs_BxN, x.advantages_BxN, x.mask_BxN, cfg.cliprange,
        clip_high=cfg.cliprange_high or None, sequence_ratio=cfg.ratio_level == "sequence",
        weights_BxN=weights_BxN)
    entropy_sum = rl.masked_sum(entropy_BxN, x.mask_BxN)
    loss = pg_loss - cfg.entropy_coef * entropy_sum / totals["tokens"]
    sums = {"policy_loss": pg_loss, "entropy": entropy_sum,
            "clipfrac": pg_aux["clipfrac"], "approx_kl": pg_aux["approx_kl"],
            "ratio": pg_aux["ratio"]}
    if has_critic:
      values_BxN = response_values(models.critic, critic_params, tokens_BxT, valid_BxT, p)
      vf_sum, _, vf_aux = losses.ppo_value_loss(values_BxN, x.values_BxN, x.returns_BxN,
                                                x.mask_BxN, cfg.cliprange_value)
      loss = loss + cfg.vf_coef * vf_sum / totals["tokens"]
      sums.update(value_loss=vf_sum, value_clipfrac=vf_aux["clipfrac"])
    if cfg.kl_in == "loss":  # k3(π, π_ref) per token, aggregated as the policy loss
      kl_loss = jnp.sum(weights_BxN * rl.kl_estimate(log_probs_BxN, x.ref_log_probs_BxN, "k3"))
      loss = loss + totals["kl_coef"] * kl_loss
      sums["kl_loss"] = kl_loss
    ratio_error = jnp.max(jnp.where(x.mask_BxN.astype(bool),
                                    jnp.abs(jnp.exp(log_probs_BxN - x.log_probs_BxN) - 1), 0.0))
    maxima = {"ratio_max": pg_aux["ratio_max"], "ratio_error": ratio_error}
    if "ptx" in micro:
      ptx_sum, _ = lm.next_token_loss_sum(models.policy, policy_params, micro["ptx"])
      loss = loss + cfg.ptx_coef * ptx_sum / totals["ptx_tokens"]
      sums["ptx_loss"] = ptx_sum / totals["ptx_tokens"]
    return loss, (sums, maxima)

  def update(state, experience: Rollout, ptx_tokens, rng):
    b = experience.mask_BxN.shape[0]
    m = cfg.num_minibatches
    ptx_chunks = None if ptx_tokens is None else ptx_tokens.reshape(m, -1, ptx_tokens.shape[1])

    def minibatch_step(carry, inputs):
      policy, critic, ema = carry
      rows_b, chunk = inputs
      mini = {"rollout": jax.tree.map(lambda a: a[rows_b], experience)}
      totals = minibatch_totals(mini["rollout"], state.kl_coef)
      if ptx_chunks is not None:
        mini["ptx"] = ptx_chunks[chunk]
        totals["ptx_tokens"] = float(ptx_chunks.shape[1] * (ptx_chunks.shape[2] - 1))
      critic_params = critic.params if has_critic else ()
      grads, sums, maxima = _summed_grads(
          lambda params, micro: minibatch_loss(params, micro, totals),
          (policy.params, critic_params), mini, num_micro)
      policy_grads, critic_grads = grads
      new_policy = policy.apply_gradients(policy_grads, policy_tx)
      new_critic = critic.apply_gradients(critic_grads, critic_tx) if has_critic else critic
      if cfg.ema_decay > 0:
        ema = jax.tree.map(lambda e, w: cfg.ema_decay * e + (1 - cfg.ema_decay) * w, ema,
                           new_policy.params)
      stats = {name: value if name in _NORMALISED else value / totals["tokens"]
               for name, value in sums.items()}
      stats.update(maxima, grad_norm=optax.tree.norm(policy_grads))
      return (new_policy, new_critic, ema), stats

    def epoch(carry, e):
      order_MxR = jax.random.permutation(jax.random.fold_in(rng, e), b).reshape(m, -1)
      return jax.lax.scan(minibatch_step, carry, (order_MxR, jnp.arange(m)))

    carry = (state.policy, state.critic, state.ema_params)
    (policy, critic, ema), stats = jax.lax.scan(epoch, carry, jnp.arange(cfg.epochs))
    # stats: [epochs, minibatches] each.
    metrics = {f"{prefix}/{name}": jnp.mean(value) for name, value in stats.items()
               if name not in ("ratio_max", "ratio_error", "grad_norm")}
    metrics[f"{prefix}/ratio_mean"] = metrics.pop(f"{prefix}/ratio")
    metrics[f"{prefix}/ratio_max"] = jnp.max(stats["ratio_max"])
    metrics[f"{prefix}/first_minibatch_ratio_error"] = stats["ratio_error"][0, 0]
    metrics["train/grad_norm"] = jnp.mean(stats["grad_norm"])
    metrics["train/lr"] = policy_lr(state.policy.step)
    return state.replace(policy=policy, critic=critic, ema_params=ema), metrics

  def step(state, batch, rng):
    generate_rng, update_rng = jax.random.split(rng)
    # group_size responses per prompt: each prompt's copies on adjacent rows.
    prompt_BxP = jnp.repeat(batch["tokens"], group, axis=0)
    prompt_mask_BxP = jnp.repeat(batch["mask"], group, axis=0)
    samples = generate(state, prompt_BxP, prompt_mask_BxP, generate_rng)
    experience, moments, metrics = rollout(state, prompt_BxP, prompt_mask_BxP, samples)
    state, update_metrics = update(state, experience, batch.get("ptx"), update_rng)
    metrics.update(update_metrics)
    kl_coef = rl.update_kl_coef(state.kl_coef, metrics[f"{prefix}/kl"], prompt_BxP.shape[0],
                                target=cfg.target_kl, horizon=cfg.kl_horizon)
    return state.replace(step=state.step + 1, kl_coef=kl_coef, score_moments=moments), metrics

  return Pieces(generate, score, reference, rollout, minibatch_loss, update, step)


# ---------------------------------------------------------------------------- state


def init_fn(models: Models, cfg, policy_tx, critic_tx, seq_len: int):
  """rng → fresh PPOState: random policy (= reference), random RM, critic per ppo.critic_from
  (none for the critic-free algorithms: `critic` is then ())."""
  def init(rng):
    policy_rng, reward_rng, critic_rng = jax.random.split(rng, 3)
    dummy_1xT = jnp.zeros((1, seq_len), jnp.int32)
    policy_params = models.policy.init(policy_rng, dummy_1xT)["params"]
    reward_params = models.reward.init(reward_rng, dummy_1xT)["params"]
    if models.critic is None:
      critic = ()
    elif cfg.critic_from == "reward":
      critic = TrainState.create(jax.tree.map(jnp.copy, reward_params), critic_tx)
    else:
      fresh = models.critic.init(critic_rng, dummy_1xT)["params"]
      critic = TrainState.create({"backbone": jax.tree.map(jnp.copy, policy_params),
                                  "head": jax.tree.map(jnp.zeros_like, fresh["head"])},
                                 critic_tx)
    return PPOState(
        step=jnp.zeros((), jnp.int32),
        policy=TrainState.create(policy_params, policy_tx),
        critic=critic,
        reference_params=jax.tree.map(jnp.copy, policy_params),
        reward_params=reward_params,
        reward_bias=jnp.zeros((), jnp.float32), reward_gain=jnp.ones((), jnp.float32),
        kl_coef=jnp.asarray(cfg.kl_coef, jnp.float32),
        score_moments=rl.RunningMoments.create(),
        ema_params=jax.tree.map(jnp.copy, policy_params) if cfg.ema_decay > 0 else ())
  return init


def _copy_like(new_tree, like_tree):
  """A fresh copy of `new_tree` placed like `like_tree` (donation needs distinct buffers)."""
  return jax.tree.map(lambda new, like: jax.device_put(jnp.array(new, copy=True), like.sharding),
                      new_tree, like_tree)


def warm_start_fn(config, mesh):
  """state → state with init_from's GPT as policy, reference (and EMA), ppo.reward_from's RM
  and normalisation, and the critic per ppo.critic_from (a copy of the RM, or the policy's
  trunk with a zero head). Called by the loop only when init_from is set."""
  cfg = config.ppo

  def warm_start(state):
    like = state.policy.params
    policy_params = checkpoint.restore_params(
        config.init_from, jax.eval_shape(lambda: like), jax.tree.map(lambda x: x.sharding, like))
    state = state.replace(policy=state.policy.replace(params=policy_params),
                          reference_params=_copy_like(policy_params, like))
    if cfg.ema_decay > 0:
      state = state.replace(ema_params=_copy_like(policy_params, like))
    if cfg.reward_from:
      from rlhf_jax.tasks import reward  # pylint: disable=g-import-not-at-top
      _, reward_params, norm, _ = reward.load_reward_model(cfg.reward_from, mesh)
      replicated = state.reward_bias.sharding
      state = state.replace(
          reward_params=_copy_like(reward_params, state.reward_params),
          reward_bias=jax.device_put(jnp.float32(norm.bias), replicated),
          reward_gain=jax.device_put(jnp.float32(norm.gain), replicated))
    if cfg.algorithm != "ppo":  # critic-free
      return state
    if cfg.critic_from == "reward":
      critic_params = _copy_like(state.reward_params, state.critic.params)
    else:
      critic_params = {"backbone": _copy_like(policy_params, state.critic.params["backbone"]),
                       "head": state.critic.params["head"]}
    return state.replace(critic=state.critic.replace(params=critic_params))
  return warm_start


# ---------------------------------------------------------------------------- data


class _WithPtx:
  """Prompt batches with a "ptx" entry of corpus windows; both positions ride in the state."""

  def __init__(self, prompts, ptx):
    self._prompts, self._ptx = prompts, ptx

  def __iter__(self):
    return self

  def __next__(self):
    return {**next(self._prompts), "ptx": next(self._ptx)["tokens"]}

  def get_state(self) -> dict:
    return {"prompts": self._prompts.get_state(), "ptx": self._ptx.get_state()}


# ---------------------------------------------------------------------------- evaluation


def make_evaluate(config, models: Models, tok, mesh, records: list[dict], gold: bool,
                  samples_path: str):
  """evaluate(state, rng): RM score (eval/score) of the policy's responses to `records`
  (the EMA policy when on), and with gold-judge metas gold/* of the policy and of the
  reference (gold_sft/*), the paired difference and the win rate against the reference."""
  from rlhf_jax.tasks import reward  # pylint: disable=g-import-not-at-top
  gold_cfg, sampling_cfg = config.gold_eval, config.sampling
  max_prompt_len = models.policy.cfg.max_len - sampling_cfg.max_new_tokens
  prompt_NxP, prompt_mask_NxP = evaluation.chat_prompts(tok, records, max_prompt_len)
  score_fn = jax.jit(functools.partial(reward.response_scores, models.reward))
  metas = [r.get("meta", {}) for r in records]
  reference_scores = {}

  def respond(params, rng):
    ids = evaluation.generate_ids(
        models.policy, params, prompt_NxP, prompt_mask_NxP, rng, mesh=mesh,
        batch_size=gold_cfg.batch_size, eos_id=tok.eos_id, pad_id=tok.pad_id,
        max_new_tokens=sampling_cfg.max_new_tokens, temperature=sampling_cfg.temperature,
        top_k=sampling_cfg.top_k, top_p=sampling_cfg.top_p)
    return ids, tok.decode_responses(ids)

  def rm_scores(state, ids_NxN):
    # Right-padded rows prompt + response, as the RM was trained.
    mask_NxN = evaluation.response_mask(ids_NxN, tok.eos_id)
    rows, row_masks = [], []
    length = prompt_NxP.shape[1] + ids_NxN.shape[1]
    for prompt, pmask, ids, mask in zip(prompt_NxP, prompt_mask_NxP, ids_NxN, mask_NxN):
      row = np.concatenate([prompt[pmask > 0], ids[mask > 0]])
      rows.append(np.pad(row, (0, length - len(row)), constant_values=tok.pad_id))
      row_masks.append(np.pad(np.ones(len(row), np.int32), (0, length - len(row))))
    raw = reward.device_scores(score_fn, state.reward_params, np.stack(rows)[:, None],
                               np.stack(row_masks)[:, None], gold_cfg.batch_size, mesh)[:, 0]
    gain, bias = jax.device_get((state.reward_gain, state.reward_bias))
    return float(gain) * raw + float(bias)

  def evaluate(state, rng):
    step = int(jax.device_get(state.step))
    params = state.ema_params if config.ppo.ema_decay > 0 else state.policy.params
    ids, texts = respond(params, rng)
    rm = rm_scores(state, ids)
    results = {"eval/score": float(rm.mean())}
    if not gold:
      _write_rm_samples(samples_path, step, records, texts, rm)
      return results
    scores = evaluation.score(metas, texts)
    evaluation.write_samples(samples_path, step, records, texts, {**scores, "rm": rm})
    results.update(evaluation.summarize(metas, scores))
    if not reference_scores:  # the reference never changes: judge it once per process
      reference_scores.update(evaluation.score(metas, respond(state.reference_params, rng)[1]))
    results.update(evaluation.summarize(metas, reference_scores, prefix="gold_sft"))
    diff, lo, hi = evaluation.paired_difference(scores["total"], reference_scores["total"])
    results.update({"gold/diff_vs_sft": diff, "gold/diff_vs_sft_lo": lo,
                    "gold/diff_vs_sft_hi": hi})
    rate, lo, hi = evaluation.win_rate(scores["total"], reference_scores["total"])
    results.update({"gold/win_rate_vs_sft": rate, "gold/win_rate_vs_sft_lo": lo,
                    "gold/win_rate_vs_sft_hi": hi})
    return results
  return evaluate


def _write_rm_samples(path, step, records, texts, rm_scores):
  """samples.jsonl rows {step, prompt, response, rm_score} (rows of step ≥ this replaced)."""
  evaluation.replace_rows(path, step, [
      {"step": step, "prompt": record["messages"], "response": text, "rm_score": float(value)}
      for record, text, value in zip(records, texts, rm_scores)])


# ---------------------------------------------------------------------------- the task


def _reward_model_config(config, tok) -> gpt.GPTConfig:
  """The RM's GPTConfig: reward_from's model block (compute settings from this config), or the
  policy's when training from scratch (`config_checks.check_inputs` checked reward_from)."""
  reward_from = config.ppo.reward_from
  if not reward_from:
    return gpt.config_from(config.model, tok.vocab_size)
  with open(os.path.join(reward_from, "config.json"), encoding="utf-8") as f:
    saved = json.load(f)
  block = ml_collections.ConfigDict({**saved["model"], "dropout": 0.0,
                                     "dtype": config.model.dtype,
                                     "attention": config.model.attention})
  return gpt.config_from(block, tok.vocab_size)


def make_task(config, workdir: str, mesh) -> Task:
  cfg = config.ppo
  splits = store.local_dataset(config.data.path, "prompts", valid_spec=config.data.valid_path,
                               valid_fraction=config.data.valid_fraction,
                               skip_malformed=config.data.skip_malformed,
                               cache=config.data.cache_dir)
  tok = tokenizer_lib.for_stage(config.tokenizer, workdir, config.init_from,
                                lambda: sft.chat_texts(splits["train"]))
  seq_len = cfg.max_prompt_len + cfg.response_len
  policy_cfg = gpt.config_from(config.model, tok.vocab_size)
  reward_cfg = _reward_model_config(config, tok)
  critic = (None if cfg.algorithm != "ppo" else
            heads.RewardModel(reward_cfg if cfg.critic_from == "reward" else policy_cfg))
  models = Models(gpt.GPT(policy_cfg), heads.RewardModel(reward_cfg), critic)
  local_batch = lm.local_batch(config)
  prompts_per_epoch = max(1, len(splits["train"]) // config.batch_size)
  total_steps = base.total_steps(config, prompts_per_epoch)
  num_updates = total_steps * cfg.epochs * cfg.num_minibatches
  policy_tx = optim.make_optimizer(config.optim, num_updates, tf_adam=cfg.tf_adam)
  critic_optim = ml_collections.ConfigDict(
      {**config.optim.to_dict(), "lr": cfg.critic_lr or config.optim.lr})
  critic_tx = optim.make_optimizer(critic_optim, num_updates, tf_adam=cfg.tf_adam)
  pieces = make_pieces(models, cfg, eos_id=tok.eos_id, pad_id=tok.pad_id, policy_tx=policy_tx,
                       critic_tx=critic_tx, num_micro=config.optim.grad_accum_steps,
                       policy_lr=optim.learning_rate(config.optim, num_updates))

  prompts = functools.partial(pipeline.prompt_iterator, splits["train"], tok,
                              max_prompt_len=cfg.max_prompt_len, batch_size=local_batch,
                              seed=config.seed, shard_index=jax.process_index(),
                              shard_count=jax.process_count(), token_cache=config.data.cache_dir)
  if cfg.ptx_coef > 0:
    ptx_train = store.local_dataset(cfg.ptx_path, "corpus", cache=config.data.cache_dir)["train"]
    ptx = functools.partial(pipeline.pretrain_iterator, [("ptx", ptx_train, 1.0)], tok,
                            seq_len=cfg.ptx_seq_len,
                            batch_size=cfg.ptx_batch_size // jax.process_count(),
                            seed=config.seed, shard_index=jax.process_index(),
                            shard_count=jax.process_count(), token_cache=config.data.cache_dir)
    train_data = lambda state: _WithPtx(prompts(state=state and state["prompts"]),
                                        ptx(state=state and state["ptx"]))
  else:
    train_data = lambda state: prompts(state=state)

  gold_split = config.gold_eval.split
  gold_records = (evaluation.prompt_records(
      (splits[gold_split][i] for i in range(len(splits[gold_split]))),
      max(config.gold_eval.num_prompts, 0)) if gold_split in splits else [])
  gold = bool(gold_records) and config.gold_eval.num_prompts >= 0
  if gold:
    records = gold_records
  else:
    source = splits["validation"]
    limit = config.gold_eval.num_prompts if config.gold_eval.num_prompts > 0 else len(source)
    records = [source[i] for i in range(min(limit, len(source)))]
  evaluate = make_evaluate(config, models, tok, mesh, records, gold,
                           os.path.join(workdir, evaluation.SAMPLES_FILE))

  init = init_fn(models, cfg, policy_tx, critic_tx, seq_len)
  abstract = jax.eval_shape(init, jax.random.key(0))
  info = {"algorithm": cfg.algorithm,
          "policy_params": gpt.count_params(abstract.policy.params),
          "critic_params": gpt.count_params(abstract.critic.params) if critic else 0,
          "reward_params": gpt.count_params(abstract.reward_params),
          "vocab_size": tok.vocab_size, "train_prompts": len(splits["train"]),
          "eval_prompts": len(records), "gold_eval": gold, "total_steps": total_steps,
          "optimizer_updates": num_updates,
          "episodes_per_step": config.batch_size * cfg.group_size,
          "minibatch_rows": config.batch_size * cfg.group_size // cfg.num_minibatches}
  return Task(
      init=init,
      step=pieces.step,
      evaluate=evaluate,
      state_shardings=lm.logical_state_shardings(mesh, config),
      train_data=train_data,
      warm_start=warm_start_fn(config, mesh),
      info=info,
      total_steps=total_steps,
      check_metrics=functools.partial(warn_if_far, ratio_warn=cfg.ratio_warn,
                                      prefix=cfg.algorithm),
  )
