"""Hugging Face GPT-2 directories: our GPT's weights, shape and tokenizer from theirs, and back.

A directory is a Hugging Face one when its config.json names a `model_type` (our
workdirs' config.json never does) and it has no checkpoints/. It must be GPT-2:
`model_type` "gpt2" (the gpt2 … gpt2-xl family, or any GPT2LMHeadModel of the same
architecture: tanh-GELU, LayerNorm eps 1e-5, MLP width 4D, tied LM head). It holds

  config.json                  n_layer, n_head, n_embd, n_positions, vocab_size
  model.safetensors            (or a sharded model.safetensors.index.json, or
                               pytorch_model.bin, read only when torch is installed)
  tokenizer.json, or vocab.json + merges.txt

and is only read. `init_from` = such a directory works for every stage
(`resolve_config` takes the model's shape from config.json; `restore_params` is the
warm start; the tokenizer comes from `tokenizer.load_gpt2_directory`).

Names, HF → ours (HF's Conv1D weights are stored (in, out), like our kernels, so each
tensor is only reshaped: c_attn's 3D columns are q | k | v, each head after head):

  wte.weight [V_hf, D]            wte/embedding [V_pad, D]   (rows: `embedding_rows`)
  wpe.weight [max_len, D]         wpe/embedding
  h.i.ln_1.{weight, bias}         h_i/ln_1/{scale, bias}      (ln_2, ln_f alike)
  h.i.attn.c_attn.weight [D, 3D]  h_i/attn/qkv/kernel [D, 3, H, K]  (bias [3D] → [3, H, K])
  h.i.attn.c_proj.weight [D, D]   h_i/attn/out/kernel [H, K, D]
  h.i.mlp.c_fc.weight [D, 4D]     h_i/mlp/fc/kernel           (c_proj → mlp/proj)

Keys may carry the `transformer.` prefix; the `attn.bias` / `attn.masked_bias`
buffers are skipped, and an `lm_head.weight` must equal wte (tied).
Dimensions: V vocabulary, D embed, H heads, K head dim, L layers.
"""
import json
import os
from typing import Callable, NamedTuple

import jax
import numpy as np
from safetensors import safe_open

from rlhf_jax import tokenizer as tokenizer_lib
from rlhf_jax.errors import UserError
from rlhf_jax.models import gpt

CONFIG_FILE = "config.json"
SAFETENSORS_FILE = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
TORCH_FILE = "pytorch_model.bin"
_TANH_GELUS = ("gelu_new", "gelu_pytorch_tanh", "gelu_fast")  # one function, three names
_BUFFERS = ("attn.bias", "attn.masked_bias")  # causal-mask buffers of old checkpoints
_NUMPY_DTYPES = ("F64", "F32", "F16")

# Per-layer tensors, HF suffix → our suffix.
_LAYER_NAMES = {
    "ln_1.weight": "ln_1/scale", "ln_1.bias": "ln_1/bias",
    "attn.c_attn.weight": "attn/qkv/kernel", "attn.c_attn.bias": "attn/qkv/bias",
    "attn.c_proj.weight": "attn/out/kernel", "attn.c_proj.bias": "attn/out/bias",
    "ln_2.weight": "ln_2/scale", "ln_2.bias": "ln_2/bias",
    "mlp.c_fc.weight": "mlp/fc/kernel", "mlp.c_fc.bias": "mlp/fc/bias",
    "mlp.c_proj.weight": "mlp/proj/kernel", "mlp.c_proj.bias": "mlp/proj/bias",
}
_TOP_NAMES = {"wte.weight": "wte/embedding", "wpe.weight": "wpe/embedding",
              "ln_f.weight": "ln_f/scale", "ln_f.bias": "ln_f/bias"}


class Spec(NamedTuple):
  """The shape of a GPT-2 as its config.json states it."""
  num_layers: int
  num_heads: int
  embed_dim: int
  max_len: int
  vocab_size: int   # rows of wte


def is_hf_directory(path: str) -> bool:
  """Whether `path` is a Hugging Face model directory (not one of our workdirs)."""
  config_path = os.path.join(path, CONFIG_FILE)
  if not os.path.isfile(config_path) or os.path.isdir(os.path.join(path, "checkpoints")):
    return False
  try:
    with open(config_path, encoding="utf-8") as f:
      config = json.load(f)
  except (OSError, ValueError):
    return False
  return isinstance(config, dict) and ("model_type" in config or "architectures" in config)


