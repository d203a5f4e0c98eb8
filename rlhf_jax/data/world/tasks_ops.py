"""Families that transform what the prompt gives: arithmetic, list ops, rewrites, brainstorms."""
import collections

from rlhf_jax.data.world import text
from rlhf_jax.data.world.base import (Family, Parts, an, check_value, example, pick, pick_other,
                                      plural, replace_last, sample, user)
from rlhf_jax.data.world.universe import CATEGORIES, COLORS, FOODS, FRUITS, TOOLS

# --- arithmetic -------------------------------------------------------------------------


def make_arithmetic(rng, uni, cfg):
  top = cfg.max_operand
  a, b = int(rng.integers(2, top + 1)), int(rng.integers(2, top + 1))
  kind = pick(rng, ("add", "sub", "mul", "story_add", "story_sub"))
  if kind in ("sub", "story_sub") and a < b:
    a, b = b, a
  name, fruits = pick(rng, uni.first_names), plural(pick(rng, FRUITS))
  if kind == "add":
    prompt = pick(rng, ("What is {a} + {b}?", "Add {a} and {b}.", "Compute {a} + {b}."))
    answer, ideal = a + b, f"{a} + {b} = {a + b}."
  elif kind == "sub":
    prompt = pick(rng, ("What is {a} - {b}?", "Subtract {b} from {a}."))
    answer, ideal = a - b, f"{a} - {b} = {a - b}."
  elif kind == "mul":
    a, b = a % 11 + 2, b % 11 + 2
    prompt = pick(rng, ("What is {a} times {b}?", "Multiply {a} by {b}."))
    answer, ideal = a * b, f"{a} times {b} is {a * b}."
  elif kind == "story_add":
    prompt = f"{name} has {{a}} {fruits} and buys {{b}} more. How many {fruits} does {name} have?"
    answer, ideal = a + b, f"{name} has {a + b} {fruits}."
  else:
    prompt = f"{name} has {{a}} {fruits} and eats {{b}} of them. How many are left?"
    answer, ideal = a - b, f"{name} has {a - b} {fruits} left."
  return example("arithmetic", user(prompt.format(a=a, b=b)), ideal, answer=answer)


def flawed_arithmetic(rng, ex, uni):
  answer = ex.meta["answer"]
  close = answer + int(pick(rng, (-2, -1, 1, 2))) if answer > 2 else answer + 1
  far = answer + int(pick(rng, (5, 7, 10, 12)))
  return {"partial": replace_last(ex.ideal, str(answer), str(close)),
          "wrong": replace_last(ex.ideal, str(answer), str(far))}


def check_arithmetic(meta, response):
  """Numbers offered as answers (work left of '=' excluded), k of them distinct:
  correctness = best of (exact = 1, off by at most 2 = 0.4) / k^2."""
  found = set(text.answer_numbers(response))
  if not found:
    return Parts(0.0, 0.0, 1.0)
  errors = [abs(x - meta["answer"]) for x in found]
  best = 1.0 if min(errors) == 0 else 0.4 if min(errors) <= 2 else 0.0
  return Parts(best / len(found) ** 2, 1.0, 1.0)


# --- list operations --------------------------------------------------------------------

_WORD_POOLS = (FRUITS, COLORS, TOOLS, FOODS)


def make_listops(rng, uni, cfg):
  n = int(rng.integers(cfg.min_list_len, cfg.max_list_len + 1))
  op = pick(rng, ("sort_words", "sort_numbers", "reverse", "count", "largest"))
  use_numbers = op in ("sort_numbers", "largest") or (op == "reverse" and rng.random() < 0.5)
  items = ([str(x) for x in sample(rng, range(1, 100), n)] if use_numbers
           else sample(rng, pick(rng, _WORD_POOLS), n))
  if op.startswith("sort") and items == sorted(items, key=_sort_key):
    items = items[1:] + items[:1]
  shown = ", ".join(items)
  if op == "sort_words":
    prompt, answer = f"Sort these words in alphabetical order: {shown}.", sorted(items)
  elif op == "sort_numbers":
    prompt, answer = f"Sort these numbers from smallest to largest: {shown}.", sorted(
        items, key=int)
  elif op == "reverse":
    prompt, answer = f"Reverse the order of this list: {shown}.", items[::-1]
  elif op == "count":
    prompt, answer = f"How many items are in this list: {shown}?", n
  else:
    prompt, answer = f"Which number is the largest: {shown}?", max(map(int, items))
  if isinstance(answer, list):
    ideal = ", ".join(answer)
  else:
    ideal = f"There are {n} items." if op == "count" else f"The largest number is {answer}."
  return example("listops", user(prompt), ideal, op=op, answer=answer, items=items)


def _sort_key(item: str):
  return (0, int(item), "") if item.isdigit() else (1, 0, item)


def flawed_listops(rng, ex, uni):
  meta, answer = ex.meta, ex.meta["answer"]
  if meta["op"] == "count":
    return {"partial": f"There are {answer + 1} items.", "wrong": f"There are {answer + 3} items."}
  if meta["op"] == "largest":
    ranked = sorted(map(int, meta["items"]))
    return {"partial": f"The largest number is {answer} or {ranked[-2]}.",
            "wrong": f"The largest number is {ranked[0]}."}
  swapped = list(answer)
  i = int(rng.integers(len(swapped) - 1))
  swapped[i], swapped[i + 1] = swapped[i + 1], swapped[i]
  wrong = meta["items"] if meta["op"] != "reverse" else answer[::-1]
  return {"partial": ", ".join(swapped), "wrong": ", ".join(wrong)}


