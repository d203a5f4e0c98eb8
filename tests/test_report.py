"""The pipeline report: stable report.json keys, best-of-N choice, reward vs KL, win rates
and RM-vs-gold agreement by hand, missing stages, and `python -m rlhf_jax.evaluate`."""
import functools
import json
import math
import os

import jax
import numpy as np
import pytest

from rlhf_jax import (checkpoint, configs, evaluate, evaluation, metrics, policy, report,
                      sampling, score, sharding, train)
from rlhf_jax.tasks import reward_metrics

from conftest import SMOKE_PIPELINE_GROUP

pytestmark = SMOKE_PIPELINE_GROUP
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

POLICIES = ("base", "sft", "best_of_4", "best_of_16", "ppo", "grpo")
GRPO_STEPS = 2


@pytest.fixture(scope="module")
def pipeline_dir(smoke_pipeline, tmp_path_factory):
  """The smoke pipeline's stage workdirs, linked into a directory of this module's own (the
  reports below are written there): PPO kept checkpoints 2 and 4. Beside them, GRPO trained
  here for GRPO_STEPS iterations from the same SFT model and RM, through the shared loop
  (a critic-free state saved and loaded)."""
  root = str(tmp_path_factory.mktemp("pipeline"))
  for name in ("pretrain", "sft", "rm", "ppo"):
    os.symlink(os.path.join(smoke_pipeline[0], name), os.path.join(root, name))
  grpo = configs.experiment_module(os.path.join(REPO, "experiments", "grpo_world.py"))
  config = configs.override(grpo.get_config("smoke"), **{
      "init_from": os.path.join(root, "sft"), "ppo.reward_from": os.path.join(root, "rm"),
      "total_steps": GRPO_STEPS, "eval_every": 0, "ckpt_every": GRPO_STEPS})
  train.run(config, os.path.join(root, "grpo"))
  return root


def _config(**overrides):
  config = configs.report_block()
  config.update(num_prompts=8, batch_size=16, max_new_tokens=8, best_of="4,16",
                num_examples=2, seed=0)
  config.update(overrides)
  return config


@pytest.fixture(scope="module")
def written(pipeline_dir):
  """The report on 4 test prompts of each default set: the SFT data's, then PPO's."""
  return report.write_report(pipeline_dir, _config(num_prompts=4))


def _assert_interval(block, key="mean"):
  values = [block[key], block["lo"], block["hi"]]
  assert all(math.isfinite(v) for v in values) and block["lo"] <= block[key] <= block["hi"], block


def test_report_json_has_the_stable_keys(pipeline_dir, written):
  with open(os.path.join(pipeline_dir, "report.json"), encoding="utf-8") as f:
    saved = json.load(f)
  assert saved == json.loads(json.dumps(written))
  assert list(saved["policies"]) == list(POLICIES)
  for name in POLICIES:
    gold = saved["policies"][name]["gold"]
    _assert_interval(gold)
    assert gold["n"] == 8
    assert set(gold["by_category"]) == set(evaluation.CATEGORIES)
    assert gold["by_family"] and all(0 <= v <= 1 for v in gold["by_family"].values())
  for name in ("sft_vs_base", "ppo_vs_sft", "grpo_vs_sft"):
    _assert_interval(saved["diffs"][name])
  for judge in ("gold", "rm"):
    _assert_interval(saved["win_rates"]["ppo_vs_sft"][judge], "rate")
    _assert_interval(saved["win_rates"]["grpo_vs_sft"][judge], "rate")
  for key in ("accuracy", "label_ceiling", "gold_agreement"):
    assert 0 <= saved["rm"][f"{key}_lo"] <= saved["rm"][key] <= saved["rm"][f"{key}_hi"] <= 1
  assert len(saved["examples"]) == 2 and set(saved["examples"][0]["responses"]) == set(POLICIES)
  markdown = open(os.path.join(pipeline_dir, "report.md"), encoding="utf-8").read()
  for image in ("loss_curves.png", "gold_by_policy.png", "reward_vs_kl.png",
                "rm/rm_reliability.png", "gold_vs_kl_by_method.png"):
    assert f"]({image})" in markdown and os.path.getsize(os.path.join(pipeline_dir, image))


