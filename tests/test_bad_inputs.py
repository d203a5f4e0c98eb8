"""The bad-input catalogue: each entry point meets each kind of user mistake (config values,
paths, malformed records of every data format, tokenizers, checkpoints of another model or
stage, init_from / reward_from mismatches, mesh and batch sizes) with exit status 2, one
line on stderr starting with `error:` that names the problem, no traceback, and nothing
left behind that a rerun would take for progress (every file under the case's directory
and under the workdirs it reads is as it was).

The commands run in this process (their `main(argv)`), so a case costs no interpreter
start; almost every case fails before any data is built or model compiled. Cases that
read a trained workdir use the smoke pipeline's (`smoke_pipeline`) and run in its group.
"""
import contextlib
import io
import json
import logging
import os
import shutil
import sys
from typing import Callable, NamedTuple
from unittest import mock

from absl import flags
import pytest

from rlhf_jax import chat, collect, evaluate, export, main as main_lib, sample, score
from rlhf_jax import tokenizer as tokenizer_lib
from rlhf_jax.data.world import __main__ as world_main

from conftest import SMOKE_PIPELINE_FLAGS, SMOKE_PIPELINE_GROUP, write_corpus, write_sft
from ppo_configs import write_prompts

PRETRAIN = "--config=experiments/pretrain_world.py:smoke"
SFT = "--config=experiments/sft_world.py:smoke"
RM = "--config=experiments/rm_world.py:smoke"
PPO = "--config=experiments/ppo_world.py:smoke"
DPO = "--config=experiments/dpo_world.py:smoke"
PIPELINE = SMOKE_PIPELINE_FLAGS[0]
RUN = "--workdir={tmp}/run"
STAGE_DIRS = ("pretrain", "sft", "rm", "ppo")  # {pretrain} ... {ppo}: the smoke pipeline's


class Case(NamedTuple):
  id: str
  entry: str                  # "main" or the module after rlhf_jax. (sample, chat, ...)
  args: tuple[str, ...]       # with {placeholders}: tmp, data, pipeline, pretrain, ...
  fragments: tuple[str, ...]  # each must be in the error line
  setup: Callable | None = None  # setup(paths) before the run, e.g. to copy a workdir


def copy_stage(stage: str, name: str):
  """A setup: WORKDIR/<stage> of the smoke pipeline copied to {tmp}/<name>."""
  def setup(paths):
    shutil.copytree(paths[stage], os.path.join(paths["tmp"], name))
  return setup


def run_dir_without_checkpoints(stage: str):
  """A setup: {tmp}/half, a workdir with the stage's config.json and tokenizer.json only."""
  def setup(paths):
    os.makedirs(os.path.join(paths["tmp"], "half"))
    for name in ("config.json", tokenizer_lib.TOKENIZER_FILE):
      shutil.copy(os.path.join(paths[stage], name), os.path.join(paths["tmp"], "half", name))
  return setup


def rm_with_another_tokenizer(paths):
  """{tmp}/rm_other: the smoke RM with a tokenizer trained on other text."""
  target = os.path.join(paths["tmp"], "rm_other")
  shutil.copytree(paths["rm"], target)
  texts = [f"other words number {i} and more" for i in range(200)]
  tokenizer_lib.train_bpe(texts, 300).save(os.path.join(target, tokenizer_lib.TOKENIZER_FILE))


def sft_with_broken_tokenizer(paths):
  run_dir_without_checkpoints("sft")(paths)
  with open(os.path.join(paths["tmp"], "half", tokenizer_lib.TOKENIZER_FILE), "w") as f:
    f.write("{not json")


def non_world_out(paths):
  os.makedirs(os.path.join(paths["tmp"], "notes"))
  with open(os.path.join(paths["tmp"], "notes", "keep.txt"), "w") as f:
    f.write("keep me")


