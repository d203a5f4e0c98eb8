"""Packing fill: real (non-pad) tokens per row of SFT or reward-model batches, unpacked vs
packed (`data.pack`), and for rankings also packed with shared prompts (`rm.share_prompt`).

One unshuffled pass over an SFT split (default: the world's demonstrations,
`world:small:0/sft`, train split) in rows of --seq_len tokens, --batch rows per batch, with
the tokenizer of --tokenizer (a tokenizer.json, e.g. a world_sft workdir's) or else a BPE of
--vocab ids trained on the demonstrations. Per iterator:
  rows              rows the pass takes (steps × batch);
  real_per_row      mean real tokens per row (padding excluded);
  fill              real_per_row / seq_len;
  examples_per_row  examples (segments) per row.

  python benchmarks/packing_fill.py --seq_len=128 --batch=16 --json

With --rankings (default data `world:small:0/rankings`), one pass over the training
rankings in --batch records per step: unpacked rows (batch × K rows of --seq_len), packed
(--pack_rows rows of --seq_len, one response per segment) and shared (--shared_rows rows
of --shared_len, a record's responses after one copy of its prompt), each with
  steps             batches the pass takes (a packed batch closes when a record spills);
  tokens            steps × rows × row length: what the backbone computes on;
  relative_tokens   tokens / the unpacked pass's tokens.

  python benchmarks/packing_fill.py --rankings --seq_len=96 --batch=16 \
      --tokenizer=runs/world_sft/tokenizer.json --json
"""
import argparse
import json
import sys

import numpy as np

from rlhf_jax import tokenizer as tokenizer_lib
from rlhf_jax.data import packing, pipeline, store
from rlhf_jax.tasks import preferences, sft


def parse_args(argv):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--data", default="world:small:0/sft", help="SFT files or a world spec")
  p.add_argument("--tokenizer", default="", help="a tokenizer.json; default: train a BPE")
  p.add_argument("--vocab", type=int, default=2048, help="BPE vocabulary when training one")
  p.add_argument("--seq_len", type=int, default=128)
  p.add_argument("--batch", type=int, default=16)
  p.add_argument("--json", action="store_true")
  p.add_argument("--rankings", action="store_true", help="reward-model batches of rankings")
  p.add_argument("--pack_rows", type=int, default=32, help="rankings: packed rows per batch")
  p.add_argument("--shared_rows", type=int, default=8, help="rankings: shared-prompt rows")
  p.add_argument("--shared_len", type=int, default=192, help="rankings: shared-prompt row length")
  args = p.parse_args(argv)
  if args.rankings and args.data == "world:small:0/sft":
    args.data = "world:small:0/rankings"
  return args


def fill(batches, pad_id: int, seq_len: int) -> dict:
  """Rows, real tokens per row, fill and examples per row of a pass's batches."""
  real_R, examples_R = [], []
  for batch in batches:
    real_R.append(np.count_nonzero(batch["tokens"] != pad_id, axis=1))
    if "segment_ids" in batch:
      examples_R.append(batch["segment_ids"].max(axis=1))
    else:
      examples_R.append((real_R[-1] > 0).astype(np.int64))
  real_R, examples_R = np.concatenate(real_R), np.concatenate(examples_R)
  return {"rows": len(real_R), "real_per_row": float(real_R.mean()),
          "fill": float(real_R.mean() / seq_len), "examples_per_row": float(examples_R.mean())}


def ranking_passes(args) -> dict:
  """Steps and tokens of one pass over the training rankings, per batch layout."""
  source = store.local_dataset(args.data, "preferences")["train"]
  tok = (tokenizer_lib.load(args.tokenizer) if args.tokenizer
         else tokenizer_lib.train_bpe(preferences.texts(source), args.vocab))
  k = max(len(record["responses"]) for record in source)
  common = dict(tokenizer=tok, max_len=args.seq_len, num_responses=k, batch_size=args.batch,
                seed=0, shuffle=True, repeat=False)
  layouts = {
      "unpacked": (pipeline.preference_iterator(source, **common), args.batch * k,
                   args.seq_len),
      "packed": (packing.preference_iterator(source, num_rows=args.pack_rows, **common),
                 args.pack_rows, args.seq_len),
      "shared": (packing.preference_iterator(source, num_rows=args.shared_rows,
                                             row_len=args.shared_len, share_prompt=True,
                                             **common), args.shared_rows, args.shared_len)}
  results = {"data": args.data, "records": len(source), "responses_per_record": k,
             "seq_len": args.seq_len, "batch": args.batch}
  for name, (batches, rows, row_len) in layouts.items():
    steps = sum(1 for _ in batches)
    results[name] = {"rows": rows, "row_len": row_len, "steps": steps,
                     "tokens": steps * rows * row_len}
  for name in layouts:
    results[name]["relative_tokens"] = results[name]["tokens"] / results["unpacked"]["tokens"]
  return results


def main(argv=None) -> dict:
  args = parse_args(argv)
  if args.rankings:
    results = ranking_passes(args)
    print(json.dumps(results) if args.json else json.dumps(results, indent=2))
    return results
  source = store.local_dataset(args.data, "sft")["train"]
  tok = (tokenizer_lib.load(args.tokenizer) if args.tokenizer
         else tokenizer_lib.train_bpe(sft.chat_texts(source), args.vocab))
  common = dict(tokenizer=tok, max_len=args.seq_len, batch_size=args.batch, seed=0,
                shuffle=False, repeat=False)
  results = {"data": args.data, "examples": len(source), "seq_len": args.seq_len,
             "batch": args.batch,
             "unpacked": fill(pipeline.sft_iterator(source, **common), tok.pad_id, args.seq_len),
             "packed": fill(packing.sft_iterator(source, **common), tok.pad_id, args.seq_len)}
  print(json.dumps(results) if args.json else json.dumps(results, indent=2))
  return results


if __name__ == "__main__":
  main(sys.argv[1:])
