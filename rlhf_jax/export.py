"""Export a workdir's model as a Hugging Face GPT-2 directory, for standard serving tools.

  python -m rlhf_jax.export --workdir DIR --out HF_DIR

HF_DIR (new or empty) then holds what `transformers.AutoModelForCausalLM.from_pretrained`
and `AutoTokenizer.from_pretrained` load as is:

  model.safetensors              GPT2LMHeadModel weights, float32; the LM head is tied to
                                 wte, which keeps the tokenizer's rows (no padding rows)
  config.json                    GPT-2 config: the workdir's shape, vocab_size = tokenizer's
  generation_config.json         EOS ends generation; PAD pads
  tokenizer.json                 our byte-level BPE with its special tokens
  vocab.json, merges.txt         the same BPE in GPT-2's two-file form
  tokenizer_config.json          EOS/PAD/role markers and `chat_template`, a Jinja form of
                                 `Tokenizer.encode_chat` (apply_chat_template gives the
                                 ids our chat template gives)
  special_tokens_map.json

A reward-model workdir exports its backbone as above plus its head:

  reward_head.safetensors        weight [D], bias [1]
  reward_head.json               the formula: reward = gain · (h · weight + bias) + offset,
                                 h = the final-LayerNorm hidden state (transformers:
                                 GPT2Model's last_hidden_state) at the response's last
                                 token, the EOS that closes it; gain/offset normalise
                                 rewards of reference responses to mean 0

Differences from our own tokenizer: HF tokenizers turn special-token text inside user
content ("<|user|>") into that special token, ours encodes it as plain bytes.
"""
import argparse
import json
import os
import sys

import flax.linen as nn
import jax
import numpy as np
from safetensors.numpy import save_file

from rlhf_jax import hf, policy as policy_lib, sample, tokenizer as tokenizer_lib
from rlhf_jax.errors import ArgumentParser, UserError

HEAD_WEIGHTS = "reward_head.safetensors"
HEAD_CARD = "reward_head.json"


def chat_template() -> str:
  """Jinja twin of `Tokenizer.encode_chat`: role marker, content, and EOS after an
  assistant turn; `add_generation_prompt` appends the assistant marker."""
  markers = {"system": tokenizer_lib.SYSTEM, "user": tokenizer_lib.USER,
             "assistant": tokenizer_lib.ASSISTANT}
  return (
      "{%- set markers = " + json.dumps(markers) + " -%}"
      "{%- for message in messages -%}"
      "{%- if message['role'] not in markers -%}"
      "{{ raise_exception('unknown role ' + message['role']) }}{%- endif -%}"
      "{{ markers[message['role']] + message['content'] }}"
      "{%- if message['role'] == 'assistant' -%}{{ '" + tokenizer_lib.EOS + "' }}{%- endif -%}"
      "{%- endfor -%}"
      "{%- if add_generation_prompt -%}{{ '" + tokenizer_lib.ASSISTANT + "' }}{%- endif -%}")


def _write_json(path: str, value) -> None:
  with open(path, "w", encoding="utf-8") as f:
    json.dump(value, f, indent=2, ensure_ascii=False)
    f.write("\n")


def gpt2_config(spec: hf.Spec, tok: tokenizer_lib.Tokenizer, dropout: float) -> dict:
  """config.json of a GPT2LMHeadModel of `spec` (tanh GELU, eps 1e-5, tied head)."""
  return {
      "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
      "vocab_size": spec.vocab_size, "n_positions": spec.max_len, "n_embd": spec.embed_dim,
      "n_layer": spec.num_layers, "n_head": spec.num_heads, "n_inner": None,
      "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5,
      "resid_pdrop": dropout, "embd_pdrop": dropout, "attn_pdrop": 0.0,
      "initializer_range": 0.02, "scale_attn_weights": True,
      "scale_attn_by_inverse_layer_idx": False, "reorder_and_upcast_attn": False,
      "tie_word_embeddings": True, "use_cache": True, "dtype": "float32",
      "bos_token_id": tok.eos_id, "eos_token_id": tok.eos_id, "pad_token_id": tok.pad_id,
  }