CASES = [
    # ---- main: the command line and config values shared by every stage
    Case("main-no-workdir", "main", (PRETRAIN,), ("--workdir is required",)),
    Case("main-extra-argument", "main", (PRETRAIN, RUN, "stray"), ("unexpected arguments",)),
    Case("main-missing-config-file", "main", ("--config=experiments/nope.py", RUN),
         ("nope.py", "No such file")),
    Case("main-unknown-variant", "main", ("--config=experiments/sft_world.py:tiny", RUN),
         ("unknown variant 'tiny'", "smoke")),
    Case("main-unknown-key", "main", (PRETRAIN, RUN, "--config.optim.learning_rate=0.1"),
         ("--config.optim.learning_rate", "not a key")),
    Case("main-value-of-wrong-type", "main", (PRETRAIN, RUN, "--config.optim.lr=fast"),
         ("--config.optim.lr=fast",)),
    Case("main-negative-batch", "main", (PRETRAIN, RUN, "--config.batch_size=-1"),
         ("--config.batch_size=-1: must be a number > 0",)),
    Case("main-nothing-to-train", "main", (PRETRAIN, RUN, "--config.total_steps=0"),
         ("total_steps=0", "nothing to train")),
    Case("main-steps-and-epochs", "main",
         ("--config=experiments/rm_world.py", RUN, "--config.total_steps=30"),
         ("--config.total_steps=30 and --config.epochs=1.0 both set", "--config.epochs=0")),
    Case("main-unknown-task", "main", (PRETRAIN, RUN, "--config.task=bogus"),
         ("--config.task='bogus'", "pretrain", "dpo")),
    Case("main-unknown-preset", "main", (PRETRAIN, RUN, "--config.model.preset=huge"),
         ("model.preset 'huge'", "nano")),
    Case("main-heads-do-not-divide-width", "main", (PRETRAIN, RUN, "--config.model.num_heads=3"),
         ("model.embed_dim=64", "model.num_heads=3")),
    Case("main-workdir-is-a-file", "main", (PRETRAIN, "--workdir={data}/corpus.jsonl"),
         ("is a file", "--workdir")),
    # ---- main: the launch of a multi-process run (checked before joining one)
    Case("main-process-id-beyond-processes", "main",
         (PRETRAIN, RUN, "--coordinator_address=127.0.0.1:1234", "--num_processes=2",
          "--process_id=2"), ("--process_id=2 must be in [0, --num_processes=2)",)),
    Case("main-distributed-flags-incomplete", "main", (PRETRAIN, RUN, "--num_processes=2"),
         ("--coordinator_address, --process_id not set", "--distributed")),
    Case("main-coordinator-without-port", "main",
         (PRETRAIN, RUN, "--coordinator_address=10.0.0.1", "--num_processes=2",
          "--process_id=0"), ("--coordinator_address='10.0.0.1'", "HOST:PORT")),
    # ---- pretrain / SFT: lengths and the batch against context, devices and microbatches
    Case("pretrain-seq-len-beyond-context", "main", (PRETRAIN, RUN, "--config.data.seq_len=512"),
         ("--config.data.seq_len=512", "context of 128")),
    Case("sft-seq-len-beyond-context", "main", (SFT, RUN, "--config.data.seq_len=129"),
         ("--config.data.seq_len=129", "context of 128")),
    Case("pretrain-batch-vs-devices", "main", (PRETRAIN, RUN, "--config.batch_size=12"),
         ("batch_size=12", "8 data-parallel devices")),
    Case("pretrain-batch-vs-microbatches", "main",
         (PRETRAIN, RUN, "--config.optim.grad_accum_steps=3"),
         ("batch_size=16", "optim.grad_accum_steps=3")),
    Case("mesh-larger-than-machine", "main", (PRETRAIN, RUN, "--config.mesh.data=16"),
         ("needs 16 devices but 8 exist",)),
    Case("mesh-two-remaining-axes", "main", (PRETRAIN, RUN, "--config.mesh.fsdp=-1"),
         ("at most one -1",)),
    Case("mesh-not-dividing-devices", "main", (PRETRAIN, RUN, "--config.mesh.fsdp=3"),
         ("does not divide the 8 devices",)),
    Case("sft-gold-eval-batch-vs-devices", "main", (SFT, RUN, "--config.gold_eval.batch_size=6"),
         ("gold_eval.batch_size=6", "8 data-parallel devices")),
    Case("pretrain-tokenizer-vocab-too-small", "main",
         (PRETRAIN, RUN, "--config.tokenizer.vocab_size=100"),
         ("--config.tokenizer.vocab_size=100", "261")),
    # ---- packed rows (data.pack): SFT and the reward model only; the RM's rows per batch
    Case("pretrain-pack", "main", (PRETRAIN, RUN, "--config.data.pack=True"),
         ("--config.data.pack=True", "only the sft and reward stages")),
    Case("rm-pack-without-rows", "main", (RM, RUN, "--config.data.pack=True"),
         ("--config.data.pack=True", "needs --config.rm.pack_rows")),
    Case("rm-pack-rows-without-pack", "main", (RM, RUN, "--config.rm.pack_rows=32"),
         ("--config.rm.pack_rows=32", "data.pack=False")),
    Case("rm-share-prompt-without-pack", "main", (RM, RUN, "--config.rm.share_prompt=True"),
         ("--config.rm.share_prompt=True", "data.pack=False")),
    Case("rm-pack-len-shorter-than-a-row", "main",
         (RM, RUN, "--config.data.pack=True", "--config.rm.pack_rows=16",
          "--config.rm.pack_len=16"),
         ("packed rows of 16 tokens", "--config.rm.pack_len to at least")),
    Case("rm-pack-rows-vs-devices", "main",
         (RM, RUN, "--config.data.pack=True", "--config.rm.pack_rows=12"),
         ("--config.rm.pack_rows=12", "8 data-parallel devices")),
    # ---- reward model block
    Case("rm-negative-margin", "main", (RM, RUN, "--config.rm.margin=-0.5"),
         ("--config.rm.margin=-0.5: must be a number >= 0",)),
    Case("rm-one-response", "main", (RM, RUN, "--config.rm.num_responses=1"),
         ("--config.rm.num_responses=1", ">= 2")),
    Case("rm-negative-reference-max", "main", (RM, RUN, "--config.rm.reference_max=-1"),
         ("--config.rm.reference_max=-1",)),
    Case("rm-missing-reference-file", "main",
         (RM, RUN, "--config.data.path={data}/rankings_k3.jsonl",
          "--config.rm.reference_path={tmp}/refs.jsonl"),
         ("refs.jsonl", "matches no file", "--config.rm.reference_path")),
    Case("rm-more-responses-than-k", "main",
         (RM, RUN, "--config.data.path={data}/rankings_k3.jsonl", "--config.rm.num_responses=2"),
         ("rankings_k3.jsonl:1", "a ranking of 3 responses", "rm.num_responses=2")),
    # ---- PPO block
    Case("ppo-gamma-above-one", "main", (PPO, RUN, "--config.ppo.gamma=1.5"),
         ("--config.ppo.gamma=1.5: must be a number in [0, 1]",)),
    Case("ppo-negative-lambda", "main", (PPO, RUN, "--config.ppo.lam=-0.1"),
         ("--config.ppo.lam=-0.1",)),
    Case("ppo-negative-kl-coef", "main", (PPO, RUN, "--config.ppo.kl_coef=-0.1"),
         ("--config.ppo.kl_coef=-0.1: must be a number >= 0",)),
    Case("ppo-negative-target-kl", "main", (PPO, RUN, "--config.ppo.target_kl=-1"),
         ("--config.ppo.target_kl=-1.0",)),
    Case("ppo-zero-cliprange", "main", (PPO, RUN, "--config.ppo.cliprange=0"),
         ("--config.ppo.cliprange=0", "> 0")),
    Case("ppo-zero-value-cliprange", "main", (PPO, RUN, "--config.ppo.cliprange_value=0"),
         ("--config.ppo.cliprange_value=0",)),
    Case("ppo-no-epochs", "main", (PPO, RUN, "--config.ppo.epochs=0"),
         ("--config.ppo.epochs=0", ">= 1")),
    Case("ppo-minibatches-vs-batch", "main", (PPO, RUN, "--config.ppo.num_minibatches=3"),
         ("batch_size=16", "ppo.num_minibatches=3")),
    Case("grpo-without-a-group", "main", (PPO, RUN, "--config.ppo.algorithm=grpo"),
         ("--config.ppo.algorithm='grpo' needs a group", "group_size")),
    Case("rloo-group-vs-minibatches", "main",
         (PPO, RUN, "--config.ppo.algorithm=rloo", "--config.ppo.group_size=3",
          "--config.ppo.num_minibatches=32"),
         ("batch_size=16 x ppo.group_size=3", "ppo.num_minibatches=32")),
    Case("ppo-unknown-loss-aggregation", "main", (PPO, RUN, "--config.ppo.loss_agg=mean"),
         ("--config.ppo.loss_agg='mean'", "sequence")),
    Case("ppo-unknown-kl-estimator", "main", (PPO, RUN, "--config.ppo.kl_estimator=k4"),
         ("--config.ppo.kl_estimator='k4'", "k3")),
    Case("ppo-bad-reward-spec", "main", (PPO, RUN, "--config.ppo.reward=token_count:abc"),
         ("ppo.reward='token_count:abc'",)),
    Case("ppo-response-beyond-context", "main", (PPO, RUN, "--config.ppo.response_len=100"),
         ("ppo.max_prompt_len=48", "ppo.response_len=100", "context of 128")),
    Case("ppo-ptx-without-corpus", "main", (PPO, RUN, "--config.ppo.ptx_coef=1.0"),
         ("ppo.ptx_coef=1.0", "--config.ppo.ptx_path")),
    Case("ppo-ptx-batch-vs-devices", "main",
         (PPO, RUN, "--config.ppo.ptx_coef=1.0", "--config.ppo.ptx_path={data}/corpus.jsonl",
          "--config.ppo.ptx_batch_size=12"),
         ("ppo.ptx_batch_size=12",)),
    Case("ppo-missing-ptx-corpus", "main",
         (PPO, RUN, "--config.ppo.ptx_coef=1.0", "--config.ppo.ptx_path={tmp}/nope.jsonl"),
         ("nope.jsonl", "matches no file", "--config.ppo.ptx_path")),
    Case("ppo-reward-from-without-init-from", "main",
         (PPO, RUN, "--config.ppo.reward_from={tmp}"),
         ("ppo.reward_from is set but init_from is not",)),
    Case("ppo-init-from-without-reward-from", "main", (PPO, RUN, "--config.init_from={tmp}"),
         ("init_from is set but ppo.reward_from is not",)),
    # ---- DPO block
    Case("dpo-zero-beta", "main", (DPO, RUN, "--config.dpo.beta=0"),
         ("--config.dpo.beta=0", "must be a number > 0")),
    Case("dpo-unknown-loss", "main", (DPO, RUN, "--config.dpo.loss=kto"),
         ("--config.dpo.loss='kto'", "'ipo'")),
    Case("dpo-more-responses-than-k", "main",
         (DPO, RUN, "--config.data.path={data}/rankings_k3.jsonl", "--config.dpo.num_responses=2"),
         ("rankings_k3.jsonl:1", "a ranking of 3 responses", "dpo.num_responses=2")),
    # ---- data records of every format (file:line and the problem)
    Case("corpus-missing-file", "main", (PRETRAIN, RUN, "--config.data.path={tmp}/nope.txt"),
         ("nope.txt", "matches no file")),
    Case("corpus-empty-file", "main", (PRETRAIN, RUN, "--config.data.path={data}/empty.jsonl"),
         ("empty.jsonl", "is empty")),
    Case("corpus-record-without-text", "main",
         (PRETRAIN, RUN, "--config.data.path={data}/corpus_no_text.jsonl"),
         ("corpus_no_text.jsonl:3", "missing key 'text'")),
    Case("corpus-undecodable-bytes", "main",
         (PRETRAIN, RUN, "--config.data.path={data}/bad_utf8.txt"),
         ("bad_utf8.txt:2", "UTF-8")),
    Case("corpus-gz-that-is-not-gzip", "main",
         (PRETRAIN, RUN, "--config.data.path={data}/not_gzip.jsonl.gz"),
         ("not_gzip.jsonl.gz", "gzip")),
    Case("sft-conversation-ends-with-user", "main",
         (SFT, RUN, "--config.data.path={data}/sft_ends_with_user.jsonl"),
         ("sft_ends_with_user.jsonl:2", "must end with an assistant turn")),
    Case("sft-invalid-json", "main", (SFT, RUN, "--config.data.path={data}/sft_bad_json.jsonl"),
         ("sft_bad_json.jsonl:2", "invalid JSON")),
    Case("sft-empty-response", "main",
         (SFT, RUN, "--config.data.path={data}/sft_empty_response.jsonl"),
         ("sft_empty_response.jsonl:1", "'response' is empty")),
    Case("sft-unknown-role", "main", (SFT, RUN, "--config.data.path={data}/sft_bad_role.jsonl"),
         ("sft_bad_role.jsonl:1", "got 'bot'")),
    Case("sft-plain-text", "main", (SFT, RUN, "--config.data.path={data}/bad_utf8.txt"),
         ("bad_utf8.txt", "only the corpus format reads")),
    Case("rankings-ranks-vs-responses", "main",
         (RM, RUN, "--config.data.path={data}/rankings_short.jsonl"),
         ("rankings_short.jsonl:2", "'ranking' has 2 ranks for 3 responses")),
    Case("rankings-all-tied", "main", (RM, RUN, "--config.data.path={data}/rankings_tied.jsonl"),
         ("rankings_tied.jsonl:1", "all responses are tied")),
    Case("pairs-identical", "main", (RM, RUN, "--config.data.path={data}/pairs_identical.jsonl"),
         ("pairs_identical.jsonl:1", "identical")),
    Case("pairs-hh-without-shared-turn", "main",
         (RM, RUN, "--config.data.path={data}/pairs_hh.jsonl"),
         ("pairs_hh.jsonl:1", "share no")),
    Case("prompts-end-with-assistant", "main",
         (PPO, RUN, "--config.data.path={data}/prompts_ends_with_assistant.jsonl"),
         ("prompts_ends_with_assistant.jsonl:1", "must end with a user turn")),
    Case("prompts-array-record", "main",
         (PPO, RUN, "--config.data.path={data}/prompts_array.jsonl"),
         ("prompts_array.jsonl:2", "expected a JSON object, got array")),
    Case("prompts-too-few-to-split", "main",
         (PPO, RUN, "--config.data.path={data}/prompts_one.jsonl"),
         ("prompts_one.jsonl", "too few to split off validation")),
    # ---- tokenizers
    Case("tokenizer-missing-file", "main",
         (PRETRAIN, RUN, "--config.tokenizer.path={tmp}/tok.json"),
         ("--config.tokenizer.path=", "tok.json", "does not exist")),
    Case("tokenizer-unparsable", "main",
         (PRETRAIN, RUN, "--config.data.path={data}/corpus.jsonl",
          "--config.tokenizer.path={data}/garbage_tokenizer.json"),
         ("garbage_tokenizer.json", "cannot parse")),
    Case("tokenizer-without-special-tokens", "main",
         (PRETRAIN, RUN, "--config.data.path={data}/corpus.jsonl",
          "--config.tokenizer.path={data}/plain_tokenizer.json"),
         ("lacks special tokens",)),
    Case("tokenizer-directory-without-files", "main",
         (PRETRAIN, RUN, "--config.data.path={data}/corpus.jsonl",
          "--config.tokenizer.path={data}"),
         ("no tokenizer.json or vocab.json",)),
    # ---- the pipeline: every stage's values and outside inputs before the first stage trains
    Case("pipeline-stage-value", "main", (PIPELINE, RUN, "--config.ppo.ppo.gamma=2"),
         ("stage ppo:", "ppo.gamma=2")),
    Case("pipeline-unknown-stage", "main", (PIPELINE, RUN, "--config.stages=pretrain,bogus"),
         ("not a stage",)),
    Case("pipeline-link-to-a-missing-key", "main",
         (PIPELINE, RUN, "--config.links=sft.init_frm=pretrain"), ("no key 'init_frm'",)),
    Case("pipeline-missing-outside-input", "main",
         (PIPELINE, RUN, "--config.stages=rm,ppo", "--config.rm.init_from={tmp}/no_sft"),
         ("stage rm:", "init_from=", "no_sft", "does not exist")),
    Case("pipeline-report-temperature", "main",
         (PIPELINE, RUN, "--config.report.temperature=0"), ("temperature=0", "> 0")),
]

