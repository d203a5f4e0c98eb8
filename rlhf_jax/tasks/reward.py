"""Stage 3, the reward model (RM): an SFT backbone plus a scalar head, trained on rankings.

Batch (`pipeline.preference_iterator`): tokens and response_mask int32[B, K, L], ranking
int32[B, K] (0 = best, ties equal, -1 = missing). The B·K rows go through the backbone
once, as one [B·K, L] batch; each response's reward is the head's value at its EOS.
Loss: `losses.ranking_loss` (InstructGPT eq. 1) over all C(K, 2) pairs of a prompt.
With `data.pack`, batches pack the responses of up to B records into rm.pack_rows rows
of rm.pack_len tokens, one segment each, or with rm.share_prompt after one copy of their
record's prompt (`packing.preference_iterator`), and `packed_response_scores` reads each
response's reward at its EOS there: the same [B, K] scores and loss. Evaluation batches
are packed too (about half the rows, and the last partial batch is kept; unpacked, a
held-out split's last batch_size − 1 records or fewer are left out).

Evaluation on held-out records (the world's test split, else validation), under rm/:
accuracy (pairwise, 95% interval over prompts), loss, margin, accuracy by family and
by rank gap, ece with a reliability diagram (WORKDIR/rm_reliability.png); on gold-judged
world data also label_ceiling and gold_agreement (`reward_metrics`).
At the last step the rewards of reference responses fix the normalisation
(`reward_normalization.json`, read by `load_reward_model`).

Dimensions: B batch, K responses per prompt, L row length, N records.
"""
import functools
import json
import os

import flax
import jax
import ml_collections
import numpy as np

from rlhf_jax import checkpoint, losses, sharding, tokenizer as tokenizer_lib
from rlhf_jax.data import packing, pipeline, readers, store
from rlhf_jax.errors import UserError
from rlhf_jax.models import gpt, heads
from rlhf_jax.tasks import base, lm, preferences, reward_metrics
from rlhf_jax.tasks.base import Task

NORMALIZATION_FILE = "reward_normalization.json"


def response_scores(model, params, tokens_BxKxL, response_mask_BxKxL, rng=None,
                    deterministic=True):
  """Raw rewards [B, K]: one backbone pass over the B·K rows, read at each row's EOS."""
  b, k, l = tokens_BxKxL.shape
  rngs = {} if deterministic else {"dropout": rng}
  values_RxL = model.apply({"params": params}, tokens_BxKxL.reshape(b * k, l),
                           deterministic=deterministic, rngs=rngs)
  return heads.last_token_values(values_RxL, response_mask_BxKxL.reshape(b * k, l)).reshape(b, k)


def packed_response_scores(model, params, batch, rng=None, deterministic=True):
  """Raw rewards [B, K] of a packed batch (`packing.preference_iterator`): one backbone pass
  over its R rows, response k of record b read at (score_row[b, k], score_pos[b, k])."""
  rngs = {} if deterministic else {"dropout": rng}
  values_RxL = model.apply({"params": params}, batch["tokens"], batch["positions"],
                           deterministic=deterministic, rngs=rngs,
                           segment_ids_BxT=batch["segment_ids"],
                           branch_ids_BxT=batch["branch_ids"])
  return values_RxL[batch["score_row"], batch["score_pos"]]


def warm_start_fn(init_from: str):
  """state → state with init_from's params: all of an RM workdir's, or an SFT/pretrain
  workdir's GPT params as the backbone (the head keeps its fresh init)."""
  def warm_start(state):
    abstract = jax.eval_shape(lambda: state.params)
    shardings = jax.tree.map(lambda x: x.sharding, state.params)
    if any(name.startswith("backbone/") for name in checkpoint.saved_params_shapes(init_from)):
      return state.replace(params=checkpoint.restore_params(init_from, abstract, shardings))
    backbone = checkpoint.restore_params(init_from, abstract["backbone"], shardings["backbone"])
    return state.replace(params={**state.params, "backbone": backbone})
  return warm_start


