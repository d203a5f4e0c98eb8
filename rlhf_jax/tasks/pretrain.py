"""Stage 1, pretraining: next-token prediction on packed token windows.

Batch: {"tokens": int32[B, T+1]}; inputs are tokens[:, :-1], targets tokens[:, 1:].
Loss: mean over all B·T positions of −log p(target). Reported: train/loss,
eval/loss, eval/perplexity = exp(eval/loss), train/tokens_per_sec, train/mfu.
"""
import functools
import math

import jax
import jax.numpy as jnp
import optax

from rlhf_jax import checkpoint, losses, metrics as metrics_lib, optim, sharding
from rlhf_jax import tokenizer as tokenizer_lib
from rlhf_jax.data import corpus, pipeline
from rlhf_jax.errors import UserError
from rlhf_jax.models import gpt
from rlhf_jax.tasks.base import Task, TrainState, accumulate_gradients


def lm_loss_sum(model, params, tokens_BxT1, rng, deterministic):
  """(Σ token NLL, (token count, {})) for a packed batch."""
  rngs = {} if deterministic else {"dropout": rng}
  logits, _ = model.apply({"params": params}, tokens_BxT1[:, :-1], deterministic=deterministic,
                          rngs=rngs)
  loss_sum, count = losses.next_token_xent(logits, tokens_BxT1[:, 1:])
  return loss_sum, (count, {})


def make_task(config, workdir: str, mesh) -> Task:
  sources = corpus.corpus_sources(config.data)
  tok = tokenizer_lib.for_stage(config.tokenizer, workdir, config.init_from,
                                lambda: corpus.training_texts(sources["train"]))
  model_cfg = gpt.config_from(config.model, tok.vocab_size)
  seq_len = config.data.seq_len
  if seq_len > model_cfg.max_len:
    raise UserError(f"data.seq_len={seq_len} exceeds the model's max_len={model_cfg.max_len}; "
                    f"lower data.seq_len or raise model.max_len")
  micro = config.optim.grad_accum_steps
  if config.batch_size % (micro * sharding.batch_parallelism(mesh)):
    raise UserError(f"batch_size={config.batch_size} is not divisible by optim.grad_accum_steps"
                    f"={micro} x {sharding.batch_parallelism(mesh)} data-parallel devices; "
                    f"adjust one of them")
  model = gpt.GPT(model_cfg)
  tx = optim.make_optimizer(config.optim, config.total_steps)
  rules = sharding.rules(config.mesh)
  local_batch = config.batch_size // jax.process_count()
  iterator = functools.partial(pipeline.pretrain_iterator, tokenizer=tok, seq_len=seq_len,
                               batch_size=local_batch, seed=config.seed,
                               shard_index=jax.process_index(),
                               shard_count=jax.process_count())

  def init(rng):
    params = model.init(rng, jnp.zeros((1, seq_len), jnp.int32))["params"]
    return TrainState.create(params, tx)

  def step(state, batch, rng):
    loss_fn = functools.partial(lm_loss_sum, model, deterministic=False)
    grads, loss, count, _ = accumulate_gradients(
        lambda p, b, r: loss_fn(p, b["tokens"], r), state.params, batch, rng, micro)
    new_state = state.apply_gradients(grads, tx)
    return new_state, {
        "train/loss": loss,
        "train/grad_norm": optax.tree.norm(grads),
        "train/lr": optim.learning_rate(config.optim, config.total_steps)(state.step),
        "train/tokens": count,
    }

  @jax.jit
  def eval_batch(params, tokens):
    return lm_loss_sum(model, params, tokens, None, deterministic=True)[:2]

  valid_batches = []

  def evaluate(state, rng):
    del rng
    if not valid_batches:  # read once: every evaluation sees the same batches
      it = iterator(sources["validation"], shuffle=False, repeat=False)
      for _, batch in zip(range(config.eval_steps), it):
        valid_batches.append(sharding.device_batch(batch, mesh)["tokens"])
    total, count = 0.0, 0.0
    for tokens in valid_batches:
      s, (c, _) = eval_batch(state.params, tokens)
      total, count = total + float(s), count + float(c)
    loss = total / count
    return {"eval/loss": loss, "eval/perplexity": math.exp(min(loss, 80.0))}

  def warm_start(state):
    abstract = jax.eval_shape(lambda: state.params)
    shardings = jax.tree.map(lambda x: x.sharding, state.params)
    return state.replace(params=checkpoint.restore_params(config.init_from, abstract, shardings))

  abstract_params = jax.eval_shape(init, jax.random.key(0)).params
  num_params = gpt.count_params(abstract_params)
  num_flop_params = num_params - model_cfg.max_len * model_cfg.embed_dim  # minus wpe
  flops_per_token = metrics_lib.transformer_flops_per_token(
      num_flop_params, model_cfg.num_layers, model_cfg.embed_dim, seq_len)
  tokens_per_step = config.batch_size * seq_len
  return Task(
      init=init,
      step=step,
      evaluate=evaluate,
      state_shardings=lambda abstract: sharding.logical_shardings(abstract, mesh, rules),
      train_data=lambda state: iterator(sources["train"], state=state),
      warm_start=warm_start,
      flops_per_step=flops_per_token * tokens_per_step,
      info={"num_params": num_params, "vocab_size": tok.vocab_size,
            "padded_vocab": model_cfg.padded_vocab, "tokens_per_step": tokens_per_step,
            "flops_per_token": flops_per_token,
            "flops_formula": "6N + 12*L*D*T, N = params without position embeddings"},
  )