def test_best_of_n_keeps_the_candidate_the_reward_model_scores_highest(pipeline_dir, written):
  with open(os.path.join(pipeline_dir, "report_samples.jsonl"), encoding="utf-8") as f:
    rows = [json.loads(line) for line in f]
  assert len(rows) == 8 and all(len(row["candidates"]) == 16 for row in rows)
  for row in rows:
    for n in (4, 16):
      rewards = [c["rm"] for c in row["candidates"][:n]]
      chosen = row["chosen"][f"best_of_{n}"]
      assert chosen == int(np.argmax(rewards))
      assert row["responses"][f"best_of_{n}"]["text"] == row["candidates"][chosen]["text"]
  # The recorded candidate rewards are the reward model's scores of those texts.
  row = rows[0]
  rescored = score.reward_scorer(os.path.join(pipeline_dir, "rm"))(
      [row["prompt"]], [[c["text"] for c in row["candidates"]]])[0]
  np.testing.assert_allclose(rescored, [c["rm"] for c in row["candidates"]], atol=1e-5)
  assert written["policies"]["best_of_16"]["rm"]["mean"] >= (
      written["policies"]["best_of_4"]["rm"]["mean"])


def test_reward_vs_kl_starts_at_the_reference_with_zero_kl(pipeline_dir, written):
  points = written["reward_vs_kl"]
  assert [p["label"] for p in points] == ["sft@30", "ppo@2", "ppo@4"]
  assert checkpoint.saved_steps(os.path.join(pipeline_dir, "ppo")) == [2, 4]
  assert abs(points[0]["kl"]) < 1e-6 and abs(points[0]["kl_hi"] - points[0]["kl_lo"]) < 1e-6
  assert points[-1]["rm"] == pytest.approx(written["policies"]["ppo"]["rm"]["mean"])
  assert points[0]["gold"] == pytest.approx(written["policies"]["sft"]["gold"]["mean"])
  assert all(math.isfinite(p["kl"]) and math.isfinite(p["rm"]) for p in points)


def test_methods_table_compares_each_method_with_sft(pipeline_dir, written):
  methods = written["methods"]
  assert list(methods) == ["sft", "ppo", "grpo"]
  for name, row in methods.items():
    assert row["gold"]["mean"] == pytest.approx(written["policies"][name]["gold"]["mean"])
    assert row["rm"] == pytest.approx(written["policies"][name]["rm"]["mean"])
    _assert_interval(row["kl"])
  assert methods["sft"]["kl"] == {"mean": 0.0, "lo": 0.0, "hi": 0.0}
  ppo_point = written["reward_vs_kl"][-1]
  assert methods["ppo"]["kl"]["mean"] == ppo_point["kl"]  # the newest checkpoint's, reused
  info = json.load(open(os.path.join(pipeline_dir, "grpo", "info.json"), encoding="utf-8"))
  assert info["algorithm"] == "grpo" and info["critic_params"] == 0
  assert methods["grpo"]["samples"] == GRPO_STEPS * info["episodes_per_step"] > 0
  assert methods["ppo"]["samples"] == 4 * 16
  assert all(methods[m]["wall_clock_s"] > 0 for m in ("ppo", "grpo"))
  rows = [r for r in metrics.read_metrics(os.path.join(pipeline_dir, "grpo")) if "grpo/kl" in r]
  assert [r["step"] for r in rows] == [1, 2]
  assert all(r["grpo/first_minibatch_ratio_error"] <= 1e-5 for r in rows)
  markdown = open(os.path.join(pipeline_dir, "report.md"), encoding="utf-8").read()
  assert "## Methods compared" in markdown and "| grpo |" in markdown


def test_sequence_log_probs_sum_the_samplers_log_probs(pipeline_dir):
  mesh = sharding.make_mesh(configs.base_config().mesh)
  sft = policy.load(os.path.join(pipeline_dir, "sft"), mesh)
  records, _ = evaluation.held_out_records(sft.config.data.path, "test", 8)
  tokens, mask = evaluation.chat_prompts(sft.tokenizer, records, 64)
  samples = jax.jit(functools.partial(
      sampling.sample, sft.model, max_new_tokens=12, eos_id=sft.tokenizer.eos_id,
      pad_id=sft.tokenizer.pad_id, temperature=1.0))(sft.params, tokens, mask,
                                                     jax.random.key(0))
  np.testing.assert_array_equal(
      evaluation.response_mask(samples.tokens_BxN, sft.tokenizer.eos_id), samples.mask_BxN)
  log_probs = evaluation.sequence_log_probs(
      sft.model, sft.params, tokens, mask, np.asarray(samples.tokens_BxN), mesh=mesh,
      batch_size=8, eos_id=sft.tokenizer.eos_id)
  np.testing.assert_allclose(log_probs, np.asarray(samples.log_probs_BxN).sum(1), atol=1e-4)


