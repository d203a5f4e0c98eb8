"""Collect comparison data as InstructGPT did: the SFT model answers each ranking prompt
K times and the world's simulated labelers rank its own samples.

  python -m rlhf_jax.collect --policy_workdir SFT_DIR --out DIR
      [--data world:small:0/rankings] [--k 4] [--splits train,test] [--num_prompts 0]
      [--max_new_tokens 24] [--temperature 1.0] [--batch_size 64] [--seed 0]

Writes DIR/<split>.jsonl rankings records ({"prompt", "responses", "ranking", "meta"},
the format `experiments/rm_world.py` reads) and DIR/collect.json (counts, the samples'
mean gold score, and how often the labels order a pair as the gold judge does). A reward
model trained on the world's hand-made quality tiers never sees what the policy writes;
one trained on labelled samples of the policy learns to rank what PPO will generate.
"""
import argparse
import json
import os
import sys

import jax
import ml_collections
import numpy as np

from rlhf_jax import evaluation, policy as policy_lib, sharding
from rlhf_jax.data import store
from rlhf_jax.data.world import writer
from rlhf_jax.errors import ArgumentParser, UserError

SUMMARY_FILE = "collect.json"


def _world_records(data: str, split: str, num_prompts: int) -> tuple[str, list[dict]]:
  """(world dir, prompt records {"messages", "meta"}) of a world rankings split."""
  size, seed, _ = store.parse_world_spec(data)
  world_dir = store.ensure_world(size, seed)
  path = os.path.join(world_dir, "rankings", f"{split}.jsonl")
  if not os.path.exists(path):
    raise UserError(f"--splits names {split!r}, which the world lacks; use some of train, "
                    f"valid, test")
  with open(path, encoding="utf-8") as f:
    rows = [json.loads(line) for line in f]
  records = evaluation.prompt_records(
      ({"messages": r["prompt"], "meta": r["meta"]} for r in rows), num_prompts)
  return world_dir, records


def sample_responses(pol: policy_lib.Policy, records: list[dict], k: int, rng, *, mesh,
                     batch_size: int, max_new_tokens: int, temperature: float):
  """K sampled responses per record, [N][K] strings (chat template, left-padded prompts)."""
  max_prompt_len = pol.model.cfg.max_len - max_new_tokens
  tokens_NxP, mask_NxP = evaluation.chat_prompts(pol.tokenizer, records, max_prompt_len)
  ids = evaluation.generate_ids(
      pol.model, pol.params, np.repeat(tokens_NxP, k, axis=0), np.repeat(mask_NxP, k, axis=0),
      rng, mesh=mesh, batch_size=batch_size, eos_id=pol.tokenizer.eos_id,
      pad_id=pol.tokenizer.pad_id, max_new_tokens=max_new_tokens, temperature=temperature)
  texts = pol.tokenizer.decode_responses(ids)
  return [texts[i * k:(i + 1) * k] for i in range(len(records))]


def label_agreement(rankings: list[dict]) -> float:
  """Fraction of labelled pairs (rank_i < rank_j) the gold judge orders the same way,
  over pairs the judge does not tie."""
  agree = []
  for r in rankings:
    ranks, gold = r["ranking"], r["meta"]["gold"]
    for i in range(len(ranks)):
      for j in range(len(ranks)):
        if ranks[i] < ranks[j] and gold[i] != gold[j]:
          agree.append(gold[i] > gold[j])
  return float(np.mean(agree)) if agree else float("nan")


def _write_jsonl(path: str, rows: list[dict]) -> None:
  with open(path + ".tmp", "w", encoding="utf-8") as f:
    for row in rows:
      f.write(json.dumps(row, sort_keys=True, ensure_ascii=False) + "\n")
  os.replace(path + ".tmp", path)


