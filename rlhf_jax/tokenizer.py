"""Byte-level BPE tokenizer, special tokens and the chat template (DESIGN §3.7).

A thin wrapper around a HF `tokenizers.Tokenizer`. Byte-level means every
Unicode string is encodable and `decode(encode(s)) == s` exactly: no
normaliser, no added prefix space, and decoding keeps special tokens.

Special tokens only come from the chat template, never from text: user text
that contains "<|endoftext|>" is encoded as ordinary bytes (several plain
tokens), so data cannot forge a role marker or an end of turn.

Chat template, one message after another:
  <|role|> content            (system and user turns)
  <|assistant|> content EOS   (the loss mask is 1 on `content EOS` only)
"""
import hashlib
import os
from typing import Callable, Iterable, Sequence

import tokenizers
from tokenizers import decoders, models, pre_tokenizers, trainers

from rlhf_jax.errors import UserError

EOS = "<|endoftext|>"
PAD = "<|pad|>"
SYSTEM = "<|system|>"
USER = "<|user|>"
ASSISTANT = "<|assistant|>"
SPECIAL_TOKENS = (EOS, PAD, SYSTEM, USER, ASSISTANT)
_NUM_BYTES = 256
MIN_VOCAB_SIZE = _NUM_BYTES + len(SPECIAL_TOKENS)  # a byte-level BPE with no merges
TOKENIZER_FILE = "tokenizer.json"


