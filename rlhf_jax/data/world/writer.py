"""Builds every stage's records from one seed and writes the world directory.

DIR/{corpus,sft,rankings,pairs,prompts}/{train,valid,test}.jsonl, DIR/datasheet.{md,json}.
Each record family draws from its own generator, default_rng([seed, stream]), and a
prompt's split is a hash of (seed, prompt messages), so equal prompts share a split.
Ranking and pair metas also carry the candidates' tiers, gold scores and the labeler
id: for analysis and evaluation only, never as a training signal.
"""
import hashlib
import json
import os
import shutil

import numpy as np

from rlhf_jax.data.world import corpus, datasheet, families, judge, labelers
from rlhf_jax.data.world.config import WorldConfig, for_size
from rlhf_jax.data.world.universe import make_universe
from rlhf_jax.errors import UserError

SPLITS = ("train", "valid", "test")
STAGES = ("corpus", "sft", "rankings", "pairs", "prompts")
SPECIAL_STRINGS = ("<|user|>", "<|assistant|>", "<|system|>", "<|endoftext|>", "<|pad|>")
_STREAMS = {"universe": 0, "corpus": 1, "sft": 2, "rankings": 3, "prompts": 4, "labelers": 5}


def split_of(key: str, seed: int, fractions) -> str:
  """train/valid/test from a uniform number read off sha256(seed, key)."""
  digest = hashlib.sha256(f"{seed}\n{key}".encode()).hexdigest()
  u = int(digest[:15], 16) / 16**15
  return SPLITS[0] if u < fractions[0] else SPLITS[1] if u < fractions[0] + fractions[1] \
      else SPLITS[2]


def prompt_key(messages) -> str:
  return json.dumps(messages, sort_keys=True, ensure_ascii=False)


def _families(rng, mix: dict[str, float], n: int) -> list[str]:
  names = sorted(mix)
  weights = np.array([mix[name] for name in names], dtype=np.float64)
  return [names[i] for i in rng.choice(len(names), size=n, p=weights / weights.sum())]


def _examples(rng, uni, config, mix, n, prefix):
  for i, name in enumerate(_families(rng, mix, n)):
    ex = families.make_example(rng, name, uni, config)
    yield ex._replace(meta={"id": f"{prefix}-{i:06d}", **ex.meta})


def build_rankings(rng, label_rng, uni, config):
  """Ranking records (ranked by labeler A) and the agreement audit (labeler B ranks too)."""
  pool = labelers.make_labelers(label_rng, config.n_labelers, config.labeler_weight_spread,
                                config.labeler_length_bias)
  items = []
  for ex in _examples(rng, uni, config, config.ranking_mix, config.n_rankings, "rank"):
    responses, tiers = families.candidates(rng, ex, uni, config)
    scores = judge.score_batch([ex.meta] * len(responses), responses)
    a, b = (int(x) for x in label_rng.choice(config.n_labelers, size=2, replace=False))
    groups = np.array([responses.index(r) for r in responses])
    values = [labelers.perceived_scores(pool, j, scores, responses) for j in (a, b)]
    items.append((ex, responses, tiers, scores, (a, b), groups, values))
  diffs = [np.concatenate([labelers.pair_differences(it[6][j], it[5]) for it in items])
           for j in (0, 1)]
  tau = config.labeler_temperature or labelers.calibrate_temperature(
      diffs[0], diffs[1], config.agreement_target)
  records, audit = [], datasheet.AgreementAudit(tau, diffs)
  for ex, responses, tiers, scores, (a, _), groups, values in items:
    gumbels = [label_rng.gumbel(size=len(responses))[groups] for _ in values]
    u_a, u_b = (labelers.utilities(v, tau, g) for v, g in zip(values, gumbels))
    audit.add(u_a, u_b, np.array([s.total for s in scores]), groups)
    meta = {**ex.meta, "labeler": a, "tiers": tiers, "gold": [s.total for s in scores]}
    records.append({"prompt": ex.messages, "responses": responses,
                    "ranking": labelers.dense_ranks(u_a), "meta": meta})
  return records, audit


def labeler_pool(seed: int, config: WorldConfig) -> labelers.Labelers:
  """The simulated labelers of world (seed, config): the pool `build_rankings` draws from."""
  rng = np.random.default_rng([seed, _STREAMS["labelers"]])
  return labelers.make_labelers(rng, config.n_labelers, config.labeler_weight_spread,
                                config.labeler_length_bias)


def label_samples(world_dir: str, records: list[dict], responses_NxK: list[list[str]],
                  seed: int) -> list[dict]:
  """Rankings of model samples by the world's labelers: InstructGPT's data collection.

  records: N {"prompt" or "messages": prompt turns, "meta": gold-judge meta} of world
  prompts; responses_NxK: K sampled responses per prompt. Each record is ranked by one
  labeler of the pool (drawn per record with `seed`), with the pool's noise temperature
  calibrated when the world was built (datasheet.json), so labels on samples are as
  noisy as on the world's own rankings. Returns rankings records {"prompt", "responses",
  "ranking", "meta"} whose meta adds "labeler", "tiers" ("sample") and "gold" (the judge's
  totals: for evaluation only, never a training signal).
  """
  with open(os.path.join(world_dir, "datasheet.json"), encoding="utf-8") as f:
    sheet = json.load(f)
  config = WorldConfig(**sheet["config"])
  pool, tau = labeler_pool(sheet["seed"], config), sheet["agreement"]["temperature"]
  rng = np.random.default_rng([seed, _STREAMS["labelers"], len(records)])
  out = []
  for record, responses in zip(records, responses_NxK):
    meta, prompt = record["meta"], record.get("prompt", record.get("messages"))
    scores = judge.score_batch([meta] * len(responses), responses)
    j = int(rng.integers(config.n_labelers))
    groups = np.array([responses.index(r) for r in responses])
    gumbel_K = rng.gumbel(size=len(responses))[groups]
    utilities_K = labelers.utilities(labelers.perceived_scores(pool, j, scores, responses),
                                     tau, gumbel_K)
    out.append({"prompt": prompt, "responses": list(responses),
                "ranking": labelers.dense_ranks(utilities_K),
                "meta": {**{k: v for k, v in meta.items() if k not in ("tiers", "gold")},
                         "labeler": j, "tiers": ["sample"] * len(responses),
                         "gold": [s.total for s in scores]}})
  return out


