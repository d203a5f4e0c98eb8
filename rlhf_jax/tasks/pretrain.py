"""Stage 1, pretraining: next-token prediction on packed token windows.

Batch: {"tokens": int32[B, T+1]}; inputs are tokens[:, :-1], targets tokens[:, 1:].
Loss: mean over all B·T positions of −log p(target). Reported: train/loss,
eval/loss, eval/perplexity = exp(eval/loss), train/tokens_per_sec, train/mfu.
"""
import functools

import jax

from rlhf_jax import tokenizer as tokenizer_lib
from rlhf_jax.data import corpus, pipeline
from rlhf_jax.tasks import base, lm
from rlhf_jax.tasks.base import Task


def make_task(config, workdir: str, mesh) -> Task:
  sources = corpus.corpus_sources(config.data)
  tok = tokenizer_lib.for_stage(config.tokenizer, workdir, config.init_from,
                                lambda: corpus.training_texts(sources["train"]))
  seq_len = config.data.seq_len
  model_cfg, model = lm.build_model(config, tok.vocab_size)
  local_batch = lm.local_batch(config)
  total_steps = base.total_steps(config, steps_per_epoch=0)  # a packed stream: no epochs
  tx, lr_schedule = lm.optimizer(config, total_steps)
  iterator = functools.partial(pipeline.pretrain_iterator, tokenizer=tok, seq_len=seq_len,
                               batch_size=local_batch, seed=config.seed,
                               shard_index=jax.process_index(),
                               shard_count=jax.process_count(),
                               token_cache=config.data.cache_dir)

  def loss_sum(params, batch, rng, deterministic=True):
    return lm.next_token_loss_sum(model, params, batch["tokens"], None, rng, deterministic)

  init = lm.init_fn(model, tx, seq_len)
  eval_loss = lm.eval_loss_fn(loss_sum)
  valid_batches = lm.fixed_batches(
      lambda: iterator(sources["validation"], shuffle=False, repeat=False), config.eval_steps,
      mesh)
  flops_per_step, info = lm.model_info(init, model_cfg, tok.vocab_size, seq_len,
                                       config.batch_size * seq_len)
  return Task(
      init=init,
      step=lm.gradient_step(functools.partial(loss_sum, deterministic=False), tx, lr_schedule,
                            config.optim.grad_accum_steps),
      evaluate=lambda state, rng: eval_loss(state.params, valid_batches()),
      state_shardings=lm.logical_state_shardings(mesh, config),
      train_data=lambda state: iterator(sources["train"], state=state),
      warm_start=lm.warm_start_params(config.init_from),
      flops_per_step=flops_per_step,
      info=info,
      total_steps=total_steps,
  )
