"""Hugging Face GPT-2 interop: import a GPT2LMHeadModel directory, export ours back.

Equivalence is checked against `transformers` (CPU torch) on tiny random models saved
locally: logits to 1e-4 in fp32, greedy generation, tokenizer ids, chat template.
"""
import json
import os
import shutil

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file
import tokenizers
from tokenizers import decoders, models, pre_tokenizers, trainers

from rlhf_jax import configs, export, hf, policy as policy_lib, sampling, sharding, train
from rlhf_jax import tokenizer as tokenizer_lib
from rlhf_jax.models import gpt, heads
from rlhf_jax.tasks import reward

torch = pytest.importorskip("torch", reason="the HF equivalence tests need torch (CPU)")
transformers = pytest.importorskip("transformers", reason="pip install -e '.[hf]'")

EOS = tokenizer_lib.EOS
TEXTS = ["Hello world! It's a test, isn't it? We'll see; they've done it.",
         "Ünïcödé — naïve café, 日本語のテキスト, emoji 🙂 and ß.",
         "  leading spaces,\ttabs\t\tand\n\nnewlines   trailing   ",
         "numbers 12345 and 3.14159, code: def f(x): return x**2",
         "I'm you're he's she'd we'll they've don't CAN'T"]
# initializer_range 0.2 (not 0.02): peaked logits, so greedy decoding does not repeat one token.
TINY = dict(n_layer=2, n_embd=32, n_head=4, n_positions=64, initializer_range=0.2)
LOGITS_TOL = 1e-4
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_gpt2_tokenizer_files(directory, vocab_size: int) -> int:
  """A byte-level BPE trained on TEXTS, saved as GPT-2's vocab.json + merges.txt with
  <|endoftext|> as its last id (as in GPT-2); returns that id."""
  bpe = tokenizers.Tokenizer(models.BPE())
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
  """A random tiny GPT2LMHeadModel and its tokenizer files in `directory`; the model.
  `safe=False` stores the weights as pytorch_model.bin (lm_head.weight included)."""
  os.makedirs(directory, exist_ok=True)
  eos = write_gpt2_tokenizer_files(directory, 300)
  config = transformers.GPT2Config(vocab_size=eos + 1, bos_token_id=eos, eos_token_id=eos,
                                   **TINY)
  torch.manual_seed(seed)
  model = transformers.GPT2LMHeadModel(config).eval()
  model.save_pretrained(str(directory))
  if not safe:
    torch.save(model.state_dict(), os.path.join(directory, hf.TORCH_FILE))
    os.remove(os.path.join(directory, hf.SAFETENSORS_FILE))
  return model


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
  directory = tmp_path_factory.mktemp("hf") / "tiny-gpt2"
  return str(directory), write_gpt2_directory(directory)


def import_gpt2(directory, fsdp: int = 1):
  """(model, params, tokenizer) imported the way a stage does it: resolve_config fixes the
  shape, restore_params the weights into the mesh's shardings (data x fsdp = 8 devices)."""
  config = configs.base_config()
  configs.override(config, init_from=directory, **{"mesh.fsdp": fsdp})
  config = hf.resolve_config(config)
  tok, _ = tokenizer_lib.load_gpt2_directory(directory)
  model = gpt.GPT(gpt.config_from(config.model, tok.vocab_size))
  abstract = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 8), jnp.int32))
  mesh = sharding.make_mesh(config.mesh)
  shardings = sharding.logical_shardings(abstract["params"], mesh, sharding.rules(config.mesh))
  params = hf.restore_params(directory, nn.unbox(abstract["params"]), shardings)
  return model, params, tok


def our_logits(model, params, ids):
  logits, _ = model.apply({"params": params}, jnp.asarray([ids], jnp.int32))
  return np.asarray(logits[0])


def torch_logits(model, ids):
  with torch.no_grad():
    return model(torch.tensor([ids])).logits[0].numpy()