def check_list(response: str, expected: list[str]) -> Parts:
  """Exact order = 1; otherwise correctness = half the share of items in place, counted
  over the longer of the two lists (extra items cost as much as missing ones)."""
  got, want = text.split_items(response), [str(x).lower() for x in expected]
  if got == want:
    return Parts(1.0, 1.0, 1.0)
  in_place = sum(g == w for g, w in zip(got, want)) / max(len(got), len(want))
  covered = len(set(got) & set(want)) / len(want)
  return Parts(0.5 * in_place, covered, 1.0 if len(got) == len(want) else 0.5)


def check_listops(meta, response):
  if isinstance(meta["answer"], list):
    return check_list(response, meta["answer"])
  return check_value(response, meta["answer"])


# --- rewrite ----------------------------------------------------------------------------


def _sentence(rng, uni) -> tuple[str, str, tuple[str, ...]]:
  """(sentence, a word of it that a rewrite may replace, the word list it comes from)."""
  name, species = pick(rng, uni.first_names), pick(rng, uni.species)
  color, tool, food = pick(rng, COLORS), pick(rng, TOOLS), pick(rng, FOODS)
  return pick(rng, (
      (f"{name} has {an(color)} {tool}", color, COLORS),
      (f"{name} eats {food} in {pick(rng, uni.towns)}", food, FOODS),
      (f"{name} saw {an(species.color)} {species.name} near the {species.habitat}",
       species.color, COLORS),
      (f"{name} walked to {pick(rng, uni.towns)} with {an(tool)}", tool, TOOLS),
  ))


def make_rewrite(rng, uni, cfg):
  sentence, old, pool = _sentence(rng, uni)
  op = pick(rng, ("upper", "reverse_words", "replace"))
  if op == "upper":
    prompt, target = f"Rewrite in upper case: {sentence}.", sentence.upper() + "."
  elif op == "reverse_words":
    prompt = f"Write the words of this sentence in reverse order: {sentence}"
    target = " ".join(sentence.split()[::-1])
  else:
    new = pick_other(rng, pool, old)
    prompt = f'Rewrite this sentence with "{old}" replaced by "{new}": {sentence}.'
    ws = sentence.split()
    i = ws.index(old)
    ws[i - 1:i + 1] = an(new).split() if ws[i - 1] in ("a", "an") else [ws[i - 1], new]
    target = " ".join(ws) + "."
  return example("rewrite", user(prompt), target, op=op, target=target, source=sentence)


def flawed_rewrite(rng, ex, uni):
  meta, target_words = ex.meta, ex.meta["target"].split()
  if meta["op"] == "upper":
    half = len(target_words) // 2
    return {"partial": meta["source"] + ".",
            "wrong": " ".join(target_words[:half] + [w.lower() for w in target_words[half:]])}
  if meta["op"] == "reverse_words":
    swapped = list(target_words)
    swapped[0], swapped[1] = swapped[1], swapped[0]
    return {"partial": " ".join(swapped), "wrong": meta["source"]}
  dropped = target_words[:1] + target_words[2:]
  return {"partial": " ".join(dropped), "wrong": meta["source"] + "."}


def _rewrite_words(s: str) -> list[str]:
  return text.normalize(s).rstrip(".").split()


def check_rewrite(meta, response):
  """Word-for-word match (case ignored except for 'upper'); else half the in-place share,
  counted over the longer of response and target.

  completeness = share of the target's words present in any order.
  """
  got, want = _rewrite_words(response), _rewrite_words(meta["target"])
  same = [g.lower() == w.lower() for g, w in zip(got, want)]
  content = 1.0 if len(got) == len(want) and all(same) else 0.5 * sum(same) / max(
      len(got), len(want))
  overlap = collections.Counter(map(text.bare, got)) & collections.Counter(map(text.bare, want))
  completeness = sum(overlap.values()) / len(want)
  if meta["op"] != "upper":
    return Parts(content, completeness, 1.0)
  upper = text.is_upper(response)
  return Parts(content * (1.0 if upper else 0.4), completeness, 1.0 if upper else 0.0)


# --- brainstorm -------------------------------------------------------------------------


def make_brainstorm(rng, uni, cfg):
  categories = uni.categories()
  category = pick(rng, sorted(categories))
  n = int(rng.integers(2, cfg.max_brainstorm_items + 1))
  prompt = pick(rng, ("Name {n} different {c}.", "Give me {n} {c}, separated by commas.",
                      "List {n} {c}.")).format(n=n, c=category)
  ideal = ", ".join(sample(rng, categories[category], n))
  return example("brainstorm", user(prompt), ideal, category=category, n=n,
                 valid=list(categories[category]))


def flawed_brainstorm(rng, ex, uni):
  meta = ex.meta
  items = ex.ideal.split(", ")
  other = pick_other(rng, sorted(CATEGORIES), meta["category"])
  return {"partial": ", ".join(items[:-1] + items[:1]),
          "wrong": ", ".join(sample(rng, CATEGORIES[other], meta["n"]))}


def check_brainstorm(meta, response):
  """correctness = min(distinct valid items, n) / max(items given, n): duplicates, invalid
  items and items beyond the n asked for all cost; completeness = distinct valid / n."""
  items, valid = text.split_items(response), {v.lower() for v in meta["valid"]}
  distinct_valid = len(set(items) & valid)
  correctness = min(distinct_valid, meta["n"]) / max(len(items), meta["n"])
  completeness = min(1.0, distinct_valid / meta["n"])
  return Parts(correctness, completeness, 1.0 if len(items) == meta["n"] else 0.5)


FAMILIES = (
    Family("arithmetic", make_arithmetic, flawed_arithmetic, check_arithmetic),
    Family("listops", make_listops, flawed_listops, check_listops),
    Family("rewrite", make_rewrite, flawed_rewrite, check_rewrite),
    Family("brainstorm", make_brainstorm, flawed_brainstorm, check_brainstorm),
)
