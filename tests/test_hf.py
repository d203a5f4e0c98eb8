"""Hugging Face GPT-2 interop: import a GPT2LMHeadModel directory, export ours back.

Equivalence is checked against `transformers` (CPU torch) on tiny random models saved
locally: logits to 1e-4 in fp32, greedy generation, tokenizer ids, chat template.
"""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlhf_jax import configs, export, hf, sampling, tokenizer as tokenizer_lib
from rlhf_jax.models import gpt

torch = pytest.importorskip("torch", reason="the HF equivalence tests need torch (CPU)")
transformers = pytest.importorskip("transformers", reason="pip install -e '.[hf]'")

EOS = tokenizer_lib.EOS
TEXTS = ["Hello world! It's a test, isn't it? We'll see; they've done it.",
         "Ünïcödé — naïve café, 日本語のテキスト, emoji 🙂 and ß.",
         "  leading spaces,\ttabs\t\tand\n\nnewlines   trailing   ",
         "numbers 12345 and 3.14159, code: def f(x): return x**2",
         "I'm you're he's she'd we'll they've don't CAN'T"]
TINY = dict(n_layer=2, n_embd=32, n_head=4, n_positions=64)
LOGITS_TOL = 1e-4


def write_gpt2_tokenizer_files(directory, vocab_size: int) -> int:
  """A byte-level BPE trained on TEXTS, saved as GPT-2's vocab.json + merges.txt with
  <|endoftext|> as its last id (as in GPT-2); returns that id."""
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers  # pylint: disable=g-import-not-at-top
  bpe = Tokenizer(models.BPE())
  bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  bpe.decoder = decoders.ByteLevel()
  bpe.train_from_iterator(TEXTS * 20, trainers.BpeTrainer(
      vocab_size=vocab_size, special_tokens=[EOS], show_progress=False,
      initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
  bpe.model.save(str(directory))
  path = os.path.join(directory, "vocab.json")
  with open(path, encoding="utf-8") as f:
    vocab = json.load(f)
  order = sorted((t for t in vocab if t != EOS), key=vocab.get) + [EOS]
  with open(path, "w", encoding="utf-8") as f:
    json.dump({token: i for i, token in enumerate(order)}, f, ensure_ascii=False)
  return len(order) - 1


def write_gpt2_directory(directory, seed: int = 0, safe: bool = True):
  """A random tiny GPT2LMHeadModel and its tokenizer files in `directory`; the model."""
  os.makedirs(directory, exist_ok=True)
  eos = write_gpt2_tokenizer_files(directory, 300)
  config = transformers.GPT2Config(vocab_size=eos + 1, bos_token_id=eos, eos_token_id=eos,
                                   **TINY)
  torch.manual_seed(seed)
  model = transformers.GPT2LMHeadModel(config).eval()
  model.save_pretrained(str(directory), safe_serialization=safe)
  return model


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
  directory = tmp_path_factory.mktemp("hf") / "tiny-gpt2"
  return str(directory), write_gpt2_directory(directory)


def import_gpt2(directory):
  """(model, params, tokenizer) imported the way a stage does it: resolve_config fixes the
  shape, restore_params the weights (one device)."""
  config = configs.base_config()
  config.init_from = directory
  config = hf.resolve_config(config)
  tok, _ = tokenizer_lib.load_gpt2_directory(directory)
  model = gpt.GPT(gpt.config_from(config.model, tok.vocab_size))
  abstract = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 8), jnp.int32))
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  params = hf.restore_params(directory, abstract["params"],
                             jax.tree.map(lambda _: device, abstract["params"]))
  return model, params, tok


def our_logits(model, params, ids):
  logits, _ = model.apply({"params": params}, jnp.asarray([ids], jnp.int32))
  return np.asarray(logits[0])


def torch_logits(model, ids):
  with torch.no_grad():
    return model(torch.tensor([ids])).logits[0].numpy()


def test_import_logits_match_transformers(hf_dir):
  directory, reference = hf_dir
  model, params, tok = import_gpt2(directory)
  assert model.cfg.num_layers == 2 and model.cfg.embed_dim == 32 and model.cfg.max_len == 64
  ids = tok.encode(TEXTS[0] + TEXTS[1])[:64]
  theirs = torch_logits(reference, ids)
  ours = our_logits(model, params, ids)
  diff = np.abs(ours[:, :300] - theirs).max()
  print(f"import: max |logit diff| = {diff:.2e}")
  assert diff < LOGITS_TOL
