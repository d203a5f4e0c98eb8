"""Test setup: 8 fake CPU devices, synchronous dispatch, private data and compilation caches,
shared runs.

The environment must be set before JAX is imported anywhere: with async
dispatch, 8 CPU devices on a 2-core machine deadlock in collectives.
"""
import os
import subprocess
import sys
import tempfile

# Compiling is most of the suite's CPU time and the test models are tiny: XLA's backend
# optimisation level 0 cut the CPU time of the critic-free PPO tests from 51 s to 32 s.
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
    " --xla_backend_optimization_level=0")
os.environ["JAX_CPU_ENABLE_ASYNC_DISPATCH"] = "false"
os.environ["JAX_PLATFORMS"] = "cpu"
os.environ.setdefault(
    "RLHF_JAX_CACHE_DIR", tempfile.mkdtemp(prefix="rlhf_jax_test_cache_"))
# Compiling is most of a CPU smoke test's time, and many tests (and the subprocesses of the
# resume tests) compile the same programs again: a persistent compilation cache shared by
# the whole run cut the CPU time of test_train.py + test_sft.py from 256 s to 156 s.
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR", tempfile.mkdtemp(prefix="rlhf_jax_test_jax_cache_"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

# pylint: disable=g-import-not-at-top,wrong-import-position
import json
import random
import socket

import pytest

_WORDS = ("the cat dog bird fox sees eats likes finds a red blue small big old young "
          "river tree house field runs jumps sleeps sings over under near with and").split()


def write_corpus(path, num_docs: int = 400, seed: int = 0) -> str:
  """A small learnable JSONL corpus: short sentences from a 30-word vocabulary, some Unicode."""
  rng = random.Random(seed)
  with open(path, "w", encoding="utf-8") as f:
    for i in range(num_docs):
      sentences = [" ".join(rng.choice(_WORDS) for _ in range(rng.randint(4, 9))) + "."
                   for _ in range(rng.randint(2, 6))]
      text = f"Entry {i} — " + " ".join(s.capitalize() for s in sentences)
      f.write(json.dumps({"text": text}, ensure_ascii=False) + "\n")
  return str(path)


@pytest.fixture(scope="session")
def corpus_path(tmp_path_factory):
  return write_corpus(tmp_path_factory.mktemp("corpus") / "corpus.jsonl")


def write_sft(path, num_records: int = 240, seed: int = 0) -> str:
  """A small SFT JSONL file: one- and two-turn arithmetic chats in the messages format."""
  rng = random.Random(seed)
  with open(path, "w", encoding="utf-8") as f:
    for _ in range(num_records):
      a, b = rng.randint(1, 20), rng.randint(1, 20)
      messages = [{"role": "user", "content": f"What is {a} plus {b}?"},
                  {"role": "assistant", "content": f"{a} plus {b} is {a + b}."}]
      if rng.random() < 0.3:
        messages += [{"role": "user", "content": "And doubled?"},
                     {"role": "assistant", "content": f"Doubled it is {2 * (a + b)}."}]
      f.write(json.dumps({"messages": messages}) + "\n")
  return str(path)


@pytest.fixture(scope="session")
def sft_path(tmp_path_factory):
  return write_sft(tmp_path_factory.mktemp("sft") / "sft.jsonl")


def free_port() -> int:
  """A free TCP port on localhost (for a jax.distributed coordinator)."""
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The smoke pipeline, its report included, with PPO cut to 4 iterations and a checkpoint
# every 2 (so the report has two PPO checkpoints to put on its reward-vs-KL curve).
SMOKE_PIPELINE_FLAGS = ("--config=experiments/chatgpt_world.py:smoke",
                        "--config.ppo.total_steps=4", "--config.ppo.ckpt_every=2")
# Tests that use `smoke_pipeline` carry this mark: `--dist loadgroup` (pytest.ini) runs them
# on one xdist worker, so the pipeline is trained once per test run.
SMOKE_PIPELINE_GROUP = pytest.mark.xdist_group("smoke_pipeline")


def pytest_collection_modifyitems(items):
  """Every other test is grouped by its module, so that a module's fixtures (most of them a
  short training run) are built on one worker only, not once on each."""
  for item in items:
    if item.get_closest_marker("xdist_group") is None:
      item.add_marker(pytest.mark.xdist_group(item.module.__name__))


def start_main(workdir, *flags, stderr=subprocess.PIPE):
  """`python -m rlhf_jax.main SMOKE_PIPELINE_FLAGS... flags... --workdir=W`, started; its
  stderr piped (read it with `finish`) or written to the open file `stderr`."""
  return subprocess.Popen([sys.executable, "-m", "rlhf_jax.main", *SMOKE_PIPELINE_FLAGS,
                           *flags, f"--workdir={workdir}"], cwd=REPO, text=True,
                          stdout=subprocess.DEVNULL, stderr=stderr)


def finish(process) -> str:
  """Waits for a `start_main` process; returns its stderr, failing on a non-zero exit."""
  _, stderr = process.communicate(timeout=900)
  assert process.returncode == 0, stderr[-3000:]
  return stderr


@pytest.fixture(scope="session")
def smoke_pipeline(tmp_path_factory):
  """(workdir, stderr) of one uninterrupted `chatgpt_world.py:smoke` run through
  `python -m rlhf_jax.main`: WORKDIR/{pretrain,sft,rm,ppo}, report.md, report.json, plots."""
  workdir = str(tmp_path_factory.mktemp("smoke_pipeline"))
  return workdir, finish(start_main(workdir))


@pytest.fixture(scope="session")
def world_runs(smoke_pipeline):
  """(pretrain workdir, SFT workdir) of the smoke pipeline, for the command tests."""
  workdir, _ = smoke_pipeline
  return os.path.join(workdir, "pretrain"), os.path.join(workdir, "sft")