class Tokenizer:
  """Byte-level BPE with our special tokens; see the module docstring."""

  def __init__(self, hf_tokenizer: tokenizers.Tokenizer):
    self._hf = hf_tokenizer
    # Not serialised by `tokenizers`, so set on every construction.
    self._hf.encode_special_tokens = True
    ids = {token: hf_tokenizer.token_to_id(token) for token in SPECIAL_TOKENS}
    missing = [token for token, i in ids.items() if i is None]
    if missing:
      raise UserError(f"tokenizer lacks special tokens {missing}; "
                      "load it with rlhf_jax.tokenizer.load or train one with train_bpe")
    self.eos_id = ids[EOS]
    self.pad_id = ids[PAD]
    self.system_id = ids[SYSTEM]
    self.user_id = ids[USER]
    self.assistant_id = ids[ASSISTANT]
    self._special_ids = frozenset(ids.values())
    self._role_ids = {"system": self.system_id, "user": self.user_id,
                      "assistant": self.assistant_id}
    self.vocab_size = hf_tokenizer.get_vocab_size(with_added_tokens=True)
    self.fingerprint = hashlib.sha256(self.to_json().encode()).hexdigest()[:16]

  def to_json(self) -> str:
    return self._hf.to_str()

  def encode(self, text: str) -> list[int]:
    """Token ids of `text`; no special tokens are added or recognised."""
    return self._hf.encode(text, add_special_tokens=False).ids

  def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
    """`encode` for many texts at once (parallel inside `tokenizers`)."""
    # encode_batch_fast (tokenizers >= 0.21) skips computing offsets.
    encode = getattr(self._hf, "encode_batch_fast", self._hf.encode_batch)
    encodings = encode(list(texts), add_special_tokens=False)
    return [encoding.ids for encoding in encodings]

  def decode(self, ids: Iterable[int]) -> str:
    """Text of `ids`, special tokens included."""
    return self._hf.decode([int(i) for i in ids], skip_special_tokens=False)

  def decode_response(self, ids: Iterable[int]) -> str:
    """The text of a generated response: ids up to the first EOS, special tokens dropped.

    The one place that turns sampled ids into what the judge, the reward model's
    scoring command and `samples.jsonl` see: no EOS, PAD or role marker survives.
    """
    kept = []
    for i in ids:
      i = int(i)
      if i == self.eos_id:
        break
      if i not in self._special_ids:
        kept.append(i)
    return self._hf.decode(kept, skip_special_tokens=False)

  def decode_responses(self, ids_BxN) -> list[str]:
    """`decode_response` of every row."""
    return [self.decode_response(row) for row in ids_BxN]

  def encode_chat(self, messages: Sequence[dict],
                  add_generation_prompt: bool = False) -> tuple[list[int], list[int]]:
    """(ids, loss_mask) of a conversation; loss_mask is 1 on assistant content and its EOS.

    With `add_generation_prompt` the conversation must end with a user turn and
    the `<|assistant|>` marker is appended, ready for sampling a response.
    """
    ids, loss_mask = [], []
    for message in messages:
      role = message["role"]
      if role not in self._role_ids:
        raise UserError(f"unknown chat role {role!r}; use one of {sorted(self._role_ids)}")
      content = self.encode(message["content"])
      is_assistant = role == "assistant"
      if is_assistant:
        content.append(self.eos_id)
      ids.append(self._role_ids[role])
      ids.extend(content)
      loss_mask.append(0)
      loss_mask.extend([int(is_assistant)] * len(content))
    if add_generation_prompt:
      if not messages or messages[-1]["role"] != "user":
        raise UserError("a generation prompt must end with a user turn; "
                        "drop trailing assistant turns from the prompt")
      ids.append(self.assistant_id)
      loss_mask.append(0)
    return ids, loss_mask

  def save_vocab_and_merges(self, directory: str) -> None:
    """Writes the BPE's vocab.json + merges.txt (GPT-2's files; no special tokens)."""
    self._hf.model.save(directory)

  def save(self, path: str) -> None:
    """Writes tokenizer.json to `path` (a file path) atomically."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp_path = f"{path}.tmp.{os.getpid()}"
    with open(tmp_path, "w", encoding="utf-8") as f:
      f.write(self.to_json())
    os.replace(tmp_path, path)


def _byte_level(model: models.Model) -> tokenizers.Tokenizer:
  hf = tokenizers.Tokenizer(model)
  hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
  hf.decoder = decoders.ByteLevel()
  return hf


def train_bpe(texts: Iterable[str], vocab_size: int) -> Tokenizer:
  """Trains a byte-level BPE with `vocab_size` ids (specials included); deterministic."""
  if vocab_size < MIN_VOCAB_SIZE:
    raise UserError(f"tokenizer vocab_size={vocab_size} is too small; "
                    f"use at least {MIN_VOCAB_SIZE} (256 bytes + {len(SPECIAL_TOKENS)} specials)")
  hf = _byte_level(models.BPE())
  trainer = trainers.BpeTrainer(
      vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
  hf.train_from_iterator(texts, trainer)
  return Tokenizer(hf)


def _load_gpt2_files(directory: str) -> tokenizers.Tokenizer:
  vocab = os.path.join(directory, "vocab.json")
  merges = os.path.join(directory, "merges.txt")
  try:
    return _byte_level(models.BPE.from_file(vocab, merges))
  except Exception as e:  # `tokenizers` raises plain Exceptions on bad files.
    raise UserError(f"cannot read GPT-2 tokenizer files in {directory} ({e}); "
                    "pass valid vocab.json and merges.txt") from e


def _load_hf_tokenizer_json(path: str) -> tokenizers.Tokenizer:
  try:
    hf = tokenizers.Tokenizer.from_file(path)
  except Exception as e:  # `tokenizers` raises plain Exceptions on bad files.
    raise UserError(f"{path}: cannot parse it ({e}); pass a Hugging Face tokenizer.json or "
                    f"delete it to use vocab.json + merges.txt") from e
  if not isinstance(hf.model, models.BPE):
    raise UserError(f"{path}: a {type(hf.model).__name__} tokenizer, not GPT-2's byte-level "
                    f"BPE; use a GPT-2 directory")
  return hf


def load_gpt2_directory(directory: str) -> tuple[Tokenizer, int]:
  """(tokenizer, base size) of a Hugging Face GPT-2 directory, our special tokens added.

  Reads tokenizer.json when present (it carries any added tokens), else vocab.json +
  merges.txt. Tokens the directory already has keep their ids (GPT-2's <|endoftext|>,
  id 50256, is our EOS); the missing special tokens get the next ids, so ids
  [base size, vocab_size) are exactly the added ones.
  """
  tokenizer_json = os.path.join(directory, TOKENIZER_FILE)
  if os.path.exists(tokenizer_json):
    hf = _load_hf_tokenizer_json(tokenizer_json)
  elif os.path.exists(os.path.join(directory, "vocab.json")):
    hf = _load_gpt2_files(directory)
  else:
    raise UserError(f"{directory} has no {TOKENIZER_FILE} or vocab.json + merges.txt; copy "
                    f"the model's tokenizer files next to its config.json")
  base_size = hf.get_vocab_size(with_added_tokens=True)
  hf.add_special_tokens([tokenizers.AddedToken(t, special=True) for t in SPECIAL_TOKENS])
  return Tokenizer(hf), base_size


def load(path: str) -> Tokenizer:
  """Loads a tokenizer.json, or a directory with one of ours or a Hugging Face GPT-2
  tokenizer (`load_gpt2_directory`: tokenizer.json or vocab.json + merges.txt)."""
  if os.path.isdir(path):
    own_file = os.path.join(path, TOKENIZER_FILE)
    if os.path.exists(own_file) and PAD in _load_hf_tokenizer_json(own_file).get_vocab():
      return load(own_file)
    if os.path.exists(own_file) or os.path.exists(os.path.join(path, "vocab.json")):
      return load_gpt2_directory(path)[0]
    raise UserError(f"no {TOKENIZER_FILE} or vocab.json + merges.txt in directory {path}; "
                    "point the tokenizer path at one")
  if not os.path.exists(path):
    raise UserError(f"tokenizer file {path} does not exist; fix the tokenizer path")
  try:
    hf = tokenizers.Tokenizer.from_file(path)
  except Exception as e:  # `tokenizers` raises plain Exceptions on bad files.
    raise UserError(f"cannot parse tokenizer file {path} ({e}); "
                    "pass a tokenizer.json written by rlhf_jax or HF tokenizers") from e
  return Tokenizer(hf)


def for_stage(tokenizer_cfg, workdir: str, init_from: str,
              texts_fn: Callable[[], Iterable[str]]) -> Tokenizer:
  """The tokenizer a stage uses, saved as workdir/tokenizer.json.

  Several processes: process 0 makes and writes it, the others wait for it and read the
  file, so that every process tokenizes alike.
  """
  # pylint: disable-next=g-import-not-at-top  (the rest of this module needs no JAX)
  import jax
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  own_path = os.path.join(workdir, TOKENIZER_FILE)
  if jax.process_index() == 0:
    tokenizer = _make_for_stage(tokenizer_cfg, own_path, init_from, texts_fn)
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(f"rlhf_jax.tokenizer.for_stage {own_path}")
  return tokenizer if jax.process_index() == 0 else load(own_path)


def _make_for_stage(tokenizer_cfg, own_path: str, init_from: str,
                    texts_fn: Callable[[], Iterable[str]]) -> Tokenizer:
  # Resume order:
  # 1. workdir/tokenizer.json exists → reuse it (a resumed run must tokenize alike);
  # 2. else init_from is set → the previous stage's init_from/tokenizer.json, or a
  #    Hugging Face GPT-2 directory's tokenizer plus our special tokens;
  # 3. else tokenizer_cfg.path is set → load that file or GPT-2 directory;
  # 4. else train a BPE with tokenizer_cfg.vocab_size on texts_fn().
  if os.path.exists(own_path):
    return load(own_path)
  from rlhf_jax import hf  # pylint: disable=g-import-not-at-top  (hf imports this module)
  if init_from and hf.is_hf_directory(init_from):
    tokenizer = load_gpt2_directory(init_from)[0]
  elif init_from:
    inherited_path = os.path.join(init_from, TOKENIZER_FILE)
    if not os.path.exists(inherited_path):
      raise UserError(f"init_from={init_from} has no {TOKENIZER_FILE}; "
                      "point init_from at a finished stage's workdir")
    tokenizer = load(inherited_path)
  elif tokenizer_cfg.path:
    tokenizer = load(tokenizer_cfg.path)
  else:
    tokenizer = train_bpe(texts_fn(), tokenizer_cfg.vocab_size)
  tokenizer.save(own_path)
  return tokenizer