# Cases that read the smoke pipeline's trained workdirs (a {stage} placeholder).
WORKDIR_CASES = [
    # ---- checkpoints of another model or stage; init_from / reward_from mismatches
    Case("resume-a-run-of-another-task", "main", (SFT, "--workdir={tmp}/copy"),
         ("holds a run with a different 'task'",), copy_stage("pretrain", "copy")),
    Case("resume-a-run-of-another-model", "main",
         (PRETRAIN, "--workdir={tmp}/copy", "--config.model.num_layers=3"),
         ("holds a run with a different 'model'",), copy_stage("pretrain", "copy")),
    Case("sft-init-from-a-reward-model", "main", (SFT, RUN, "--config.init_from={rm}"),
         ("--config.init_from=", "holds a 'reward' run", "pretrain or sft")),
    Case("sft-init-from-another-model", "main",
         (SFT, RUN, "--config.init_from={pretrain}", "--config.model.embed_dim=32"),
         ("--config.init_from=", "embed_dim", "32")),
    Case("rm-init-from-ppo", "main", (RM, RUN, "--config.init_from={ppo}"),
         ("holds a 'ppo' run",)),
    Case("rm-init-from-without-checkpoint", "main", (RM, RUN, "--config.init_from={tmp}/half"),
         ("init_from=", "half", "holds no checkpoint"), run_dir_without_checkpoints("sft")),
    Case("ppo-reward-from-an-sft-run", "main",
         (PPO, RUN, "--config.init_from={sft}", "--config.ppo.reward_from={sft}"),
         ("--config.ppo.reward_from=", "holds a 'sft' run", "reward")),
    Case("ppo-init-from-a-reward-model", "main",
         (PPO, RUN, "--config.init_from={rm}", "--config.ppo.reward_from={rm}"),
         ("--config.init_from=", "holds a 'reward' run")),
    Case("ppo-reward-model-with-another-tokenizer", "main",
         (PPO, RUN, "--config.init_from={sft}", "--config.ppo.reward_from={tmp}/rm_other"),
         ("rm_other", "different tokenizer"), rm_with_another_tokenizer),
    Case("ppo-reward-from-missing", "main",
         (PPO, RUN, "--config.init_from={sft}", "--config.ppo.reward_from={tmp}/no_rm"),
         ("--config.ppo.reward_from=", "no_rm", "does not exist")),
    Case("pipeline-outside-init-from-of-another-stage", "main",
         (PIPELINE, RUN, "--config.stages=sft", "--config.sft.init_from={rm}"),
         ("stage sft:", "holds a 'reward' run")),
    # ---- sample and chat
    Case("sample-missing-workdir", "sample", ("--workdir={tmp}/nope", "--prompt=hi"),
         ("does not exist",)),
    Case("sample-pipeline-root", "sample", ("--workdir={pipeline}", "--prompt=hi"),
         ("has no config.json",)),
    Case("sample-no-checkpoint", "sample", ("--workdir={tmp}/half", "--prompt=hi"),
         ("no checkpoints",), run_dir_without_checkpoints("sft")),
    Case("sample-broken-tokenizer", "sample", ("--workdir={tmp}/half", "--prompt=hi"),
         ("tokenizer.json", "cannot parse"), sft_with_broken_tokenizer),
    Case("sample-zero-samples", "sample", ("--workdir={sft}", "--prompt=hi", "--num_samples=0"),
         ("--num_samples=0",)),
    Case("sample-budget-beyond-context", "sample",
         ("--workdir={sft}", "--prompt=hi", "--max_new_tokens=500"),
         ("--max_new_tokens=500", "context of 128")),
    Case("sample-missing-prompt", "sample", ("--workdir={sft}",),
         ("--prompt", "required")),
    Case("chat-negative-temperature", "chat", ("--workdir={sft}", "--temperature=-1"),
         ("--temperature=-1.0",)),
    # ---- score
    Case("score-with-an-sft-run", "score", ("--workdir={sft}", "--data={data}/pairs_ok.jsonl"),
         ("holds a 'sft' run, not a reward model",)),
    Case("score-missing-data", "score", ("--workdir={rm}", "--data={tmp}/nope.jsonl"),
         ("nope.jsonl", "matches no file")),
    Case("score-malformed-record", "score",
         ("--workdir={rm}", "--data={data}/rankings_tied.jsonl"),
         ("rankings_tied.jsonl:1", "all responses are tied")),
    Case("score-data-argument-missing", "score", ("--workdir={rm}",),
         ("--data", "required")),
    # ---- evaluate
    Case("evaluate-missing-base", "evaluate",
         ("--workdir={sft}", "--base_workdir={tmp}/no_base", "--num_prompts=4"),
         ("no_base", "does not exist")),
    Case("evaluate-unknown-split", "evaluate", ("--workdir={sft}", "--split=bogus"),
         ("--split='bogus'",)),
    Case("evaluate-non-world-data", "evaluate",
         ("--workdir={sft}", "--data={data}/sft_ok.jsonl"), ("world data",)),
    Case("evaluate-batch-vs-devices", "evaluate",
         ("--workdir={sft}", "--batch_size=6", "--num_prompts=4"),
         ("--batch_size=6", "8 data-parallel devices")),
    # ---- export
    Case("export-into-the-workdir", "export", ("--workdir={sft}", "--out={sft}"),
         ("is the workdir",)),
    Case("export-into-a-full-directory", "export", ("--workdir={sft}", "--out={tmp}/notes"),
         ("--out=", "not an empty directory"), non_world_out),
    Case("export-without-checkpoint", "export", ("--workdir={tmp}/half", "--out={tmp}/hf"),
         ("no checkpoints",), run_dir_without_checkpoints("rm")),
    # ---- collect
    Case("collect-one-sample", "collect", ("--policy_workdir={sft}", "--out={tmp}/c", "--k=1"),
         ("--k=1",)),
    Case("collect-non-world-data", "collect",
         ("--policy_workdir={sft}", "--out={tmp}/c", "--data={data}/rankings_k3.jsonl"),
         ("world:SIZE:SEED/rankings",)),
    Case("collect-unknown-split", "collect",
         ("--policy_workdir={sft}", "--out={tmp}/c", "--splits=train,bogus", "--num_prompts=2",
          "--max_new_tokens=4", "--batch_size=8"),
         ("--splits", "'bogus'")),
    Case("collect-batch-vs-devices", "collect",
         ("--policy_workdir={sft}", "--out={tmp}/c", "--batch_size=6"),
         ("--batch_size=6", "8 data-parallel devices")),
    # ---- data.world
    Case("world-unknown-size", "data.world", ("--out={tmp}/world", "--size=huge"),
         ("unknown world size 'huge'",)),
    Case("world-out-is-not-a-world", "data.world", ("--out={tmp}/notes",),
         ("--out=", "notes", "not a world directory"), non_world_out),
    Case("world-seed-not-a-number", "data.world", ("--out={tmp}/world", "--seed=abc"),
         ("--seed", "'abc'")),
]


