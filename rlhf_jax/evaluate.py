"""Gold-judge a trained policy on held-out world prompts, optionally against a base model.

  python -m rlhf_jax.evaluate --workdir DIR [--base_workdir BASE_DIR] [--base_style chat]
      [--data world:small:0/sft] [--split test] [--num_prompts 0] [--max_new_tokens 48]

The policy in DIR answers through the chat template; the base model in BASE_DIR (a
pretraining workdir) is prompted few-shot in the Q:/A: form of its corpus with
demonstrations from the data's train split, or, with --base_style chat, answers through
the chat template too (another trained policy: PPO against its SFT model on a split no
run was tuned on, e.g. --data world:small:0/prompts --split validation; both of a world's
prompt sets: --data world:small:0/sft,world:small:0/prompts). Prints gold/score
with its 95% interval, per category and per family, the paired difference policy − base
with its interval, and writes DIR/eval_gold.json and DIR/eval_samples_{policy,base}.jsonl.

When DIR is a pipeline workdir (stage workdirs DIR/pretrain, DIR/sft, DIR/rm, DIR/ppo),
it writes the pipeline's report instead (`rlhf_jax.report`): DIR/report.md, report.json
and plots, comparing base, sft, best-of-N (--best_of) and ppo.
  python -m rlhf_jax.evaluate --workdir DIR [--num_prompts 0] [--best_of 4,16]
      [--temperature 0.7] [--num_examples 5]
"""
import argparse
import json
import os
import sys

import jax
import ml_collections

from rlhf_jax import configs, evaluation, policy as policy_lib, report, sharding
from rlhf_jax.errors import ArgumentParser, UserError


def run(args) -> dict:
  mesh = sharding.make_mesh(ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1)))
  sharding.check_batch_size(args.batch_size, mesh, "--batch_size")
  policy = policy_lib.load(args.workdir, mesh)
  data = args.data or policy.config.data.path
  records, demonstrations = evaluation.held_out_records(data, args.split, args.num_prompts)
  metas = [r["meta"] for r in records]
  gold_cfg = ml_collections.ConfigDict(dict(batch_size=args.batch_size, num_shots=3))
  sampling_cfg = ml_collections.ConfigDict(dict(
      max_new_tokens=args.max_new_tokens, temperature=0.0, top_k=0, top_p=1.0))
  rng = jax.random.key(args.seed)
  results, scores = {}, {}
  runs = [("policy", policy, "chat")]
  if args.base_workdir:
    runs.append(("base", policy_lib.load(args.base_workdir, mesh), args.base_style))
  with jax.set_mesh(mesh):
    for name, pol, style in runs:
      texts = evaluation.policy_texts(pol.model, pol.params, pol.tokenizer, records, rng,
                                      mesh=mesh, gold_cfg=gold_cfg, sampling_cfg=sampling_cfg,
                                      style=style, demonstrations=demonstrations)
      scores[name] = evaluation.score(metas, texts)
      results[name] = evaluation.summarize(metas, scores[name])
      evaluation.write_samples(os.path.join(args.workdir, f"eval_samples_{name}.jsonl"),
                               pol.step, records, texts, scores[name])
  if "base" in scores:
    mean, lo, hi = evaluation.paired_difference(scores["policy"]["total"],
                                                scores["base"]["total"])
    results["policy_minus_base"] = {"mean": mean, "lo": lo, "hi": hi}
  with open(os.path.join(args.workdir, "eval_gold.json"), "w", encoding="utf-8") as f:
    json.dump(results, f, indent=2, sort_keys=True)
  return results


def _print(results: dict) -> None:
  names = [n for n in ("policy", "base") if n in results]
  keys = [k for k in results["policy"] if k.startswith("gold/") and not k.endswith(
      ("_lo", "_hi", "/n"))]
  print("| metric | " + " | ".join(names) + " |")
  print("|---|" + "---|" * len(names))
  for key in keys:
    cells = []
    for name in names:
      r = results[name]
      cell = f"{r[key]:.3f}"
      if key == "gold/score":
        cell += f" [{r['gold/score_lo']:.3f}, {r['gold/score_hi']:.3f}] n={int(r['gold/n'])}"
      cells.append(cell)
    print(f"| {key} | " + " | ".join(cells) + " |")
  if "policy_minus_base" in results:
    d = results["policy_minus_base"]
    print(f"policy - base: {d['mean']:+.3f} (95% CI [{d['lo']:+.3f}, {d['hi']:+.3f}])")


def _print_report(results: dict, workdir: str) -> None:
  for name, p in results["policies"].items():
    g = p["gold"]
    print(f"{name}: gold {g['mean']:.3f} [{g['lo']:.3f}, {g['hi']:.3f}] n={g['n']}")
  for source, diffs in [("", results["diffs"]), *results.get("diffs_by_source", {}).items()]:
    for name, d in diffs.items():
      where = f" on the {source} split" if source else ""
      print(f"{name}{where}: {d['mean']:+.3f} (95% CI [{d['lo']:+.3f}, {d['hi']:+.3f}])")
  print(f"wrote {os.path.join(os.path.abspath(workdir), 'report.md')}")


def main(argv=None) -> int:
  parser = ArgumentParser(prog="python -m rlhf_jax.evaluate", description=__doc__,
                          formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--base_workdir", default="")
  parser.add_argument("--base_style", default="few_shot", choices=("few_shot", "chat"),
                      help="how the base model is prompted: few_shot (a pretrained model) or "
                           "chat (a trained policy, e.g. the SFT model)")
  parser.add_argument("--data", default="", help="default: the workdir's data.path")
  parser.add_argument("--split", default="test")
  parser.add_argument("--num_prompts", type=int, default=0,
                      help="the first N of each --data spec; 0 = the whole split")
  parser.add_argument("--max_new_tokens", type=int, default=48)
  parser.add_argument("--batch_size", type=int, default=32)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--best_of", default="4,16", help="pipeline report: best-of-N counts")
  parser.add_argument("--temperature", type=float, default=0.7,
                      help="pipeline report: best-of-N's SFT sampling temperature")
  parser.add_argument("--num_examples", type=int, default=5,
                      help="pipeline report: example prompts shown with every response")
  args = parser.parse_args(argv)
  try:
    if report.is_pipeline(args.workdir):
      config = ml_collections.ConfigDict({k: getattr(args, k) for k in configs.report_block()})
      _print_report(report.write_report(args.workdir, config), args.workdir)
      return 0
    results = run(args)
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  _print(results)
  return 0


if __name__ == "__main__":
  sys.exit(main())
