"""PPO iteration time and its breakdown: generate, score, reference, update.

Builds the PPO task's pieces (`rlhf_jax.tasks.ppo.make_pieces`) for a policy / RM / critic
of the given size with fresh weights and random prompts that stay on the device, then
times, each as its own jitted function on the same inputs:
  generate  — `sampling.sample`: prefill + KV-cache decode of response_len tokens;
  score     — the RM forward over prompt + response, read at the last real token;
  reference — the reference model's log-probs of the response (one forward);
  rollout   — score + reference + critic values + rewards + GAE + whitening;
  update    — epochs × minibatches of PPO policy and value steps;
  step      — the whole iteration as the training loop runs it (one program, donated state).
The parts of one compiled step cannot be timed from the host; the sum of the pieces is
close to, not equal to, `step` (XLA schedules the fused program differently). Fresh
weights rarely emit EOS, so every response uses the full budget (the slowest case).
Warm-up calls (compilation) are not timed; each figure is the median of --steps calls.

  python benchmarks/ppo_iteration.py --preset=tiny --batch=32 --prompt_len=32 \
      --response_len=16 --epochs=2 --minibatches=2 --json
The lm-human-preferences sentiment setting (GPT-2 124M, one GPU):
  python benchmarks/ppo_iteration.py --preset=gpt2 --vocab=50257 --batch=512 --prompt_len=64 \
      --response_len=24 --epochs=4 --minibatches=8 --dtype=bfloat16 --json
"""
import argparse
import json
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import optax

from rlhf_jax import configs
from rlhf_jax.models import gpt, heads
from rlhf_jax.tasks import ppo


def parse_args(argv):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--preset", default="tiny", choices=sorted(gpt.PRESETS))
  p.add_argument("--vocab", type=int, default=2048)
  p.add_argument("--batch", type=int, default=32)
  p.add_argument("--prompt_len", type=int, default=32)
  p.add_argument("--response_len", type=int, default=16)
  p.add_argument("--epochs", type=int, default=2)
  p.add_argument("--minibatches", type=int, default=2)
  p.add_argument("--grad_accum", type=int, default=1)
  p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
  p.add_argument("--steps", type=int, default=3)
  p.add_argument("--warmup", type=int, default=1)
  p.add_argument("--json", action="store_true")
  return p.parse_args(argv)


def _median_seconds(fn, args, steps: int, warmup: int) -> float:
  for _ in range(warmup):
    jax.block_until_ready(fn(*args))
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def main(argv=None):
  args = parse_args(sys.argv[1:] if argv is None else argv)
  seq_len = args.prompt_len + args.response_len
  preset = dict(gpt.PRESETS[args.preset])
  preset["max_len"] = max(preset["max_len"], seq_len)
  model_cfg = gpt.GPTConfig(vocab_size=args.vocab, dtype=args.dtype, **preset)
  models = ppo.Models(gpt.GPT(model_cfg), heads.RewardModel(model_cfg),
                      heads.RewardModel(model_cfg))
  cfg = configs.ppo_block()
  cfg.update(max_prompt_len=args.prompt_len, response_len=args.response_len,
             epochs=args.epochs, num_minibatches=args.minibatches)
  tx = optax.adam(1e-5)
  pieces = ppo.make_pieces(models, cfg, eos_id=0, pad_id=1, policy_tx=tx, critic_tx=tx,
                           num_micro=args.grad_accum, policy_lr=optax.constant_schedule(1e-5))
  state = jax.jit(ppo.init_fn(models, cfg, tx, tx, seq_len))(jax.random.key(0))
  prompt = jax.random.randint(jax.random.key(1), (args.batch, args.prompt_len), 2, args.vocab)
  prompt_mask = jnp.ones_like(prompt)
  rng = jax.random.key(2)

  generate = jax.jit(pieces.generate)
  samples = generate(state, prompt, prompt_mask, rng)
  response, mask = samples.tokens_BxN, samples.mask_BxN
  rollout = jax.jit(pieces.rollout)
  experience = rollout(state, prompt, prompt_mask, samples)[0]
  seconds = {
      "generate": _median_seconds(generate, (state, prompt, prompt_mask, rng), args.steps,
                                  args.warmup),
      "score": _median_seconds(jax.jit(pieces.score),
                               (state, prompt, prompt_mask, response, mask), args.steps,
                               args.warmup),
      "reference": _median_seconds(jax.jit(pieces.reference),
                                   (state, prompt, prompt_mask, response, mask), args.steps,
                                   args.warmup),
      "rollout": _median_seconds(rollout, (state, prompt, prompt_mask, samples), args.steps,
                                 args.warmup),
      "update": _median_seconds(jax.jit(pieces.update), (state, experience, None, rng),
                                args.steps, args.warmup)}
  step = jax.jit(pieces.step, donate_argnums=(0,))
  batch = {"tokens": prompt, "mask": prompt_mask}
  for _ in range(args.warmup):
    state, _ = step(state, batch, rng)
  jax.block_until_ready(state)
  times = []
  for i in range(args.steps):
    start = time.perf_counter()
    state, metrics = step(state, batch, jax.random.fold_in(rng, i))
    jax.block_until_ready((state, metrics))
    times.append(time.perf_counter() - start)
  seconds["step"] = statistics.median(times)
  result = {"device": jax.devices()[0].device_kind, "preset": args.preset, "batch": args.batch,
            "prompt_len": args.prompt_len, "response_len": args.response_len,
            "epochs": args.epochs, "minibatches": args.minibatches, "dtype": args.dtype,
            "params": gpt.count_params(state.policy.params),
            "seconds": {k: round(v, 4) for k, v in seconds.items()},
            "response_length": float(metrics["ppo/response_length"])}
  if args.json:
    print(json.dumps(result))
  else:
    for name, value in seconds.items():
      print(f"{name:>10s} {value:8.3f} s")
  return result


if __name__ == "__main__":
  main()
