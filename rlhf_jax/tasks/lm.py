"""What every gradient-trained stage shares: model, optimizer step, evaluation loss, warm start.

Pretraining and SFT differ only in their data and in which targets carry weight
(`next_token_loss_sum`'s weights); the reward model reuses the same step,
evaluation and warm-start pieces with its own loss.

Dimensions: B batch, T positions (T+1 tokens give T next-token targets).
"""
import functools
import math

import jax
import jax.numpy as jnp
import optax

from rlhf_jax import checkpoint, losses, metrics as metrics_lib, optim, sharding
from rlhf_jax.models import gpt
from rlhf_jax.tasks.base import TrainState, accumulate_gradients


def build_model(config, vocab_size: int) -> tuple[gpt.GPTConfig, gpt.GPT]:
  """The GPT of `config.model` for `vocab_size` ids (rows fit: `config_checks.check`)."""
  model_cfg = gpt.config_from(config.model, vocab_size)
  return model_cfg, gpt.GPT(model_cfg)


def local_batch(config) -> int:
  """This process's share of the global batch (its splits: `config_checks.check_devices`)."""
  return config.batch_size // jax.process_count()


def next_token_loss_sum(model, params, tokens_BxT1, weights_BxT1=None, rng=None,
                        deterministic=True, segment_ids_BxT1=None):
  """(Σ_t w_t·(−log p(token_{t+1} | tokens_≤t)), (Σ_t w_t, {})).

  weights_BxT1 is aligned with the tokens (1 where a token is a target, e.g. the
  SFT loss mask on assistant content and its EOS); None weighs every target 1.
  With segment ids (packed rows, 0 = padding), tokens attend within their segment and a
  target counts only in its context's segment: w_t is 0 where token t+1 begins another
  segment (the last token of an example never predicts the next example's first) or is
  padding.
  """
  rngs = {} if deterministic else {"dropout": rng}
  segment_ids_BxT = None if segment_ids_BxT1 is None else segment_ids_BxT1[:, :-1]
  logits_BxTxV, _ = model.apply({"params": params}, tokens_BxT1[:, :-1],
                                deterministic=deterministic, rngs=rngs,
                                segment_ids_BxT=segment_ids_BxT)
  weights_BxT = None if weights_BxT1 is None else weights_BxT1[:, 1:]
  if segment_ids_BxT1 is not None:
    target_segments_BxT = segment_ids_BxT1[:, 1:]
    same_segment_BxT = (target_segments_BxT == segment_ids_BxT) & (target_segments_BxT > 0)
    weights_BxT = same_segment_BxT if weights_BxT is None else weights_BxT * same_segment_BxT
  loss_sum, count = losses.next_token_xent(logits_BxTxV, tokens_BxT1[:, 1:], weights_BxT)
  return loss_sum, (count, {})


def packed_steps_per_epoch(make_iterator) -> int:
  """Batches of one unshuffled pass of a packed iterator, `make_iterator(shuffle=False,
  repeat=False)`: an epoch's steps (shuffled epochs pack within a batch or so of it)."""
  return max(1, sum(1 for _ in make_iterator(shuffle=False, repeat=False)))


def init_fn(model, tx, seq_len: int):
  """rng → fresh TrainState (pure: the loop eval_shapes and jits it sharded)."""
  def init(rng):
    params = model.init(rng, jnp.zeros((1, seq_len), jnp.int32))["params"]
    return TrainState.create(params, tx)
  return init


def gradient_step(loss_sum_fn, tx, lr_schedule, num_micro: int,
                  count_name: str = "train/tokens"):
  """step(state, batch, rng) for `loss_sum_fn(params, batch, rng) -> (sum, (count, aux))`.

  Metrics: train/loss (sum / count), train/grad_norm, train/lr, `count_name` (what the
  loss averages over: target tokens, or e.g. prompts for a ranking loss; the loop turns
  train/tokens into train/tokens_per_sec), and train/<name> = aux[name] / count.
  """
  def step(state, batch, rng):
    grads, loss, count, aux = accumulate_gradients(loss_sum_fn, state.params, batch, rng,
                                                   num_micro)
    metrics = {"train/loss": loss, "train/grad_norm": optax.tree.norm(grads),
               "train/lr": lr_schedule(state.step), count_name: count}
    metrics.update({f"train/{name}": value / count for name, value in aux.items()})
    return state.apply_gradients(grads, tx), metrics
  return step


def optimizer(config, total_steps: int):
  """(optax transformation, learning-rate schedule) of `config.optim` over total_steps."""
  return (optim.make_optimizer(config.optim, total_steps),
          optim.learning_rate(config.optim, total_steps))


def eval_loss_fn(loss_sum_fn):
  """evaluate(params, batches) → eval/loss and eval/perplexity over fixed batches.

  Sums accumulate on the device; one transfer per evaluation.
  """
  @jax.jit
  def batch_sums(params, batch):
    loss_sum, (count, _) = loss_sum_fn(params, batch, None)
    return loss_sum, count

  def evaluate(params, batches) -> dict[str, float]:
    total = jnp.zeros(()), jnp.zeros(())
    for batch in batches:
      total = jax.tree.map(jnp.add, total, batch_sums(params, batch))
    loss_sum, count = jax.device_get(total)
    loss = float(loss_sum) / max(float(count), 1.0)
    return {"eval/loss": loss, "eval/perplexity": math.exp(min(loss, 80.0))}
  return evaluate


def fixed_batches(make_iterator, num_batches: int, mesh):
  """Reads up to `num_batches` device batches once; every evaluation sees the same ones."""
  cache = []

  def batches():
    if not cache:
      for _, batch in zip(range(num_batches), make_iterator()):
        cache.append(sharding.device_batch(batch, mesh))
    return cache
  return batches


def warm_start_params(init_from: str):
  """state → state whose params are the newest checkpoint's of the `init_from` workdir."""
  def warm_start(state):
    abstract = jax.eval_shape(lambda: state.params)
    shardings = jax.tree.map(lambda x: x.sharding, state.params)
    return state.replace(params=checkpoint.restore_params(init_from, abstract, shardings))
  return warm_start


def model_info(init, model_cfg: gpt.GPTConfig, vocab_size: int, seq_len: int,
               tokens_per_step: int) -> tuple[float, dict]:
  """(FLOPs per step, info dict) for a GPT trained on `tokens_per_step` tokens per step."""
  num_params = gpt.count_params(jax.eval_shape(init, jax.random.key(0)).params)
  num_flop_params = num_params - model_cfg.max_len * model_cfg.embed_dim  # minus wpe
  flops_per_token = metrics_lib.transformer_flops_per_token(
      num_flop_params, model_cfg.num_layers, model_cfg.embed_dim, seq_len)
  info = {"num_params": num_params, "vocab_size": vocab_size,
          "padded_vocab": model_cfg.padded_vocab, "tokens_per_step": tokens_per_step,
          "flops_per_token": flops_per_token,
          "flops_formula": "6N + 12*L*D*T, N = params without position embeddings"}
  return flops_per_token * tokens_per_step, info


def logical_state_shardings(mesh, config):
  return functools.partial(sharding.logical_shardings, mesh=mesh,
                           logical_rules=sharding.rules(config.mesh))
