"""Packed rows (`data.pack`): several SFT or reward-model examples per row of L tokens.

Examples are encoded and truncated exactly as unpacked (`pipeline.sft_examples`,
`pipeline.preference_examples`, the same example tables), then placed whole, greedy
first-fit, in the order of the shuffled records. Along a row, `segment_ids` number the
examples 1, 2, ... (0 = padding); the model lets a token attend only to earlier tokens of
its own segment, and positions restart at 0 in each (`gpt.GPT.hidden_states`). Reward-
model rows can also share a record's prompt among its responses (`branch_ids`). A batch
is closed when the next example fits in none of its rows; that example opens the next
batch: nothing is dropped, and every batch has the same shapes. The iterator state is the
position of the first example not yet emitted, so a resume packs the same batches.

Processes: every process packs the whole global batch (reading each of its records) and
keeps its share of the rows (and records), so batches and states do not depend on the
process count.

Dimensions: R rows, L row length, B records, K responses per record, G groups.
"""
from typing import Any

import grain
import numpy as np

from rlhf_jax.data import pipeline
from rlhf_jax.errors import UserError


def _examples(source, to_example, cache_key: dict, *, tokenizer, seed: int, shuffle: bool,
              repeat: bool, token_cache: str | None) -> grain.IterDataset:
  """One example dict per record, records in `pipeline`'s (shuffled, repeated) order."""
  read, options = pipeline.example_reader(source, to_example, tokenizer=tokenizer,
                                          token_cache=token_cache, cache_key=cache_key)
  indices = pipeline.record_indices(len(source), seed=seed, shuffle=shuffle, repeat=repeat)
  return indices.map(lambda index: {key: value[0] for key, value in
                                    read(np.asarray([index])).items()}).to_iter_dataset(options)


def _fill_rows(x_NxL: np.ndarray, num_rows: int, pad: int) -> np.ndarray:
  """x with `pad` rows appended up to num_rows (a last, partial batch of a single pass)."""
  missing = num_rows - len(x_NxL)
  return np.concatenate([x_NxL, np.full((missing, *x_NxL.shape[1:]), pad, x_NxL.dtype)])


def sft_iterator(source, tokenizer, *, max_len: int, batch_size: int, seed: int,
                 shuffle: bool = True, repeat: bool = True, shard_index: int = 0,
                 shard_count: int = 1, state: dict | None = None,
                 token_cache: str | None = None) -> grain.DatasetIterator:
  """{"tokens": int32[R, L], "loss_mask": int32[R, L], "segment_ids": int32[R, L]}, R =
  batch_size rows, each holding whole examples of `pipeline.sft_iterator` (without their
  padding), the loss mask kept per token; the rest of a row is pad_id / 0 / segment 0.

  grain's `FirstFitPackIterDataset` with one bin per row of the global batch: it fills the
  rows first-fit until an example fits none, emits them (one batch, every row holding an
  example), and starts the next batch with that example. Without `repeat`, the last batch
  is completed with padding rows. Targets never cross a segment boundary: that is the
  loss's part (`lm.next_token_loss_sum` with segment ids).
  """
  pipeline.check_shard(shard_index, shard_count)
  to_example, cache_key = pipeline.sft_examples(tokenizer, max_len)
  examples = _examples(source, to_example, cache_key, tokenizer=tokenizer, seed=seed,
                       shuffle=shuffle, repeat=repeat, token_cache=token_cache)
  pad = tokenizer.pad_id

  def unpad(example: dict) -> dict:
    # Pads are on the right only, and no text encodes to pad_id (special tokens are escaped).
    length = int(np.count_nonzero(example["tokens"] != pad))
    return {key: example[key][:length] for key in ("tokens", "loss_mask")}

  num_rows = batch_size * shard_count
  packed = grain.experimental.FirstFitPackIterDataset(
      examples.map(unpad), length_struct={"tokens": max_len, "loss_mask": max_len},
      num_packing_bins=num_rows, shuffle_bins=False,
      padding_struct={"tokens": pad, "loss_mask": 0})
  rows = slice(shard_index * batch_size, (shard_index + 1) * batch_size)

  def to_batch(packed_rows: dict) -> dict:
    fields = {"tokens": (packed_rows["tokens"], pad),
              "loss_mask": (packed_rows["loss_mask"], 0),
              "segment_ids": (packed_rows["tokens_segment_ids"], 0)}
    return {key: _fill_rows(x_NxL, num_rows, fill)[rows] for key, (x_NxL, fill) in fields.items()}

  return pipeline.start_iterator(packed.batch(num_rows).map(to_batch), state)


