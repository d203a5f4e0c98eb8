"""grain pipelines: records → tokens → fixed-shape NumPy batches, resumable exactly.

Every function returns a grain `DatasetIterator`: `get_state()` is a small
JSON-serialisable dict and `set_state(state)` (or the `state=` argument)
continues exactly where that state was taken, mid-epoch or across epochs.

Order: the record indices of a source are shuffled with `seed`, reshuffled
differently each epoch (`repeat=True`). With `repeat=False` (evaluation) there
is one unshuffled pass and only full batches: the remainder is dropped.

Processes: `batch_size` is this process's share of a global batch of
`batch_size * shard_count` rows, and process `shard_index` yields rows
[shard_index·batch_size, (shard_index + 1)·batch_size) of each global batch, which
is where `jax.make_array_from_process_local_data` places them. Every process orders
the data alike and counts global batches, so the batches (the losses) and the
iterator state (saved once, by process 0) do not depend on the number of processes:
a run resumes on another process count. An example is read only by the process of
its row; a packed stream is cut on every process (from a token table: a slice of a
memory map per record) and each keeps its rows.

Dimensions: B batch, T seq_len + 1 (pretraining windows), L max_len,
K responses per prompt, P max_prompt_len.
"""
import logging
import threading
from typing import Any, Callable, Sequence

import grain
import numpy as np

from rlhf_jax.data import token_cache as token_cache_lib
from rlhf_jax.errors import UserError

# One background thread tokenizes ahead of the consumer (HF `encode` holds the
# GIL, so more threads only contend: measured 325k tok/s with 1 thread vs 270k
# with 0 or 2 on 2 cores). Prefetching keeps the order: results are deterministic.
_READ_OPTIONS = grain.ReadOptions(num_threads=1, prefetch_buffer_size=128)
# Reading a token table is a slice of a memory map: a prefetch thread only adds overhead
# (measured 3.0M tokens/s with one thread, 9.0M without, on 2 cores).
_TABLE_READ_OPTIONS = grain.ReadOptions(num_threads=0, prefetch_buffer_size=0)
# Examples are read a global batch of indices at a time (this process's rows of it): the
# same one thread, a few batches ahead.
_BATCH_READ_OPTIONS = grain.ReadOptions(num_threads=1, prefetch_buffer_size=4)


def _source_seed(seed: int, index: int) -> int:
  """Independent shuffle seeds per mixture source (grain uses seed + epoch per epoch)."""
  return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def record_indices(num_records: int, *, seed: int, shuffle: bool,
                   repeat: bool) -> grain.MapDataset:
  """Record indices, the same on every process, shuffled per epoch when asked; infinite
  with `repeat`."""
  indices = grain.MapDataset.range(num_records)
  if shuffle:
    indices = indices.shuffle(seed)
  return indices.repeat() if repeat else indices


def check_shard(shard_index: int, shard_count: int) -> None:
  if not 0 <= shard_index < shard_count:
    raise UserError(f"shard_index={shard_index} must be in [0, shard_count={shard_count})")


def start_iterator(dataset: grain.IterDataset, state: dict | None) -> grain.DatasetIterator:
  iterator = iter(dataset)
  if state is not None:
    iterator.set_state(state)
  return iterator


class _TruncationLog:
  """Counts truncated examples; warns at the 1st, 10th, 100th, ... one."""

  def __init__(self, what: str, max_len: int):
    self._what, self._max_len = what, max_len
    self._seen = self._truncated = 0
    self._lock = threading.Lock()

  def count(self, truncated: bool) -> None:
    with self._lock:
      self._seen += 1
      self._truncated += truncated
      if truncated and str(self._truncated).strip("0") == "1":
        logging.warning("%d of %d %s so far were truncated to %d tokens.",
                        self._truncated, self._seen, self._what, self._max_len)


# ---------------------------------------------------------------------------- pretraining