# ---------------------------------------------------------------------------- fixtures


def _write_lines(path, *lines, mode="w"):
  with open(path, mode) as f:
    for line in lines:
      f.write((line if isinstance(line, str) else json.dumps(line)) + "\n")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  """Small valid files and one malformed file per format problem."""
  d = tmp_path_factory.mktemp("bad_inputs_data")
  write_corpus(d / "corpus.jsonl", num_docs=40)
  write_sft(d / "sft_ok.jsonl", num_records=8)
  write_prompts(d / "prompts_ok.jsonl", num_records=8)
  ok_pair = {"prompt": "Name a fruit.", "chosen": "An apple.", "rejected": "A chair."}
  user, bot = {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}
  k3 = {"prompt": "Name a fruit.", "responses": ["An apple.", "A pear.", "A chair."],
        "ranking": [0, 1, 2]}
  files = {
      "empty.jsonl": [],
      "corpus_no_text.jsonl": [{"text": "one"}, {"text": "two"}, {"body": "three"}],
      "sft_ends_with_user.jsonl": [{"messages": [user, bot]}, {"messages": [user]}],
      "sft_bad_json.jsonl": [{"messages": [user, bot]}, '{"messages": [}'],
      "sft_empty_response.jsonl": [{"prompt": "hi", "response": ""}],
      "sft_bad_role.jsonl": [{"messages": [{"role": "bot", "content": "hi"}, bot]}],
      "rankings_k3.jsonl": [k3] * 6,
      "rankings_short.jsonl": [k3, {**k3, "ranking": [0, 1]}],
      "rankings_tied.jsonl": [{**k3, "ranking": [1, 1, 1]}],
      "pairs_ok.jsonl": [ok_pair],
      "pairs_identical.jsonl": [{**ok_pair, "rejected": "An apple."}],
      "pairs_hh.jsonl": [{"chosen": "\n\nHuman: a\n\nAssistant: b",
                          "rejected": "\n\nHuman: c\n\nAssistant: d"}],
      "prompts_ends_with_assistant.jsonl": [{"messages": [user, bot]}],
      "prompts_array.jsonl": [{"prompt": "hi"}, "[1, 2]"],
      "prompts_one.jsonl": [{"prompt": "hi"}],
      "garbage_tokenizer.json": ["{not a tokenizer"],
  }
  for name, lines in files.items():
    _write_lines(d / name, *lines)
  (d / "bad_utf8.txt").write_bytes(b"fine line\nbad \xff\xfe bytes\n")
  (d / "not_gzip.jsonl.gz").write_text('{"text": "not compressed"}\n')
  import tokenizers  # pylint: disable=g-import-not-at-top
  plain = tokenizers.Tokenizer(tokenizers.models.BPE())
  plain.train_from_iterator(["plain words"] * 10, tokenizers.trainers.BpeTrainer(vocab_size=50))
  plain.save(str(d / "plain_tokenizer.json"))
  return str(d)


