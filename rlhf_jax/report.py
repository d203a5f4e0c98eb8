"""The evaluation report of a pipeline workdir (DESIGN §3.3, §3.10).

A pipeline workdir holds one stage workdir per stage: DIR/pretrain, DIR/sft, DIR/rm and
DIR/ppo, and optionally the other methods trained from the same SFT model and RM: DIR/dpo,
DIR/grpo, DIR/rloo. On the world's held-out test prompts (the test splits of
`report.data`: by default the SFT stage's prompts, then the RL split's that PPO trains on;
`prompt_data`) the report compares, by the gold judge (`evaluation`), the policies

  base        the pretrained model prompted few-shot (Q:/A: with same-family demonstrations)
  sft         the SFT model, greedy
  best_of_N   N samples of the SFT model at `report.temperature` (0.7 by default, PPO's
              rollout temperature), the one the RM scores highest (a smaller N takes the
              first N of the largest N's candidates)
  ppo, dpo, grpo, rloo   each method's policy (newest checkpoint), greedy

with 95% bootstrap intervals over prompts: gold score overall, per category and family;
paired differences and win rates (a tie counts ½) by the gold judge and by the RM. It
checks the RM: its held-out metrics (the last rm/* evaluation in rm/metrics.jsonl) and
how often it orders the policies' own responses as the judge does (`reward_metrics.
set_gold_agreement` over base/sft/ppo responses to a prompt, and over a best-of-N
candidate set). Reward vs KL: each kept PPO checkpoint (and SFT itself, KL 0) with the
mean RM and gold score of its greedy responses and its KL to SFT, the mean over prompts
of log π(y|x) − log π_sft(y|x) for one y ~ π at temperature 1 (`evaluation.sampled_kl`).
With a method besides PPO, `methods` compares them all with SFT: gold score, RM score, KL
to SFT, the stage's wall-clock and the responses it sampled to train.

A stage without a finished checkpoint is left out with a note, with whatever needs it;
sft/ is required. Writes DIR/report.json (every number), DIR/report.md,
DIR/report_samples.jsonl (each prompt's responses, scores and best-of-N candidates) and
the plots (`report_markdown.PLOTS`).
"""
import json
import logging
import os

import jax
import ml_collections
import numpy as np

from rlhf_jax import (checkpoint, evaluation, metrics, plots, policy as policy_lib,
                      report_markdown, score, sharding)
from rlhf_jax.data import store
from rlhf_jax.errors import UserError
from rlhf_jax.tasks import reward_metrics

METHODS = ("ppo", "dpo", "grpo", "rloo")  # policies trained from the SFT model (and the RM)
STAGES = ("pretrain", "sft", "rm", *METHODS)
_CURVES = {"pretrain": ("train/loss", "eval/loss"), "sft": ("train/loss", "eval/loss"),
           "rm": ("train/loss", "rm/loss"), "ppo": ("ppo/score", "ppo/kl", "ppo/reward"),
           "dpo": ("train/loss", "dpo/reward_margin"), "grpo": ("grpo/score", "grpo/kl"),
           "rloo": ("rloo/score", "rloo/kl")}


def is_pipeline(workdir: str) -> bool:
  """A pipeline workdir holds stage workdirs, not a run of its own (no config.json)."""
  return (not os.path.exists(os.path.join(workdir, "config.json"))
          and any(os.path.isdir(os.path.join(workdir, stage)) for stage in STAGES))


def best_of_counts(spec: str) -> list[int]:
  """'4,16' → [4, 16] (sorted, unique); '' → []."""
  try:
    counts = sorted({int(n) for n in str(spec).split(",") if n.strip()})
  except ValueError:
    counts = [0]
  if any(n < 1 for n in counts):
    raise UserError(f"best_of={spec!r}; give comma-separated sample counts like '4,16'")
  return counts


def check_config(report_config) -> None:
  """UserError naming the first bad setting of a `configs.report_block()`."""
  best_of_counts(report_config.best_of)
  if not report_config.temperature > 0:
    raise UserError(f"report temperature={report_config.temperature}: best-of-N samples "
                    "need a temperature > 0 (0.7 is PPO's rollout temperature)")


def prompt_data(cfg, stages: dict, sft_config) -> str:
  """The world specs whose test prompts the report answers: `report.data`, or by default
  the SFT stage's data, then the PPO stage's (the RL split's prompts) when that is another
  prompt set of the same world."""
  if cfg.data:
    return cfg.data
  specs = [sft_config.data.path]
  if "ppo" in stages:
    rl = policy_lib.read_config(stages["ppo"]).data.path
    if rl != specs[0] and store.world_of(rl) is not None and (
        store.world_of(rl) == store.world_of(specs[0])):
      specs.append(rl)
  return ",".join(specs)


