"""The real files beside the repo (../shared/data) load through the TFDS builders and grain
pipelines. Skipped on a clone without them; the formats are also covered by fixtures."""
import pathlib

import numpy as np
import pytest

from rlhf_jax import tokenizer as tokenizer_lib
from rlhf_jax.data import pipeline, store

SHARED = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"
HH = SHARED / "hh-rlhf" / "harmless-base-test.jsonl.gz"
ALPACA = SHARED / "alpaca" / "seed_tasks.jsonl"
pytestmark = pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data is not present")


def _texts(splits, fields):
  for record in splits["train"]:
    for field in fields:
      value = record[field]
      yield value if isinstance(value, str) else " ".join(
          v if isinstance(v, str) else v["content"] for v in value)


def test_hh_pairs_load_through_the_builder_and_batch(tmp_path):
  splits = store.local_dataset(str(HH), "preferences", valid_fraction=0.1,
                               cache=str(tmp_path))
  assert len(splits["train"]) + len(splits["validation"]) == 2312
  assert len(splits["validation"]) == 231
  record = splits["train"][0]
  assert record["ranking"] == [0, 1] and record["prompt"][-1]["role"] == "user"
  tok = tokenizer_lib.train_bpe(_texts(splits, ("prompt", "responses")), vocab_size=1000)
  batch = next(pipeline.preference_iterator(splits["train"], tok, max_len=256,
                                            num_responses=2, batch_size=4, seed=0))
  assert batch["tokens"].shape == (4, 2, 256) and batch["ranking"].tolist() == [[0, 1]] * 4
  assert np.all(batch["response_mask"].sum(-1) > 0)


def test_alpaca_seed_tasks_load_through_the_builder_and_batch(tmp_path):
  splits = store.local_dataset(str(ALPACA), "sft", valid_fraction=0.1, cache=str(tmp_path))
  assert len(splits["train"]) + len(splits["validation"]) == 175
  messages = splits["train"][0]["messages"]
  assert [m["role"] for m in messages] == ["user", "assistant"]
  tok = tokenizer_lib.train_bpe(_texts(splits, ("messages",)), vocab_size=800)
  batch = next(pipeline.sft_iterator(splits["train"], tok, max_len=128, batch_size=4, seed=0))
  assert batch["tokens"].shape == (4, 128)
  # The loss covers assistant tokens only: never the user's marker or content.
  assert np.all(batch["loss_mask"][batch["tokens"] == tok.user_id] == 0)
  assert np.all(batch["loss_mask"].sum(-1) > 0)
