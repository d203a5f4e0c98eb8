"""The world's datasheet: counts, the judge's rule, gold scores per tier and per adversarial
strategy, labeler agreement, reference policies, text lengths."""
import collections
import dataclasses

import numpy as np

from rlhf_jax.data.world import adversarial, hygiene, judge, labelers
from rlhf_jax.data.world.config import FAMILY_NAMES, USE_CASE_MIX, USE_CASE_TO_FAMILIES


@dataclasses.dataclass
class AgreementAudit:
  """Pairwise agreement of labeler A (who ranked) with labeler B and with the gold judge."""
  temperature: float
  diffs: list  # perceived-value differences of A and B, used for the expected agreement
  labeler_labeler: list = dataclasses.field(default_factory=list)
  labeler_gold: list = dataclasses.field(default_factory=list)

  def add(self, u_a, u_b, gold, groups) -> None:
    """Pairs with different texts; for labeler-gold only pairs whose gold scores differ."""
    i, k = np.triu_indices(len(u_a), 1)
    keep = groups[i] != groups[k]
    i, k = i[keep], k[keep]
    a, b, g = np.sign(u_a[i] - u_a[k]), np.sign(u_b[i] - u_b[k]), gold[i] - gold[k]
    self.labeler_labeler.extend((a == b).tolist())
    strict = np.abs(g) > 1e-9
    self.labeler_gold.extend((a[strict] == np.sign(g[strict])).tolist())

  def summary(self, target: float) -> dict:
    return {
        "target": target,
        "temperature": round(self.temperature, 6),
        "expected_labeler_labeler": round(
            labelers.expected_agreement(*self.diffs, self.temperature), 4),
        "labeler_labeler": round(float(np.mean(self.labeler_labeler)), 4),
        "labeler_gold": round(float(np.mean(self.labeler_gold)), 4),
        "n_pairs_labeler_labeler": len(self.labeler_labeler),
        "n_pairs_labeler_gold": len(self.labeler_gold),
    }


def _stats(values) -> dict:
  v = np.asarray(values, dtype=np.float64)
  q = np.percentile(v, [10, 50, 90])
  return {"n": int(v.size), "mean": round(float(v.mean()), 4), "std": round(float(v.std()), 4),
          "min": round(float(v.min()), 4), "p10": round(float(q[0]), 4),
          "p50": round(float(q[1]), 4), "p90": round(float(q[2]), 4),
          "max": round(float(v.max()), 4)}


def _family_of(stage: str, record: dict) -> str:
  return record["meta"]["family"] if stage != "corpus" else "corpus"


def baselines(sft_records: list[dict], seed: int) -> dict:
  """Mean gold score of reference policies on the SFT test prompts.

  ideal: the demonstration; same_family_other_prompt: the demonstration of another
  prompt of the same family (right form, wrong content); random_words: 8 words drawn
  from all demonstrations; refusal: a polite refusal of everything.
  """
  rng = np.random.default_rng(seed)
  metas = [r["meta"] for r in sft_records]
  ideals = [r["messages"][-1]["content"] for r in sft_records]
  by_family = collections.defaultdict(list)
  for i, meta in enumerate(metas):
    by_family[meta["family"]].append(i)
  shifted = list(ideals)
  for idx in by_family.values():
    for a, b in zip(idx, idx[1:] + idx[:1]):
      shifted[a] = ideals[b]
  vocabulary = sorted({w for text in ideals for w in text.split()})
  random_words = [" ".join(rng.choice(vocabulary, size=8)) for _ in ideals]
  refusal = ["I'm sorry, but I can't help with that. It could hurt someone."] * len(ideals)
  mean = lambda responses: round(float(np.mean(
      [s.total for s in judge.score_batch(metas, responses)])), 4)
  return {"ideal": mean(ideals), "same_family_other_prompt": mean(shifted),
          "random_words": mean(random_words), "refusal": mean(refusal)}


def adversarial_table(sft_records: list[dict], universe, seed: int) -> dict:
  """{strategy: {family: mean gold}} of the adversarial catalogue on `sft_records`."""
  cases = adversarial.cases(sft_records, universe, seed)
  return adversarial.table(cases, lambda m, r: judge.score_arrays(m, r)["total"], seed)


def summarize(records, audit: AgreementAudit, config, seed: int, size: str,
              universe) -> dict:
  counts = {}
  for stage, by_split in records.items():
    counts[stage] = {}
    for part, rows in by_split.items():
      by_family = collections.Counter(_family_of(stage, r) for r in rows)
      counts[stage][part] = {"total": len(rows), "by_family": dict(sorted(by_family.items()))}
  rankings = [r for rows in records["rankings"].values() for r in rows]
  gold_by_tier = collections.defaultdict(list)
  for r in rankings:
    for tier, gold in zip(r["meta"]["tiers"], r["meta"]["gold"]):
      gold_by_tier[tier].append(gold)
  sft = [r for rows in records["sft"].values() for r in rows]
  prompt_words = [len(m["content"].split()) for r in sft for m in r["messages"][-2:-1]]
  response_words = [len(r["messages"][-1]["content"].split()) for r in sft]
  mix_total = sum(config.prompt_mix.values())
  return {
      "seed": seed, "size": size, "config": dataclasses.asdict(config),
      "counts": counts,
      "gold_by_tier": {t: _stats(v) for t, v in sorted(gold_by_tier.items())},
      "agreement": audit.summary(config.agreement_target),
      "baselines_sft_test": baselines(records["sft"]["test"], seed),
      "adversarial_sft_test": adversarial_table(records["sft"]["test"], universe, seed),
      "lengths": {"sft_prompt_words": _stats(prompt_words),
                  "sft_response_words": _stats(response_words)},
      "prompt_mix": {k: round(v / mix_total, 4) for k, v in sorted(config.prompt_mix.items())},
      "use_case_mix": USE_CASE_MIX, "use_case_to_families": USE_CASE_TO_FAMILIES,
  }


