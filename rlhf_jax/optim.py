"""Config → optax optimizer: AdamW with linear warmup and cosine decay, global-norm clipping."""
import jax
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


def make_optimizer(optim_cfg, total_steps: int) -> optax.GradientTransformation:
  if optim_cfg.grad_accum_steps < 1:
    raise UserError(f"optim.grad_accum_steps={optim_cfg.grad_accum_steps}; use 1 or more")
  chain = []
  if optim_cfg.grad_clip > 0:
    chain.append(optax.clip_by_global_norm(optim_cfg.grad_clip))
  chain.append(optax.adamw(learning_rate(optim_cfg, total_steps), b1=optim_cfg.b1,
                           b2=optim_cfg.b2, eps=optim_cfg.eps,
                           weight_decay=optim_cfg.weight_decay, mask=_decay_mask))
  return optax.chain(*chain)
