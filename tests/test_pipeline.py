"""grain pipelines and corpus sources: exact contents, shapes, shuffling, sharding, resume."""
import json
import logging

import ml_collections
import numpy as np
import pytest

from rlhf_jax import configs
from rlhf_jax import tokenizer as tokenizer_lib
from rlhf_jax.data import corpus, pipeline, store
from rlhf_jax.errors import UserError

_WORDS = "the cat sat on a mat and ate fish while dogs barked loudly at night".split()


@pytest.fixture(scope="module")
def tok():
  return tokenizer_lib.train_bpe([" ".join(_WORDS)] * 50, vocab_size=300)


def _docs(n, seed=0, prefix=""):
  rng = np.random.default_rng(seed)
  return [{"text": prefix + " ".join(rng.choice(_WORDS, size=rng.integers(3, 12))),
           "doc_end": True} for _ in range(n)]


def _take(iterator, n):
  return [next(iterator) for _ in range(n)]


def _assert_same_batches(expected, actual):
  assert len(expected) == len(actual)
  for want, got in zip(expected, actual):
    assert want.keys() == got.keys()
    for key in want:
      np.testing.assert_array_equal(want[key], got[key])


def _assert_resumes_exactly(make_iterator, skip, check):
  """State taken after `skip` batches (JSON round trip) replays the next `check` batches."""
  iterator = make_iterator(None)
  _take(iterator, skip)
  state = json.loads(json.dumps(iterator.get_state()))
  expected = _take(iterator, check)
  _assert_same_batches(expected, _take(make_iterator(state), check))
  other = make_iterator(None)
  next(other)
  other.set_state(state)
  _assert_same_batches(expected, _take(other, check))


def _stream(tok, records):
  return np.concatenate([tok.encode(r["text"]) + [tok.eos_id] * r["doc_end"] for r in records])


def test_pretrain_packs_the_token_stream_in_order(tok):
  records = _docs(30)
  records[3]["doc_end"] = False  # a document continued by the next record: no EOS between.
  source = store.InMemorySource(records)
  iterator = pipeline.pretrain_iterator([("a", source, 1.0)], tok, seq_len=7, batch_size=3,
                                        seed=0, shuffle=False, repeat=False)
  batches = list(iterator)
  assert all(b["tokens"].shape == (3, 8) and b["tokens"].dtype == np.int32 for b in batches)
  stream = _stream(tok, records)
  assert len(batches) == len(stream) // 24
  np.testing.assert_array_equal(np.concatenate([b["tokens"].ravel() for b in batches]),
                                stream[:len(batches) * 24])


