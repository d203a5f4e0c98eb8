"""`chatgpt_world.py:smoke` through `python -m rlhf_jax.main`: four stages chained in
WORKDIR/<stage>, then the report; finished stages skipped on a rerun, an interrupted one
resumed to the same numbers (test_pipeline_interrupted.py); the links checked up front."""
import json
import os

import pytest

from rlhf_jax import configs, metrics, pipeline_runner
from rlhf_jax.errors import UserError

import test_cli
from conftest import REPO, SMOKE_PIPELINE_FLAGS, SMOKE_PIPELINE_GROUP, finish, start_main

pytestmark = SMOKE_PIPELINE_GROUP

STAGES = ["pretrain", "sft", "rm", "ppo"]
TIMING_KEYS = {"time", "train/steps_per_sec", "train/tokens_per_sec", "train/mfu"}


def stage_metrics(workdir):
  """{stage: {step: {metric: value}}} without the wall-clock-dependent metrics."""
  result = {}
  for stage in STAGES:
    rows = metrics.read_metrics(os.path.join(workdir, stage))
    result[stage] = {}
    for row in rows:
      result[stage].setdefault(row["step"], {}).update(
          {k: v for k, v in row.items() if k not in TIMING_KEYS})
  return result


@pytest.fixture(scope="module")
def pipeline(smoke_pipeline):
  return smoke_pipeline


def test_stages_run_in_order_each_warm_started_from_the_one_before(pipeline):
  workdir, stderr = pipeline
  assert "stage 1/4: pretrain (3 to go)" in stderr
  assert "stage 2/4: sft (pretrain done; 2 to go)" in stderr
  assert "stage 4/4: ppo (pretrain, sft, rm done; 0 to go)" in stderr
  saved = {}
  for stage in STAGES:
    assert os.path.exists(os.path.join(workdir, stage, pipeline_runner.DONE_FILE)), stage
    with open(os.path.join(workdir, stage, "config.json")) as f:
      saved[stage] = json.load(f)
  assert saved["pretrain"]["init_from"] == ""
  assert saved["sft"]["init_from"] == os.path.join(workdir, "pretrain")
  assert saved["rm"]["init_from"] == os.path.join(workdir, "sft")
  assert saved["ppo"]["init_from"] == os.path.join(workdir, "sft")
  assert saved["ppo"]["ppo"]["reward_from"] == os.path.join(workdir, "rm")
  assert saved["ppo"]["total_steps"] == 4  # the command-line override reached its stage
  assert sorted(stage_metrics(workdir)["ppo"]) == [0, 1, 2, 3, 4]
  with open(os.path.join(workdir, "sft", "tokenizer.json")) as a, open(
      os.path.join(workdir, "pretrain", "tokenizer.json")) as b:
    assert a.read() == b.read()  # SFT kept pretraining's tokenizer: it warm-started


def test_each_stage_learns_and_leaves_its_files(pipeline):
  """What test_experiments.py checks of a standalone smoke run, for the stages the smoke
  pipeline trains (sft_world, rm_world; pretrain_world and ppo_world below and in
  test_pipeline_interrupted.py)."""
  workdir, _ = pipeline
  rows = {stage: metrics.read_metrics(os.path.join(workdir, stage)) for stage in STAGES}
  for stage, key, drop in (("pretrain", "eval/loss", 0.5), ("sft", "eval/loss", 0.5),
                           ("rm", "rm/loss", 0.03)):
    evals = [r[key] for r in rows[stage] if key in r]
    assert len(evals) == 3 and evals[-1] < evals[0] - drop, (stage, evals)
  assert any("gold/score" in r for r in rows["sft"])
  assert "rm/label_ceiling" in [r for r in rows["rm"] if "rm/loss" in r][-1]
  for name in ("reward_normalization.json", "rm_reliability.png", "tokenizer.json"):
    assert os.path.exists(os.path.join(workdir, "rm", name)), name
  steps = [r for r in rows["ppo"] if "ppo/score" in r]
  assert all(r["ppo/first_minibatch_ratio_error"] <= 1e-5 for r in steps), steps


def test_the_report_is_written_last(pipeline):
  workdir, stderr = pipeline
  assert stderr.index("all 4 stages done") < stderr.index("report written")
  for name in ("report.md", "report.json", "report_samples.jsonl", "gold_by_policy.png",
               "reward_vs_kl.png"):
    assert os.path.getsize(os.path.join(workdir, name)) > 0, name
  with open(os.path.join(workdir, "report.json"), encoding="utf-8") as f:
    saved = json.load(f)
  assert list(saved["policies"]) == ["base", "sft", "best_of_2", "best_of_4", "ppo"]
  assert [p["label"] for p in saved["reward_vs_kl"]] == ["sft@30", "ppo@2", "ppo@4"]


def test_rerun_skips_finished_stages_and_warns_of_a_changed_config(pipeline):
  workdir, _ = pipeline
  before = stage_metrics(workdir)
  stderr = finish(start_main(workdir, "--config.ppo.total_steps=5",
                             "--config.report.num_prompts=0"))
  for i, stage in enumerate(STAGES):
    assert f"stage {i + 1}/4: {stage} already done; skipped" in stderr
  assert "stage ppo finished with a different config" in stderr
  assert "stage sft finished with a different config" not in stderr
  assert stage_metrics(workdir) == before


def test_stage_configs_resolve_links_and_check_them():
  config = configs.experiment_module(os.path.join(REPO, "experiments/chatgpt_world.py"))
  config = config.get_config("smoke")
  stages = dict(pipeline_runner.stage_configs(config, "/runs/x"))
  assert stages["ppo"].ppo.reward_from == "/runs/x/rm"
  assert config.ppo.init_from == ""  # the pipeline config itself is left as it was
  config.stages = "sft,rm"  # a partial pipeline: SFT keeps its own init_from
  config.sft.init_from = "/runs/base"
  stages = dict(pipeline_runner.stage_configs(config, "/runs/x"))
  assert list(stages) == ["sft", "rm"] and stages["sft"].init_from == "/runs/base"
  assert stages["rm"].init_from == "/runs/x/sft"
  for stages_value, links, message in [("sft,pretrain", config.links, "does not run before"),
                                       ("pretrain,sft", "sft.init_frm=pretrain", "no key"),
                                       ("pretrain,bogus", config.links, "not a stage"),
                                       ("pretrain,sft", "sft=pretrain", "comma-separated")]:
    config.stages, config.links = stages_value, links
    with pytest.raises(UserError, match=message):
      pipeline_runner.stage_configs(config, "/runs/x")


def test_a_stage_mistake_is_one_line_naming_the_stage(tmp_path):
  result = test_cli.run_main(*SMOKE_PIPELINE_FLAGS, f"--workdir={tmp_path}",
                             f"--config.pretrain.data.path={tmp_path / 'nope.txt'}")
  test_cli.assert_one_line_error(result, "stage pretrain:", "nope.txt", "--config.pretrain.")