def test_import_logits_match_transformers(hf_dir):
  directory, reference = hf_dir
  model, params, tok = import_gpt2(directory, fsdp=2)
  assert model.cfg.num_layers == 2 and model.cfg.embed_dim == 32 and model.cfg.max_len == 64
  assert not params["wte"]["embedding"].sharding.is_fully_replicated  # FSDP shards
  ids = tok.encode(TEXTS[0] + TEXTS[1])[:64]
  theirs = torch_logits(reference, ids)
  ours = our_logits(model, params, ids)
  diff = np.abs(ours[:, :theirs.shape[1]] - theirs).max()
  print(f"import: max |logit diff| = {diff:.2e}")
  assert diff < LOGITS_TOL


def load_exported(out):
  model = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
  return model, transformers.AutoTokenizer.from_pretrained(out)


def test_export_round_trip_logits_generation_and_chat(hf_dir, tmp_path):
  directory, reference = hf_dir
  model, params, tok = import_gpt2(directory)
  out = str(tmp_path / "exported")
  os.makedirs(out)
  export.write_model(out, model.cfg, params, tok)
  export.write_tokenizer(out, tok, model.cfg.max_len)
  loaded, loaded_tok = load_exported(out)
  assert loaded.config.vocab_size == tok.vocab_size == reference.config.vocab_size + 4

  ids = tok.encode(TEXTS[2] + TEXTS[3])[:64]
  theirs = torch_logits(loaded, ids)
  ours = our_logits(model, params, ids)
  diff = np.abs(ours[:, :tok.vocab_size] - theirs).max()
  original = torch_logits(reference, ids)
  diff_original = np.abs(theirs[:, :original.shape[1]] - original).max()
  print(f"export: max |logit diff| = {diff:.2e} (ours), {diff_original:.2e} (the original)")
  assert diff < LOGITS_TOL and diff_original < LOGITS_TOL

  messages = [{"role": "system", "content": "Be brief."},
              {"role": "user", "content": "Hello, isn't it?"},
              {"role": "assistant", "content": "It's 🙂."},
              {"role": "user", "content": "  again\n"}]
  prompt = tok.encode_chat(messages, add_generation_prompt=True)[0]
  templated = loaded_tok.apply_chat_template(messages, add_generation_prompt=True,
                                             tokenize=True)
  assert list(getattr(templated, "input_ids", templated)) == prompt

  new_tokens = 24
  samples = sampling.sample(model, params, jnp.asarray([prompt]), jnp.ones((1, len(prompt))),
                            jax.random.key(0), max_new_tokens=new_tokens, eos_id=tok.eos_id,
                            pad_id=tok.pad_id, temperature=0.0)
  ours_ids = np.asarray(samples.tokens_BxN[0])[:int(samples.lengths_B[0])].tolist()
  with torch.no_grad():
    generated = loaded.generate(torch.tensor([prompt]), max_new_tokens=new_tokens,
                                do_sample=False, attention_mask=torch.ones(1, len(prompt)))
  theirs_ids = generated[0, len(prompt):].tolist()
  print(f"greedy: ours {ours_ids}\n        theirs {theirs_ids}")
  assert ours_ids == theirs_ids and len(set(ours_ids)) > 1


def test_tokenizer_encodes_like_gpt2_tokenizer(tmp_path):
  two_files = tmp_path / "two_files"
  two_files.mkdir()
  eos = write_gpt2_tokenizer_files(two_files, 700)
  reference = transformers.GPT2Tokenizer.from_pretrained(str(two_files))
  one_file = str(tmp_path / "tokenizer_json")
  reference.save_pretrained(one_file)
  for directory in (str(two_files), one_file):
    ours, base_size = tokenizer_lib.load_gpt2_directory(directory)
    assert tokenizer_lib.load(directory).fingerprint == ours.fingerprint  # tokenizer.path
    theirs = transformers.GPT2Tokenizer.from_pretrained(directory)
    assert base_size == len(theirs) == eos + 1 > 400
    for text in TEXTS + ["".join(TEXTS), " a", "a  b", "\u00a0x\u2028y"]:
      ids = ours.encode(text)
      assert ids == theirs.encode(text, add_special_tokens=False), (directory, text)
      assert ours.decode(ids) == text
    # Our special tokens follow GPT-2's vocabulary; GPT-2's <|endoftext|> is our EOS.
    assert ours.eos_id == theirs.convert_tokens_to_ids(EOS) == eos
    assert sorted([ours.pad_id, ours.system_id, ours.user_id, ours.assistant_id]) == [
        eos + 1, eos + 2, eos + 3, eos + 4]