def test_win_rate_and_gold_agreement_by_hand():
  # a beats b, ties, loses, beats: (1 + ½ + 0 + 1) / 4.
  assert evaluation.win_rate([1, 2, 3, 3], [0, 2, 4, 1])[0] == 0.625
  # pairs (0,1): RM and judge agree; (0,2): the judge ties, skipped; (1,2): agree.
  assert reward_metrics.set_gold_agreement([3.0, 1.0, 2.0], [1.0, 0.0, 1.0]) == 1.0
  # (0,1) an RM tie disagrees; (0,2) and (1,2) the RM orders against the judge.
  assert reward_metrics.set_gold_agreement([1.0, 1.0, 0.0], [0.0, 0.5, 1.0]) == 0.0
  assert reward_metrics.set_gold_agreement([1.0, 0.0, 2.0], [0.5, 0.5, 0.5]) is None
  np.testing.assert_array_equal(
      reward_metrics.gold_agreement([0.3, -0.1, 0.2, 0.0], [1.0, 1.0, 0.0, -1.0]), [1, 0, 0])
  np.testing.assert_array_equal(
      evaluation.response_mask(np.array([[5, 2, 7], [2, 0, 0], [1, 1, 1]]), eos_id=2),
      [[1, 1, 0], [1, 0, 0], [1, 1, 1]])


def test_report_by_default_answers_the_sft_then_the_rl_prompts_and_pairs_each_set(
    pipeline_dir, written):
  """With PPO's data another prompt set of the SFT data's world, the report answers the
  first n test prompts of each, SFT's first; it gives the gold score and each paired
  difference per set, whose n-weighted means are the overall ones."""
  out = written
  assert out["data"] == "world:small:0/sft,world:small:0/prompts" and out["prompts"] == 8
  samples = [json.loads(line) for line in open(os.path.join(pipeline_dir,
                                                            "report_samples.jsonl"))]
  assert [s["source"] for s in samples] == ["sft"] * 4 + ["prompts"] * 4
  rl_prompts, _ = evaluation.held_out_records("world:small:0/prompts", "test", 4)
  assert [s["prompt"] for s in samples[4:]] == [r["messages"] for r in rl_prompts]
  for name in ("base", "sft", "ppo"):
    gold = out["policies"][name]["gold"]
    assert list(gold["by_source"]) == ["sft", "prompts"]
    assert [b["n"] for b in gold["by_source"].values()] == [4, 4]
    assert np.mean([b["mean"] for b in gold["by_source"].values()]) == pytest.approx(
        gold["mean"], abs=1e-9)
    by_hand = np.mean([s["responses"][name]["gold"] for s in samples[4:]])
    assert gold["by_source"]["prompts"]["mean"] == pytest.approx(by_hand, abs=1e-9)
  by_source = out["diffs_by_source"]
  for pair in ("sft_vs_base", "ppo_vs_sft", "best_of_4_vs_sft"):
    assert np.mean([d[pair]["mean"] for d in by_source.values()]) == pytest.approx(
        out["diffs"][pair]["mean"], abs=1e-9)
  markdown = open(os.path.join(pipeline_dir, "report.md"), encoding="utf-8").read()
  assert "`prompts` split only" in markdown


def test_missing_stages_are_left_out_and_sft_is_required(pipeline_dir, tmp_path, capsys):
  only_sft = tmp_path / "only_sft"
  os.makedirs(only_sft / "ppo")  # a stage that has not finished a checkpoint yet
  os.symlink(os.path.join(pipeline_dir, "sft"), only_sft / "sft")
  assert evaluate.main(["--workdir", str(only_sft), "--num_prompts", "8", "--batch_size", "8",
                        "--max_new_tokens", "4", "--num_examples", "1"]) == 0
  assert "sft: gold" in capsys.readouterr().out
  saved = json.loads((only_sft / "report.json").read_text())
  assert list(saved["policies"]) == ["sft"] and "rm" not in saved and not saved["diffs"]
  assert [n.split()[2] for n in saved["notes"]] == ["pretrain/", "rm/", "ppo/"]
  assert (only_sft / "report.md").exists() and (only_sft / "gold_by_policy.png").exists()

  no_sft = tmp_path / "no_sft"
  os.makedirs(no_sft / "rm")
  assert evaluate.main(["--workdir", str(no_sft)]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and "has no sft/ stage workdir" in err[0], err
