"""Tokenizer: exact round trip, chat masks, GPT-2 files, determinism, resume order."""
import json
import os
import random

import ml_collections
import pytest
from tokenizers import pre_tokenizers

from rlhf_jax import tokenizer as tokenizer_lib
from rlhf_jax.errors import UserError

_TEXTS = ["The quick brown fox jumps over the lazy dog. " * 3,
          "Ein Wörterbuch; 世界你好; emoji 🤗🚀; e\u0301 combining.",
          "  leading spaces\r\nwindows lines\ttabs\x00nul"] * 20

_ALPHABET = ("abcxyz ABC 0123456789 .,;!?\n\r\t\x00 éüß 世界你好 🤗🚀👩‍👩‍👧 e\u0301 a\u0308 "
             "\u200b\ufeff <|endoftext|> <|pad|> <|user|> \U0010ffff")


@pytest.fixture(scope="module")
def tok():
  return tokenizer_lib.train_bpe(_TEXTS, vocab_size=320)


def _random_text(rng: random.Random) -> str:
  return "".join(rng.choice(_ALPHABET) for _ in range(rng.randrange(0, 60)))


def test_round_trip_is_exact_on_random_unicode(tok):
  rng = random.Random(0)
  texts = [_random_text(rng) for _ in range(300)]
  texts += ["", " ", "  x", "\r\n", "\x00", "<|endoftext|>", "<|assistant|>hi<|pad|>"]
  for text in texts:
    assert tok.decode(tok.encode(text)) == text, repr(text)
  assert tok.encode_batch(texts) == [tok.encode(text) for text in texts]


def test_special_ids_are_distinct_and_never_come_from_text(tok):
  specials = {tok.eos_id, tok.pad_id, tok.system_id, tok.user_id, tok.assistant_id}
  assert len(specials) == 5
  assert max(specials) < tok.vocab_size
  ids = tok.encode("<|endoftext|><|pad|><|system|><|user|><|assistant|>")
  assert not specials & set(ids)


def test_encode_chat_mask_covers_exactly_assistant_content_and_eos(tok):
  messages = [{"role": "system", "content": "Be brief."},
              {"role": "user", "content": "Hi there"},
              {"role": "assistant", "content": "Hello!"},
              {"role": "user", "content": "Bye"},
              {"role": "assistant", "content": "Bye bye."}]
  ids, mask = tok.encode_chat(messages)
  expected_ids, expected_mask = [], []
  for message in messages:
    content = tok.encode(message["content"])
    role_id = {"system": tok.system_id, "user": tok.user_id,
               "assistant": tok.assistant_id}[message["role"]]
    if message["role"] == "assistant":
      expected_ids += [role_id] + content + [tok.eos_id]
      expected_mask += [0] + [1] * (len(content) + 1)
    else:
      expected_ids += [role_id] + content
      expected_mask += [0] * (len(content) + 1)
  assert ids == expected_ids
  assert mask == expected_mask
  assert tok.decode(ids) == ("<|system|>Be brief.<|user|>Hi there<|assistant|>Hello!"
                             "<|endoftext|><|user|>Bye<|assistant|>Bye bye.<|endoftext|>")


def test_generation_prompt(tok):
  ids, mask = tok.encode_chat([{"role": "user", "content": "Hi"}], add_generation_prompt=True)
  assert ids == [tok.user_id] + tok.encode("Hi") + [tok.assistant_id]
  assert mask == [0] * len(ids)
  with pytest.raises(UserError, match="user turn"):
    tok.encode_chat([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}],
                    add_generation_prompt=True)
  with pytest.raises(UserError, match="role"):
    tok.encode_chat([{"role": "bot", "content": "a"}])


def test_training_is_deterministic_and_save_load_round_trips(tok, tmp_path):
  again = tokenizer_lib.train_bpe(_TEXTS, vocab_size=320)
  assert again.to_json() == tok.to_json()
  assert again.fingerprint == tok.fingerprint
  path = str(tmp_path / "tokenizer.json")
  tok.save(path)
  loaded = tokenizer_lib.load(path)
  assert loaded.fingerprint == tok.fingerprint
  assert loaded.encode("<|endoftext|> hi") == tok.encode("<|endoftext|> hi")
  assert tokenizer_lib.load(str(tmp_path)).fingerprint == tok.fingerprint