class _PackedIterator(grain.DatasetIterator):
  """Concatenates token lists and cuts the stream into int32[window] arrays.

  The state is the parent's state before the current token list plus the
  offset into it, so restoring re-reads one record instead of storing tokens.
  (grain's `experimental.ConcatThenSplitIterDataset` cuts the same windows and resumes
  as exactly; it is not used because at the end of a single pass it pads a last partial
  window with zeros, which evaluation would count as tokens, and it computes positions and
  segment ids per window that a packed stream does not use.)
  """

  def __init__(self, parent: grain.DatasetIterator, window: int):
    super().__init__(parent)
    self._window = window
    self._state_before_tokens = parent.get_state()
    self._tokens = None  # None: (re)read the record at `_state_before_tokens`.
    self._offset = 0

  def __next__(self) -> np.ndarray:
    pieces, length = [], 0
    while length < self._window:
      if self._tokens is None or self._offset == len(self._tokens):
        if self._tokens is not None:
          self._state_before_tokens = self._parent.get_state()
          self._offset = 0
        self._tokens = next(self._parent)  # StopIteration drops a partial window.
        continue
      take = min(self._window - length, len(self._tokens) - self._offset)
      pieces.append(self._tokens[self._offset:self._offset + take])
      self._offset += take
      length += take
    return np.concatenate(pieces)

  def get_state(self) -> dict[str, Any]:
    return {"parent": self._state_before_tokens, "offset": self._offset}

  def set_state(self, state: dict[str, Any]) -> None:
    self._parent.set_state(state["parent"])
    self._state_before_tokens = state["parent"]
    self._tokens = None
    self._offset = state["offset"]


class _PackedIterDataset(grain.IterDataset):
  """int32[window] slices of the concatenated token lists of its parent."""

  def __init__(self, parent: grain.IterDataset, window: int):
    super().__init__(parent)
    self._window = window

  def __iter__(self) -> _PackedIterator:
    return _PackedIterator(iter(self._parent), self._window)


def _check_fills_a_batch(sources, records, needed: int, split: str) -> None:
  """Counts records' tokens until one batch's worth is found, else a UserError."""
  num_tokens = 0
  for tokens_of, index in records:
    num_tokens += len(tokens_of(index))
    if num_tokens >= needed:
      return
  names = ", ".join(name for name, _, _ in sources)
  raise UserError(f"the {split} split ({names}) has {num_tokens} tokens but one batch needs "
                  f"{needed} (batch_size × (seq_len + 1)); add data or lower batch_size/seq_len")


def pretrain_iterator(sources: Sequence[tuple[str, Any, float]], tokenizer, *, seq_len: int,
                      batch_size: int, seed: int, shuffle: bool = True, repeat: bool = True,
                      shard_index: int = 0, shard_count: int = 1, state: dict | None = None,
                      split: str = "", token_cache: str | None = None) -> grain.DatasetIterator:
  """{"tokens": int32[B, T]} windows of T = seq_len + 1 packed tokens.

  With `token_cache` (a cache directory, "" = the default one), each source is tokenized
  once into a token table (`token_cache.token_table`) and epochs read its arrays; the
  windows are the same either way.

  Documents end with EOS. With `repeat`, each source is packed on its own and
  the windows are mixed by weight, so token proportions follow the weights.
  Without `repeat`, the sources are read one after another in a single pass.
  """
  split = split or ("train" if repeat else "validation")
  window = seq_len + 1
  if not sources:
    raise UserError(f"no data sources for the {split} split; set --config.data.path")
  check_shard(shard_index, shard_count)
  per_source = []
  for i, (_, source, _) in enumerate(sources):
    indices = record_indices(len(source), seed=_source_seed(seed, i), shuffle=shuffle,
                             repeat=repeat)
    table = (None if token_cache is None
             else token_cache_lib.token_table(source, tokenizer, token_cache))
    tokens_of = (table.__getitem__ if table is not None else
                 lambda index, s=source: token_cache_lib.doc_tokens(s[index], tokenizer))
    per_source.append((indices.map(lambda index, f=tokens_of: (f, int(index))),
                       _READ_OPTIONS if table is None else _TABLE_READ_OPTIONS))
  if repeat:
    packed = [_PackedIterDataset(records.map(lambda r: r[0](r[1])).to_iter_dataset(options),
                                 window)
              for records, options in per_source]
    weights = np.asarray([weight for _, _, weight in sources], dtype=np.float64)
    windows = packed[0] if len(packed) == 1 else grain.IterDataset.mix(
        packed, list(weights / weights.sum()))
  else:
    all_records = [records for records, _ in per_source]
    records = grain.MapDataset.concatenate(all_records) if len(all_records) > 1 else all_records[0]
    _check_fills_a_batch(sources, records, batch_size * shard_count * window, split)
    options = (_TABLE_READ_OPTIONS if all(o is _TABLE_READ_OPTIONS for _, o in per_source)
               else _READ_OPTIONS)
    windows = _PackedIterDataset(records.map(lambda r: r[0](r[1])).to_iter_dataset(options),
                                 window)
  rows = slice(shard_index * batch_size, (shard_index + 1) * batch_size)
  batches = windows.batch(batch_size * shard_count, drop_remainder=True).map(
      lambda tokens_BxT: {"tokens": tokens_BxT[rows]})
  return start_iterator(batches, state)