def test_pytorch_bin_imports_like_safetensors(tmp_path):
  directory = str(tmp_path / "bin")
  reference = write_gpt2_directory(directory, seed=1, safe=False)
  assert os.path.exists(os.path.join(directory, hf.TORCH_FILE))
  assert not os.path.exists(os.path.join(directory, hf.SAFETENSORS_FILE))
  model, params, tok = import_gpt2(directory)
  ids = tok.encode(TEXTS[4])
  theirs = torch_logits(reference, ids)
  assert np.abs(our_logits(model, params, ids)[:, :theirs.shape[1]] - theirs).max() < LOGITS_TOL


def run_stage(experiment: str, init_from: str, workdir: str, data_path: str, **overrides):
  """A few steps of `experiment` ("file.py:variant") started from `init_from`."""
  file_name, variant = experiment.split(":")
  module = configs.experiment_module(os.path.join(REPO, "experiments", file_name))
  config = module.get_config(variant)
  configs.override(config, init_from=init_from, **{"data.path": data_path}, **overrides)
  train.run(config, workdir)
  return config


def read_tensor(directory, name):
  tensors = load_file(os.path.join(directory, hf.SAFETENSORS_FILE))
  return tensors.get(name, tensors.get(f"transformer.{name}"))


def test_sft_from_gpt2_directory_exports_to_transformers(hf_dir, tmp_path):
  from test_experiments import hh_like  # pylint: disable=g-import-not-at-top
  directory, _ = hf_dir
  workdir, out = str(tmp_path / "sft"), str(tmp_path / "sft_hf")
  # The :gpt2 variant at smoke size (its shape comes from the directory's config.json).
  run_stage("sft_hh.py:gpt2", directory, workdir, hh_like(tmp_path / "hh.jsonl.gz"),
            total_steps=3, eval_every=0, **{"data.seq_len": 64, "optim.warmup_steps": 1})
  with open(os.path.join(workdir, "config.json"), encoding="utf-8") as f:
    model_block = json.load(f)["model"]
  assert [model_block[k] for k in ("num_layers", "num_heads", "embed_dim", "max_len")] == [
      2, 4, 32, 64]
  assert export.main(["--workdir", workdir, "--out", out]) == 0

  # Warm-started: 3 Adam steps of lr ≤ 3e-5 move no weight far from GPT-2's N(0, 0.2).
  name = "h.0.attn.c_attn.weight"
  moved = np.abs(read_tensor(out, name) - read_tensor(directory, name)).max()
  assert 0 < moved < 1e-3, moved

  policy = policy_lib.load(workdir)
  loaded, loaded_tok = load_exported(out)
  messages = [{"role": "user", "content": "How do I bake bread?"},
              {"role": "assistant", "content": "Sure, here is how."}]
  ids = policy.tokenizer.encode_chat(messages)[0]
  assert loaded_tok.apply_chat_template(messages, tokenize=True, return_dict=False) == ids
  theirs = torch_logits(loaded, ids)
  diff = np.abs(our_logits(policy.model, policy.params, ids)[:, :theirs.shape[1]] - theirs).max()
  print(f"SFT export: max |logit diff| = {diff:.2e}")
  assert np.isfinite(theirs).all() and diff < LOGITS_TOL


