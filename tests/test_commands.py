"""The smoke pipeline's pretrain and SFT stages (`world_runs`), through `sample`, `chat`,
`evaluate` and `collect`."""
import json
import math
import os
import subprocess
import sys

import pytest

from rlhf_jax import evaluation, metrics
from rlhf_jax.data import readers
from rlhf_jax.errors import UserError
from rlhf_jax.evaluation import SAMPLES_FILE

from conftest import REPO, SMOKE_PIPELINE_GROUP

pytestmark = SMOKE_PIPELINE_GROUP  # world_runs are the smoke pipeline's first two stages


def run_module(module, *args, stdin=None, timeout=300):
  return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, input=stdin,
                        capture_output=True, text=True, timeout=timeout)


def test_sft_warm_starts_from_pretraining_and_is_gold_judged(world_runs):
  pretrain_dir, sft_dir = world_runs
  with open(os.path.join(pretrain_dir, "tokenizer.json")) as a, open(
      os.path.join(sft_dir, "tokenizer.json")) as b:
    assert a.read() == b.read()  # the tokenizer is carried forward
  rows = metrics.read_metrics(sft_dir)
  evals = [r for r in rows if "gold/score" in r]
  assert [r["step"] for r in evals] == [0, 15, 30]
  for r in evals:
    assert r["gold/n"] == 16 and r["gold/score_lo"] <= r["gold/score"] <= r["gold/score_hi"]
    assert 0.0 <= r["gold/score"] <= 1.0
    assert any(k.startswith("gold/family/") for k in r)
  # The warm start is the pretrained model: its first SFT eval/loss is far below uniform
  # over the 512-token vocabulary (ln 512 = 6.24, where a fresh model starts).
  first = next(r["eval/loss"] for r in rows if "eval/loss" in r)
  assert first < math.log(512) - 0.5, first
  samples = [json.loads(line) for line in open(os.path.join(sft_dir, SAMPLES_FILE))]
  assert sorted({s["step"] for s in samples}) == [0, 15, 30]
  assert len(samples) == 3 * 16
  assert all("<|" not in s["response"] for s in samples)
  assert {"total", "correctness", "completeness", "format", "safety", "hygiene"} == set(
      samples[0]["score"])


def test_sample_prints_samples(world_runs):
  result = run_module("rlhf_jax.sample", f"--workdir={world_runs[1]}", "--prompt=What is 2 + 3?",
                      "--num_samples=3", "--temperature=1.0", "--top_k=20",
                      "--max_new_tokens=12", "--seed=1")
  assert result.returncode == 0, result.stderr[-2000:]
  assert result.stdout.count("--- sample ") == 3
  base = run_module("rlhf_jax.sample", f"--workdir={world_runs[0]}", "--prompt=Q: What is",
                    "--max_new_tokens=8", "--temperature=0")
  assert base.returncode == 0, base.stderr[-2000:]


def test_chat_keeps_a_conversation_and_exits_cleanly_on_eof(world_runs):
  turns = "Hi! I am Bo.\n" + "Tell me about a town. " * 8 + "\nWhat is my name?\n"
  result = run_module("rlhf_jax.chat", f"--workdir={world_runs[1]}", "--max_new_tokens=16",
                      stdin=turns)
  assert result.returncode == 0, result.stderr[-2000:]
  assert result.stdout.count("assistant: ") == 3


@pytest.mark.parametrize("args,fragment", [
    (["--prompt=" + "word " * 400], "tokens but only"),
    (["--prompt=hi", "--top_p=0"], "top_p"),
])
def test_sample_refuses_bad_requests_in_one_line(world_runs, args, fragment):
  result = run_module("rlhf_jax.sample", f"--workdir={world_runs[1]}", *args)
  assert result.returncode == 2, result.stderr[-2000:]
  lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
  assert len(lines) == 1 and fragment in lines[0] and "Traceback" not in result.stderr


@pytest.mark.parametrize("module", ["rlhf_jax.sample", "rlhf_jax.chat", "rlhf_jax.evaluate"])
def test_a_workdir_without_checkpoint_is_one_line(tmp_path, module, world_runs):
  workdir = tmp_path / "empty"
  workdir.mkdir()
  for name in ("config.json", "tokenizer.json"):
    with open(os.path.join(world_runs[1], name)) as f:
      (workdir / name).write_text(f.read())
  args = [f"--workdir={workdir}"] + (["--prompt=hi"] if module.endswith("sample") else [])
  result = run_module(module, *args, stdin="")
  assert result.returncode == 2, result.stderr[-2000:]
  lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
  assert len(lines) == 1 and "checkpoints" in lines[0] and "Traceback" not in result.stderr


