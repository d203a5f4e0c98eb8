"""The gold judge against the adversarial catalogue: what a careful person would give."""
import numpy as np
import pytest

from rlhf_jax.data.world import adversarial, families, for_size, score, score_arrays
from rlhf_jax.data.world.config import FAMILY_NAMES
from rlhf_jax.data.world.universe import make_universe

PER_FAMILY = 40
BENIGN = [f for f in FAMILY_NAMES if f != "harmful"]


@pytest.fixture(scope="module")
def world():
  """(cases, examples, universe): PER_FAMILY fresh prompts of every family."""
  config = for_size("small")
  uni = make_universe(np.random.default_rng(11), config.n_places, config.n_people,
                      config.n_species)
  rng = np.random.default_rng(12)
  examples = [families.make_example(rng, name, uni, config)
              for name in FAMILY_NAMES for _ in range(PER_FAMILY)]
  records = [{"messages": ex.messages + [{"role": "assistant", "content": ex.ideal}],
              "meta": ex.meta} for ex in examples]
  return adversarial.cases(records, uni, seed=13), examples, uni


@pytest.fixture(scope="module")
def table(world):
  cases = world[0]
  return adversarial.table(cases, lambda m, r: score_arrays(m, r)["total"], seed=14)


def test_catalogue_covers_the_known_tricks():
  names = set(adversarial.BY_NAME)
  assert len(names) >= 20
  for trick in ("apology_then_steps", "refusal_then_ideal", "repeat_20x", "ideal_plus_200_filler",
                "prompt_copy", "hedge_all_choices", "junk_bullets", "special_tokens",
                "show_work", "partial_prompt_copy", "answer_then_rambling", "lower_case",
                "non_ascii_junk", "empty", "one_token", "other_prompt_answer", "boilerplate"):
    assert trick in names, trick


@pytest.mark.parametrize("name", [s.name for s in adversarial.STRATEGIES])
def test_strategy_scores_what_a_careful_person_would_give(name, table):
  strategy, row = adversarial.BY_NAME[name], table[name]
  bounded = [f for f in FAMILY_NAMES if strategy.expect(f) is not None and f in row]
  assert bounded, f"{name} is bounded on no family"
  for family in bounded:
    lo, hi = strategy.expect(family)
    assert lo - 1e-9 <= row[family] <= hi + 1e-9, (name, family, row[family], (lo, hi))


def test_degenerate_strategies_apply_to_every_family(table):
  """Repetition, filler, copies, boilerplate, junk and empty answers are bounded everywhere."""
  for name in ("repeat_20x", "repeat_3x", "ideal_plus_200_filler", "answer_then_rambling",
               "filler_then_answer", "boilerplate", "prompt_copy", "partial_prompt_copy",
               "hedge_all_choices", "junk_bullets", "non_ascii_junk", "empty"):
    assert set(table[name]) == set(FAMILY_NAMES), name
    assert max(table[name].values()) <= 0.5, (name, table[name])


def test_any_conveyance_of_harmful_steps_is_unsafe(world):
  cases = world[0]
  harmful = [c for c in cases if c.meta["family"] == "harmful"]
  rng = np.random.default_rng(0)
  for name in ("apology_then_steps", "steps_then_disclaimer", "steps_as_advice"):
    for case in harmful:
      s = score(case.meta, adversarial.BY_NAME[name].make(rng, case))
      assert s.safety == 0.0 and s.total == 0.0, (name, case.meta["steps"])
  for case in harmful:  # the ideal refusal is safe and scores full marks
    assert score(case.meta, case.ideal).total == 1.0


def test_tier_order_on_benign_prompts(world):
  """ideal > partial > wrong and incomplete > refusal, averaged over the benign families."""
  _, examples, uni = world
  rng = np.random.default_rng(15)
  means = {t: [] for t in ("ideal", "partial", "wrong", "incomplete", "refusal")}
  for ex in examples:
    if ex.meta["family"] == "harmful":
      continue
    flawed = families.family(ex.meta["family"]).flawed(rng, ex, uni)
    responses = {"ideal": ex.ideal, "partial": flawed["partial"], "wrong": flawed["wrong"],
                 "incomplete": families.incomplete(rng, ex.ideal),
                 "refusal": adversarial.BENIGN_REFUSAL}
    for tier, response in responses.items():
      means[tier].append(score(ex.meta, response).total)
  m = {t: float(np.mean(v)) for t, v in means.items()}
  assert m["ideal"] >= 0.95
  assert m["ideal"] > m["partial"] > max(m["wrong"], m["incomplete"])
  assert min(m["wrong"], m["incomplete"]) > m["refusal"]


def test_strategies_are_deterministic(world):
  cases = world[0][:50]
  for strategy in adversarial.STRATEGIES:
    assert adversarial.responses(strategy, cases, 3) == adversarial.responses(strategy, cases, 3)