def read_spec(directory: str) -> Spec:
  """The GPT-2 shape of a directory's config.json; UserError when it is not our GPT-2."""
  path = os.path.join(directory, CONFIG_FILE)
  try:
    with open(path, encoding="utf-8") as f:
      config = json.load(f)
  except (OSError, ValueError) as e:
    raise UserError(f"{path}: cannot read it ({e}); pass a Hugging Face GPT-2 directory") from None
  def fail(problem):
    raise UserError(f"{path}: {problem}; init_from takes a workdir of ours or a Hugging Face "
                    f"GPT-2 directory (model_type 'gpt2', GPT2LMHeadModel)")
  if config.get("model_type") != "gpt2":
    fail(f"model_type {config.get('model_type')!r} is not GPT-2 "
         f"(architectures {config.get('architectures')})")
  try:
    spec = Spec(*(int(config[k]) for k in ("n_layer", "n_head", "n_embd", "n_positions",
                                           "vocab_size")))
  except (KeyError, TypeError, ValueError) as e:
    fail(f"missing or non-integer {e}")
  if spec.embed_dim % spec.num_heads:
    fail(f"n_embd={spec.embed_dim} is not divisible by n_head={spec.num_heads}")
  checks = (
      ("activation_function", config.get("activation_function", "gelu_new") in _TANH_GELUS,
       "our MLP uses the tanh GELU"),
      ("layer_norm_epsilon", abs(config.get("layer_norm_epsilon", 1e-5) - 1e-5) < 1e-12,
       "our LayerNorm uses 1e-5"),
      ("n_inner", config.get("n_inner") in (None, 4 * spec.embed_dim),
       "our MLP is 4 x n_embd wide"),
      ("scale_attn_weights", config.get("scale_attn_weights", True), "we scale by 1/sqrt(K)"),
      ("scale_attn_by_inverse_layer_idx", not config.get("scale_attn_by_inverse_layer_idx"),
       "we do not"),
      ("add_cross_attention", not config.get("add_cross_attention"), "ours is decoder-only"),
      ("tie_word_embeddings", config.get("tie_word_embeddings", True), "our LM head is wte"),
  )
  for key, ok, why in checks:
    if not ok:
      fail(f"{key}={config.get(key)!r} is a different architecture ({why})")
  return spec


def hf_shapes(spec: Spec) -> dict[str, tuple]:
  """HF tensor name (no prefix) → the shape `spec` implies."""
  d = spec.embed_dim
  shapes = {"wte.weight": (spec.vocab_size, d), "wpe.weight": (spec.max_len, d),
            "ln_f.weight": (d,), "ln_f.bias": (d,)}
  layer = {"ln_1.weight": (d,), "ln_1.bias": (d,), "ln_2.weight": (d,), "ln_2.bias": (d,),
           "attn.c_attn.weight": (d, 3 * d), "attn.c_attn.bias": (3 * d,),
           "attn.c_proj.weight": (d, d), "attn.c_proj.bias": (d,),
           "mlp.c_fc.weight": (d, 4 * d), "mlp.c_fc.bias": (4 * d,),
           "mlp.c_proj.weight": (4 * d, d), "mlp.c_proj.bias": (d,)}
  for i in range(spec.num_layers):
    shapes.update({f"h.{i}.{name}": shape for name, shape in layer.items()})
  return shapes


def our_name(hf_name: str) -> str:
  """'h.3.attn.c_attn.weight' → 'h_3/attn/qkv/kernel' (names of `hf_shapes`)."""
  if hf_name in _TOP_NAMES:
    return _TOP_NAMES[hf_name]
  _, layer, suffix = hf_name.split(".", 2)
  return f"h_{layer}/{_LAYER_NAMES[suffix]}"


class Weights(NamedTuple):
  """A directory's tensors by their key in the file: shape, dtype, `read(key)` → float32."""
  path: str           # the file named in messages
  shapes: dict
  dtypes: dict        # safetensors names ("F32", "BF16", ...)
  read: Callable[[str], np.ndarray]


def _safetensors_weights(directory: str, files: list[str]) -> Weights:
  located, shapes, dtypes = {}, {}, {}
  for file in files:
    path = os.path.join(directory, file)
    try:
      with safe_open(path, framework="numpy") as f:
        for key in f.keys():
          tensor = f.get_slice(key)
          located[key], shapes[key] = path, tuple(tensor.get_shape())
          dtypes[key] = tensor.get_dtype()
    except (OSError, ValueError, RuntimeError) as e:  # missing shard, bad header
      raise UserError(f"{path}: cannot read it ({str(e).splitlines()[0]}); "
                      f"download the weights again") from None
  def read(key):
    with safe_open(located[key], framework="numpy") as f:
      return f.get_tensor(key).astype(np.float32)
  return Weights(os.path.join(directory, files[0]), shapes, dtypes, read)