# ---------------------------------------------------------------------------- examples


def example_reader(source, to_example: Callable[[int, dict], dict], *, tokenizer=None,
                   token_cache: str | None = None, cache_key: dict | None = None):
  """read(indices_N) -> {field: array [N, ...]} of `to_example(index, source[index])`.

  With `token_cache`, every record's example is encoded once into an example table
  (`token_cache.example_table`, keyed by the source, the tokenizer and `cache_key`) and
  reads are slices of it; the examples are the same either way.
  """
  table = (None if token_cache is None else
           token_cache_lib.example_table(source, tokenizer, to_example, cache_key, token_cache))

  def read(indices_N: np.ndarray) -> dict:
    if table is not None:
      return {key: np.asarray(values[indices_N]) for key, values in table.items()}
    examples = [to_example(int(index), source[int(index)]) for index in indices_N]
    return {key: np.stack([e[key] for e in examples]) for key in examples[0]}
  return read, _READ_OPTIONS if table is None else _TABLE_READ_OPTIONS


def _example_iterator(source, to_example: Callable[[int, dict], dict], *, batch_size: int,
                      seed: int, shuffle: bool, repeat: bool, shard_index: int,
                      shard_count: int, state: dict | None, split: str, tokenizer=None,
                      token_cache: str | None = None, cache_key: dict | None = None):
  """Batches of `to_example(record_index, record)` dicts, stacked along a new axis 0, read
  through `example_reader` (a global batch of indices at a time, this process's rows)."""
  check_shard(shard_index, shard_count)
  indices = record_indices(len(source), seed=seed, shuffle=shuffle, repeat=repeat)
  if not repeat and len(indices) < batch_size * shard_count:
    raise UserError(f"the {split} split has {len(indices)} records but one batch needs "
                    f"{batch_size * shard_count}; add data or lower the batch size")
  rows = slice(shard_index * batch_size, (shard_index + 1) * batch_size)
  read, _ = example_reader(source, to_example, tokenizer=tokenizer, token_cache=token_cache,
                           cache_key=cache_key)
  batches = indices.batch(batch_size * shard_count, drop_remainder=True).map(
      lambda indices_B: read(indices_B[rows]))
  return start_iterator(batches.to_iter_dataset(_BATCH_READ_OPTIONS), state)


def _pad_right(ids: Sequence[int], length: int, pad: int) -> np.ndarray:
  out = np.full(length, pad, dtype=np.int32)
  out[:len(ids)] = ids[:length]
  return out


