"""The family registry, the quality tiers, and the K candidates of a ranking prompt.

Tiers: ideal; partial (partly right); wrong; unsafe (complies with a harmful request;
harmful prompts only); refusal (declines a benign request; benign prompts only);
disfluent (repeated or swapped words); incomplete (cut short); rambling (the ideal
buried in filler beyond the length budget); repetitive (the ideal said 2-4 times);
boilerplate (the ideal wrapped in assistant pleasantries); offtopic (a fluent, well-formed
answer to another prompt: what a small model says when it loses the thread).

The last three are degenerate samples of the kind real model samples contain (repetition
loops, stock phrases). Rankings include them so the reward model learns to rank them
low; a reward model that never saw them cannot, and PPO drifts into them (reward
over-optimisation).
"""
import numpy as np

from rlhf_jax.data.world import tasks_instruct, tasks_knowledge, tasks_ops
from rlhf_jax.data.world.base import Example, Family, pick
from rlhf_jax.data.world.config import FAMILY_NAMES
from rlhf_jax.errors import UserError

FAMILIES: dict[str, Family] = {
    f.name: f for f in tasks_ops.FAMILIES + tasks_knowledge.FAMILIES + tasks_instruct.FAMILIES}
assert tuple(FAMILIES) == FAMILY_NAMES, (tuple(FAMILIES), FAMILY_NAMES)

TIERS = ("ideal", "partial", "wrong", "unsafe", "refusal", "disfluent", "incomplete", "rambling",
         "repetitive", "boilerplate", "offtopic")

FILLER = (
    "Well, that is a good question.", "Let me think about it for a moment.",
    "There are many things one could say here.", "I hope this answer is useful to you.",
    "It is always nice to learn new things.", "Some people say this is hard, but it is not.",
    "As I said before, this is how it is.", "Thank you for asking me about it.",
)
_OPENERS = ("Sure! Here is the answer.", "Great question!", "Of course! I am happy to help.",
            "Thank you for your question.")
_CLOSERS = ("I hope this helps!", "Let me know if you need anything else.",
            "Feel free to ask more questions.", "Have a nice day!")
_OVER_REFUSALS = ("I'm sorry, but I can't help with that.", "Sorry, I cannot answer that.")
_STALLS = ("The answer is", "Well, it is", "I think that the")


def family(name: str) -> Family:
  if name not in FAMILIES:
    raise UserError(f"unknown task family {name!r}; choose from {', '.join(FAMILIES)}")
  return FAMILIES[name]


def tiers_for(family_name: str) -> tuple[str, ...]:
  excluded = "refusal" if family_name == "harmful" else "unsafe"
  return tuple(t for t in TIERS if t != excluded)


def disfluent(rng: np.random.Generator, ideal: str) -> str:
  """Stutters two words and swaps a neighbouring pair."""
  ws = ideal.split()
  for _ in range(2):
    i = int(rng.integers(len(ws)))
    ws[i:i + 1] = [ws[i]] * int(rng.integers(2, 4))
  if len(ws) > 3:
    i = int(rng.integers(len(ws) - 1))
    ws[i], ws[i + 1] = ws[i + 1], ws[i]
  return " ".join(ws)


def incomplete(rng: np.random.Generator, ideal: str) -> str:
  """The first 20-60% of the words, or a stall for very short answers."""
  ws = ideal.split()
  if len(ws) <= 2:
    return pick(rng, _STALLS)
  keep = max(1, int(len(ws) * rng.uniform(0.2, 0.6)))
  return " ".join(ws[:keep]).rstrip(".")


def rambling(rng: np.random.Generator, ideal: str, max_words: int) -> str:
  """Filler before and after the ideal until the text is ~2x the length budget."""
  before = " ".join(pick(rng, FILLER) for _ in range(int(rng.integers(1, 3))))
  after = []
  while len((before + ideal + " ".join(after)).split()) < 2 * max_words:
    after.append(pick(rng, FILLER))
  return f"{before} {ideal} {' '.join(after)}"


def repetitive(rng: np.random.Generator, ideal: str) -> str:
  return " ".join([ideal] * int(rng.integers(2, 5)))


def boilerplate(rng: np.random.Generator, ideal: str) -> str:
  return f"{pick(rng, _OPENERS)} {ideal} {pick(rng, _CLOSERS)}"


def offtopic(rng: np.random.Generator, ex: Example, universe, config) -> str:
  """The ideal answer to a fresh prompt of another benign family."""
  others = [n for n in FAMILIES if n not in (ex.meta["family"], "harmful")]
  return make_example(rng, pick(rng, others), universe, config).ideal


def make_example(rng: np.random.Generator, family_name: str, universe, config) -> Example:
  return FAMILIES[family_name].make(rng, universe, config)


def candidates(rng: np.random.Generator, ex: Example, universe, config) -> tuple[list, list]:
  """K responses of distinct tiers (repeating tiers only if K exceeds them), shuffled.

  The ideal is included with probability `ideal_prob`. Returns (responses, tiers).
  """
  name = ex.meta["family"]
  others = [t for t in tiers_for(name) if t != "ideal"]
  chosen = ["ideal"] if rng.random() < config.ideal_prob else []
  chosen += [others[i] for i in rng.permutation(len(others))]
  while len(chosen) < config.k:
    chosen.append(pick(rng, tiers_for(name)))
  chosen = chosen[:config.k]
  flawed = FAMILIES[name].flawed(rng, ex, universe)
  if "offtopic" in chosen:
    flawed = {**flawed, "offtopic": offtopic(rng, ex, universe, config)}
  responses = [_respond(rng, tier, ex, flawed) for tier in chosen]
  order = rng.permutation(len(chosen))
  return [responses[i] for i in order], [chosen[i] for i in order]


def _respond(rng, tier: str, ex: Example, flawed: dict[str, str]) -> str:
  if tier == "ideal":
    return ex.ideal
  if tier in flawed:
    return flawed[tier]
  if tier == "refusal":
    return pick(rng, _OVER_REFUSALS)
  if tier == "disfluent":
    return disfluent(rng, ex.ideal)
  if tier == "incomplete":
    return incomplete(rng, ex.ideal)
  if tier == "repetitive":
    return repetitive(rng, ex.ideal)
  if tier == "boilerplate":
    return boilerplate(rng, ex.ideal)
  return rambling(rng, ex.ideal, ex.meta["max_words"])
