"""report.md of a pipeline workdir: `render(report, workdir)` turns `report.write_report`'s
dict into GitHub-readable Markdown (tables, plots linked relative to the workdir)."""
import os

from rlhf_jax import evaluation

PLOTS = {"gold_by_policy.png": "gold score by policy", "reward_vs_kl.png": "reward vs KL",
         "gold_vs_kl_by_method.png": "gold score vs KL by method",
         "rm/rm_reliability.png": "reward-model reliability",
         "loss_curves.png": "training curves per stage"}


def _ci(block: dict, key: str = "mean", signed: bool = False) -> str:
  """'0.412 [0.371, 0.455]' from {key, lo, hi}."""
  f = "{:+.3f}" if signed else "{:.3f}"
  return f"{f.format(block[key])} [{f.format(block['lo'])}, {f.format(block['hi'])}]"


def _flat_ci(block: dict, name: str) -> str:
  """'0.412 [0.371, 0.455]' from {name, name_lo, name_hi}; '–' when missing."""
  if name not in block:
    return "–"
  if f"{name}_lo" not in block:
    return f"{block[name]:.3f}"
  return _ci({"mean": block[name], "lo": block[f"{name}_lo"], "hi": block[f"{name}_hi"]})


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  return lines + ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |"
                  for row in rows]


def _image(name: str, workdir: str) -> list[str]:
  return [f"![{PLOTS[name]}]({name})", ""] if os.path.exists(os.path.join(workdir, name)) else []


def _policies(report: dict, workdir: str) -> list[str]:
  policies = report["policies"]
  rows = [[name, _ci(p["gold"]), p["gold"]["n"], _ci(p["rm"]) if "rm" in p else "–"]
          + [f"{p['gold']['by_category'][c]:.3f}" for c in evaluation.CATEGORIES]
          for name, p in policies.items()]
  lines = ["## Gold score by policy", ""]
  lines += _table(["policy", "gold [95% CI]", "n", "RM score [95% CI]",
                   *evaluation.CATEGORIES], rows)
  lines += [""] + _image("gold_by_policy.png", workdir) + ["### By family", ""]
  families = sorted({f for p in policies.values() for f in p["gold"]["by_family"]})
  lines += _table(["family", *policies], [
      [family] + [f"{p['gold']['by_family'].get(family, float('nan')):.3f}"
                  for p in policies.values()] for family in families])
  return lines + [""]


def _comparisons(report: dict) -> list[str]:
  lines = ["## Paired differences and win rates", "",
           "Paired over the same prompts; win rates count a tie as ½.", ""]
  by_source = report.get("diffs_by_source", {})
  lines += _table(["comparison", "gold difference [95% CI]",
                   *(f"`{source}` split only" for source in by_source)],
                  [[name.replace("_vs_", " − "), _ci(d, signed=True),
                    *(_ci(diffs[name], signed=True) for diffs in by_source.values())]
                   for name, d in report["diffs"].items()])
  lines += [""] + _table(
      ["win rate", "gold judge [95% CI]", "reward model [95% CI]"],
      [[name.replace("_vs_", " vs "), _ci(w["gold"], "rate"),
        _ci(w["rm"], "rate") if "rm" in w else "–"] for name, w in report["win_rates"].items()])
  return lines + [""]


def _reward_model(report: dict, workdir: str) -> list[str]:
  rm = report.get("rm")
  if rm is None:
    return []
  rows = [["held-out pairwise accuracy", _flat_ci(rm, "accuracy")],
          ["label ceiling (gold judge vs labels)", _flat_ci(rm, "label_ceiling")],
          ["gold agreement, held-out labelled pairs", _flat_ci(rm, "gold_agreement")],
          ["gold agreement, base/sft/ppo responses", _flat_ci(rm, "policy_gold_agreement")],
          ["gold agreement, best-of-N candidates", _flat_ci(rm, "best_of_gold_agreement")],
          ["expected calibration error", _flat_ci(rm, "ece")]]
  lines = ["## Reward model", "", f"Held-out metrics from its evaluation at step "
           f"{rm.get('step', '?')}; agreement = how often the RM orders two responses as the "
           f"gold judge does (pairs the judge ties skipped).", ""]
  return lines + _table(["metric", "value [95% CI]"], rows) + [""] + _image(
      "rm/rm_reliability.png", workdir)