def write_tokenizer(out: str, tok: tokenizer_lib.Tokenizer, max_len: int) -> None:
  """tokenizer.json, vocab.json + merges.txt, tokenizer_config.json, special_tokens_map.json."""
  tok.save(os.path.join(out, tokenizer_lib.TOKENIZER_FILE))
  tok.save_vocab_and_merges(out)
  roles = [tokenizer_lib.SYSTEM, tokenizer_lib.USER, tokenizer_lib.ASSISTANT]
  special = {"bos_token": tokenizer_lib.EOS, "eos_token": tokenizer_lib.EOS,
             "unk_token": tokenizer_lib.EOS, "pad_token": tokenizer_lib.PAD,
             "additional_special_tokens": roles}
  ids = {tokenizer_lib.EOS: tok.eos_id, tokenizer_lib.PAD: tok.pad_id,
         tokenizer_lib.SYSTEM: tok.system_id, tokenizer_lib.USER: tok.user_id,
         tokenizer_lib.ASSISTANT: tok.assistant_id}
  added = {str(i): {"content": token, "special": True, "lstrip": False, "rstrip": False,
                    "normalized": False, "single_word": False}
           for token, i in sorted(ids.items(), key=lambda item: item[1])}
  _write_json(os.path.join(out, "tokenizer_config.json"), {
      "tokenizer_class": "GPT2Tokenizer", "add_prefix_space": False, "add_bos_token": False,
      "clean_up_tokenization_spaces": False, "model_max_length": max_len,
      **special, "added_tokens_decoder": added, "chat_template": chat_template()})
  _write_json(os.path.join(out, "special_tokens_map.json"), special)


def write_model(out: str, model_cfg, params, tok: tokenizer_lib.Tokenizer) -> None:
  """Weights, config and generation config of our GPT params (plain or boxed arrays)."""
  spec = hf.spec_of(model_cfg)._replace(vocab_size=tok.vocab_size)
  tensors = hf.hf_tensors(jax.device_get(nn.unbox(params)), spec, tok.vocab_size)
  save_file(tensors, os.path.join(out, hf.SAFETENSORS_FILE), metadata={"format": "pt"})
  _write_json(os.path.join(out, hf.CONFIG_FILE), gpt2_config(spec, tok, model_cfg.dropout))
  _write_json(os.path.join(out, "generation_config.json"), {
      "bos_token_id": tok.eos_id, "eos_token_id": tok.eos_id, "pad_token_id": tok.pad_id})


def write_reward_head(out: str, head_params, normalization) -> None:
  """reward_head.safetensors (weight [D], bias [1]) and reward_head.json (how to use it)."""
  head = jax.device_get(nn.unbox(head_params))
  save_file({"weight": np.asarray(head["kernel"], np.float32),
             "bias": np.asarray(head["bias"], np.float32).reshape(1)},
            os.path.join(out, HEAD_WEIGHTS), metadata={"format": "pt"})
  _write_json(os.path.join(out, HEAD_CARD), {
      "weights": HEAD_WEIGHTS,
      "formula": "reward = gain * (dot(h, weight) + bias) + offset",
      "h": "last_hidden_state of GPT2Model (after ln_f) at the response's last token, "
           "the EOS that closes the assistant turn (chat template)",
      "gain": normalization.gain, "offset": normalization.bias,
      "normalization": "gain/offset give reference responses mean reward 0",
      "step": normalization.step})


def _check_out(out: str, workdir: str) -> None:
  if os.path.abspath(out) == os.path.abspath(workdir):
    raise UserError(f"--out={out} is the workdir; choose a new directory")
  if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
    raise UserError(f"--out={out} exists and is not an empty directory; choose a new one")


def export(workdir: str, out: str) -> str:
  """Writes the workdir's newest model to `out` (see the module docstring); returns its task."""
  _check_out(out, workdir)
  policy = policy_lib.load(workdir, sample.one_device_mesh())
  os.makedirs(out, exist_ok=True)
  task = policy.config.get("task")
  if task == "reward":
    from rlhf_jax.tasks import reward  # pylint: disable=g-import-not-at-top
    _, params, normalization, _ = reward.load_reward_model(workdir)
    write_reward_head(out, params["head"], normalization)
  write_model(out, policy.model.cfg, policy.params, policy.tokenizer)
  write_tokenizer(out, policy.tokenizer, policy.model.cfg.max_len)
  return task


def main(argv=None) -> int:
  parser = ArgumentParser(prog="python -m rlhf_jax.export", description=__doc__,
                          formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--workdir", required=True, help="a training run's directory")
  parser.add_argument("--out", required=True, help="the Hugging Face directory to write")
  args = parser.parse_args(argv)
  try:
    task = export(args.workdir, args.out)
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(f"exported the {task} model of {args.workdir} to {args.out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
