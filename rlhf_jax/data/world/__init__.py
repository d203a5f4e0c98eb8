"""The built-in generated world: corpus, SFT demos, rankings, pairs and RL prompts.

A small universe (places, people, animal species) and twelve task families, each with a
gold checker, so the gold judge can score any response and RLHF gains are measurable.

  write_world(out_dir, seed=0, size="small")     materialise DIR/{corpus,sft,...}
  score(meta, response) -> Score                 total in [0, 1] plus categories
  score_batch(metas, responses) -> list[Score]
  score_arrays(metas, responses) -> {"total": array, "correctness": array, ...}
  win_rate(metas, a, b, n_bootstrap, seed) -> (rate, lo, hi)
"""
from rlhf_jax.data.world.config import SIZES, VERSION, WorldConfig, for_size
from rlhf_jax.data.world.judge import Score, score, score_arrays, score_batch, win_rate
from rlhf_jax.data.world.writer import build_world, write_world

__all__ = ["SIZES", "Score", "VERSION", "WorldConfig", "build_world", "for_size", "score",
           "score_arrays", "score_batch", "win_rate", "write_world"]