def _stages(workdir: str, notes: list[str]) -> dict[str, str]:
  """stage → its workdir, for the stages with a finished checkpoint."""
  if not os.path.isdir(os.path.join(workdir, "sft")):
    raise UserError(f"{workdir} has no sft/ stage workdir; pass a pipeline workdir "
                    f"(DIR/pretrain, DIR/sft, DIR/rm, DIR/ppo) or run the pipeline into it")
  found = {}
  for stage in STAGES:
    path = os.path.join(workdir, stage)
    try:
      checkpoint.saved_step(path, "workdir")
      found[stage] = path
    except UserError:
      if stage == "sft":
        raise
      if stage in METHODS[1:] and not os.path.isdir(path):
        continue  # optional: the pipeline did not run it
      notes.append(f"no finished {stage}/ stage: what needs it is left out")
      logging.warning("report: %s", notes[-1])
  return found


def _gold_block(metas, source_masks: dict, scores: dict) -> dict:
  """Gold score with its interval, by category and family, and by source (the kind of
  world data a prompt came from: sft, prompts; `_Run.source_masks`) with intervals."""
  s = evaluation.summarize(metas, scores)
  block = {"mean": s["gold/score"], "lo": s["gold/score_lo"], "hi": s["gold/score_hi"],
           "n": int(s["gold/n"]),
           "by_category": {c: s[f"gold/{c}"] for c in evaluation.CATEGORIES},
           "by_family": {k[len("gold/family/"):]: v for k, v in s.items()
                         if k.startswith("gold/family/")}}
  if source_masks:
    block["by_source"] = {
        source: {**_named(evaluation.interval(scores["total"][mask_N]), "mean"),
                 "n": int(mask_N.sum())}
        for source, mask_N in source_masks.items()}
  return block


def _named(triple, key: str) -> dict:
  """(value, lo, hi) → {key: value, "lo": lo, "hi": hi}."""
  return dict(zip((key, "lo", "hi"), triple))


def _rm_heldout(rm_workdir: str) -> dict:
  """The last rm/* evaluation (rm/accuracy, _lo, _hi, rm/label_ceiling, ...) without 'rm/'."""
  rows = [r for r in metrics.read_metrics(rm_workdir) if "rm/accuracy" in r]
  if not rows:
    return {}
  return {"step": rows[-1]["step"], **{k[3:]: v for k, v in rows[-1].items()
                                        if k.startswith("rm/") and "/" not in k[3:]}}


def _agreement(name: str, rm_NxK, gold_NxK) -> dict:
  """{name, name_lo, name_hi}: `set_gold_agreement` per prompt, its mean and 95% interval
  over the prompts where the judge does not tie everything ({} when none)."""
  values = [reward_metrics.set_gold_agreement(r, g) for r, g in zip(rm_NxK, gold_NxK)]
  values = [v for v in values if v is not None]
  if not values:
    return {}
  return dict(zip((name, f"{name}_lo", f"{name}_hi"), evaluation.interval(values)))


class _Run:
  """Loaded models and prompts; generates and scores responses."""

  def __init__(self, stages: dict, cfg, mesh):
    self.cfg, self.mesh = cfg, mesh
    self.sft = policy_lib.load(stages["sft"], mesh)
    self.data = prompt_data(cfg, stages, self.sft.config)
    self.records, self.demonstrations = evaluation.held_out_records(
        self.data, "test", cfg.num_prompts)
    self.metas = [r["meta"] for r in self.records]
    sources_N = np.array([r["source"] for r in self.records])
    # source → [N] bool mask of its prompts, in order; {} when the prompts have one source.
    self.source_masks = ({s: sources_N == s for s in dict.fromkeys(sources_N)}
                         if len(set(sources_N)) > 1 else {})
    self.rm = score.reward_scorer(stages["rm"], mesh) if "rm" in stages else None
    self.key = jax.random.key(cfg.seed)

  def texts(self, pol, params=None, style="chat", temperature=0.0, repeat=1, rng=None):
    gold_cfg = ml_collections.ConfigDict(dict(
        batch_size=self.cfg.batch_size, num_shots=self.sft.config.gold_eval.num_shots))
    sampling_cfg = ml_collections.ConfigDict(dict(
        max_new_tokens=self.cfg.max_new_tokens, temperature=temperature, top_k=0, top_p=1.0))
    records = [r for r in self.records for _ in range(repeat)]
    return evaluation.policy_texts(
        pol.model, pol.params if params is None else params, pol.tokenizer, records,
        self.key if rng is None else rng, mesh=self.mesh, gold_cfg=gold_cfg,
        sampling_cfg=sampling_cfg, style=style, demonstrations=self.demonstrations)

  def rm_scores(self, texts) -> np.ndarray | None:
    """[N] normalised RM scores of one response per prompt (None without an RM)."""
    if self.rm is None:
      return None
    return self.rm([r["messages"] for r in self.records], [[t] for t in texts])[:, 0]

  def kl(self, pol, params) -> np.ndarray:
    """[N] sampled KL of `params` (a policy of `pol`'s architecture) to the SFT model."""
    tokens, mask = evaluation.chat_prompts(pol.tokenizer, self.records,
                                           pol.model.cfg.max_len - self.cfg.max_new_tokens)
    return evaluation.sampled_kl(
        pol.model, params, self.sft.params, tokens, mask, jax.random.fold_in(self.key, 2),
        mesh=self.mesh, batch_size=self.cfg.batch_size, eos_id=pol.tokenizer.eos_id,
        pad_id=pol.tokenizer.pad_id, max_new_tokens=self.cfg.max_new_tokens)