def test_pretrain_shuffles_per_epoch_and_resumes_across_epochs(tok):
  records = _docs(12)
  source = store.InMemorySource(records)
  epoch_tokens = len(_stream(tok, records))

  def make(state, seed=1):
    return pipeline.pretrain_iterator([("a", source, 1.0)], tok, seq_len=9, batch_size=2,
                                      seed=seed, state=state)

  num_batches = 3 * epoch_tokens // 20
  stream = np.concatenate([b["tokens"].ravel() for b in _take(make(None), num_batches)])
  first, second = stream[:epoch_tokens], stream[epoch_tokens:2 * epoch_tokens]
  assert sorted(first.tolist()) == sorted(_stream(tok, records).tolist())
  assert sorted(second.tolist()) == sorted(first.tolist())
  assert not np.array_equal(first, second)  # reshuffled each epoch
  assert not np.array_equal(first, _stream(tok, records))
  again = np.concatenate([b["tokens"].ravel() for b in _take(make(None), 5)])
  np.testing.assert_array_equal(again, stream[:len(again)])
  other_seed = np.concatenate([b["tokens"].ravel() for b in _take(make(None, seed=2), 5)])
  assert not np.array_equal(other_seed, again)
  _assert_resumes_exactly(make, skip=3, check=4)  # mid-epoch
  _assert_resumes_exactly(make, skip=num_batches // 3 - 1, check=6)  # across the boundary


def test_pretrain_mixture_follows_weights_and_resumes(tok):
  a = store.InMemorySource(_docs(20, seed=1))
  b = store.InMemorySource([{"text": "zz " * (i + 1), "doc_end": True} for i in range(20)])

  def make(state):
    return pipeline.pretrain_iterator([("a", a, 0.75), ("b", b, 0.25)], tok, seq_len=15,
                                      batch_size=4, seed=0, state=state)

  z = tok.encode("z")[0]  # only source b has a "z"; each window comes from one source
  windows = np.concatenate([batch["tokens"] for batch in _take(make(None), 100)])
  from_b = np.mean([z in window for window in windows])
  assert 0.2 < from_b < 0.3, from_b
  _assert_resumes_exactly(make, skip=7, check=5)


def test_pretrain_validation_errors(tok):
  source = store.InMemorySource(_docs(4))
  tokens = len(_stream(tok, _docs(4)))
  with pytest.raises(UserError, match=f"validation split \\(a\\) has {tokens} tokens.*needs 800"):
    pipeline.pretrain_iterator([("a", source, 1.0)], tok, seq_len=99, batch_size=4, seed=0,
                               repeat=False, shard_index=1, shard_count=2)
  with pytest.raises(UserError, match="shard_index=2 must be in"):
    pipeline.pretrain_iterator([("a", source, 1.0)], tok, seq_len=3, batch_size=1, seed=0,
                               shard_index=2, shard_count=2)


@pytest.mark.parametrize("kind", ["pretrain", "sft"])
def test_shards_are_the_rows_of_one_global_batch_and_share_one_state(tok, kind):
  """Shard p of 3 yields rows [2p, 2p + 2) of the batches one shard reads with batch 6, past
  an epoch; every shard's iterator state is the single shard's, so the one a checkpoint
  saves (process 0's) resumes them all."""
  def make(shard_index, shard_count, state=None):
    common = dict(batch_size=6 // shard_count, seed=0, shard_index=shard_index,
                  shard_count=shard_count, state=state)
    if kind == "pretrain":
      return pipeline.pretrain_iterator([("a", store.InMemorySource(_docs(20)), 1.0)], tok,
                                        seq_len=5, **common)
    return pipeline.sft_iterator(store.InMemorySource([_conversation(i) for i in range(10)]),
                                 tok, max_len=16, **common)

  def assert_rows_match(whole, shards, num_batches):
    for _ in range(num_batches):
      want, got = next(whole), [next(shard) for shard in shards]
      for key in want:
        np.testing.assert_array_equal(np.concatenate([g[key] for g in got]), want[key])

  whole, shards = make(0, 1), [make(i, 3) for i in range(3)]
  assert_rows_match(whole, shards, 7)
  assert [shard.get_state() for shard in shards] == [whole.get_state()] * 3
  assert_rows_match(whole, [make(i, 3, shards[0].get_state()) for i in range(3)], 3)


def _conversation(i):
  return {"messages": [{"role": "system", "content": "be kind"},
                       {"role": "user", "content": f"the cat {i}"},
                       {"role": "assistant", "content": "a mat " * (i % 5 + 1)}]}


def test_sft_batches_match_the_chat_template_and_resume(tok, caplog):
  records = [_conversation(i) for i in range(10)]
  source = store.InMemorySource(records)
  max_len = 16
  batches = list(pipeline.sft_iterator(source, tok, max_len=max_len, batch_size=4, seed=0,
                                       shuffle=False, repeat=False))
  assert len(batches) == 2
  for row, record in enumerate(records[:4]):
    ids, mask = tok.encode_chat(record["messages"])
    # Too long: the oldest context tokens go first, the final assistant turn stays.
    final = len(ids) - ids[::-1].index(tok.assistant_id)
    cut = max(0, min(len(ids) - max_len, final - max_len // 2))
    ids, mask = ids[cut:][:max_len], mask[cut:][:max_len]
    n = len(ids)
    np.testing.assert_array_equal(batches[0]["tokens"][row, :n], ids)
    np.testing.assert_array_equal(batches[0]["tokens"][row, n:], tok.pad_id)
    np.testing.assert_array_equal(batches[0]["loss_mask"][row, :n], mask)
    assert batches[0]["loss_mask"][row, n:].sum() == 0
  assert batches[0]["tokens"].dtype == np.int32 and batches[0]["loss_mask"].shape == (4, 16)
  with caplog.at_level(logging.WARNING):
    short = list(pipeline.sft_iterator(source, tok, max_len=12, batch_size=2, seed=0,
                                       repeat=False))
  assert "truncated to 12 tokens" in caplog.text
  assert all(np.all(b["loss_mask"].sum(-1) > 0) for b in short)  # no row loses its target

  def make(state):
    return pipeline.sft_iterator(source, tok, max_len=max_len, batch_size=3, seed=4, state=state)

  _assert_resumes_exactly(make, skip=2, check=3)
  _assert_resumes_exactly(make, skip=3, check=6)  # 10 records: epochs end mid-batch
  with pytest.raises(UserError, match="validation split has 10 records.*needs 11"):
    pipeline.sft_iterator(source, tok, max_len=8, batch_size=11, seed=0, repeat=False)


def _preference(i, k):
  return {"prompt": [{"role": "user", "content": f"the dogs {i}"}],
          "responses": [f"fish {j} " * (j + 1) for j in range(k)],
          "ranking": list(range(k))[::-1]}


def test_preference_batches_and_resume(tok):
  records = [_preference(i, 2 + i % 2) for i in range(7)]
  source = store.InMemorySource(records)
  batch = next(pipeline.preference_iterator(source, tok, max_len=20, num_responses=3,
                                            batch_size=2, seed=0, shuffle=False))
  assert batch["tokens"].shape == (2, 3, 20) and batch["ranking"].shape == (2, 3)
  np.testing.assert_array_equal(batch["ranking"], [[1, 0, -1], [2, 1, 0]])
  prompt_ids, _ = tok.encode_chat(records[0]["prompt"], add_generation_prompt=True)
  for k, response in enumerate(records[0]["responses"]):
    ids = prompt_ids + tok.encode(response) + [tok.eos_id]
    np.testing.assert_array_equal(batch["tokens"][0, k, :len(ids)], ids)
    np.testing.assert_array_equal(batch["tokens"][0, k, len(ids):], tok.pad_id)
    assert batch["response_mask"][0, k].tolist() == (
        [0] * len(prompt_ids) + [1] * (len(ids) - len(prompt_ids)) + [0] * (20 - len(ids)))
  assert batch["response_mask"][0, 2].sum() == 0
  np.testing.assert_array_equal(batch["tokens"][0, 2], tok.pad_id)

  def make(state):
    return pipeline.preference_iterator(source, tok, max_len=20, num_responses=3,
                                        batch_size=2, seed=3, state=state)

  _assert_resumes_exactly(make, skip=3, check=5)
  with pytest.raises(UserError, match="num_responses"):
    next(pipeline.preference_iterator(source, tok, max_len=20, num_responses=2, batch_size=2,
                                      seed=0, shuffle=False))


def test_long_preference_records_share_one_prompt_cut_and_keep_every_eos(tok):
  """max_len 40, a 60-token prompt and responses of 3 to ~45 tokens: every row keeps the
  same prompt tokens (the newest ones), and every row ends in EOS."""
  prompt = [{"role": "user", "content": " ".join(_WORDS * 4)}]
  responses = ["fish", "the dogs barked " * 4, "a cat sat on a mat " * 6]
  record = {"prompt": prompt, "responses": responses, "ranking": [0, 2, 1]}
  batch = next(pipeline.preference_iterator(store.InMemorySource([record] * 2), tok, max_len=40,
                                            num_responses=4, batch_size=2, seed=0,
                                            shuffle=False))
  tokens_KxL, mask_KxL = batch["tokens"][0], batch["response_mask"][0]
  prompt_ids, _ = tok.encode_chat(prompt, add_generation_prompt=True)
  response_ids = [tok.encode(r) for r in responses]
  assert len(prompt_ids) > 40 and len(response_ids[2]) > 20 and len(response_ids[0]) < 5
  starts = [int(np.argmax(mask_KxL[k])) for k in range(3)]
  assert starts == [20, 20, 20]  # the prompt keeps max_len // 2 tokens in every row
  for k in range(3):
    np.testing.assert_array_equal(tokens_KxL[k, :20], prompt_ids[-20:])
    end = int(mask_KxL[k].nonzero()[0][-1])
    assert tokens_KxL[k, end] == tok.eos_id, k
    assert mask_KxL[k, starts[k]:end + 1].all() and not mask_KxL[k, end + 1:].any()
    kept = tokens_KxL[k, 20:end].tolist()
    assert kept == response_ids[k][:len(kept)]  # cut on the right only
    np.testing.assert_array_equal(tokens_KxL[k, end + 1:], tok.pad_id)
  assert end == 39 and len(kept) == 19  # the long response fills its row and keeps the EOS
  assert int(mask_KxL[0].sum()) == len(response_ids[0]) + 1
  np.testing.assert_array_equal(batch["ranking"][0], [0, 2, 1, -1])
  np.testing.assert_array_equal(tokens_KxL[3], tok.pad_id)
  assert batch["index"].tolist() == [0, 1]


def test_prompt_batches_are_left_padded_and_resume(tok):
  records = [{"messages": [{"role": "user", "content": "the cat " * (i + 1)}]} for i in range(6)]
  source = store.InMemorySource(records)
  batch = next(pipeline.prompt_iterator(source, tok, max_prompt_len=8, batch_size=3, seed=0,
                                        shuffle=False))
  assert batch["tokens"].shape == (3, 8) and batch["mask"].shape == (3, 8)
  np.testing.assert_array_equal(batch["index"], [0, 1, 2])
  ids, _ = tok.encode_chat(records[0]["messages"], add_generation_prompt=True)
  assert batch["tokens"][0].tolist() == [tok.pad_id] * (8 - len(ids)) + ids
  assert batch["mask"][0].tolist() == [0] * (8 - len(ids)) + [1] * len(ids)
  long_ids, _ = tok.encode_chat(records[2]["messages"], add_generation_prompt=True)
  assert len(long_ids) > 8 and batch["tokens"][2].tolist() == long_ids[-8:]
  assert batch["mask"][2].all() and batch["tokens"][2, -1] == tok.assistant_id

  def make(state):
    return pipeline.prompt_iterator(source, tok, max_prompt_len=8, batch_size=4, seed=5,
                                    state=state)

  _assert_resumes_exactly(make, skip=2, check=5)


def test_store_sources_feed_the_pipeline(tok, tmp_path):
  text = "".join(f"the cat {i} sat on a mat\n" for i in range(400))
  (tmp_path / "book.txt").write_text(text)
  cfg = configs.base_config().data
  cfg.path = str(tmp_path / "book.txt")
  sources = corpus.corpus_sources(cfg)
  assert [name for name, _, _ in sources["train"]] == ["corpus"]
  valid = list(pipeline.pretrain_iterator(sources["validation"], tok, seq_len=31, batch_size=2,
                                          seed=0, repeat=False))
  assert valid and all(b["tokens"].shape == (2, 32) for b in valid)
  records = list(sources["train"][0][1]) + list(sources["validation"][0][1])
  assert "".join(r["text"] for r in records) == text
  texts = list(corpus.training_texts(sources["train"], max_chars=5000))
  assert sum(map(len, texts)) == 5000 and text.startswith("".join(texts))

  def make(state):
    return pipeline.pretrain_iterator(sources["train"], tok, seq_len=31, batch_size=2, seed=0,
                                      state=state)

  _assert_resumes_exactly(make, skip=5, check=3)


def test_corpus_sources_config_errors_and_mixture(tmp_path):
  for name in ("a", "b"):
    (tmp_path / f"{name}.jsonl").write_text("".join(
        json.dumps({"text": f"{name} {i}"}) + "\n" for i in range(10)))
  cfg = configs.base_config().data
  with pytest.raises(UserError, match="exactly one of"):
    corpus.corpus_sources(cfg)
  cfg.path, cfg.tfds_name = str(tmp_path / "a.jsonl"), "tiny_shakespeare"
  local = corpus.corpus_sources(cfg)  # a local path replaces the catalog default (offline)
  assert local["train"][0][0] == "corpus" and local["train"][0][1][0]["text"] == "a 0"
  cfg.mixture = ml_collections.ConfigDict({"a": configs.mixture_source(path=cfg.path)})
  with pytest.raises(UserError, match="exactly one of"):
    corpus.corpus_sources(cfg)
  cfg.path, cfg.tfds_name = "", ""
  cfg.mixture = ml_collections.ConfigDict({
      "a": configs.mixture_source(path=str(tmp_path / "a.jsonl"), weight=3.0),
      "b": configs.mixture_source(path=str(tmp_path / "b.jsonl"), weight=1.0)})
  sources = corpus.corpus_sources(cfg)
  assert [(n, w) for n, _, w in sources["train"]] == [("a", 0.75), ("b", 0.25)]
  assert sources["validation"][1][1][0]["text"] == "b 9"
  cfg.mixture.b.weight = 0.0
  with pytest.raises(UserError, match="mixture.b.weight"):
    corpus.corpus_sources(cfg)
  cfg.mixture.b.weight, cfg.mixture.b.tfds_name = 1.0, "x"
  with pytest.raises(UserError, match="exactly one of path and tfds_name"):
    corpus.corpus_sources(cfg)
