"""Test setup: 8 fake CPU devices, synchronous dispatch, a private data cache, shared runs.

The environment must be set before JAX is imported anywhere: with async
dispatch, 8 CPU devices on a 2-core machine deadlock in collectives.
"""
import os
import tempfile

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8")
os.environ["JAX_CPU_ENABLE_ASYNC_DISPATCH"] = "false"
os.environ["JAX_PLATFORMS"] = "cpu"
os.environ.setdefault(
    "RLHF_JAX_CACHE_DIR", tempfile.mkdtemp(prefix="rlhf_jax_test_cache_"))

# pylint: disable=g-import-not-at-top,wrong-import-position
import json
import random

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


@pytest.fixture(scope="session")
def world_runs(tmp_path_factory):
  """(pretrain workdir, SFT workdir): the world smoke variants chained through init_from
  (shared by the command tests and the pipeline report's tests)."""
  # pylint: disable=g-import-not-at-top  (JAX is imported after the flags above are set)
  from rlhf_jax import train
  from test_experiments import REPO, load_experiment
  root = tmp_path_factory.mktemp("chain")
  pretrain_dir, sft_dir = str(root / "pretrain"), str(root / "sft")
  train.run(load_experiment(os.path.join(REPO, "experiments/pretrain_world.py"))
            .get_config("smoke"), pretrain_dir)
  config = load_experiment(os.path.join(REPO, "experiments/sft_world.py")).get_config("smoke")
  config.init_from = pretrain_dir
  config.total_steps = 20
  train.run(config, sft_dir)
  return pretrain_dir, sft_dir
