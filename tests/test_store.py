"""TFDS array_record store: build once, reuse, splits, crash safety, catalog datasets."""
import json
import os
import threading

import pytest
import tensorflow_datasets as tfds

from rlhf_jax.data import readers
from rlhf_jax.data import store
from rlhf_jax.errors import UserError


def _write_jsonl(path, records):
  path.write_text("".join(json.dumps(record) + "\n" for record in records))
  return str(path)


def _corpus(n, prefix="doc"):
  return [{"text": f"{prefix} {i} ünïcode 🤗"} for i in range(n)]


@pytest.fixture
def count_reads(monkeypatch):
  calls = []
  real = readers.read_records

  def counting(*args, **kwargs):
    calls.append(args[0])
    return real(*args, **kwargs)

  monkeypatch.setattr(readers, "read_records", counting)
  return calls


def test_builds_once_and_splits_off_the_last_fraction(tmp_path, count_reads):
  path = _write_jsonl(tmp_path / "a.jsonl", _corpus(20))
  cache = str(tmp_path / "cache")
  splits = store.local_dataset(path, "corpus", valid_fraction=0.1, cache=cache)
  assert [len(splits["train"]), len(splits["validation"])] == [18, 2]
  assert splits["train"][0] == {"text": "doc 0 ünïcode 🤗", "doc_end": True}
  assert [splits["validation"][i]["text"][:6] for i in range(2)] == ["doc 18", "doc 19"]
  assert splits["train"].__getitems__([3, 1]) == [splits["train"][3], splits["train"][1]]
  again = store.local_dataset(path, "corpus", valid_fraction=0.1, cache=cache)
  assert len(count_reads) == 1 and len(again["train"]) == 18
  # Another option or changed file content builds a new dataset.
  store.local_dataset(path, "corpus", valid_fraction=0.5, cache=cache)
  assert len(count_reads) == 2
  _write_jsonl(tmp_path / "a.jsonl", _corpus(30))
  assert len(store.local_dataset(path, "corpus", cache=cache)["train"]) == 27


def test_valid_spec_and_txt_and_other_formats(tmp_path):
  train = _write_jsonl(tmp_path / "train.jsonl", [
      {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}])
  valid = _write_jsonl(tmp_path / "valid.jsonl", [{"prompt": "a", "response": "b"}] * 3)
  splits = store.local_dataset(train, "sft", valid_spec=valid, cache=str(tmp_path / "c"))
  assert len(splits["train"]) == 1 and len(splits["validation"]) == 3
  assert splits["train"][0]["messages"][1] == {"role": "assistant", "content": "yo"}
  text = "line one\n" * 2000
  (tmp_path / "book.txt").write_text(text)
  splits = store.local_dataset(str(tmp_path / "book.txt"), "corpus", cache=str(tmp_path / "c"))
  records = list(splits["train"]) + list(splits["validation"])
  assert "".join(record["text"] for record in records) == text
  assert [record["doc_end"] for record in records][-2:] == [False, True]


def test_user_errors(tmp_path):
  cache = str(tmp_path / "c")
  one = _write_jsonl(tmp_path / "one.jsonl", _corpus(1))
  with pytest.raises(UserError, match="too few"):
    store.local_dataset(one, "corpus", cache=cache)
  with pytest.raises(UserError, match="valid_fraction"):
    store.local_dataset(one, "corpus", valid_fraction=1.5, cache=cache)
  with pytest.raises(UserError, match="matches no file"):
    store.local_dataset(str(tmp_path / "nope.jsonl"), "corpus", cache=cache)
  with pytest.raises(UserError, match="world:SIZE:SEED/KIND"):
    store.local_dataset("world:small/corpus", "corpus", cache=cache)
  bad = tmp_path / "bad.jsonl"
  bad.write_text('{"text": "ok"}\nnot json\n{"text": "fine"}\n{"text": "x"}\n')
  with pytest.raises(UserError, match="bad.jsonl:2"):
    store.local_dataset(str(bad), "corpus", cache=cache)
  splits = store.local_dataset(str(bad), "corpus", skip_malformed=True, cache=cache)
  assert len(splits["train"]) + len(splits["validation"]) == 3


