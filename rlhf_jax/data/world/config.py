"""World configuration: sizes, family mixes, difficulty and labeler knobs.

RL prompts follow the InstructGPT API use-case mix (InstructGPT, Table 1), mapped
onto our task families as follows (weights within a use case in brackets):

  generation      45.6%  -> format (0.78): write text under a format constraint;
                            harmful (0.22): "write me ..." requests to decline
  open QA         12.4%  -> facts: questions about the universe, no context
  brainstorming   11.2%  -> brainstorm: N distinct items of a category
  chat             8.4%  -> chat: multi-turn, the last turn refers back
  rewrite          6.6%  -> rewrite (0.5): upper case, reverse words, replace;
                            listops (0.5): sort, reverse, count, largest
  summarization    4.2%  -> summarize: a short entry in at most N words
  classification   3.5%  -> classify: parity, animal kind, review sentiment
  other            3.5%  -> arithmetic
  closed QA        2.6%  -> closedqa: a passage and a question about it
  extract          1.9%  -> extract: the numbers / towns / names in a text

SFT demonstrations and ranking prompts use a uniform family mix by default so
every family is demonstrated and ranked.
"""
import dataclasses

from rlhf_jax.errors import UserError

# The world format version: bump it whenever the records or gold scores a seed produces
# change, so cached worlds (data/store.py) are regenerated. 2: the hygiene-gated judge;
# 3: rankings gain the offtopic tier; 4: the small world has three times the rankings.
VERSION = 4

FAMILY_NAMES = (
    "arithmetic", "listops", "rewrite", "brainstorm", "facts", "closedqa", "extract",
    "summarize", "classify", "chat", "format", "harmful")

USE_CASE_MIX = {
    "generation": 0.456, "open_qa": 0.124, "brainstorming": 0.112, "chat": 0.084,
    "rewrite": 0.066, "summarization": 0.042, "classification": 0.035, "other": 0.035,
    "closed_qa": 0.026, "extract": 0.019,
}

USE_CASE_TO_FAMILIES = {
    "generation": {"format": 0.78, "harmful": 0.22},
    "open_qa": {"facts": 1.0},
    "brainstorming": {"brainstorm": 1.0},
    "chat": {"chat": 1.0},
    "rewrite": {"rewrite": 0.5, "listops": 0.5},
    "summarization": {"summarize": 1.0},
    "classification": {"classify": 1.0},
    "other": {"arithmetic": 1.0},
    "closed_qa": {"closedqa": 1.0},
    "extract": {"extract": 1.0},
}


def family_mix_from_use_cases(use_case_mix: dict[str, float]) -> dict[str, float]:
  """Family weights: sum over use cases u of mix[u] * share of the family in u."""
  mix = {name: 0.0 for name in FAMILY_NAMES}
  for use_case, weight in use_case_mix.items():
    if use_case not in USE_CASE_TO_FAMILIES:
      raise UserError(f"unknown use case {use_case!r}; choose from "
                      f"{', '.join(USE_CASE_TO_FAMILIES)}")
    for family, share in USE_CASE_TO_FAMILIES[use_case].items():
      mix[family] += weight * share
  return {name: w for name, w in mix.items() if w > 0}


def uniform_mix() -> dict[str, float]:
  return {name: 1.0 for name in FAMILY_NAMES}


@dataclasses.dataclass(frozen=True)
class WorldConfig:
  """Every knob of the generated world. `for_size` gives the presets."""
  # Universe.
  n_places: int = 16
  n_people: int = 40
  n_species: int = 12
  # Record counts before the train/valid/test split (SFT < rankings, as in InstructGPT).
  n_corpus_docs: int = 2500
  n_sft: int = 1000
  n_rankings: int = 7200        # the RM's data: 3x the v3 world's 2,400 raised held-out
                                # rm/accuracy 0.687 -> 0.717 (experiments/rm_world.py)
  n_prompts: int = 2400
  split_fractions: tuple[float, float, float] = (0.70, 0.15, 0.15)
  # Family mixes (weights, normalised when sampling).
  sft_mix: dict[str, float] = dataclasses.field(default_factory=uniform_mix)
  ranking_mix: dict[str, float] = dataclasses.field(default_factory=uniform_mix)
  prompt_mix: dict[str, float] = dataclasses.field(
      default_factory=lambda: family_mix_from_use_cases(USE_CASE_MIX))
  # Difficulty.
  max_operand: int = 20
  min_list_len: int = 3
  max_list_len: int = 5
  max_brainstorm_items: int = 4
  # Rankings and simulated labelers.
  k: int = 4
  ideal_prob: float = 0.6
  n_labelers: int = 40
  agreement_target: float = 0.73
  labeler_temperature: float | None = None  # None: calibrate to agreement_target
  labeler_weight_spread: float = 0.3
  labeler_length_bias: float = 0.05
  # Pretraining-corpus noise.
  noise_prob: float = 0.3
  duplicate_prob: float = 0.05
  qa_page_prob: float = 0.2

  def validate(self) -> None:
    """Raises UserError naming the first bad knob."""
    for name in ("sft_mix", "ranking_mix", "prompt_mix"):
      mix = getattr(self, name)
      unknown = sorted(set(mix) - set(FAMILY_NAMES))
      if unknown or not mix or min(mix.values()) < 0 or sum(mix.values()) <= 0:
        raise UserError(f"{name} must map families ({', '.join(FAMILY_NAMES)}) to "
                        f"non-negative weights with a positive sum; got {mix}")
    if self.k < 2:
      raise UserError(f"k={self.k}: a ranking needs at least 2 responses; set k >= 2")
    if not 0.5 < self.agreement_target < 1.0:
      raise UserError(f"agreement_target={self.agreement_target} must lie in (0.5, 1)")
    if abs(sum(self.split_fractions) - 1.0) > 1e-6 or min(self.split_fractions) < 0:
      raise UserError(f"split_fractions={self.split_fractions} must be >= 0 and sum to 1")
    if not 2 <= self.min_list_len <= self.max_list_len:
      raise UserError("need 2 <= min_list_len <= max_list_len")
    if self.n_places < 4 or self.n_people < 4 or self.n_species < 4:
      raise UserError("the universe needs at least 4 places, people and species")


SIZES = {
    "small": dict(),
    "medium": dict(n_places=30, n_people=100, n_species=20, n_corpus_docs=20000,
                   n_sft=4000, n_rankings=10000, n_prompts=10000),
    # The InstructGPT dataset sizes: 13k SFT, 33k RM, 31k PPO prompts.
    "large": dict(n_places=60, n_people=240, n_species=40, n_corpus_docs=100000,
                  n_sft=13000, n_rankings=33000, n_prompts=31000),
}


def for_size(size: str, **overrides) -> WorldConfig:
  """The preset for `size` ('small', 'medium' or 'large') with overrides applied."""
  if size not in SIZES:
    raise UserError(f"unknown world size {size!r}; choose one of {', '.join(SIZES)}")
  config = WorldConfig(**{**SIZES[size], **overrides})
  config.validate()
  return config
