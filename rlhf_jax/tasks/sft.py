"""Stage 2, supervised fine-tuning: next-token loss on demonstrations' assistant turns only.

Batch (`pipeline.sft_iterator`): {"tokens": int32[B, L] right-padded, "loss_mask":
int32[B, L]} with loss_mask 1 on assistant content and its EOS. Loss: Σ over
masked targets of −log p(target) / their number (prompt tokens, earlier user turns
and padding carry no weight). Right padding needs no attention mask: a causal
model never lets a pad influence an earlier token.
With `data.pack`, training rows hold several whole examples (`packing.sft_iterator`: B
rows plus "segment_ids"); each example attends only to itself and its targets are its own,
so the loss sums are those of the same examples unpacked. Evaluation stays unpacked.

Evaluation: eval/loss and eval/perplexity on validation demonstrations; on world
data (records with a gold-judge `meta`) also gold/score with its 95% interval,
per category and per family, through `rlhf_jax.evaluation`, and samples.jsonl.
"""
import functools
import os

import jax

from rlhf_jax import evaluation, tokenizer as tokenizer_lib
from rlhf_jax.data import packing, pipeline, store
from rlhf_jax.tasks import base, lm
from rlhf_jax.tasks.base import Task


def chat_texts(source, max_chars: int = 20_000_000):
  """Message contents of SFT records, for training a BPE when no init_from gives one."""
  for index in range(len(source)):
    for message in source[index]["messages"]:
      max_chars -= len(message["content"])
      yield message["content"]
    if max_chars <= 0:
      return


def make_task(config, workdir: str, mesh) -> Task:
  splits = store.local_dataset(config.data.path, "sft", valid_spec=config.data.valid_path,
                               valid_fraction=config.data.valid_fraction,
                               skip_malformed=config.data.skip_malformed,
                               cache=config.data.cache_dir)
  tok = tokenizer_lib.for_stage(config.tokenizer, workdir, config.init_from,
                                lambda: chat_texts(splits["train"]))
  seq_len = config.data.seq_len
  model_cfg, model = lm.build_model(config, tok.vocab_size)
  local_batch = lm.local_batch(config)
  common = dict(tokenizer=tok, max_len=seq_len, batch_size=local_batch, seed=config.seed,
                shard_index=jax.process_index(), shard_count=jax.process_count(),
                token_cache=config.data.cache_dir)
  iterator = functools.partial(pipeline.sft_iterator, **common)
  train_iterator = functools.partial(packing.sft_iterator if config.data.pack
                                     else pipeline.sft_iterator, **common)
  steps_per_epoch = (
      lm.packed_steps_per_epoch(functools.partial(train_iterator, splits["train"]))
      if config.data.pack else max(1, len(splits["train"]) // config.batch_size))
  total_steps = base.total_steps(config, steps_per_epoch)
  tx, lr_schedule = lm.optimizer(config, total_steps)

  def loss_sum(params, batch, rng, deterministic=True):
    return lm.next_token_loss_sum(model, params, batch["tokens"], batch["loss_mask"], rng,
                                  deterministic, batch.get("segment_ids"))

  init = lm.init_fn(model, tx, seq_len)
  eval_loss = lm.eval_loss_fn(loss_sum)
  valid_batches = lm.fixed_batches(
      lambda: iterator(splits["validation"], shuffle=False, repeat=False), config.eval_steps,
      mesh)
  gold = evaluation.gold_evaluator(config, splits, model, tok, mesh,
                                   os.path.join(workdir, evaluation.SAMPLES_FILE))

  def evaluate(state, rng):
    results = eval_loss(state.params, valid_batches())
    if gold is not None:
      results.update(gold(state.params, rng, int(jax.device_get(state.step))))
    return results

  # Tokens per step is an upper bound (padding included) for the MFU estimate.
  flops_per_step, info = lm.model_info(init, model_cfg, tok.vocab_size, seq_len,
                                       config.batch_size * seq_len)
  info.update(train_examples=len(splits["train"]), steps_per_epoch=steps_per_epoch,
              total_steps=total_steps)
  return Task(
      init=init,
      step=lm.gradient_step(functools.partial(loss_sum, deterministic=False), tx, lr_schedule,
                            config.optim.grad_accum_steps),
      evaluate=evaluate,
      state_shardings=lm.logical_state_shardings(mesh, config),
      train_data=lambda state: train_iterator(splits["train"], state=state),
      warm_start=lm.warm_start_params(config.init_from),
      flops_per_step=flops_per_step,
      info=info,
      total_steps=total_steps,
      steps_per_epoch=steps_per_epoch,
  )