# ---------------------------------------------------------------------------- running


def _run_absl_main(argv):
  """`python -m rlhf_jax.main argv...`: absl parsing (config_flags reads the overrides from
  sys.argv) then main; the flags' state and the log levels are restored afterwards."""
  argv = ["rlhf_jax.main", *argv]
  loggers = [logging.getLogger(), logging.getLogger("absl")]
  levels = [logger.level for logger in loggers]
  try:
    with mock.patch.object(sys, "argv", argv):
      main_lib.main(main_lib._parse_flags(argv))  # pylint: disable=protected-access
    return 0
  finally:
    for logger, level in zip(loggers, levels):
      logger.setLevel(level)
    for name in [name for name in flags.FLAGS if name.startswith("config.")]:
      delattr(flags.FLAGS, name)
    flags.FLAGS.unparse_flags()


ENTRY_POINTS = {"main": _run_absl_main, "sample": sample.main, "chat": chat.main,
                "score": score.main, "evaluate": evaluate.main, "export": export.main,
                "collect": collect.main, "data.world": world_main.main}


def run_entry(entry: str, argv: list[str]) -> tuple[int, str]:
  """(exit status, stderr) of `python -m rlhf_jax.<entry> argv...`, in this process."""
  err = io.StringIO()
  with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()), \
      mock.patch.object(sys, "stdin", io.StringIO("")):
    try:
      status = ENTRY_POINTS[entry](argv)
    except SystemExit as e:
      status = e.code
  return status, err.getvalue()


