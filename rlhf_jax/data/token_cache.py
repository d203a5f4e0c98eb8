"""Each corpus source tokenized once per tokenizer; epochs then read token arrays.

A source with a `fingerprint` (every dataset `store` builds: its name holds a hash of the
content) is tokenized on first use into `<cache>/tokens/<key>/`, key = hash(source
fingerprint, tokenizer fingerprint):
  tokens.bin   int32, every record's ids back to back (EOS appended where a document ends);
  offsets.npy  int64 [num_records + 1]; record i is tokens[offsets[i]:offsets[i + 1]];
  meta.json    written last: its presence marks a complete table.
Both arrays are memory-mapped, so a table costs no RAM and any record is one slice.
(Flat arrays rather than array_record: random access to a record's ids is a slice of a
memory map, with no per-record decode; grain reads them through the same index order.)
Records are encoded in chunks through `tokenizers`' batch encoding, which runs in parallel
in Rust. A source without a fingerprint (an in-memory list) is tokenized on the fly.
"""
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from typing import Sequence

import numpy as np

from rlhf_jax.data import store

_VERSION = 1
_CHUNK = 1024  # records per batch-encode call


def doc_tokens(record: dict, tokenizer) -> np.ndarray:
  """int32 ids of a corpus record, EOS appended iff the record ends a document."""
  ids = tokenizer.encode(record["text"])
  if record.get("doc_end", True):
    ids.append(tokenizer.eos_id)
  return np.asarray(ids, dtype=np.int32)


class TokenTable(Sequence):
  """Record index → int32 ids (read-only views into the memory-mapped token file)."""

  def __init__(self, directory: str):
    self.offsets = np.load(os.path.join(directory, "offsets.npy"), mmap_mode="r")
    total = int(self.offsets[-1])
    self.tokens = (np.memmap(os.path.join(directory, "tokens.bin"), np.int32, "r", shape=(total,))
                   if total else np.zeros((0,), np.int32))

  def __len__(self) -> int:
    return len(self.offsets) - 1

  def __getitem__(self, index: int) -> np.ndarray:
    return self.tokens[self.offsets[index]:self.offsets[index + 1]]


def _built_once(root: str, parts: list, write) -> str:
  """`<root>/<hash(parts)>`, made once: `write(tmp_dir) -> meta` fills a temporary directory,
  `meta.json` is written last and the directory renamed into place, under a file lock. A
  directory left without its `meta.json` (a build killed half way) is built again."""
  key = hashlib.sha256(json.dumps([_VERSION, *parts], sort_keys=True).encode()).hexdigest()[:16]
  directory = os.path.join(root, key)
  if not os.path.exists(os.path.join(directory, "meta.json")):
    with store.file_lock(os.path.join(root, f".{key}.lock")):
      if not os.path.exists(os.path.join(directory, "meta.json")):
        shutil.rmtree(directory, ignore_errors=True)
        tmp = tempfile.mkdtemp(prefix=".incomplete_", dir=root)
        try:
          meta = write(tmp)
          with open(os.path.join(tmp, "meta.json"), "w", encoding="utf-8") as f:
            json.dump({"version": _VERSION, **meta}, f)
          os.rename(tmp, directory)
        except BaseException:
          shutil.rmtree(tmp, ignore_errors=True)
          raise
  return directory


def _write_tokens(source, tokenizer, tmp: str) -> dict:
  """Every record's ids (EOS where a document ends) into `tmp`; returns the table's meta."""
  start = time.perf_counter()
  offsets = [0]
  with open(os.path.join(tmp, "tokens.bin"), "wb") as out:
    for first in range(0, len(source), _CHUNK):
      records = source.__getitems__(list(range(first, min(first + _CHUNK, len(source)))))
      for record, ids in zip(records, tokenizer.encode_batch([r["text"] for r in records])):
        if record.get("doc_end", True):
          ids.append(tokenizer.eos_id)
        out.write(np.asarray(ids, np.int32).tobytes())
        offsets.append(offsets[-1] + len(ids))
  np.save(os.path.join(tmp, "offsets.npy"), np.asarray(offsets, np.int64))
  seconds = time.perf_counter() - start
  logging.info("Tokenized %d records (%d tokens) of %s once in %.1f s (%.0f tokens/s)",
               len(source), offsets[-1], source.fingerprint, seconds,
               offsets[-1] / max(seconds, 1e-9))
  return {"records": len(source), "tokens": offsets[-1], "seconds": seconds}


def token_table(source, tokenizer, cache: str) -> TokenTable | None:
  """The source's token table, tokenizing it once; None when the source has no fingerprint."""
  fingerprint = getattr(source, "fingerprint", "")
  if not fingerprint:
    return None
  return TokenTable(_built_once(
      os.path.join(store.cache_dir(cache), "tokens"), [fingerprint, tokenizer.fingerprint],
      lambda tmp: _write_tokens(source, tokenizer, tmp)))


def example_table(source, tokenizer, to_example, key: dict, cache: str) -> dict | None:
  """{field: array [num_records, ...]} of `to_example(i, source[i])` for every record, built
  once into `<cache>/examples/<hash>/` and memory-mapped; None without a fingerprint.

  `key` names everything besides the source and the tokenizer that decides the examples
  (the pipeline and its lengths), e.g. {"kind": "sft", "max_len": 512}.
  """
  fingerprint = getattr(source, "fingerprint", "")
  if not fingerprint:
    return None

  def write(tmp: str) -> dict:
    start = time.perf_counter()
    examples = [to_example(i, source[i]) for i in range(len(source))]
    for field in examples[0]:
      np.save(os.path.join(tmp, f"{field}.npy"), np.stack([e[field] for e in examples]))
    logging.info("Encoded %d %s examples of %s once in %.1f s", len(examples),
                 key.get("kind", ""), fingerprint, time.perf_counter() - start)
    return {"records": len(examples), "key": key, "fields": sorted(examples[0])}

  directory = _built_once(os.path.join(store.cache_dir(cache), "examples"),
                          [fingerprint, tokenizer.fingerprint, key], write)
  with open(os.path.join(directory, "meta.json"), encoding="utf-8") as f:
    fields = json.load(f)["fields"]
  return {field: np.load(os.path.join(directory, f"{field}.npy"), mmap_mode="r")
          for field in fields}
