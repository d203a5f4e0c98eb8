"""Every experiment file: loads, has a run-book docstring, and its `:smoke` variant trains."""
import glob
import gzip
import json
import os

import pytest

from rlhf_jax import config_checks, configs, metrics, pipeline_runner, train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPERIMENTS = sorted(glob.glob(os.path.join(REPO, "experiments", "*.py")))
load_experiment = configs.experiment_module


def shakespeare_like(path):
  """A plain-text play excerpt in tinyshakespeare's format (speaker, colon, lines)."""
  speakers = ["First Citizen", "MENENIUS", "CORIOLANUS", "Second Citizen"]
  lines = ["We are accounted poor citizens, the patricians good.",
           "What authority surfeits on would relieve us.",
           "Let us kill him, and we'll have corn at our own price.",
           "Nay, but speak not maliciously."]
  with open(path, "w", encoding="utf-8") as f:
    for i in range(600):
      f.write(f"{speakers[i % 4]}:\n{lines[i % 4]}\n{lines[(i * 7) % 4]}\n\n")
  return str(path)


@pytest.mark.parametrize("path", EXPERIMENTS, ids=os.path.basename)
def test_config_loads_and_documents_itself(path):
  module = load_experiment(path)
  doc = module.__doc__ or ""
  assert "python -m rlhf_jax.main" in doc and ":smoke" in doc, "run-book docstring"
  config = module.get_config()
  smoke = module.get_config("smoke")
  for variant in (config, smoke):  # every stage's values pass the up-front checks
    stages = (pipeline_runner.stage_configs(variant, "/nonexistent") if variant.task == "pipeline"
              else [("", variant)])
    for _, stage in stages:
      config_checks.check(stage)
  # The smoke variant is the same job, made cheaper.
  assert smoke.task == config.task
  if config.task != "pipeline" and not config.get("epochs"):
    assert smoke.total_steps < config.total_steps or smoke.total_steps == config.total_steps == 0
  if config.get("epochs"):  # a run set by epochs: its smoke trains fewer epochs, or a few steps
    assert smoke.epochs < config.epochs or smoke.total_steps <= 30
  with pytest.raises(ValueError):
    module.get_config("nonsense")


# Smoke variants that the session's smoke pipeline (conftest `smoke_pipeline`) trains as its
# stages and test_pipeline_runner.py checks: not trained again here (suite time).
IN_THE_SMOKE_PIPELINE = {"pretrain_world.py", "sft_world.py", "rm_world.py", "ppo_world.py"}


def _smoke_trained_here(prefix):
  return [p for p in EXPERIMENTS if os.path.basename(p).startswith(prefix)
          and os.path.basename(p) not in IN_THE_SMOKE_PIPELINE]


@pytest.mark.parametrize("path", _smoke_trained_here("pretrain"), ids=os.path.basename)
def test_smoke_variant_trains(path, tmp_path):
  config = load_experiment(path).get_config("smoke")
  if config.data.tfds_name:  # offline: the catalog default replaced by a local file
    config.data.path = shakespeare_like(tmp_path / "input.txt")
  workdir = str(tmp_path / "run")
  train.run(config, workdir)
  evals = [r["eval/loss"] for r in metrics.read_metrics(workdir) if "eval/loss" in r]
  assert len(evals) >= 2 and evals[-1] < evals[0], evals


def hh_like(path):
  """Anthropic HH pairs (full transcripts): the chosen reply helps, the rejected one refuses."""
  topics = ["bake bread", "fix a bike", "learn chess", "plant tomatoes", "write a poem"]
  with gzip.open(path, "wt", encoding="utf-8") as f:
    for i in range(200):
      prompt = f"\n\nHuman: How do I {topics[i % 5]}? ({i})\n\nAssistant:"
      f.write(json.dumps({"chosen": prompt + f" Sure, here is how to {topics[i % 5]}.",
                          "rejected": prompt + " No."}) + "\n")
  return str(path)


@pytest.mark.parametrize("path", _smoke_trained_here("rm_"),
                         ids=os.path.basename)