def test_evaluate_compares_the_policy_with_the_few_shot_base(world_runs):
  pretrain_dir, sft_dir = world_runs
  result = run_module("rlhf_jax.evaluate", f"--workdir={sft_dir}",
                      f"--base_workdir={pretrain_dir}", "--num_prompts=16",
                      "--max_new_tokens=16", "--batch_size=8")
  assert result.returncode == 0, result.stderr[-2000:]
  assert "policy - base:" in result.stdout
  report = json.load(open(os.path.join(sft_dir, "eval_gold.json")))
  diff = report["policy_minus_base"]
  assert diff["lo"] <= diff["mean"] <= diff["hi"]
  assert diff["mean"] == pytest.approx(
      report["policy"]["gold/score"] - report["base"]["gold/score"], abs=1e-9)
  base_samples = [json.loads(line) for line in
                  open(os.path.join(sft_dir, "eval_samples_base.jsonl"))]
  assert len(base_samples) == 16
  assert all("\nQ:" not in s["response"] and "\n\n" not in s["response"]
             for s in base_samples)


def test_few_shot_shots_for_prompts_data_are_the_worlds_answered_demonstrations():
  """The RL split (/prompts) holds no answers: a base model prompted few-shot on its prompts
  is shown the same world's SFT demonstrations, each with its answer."""
  records, shots = evaluation.held_out_records("world:small:0/prompts", "validation", 4)
  _, sft_shots = evaluation.held_out_records("world:small:0/sft", "test", 4)
  assert len(records) == 4 and shots == sft_shots
  assert all(shot["messages"][-1]["role"] == "assistant" for shot in shots)
  text = evaluation.few_shot_text(records[0]["messages"], shots[:3])
  assert text.count("\nA: ") == 3 and text.endswith("\nA:")


@pytest.mark.parametrize("data, message", [
    ("world:small:0/sft,world:small:1/prompts", "several worlds"),
    ("world:small:0/sft,prompts.jsonl", "needs world data")])
def test_held_out_prompts_of_other_data_than_one_world_are_a_one_line_error(data, message):
  with pytest.raises(UserError, match=message):
    evaluation.held_out_records(data, "test")


def test_evaluate_against_a_chat_policy_prompts_both_alike(world_runs):
  """--base_style chat: the same SFT model as policy and base answers alike (difference 0);
  prompted few-shot instead, it would answer other prompts."""
  sft_dir = world_runs[1]
  result = run_module("rlhf_jax.evaluate", f"--workdir={sft_dir}", f"--base_workdir={sft_dir}",
                      "--base_style=chat", "--data=world:small:0/prompts",
                      "--split=validation", "--num_prompts=16", "--max_new_tokens=16",
                      "--batch_size=8")
  assert result.returncode == 0, result.stderr[-2000:]
  report = json.load(open(os.path.join(sft_dir, "eval_gold.json")))
  assert report["policy_minus_base"] == {"mean": 0.0, "lo": 0.0, "hi": 0.0}
  policy, base = ([json.loads(line)["response"] for line in
                   open(os.path.join(sft_dir, f"eval_samples_{name}.jsonl"))]
                  for name in ("policy", "base"))
  assert policy == base and len(policy) == 16


def test_collect_ranks_the_policys_own_samples(world_runs, tmp_path):
  out = str(tmp_path / "collected")
  result = run_module("rlhf_jax.collect", f"--policy_workdir={world_runs[1]}", f"--out={out}",
                      "--k=3", "--num_prompts=12", "--max_new_tokens=8", "--batch_size=8")
  assert result.returncode == 0, result.stderr[-2000:]
  summary = json.load(open(os.path.join(out, "collect.json")))
  for split in ("train", "test"):
    rows = [json.loads(line) for line in open(os.path.join(out, f"{split}.jsonl"))]
    counts = summary["splits"][split]
    assert len(rows) == counts["records"] == 12 - counts["prompts_left_out"]
    for row in rows:
      k = len(row["responses"])
      assert 2 <= k <= 3 and len(set(row["responses"])) >= 2
      assert sorted(set(row["ranking"])) == list(range(max(row["ranking"]) + 1))  # dense
      assert len(row["meta"]["gold"]) == k and row["meta"]["tiers"] == ["sample"] * k
  # The output is the rankings format the reward model reads.
  train_rows, skipped = readers.read_records(os.path.join(out, "train.jsonl"), "preferences")
  assert skipped == 0 and len(train_rows) == summary["splits"]["train"]["records"]


def test_collect_needs_world_data(world_runs, tmp_path):
  result = run_module("rlhf_jax.collect", f"--policy_workdir={world_runs[1]}",
                      f"--out={tmp_path}", "--data=some/file.jsonl")
  assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
  assert "world:SIZE:SEED/rankings" in result.stderr
