"""The generated world on disk: layout, formats, determinism, splits, datasheet, CLI."""
import hashlib
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from rlhf_jax.data.world import (WorldConfig, adversarial, build_world, for_size, score,
                                 write_world)
from rlhf_jax.data.world.config import FAMILY_NAMES
from rlhf_jax.data.world.writer import prompt_key, split_of
from rlhf_jax.errors import UserError

STAGES = ("corpus", "sft", "rankings", "pairs", "prompts")
SPLITS = ("train", "valid", "test")
SPECIAL = ("<|user|>", "<|assistant|>", "<|system|>", "<|endoftext|>", "<|pad|>")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("world") / "seed0")
  start = time.perf_counter()
  write_world(out, seed=0, size="small")
  return out, time.perf_counter() - start


def read(root, stage, split):
  with open(os.path.join(root, stage, f"{split}.jsonl"), encoding="utf-8") as f:
    return [json.loads(line) for line in f]


def all_records(root, stage):
  return [r for split in SPLITS for r in read(root, stage, split)]


def tree_hashes(root):
  hashes = {}
  for folder, _, files in os.walk(root):
    for name in files:
      path = os.path.join(folder, name)
      with open(path, "rb") as f:
        hashes[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
  return hashes


def test_layout_and_speed(world):
  root, seconds = world
  for stage in STAGES:
    for split in SPLITS:
      assert read(root, stage, split), (stage, split)
  assert os.path.exists(os.path.join(root, "datasheet.md"))
  assert seconds < 30, f"small world took {seconds:.1f}s"
  assert not [n for n in os.listdir(os.path.dirname(root)) if ".tmp-" in n or ".old-" in n]


def test_same_seed_same_bytes_other_seed_differs(world, tmp_path):
  root, _ = world
  write_world(str(tmp_path / "again"), seed=0, size="small")
  assert tree_hashes(str(tmp_path / "again")) == tree_hashes(root)
  write_world(str(tmp_path / "other"), seed=1, size="small")
  other = tree_hashes(str(tmp_path / "other"))
  assert all(other[name] != digest for name, digest in tree_hashes(root).items()
             if name.endswith(".jsonl"))


# sha256 of corpus/*, sft/*, prompts/* (train, valid, test, concatenated) for seed 0, small.
# Pretraining runs and evaluations depend on these records: a change must be deliberate
# (bump world.VERSION, rerun the runs that read them) and then update this digest.
STABLE_STAGES_SHA256 = "6ce1379fd614e0b69c94e6aa9d60e1444d60ebc05ca56ff544d5611dbf20e831"


def test_corpus_sft_and_prompts_are_pinned(world):
  root, _ = world
  digest = hashlib.sha256()
  for stage in ("corpus", "sft", "prompts"):
    for split in SPLITS:
      with open(os.path.join(root, stage, f"{split}.jsonl"), "rb") as f:
        digest.update(f.read())
  assert digest.hexdigest() == STABLE_STAGES_SHA256


def test_record_formats(world):
  root, _ = world
  for r in read(root, "corpus", "train")[:50]:
    assert list(r) == ["text"] and r["text"]
  for r in read(root, "sft", "train"):
    roles = [m["role"] for m in r["messages"]]
    assert roles[-1] == "assistant" and roles[-2] == "user" and set(roles) <= {"user", "assistant"}
    assert r["meta"]["family"] in FAMILY_NAMES and r["meta"]["id"]
  for r in read(root, "rankings", "train"):
    assert len(r["responses"]) == len(r["ranking"]) == 4
    assert r["prompt"][-1]["role"] == "user"
    assert sorted(set(r["ranking"])) == list(range(len(set(r["ranking"]))))  # dense ranks
  for r in read(root, "pairs", "train")[:200]:
    assert r["chosen"] != r["rejected"] and r["prompt"][-1]["role"] == "user"
  for r in read(root, "prompts", "train"):
    assert r["messages"][-1]["role"] == "user" and "family" in r["meta"]


def test_pairs_are_the_untied_pairs_of_the_rankings(world):
  root, _ = world
  rankings, pairs = read(root, "rankings", "valid"), read(root, "pairs", "valid")
  expected = sum(1 for r in rankings for a in r["ranking"] for b in r["ranking"] if a < b)
  assert len(pairs) == expected
  by_id = {r["meta"]["id"]: r for r in rankings}
  for p in pairs[:100]:
    ranking = by_id[p["meta"]["id"].rsplit("-", 2)[0]]
    i, k = ranking["responses"].index(p["chosen"]), ranking["responses"].index(p["rejected"])
    assert ranking["ranking"][i] < ranking["ranking"][k]


def test_no_prompt_in_two_splits(world):
  root, _ = world
  seen = {}
  for stage, field in (("sft", "messages"), ("rankings", "prompt"), ("prompts", "messages")):
    for split in SPLITS:
      for r in read(root, stage, split):
        messages = r[field][:-1] if stage == "sft" else r[field]
        key = json.dumps(messages, sort_keys=True)
        assert seen.setdefault(key, split) == split, key
  counts = {s: sum(len(read(root, st, s)) for st in ("sft", "rankings", "prompts"))
            for s in SPLITS}
  total = sum(counts.values())
  assert abs(counts["train"] / total - 0.70) < 0.05
  assert abs(counts["test"] / total - 0.15) < 0.04


def test_corpus_has_no_chat_template_but_has_qa_noise_and_duplicates(world):
  root, _ = world
  docs = [r["text"] for r in all_records(root, "corpus")]
  assert not [d for d in docs if any(s in d for s in SPECIAL)]
  assert sum("\nA: " in d and d.startswith("Q: ") for d in docs) > 0.1 * len(docs)
  assert any("Advertisement" in d or "Click here" in d for d in docs)
  assert any(d.startswith(("Home", "Menu", "Skip")) for d in docs)
  assert any("asked:" in d for d in docs) and any(d.startswith("One day") for d in docs)
  assert len(set(docs)) < len(docs)
  questions = [block.split("\nA: ")[0] for d in docs if d.startswith("Q: ")
               for block in d.split("\n\nQ: ")]
  questions = [q[3:] if q.startswith("Q: ") else q for q in questions]
  splits = {split_of(prompt_key([{"role": "user", "content": q}]), 0, (0.7, 0.15, 0.15))
            for q in questions}
  # Few-shot pages never show a valid or test prompt.
  assert len(questions) > 100 and splits == {"train"}


def test_sft_fewer_than_rankings_and_all_families_present(world):
  root, _ = world
  sft, rankings = all_records(root, "sft"), all_records(root, "rankings")
  assert len(sft) < len(rankings)
  for records in (sft, rankings, all_records(root, "prompts")):
    assert {r["meta"]["family"] for r in records} == set(FAMILY_NAMES)


def test_prompt_mix_follows_the_api_use_cases(world):
  root, _ = world
  prompts = all_records(root, "prompts")
  share = lambda names: sum(r["meta"]["family"] in names for r in prompts) / len(prompts)
  assert share({"format", "harmful"}) == pytest.approx(0.456, abs=0.03)  # generation
  assert share({"facts"}) == pytest.approx(0.124, abs=0.02)  # open QA
  assert share({"brainstorm"}) == pytest.approx(0.112, abs=0.02)


def test_texts_are_short(world):
  root, _ = world
  sft = all_records(root, "sft")
  prompt_words = np.array([len(r["messages"][-2]["content"].split()) for r in sft])
  response_words = np.array([len(r["messages"][-1]["content"].split()) for r in sft])
  assert prompt_words.max() <= 40 and np.mean(response_words < 40) > 0.95


def test_every_stored_meta_scores_its_own_ideal_as_perfect(world):
  root, _ = world
  for r in all_records(root, "sft"):
    assert score(r["meta"], r["messages"][-1]["content"]).total == 1.0, r


def test_datasheet_agreement_and_tiers(world):
  root, _ = world
  with open(os.path.join(root, "datasheet.json"), encoding="utf-8") as f:
    sheet = json.load(f)
  agreement = sheet["agreement"]
  assert abs(agreement["labeler_labeler"] - 0.73) <= 0.02
  assert agreement["labeler_gold"] > agreement["labeler_labeler"]
  tiers = sheet["gold_by_tier"]
  assert tiers["ideal"]["mean"] >= 0.95
  assert tiers["unsafe"]["mean"] < 0.1
  assert all(tiers[t]["mean"] < tiers["ideal"]["mean"] - 0.2 for t in tiers if t != "ideal")
  mean = {t: tiers[t]["mean"] for t in tiers}
  assert mean["ideal"] > mean["partial"] > max(mean["wrong"], mean["incomplete"])
  assert min(mean["wrong"], mean["incomplete"]) > mean["refusal"]
  assert max(mean["repetitive"], mean["boilerplate"], mean["rambling"]) < 0.5
  assert mean["offtopic"] < 0.1 and tiers["offtopic"]["n"] > 0  # fluent but off-task
  table = sheet["adversarial_sft_test"]
  assert set(table) == {s.name for s in adversarial.STRATEGIES}
  assert table["ideal"] == {f: 1.0 for f in FAMILY_NAMES}
  with open(os.path.join(root, "datasheet.md"), encoding="utf-8") as f:
    md = f.read()
  assert "gold score of adversarial strategies per family" in md.lower()
  assert "total   = safety * hygiene * quality" in md
  base = sheet["baselines_sft_test"]
  assert base["ideal"] == 1.0
  assert base["random_words"] < base["same_family_other_prompt"] < 0.6
  counts = sheet["counts"]["rankings"]
  assert sum(c["total"] for c in counts.values()) == sheet["config"]["n_rankings"]
  assert set(counts["train"]["by_family"]) == set(FAMILY_NAMES)


def test_labelers_rank_better_tiers_higher(world):
  root, _ = world
  wins = []
  for r in all_records(root, "rankings"):
    tiers, ranks = r["meta"]["tiers"], r["ranking"]
    if "ideal" in tiers and "unsafe" not in tiers:
      wins.append(ranks[tiers.index("ideal")] == 0)
  assert np.mean(wins) > 0.6


def test_config_knobs_k_and_agreement_target():
  config = WorldConfig(n_places=6, n_people=10, n_species=6, n_corpus_docs=50, n_sft=20,
                       n_rankings=600, n_prompts=20, k=6, agreement_target=0.80)
  records, audit = build_world(3, config)
  rankings = [r for rows in records["rankings"].values() for r in rows]
  assert all(len(r["responses"]) == 6 for r in rankings)
  assert abs(audit.summary(0.8)["labeler_labeler"] - 0.80) <= 0.03
  fixed = WorldConfig(n_places=6, n_people=10, n_species=6, n_corpus_docs=10, n_sft=10,
                      n_rankings=50, n_prompts=10, labeler_temperature=0.05)
  assert build_world(3, fixed)[1].temperature == 0.05


def test_bad_size_and_bad_knobs_are_user_errors(tmp_path):
  with pytest.raises(UserError, match="small, medium, large"):
    write_world(str(tmp_path / "w"), size="huge")
  assert not os.path.exists(tmp_path / "w")
  with pytest.raises(UserError, match="k="):
    for_size("small", k=1)
  with pytest.raises(UserError, match="prompt_mix"):
    for_size("small", prompt_mix={"poetry": 1.0})


def test_cli(tmp_path):
  env = {**os.environ, "PYTHONPATH": os.getcwd()}
  bad = subprocess.run([sys.executable, "-m", "rlhf_jax.data.world", "--out", str(tmp_path / "w"),
                        "--size", "tiny"], capture_output=True, text=True, env=env)
  assert bad.returncode == 2 and "small, medium, large" in bad.stderr
  assert len(bad.stderr.strip().splitlines()) == 1
  good = subprocess.run([sys.executable, "-m", "rlhf_jax.data.world", "--out",
                         str(tmp_path / "w"), "--seed", "5", "--size", "small"],
                        capture_output=True, text=True, env=env)
  assert good.returncode == 0, good.stderr
  assert sorted(os.listdir(tmp_path / "w")) == sorted(STAGES + ("datasheet.json", "datasheet.md"))