def test_reward_model_smoke_variant_trains(path, tmp_path):
  config = load_experiment(path).get_config("smoke")
  if not config.data.path:  # rm_hh: the HH file is an argument
    config.data.path = hh_like(tmp_path / "hh.jsonl.gz")
  workdir = str(tmp_path / "run")
  train.run(config, workdir)
  evals = [r for r in metrics.read_metrics(workdir) if "rm/accuracy" in r]
  assert len(evals) >= 2 and evals[-1]["rm/loss"] < evals[0]["rm/loss"] - 0.05, evals
  assert ("rm/label_ceiling" in evals[-1]) == config.data.path.startswith("world:")
  for name in ("reward_normalization.json", "rm_reliability.png", "tokenizer.json"):
    assert os.path.exists(os.path.join(workdir, name)), name


def alpaca_like(path):
  """Alpaca records and one seed task with instances."""
  with open(path, "w", encoding="utf-8") as f:
    for i in range(200):
      f.write(json.dumps({"instruction": f"Double the number {i}.", "input": "",
                          "output": f"Twice {i} is {2 * i}."}) + "\n")
    f.write(json.dumps({"instruction": "Name the color.", "instances": [
        {"input": "grass", "output": "green"}, {"input": "sky", "output": "blue"}]}) + "\n")
  return str(path)


@pytest.mark.parametrize("path", _smoke_trained_here("sft_"),
                         ids=os.path.basename)
def test_sft_smoke_variant_trains(path, tmp_path):
  config = load_experiment(path).get_config("smoke")
  name = os.path.basename(path)
  if name == "sft_hh.py":  # the HH and Alpaca files are arguments
    config.data.path = hh_like(tmp_path / "hh.jsonl.gz")
  elif name == "sft_alpaca.py":
    config.data.path = alpaca_like(tmp_path / "alpaca.jsonl")
  workdir = str(tmp_path / "run")
  train.run(config, workdir)
  rows = metrics.read_metrics(workdir)
  evals = [r["eval/loss"] for r in rows if "eval/loss" in r]
  assert len(evals) >= 2 and evals[-1] < evals[0] - 0.5, evals
  assert any("gold/score" in r for r in rows) == config.data.path.startswith("world:")


@pytest.mark.parametrize("path", _smoke_trained_here("ppo_"), ids=os.path.basename)
def test_ppo_smoke_variant_trains(path, tmp_path):
  import ppo_configs  # pylint: disable=g-import-not-at-top
  config = load_experiment(path).get_config("smoke")
  if not config.data.path:  # ppo_hh: the prompts file is an argument
    config.data.path = ppo_configs.write_prompts(tmp_path / "prompts.jsonl")
  workdir = str(tmp_path / "run")
  train.run(config, workdir)
  rows = metrics.read_metrics(workdir)
  steps = [r for r in rows if "ppo/score" in r]
  assert [r["step"] for r in steps] == list(range(1, config.total_steps + 1))
  assert all(r["ppo/first_minibatch_ratio_error"] <= 1e-5 for r in steps), steps
  evals = [r for r in rows if "eval/score" in r]
  assert [r["step"] for r in evals] == [0, 3, 6]
  assert ("gold/diff_vs_sft" in evals[-1]) == config.data.path.startswith("world:")
  assert os.path.exists(os.path.join(workdir, "samples.jsonl"))


@pytest.mark.parametrize("path", [p for p in EXPERIMENTS if os.path.basename(p) == "dpo_world.py"],
                         ids=os.path.basename)
def test_dpo_smoke_variant_trains(path, tmp_path):
  config = load_experiment(path).get_config("smoke")
  workdir = str(tmp_path / "run")
  train.run(config, workdir)
  evals = [r for r in metrics.read_metrics(workdir) if "dpo/accuracy" in r]
  assert [r["step"] for r in evals] == [0, config.total_steps]
  first, last = evals
  # Step 0: the policy is the reference, so every implicit reward is 0.
  assert first["dpo/accuracy"] == 0.5 and first["dpo/reward_margin"] == 0
  assert last["dpo/accuracy_lo"] > 0.5 and last["dpo/loss"] < first["dpo/loss"], last
  assert "gold/score" in last and "dpo/label_ceiling" in last and "dpo/kl" not in last
  assert os.path.exists(os.path.join(workdir, "samples.jsonl"))