def make_task(config, workdir: str, mesh) -> Task:
  splits, k, eval_split, tok, iterator, steps_per_epoch = preferences.prepare(config, workdir,
                                                                             "rm")
  seq_len = config.data.seq_len
  model_cfg, _ = lm.build_model(config, tok.vocab_size)
  model = heads.RewardModel(model_cfg)
  train_iterator = eval_iterator = iterator
  score_fn = jax.jit(lambda params, batch: response_scores(
      model, params, batch["tokens"], batch["response_mask"]))
  if config.data.pack:
    packed = functools.partial(  # the unpacked iterator's settings, packed
        packing.preference_iterator, **iterator.keywords,
        num_rows=config.rm.pack_rows // jax.process_count(), row_len=config.rm.pack_len,
        share_prompt=config.rm.share_prompt)
    train_iterator = functools.partial(packed, num_groups=config.optim.grad_accum_steps)
    eval_iterator = packed  # about half the rows, and no record left out of a last batch
    score_fn = jax.jit(functools.partial(packed_response_scores, model))
    steps_per_epoch = lm.packed_steps_per_epoch(
        functools.partial(train_iterator, splits["train"]))
  total_steps = base.total_steps(config, steps_per_epoch)
  tx, lr_schedule = lm.optimizer(config, total_steps)

  def loss_sum(params, batch, rng, deterministic=True):
    if "segment_ids" in batch:
      scores_BxK = packed_response_scores(model, params, batch, rng, deterministic)
    else:
      scores_BxK = response_scores(model, params, batch["tokens"], batch["response_mask"],
                                   rng, deterministic)
    loss, count = losses.ranking_loss(scores_BxK, batch["ranking"], config.rm.margin)
    accuracy, _ = losses.ranking_accuracy(scores_BxK, batch["ranking"])
    return loss, (count, {"accuracy": accuracy})

  init = lm.init_fn(model, tx, seq_len)
  eval_batches = preferences.eval_batches(config, mesh, eval_iterator, splits, eval_split)
  plot_path = os.path.join(workdir, "rm_reliability.png")

  def evaluate(state, rng):
    del rng
    scores, ranking, index = preferences.score_batches(score_fn, state.params, eval_batches())
    metas = [splits[eval_split][int(i)].get("meta", {}) for i in index]
    results = reward_metrics.summarize(scores, ranking, metas, config.rm.margin,
                                       plot_path if jax.process_index() == 0 else "")
    step = int(jax.device_get(state.step))
    if step == total_steps:
      normalization = write_normalization(config, workdir, model, state.params, tok, mesh,
                                          splits["train"], step)
      results.update({"rm/norm_bias": normalization.bias, "rm/norm_gain": normalization.gain})
    return results

  row_len = (config.rm.pack_len or seq_len) if config.data.pack else seq_len
  rows_per_step = config.rm.pack_rows if config.data.pack else config.batch_size * k
  flops_per_step, info = lm.model_info(init, model_cfg, tok.vocab_size, row_len,
                                       rows_per_step * row_len)
  info.update(train_records=len(splits["train"]), eval_records=len(splits[eval_split]),
              eval_split=eval_split, responses_per_record=k, steps_per_epoch=steps_per_epoch,
              total_steps=total_steps)
  return Task(
      init=init,
      step=lm.gradient_step(functools.partial(loss_sum, deterministic=False), tx, lr_schedule,
                            config.optim.grad_accum_steps, count_name="train/prompts"),
      evaluate=evaluate,
      state_shardings=lm.logical_state_shardings(mesh, config),
      train_data=lambda state: train_iterator(splits["train"], state=state),
      warm_start=warm_start_fn(config.init_from),
      flops_per_step=flops_per_step,
      info=info,
      total_steps=total_steps,
      steps_per_epoch=steps_per_epoch,
  )


def device_scores(score_fn, params, tokens_NxKxL, response_mask_NxKxL, batch_size: int,
                  mesh) -> np.ndarray:
  """Scores [N, K] of host rows, `batch_size` records per call (the last batch padded)."""
  return sharding.map_batches(
      lambda batch, _: score_fn(params, batch["tokens"], batch["response_mask"]),
      {"tokens": tokens_NxKxL, "response_mask": response_mask_NxKxL}, batch_size,
      mesh).astype(np.float64)



# ---------------------------------------------------------------------------- normalisation


@flax.struct.dataclass
class Normalization:
  """normalised reward = gain · raw + bias; `step` is the checkpoint it belongs to."""
  bias: float
  gain: float
  step: int = flax.struct.field(pytree_node=False, default=0)


def normalised_scores(model, params, normalization: Normalization, tokens_BxKxL,
                      response_mask_BxKxL):
  """gain · r + bias, [B, K] (jittable): what `score`, best-of-N and PPO use."""
  raw_BxK = response_scores(model, params, tokens_BxKxL, response_mask_BxKxL)
  return normalization.gain * raw_BxK + normalization.bias