def test_reward_model_from_gpt2_directory_exports_backbone_and_head(hf_dir, tmp_path):
  from test_experiments import hh_like  # pylint: disable=g-import-not-at-top
  directory, _ = hf_dir
  workdir, out = str(tmp_path / "rm"), str(tmp_path / "rm_hf")
  run_stage("rm_hh.py:smoke", directory, workdir, hh_like(tmp_path / "hh.jsonl.gz"),
            total_steps=2, eval_every=0)
  assert export.main(["--workdir", workdir, "--out", out]) == 0
  # The backbone was warm-started from GPT-2 (a fresh wpe, N(0, 0.01), would be ~0.6 off).
  moved = np.abs(read_tensor(out, "wpe.weight") - read_tensor(directory, "wpe.weight")).max()
  assert moved < 0.02, moved
  model, params, norm, tok = reward.load_reward_model(workdir)

  ids = tok.encode_chat([{"role": "user", "content": "How do I fix a bike?"},
                         {"role": "assistant", "content": "Sure, here is how."}])[0]
  values = model.apply({"params": params}, jnp.asarray([ids]))
  ours = float(norm.gain * heads.last_token_values(values, jnp.ones((1, len(ids))))[0]
               + norm.bias)
  with open(os.path.join(out, export.HEAD_CARD), encoding="utf-8") as f:
    card = json.load(f)
  head = load_file(os.path.join(out, card["weights"]))
  backbone = transformers.AutoModel.from_pretrained(out).eval()
  with torch.no_grad():
    h = backbone(torch.tensor([ids])).last_hidden_state[0, -1].numpy()
  theirs = card["gain"] * (h @ head["weight"] + head["bias"][0]) + card["offset"]
  print(f"reward: ours {ours:.6f}, from the export {theirs:.6f}")
  assert abs(ours - theirs) < 1e-4


def write_sparse_safetensors(path, shapes: dict) -> None:
  """A float32 safetensors file of `shapes` whose data is a hole in the file (reads as 0):
  full-size headers at no disk or memory cost."""
  header, offset = {"__metadata__": {"format": "pt"}}, 0
  for name, shape in shapes.items():
    size = 4 * int(np.prod(shape))
    header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + size]}
    offset += size
  encoded = json.dumps(header).encode()
  encoded += b" " * (-len(encoded) % 8)
  with open(path, "wb") as f:
    f.write(len(encoded).to_bytes(8, "little") + encoded)
    f.truncate(8 + len(encoded) + offset)