# ---------------------------------------------------------------------------- reward model


def _first_fit(fill_R: np.ndarray, lengths: list[int], max_len: int) -> list[int] | None:
  """Rows of a first-fit placement of `lengths` after rows already filled to fill_R, or
  None when one of them fits in no row."""
  fill_R = fill_R.copy()
  rows = []
  for length in lengths:
    fits = np.flatnonzero(fill_R + length <= max_len)
    if not len(fits):
      return None
    rows.append(int(fits[0]))
    fill_R[fits[0]] += length
  return rows


class _RecordBatch:
  """One packed reward-model batch being filled: G groups, each of R rows and B records.

  A record goes whole into the first group with a free record slot where all its parts
  fit (first-fit over that group's rows). A part is one segment: the prompt, then one
  response (or, with `share_prompt`, as many of the record's responses as fit in a row,
  each after the one before but attending only to the prompt and itself: branch ids 0 for
  the prompt, k + 1 for response k, and positions as if alone after the prompt). Each
  score is read at (score_row, score_pos), its response's EOS, with rows counted within
  the group.
  """

  def __init__(self, num_groups: int, num_rows: int, num_records: int, row_len: int,
               num_responses: int, pad_id: int, share_prompt: bool):
    g, r, b, k = num_groups, num_rows, num_records, num_responses
    self.row_len, self.share_prompt = row_len, share_prompt
    self.tokens_GxRxL = np.full((g, r, row_len), pad_id, np.int32)
    self.segment_ids_GxRxL = np.zeros((g, r, row_len), np.int32)
    self.branch_ids_GxRxL = np.zeros((g, r, row_len), np.int32)
    self.positions_GxRxL = np.zeros((g, r, row_len), np.int32)
    self.fill_GxR = np.zeros((g, r), np.int64)         # tokens placed in each row
    self.segments_GxR = np.zeros((g, r), np.int32)     # parts placed in each row
    self.ranking_GxBxK = np.full((g, b, k), -1, np.int32)
    self.index_GxB = np.full((g, b), -1, np.int32)
    self.score_row_GxBxK = np.zeros((g, b, k), np.int32)
    self.score_pos_GxBxK = np.zeros((g, b, k), np.int32)
    self.records_G = np.zeros(g, np.int64)

  def _parts(self, prompt_lens: list[int], ends: list[int]):
    """(parts, their lengths): responses (indices into the present ones) grouped one per
    part, or with share_prompt consecutive ones with the same prompt while prompt +
    responses fit a row. A part's length is its prompt plus its responses with EOS."""
    parts, lengths = [], []
    for i, (prompt_len, end) in enumerate(zip(prompt_lens, ends)):
      if (self.share_prompt and parts and prompt_lens[parts[-1][0]] == prompt_len
          and lengths[-1] + end - prompt_len <= self.row_len):
        parts[-1].append(i)
        lengths[-1] += end - prompt_len
      else:
        parts.append([i])
        lengths.append(end)
    return parts, lengths

  def add(self, example: dict) -> bool:
    """Places a `pipeline.preference_examples` record; False when it fits in no group."""
    present = np.flatnonzero(example["response_mask"].any(axis=1))
    # A response row is its prompt (up to the mask's first token), response and EOS (the
    # mask's last token).
    prompt_lens = [int(np.flatnonzero(example["response_mask"][k])[0]) for k in present]
    ends = [int(np.flatnonzero(example["response_mask"][k])[-1]) + 1 for k in present]
    parts, lengths = self._parts(prompt_lens, ends)
    for g in range(len(self.records_G)):
      if self.records_G[g] == self.index_GxB.shape[1]:
        continue
      rows = _first_fit(self.fill_GxR[g], lengths, self.row_len)
      if rows is not None:
        self._write(g, example, present, prompt_lens, ends, parts, rows)
        return True
    return False

  def _write(self, g: int, example: dict, present, prompt_lens, ends, parts, rows):
    b = self.records_G[g]
    self.records_G[g] += 1
    self.ranking_GxBxK[g, b] = example["ranking"]
    self.index_GxB[g, b] = example["index"]
    tokens_KxL = example["tokens"]
    for part, row in zip(parts, rows):
      self.segments_GxR[g, row] += 1
      prompt_len = prompt_lens[part[0]]
      pieces = [(0, tokens_KxL[present[part[0]], :prompt_len], 0)] + [
          (int(present[i]) + 1, tokens_KxL[present[i], prompt_len:ends[i]], prompt_len)
          for i in part]
      for branch, piece, first_position in pieces:
        start, n = self.fill_GxR[g, row], len(piece)
        span = slice(start, start + n)
        self.tokens_GxRxL[g, row, span] = piece
        self.segment_ids_GxRxL[g, row, span] = self.segments_GxR[g, row]
        self.branch_ids_GxRxL[g, row, span] = branch
        self.positions_GxRxL[g, row, span] = np.arange(first_position, first_position + n)
        self.fill_GxR[g, row] += n
        if branch:
          self.score_row_GxBxK[g, b, branch - 1] = row
          self.score_pos_GxBxK[g, b, branch - 1] = start + n - 1

  @property
  def empty(self) -> bool:
    return not self.records_G.any()

  def arrays(self) -> dict[str, np.ndarray]:
    """The batch with groups interleaved (group g = rows and records g, g + G, ...), the
    order in which `base.split_microbatches` takes microbatches: group g is microbatch g."""
    def interleave(x_GxN):
      return np.swapaxes(x_GxN, 0, 1).reshape(-1, *x_GxN.shape[2:])
    return {"tokens": interleave(self.tokens_GxRxL),
            "segment_ids": interleave(self.segment_ids_GxRxL),
            "branch_ids": interleave(self.branch_ids_GxRxL),
            "positions": interleave(self.positions_GxRxL),
            "ranking": interleave(self.ranking_GxBxK), "index": interleave(self.index_GxB),
            "score_row": interleave(self.score_row_GxBxK),
            "score_pos": interleave(self.score_pos_GxBxK)}