def snapshot(root: str) -> dict[str, tuple[int, int]]:
  """relative path → (size, mtime) of every file and directory under root."""
  state = {}
  for parent, dirs, files in os.walk(root):
    for name in dirs + files:
      path = os.path.join(parent, name)
      stat = os.stat(path)
      state[os.path.relpath(path, root)] = (stat.st_size if name in files else 0,
                                            stat.st_mtime_ns)
  return state


def _params():
  for case in CASES:
    yield pytest.param(case, id=case.id)
  for case in WORKDIR_CASES:
    yield pytest.param(case, id=case.id, marks=SMOKE_PIPELINE_GROUP)


@pytest.mark.parametrize("case", list(_params()))
def test_a_bad_input_is_one_error_line_and_leaves_nothing_behind(case, tmp_path, data_dir,
                                                                 request):
  paths = {"tmp": str(tmp_path), "data": data_dir}
  if case in WORKDIR_CASES:
    pipeline, _ = request.getfixturevalue("smoke_pipeline")
    paths.update(pipeline=pipeline, **{s: os.path.join(pipeline, s) for s in STAGE_DIRS})
  if case.setup:
    case.setup(paths)
  roots = [root for key, root in paths.items() if key in ("tmp", "data", "pipeline")]
  before = [snapshot(root) for root in roots]
  status, stderr = run_entry(case.entry, [arg.format(**paths) for arg in case.args])
  errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
  assert status == 2, stderr[-3000:]
  assert len(errors) == 1, stderr[-3000:]
  assert "Traceback" not in stderr, stderr[-3000:]
  for fragment in case.fragments:
    assert fragment.format(**paths) in errors[0], errors[0]
  for root, state in zip(roots, before):
    assert snapshot(root) == state, f"{case.id} changed files under {root}"


def test_the_catalogue_covers_every_entry_point_and_format():
  cases = CASES + WORKDIR_CASES
  assert len(cases) >= 40 and len({c.id for c in cases}) == len(cases)
  assert {c.entry for c in cases} == set(ENTRY_POINTS)
  ids = " ".join(c.id for c in cases)
  for topic in ("corpus", "sft", "rankings", "pairs", "prompts", "tokenizer", "pipeline",
                "mesh", "init-from", "reward-from", "resume"):
    assert topic in ids, topic