def pairs_from_ranking(record: dict) -> list[dict]:
  """Every non-tied pair (chosen ranked above rejected), in index order."""
  meta, ranks = record["meta"], record["ranking"]
  base = {k: v for k, v in meta.items() if k not in ("tiers", "gold")}
  pairs = []
  for i in range(len(ranks)):
    for k in range(len(ranks)):
      if ranks[i] < ranks[k]:
        pair_meta = {**base, "id": f"{meta['id']}-{i}-{k}", "chosen_tier": meta["tiers"][i],
                     "rejected_tier": meta["tiers"][k], "chosen_gold": meta["gold"][i],
                     "rejected_gold": meta["gold"][k]}
        pairs.append({"prompt": record["prompt"], "chosen": record["responses"][i],
                      "rejected": record["responses"][k], "meta": pair_meta})
  return pairs


def build_world(seed: int, config: WorldConfig):
  """(records[stage][split], audit) for the whole world."""
  config.validate()
  rng = lambda stream: np.random.default_rng([seed, _STREAMS[stream]])
  uni_rng = rng("universe")
  uni = make_universe(uni_rng, config.n_places, config.n_people, config.n_species)
  split = lambda messages: split_of(prompt_key(messages), seed, config.split_fractions)
  records = {stage: {s: [] for s in SPLITS} for stage in STAGES}
  is_train = lambda messages: split(messages) == "train"
  for doc in corpus.make_corpus(rng("corpus"), uni, config, is_train):
    records["corpus"][split_of(doc, seed, config.split_fractions)].append({"text": doc})
  for ex in _examples(rng("sft"), uni, config, config.sft_mix, config.n_sft, "sft"):
    messages = ex.messages + [{"role": "assistant", "content": ex.ideal}]
    records["sft"][split(ex.messages)].append({"messages": messages, "meta": ex.meta})
  rankings, audit = build_rankings(rng("rankings"), rng("labelers"), uni, config)
  for record in rankings:
    part = split(record["prompt"])
    records["rankings"][part].append(record)
    records["pairs"][part].extend(pairs_from_ranking(record))
  for ex in _examples(rng("prompts"), uni, config, config.prompt_mix, config.n_prompts, "prompt"):
    records["prompts"][split(ex.messages)].append({"messages": ex.messages, "meta": ex.meta})
  return records, audit


def universe_for(seed: int, config: WorldConfig):
  """The universe `build_world(seed, config)` uses (its own generator stream)."""
  return make_universe(np.random.default_rng([seed, _STREAMS["universe"]]), config.n_places,
                       config.n_people, config.n_species)


def _dumps(record: dict) -> str:
  return json.dumps(record, sort_keys=True, ensure_ascii=False)


def _write_tree(root: str, records, sheet: dict) -> None:
  for stage, by_split in records.items():
    os.makedirs(os.path.join(root, stage))
    for part, rows in by_split.items():
      with open(os.path.join(root, stage, f"{part}.jsonl"), "w", encoding="utf-8") as f:
        for row in rows:
          line = _dumps(row)
          if any(s in line for s in SPECIAL_STRINGS):
            raise RuntimeError(f"a {stage} record contains a special token: {line[:200]}")
          f.write(line + "\n")
  with open(os.path.join(root, "datasheet.json"), "w", encoding="utf-8") as f:
    f.write(json.dumps(sheet, sort_keys=True, indent=2) + "\n")
  with open(os.path.join(root, "datasheet.md"), "w", encoding="utf-8") as f:
    f.write(datasheet.markdown(sheet))


def check_out(out_dir: str) -> None:
  """A world replaces only a world (or an empty directory): never a user's files."""
  if os.path.isfile(out_dir) or (os.path.isdir(out_dir) and os.listdir(out_dir) and
                                 not os.path.exists(os.path.join(out_dir, "datasheet.json"))):
    raise UserError(f"--out={out_dir} exists and is not a world directory (no datasheet.json), "
                    f"which writing the world would replace; choose a new --out")


def write_world(out_dir: str, seed: int = 0, size: str = "small",
                config: WorldConfig | None = None) -> None:
  """Writes the world for (seed, size) to `out_dir`, replacing what is there.

  The files are built in a sibling temporary directory and renamed into place, so a
  crash never leaves a half-written world. `config` overrides the `size` preset.
  """
  config = config or for_size(size)
  check_out(out_dir)
  records, audit = build_world(seed, config)
  sheet = datasheet.summarize(records, audit, config, seed, size, universe_for(seed, config))
  out_dir = os.path.abspath(out_dir)
  os.makedirs(os.path.dirname(out_dir), exist_ok=True)
  tmp, old = f"{out_dir}.tmp-{os.getpid()}", f"{out_dir}.old-{os.getpid()}"
  shutil.rmtree(tmp, ignore_errors=True)
  try:
    os.makedirs(tmp)
    _write_tree(tmp, records, sheet)
    if os.path.exists(out_dir):
      os.rename(out_dir, old)
    os.rename(tmp, out_dir)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)