def _write_gpt2_fixture(directory) -> None:
  alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
  vocab = {char: i for i, char in enumerate(alphabet)}
  vocab["he"] = len(vocab)
  vocab["hel"] = len(vocab)
  vocab["<|endoftext|>"] = len(vocab)
  (directory / "vocab.json").write_text(json.dumps(vocab))
  (directory / "merges.txt").write_text("#version: 0.2\nh e\nhe l\n")


def test_loads_gpt2_vocab_and_merges(tmp_path):
  _write_gpt2_fixture(tmp_path)
  tok = tokenizer_lib.load(str(tmp_path))
  assert tok.eos_id == 258  # GPT-2's own <|endoftext|> stays EOS.
  assert {tok.pad_id, tok.system_id, tok.user_id, tok.assistant_id} == {259, 260, 261, 262}
  assert tok.vocab_size == 263
  ids = tok.encode("hello")
  assert ids[0] == 257 and len(ids) == 3  # "hel" "l" "o"
  for text in ["hello wörld 🤗", "<|endoftext|>", "\r\n\x00"]:
    assert tok.decode(tok.encode(text)) == text


def test_load_errors(tmp_path):
  with pytest.raises(UserError, match="does not exist"):
    tokenizer_lib.load(str(tmp_path / "missing.json"))
  with pytest.raises(UserError, match="no tokenizer.json"):
    tokenizer_lib.load(str(tmp_path))
  bad = tmp_path / "bad.json"
  bad.write_text("{not json")
  with pytest.raises(UserError, match="cannot parse"):
    tokenizer_lib.load(str(bad))
  (tmp_path / "vocab.json").write_text("[]")
  (tmp_path / "merges.txt").write_text("")
  with pytest.raises(UserError, match="GPT-2"):
    tokenizer_lib.load(str(tmp_path))
  with pytest.raises(UserError, match="vocab_size"):
    tokenizer_lib.train_bpe(_TEXTS, vocab_size=100)


def _cfg(path="", vocab_size=300):
  return ml_collections.ConfigDict({"vocab_size": vocab_size, "path": path})


def test_for_stage_resume_order(tok, tmp_path):
  calls = []

  def texts_fn():
    calls.append(1)
    return _TEXTS

  workdir = str(tmp_path / "stage1")
  trained = tokenizer_lib.for_stage(_cfg(), workdir, "", texts_fn)
  assert calls == [1] and os.path.exists(os.path.join(workdir, "tokenizer.json"))
  # Resume reuses the saved tokenizer even if the config now names another one.
  tok_path = str(tmp_path / "other.json")
  tok.save(tok_path)
  resumed = tokenizer_lib.for_stage(_cfg(path=tok_path), workdir, "", texts_fn)
  assert resumed.fingerprint == trained.fingerprint and calls == [1]
  # A later stage inherits from init_from before looking at the config path.
  stage2 = tokenizer_lib.for_stage(_cfg(path=tok_path), str(tmp_path / "s2"), workdir, texts_fn)
  assert stage2.fingerprint == trained.fingerprint
  from_path = tokenizer_lib.for_stage(_cfg(path=tok_path), str(tmp_path / "s3"), "", texts_fn)
  assert from_path.fingerprint == tok.fingerprint
  with pytest.raises(UserError, match="init_from"):
    tokenizer_lib.for_stage(_cfg(), str(tmp_path / "s4"), str(tmp_path / "nowhere"), texts_fn)


def test_decode_response_cuts_at_eos_and_drops_special_tokens(tok):
  body = tok.encode("Paris is 12 km away.")
  ids = [tok.assistant_id] + body[:2] + [tok.pad_id] + body[2:] + [tok.eos_id] + tok.encode(
      "junk after the end") + [tok.pad_id] * 3
  assert tok.decode_response(ids) == "Paris is 12 km away."
  assert tok.decode_response([tok.eos_id] + body) == ""
  assert tok.decode_response(body) == "Paris is 12 km away."  # no EOS: the whole budget
  # Text that merely looks like a special token is the user's text and stays.
  assert tok.decode_response(tok.encode("a <|endoftext|> b")) == "a <|endoftext|> b"
  assert tok.decode_responses([body + [tok.eos_id], [tok.eos_id]]) == [
      "Paris is 12 km away.", ""]