def test_crashed_build_leaves_no_dataset_and_concurrent_builds_agree(tmp_path, monkeypatch):
  path = _write_jsonl(tmp_path / "a.jsonl", _corpus(10))
  cache = str(tmp_path / "cache")
  real = readers.read_records

  def unserialisable(*args, **kwargs):
    records, skipped = real(*args, **kwargs)
    return records[:5] + [{"text": object()}] + records[5:], skipped

  monkeypatch.setattr(readers, "read_records", unserialisable)
  with pytest.raises(TypeError):
    store.local_dataset(path, "corpus", cache=cache)
  monkeypatch.setattr(readers, "read_records", real)
  results, errors = [], []

  def build():
    try:
      results.append(store.local_dataset(path, "corpus", cache=cache))
    except Exception as e:  # pylint: disable=broad-except
      errors.append(e)

  threads = [threading.Thread(target=build) for _ in range(3)]
  for thread in threads:
    thread.start()
  for thread in threads:
    thread.join()
  assert not errors
  assert [list(r["train"]) for r in results] == [list(results[0]["train"])] * 3
  assert len(results[0]["train"]) == 9


def test_world_spec_generates_once_and_uses_its_splits(tmp_path, monkeypatch):
  from rlhf_jax.data import world  # pylint: disable=g-import-not-at-top
  generated = []
  write_world = world.write_world

  def counting_write_world(out_dir, seed=0, size="small"):
    generated.append((size, seed))
    write_world(out_dir, seed=seed, size=size)

  monkeypatch.setattr(world, "write_world", counting_write_world)
  cache = str(tmp_path / "cache")
  world_dir = os.path.join(cache, "world", f"small_seed3_v{world.VERSION}")
  splits = store.local_dataset("world:small:3/sft", "sft", cache=cache)
  store.local_dataset("world:small:3/prompts", "prompts", cache=cache)
  assert generated == [("small", 3)]
  assert store.ensure_world("small", 3, cache) == world_dir
  for split, name in [("train", "train"), ("validation", "valid"), ("test", "test")]:
    with open(os.path.join(world_dir, "sft", f"{name}.jsonl")) as f:
      lines = f.readlines()
    assert len(splits[split]) == len(lines)
    assert splits[split][0]["messages"] == json.loads(lines[0])["messages"]
  assert not [name for name in os.listdir(os.path.join(cache, "world"))
              if name.startswith(".incomplete")]


class RlhfJaxTestCatalog(tfds.core.GeneratorBasedBuilder):
  """A catalog dataset made up on the spot: train and test, no validation."""
  VERSION = tfds.core.Version("1.0.0")

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self, features=tfds.features.FeaturesDict({"text": tfds.features.Text()}),
        disable_shuffling=True)

  def _split_generators(self, dl_manager):
    return {"train": self._generate_examples(3), "test": self._generate_examples(1)}

  def _generate_examples(self, n):
    for i in range(n):
      yield i, {"text": f"story {i} ☃"}


class RlhfJaxTestOffline(RlhfJaxTestCatalog):
  """A catalog dataset whose download fails as it does without network."""

  def _split_generators(self, dl_manager):
    raise ConnectionError("Failed to resolve host")


def test_catalog_dataset(tmp_path):
  splits = store.catalog_dataset("rlhf_jax_test_catalog", data_dir=str(tmp_path))
  assert len(splits["train"]) == 3 and len(splits["validation"]) == 1
  assert splits["train"][2] == {"text": "story 2 ☃", "doc_end": True}
  with pytest.raises(UserError, match="could not be downloaded.*data.path"):
    store.catalog_dataset("rlhf_jax_test_offline", data_dir=str(tmp_path))
  with pytest.raises(UserError, match="no dataset"):
    store.catalog_dataset("rlhf_jax_no_such_dataset", data_dir=str(tmp_path))
  with pytest.raises(UserError, match="text_key"):
    store.catalog_dataset("rlhf_jax_test_catalog", text_key="body", data_dir=str(tmp_path))