class _RecordPackIterator(grain.DatasetIterator):
  """Packed reward-model batches of the parent's records.

  (Hand-written rather than grain's `FirstFitPackIterDataset`: grain places each element
  independently, while a record's K responses must land in one batch, and one group, with
  its ranking, and each needs the row and offset of its EOS.) The state is the parent's
  state before the record that opens the next batch.
  """

  def __init__(self, parent: grain.DatasetIterator, new_batch):
    super().__init__(parent)
    self._new_batch = new_batch
    self._pending = None  # a record read but not placed: it opens the next batch
    self._state_before_pending = None

  def __next__(self) -> dict[str, np.ndarray]:
    batch = self._new_batch()
    while True:
      if self._pending is None:
        self._state_before_pending = self._parent.get_state()
        try:
          self._pending = next(self._parent)
        except StopIteration:
          if batch.empty:
            raise
          return batch.arrays()
      if not batch.add(self._pending):
        assert not batch.empty, "a record fits in no empty group"  # rows per group >= K
        return batch.arrays()
      self._pending = None

  def get_state(self) -> dict[str, Any]:
    return {"parent": (self._parent.get_state() if self._pending is None
                       else self._state_before_pending)}

  def set_state(self, state: dict[str, Any]) -> None:
    self._parent.set_state(state["parent"])
    self._pending = None


