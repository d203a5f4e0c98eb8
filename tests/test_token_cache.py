"""The token cache: a corpus source tokenized once per tokenizer gives the same windows."""
import json
import os

import numpy as np
import pytest

from rlhf_jax import tokenizer as tokenizer_lib
from rlhf_jax.data import pipeline, store, token_cache

_WORDS = "the cat sat on a mat and ate fish while dogs barked loudly at night".split()


@pytest.fixture(scope="module")
def tok():
  return tokenizer_lib.train_bpe([" ".join(_WORDS)] * 50, vocab_size=300)


@pytest.fixture()
def source(tmp_path):
  rng = np.random.default_rng(0)
  lines = [json.dumps({"text": " ".join(rng.choice(_WORDS, size=rng.integers(1, 40)))})
           for _ in range(300)]
  (tmp_path / "corpus.jsonl").write_text("\n".join(lines) + "\n")
  return store.local_dataset(str(tmp_path / "corpus.jsonl"), "corpus",
                             cache=str(tmp_path / "cache"))["train"]


def _tables(cache):
  root = os.path.join(cache, "tokens")
  return sorted(d for d in os.listdir(root) if not d.startswith("."))


def test_cached_windows_equal_tokenizing_on_the_fly_and_resume(tok, source, tmp_path):
  cache = str(tmp_path / "cache")

  def make(token_cache, state=None):
    return pipeline.pretrain_iterator([("a", source, 1.0)], tok, seq_len=23, batch_size=4,
                                      seed=3, state=state, token_cache=token_cache)

  plain, cached = make(None), make(cache)
  for _ in range(60):  # 60 x 96 tokens: several epochs of this corpus
    np.testing.assert_array_equal(next(plain)["tokens"], next(cached)["tokens"])
  state = json.loads(json.dumps(cached.get_state()))
  expected = [next(cached)["tokens"] for _ in range(5)]
  resumed = make(cache, state)
  for want in expected:
    np.testing.assert_array_equal(next(resumed)["tokens"], want)
  assert len(_tables(cache)) == 1  # built once, reused by the second iterator


def test_table_holds_each_records_ids_and_eos_keyed_by_tokenizer(tok, source, tmp_path):
  cache = str(tmp_path / "cache")
  table = token_cache.token_table(source, tok, cache)
  assert len(table) == len(source)
  for i in (0, 1, 57, len(source) - 1):
    assert table[i].tolist() == tok.encode(source[i]["text"]) + [tok.eos_id]
  other = tokenizer_lib.train_bpe([" ".join(_WORDS[::-1])] * 50, vocab_size=280)
  token_cache.token_table(source, other, cache)
  assert len(_tables(cache)) == 2  # another tokenizer, another table
  # In-memory records have no fingerprint: tokenized on the fly, nothing cached.
  assert token_cache.token_table(store.InMemorySource([{"text": "a"}]), tok, cache) is None


def test_a_table_without_its_completion_marker_is_rebuilt(tok, source, tmp_path):
  cache = str(tmp_path / "cache")
  token_cache.token_table(source, tok, cache)
  (name,) = _tables(cache)
  directory = os.path.join(cache, "tokens", name)
  os.remove(os.path.join(directory, "meta.json"))
  with open(os.path.join(directory, "tokens.bin"), "r+b") as f:
    f.truncate(8)  # a build killed half way
  table = token_cache.token_table(source, tok, cache)
  assert table[len(source) - 1].tolist() == tok.encode(source[-1]["text"]) + [tok.eos_id]


def _jsonl(path, records):
  path.write_text("".join(json.dumps(r) + "\n" for r in records))
  return str(path)


@pytest.mark.parametrize("kind", ["sft", "preferences", "prompts"])
def test_cached_examples_equal_encoding_on_the_fly_and_resume(tok, tmp_path, kind):
  """SFT, preference and prompt batches read from the example table equal the batches
  encoded as they are read, across epochs and after a resume."""
  rng = np.random.default_rng(1)
  words = lambda: " ".join(rng.choice(_WORDS, size=rng.integers(1, 30)))
  if kind == "sft":
    records = [{"prompt": words(), "response": words()} for _ in range(40)]
    make = lambda source, **kw: pipeline.sft_iterator(source, tok, max_len=24, **kw)
  elif kind == "preferences":
    records = [{"prompt": words(), "responses": [words() for _ in range(rng.integers(2, 4))]}
               for _ in range(40)]
    for r in records:
      r["ranking"] = list(range(len(r["responses"])))
    make = lambda source, **kw: pipeline.preference_iterator(source, tok, max_len=24,
                                                             num_responses=3, **kw)
  else:
    records = [{"prompt": words()} for _ in range(40)]
    make = lambda source, **kw: pipeline.prompt_iterator(source, tok, max_prompt_len=12, **kw)
  cache = str(tmp_path / "cache")
  source = store.local_dataset(_jsonl(tmp_path / "data.jsonl", records), kind,
                               cache=cache)["train"]
  plain = make(source, batch_size=4, seed=2)
  cached = make(source, batch_size=4, seed=2, token_cache=cache)
  for _ in range(25):  # 100 examples: several epochs of 36 training records
    want, got = next(plain), next(cached)
    assert want.keys() == got.keys()
    for key in want:
      np.testing.assert_array_equal(want[key], got[key])
  state = json.loads(json.dumps(cached.get_state()))
  expected = [next(cached) for _ in range(3)]
  resumed = make(source, batch_size=4, seed=2, token_cache=cache, state=state)
  for want in expected:
    got = next(resumed)
    for key in want:
      np.testing.assert_array_equal(want[key], got[key])
  assert len(os.listdir(os.path.join(cache, "examples"))) == 2  # the table and its lock