def _best_of(run: _Run, counts: list[int]):
  """(candidates [N][K], RM [N, K], gold totals [N, K]) of K = max(counts) SFT samples."""
  k, n = counts[-1], len(run.records)
  flat = run.texts(run.sft, temperature=run.cfg.temperature, repeat=k,
                   rng=jax.random.fold_in(run.key, 1))
  candidates = [flat[i * k:(i + 1) * k] for i in range(n)]
  rm_NxK = run.rm([r["messages"] for r in run.records], candidates)
  gold_NxK = evaluation.score([m for m in run.metas for _ in range(k)], flat)["total"]
  return candidates, rm_NxK, gold_NxK.reshape(n, k)


def _reward_vs_kl(run: _Run, ppo, ppo_dir: str, gold: dict, rm: dict) -> list[dict]:
  """Points {label, policy, step, kl(_lo/_hi), gold(_lo/_hi), rm}: SFT, then each kept PPO
  checkpoint, oldest first (the newest is `ppo`, the policy already evaluated)."""
  points = [("sft", run.sft, run.sft.params, run.sft.step, gold["sft"], rm["sft"])]
  for step in checkpoint.saved_steps(ppo_dir, "workdir"):
    if step == ppo.step:
      points.append(("ppo", ppo, ppo.params, step, gold["ppo"], rm["ppo"]))
    else:
      params = policy_lib.restore_gpt_params(ppo_dir, run.mesh, step)[1]
      step_texts = run.texts(ppo, params)
      points.append(("ppo", ppo, params, step, evaluation.score(run.metas, step_texts),
                     run.rm_scores(step_texts)))
  out = []
  for name, pol, params, step, step_gold, step_rm in points:
    point = {"label": f"{name}@{step}", "policy": name, "step": int(step)}
    point.update(zip(("kl", "kl_lo", "kl_hi"), evaluation.interval(run.kl(pol, params))))
    point.update(zip(("gold", "gold_lo", "gold_hi"), evaluation.interval(step_gold["total"])))
    point["rm"] = None if step_rm is None else float(np.mean(step_rm))
    out.append(point)
  return out


def _stage_cost(stage_dir: str) -> tuple[float, int]:
  """(wall-clock seconds from the stage's first to its last logged row, interruptions
  included; responses it sampled to train = iterations × episodes per iteration, 0 for an
  offline method)."""
  times = [row["time"] for row in metrics.read_metrics(stage_dir)]
  with open(os.path.join(stage_dir, "info.json"), encoding="utf-8") as f:
    info = json.load(f)
  steps = checkpoint.saved_step(stage_dir, "workdir")
  return (max(times) - min(times) if times else 0.0,
          int(steps * info.get("episodes_per_step", 0)))


