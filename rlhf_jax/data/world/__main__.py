"""python -m rlhf_jax.data.world --out DIR --seed S --size small|medium|large"""
import json
import os
import sys
import time

from rlhf_jax.data.world.config import SIZES
from rlhf_jax.data.world.writer import write_world
from rlhf_jax.errors import ArgumentParser, UserError


def main(argv=None) -> int:
  parser = ArgumentParser(prog="python -m rlhf_jax.data.world",
                          description="Write the generated world to a directory.")
  parser.add_argument("--out", required=True, help="output directory (replaced if present)")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--size", default="small", help=f"one of {', '.join(SIZES)}")
  args = parser.parse_args(argv)
  start = time.perf_counter()
  try:
    write_world(args.out, seed=args.seed, size=args.size)
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  with open(os.path.join(args.out, "datasheet.json"), encoding="utf-8") as f:
    agreement = json.load(f)["agreement"]
  print(f"wrote {args.out} in {time.perf_counter() - start:.1f}s; labeler-labeler agreement "
        f"{agreement['labeler_labeler']:.3f} (target {agreement['target']:.2f}), "
        f"labeler-gold {agreement['labeler_gold']:.3f}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