class _RecordPackIterDataset(grain.IterDataset):

  def __init__(self, parent: grain.IterDataset, new_batch):
    super().__init__(parent)
    self._new_batch = new_batch

  def __iter__(self) -> _RecordPackIterator:
    return _RecordPackIterator(iter(self._parent), self._new_batch)


def preference_iterator(source, tokenizer, *, max_len: int, num_responses: int,
                        batch_size: int, num_rows: int, num_groups: int = 1, seed: int,
                        shuffle: bool = True, repeat: bool = True, shard_index: int = 0,
                        shard_count: int = 1, state: dict | None = None,
                        token_cache: str | None = None, split: str = "", row_len: int = 0,
                        share_prompt: bool = False) -> grain.DatasetIterator:
  """{"tokens", "segment_ids", "branch_ids", "positions": int32[R, L], "ranking":
  int32[B, K], "index": int32[B], "score_row", "score_pos": int32[B, K]}: at most B =
  batch_size records per batch, their responses packed into R = num_rows rows of
  L = row_len tokens (0: max_len).

  Each response row of `pipeline.preference_iterator` (prompt, response, EOS; truncated
  alike to max_len) is a segment, or with `share_prompt` a record's responses follow one
  copy of its prompt (`_RecordBatch`: about 40% fewer tokens on the world's rankings); the
  score of response k of record b is read at row score_row[b, k]
  (counted within b's group), position score_pos[b, k]. Record slots left empty, and
  missing responses, have ranking -1 (no pair in the loss) and index -1. The global batch
  is packed as `num_groups` independent groups (the microbatches of gradient accumulation:
  a record's rows must be in its microbatch), interleaved as in `_RecordBatch.arrays`.
  A single pass (repeat=False) ends with a partial batch, so no record is left out;
  `split` names the source as the unpacked iterator's argument does (unused here).
  """
  del split
  pipeline.check_shard(shard_index, shard_count)
  row_len = row_len or max_len
  if row_len < max_len:
    raise UserError(f"packed rows of {row_len} tokens cannot hold a response row of up to "
                    f"{max_len} (data.seq_len); raise --config.rm.pack_len to at least "
                    f"{max_len}, or 0 for data.seq_len")
  total_rows, total_records = num_rows * shard_count, batch_size * shard_count
  if total_rows % num_groups or total_records % num_groups:
    raise UserError(f"{total_rows} rows and {total_records} records per batch do not split "
                    f"into {num_groups} microbatches; use multiples of {num_groups}")
  if total_rows // num_groups < num_responses:
    raise UserError(f"packed reward-model batches of {total_rows} rows in {num_groups} "
                    f"microbatches leave {total_rows // num_groups} rows per microbatch, "
                    f"fewer than a record's {num_responses} responses may need; raise "
                    f"--config.rm.pack_rows to at least {num_responses * num_groups}")
  to_example, cache_key = pipeline.preference_examples(tokenizer, max_len, num_responses)
  examples = _examples(source, to_example, cache_key, tokenizer=tokenizer, seed=seed,
                       shuffle=shuffle, repeat=repeat, token_cache=token_cache)
  packed = _RecordPackIterDataset(examples, lambda: _RecordBatch(
      num_groups, total_rows // num_groups, total_records // num_groups, row_len,
      num_responses, tokenizer.pad_id, share_prompt))
  rows = slice(shard_index * num_rows, (shard_index + 1) * num_rows)
  records = slice(shard_index * batch_size, (shard_index + 1) * batch_size)
  return pipeline.start_iterator(packed.map(lambda batch: {
      key: value[rows if key in ("tokens", "segment_ids", "branch_ids", "positions")
                 else records]
      for key, value in batch.items()}), state)