def run(args) -> dict:
  if args.k < 2:
    raise UserError(f"--k={args.k}: a ranking needs at least 2 responses; pass --k >= 2")
  if not args.data.startswith("world:"):
    raise UserError(f"--data={args.data!r}: labelling samples needs the world's labelers; "
                    f"pass --data=world:SIZE:SEED/rankings")
  mesh = sharding.make_mesh(ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1)))
  sharding.check_batch_size(args.batch_size, mesh, "--batch_size")
  pol = policy_lib.load(args.policy_workdir, mesh)
  if not 0 < args.max_new_tokens < pol.model.cfg.max_len:
    raise UserError(f"--max_new_tokens={args.max_new_tokens} must be in [1, "
                    f"{pol.model.cfg.max_len - 1}] for this model's context of "
                    f"{pol.model.cfg.max_len}")
  splits = {split: _world_records(args.data, split, args.num_prompts)  # all, before writing
            for split in args.splits.split(",")}
  os.makedirs(args.out, exist_ok=True)
  summary = {"policy_workdir": os.path.abspath(args.policy_workdir), "policy_step": pol.step,
             "data": args.data, "k": args.k, "temperature": args.temperature,
             "max_new_tokens": args.max_new_tokens, "splits": {}}
  with jax.set_mesh(mesh):
    for n, (split, (world_dir, records)) in enumerate(splits.items()):
      responses = sample_responses(pol, records, args.k, jax.random.key(args.seed + 1000 * n),
                                   mesh=mesh, batch_size=args.batch_size,
                                   max_new_tokens=args.max_new_tokens,
                                   temperature=args.temperature)
      # Empty samples (EOS first) cannot be stored as responses and are left out; a prompt
      # left with fewer than two distinct texts compares nothing and is not kept. Both counted.
      nonempty = [[t for t in texts if t.strip()] for texts in responses]
      keep = [i for i, texts in enumerate(nonempty) if len(set(texts)) > 1]
      rankings = writer.label_samples(world_dir, [records[i] for i in keep],
                                      [nonempty[i] for i in keep], seed=args.seed + n)
      _write_jsonl(os.path.join(args.out, f"{split}.jsonl"), rankings)
      gold = [g for r in rankings for g in r["meta"]["gold"]]
      summary["splits"][split] = {"records": len(rankings), "sample_gold": float(np.mean(gold)),
                                  "empty_samples": sum(len(a) - len(b) for a, b in
                                                       zip(responses, nonempty)),
                                  "prompts_left_out": len(records) - len(keep),
                                  "label_gold_agreement": label_agreement(rankings)}
  with open(os.path.join(args.out, SUMMARY_FILE), "w", encoding="utf-8") as f:
    json.dump(summary, f, indent=2, sort_keys=True)
  return summary


def main(argv=None) -> int:
  parser = ArgumentParser(prog="python -m rlhf_jax.collect", description=__doc__,
                          formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--policy_workdir", required=True, help="an SFT (or any policy) workdir")
  parser.add_argument("--out", required=True, help="directory for <split>.jsonl")
  parser.add_argument("--data", default="world:small:0/rankings")
  parser.add_argument("--k", type=int, default=4, help="samples per prompt")
  parser.add_argument("--splits", default="train,test")
  parser.add_argument("--num_prompts", type=int, default=0, help="per split; 0 = all")
  parser.add_argument("--max_new_tokens", type=int, default=24)
  parser.add_argument("--temperature", type=float, default=1.0)
  parser.add_argument("--batch_size", type=int, default=64)
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args(argv)
  try:
    summary = run(args)
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  for split, s in summary["splits"].items():
    print(f"{split}: {s['records']} prompts x {args.k} samples ({s['empty_samples']} empty "
          f"samples and {s['prompts_left_out']} prompts with < 2 distinct ones left out), mean gold "
          f"{s['sample_gold']:.3f}, labels agree with the gold judge on "
          f"{s['label_gold_agreement']:.3f} of judged pairs")
  return 0


if __name__ == "__main__":
  sys.exit(main())