def _reward_vs_kl(report: dict, workdir: str) -> list[str]:
  points = report.get("reward_vs_kl")
  if not points:
    return []
  lines = ["## Reward vs KL", "", "KL to SFT: mean over prompts of log π(y|x) − "
           "log π_sft(y|x), y sampled from the checkpoint at temperature 1. Scores are of "
           "greedy responses.", ""]
  rows = [[p["label"], _ci({"mean": p["kl"], "lo": p["kl_lo"], "hi": p["kl_hi"]}),
           "–" if p["rm"] is None else f"{p['rm']:.3f}",
           _ci({"mean": p["gold"], "lo": p["gold_lo"], "hi": p["gold_hi"]})] for p in points]
  return lines + _table(["checkpoint", "KL [95% CI]", "RM score", "gold [95% CI]"], rows) + [
      ""] + _image("reward_vs_kl.png", workdir)


def _methods(report: dict, workdir: str) -> list[str]:
  methods = report.get("methods")
  if not methods:
    return []
  lines = ["## Methods compared", "", "Each method trained from the same SFT model (and RM); "
           "KL to SFT as in the reward-vs-KL table; wall-clock from the stage's first to its "
           "last logged row; samples = responses generated to train.", ""]
  rows = [[name, _ci(m["gold"]), "–" if m["rm"] is None else f"{m['rm']:.3f}", _ci(m["kl"]),
           f"{m['wall_clock_s'] / 60:.1f} min" if "wall_clock_s" in m else "–",
           m.get("samples", "–")] for name, m in methods.items()]
  return lines + _table(["policy", "gold [95% CI]", "RM score", "KL to SFT [95% CI]",
                         "wall-clock", "samples"], rows) + [""] + _image(
                             "gold_vs_kl_by_method.png", workdir)


def _examples(report: dict) -> list[str]:
  lines = ["## Examples", ""]
  for i, example in enumerate(report["examples"], 1):
    prompt = example["prompt"][-1]["content"]
    lines += [f"### {i}. {example['family']}", "", *[f"> {line}" for line in
                                                      prompt.splitlines() or [""]], ""]
    for name, r in example["responses"].items():
      rm = "" if r["rm"] is None else f", RM {r['rm']:+.2f}"
      lines += [f"**{name}** (gold {r['gold']:.2f}{rm})", "", "```text",
                r["text"].replace("```", "'''") or "(empty)", "```", ""]
  return lines


def render(report: dict, workdir: str) -> str:
  stages = ", ".join(f"{name} (step {step})" for name, step in report["stages"].items())
  lines = ["# Evaluation report", "",
           f"Stages: {stages}. {report['prompts']} held-out test prompts of "
           f"`{report['data']}`; responses of at most {report['config']['max_new_tokens']} "
           f"tokens; 95% bootstrap intervals over prompts.", ""]
  diffs = report["diffs"]
  for name in ("sft_vs_base", "ppo_vs_sft", "dpo_vs_sft", "grpo_vs_sft", "rloo_vs_sft"):
    if name in diffs:
      lines.append(f"- **{name.replace('_vs_', ' − ')}** (gold): {_ci(diffs[name], signed=True)}")
  lines.append("")
  lines += _policies(report, workdir) + _comparisons(report) + _reward_model(report, workdir)
  lines += _reward_vs_kl(report, workdir) + _methods(report, workdir)
  lines += ["## Training curves", ""] + _image("loss_curves.png", workdir) + _examples(report)
  if report["notes"]:
    lines += ["## Notes", ""] + [f"- {note}" for note in report["notes"]] + [""]
  return "\n".join(lines)