def _methods(run: _Run, trained: dict, stages: dict, gold: dict, rm: dict,
             points: list[dict]) -> dict:
  """{sft and each method: {gold: {mean, lo, hi}, rm, kl: {mean, lo, hi}, wall_clock_s,
  samples}}; SFT's KL to itself is 0, PPO's is its newest reward-vs-KL point's."""
  def gold_of(name):
    return _named(evaluation.interval(gold[name]["total"]), "mean")

  def rm_of(name):
    return None if rm[name] is None else float(np.mean(rm[name]))

  table = {"sft": {"gold": gold_of("sft"), "rm": rm_of("sft"),
                   "kl": {"mean": 0.0, "lo": 0.0, "hi": 0.0}}}
  for name, pol in trained.items():
    newest = [p for p in points if p["policy"] == name and p["step"] == pol.step]
    kl = ((newest[0]["kl"], newest[0]["kl_lo"], newest[0]["kl_hi"]) if newest else
          evaluation.interval(run.kl(pol, pol.params)))
    wall_clock, samples = _stage_cost(stages[name])
    table[name] = {"gold": gold_of(name), "rm": rm_of(name), "kl": _named(kl, "mean"),
                   "wall_clock_s": wall_clock, "samples": samples}
  return table


def _samples(run: _Run, texts, gold, rm, best_of) -> list[dict]:
  rows = []
  for i, record in enumerate(run.records):
    row = {"id": record["meta"].get("id", i), "source": record["source"],
           "family": record["meta"]["family"], "prompt": record["messages"],
           "responses": {name: {"text": texts[name][i], "gold": float(gold[name]["total"][i]),
                                "rm": None if rm[name] is None else float(rm[name][i])}
                         for name in texts}}
    if best_of:
      candidates, rm_NxK, gold_NxK, chosen = best_of
      row["candidates"] = [{"text": t, "rm": float(r), "gold": float(g)}
                           for t, r, g in zip(candidates[i], rm_NxK[i], gold_NxK[i])]
      row["chosen"] = {name: int(index[i]) for name, index in chosen.items()}
    rows.append(row)
  return rows


def _plots(workdir: str, stages: dict, report: dict) -> None:
  panels = {}
  for stage, keys in _CURVES.items():
    if stage in stages and os.path.exists(os.path.join(stages[stage], "metrics.jsonl")):
      rows = metrics.read_metrics(stages[stage])
      panels[stage] = {k: ([r["step"] for r in rows if k in r], [r[k] for r in rows if k in r])
                       for k in keys if any(k in r for r in rows)}
  plots.curves(panels, os.path.join(workdir, "loss_curves.png"))
  names = list(report["policies"])
  gold = [report["policies"][n]["gold"] for n in names]
  plots.intervals(names, [g["mean"] for g in gold], [g["lo"] for g in gold],
                  [g["hi"] for g in gold], os.path.join(workdir, "gold_by_policy.png"),
                  ylabel="gold score", title="gold judge, held-out prompts (95% CI)")
  if report.get("reward_vs_kl"):
    logged = panels.get("ppo", {})
    plots.reward_vs_kl(report["reward_vs_kl"], logged, os.path.join(workdir, "reward_vs_kl.png"))
  if report.get("methods"):
    plots.gold_vs_kl(report["methods"], os.path.join(workdir, "gold_vs_kl_by_method.png"))


def _write_text(path: str, text: str) -> None:
  with open(path + ".tmp", "w", encoding="utf-8") as f:
    f.write(text)
  os.replace(path + ".tmp", path)


def _generate(run: _Run, stages: dict, counts: list[int], notes: list[str]):
  """(texts: policy name → one response per prompt, best-of-N candidates (see `_best_of`)
  plus the chosen indices or None, {method: its loaded policy} for the METHODS present)."""
  texts = {}
  if "pretrain" in stages:
    texts["base"] = run.texts(policy_lib.load(stages["pretrain"], run.mesh), style="few_shot")
  texts["sft"] = run.texts(run.sft)
  best_of = None
  if counts:
    candidates, rm_NxK, gold_NxK = _best_of(run, counts)
    chosen = {f"best_of_{k}": np.argmax(rm_NxK[:, :k], axis=1) for k in counts}
    for name, index in chosen.items():
      texts[name] = [c[j] for c, j in zip(candidates, index)]
    best_of = (candidates, rm_NxK, gold_NxK, chosen)
  trained = {name: policy_lib.load(stages[name], run.mesh) for name in METHODS
             if name in stages}
  for name, pol in trained.items():
    texts[name] = run.texts(pol)
    if "ppo" in pol.config and pol.config.ppo.ema_decay > 0:
      notes.append(f"{name}/ evaluated its EMA policy during training; this report evaluates "
                   f"the trained policy parameters")
  return texts, best_of, trained