def _torch_weights(path: str) -> Weights:
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise UserError(f"{path}: reading pytorch_model.bin needs torch; install it, or convert "
                    f"the weights to model.safetensors") from None
  try:
    state = torch.load(path, map_location="cpu", weights_only=True)
  except Exception as e:  # pylint: disable=broad-except  (torch raises many types)
    raise UserError(f"{path}: cannot read it ({str(e).splitlines()[0]})") from None
  arrays = {k: v.float().numpy() for k, v in state.items()}
  return Weights(path, {k: tuple(v.shape) for k, v in arrays.items()},
                 dict.fromkeys(arrays, "F32"), arrays.__getitem__)


def open_weights(directory: str) -> Weights:
  """The weight file(s) of a directory: safetensors first, else pytorch_model.bin."""
  if os.path.exists(os.path.join(directory, SAFETENSORS_FILE)):
    return _safetensors_weights(directory, [SAFETENSORS_FILE])
  index = os.path.join(directory, SAFETENSORS_INDEX)
  if os.path.exists(index):
    try:
      with open(index, encoding="utf-8") as f:
        files = sorted(set(json.load(f)["weight_map"].values()))
    except (OSError, ValueError, KeyError, AttributeError) as e:
      raise UserError(f"{index}: not a safetensors index ({e})") from None
    return _safetensors_weights(directory, files)
  if os.path.exists(os.path.join(directory, TORCH_FILE)):
    return _torch_weights(os.path.join(directory, TORCH_FILE))
  raise UserError(f"{os.path.join(directory, SAFETENSORS_FILE)} does not exist (nor "
                  f"{TORCH_FILE}); download the model's weights into {directory}")


def checked_weights(directory: str, spec: Spec) -> tuple[Weights, dict[str, str]]:
  """(weights, HF name → key in the file): every tensor present, none unknown, shapes right."""
  weights = open_weights(directory)
  keys = {}
  for key in weights.shapes:
    name = key.removeprefix("transformer.")
    if name.split(".", 2)[-1] not in _BUFFERS and name != "lm_head.weight":
      keys[name] = key
  expected = hf_shapes(spec)
  problems = []
  def some(names):
    return ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
  missing = sorted(set(expected) - set(keys))
  if missing:
    problems.append(f"missing {len(missing)} tensors ({some(missing)})")
  unknown = sorted(set(keys) - set(expected))
  if unknown:
    problems.append(f"tensors GPT-2 does not have ({some(unknown)})")
  for name in sorted(set(expected) & set(keys)):
    key = keys[name]
    if weights.shapes[key] != expected[name]:
      problems.append(f"{key} has shape {weights.shapes[key]} but config.json implies "
                      f"{expected[name]}")
      break
    if weights.dtypes[key] not in _NUMPY_DTYPES:
      problems.append(f"{key} is stored as {weights.dtypes[key]}, which NumPy cannot read "
                      f"(save the model in float32 or float16)")
      break
  if problems:
    raise UserError(f"{weights.path}: {'; '.join(problems)}; use a GPT-2 directory whose "
                    f"weights match its config.json")
  head = "lm_head.weight" if "lm_head.weight" in weights.shapes else None
  if head and not np.array_equal(weights.read(head), weights.read(keys["wte.weight"])):
    raise UserError(f"{weights.path}: lm_head.weight differs from wte.weight; our GPT ties "
                    f"them, so untied GPT-2 variants cannot be imported")
  return weights, keys


def embedding_rows(wte_VxD, vocab_size: int, base_size: int, padded_vocab: int) -> np.ndarray:
  """Our wte [padded_vocab, D] from HF's [V_hf, D] for a tokenizer of `vocab_size` ids.

  Ids < base_size (the directory's tokenizer) keep their rows; the special tokens we
  added (ids base_size … vocab_size - 1) start as the mean of those rows, so their
  logits begin at the average token's; padding rows (never a real id) are 0. HF rows
  beyond the tokenizer (a padded V_hf) are dropped.
  """
  out = np.zeros((padded_vocab, wte_VxD.shape[1]), np.float32)
  out[:base_size] = wte_VxD[:base_size]
  out[base_size:vocab_size] = wte_VxD[:base_size].mean(axis=0, dtype=np.float64)
  return out


def _tokenizer(directory: str, spec: Spec):
  tok, base_size = tokenizer_lib.load_gpt2_directory(directory)
  if base_size > spec.vocab_size:
    raise UserError(f"{directory}: the tokenizer has {base_size} tokens but config.json's "
                    f"vocab_size={spec.vocab_size} rows; use the model's own tokenizer files")
  return tok, base_size


