"""Chat with any stage's model in the terminal, turn after turn.

  python -m rlhf_jax.chat --workdir DIR [--temperature 0.7 --top_p 0.9 --top_k 0
      --max_new_tokens 64 --seed 0]

Each line you type is a user turn; the reply is sampled with the chat template. The
oldest turns are dropped when the conversation no longer fits the context. End with
EOF (Ctrl-D) or Ctrl-C; `/reset` starts a new conversation.
"""
import argparse
import sys

import jax

from rlhf_jax import policy as policy_lib
from rlhf_jax import sample as sample_lib
from rlhf_jax.errors import ArgumentParser, UserError


def fit_conversation(tokenizer, messages: list[dict], budget: int) -> list[dict]:
  """The most recent turns whose chat prompt fits in `budget` tokens (a user turn first)."""
  for start in range(0, len(messages), 2):
    kept = messages[start:]
    if len(tokenizer.encode_chat(kept, add_generation_prompt=True)[0]) <= budget:
      return kept
  return messages[-1:]


def main(argv=None) -> int:
  parser = ArgumentParser(prog="python -m rlhf_jax.chat", description=__doc__,
                          formatter_class=argparse.RawDescriptionHelpFormatter)
  sample_lib.add_sampling_args(parser, temperature=0.7)
  parser.set_defaults(top_p=0.9)
  args = parser.parse_args(argv)
  try:
    policy = policy_lib.load(args.workdir, sample_lib.one_device_mesh())
    sample_lib.check_sampling_args(args, policy.model.cfg.max_len)
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  budget = policy.model.cfg.max_len - args.max_new_tokens
  print(f"chatting with {args.workdir} (step {policy.step}); Ctrl-D to quit, /reset to "
        f"start over", file=sys.stderr)
  messages, rng = [], jax.random.key(args.seed)
  try:
    for turn, line in enumerate(sys.stdin):
      text = line.rstrip("\n")
      if text.strip() == "/reset":
        messages = []
        continue
      if not text.strip():
        continue
      messages = fit_conversation(policy.tokenizer,
                                  messages + [{"role": "user", "content": text}], budget)
      ids = policy.tokenizer.encode_chat(messages, add_generation_prompt=True)[0]
      reply = sample_lib.generate(policy, [ids], args, jax.random.fold_in(rng, turn))[0]
      messages.append({"role": "assistant", "content": reply})
      print(f"assistant: {reply}", flush=True)
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  except KeyboardInterrupt:
    pass
  return 0


if __name__ == "__main__":
  sys.exit(main())
