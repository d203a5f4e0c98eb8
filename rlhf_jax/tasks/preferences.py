"""What the stages trained on preference data share: the reward model and DPO.

Both read the same records (`{"prompt", "responses", "ranking"}`, pairs are K = 2) as
`pipeline.preference_iterator` batches, evaluate on the same held-out split and score
responses the same way on the host (`score_batches`).

Dimensions: N records, K responses per record.
"""
import functools
import json
import os
from typing import Any, Callable, NamedTuple

import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import numpy as np

from rlhf_jax import tokenizer as tokenizer_lib
from rlhf_jax.data import formats, pipeline, readers, store
from rlhf_jax.errors import UserError
from rlhf_jax.tasks import lm


def splits(config) -> dict:
  """{"train", "validation"(, "test" for world data)} Sources of `config.data`."""
  return store.local_dataset(config.data.path, "preferences", valid_spec=config.data.valid_path,
                             valid_fraction=config.data.valid_fraction,
                             skip_malformed=config.data.skip_malformed,
                             cache=config.data.cache_dir)


def eval_split(data_splits) -> str:
  """The held-out split: the world's test split, else validation."""
  return "test" if "test" in data_splits else "validation"


def texts(source, max_chars: int = 20_000_000):
  """Prompt and response texts of preference records, for a BPE when no init_from gives one."""
  for index in range(len(source)):
    record = source[index]
    for text in [m["content"] for m in record["prompt"]] + record["responses"]:
      max_chars -= len(text)
      yield text
    if max_chars <= 0:
      return


def _data_files(config) -> list[str]:
  spec, valid = config.data.path, config.data.valid_path
  if spec.startswith("world:"):
    size, seed, kind = store.parse_world_spec(spec)
    world_dir = store.ensure_world(size, seed, config.data.cache_dir)
    return [os.path.join(world_dir, kind, f"{s}.jsonl") for s in ("train", "valid", "test")]
  return readers.expand_paths(spec) + (readers.expand_paths(valid) if valid else [])


def num_responses(config, data_splits, block: str) -> int:
  """K: the most responses of any record; more than config.<block>.num_responses is an error."""
  k = max(len(split[i]["responses"]) for split in data_splits.values()
          for i in range(len(split)))
  cap = config[block].num_responses
  if k <= cap:
    return k
  for path in _data_files(config):  # name the first offending record's file:line
    for lineno, line in readers.iter_lines(path):
      if line.strip() and k == len(formats.normalize_preferences(json.loads(line))["responses"]):
        raise UserError(f"{path}:{lineno}: a ranking of {k} responses, but {block}.num_responses="
                        f"{cap}; raise --config.{block}.num_responses to {k} or drop the record")
  raise UserError(f"a preference record has {k} responses, but {block}.num_responses={cap}; "
                  f"raise --config.{block}.num_responses to {k}")


def iterator(config, tok, k: int):
  """`pipeline.preference_iterator` for this process, with everything but the source set."""
  return functools.partial(pipeline.preference_iterator, tokenizer=tok,
                           max_len=config.data.seq_len, num_responses=k,
                           batch_size=lm.local_batch(config), seed=config.seed,
                           shard_index=jax.process_index(), shard_count=jax.process_count(),
                           token_cache=config.data.cache_dir)


def eval_batches(config, mesh, make_iterator, data_splits, split: str):
  """The held-out batches of `split`, read once (`lm.fixed_batches`)."""
  return lm.fixed_batches(
      lambda: make_iterator(data_splits[split], shuffle=False, repeat=False, split=split),
      config.eval_steps, mesh)


def score_batches(score_fn, params, batches):
  """(scores [N, K], ranking [N, K], index [N]) of fixed device batches, on the host: the
  batches are joined on the device and fetched in one transfer per evaluation.

  score_fn(params, batch) → scores [B, K]. Record slots a packed batch left empty
  (index −1) are dropped.
  """
  if not batches:
    raise UserError("no held-out preference batch to evaluate; add data or lower batch_size")
  columns = {"scores": [score_fn(params, b) for b in batches],
             "ranking": [b["ranking"] for b in batches], "index": [b["index"] for b in batches]}
  joined = {key: jnp.concatenate(values) for key, values in columns.items()}
  host = multihost_utils.process_allgather(joined, tiled=True)
  present = np.asarray(host["index"]) >= 0
  return tuple(np.asarray(host[key])[present] for key in ("scores", "ranking", "index"))


class Data(NamedTuple):
  """What a preference stage reads, ready for its task (`prepare`)."""
  splits: dict             # "train", "validation"(, "test") Sources
  num_responses: int       # K
  eval_split: str          # the held-out split
  tokenizer: Any
  iterator: Callable       # `preference_iterator` with all but the source set
  steps_per_epoch: int


def prepare(config, workdir: str, block: str) -> Data:
  """The data of `config` (K capped by config.<block>.num_responses) and the stage's
  tokenizer: init_from's, else a BPE trained on the preference texts."""
  data_splits = splits(config)
  k = num_responses(config, data_splits, block)
  tok = tokenizer_lib.for_stage(config.tokenizer, workdir, config.init_from,
                                lambda: texts(data_splits["train"]))
  return Data(data_splits, k, eval_split(data_splits), tok, iterator(config, tok, k),
              max(1, len(data_splits["train"]) // config.batch_size))