def resolve_config(config):
  """`config` with `model`'s shape taken from init_from's config.json when that is a
  Hugging Face GPT-2 directory (else unchanged). Checks the tokenizer and every tensor's
  name, shape and dtype from the file headers, so a bad directory fails before training.

  The resolved config (written to the workdir's config.json) states the shape, so later
  loads need no directory. A model field set to another value is a UserError.
  """
  if not config.init_from or not is_hf_directory(config.init_from):
    return config
  spec = read_spec(config.init_from)
  _tokenizer(config.init_from, spec)
  checked_weights(config.init_from, spec)
  config = config.copy_and_resolve_references()
  names = {"num_layers": "n_layer", "num_heads": "n_head", "embed_dim": "n_embd",
           "max_len": "n_positions"}
  for key, hf_key in names.items():
    value = getattr(spec, key)
    if config.model[key] and config.model[key] != value:
      raise UserError(f"model.{key}={config.model[key]} but init_from={config.init_from} has "
                      f"{hf_key}={value} in its config.json; drop the model.{key} setting")
    config.model[key] = value
  return config


def param_name(path) -> str:
  """A params tree path as a name, e.g. h_0/attn/qkv/kernel (an nn.Partitioned box's
  trailing /value dropped)."""
  keys = [str(getattr(k, "key", getattr(k, "name", k))) for k in path]
  return "/".join(keys[:-1] if keys[-1] == "value" else keys)


def restore_params(directory: str, abstract_params, shardings):
  """Our GPT params from a Hugging Face GPT-2 directory, each array built straight in its
  sharding (`abstract_params`/`shardings`: trees of the GPT params, boxed or not)."""
  spec = read_spec(directory)
  tok, base_size = _tokenizer(directory, spec)
  weights, keys = checked_weights(directory, spec)
  by_our_name = {our_name(name): name for name in keys}

  def restore(path, abstract, sharding):
    name = param_name(path)
    if name not in by_our_name:
      raise UserError(f"init_from={directory}: our model has {name}, which GPT-2 lacks; "
                      f"warm-start a GPT-2 shaped model")
    array = weights.read(keys[by_our_name[name]])
    if name == "wte/embedding":
      array = embedding_rows(array, tok.vocab_size, base_size, abstract.shape[0])
    if array.size != np.prod(abstract.shape):
      raise UserError(f"init_from={directory}: {by_our_name[name]} of shape {array.shape} "
                      f"does not fit our {name} {abstract.shape}; drop model overrides")
    array = array.reshape(abstract.shape).astype(abstract.dtype)
    return jax.make_array_from_callback(abstract.shape, sharding, lambda index: array[index])

  return jax.tree_util.tree_map_with_path(restore, abstract_params, shardings)


def params_shapes(directory: str) -> dict[str, tuple]:
  """Our name → (shape, dtype name) of the GPT params a directory restores into."""
  spec = read_spec(directory)
  tok, _ = _tokenizer(directory, spec)
  checked_weights(directory, spec)
  padded = gpt.GPTConfig(vocab_size=tok.vocab_size).padded_vocab
  return {name: (shape, "float32") for name, shape in gpt_param_shapes(spec, padded).items()}


def gpt_param_shapes(spec: Spec, padded_vocab: int) -> dict[str, tuple]:
  """Our name → shape of a GPT of `spec` with `padded_vocab` embedding rows."""
  h, d = spec.num_heads, spec.embed_dim
  k = d // h
  ours = {"attn/qkv/kernel": (d, 3, h, k), "attn/qkv/bias": (3, h, k),
          "attn/out/kernel": (h, k, d)}
  shapes = {}
  for name, shape in hf_shapes(spec).items():
    mine = our_name(name)
    shapes[mine] = ours.get(mine.split("/", 1)[-1], shape)
  shapes["wte/embedding"] = (padded_vocab, d)
  return shapes


def hf_tensors(params, spec: Spec, vocab_size: int) -> dict[str, np.ndarray]:
  """HF tensors ('transformer.'-prefixed, as GPT2LMHeadModel saves them) of our GPT params
  (plain arrays); wte keeps the tokenizer's `vocab_size` rows (padding rows dropped)."""
  flat = {param_name(path): np.asarray(leaf, np.float32) for path, leaf
          in jax.tree_util.tree_flatten_with_path(params)[0]}
  out = {}
  for name, shape in hf_shapes(spec._replace(vocab_size=vocab_size)).items():
    array = flat[our_name(name)]
    if name == "wte.weight":
      array = array[:vocab_size]
    out[f"transformer.{name}"] = np.ascontiguousarray(array.reshape(shape))
  return out


def spec_of(cfg: gpt.GPTConfig) -> Spec:
  return Spec(cfg.num_layers, cfg.num_heads, cfg.embed_dim, cfg.max_len, cfg.vocab_size)
