"""Data throughput: tokens/s of the pretraining iterator from raw text and from the token cache.

Builds a local corpus dataset (`--path`, or a generated one of `--docs` documents), trains
or loads a tokenizer, then measures on this machine:
  tokenize_once — building the token table (`data.token_cache`): the first epoch's cost;
  raw           — `pipeline.pretrain_iterator` tokenizing every record as it reads it;
  cached        — the same iterator reading the token table (identical windows).
tokens/s = batches · batch · (seq_len + 1) / seconds, after one warm-up batch.

  python benchmarks/data_throughput.py --docs=20000 --seq_len=1024 --batch=8 --json
  python benchmarks/data_throughput.py --path=../shared/data/shakespeare/input.txt --json
"""
import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

from rlhf_jax import tokenizer as tokenizer_lib
from rlhf_jax.data import pipeline, store, token_cache


def parse_args(argv):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--path", default="", help="a corpus file (any corpus format); default: generated")
  p.add_argument("--docs", type=int, default=20000, help="generated documents")
  p.add_argument("--vocab", type=int, default=4096, help="BPE vocabulary trained on the corpus")
  p.add_argument("--seq_len", type=int, default=1024)
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--raw_batches", type=int, default=20)
  p.add_argument("--cached_batches", type=int, default=2000)
  p.add_argument("--json", action="store_true")
  return p.parse_args(argv)


def generated_corpus(path: str, docs: int) -> None:
  """Documents of 20–400 words drawn from a 2,000-word vocabulary (Zipf-like frequencies)."""
  rng = np.random.default_rng(0)
  words = ["".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz"), size=rng.integers(2, 9)))
           for _ in range(2000)]
  weights = 1.0 / np.arange(1, len(words) + 1)
  weights /= weights.sum()
  with open(path, "w", encoding="utf-8") as f:
    for _ in range(docs):
      text = " ".join(rng.choice(words, size=rng.integers(20, 400), p=weights))
      f.write(json.dumps({"text": text}) + "\n")


def tokens_per_sec(iterator, batches: int, batch: int, window: int) -> float:
  next(iterator)  # warm-up: threads start, first records read
  start = time.perf_counter()
  for _ in range(batches):
    next(iterator)
  return batches * batch * window / (time.perf_counter() - start)


def main(argv=None) -> dict:
  args = parse_args(argv)
  work = tempfile.mkdtemp(prefix="data_throughput_")
  path = args.path or os.path.join(work, "corpus.jsonl")
  if not args.path:
    generated_corpus(path, args.docs)
  cache = os.path.join(work, "cache")
  source = store.local_dataset(path, "corpus", cache=cache)["train"]
  texts = (source[i]["text"] for i in range(min(len(source), 5000)))
  tok = tokenizer_lib.train_bpe(texts, vocab_size=args.vocab)

  start = time.perf_counter()
  table = token_cache.token_table(source, tok, cache)
  build_s = time.perf_counter() - start
  num_tokens = int(table.offsets[-1])

  def iterator(cached):
    return pipeline.pretrain_iterator([("corpus", source, 1.0)], tok, seq_len=args.seq_len,
                                      batch_size=args.batch, seed=0,
                                      token_cache=cache if cached else None)

  window = args.seq_len + 1
  result = {
      "cpus": os.cpu_count(), "records": len(source), "tokens": num_tokens,
      "seq_len": args.seq_len, "batch": args.batch,
      "tokenize_once_s": build_s, "tokenize_once_tokens_per_sec": num_tokens / build_s,
      "raw_tokens_per_sec": tokens_per_sec(iterator(False), args.raw_batches, args.batch, window),
      "cached_tokens_per_sec": tokens_per_sec(iterator(True), args.cached_batches, args.batch,
                                              window),
  }
  if args.json:
    print(json.dumps(result))
  else:
    for key, value in result.items():
      print(f"{key:>30}: {value}")
  return result


if __name__ == "__main__":
  main(sys.argv[1:])