def write_gpt2_sized_tokenizer(directory) -> None:
  """GPT-2's vocabulary size (50,257): 256 bytes, 50,000 merges of two bytes, <|endoftext|>."""
  alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
  pairs = [(a, b) for a in alphabet for b in alphabet][:50_000]
  tokens = alphabet + [a + b for a, b in pairs] + [EOS]
  with open(os.path.join(directory, "vocab.json"), "w", encoding="utf-8") as f:
    json.dump({token: i for i, token in enumerate(tokens)}, f, ensure_ascii=False)
  with open(os.path.join(directory, "merges.txt"), "w", encoding="utf-8") as f:
    f.write("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in pairs))


def test_full_size_gpt2_imports_by_shape(tmp_path):
  directory = str(tmp_path / "gpt2")
  os.makedirs(directory)
  transformers.GPT2Config().to_json_file(os.path.join(directory, hf.CONFIG_FILE))
  spec = hf.read_spec(directory)
  shapes = hf.hf_shapes(spec)  # the Hub's gpt2 keys: no prefix, attention-mask buffers
  shapes.update({f"h.{i}.attn.bias": (1, 1, 1024, 1024) for i in range(spec.num_layers)})
  write_sparse_safetensors(os.path.join(directory, hf.SAFETENSORS_FILE), shapes)
  write_gpt2_sized_tokenizer(directory)

  config = configs.base_config()
  config.init_from = directory
  config = hf.resolve_config(config)
  tok, base_size = tokenizer_lib.load_gpt2_directory(directory)
  assert (base_size, tok.vocab_size, tok.eos_id) == (50257, 50261, 50256)
  cfg = gpt.config_from(config.model, tok.vocab_size)
  assert (cfg.num_layers, cfg.num_heads, cfg.embed_dim, cfg.max_len) == (12, 12, 768, 1024)
  abstract = jax.eval_shape(gpt.GPT(cfg).init, jax.random.key(0), jnp.zeros((1, 8), jnp.int32))
  leaves = jax.tree_util.tree_flatten_with_path(abstract["params"])[0]
  ours = {hf.param_name(path): (leaf.shape, str(leaf.dtype)) for path, leaf in leaves}
  assert hf.params_shapes(directory) == ours  # what restore_params fills, leaf for leaf
  num_params = gpt.count_params(abstract["params"])
  added_rows, padding_rows = 4, cfg.padded_vocab - tok.vocab_size  # PAD + 3 role markers; 43
  assert num_params - padding_rows * 768 == 124_439_808 + added_rows * 768 == 124_442_880
  assert num_params == 124_475_904


def _copy_directory(source, target, skip=()):
  shutil.copytree(source, target, ignore=lambda _, names: [n for n in names if n in skip])
  return str(target)


def _non_gpt2(directory, tmp_path):
  target = _copy_directory(directory, tmp_path / "llama")
  with open(os.path.join(target, hf.CONFIG_FILE), "w", encoding="utf-8") as f:
    json.dump({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}, f)
  return target, hf.CONFIG_FILE, "model_type 'llama' is not GPT-2"


def _missing_weights(directory, tmp_path):
  target = _copy_directory(directory, tmp_path / "no_weights", skip=(hf.SAFETENSORS_FILE,))
  return target, hf.SAFETENSORS_FILE, "does not exist"


def _narrow_wte(directory, tmp_path):
  target = _copy_directory(directory, tmp_path / "narrow_wte")
  path = os.path.join(target, hf.SAFETENSORS_FILE)
  tensors = load_file(path)
  tensors["transformer.wte.weight"] = tensors["transformer.wte.weight"][:, :31].copy()
  save_file(tensors, path)
  return target, hf.SAFETENSORS_FILE, "transformer.wte.weight has shape"


@pytest.mark.parametrize("make_broken", [_non_gpt2, _missing_weights, _narrow_wte],
                         ids=lambda f: f.__name__[1:])
def test_broken_directory_is_one_error_line(hf_dir, tmp_path, make_broken):
  from test_cli import assert_one_line_error, run_main  # pylint: disable=g-import-not-at-top
  broken, file_name, problem = make_broken(hf_dir[0], tmp_path)
  before = sorted(os.listdir(broken))
  result = run_main("--config=experiments/sft_hh.py:smoke", f"--workdir={tmp_path / 'run'}",
                    f"--config.init_from={broken}")
  assert_one_line_error(result, os.path.join(broken, file_name), problem)
  assert sorted(os.listdir(broken)) == before  # the source directory is only read


def test_model_setting_that_contradicts_config_json_is_an_error(hf_dir):
  config = configs.base_config()
  configs.override(config, init_from=hf_dir[0], **{"model.num_layers": 4})
  with pytest.raises(hf.UserError, match="model.num_layers=4 but .* n_layer=2"):
    hf.resolve_config(config)
  configs.override(config, **{"model.num_layers": 2})  # the same value is fine
  assert hf.resolve_config(config).model.embed_dim == 32 and config.model.embed_dim == 0


def test_export_refuses_a_missing_workdir_or_a_used_out(tmp_path, capsys):
  (tmp_path / "used").mkdir()
  (tmp_path / "used" / "file").write_text("x")
  for args in (["--workdir", str(tmp_path / "nope"), "--out", str(tmp_path / "out")],
               ["--workdir", str(tmp_path), "--out", str(tmp_path / "used")]):
    assert export.main(args) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 1 and errors[0].startswith("error: "), errors
  assert not os.path.exists(tmp_path / "out")