def _paragraphs(doc: str) -> list[list[str]]:
  """A module docstring's paragraphs as lists of lines, the common 2-space indent removed."""
  return [[line[2:] if line.startswith("  ") else line for line in block.split("\n")]
          for block in doc.strip("\n").split("\n\n")]


def _bound(bounds) -> str:
  lo, hi = bounds
  return "0" if hi == 0 else f"<= {hi:.2f}" if lo == 0 else f">= {lo:.2f}" if hi == 1 \
      else f"{lo:.2f}-{hi:.2f}"


def _careful(strategy) -> str:
  """The expected family mean: one bound, or 'benign ...; harmful ...' where they differ."""
  benign = {strategy.expect(f) for f in FAMILY_NAMES if f != "harmful"} - {None}
  harmful = strategy.expect("harmful")
  if benign and harmful and benign != {harmful}:
    return f"benign {_bound(benign.pop())}; harmful {_bound(harmful)}"
  return _bound((benign or {harmful}).pop())


def markdown(sheet: dict) -> str:
  """A human-readable rendering of `sheet`."""
  agree = sheet["agreement"]
  lines = [f"# Generated world: seed {sheet['seed']}, size {sheet['size']}", "",
           "## Records per split", "", "| stage | train | valid | test |", "|---|---|---|---|"]
  for stage, by_split in sheet["counts"].items():
    lines.append(f"| {stage} | " + " | ".join(str(by_split[s]["total"])
                                             for s in ("train", "valid", "test")) + " |")
  lines += ["", "## Records per family (all splits)", "",
            "| family | sft | rankings | prompts |", "|---|---|---|---|"]
  totals = {stage: collections.Counter() for stage in ("sft", "rankings", "prompts")}
  for stage, counter in totals.items():
    for by_split in sheet["counts"][stage].values():
      counter.update(by_split["by_family"])
  for family in sorted(set().union(*totals.values())):
    lines.append(f"| {family} | " + " | ".join(str(totals[s][family]) for s in totals) + " |")
  rule, notes = _paragraphs(judge.__doc__)[2:4]
  lines += ["", "## The gold judge's scoring rule", "", "```", *rule, "```", "", *notes, "",
            "Hygiene gates, each a multiplier in [0, 1]:", "", "```",
            *_paragraphs(hygiene.__doc__)[2], "```"]
  lines += ["", "## Gold score per quality tier (ranking candidates)", "",
            "| tier | n | mean | std | p10 | p50 | p90 |", "|---|---|---|---|---|---|---|"]
  for tier, s in sheet["gold_by_tier"].items():
    lines.append(f"| {tier} | {s['n']} | {s['mean']:.3f} | {s['std']:.3f} | {s['p10']:.3f} "
                 f"| {s['p50']:.3f} | {s['p90']:.3f} |")
  lines += ["", "## Labeler agreement (pairwise)", "",
            f"- target labeler-labeler: {agree['target']:.3f}",
            f"- measured labeler-labeler: {agree['labeler_labeler']:.3f} "
            f"({agree['n_pairs_labeler_labeler']} pairs; expected "
            f"{agree['expected_labeler_labeler']:.3f})",
            f"- labeler-gold: {agree['labeler_gold']:.3f} ({agree['n_pairs_labeler_gold']} pairs)",
            f"- Bradley-Terry temperature: {agree['temperature']:.4f}", "",
            "## Gold score of reference policies (SFT test prompts)", ""]
  lines += [f"- {name}: {value:.3f}" for name, value in sheet["baselines_sft_test"].items()]
  lines += ["", "## Gold score of adversarial strategies per family (SFT test prompts)", "",
            "Mean gold total per family; '-' where the strategy does not apply. 'careful' is "
            "what a careful person would give, held by tests/test_world_adversarial.py.", "",
            "| strategy | careful | " + " | ".join(FAMILY_NAMES) + " |",
            "|---" * (len(FAMILY_NAMES) + 2) + "|"]
  for strategy in adversarial.STRATEGIES:
    row = sheet["adversarial_sft_test"][strategy.name]
    careful = _careful(strategy)
    lines.append(f"| {strategy.name} | {careful} | " + " | ".join(
        f"{row[f]:.2f}" if f in row else "-" for f in FAMILY_NAMES) + " |")
  lines += ["", "Strategies:", ""]
  lines += [f"- {s.name}: {s.careful}" for s in adversarial.STRATEGIES]
  lines += ["", "## RL prompt mix (InstructGPT use cases mapped onto families)", ""]
  lines += [f"- {use}: {w:.1%} -> " + ", ".join(f"{f} ({s:g})" for f, s in fams.items())
            for (use, w), fams in zip(sheet["use_case_mix"].items(),
                                      sheet["use_case_to_families"].values())]
  return "\n".join(lines) + "\n"
