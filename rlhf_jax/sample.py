"""Sample responses from any stage's workdir.

  python -m rlhf_jax.sample --workdir DIR --prompt TEXT [--temperature 1.0 --top_p 1.0
      --top_k 0 --max_new_tokens 64 --seed 0 --num_samples 1 --format auto|chat|text]

`chat` wraps the prompt in the chat template (tuned models); `text` continues plain
text (base models); `auto` picks `text` for pretraining workdirs, else `chat`.
"""
import argparse
import sys

import jax
import ml_collections
import numpy as np

from rlhf_jax import evaluation, policy as policy_lib, sharding
from rlhf_jax.errors import ArgumentParser, UserError


def add_sampling_args(parser: argparse.ArgumentParser, temperature: float) -> None:
  parser.add_argument("--workdir", required=True, help="a training run's directory")
  parser.add_argument("--temperature", type=float, default=temperature, help="0 = greedy")
  parser.add_argument("--top_p", type=float, default=1.0)
  parser.add_argument("--top_k", type=int, default=0)
  parser.add_argument("--max_new_tokens", type=int, default=64)
  parser.add_argument("--seed", type=int, default=0)


def check_sampling_args(args, max_len: int) -> None:
  if args.temperature < 0 or not 0 < args.top_p <= 1 or args.top_k < 0:
    raise UserError(f"--temperature={args.temperature}, --top_p={args.top_p}, --top_k="
                    f"{args.top_k}: use temperature >= 0, 0 < top_p <= 1, top_k >= 0")
  if not 0 < args.max_new_tokens < max_len:
    raise UserError(f"--max_new_tokens={args.max_new_tokens} must be in [1, {max_len - 1}] "
                    f"for this model's context of {max_len}")


def one_device_mesh():
  return sharding.make_mesh(ml_collections.ConfigDict(dict(data=1, fsdp=1, tensor=1)))


def generate(policy: policy_lib.Policy, prompt_ids: list[list[int]], args, rng) -> list[str]:
  """Response texts for token-id prompts, left-padded to one fixed length (one compile)."""
  max_len = policy.model.cfg.max_len
  prompt_len = max_len - args.max_new_tokens
  for ids in prompt_ids:
    if len(ids) > prompt_len:
      raise UserError(f"the prompt has {len(ids)} tokens but only {prompt_len} fit before "
                      f"{args.max_new_tokens} new tokens in the context of {max_len}; "
                      f"shorten it or lower --max_new_tokens")
  tokens, mask = evaluation.left_pad(prompt_ids, prompt_len, policy.tokenizer.pad_id)
  mesh = one_device_mesh()
  with jax.set_mesh(mesh):
    ids = evaluation.generate_ids(
        policy.model, policy.params, tokens, mask, rng, mesh=mesh, batch_size=len(prompt_ids),
        eos_id=policy.tokenizer.eos_id, pad_id=policy.tokenizer.pad_id,
        max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
        top_p=args.top_p)
  return policy.tokenizer.decode_responses(np.asarray(ids))


def main(argv=None) -> int:
  parser = ArgumentParser(prog="python -m rlhf_jax.sample", description=__doc__,
                          formatter_class=argparse.RawDescriptionHelpFormatter)
  add_sampling_args(parser, temperature=1.0)
  parser.add_argument("--prompt", required=True)
  parser.add_argument("--num_samples", type=int, default=1)
  parser.add_argument("--format", choices=("auto", "chat", "text"), default="auto")
  args = parser.parse_args(argv)
  try:
    if args.num_samples < 1:
      raise UserError(f"--num_samples={args.num_samples}; use 1 or more")
    policy = policy_lib.load(args.workdir, one_device_mesh())
    check_sampling_args(args, policy.model.cfg.max_len)
    style = args.format
    if style == "auto":
      style = "text" if policy.config.get("task") == "pretrain" else "chat"
    if style == "chat":
      ids = policy.tokenizer.encode_chat([{"role": "user", "content": args.prompt}],
                                         add_generation_prompt=True)[0]
    else:
      ids = policy.tokenizer.encode(args.prompt)
    texts = generate(policy, [ids] * args.num_samples, args, jax.random.key(args.seed))
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  for i, text in enumerate(texts):
    if args.num_samples > 1:
      print(f"--- sample {i + 1} ---")
    print(text)
  return 0


if __name__ == "__main__":
  sys.exit(main())