def reference_examples(config, train_source) -> list[tuple[list[dict], str]]:
  """(prompt messages, response) pairs whose rewards fix the normalisation.

  rm.reference_path (SFT-format files or a world:…/sft spec), else the world's SFT
  demonstrations for world data, else the best-ranked response of each training record.
  At most rm.reference_max of them (0 = all).
  """
  path = config.rm.reference_path
  if not path and config.data.path.startswith("world:"):
    path = config.data.path.rsplit("/", 1)[0] + "/sft"
  if path:
    if path.startswith("world:"):
      source = store.local_dataset(path, "sft", cache=config.data.cache_dir)["train"]
      records = [source[i] for i in range(len(source))]
    else:
      records, _ = readers.read_records(path, "sft")
    examples = [(r["messages"][:-1], r["messages"][-1]["content"]) for r in records]
  else:
    examples = []
    for i in range(len(train_source)):
      record = train_source[i]
      best = int(np.argmin(record["ranking"]))
      examples.append((record["prompt"], record["responses"][best]))
  limit = config.rm.reference_max
  return examples[:limit] if limit > 0 else examples


def write_normalization(config, workdir: str, model, params, tok, mesh, train_source,
                        step: int) -> Normalization:
  """Scores the reference responses, sets bias (and gain) so that they have mean 0 (std 1),
  and writes WORKDIR/reward_normalization.json atomically."""
  examples = reference_examples(config, train_source)
  rows = [pipeline.preference_rows(tok, prompt, [response], max_len=config.data.seq_len,
                                   num_rows=1) for prompt, response in examples]
  tokens_NxKxL = np.stack([r[0] for r in rows])
  mask_NxKxL = np.stack([r[1] for r in rows])
  score_fn = jax.jit(functools.partial(response_scores, model))
  raw_N = device_scores(score_fn, params, tokens_NxKxL, mask_NxKxL, config.batch_size, mesh)[:, 0]
  mean, std = float(raw_N.mean()), float(raw_N.std())
  gain = 1.0 / max(std, 1e-6) if config.rm.normalize_gain else 1.0
  normalization = Normalization(bias=-gain * mean, gain=gain, step=step)
  if jax.process_index() == 0:
    path = os.path.join(workdir, NORMALIZATION_FILE)
    with open(path + ".tmp", "w", encoding="utf-8") as f:
      json.dump({"step": step, "bias": normalization.bias, "gain": gain, "raw_mean": mean,
                 "raw_std": std, "num_references": len(raw_N),
                 "reference": config.rm.reference_path or "default"}, f, indent=2)
    os.replace(path + ".tmp", path)
  return normalization


def load_reward_model(workdir: str, mesh=None):
  """(model, params, Normalization, tokenizer) of a reward-model workdir's newest checkpoint.

  The normalisation must belong to that checkpoint; when it is missing or older (a run
  stopped before its last step), it is computed now and written next to the checkpoints.
  """
  config_path = os.path.join(workdir, "config.json")
  if not os.path.exists(config_path):
    raise UserError(f"{workdir} has no config.json; pass the workdir of a reward-model run")
  with open(config_path, encoding="utf-8") as f:
    config = ml_collections.ConfigDict(json.load(f))
  if config.task != "reward":
    raise UserError(f"{workdir} holds a {config.task!r} run, not a reward model; pass the "
                    f"workdir of a run of experiments/rm_*.py")
  tok = tokenizer_lib.load(os.path.join(workdir, tokenizer_lib.TOKENIZER_FILE))
  model = heads.RewardModel(gpt.config_from(config.model, tok.vocab_size))
  mesh = mesh or sharding.make_mesh(config.mesh)
  abstract = jax.eval_shape(model.init, jax.random.key(0),
                            jax.ShapeDtypeStruct((1, config.data.seq_len), np.int32))["params"]
  shardings = sharding.logical_shardings(abstract, mesh, sharding.rules(config.mesh))
  params = checkpoint.restore_params(workdir, abstract, shardings, name="workdir")
  step = checkpoint.saved_step(workdir)
  path = os.path.join(workdir, NORMALIZATION_FILE)
  saved = {}
  if os.path.exists(path):
    with open(path, encoding="utf-8") as f:
      saved = json.load(f)
  if saved.get("step") == step:
    return model, params, Normalization(saved["bias"], saved["gain"], step), tok
  train = preferences.splits(config)["train"]
  return model, params, write_normalization(config, workdir, model, params, tok, mesh, train,
                                            step), tok
