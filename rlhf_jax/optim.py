"""Config → optax optimizer: AdamW with linear warmup and cosine decay, global-norm clipping."""
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from rlhf_jax.errors import UserError


def learning_rate(optim_cfg, total_steps: int) -> optax.Schedule:
  """lr(t): linear 0 → lr over `warmup_steps`, then cosine to `lr * min_lr_ratio` at total_steps."""
  warmup = min(optim_cfg.warmup_steps, total_steps)
  if optim_cfg.schedule == "constant":
    return optax.linear_schedule(0.0, optim_cfg.lr, max(warmup, 1)) if warmup else (
        optax.constant_schedule(optim_cfg.lr))
  if optim_cfg.schedule != "cosine":
    raise UserError(f"optim.schedule={optim_cfg.schedule!r}; use 'cosine' or 'constant'")
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=optim_cfg.lr, warmup_steps=warmup,
      decay_steps=max(total_steps, warmup + 1), end_value=optim_cfg.lr * optim_cfg.min_lr_ratio)


def _decay_mask(params):
  # Decay matrices (and embeddings), not biases or LayerNorm parameters, as in GPT-2.
  return jax.tree.map(lambda p: p.ndim >= 2, params)


class TFAdamState(NamedTuple):
  count: jax.Array
  mu: optax.Updates
  nu: optax.Updates


def scale_by_tf_adam(b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8):
  """TensorFlow's Adam direction (tf.train.AdamOptimizer, used by lm-human-preferences).

  m ← β1·m + (1−β1)·g, v ← β2·v + (1−β2)·g², u = √(1−β2ᵗ)/(1−β1ᵗ) · m / (√v + ε̂).
  This is m̂ / (√v̂ + ε̂/√(1−β2ᵗ)): ε̂ is applied to the *uncorrected* second moment,
  so early updates are damped more than by PyTorch/optax Adam's m̂ / (√v̂ + ε).
  """
  def init(params):
    zeros = jax.tree.map(jnp.zeros_like, params)
    return TFAdamState(jnp.zeros((), jnp.int32), zeros, zeros)

  def update(grads, state, params=None):
    del params
    count = state.count + 1
    mu = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, state.mu, grads)
    nu = jax.tree.map(lambda v, g: b2 * v + (1 - b2) * jnp.square(g), state.nu, grads)
    t = jnp.asarray(count, dtype=float)  # float32, or float64 under jax_enable_x64
    step_size = jnp.sqrt(1 - b2 ** t) / (1 - b1 ** t)
    updates = jax.tree.map(lambda m, v: step_size * m / (jnp.sqrt(v) + eps), mu, nu)
    return updates, TFAdamState(count, mu, nu)
  return optax.GradientTransformation(init, update)


def make_optimizer(optim_cfg, total_steps: int,
                   tf_adam: bool = False) -> optax.GradientTransformation:
  """Clipping, then AdamW (or, with tf_adam, `scale_by_tf_adam` + decoupled weight decay)."""
  if optim_cfg.grad_accum_steps < 1:
    raise UserError(f"optim.grad_accum_steps={optim_cfg.grad_accum_steps}; use 1 or more")
  chain = []
  if optim_cfg.grad_clip > 0:
    chain.append(optax.clip_by_global_norm(optim_cfg.grad_clip))
  lr = learning_rate(optim_cfg, total_steps)
  if tf_adam:
    chain += [scale_by_tf_adam(optim_cfg.b1, optim_cfg.b2, optim_cfg.eps),
              optax.add_decayed_weights(optim_cfg.weight_decay, _decay_mask),
              optax.scale_by_learning_rate(lr)]
  else:
    chain.append(optax.adamw(lr, b1=optim_cfg.b1, b2=optim_cfg.b2, eps=optim_cfg.eps,
                             weight_decay=optim_cfg.weight_decay, mask=_decay_mask))
  return optax.chain(*chain)