def _comparisons(gold: dict, rm: dict, counts: list[int]) -> tuple[dict, dict]:
  """(diffs, win_rates) of sft vs base, each method vs sft (and best_of_N vs sft: diffs
  only), for the policies present."""
  pairs = [(a, b) for a, b in [("sft", "base"), *((m, "sft") for m in METHODS)]
           if a in gold and b in gold]
  best = [(f"best_of_{k}", "sft") for k in counts]
  diffs = {f"{a}_vs_{b}": _named(evaluation.paired_difference(
      gold[a]["total"], gold[b]["total"]), "mean") for a, b in pairs + best}
  win_rates = {}
  for a, b in pairs:
    rates = {"gold": _named(evaluation.win_rate(gold[a]["total"], gold[b]["total"]), "rate")}
    if rm[a] is not None:
      rates["rm"] = _named(evaluation.win_rate(rm[a], rm[b]), "rate")
    win_rates[f"{a}_vs_{b}"] = rates
  return diffs, win_rates


def report_mesh():
  """Every device, data parallel: the report's batches split over all of them."""
  return sharding.make_mesh(ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1)))


def write_report(pipeline_workdir: str, report_config) -> dict:
  """Evaluates a pipeline workdir's policies and writes the report; returns report.json's
  dict: policies.<name>.{gold: {mean, lo, hi, n, by_category, by_family[, by_source]}, rm:
  {mean, lo, hi}}, diffs.<a>_vs_<b>.{mean, lo, hi}[, diffs_by_source.<source>.<a>_vs_<b>],
  win_rates.<a>_vs_<b>.{gold, rm}.{rate, lo, hi},
  rm.{accuracy, label_ceiling, gold_agreement, ...}, reward_vs_kl [...], methods.<name>
  (with a method besides PPO: see `_methods`), examples [...]."""
  workdir = os.path.abspath(pipeline_workdir)
  cfg = report_config
  notes = []
  stages = _stages(workdir, notes)
  check_config(cfg)
  counts = best_of_counts(cfg.best_of) if "rm" in stages else []
  mesh = report_mesh()
  with jax.set_mesh(mesh):
    run = _Run(stages, cfg, mesh)
    texts, best_of, trained = _generate(run, stages, counts, notes)
    gold = {name: evaluation.score(run.metas, t) for name, t in texts.items()}
    rm = {name: run.rm_scores(t) for name, t in texts.items()}
    points = (_reward_vs_kl(run, trained["ppo"], stages["ppo"], gold, rm)
              if "ppo" in trained else [])
    methods = (_methods(run, trained, stages, gold, rm, points)
               if set(trained) - {"ppo"} else {})

  report = {"config": cfg.to_dict(), "notes": notes, "prompts": len(run.records),
            "data": run.data,
            "stages": {s: checkpoint.saved_step(d, "workdir") for s, d in stages.items()},
            "policies": {}}
  for name in texts:
    report["policies"][name] = {"gold": _gold_block(run.metas, run.source_masks, gold[name])}
    if rm[name] is not None:
      report["policies"][name]["rm"] = _named(evaluation.interval(rm[name]), "mean")
  report["diffs"], report["win_rates"] = _comparisons(gold, rm, counts)
  if run.source_masks:  # the same paired differences on each source's prompts alone
    report["diffs_by_source"] = {
        source: _comparisons({n: {"total": g["total"][mask_N]} for n, g in gold.items()},
                             dict.fromkeys(gold), counts)[0]
        for source, mask_N in run.source_masks.items()}
  if "rm" in stages:
    report["rm"] = _rm_heldout(stages["rm"])
    if not report["rm"]:
      notes.append("rm/metrics.jsonl holds no rm/* evaluation (eval_every=0?): the RM's "
                   "held-out accuracy is left out")
    names = [n for n in ("base", "sft", "ppo") if n in texts]
    report["rm"].update(_agreement("policy_gold_agreement",
                                   np.stack([rm[n] for n in names], 1),
                                   np.stack([gold[n]["total"] for n in names], 1)))
    if best_of:
      report["rm"].update(_agreement("best_of_gold_agreement", best_of[1], best_of[2]))
  report["reward_vs_kl"] = points
  if methods:
    report["methods"] = methods
  samples = _samples(run, texts, gold, rm, best_of)
  report["examples"] = [{k: row[k] for k in ("id", "family", "prompt", "responses")}
                        for row in samples[:cfg.num_examples]]

  if jax.process_index() == 0:  # several processes computed the same report: one writes it
    _write_text(os.path.join(workdir, "report_samples.jsonl"),
                "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in samples))
    _plots(workdir, stages, report)
    _write_text(os.path.join(workdir, "report.json"), json.dumps(report, indent=2) + "\n")
    _write_text(os.path.join(workdir, "report.md"), report_markdown.render(report, workdir))
    logging.info("report written: %s (report.json and plots beside it)",
                 os.path.join(workdir, "report.md"))
  return report