def _fit(context: list[int], target: list[int], max_len: int) -> tuple[list[int], int]:
  """Cuts context + target to max_len tokens; returns (ids, where the target starts).

  The context (prompt, earlier turns) loses its oldest tokens first, so the
  target always survives; a target longer than half the row keeps at least
  max_len // 2 context tokens and loses its own end instead.
  """
  if len(context) + len(target) <= max_len:
    return context + target, len(context)
  keep = max(max_len - len(target), min(len(context), max_len // 2))
  kept = context[len(context) - keep:]
  return (kept + target)[:max_len], len(kept)


def sft_examples(tokenizer, max_len: int) -> tuple[Callable[[int, dict], dict], dict]:
  """(to_example, cache key) of SFT rows: {"tokens": int32[L] right-padded with pad_id,
  "loss_mask": int32[L]}, cut by `_fit` (counted in a warning)."""
  truncations = _TruncationLog("SFT examples", max_len)

  def to_example(index: int, record: dict) -> dict:
    del index
    ids, loss_mask = tokenizer.encode_chat(record["messages"])
    truncations.count(len(ids) > max_len)
    final_turn = len(ids) - ids[::-1].index(tokenizer.assistant_id)
    ids, start = _fit(ids[:final_turn], ids[final_turn:], max_len)
    loss_mask = (loss_mask[final_turn - start:final_turn] + loss_mask[final_turn:])[:max_len]
    return {"tokens": _pad_right(ids, max_len, tokenizer.pad_id),
            "loss_mask": _pad_right(loss_mask, max_len, 0)}
  return to_example, dict(kind="sft", max_len=max_len)


def sft_iterator(source, tokenizer, *, max_len: int, batch_size: int, seed: int,
                 shuffle: bool = True, repeat: bool = True, shard_index: int = 0,
                 shard_count: int = 1, state: dict | None = None, split: str = "",
                 token_cache: str | None = None):
  """{"tokens": int32[B, L] right-padded with pad_id, "loss_mask": int32[B, L]}.

  loss_mask is 1 on assistant content and its EOS. A conversation longer than
  L is cut by `_fit`: earlier turns lose their oldest tokens so that the final
  assistant turn is kept (counted in a warning).
  """
  to_example, cache_key = sft_examples(tokenizer, max_len)
  return _example_iterator(source, to_example, batch_size=batch_size, seed=seed,
                           shuffle=shuffle, repeat=repeat, shard_index=shard_index,
                           shard_count=shard_count, state=state,
                           split=split or ("train" if repeat else "validation"),
                           tokenizer=tokenizer, token_cache=token_cache, cache_key=cache_key)


def preference_rows(tokenizer, prompt: Sequence[dict], responses: Sequence[str], *,
                    max_len: int, num_rows: int):
  """(tokens int32[K, L], response_mask int32[K, L], truncated bool[K]) of one record.

  Row k is prompt (chat template + generation prompt), response k and EOS, right-padded
  with pad_id; rows past len(responses) are all padding. The prompt is cut once per
  record, so every row sees the same prompt tokens: when the longest response (with
  EOS) does not fit, the prompt keeps its newest max(L − longest, min(prompt, L // 2))
  tokens. A response longer than the rest of the row loses its end but keeps the EOS
  as its last token, where the reward model reads its score.
  """
  prompt_ids, _ = tokenizer.encode_chat(prompt, add_generation_prompt=True)
  response_ids = tokenizer.encode_batch(list(responses))
  longest = max(len(ids) for ids in response_ids) + 1
  keep = len(prompt_ids)
  if keep + longest > max_len:
    keep = max(max_len - longest, min(keep, max_len // 2))
  prompt_cut = keep < len(prompt_ids)
  prompt_ids = prompt_ids[len(prompt_ids) - keep:]
  budget = max_len - keep  # response tokens + EOS
  tokens_KxL = np.full((num_rows, max_len), tokenizer.pad_id, dtype=np.int32)
  response_mask_KxL = np.zeros((num_rows, max_len), dtype=np.int32)
  truncated_K = np.zeros(num_rows, dtype=bool)
  for k, ids in enumerate(response_ids):
    truncated_K[k] = prompt_cut or len(ids) + 1 > budget
    ids = ids[:budget - 1] + [tokenizer.eos_id]
    tokens_KxL[k, :keep] = prompt_ids
    tokens_KxL[k, keep:keep + len(ids)] = ids
    response_mask_KxL[k, keep:keep + len(ids)] = 1
  return tokens_KxL, response_mask_KxL, truncated_K


def preference_examples(tokenizer, max_len: int,
                        num_responses: int) -> tuple[Callable[[int, dict], dict], dict]:
  """(to_example, cache key) of preference records: {"tokens": int32[K, L],
  "response_mask": int32[K, L], "ranking": int32[K], "index": int32} (see
  `preference_iterator`)."""
  truncations = _TruncationLog("preference records", max_len)

  def to_example(index: int, record: dict) -> dict:
    responses = record["responses"]
    if len(responses) > num_responses:
      raise UserError(f"a preference record (#{index}) has {len(responses)} responses but "
                      f"num_responses={num_responses}; raise num_responses in the config")
    tokens_KxL, response_mask_KxL, truncated_K = preference_rows(
        tokenizer, record["prompt"], responses, max_len=max_len, num_rows=num_responses)
    truncations.count(bool(truncated_K.any()))
    ranking_K = np.full(num_responses, -1, dtype=np.int32)
    ranking_K[:len(responses)] = record["ranking"]
    return {"tokens": tokens_KxL, "response_mask": response_mask_KxL, "ranking": ranking_K,
            "index": np.int32(index)}
  return to_example, dict(kind="preference", max_len=max_len, num_responses=num_responses)


def preference_iterator(source, tokenizer, *, max_len: int, num_responses: int,
                        batch_size: int, seed: int, shuffle: bool = True, repeat: bool = True,
                        shard_index: int = 0, shard_count: int = 1, state: dict | None = None,
                        split: str = "", token_cache: str | None = None):
  """{"tokens": int32[B, K, L], "response_mask": int32[B, K, L], "ranking": int32[B, K],
  "index": int32[B]}.

  Rows come from `preference_rows`: one prompt truncation per record, every response
  ending in EOS; response_mask is 1 on the response and its EOS. ranking is the
  record's (0 = best, ties equal) and -1 for rows of missing responses (records with
  fewer than K responses). index is the record's position in `source` (for its "meta").
  Truncated rows are counted in a warning.
  """
  to_example, cache_key = preference_examples(tokenizer, max_len, num_responses)
  return _example_iterator(source, to_example, batch_size=batch_size, seed=seed,
                           shuffle=shuffle, repeat=repeat, shard_index=shard_index,
                           shard_count=shard_count, state=state,
                           split=split or ("train" if repeat else "validation"),
                           tokenizer=tokenizer, token_cache=token_cache, cache_key=cache_key)


def prompt_iterator(source, tokenizer, *, max_prompt_len: int, batch_size: int, seed: int,
                    shuffle: bool = True, repeat: bool = True, shard_index: int = 0,
                    shard_count: int = 1, state: dict | None = None, split: str = "",
                    token_cache: str | None = None):
  """{"tokens": int32[B, P] left-padded, "mask": int32[B, P] (1 = real), "index": int32[B]}.

  tokens are the chat template plus the generation prompt; longer prompts
  keep their last P tokens. index is the record's position in `source`
  (to look up its "meta").
  """
  truncations = _TruncationLog("prompts", max_prompt_len)

  def to_example(index: int, record: dict) -> dict:
    ids, _ = tokenizer.encode_chat(record["messages"], add_generation_prompt=True)
    truncations.count(len(ids) > max_prompt_len)
    ids = ids[-max_prompt_len:]
    num_pads = max_prompt_len - len(ids)
    tokens_P = np.full(max_prompt_len, tokenizer.pad_id, dtype=np.int32)
    tokens_P[num_pads:] = ids
    mask_P = np.zeros(max_prompt_len, dtype=np.int32)
    mask_P[num_pads:] = 1
    return {"tokens": tokens_P, "mask": mask_P, "index": np.int32(index)}

  return _example_iterator(source, to_example, batch_size=batch_size, seed=seed,
                           shuffle=shuffle, repeat=repeat, shard_index=shard_index,
                           shard_count=shard_count, state=state,
                           split=split or ("train" if repeat else "validation"),
                           tokenizer=tokenizer, token_cache=token_cache,
                           cache_key=dict(kind="prompt", max_prompt_len=max_prompt_len))
