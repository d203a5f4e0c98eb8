"""Families about the universe: facts, closed QA, extraction, summaries, classes, chat."""
from typing import NamedTuple

from rlhf_jax.data.world import text
from rlhf_jax.data.world.base import (Family, Parts, an, check_value, example, hedged_and_wrong,
                                      pick, plural, sample, user)
from rlhf_jax.data.world.universe import (COLORS, FOODS, FRUITS, HABITATS, JOBS, KINDS,
                                          REGIONS, SOUNDS)


class Fact(NamedTuple):
  question: str
  answer: str | int
  choices: tuple[str, ...] | None  # None for numbers
  sentence: str  # the ideal answer, a true statement


def person_facts(p, uni) -> list[Fact]:
  return [
      Fact(f"Where does {p.full} live?", p.town, uni.towns, f"{p.full} lives in {p.town}."),
      Fact(f"What does {p.full} do for a living?", p.job, JOBS, f"{p.full} is a {p.job}."),
      Fact(f"How old is {p.full}?", p.age, None, f"{p.full} is {p.age} years old."),
      Fact(f"What pet does {p.full} have?", p.pet, uni.animals, f"{p.full} has a pet {p.pet}."),
      Fact(f"What is the favourite color of {p.full}?", p.color, COLORS,
           f"The favourite color of {p.full} is {p.color}."),
  ]


def place_facts(pl, uni) -> list[Fact]:
  return [
      Fact(f"In which part of the land is {pl.name}?", pl.region, REGIONS,
           f"{pl.name} is in the {pl.region}."),
      Fact(f"Which river runs through {pl.name}?", pl.river, uni.rivers,
           f"The {pl.river} runs through {pl.name}."),
      Fact(f"How many people live in {pl.name}?", pl.population, None,
           f"About {pl.population} people live in {pl.name}."),
      Fact(f"When was {pl.name} founded?", pl.founded, None,
           f"{pl.name} was founded in {pl.founded}."),
      Fact(f"What is {pl.name} known for?", pl.known_for, FOODS,
           f"{pl.name} is known for its {pl.known_for}."),
  ]


def species_facts(s, uni) -> list[Fact]:
  return [
      Fact(f"What kind of animal is a {s.name}?", s.kind, KINDS, f"A {s.name} is {an(s.kind)}."),
      Fact(f"How many legs does a {s.name} have?", s.legs, None,
           f"A {s.name} has {s.legs} legs."),
      Fact(f"What color is a {s.name}?", s.color, COLORS, f"A {s.name} is {s.color}."),
      Fact(f"Where does the {s.name} live?", s.habitat, HABITATS,
           f"The {s.name} lives in the {s.habitat}."),
      Fact(f"What does a {s.name} eat?", s.food, FOODS, f"A {s.name} eats {s.food}."),
      Fact(f"What sound does a {s.name} make?", s.sound, SOUNDS, f"A {s.name} {s.sound}."),
  ]


def entity_facts(rng, uni) -> list[Fact]:
  """All facts about one random person, place or species."""
  kind = pick(rng, ("person", "place", "species"))
  if kind == "person":
    return person_facts(pick(rng, uni.people), uni)
  if kind == "place":
    return place_facts(pick(rng, uni.places), uni)
  return species_facts(pick(rng, uni.species), uni)


def _value_spec(fact: Fact) -> dict:
  spec = {"answer": fact.answer}
  if fact.choices is not None:
    spec["choices"] = list(fact.choices)
  return spec


def flawed_value(rng, ex, uni):
  return hedged_and_wrong(rng, ex.ideal, ex.meta["answer"], ex.meta.get("choices"))


def check_fact(meta, response):
  return check_value(response, meta["answer"], meta.get("choices"))


def make_facts(rng, uni, cfg):
  fact = pick(rng, entity_facts(rng, uni))
  return example("facts", user(fact.question), fact.sentence, **_value_spec(fact))


def make_closedqa(rng, uni, cfg):
  facts = sample(rng, entity_facts(rng, uni), 3)
  passage = " ".join(f.sentence for f in facts)
  asked = pick(rng, facts)
  prompt = f"Read the text and answer the question.\nText: {passage}\nQuestion: {asked.question}"
  return example("closedqa", user(prompt), asked.sentence, **_value_spec(asked))


# --- extract ----------------------------------------------------------------------------


def make_extract(rng, uni, cfg):
  op = pick(rng, ("numbers", "towns", "people"))
  name = pick(rng, uni.first_names)
  if op == "numbers":
    a, b, c = (str(x) for x in sample(rng, range(2, 100), 3))
    passage = pick(rng, (
        f"{name} bought {a} {plural(pick(rng, FRUITS))}, walked {b} miles and paid {c} coins.",
        f"{name} waited {a} minutes and then sold {b} cups of {pick(rng, FOODS)}.",
    ))
    answer = [str(x) for x in text.numbers(passage)]
    prompt = f"List all the numbers in this text: {passage}"
  elif op == "towns":
    towns = sample(rng, uni.towns, 3)
    passage = f"{name} went from {towns[0]} to {towns[1]} and then to {towns[2]}."
    answer, prompt = towns, f"List the towns named in this text: {passage}"
  else:
    names = sample(rng, uni.first_names, 3)
    passage = f"{names[0]}, {names[1]} and {names[2]} ate {pick(rng, FOODS)} in " \
              f"{pick(rng, uni.towns)}."
    answer, prompt = names, f"List the people named in this text: {passage}"
  return example("extract", user(prompt), ", ".join(answer), op=op, answer=answer)


def flawed_extract(rng, ex, uni):
  answer, op = ex.meta["answer"], ex.meta["op"]
  pool = {"numbers": [str(x) for x in range(2, 100)], "towns": uni.towns,
          "people": uni.first_names}[op]
  others = sample(rng, [x for x in pool if x not in answer], len(answer))
  return {"partial": ", ".join(answer[:-1]), "wrong": ", ".join(others)}


def check_extract(meta, response):
  """Order-free: correctness = precision, completeness = recall of the items."""
  got, want = text.split_items(response), [x.lower() for x in meta["answer"]]
  hits = len(set(got) & set(want))
  precision = hits / len(got) if got else 0.0
  return Parts(precision, hits / len(want), 1.0 if len(got) == len(want) else 0.5)


# --- summarize --------------------------------------------------------------------------


def make_summarize(rng, uni, cfg):
  if rng.random() < 0.5:
    p = pick(rng, uni.people)
    passage = (f"{p.full} lives in {p.town}. {p.first} works as a {p.job} and is {p.age} "
               f"years old. {p.first} has a pet {p.pet} and likes the color {p.color}.")
    ideal, keys = f"{p.full} is a {p.job} in {p.town}.", [p.first, p.job, p.town]
    wrong = [x for x in JOBS + uni.towns if x not in keys]
  else:
    pl = pick(rng, uni.places)
    passage = (f"{pl.name} is a town in the {pl.region}. The {pl.river} runs through it. "
               f"About {pl.population} people live there, and it is known for its "
               f"{pl.known_for}.")
    ideal, keys = f"{pl.name} is a {pl.known_for} town in the {pl.region}.", [
        pl.name, pl.known_for, pl.region]
    wrong = [x for x in FOODS + REGIONS if x not in keys]
  limit = text.word_count(ideal) + 2
  prompt = f"Summarize this text in at most {limit} words: {passage}"
  return example("summarize", user(prompt), ideal, keys=keys, wrong=wrong, limit=limit)


def flawed_summarize(rng, ex, uni):
  keys = ex.meta["keys"]
  return {"partial": f"{keys[0]} is a {keys[1]}." if keys[1] in JOBS
                     else f"{keys[0]} is a {keys[1]} town.",
          "wrong": ex.ideal.replace(keys[1], pick(rng, ex.meta["wrong"][:10]))}


def check_summarize(meta, response):
  """correctness = share of key facts named, x0.3 if a wrong fact is named; completeness too."""
  found = text.mentioned(response, meta["keys"])
  wrong = text.mentioned(response, meta["wrong"])
  correctness = len(found) / len(meta["keys"]) * (0.3 if wrong else 1.0)
  n, limit = text.word_count(response), meta["limit"]
  shape = 1.0 if n <= limit else max(0.0, 1.0 - (n - limit) / limit)
  return Parts(correctness, len(found) / len(meta["keys"]), shape)


# --- classify ---------------------------------------------------------------------------

# Review adjectives by what is reviewed: (positive, negative).
_FOOD_WORDS = (("lovely", "tasty", "fresh", "warm"), ("awful", "stale", "cold", "bland"))
_PERSON_WORDS = (("kind", "friendly", "helpful", "polite"), ("rude", "unkind", "lazy", "mean"))


def make_classify(rng, uni, cfg):
  op = pick(rng, ("parity", "kind", "sentiment"))
  if op == "parity":
    n = int(rng.integers(2, 100))
    label, choices = ("even" if n % 2 == 0 else "odd"), ["even", "odd"]
    prompt, ideal = f"Is {n} even or odd?", f"{n} is {'even' if n % 2 == 0 else 'odd'}."
  elif op == "kind":
    s = pick(rng, uni.species)
    label, choices = s.kind, sample(rng, [s.kind] + sample(rng, [k for k in KINDS
                                                                 if k != s.kind], 2), 3)
    prompt = f"Is a {s.name} {an(choices[0])}, {an(choices[1])} or {an(choices[2])}?"
    ideal = f"A {s.name} is {an(s.kind)}."
  else:
    label, choices = pick(rng, ("positive", "negative")), ["positive", "negative"]
    positive, town = label == "positive", pick(rng, uni.towns)
    if rng.random() < 0.5:
      word = pick(rng, _FOOD_WORDS[0 if positive else 1])
      review = f"The {pick(rng, FOODS)} in {town} was {word}."
    else:
      word = pick(rng, _PERSON_WORDS[0 if positive else 1])
      review = f"The {pick(rng, JOBS)} in {town} was {word} to me."
    prompt, ideal = f'Is this review positive or negative? "{review}"', f"It is {label}."
  return example("classify", user(prompt), ideal, op=op, answer=label, choices=choices)


# --- chat -------------------------------------------------------------------------------


def _turns(*contents: str) -> list[dict[str, str]]:
  roles = ("user", "assistant")
  return [{"role": roles[i % 2], "content": c} for i, c in enumerate(contents)]


def make_chat(rng, uni, cfg):
  p, s, pl = pick(rng, uni.people), pick(rng, uni.species), pick(rng, uni.places)
  op = pick(rng, ("color", "town", "name", "count", "place", "animal"))
  if op == "color":
    turns = _turns(f"Hi! I am {p.first} and my favourite color is {p.color}.",
                   f"Nice to meet you, {p.first}!", "What is my favourite color?")
    fact = Fact("", p.color, COLORS, f"Your favourite color is {p.color}.")
  elif op == "town":
    turns = _turns(f"My name is {p.first} and I live in {p.town}.",
                   f"Hello, {p.first}! How can I help you today?", "Which town do I live in?")
    fact = Fact("", p.town, uni.towns, f"You live in {p.town}.")
  elif op == "name":
    turns = _turns(f"Please call me {p.first}.", f"Of course, {p.first}.",
                   "What did I ask you to call me?")
    fact = Fact("", p.first, uni.first_names, f"You asked me to call you {p.first}.")
  elif op == "count":
    a, b = int(rng.integers(5, cfg.max_operand + 5)), int(rng.integers(1, 5))
    fruits = plural(pick(rng, FRUITS))
    turns = _turns(f"I have {a} {fruits} in my bag.", "That is a lot of fruit!",
                   f"I eat {b} of them. How many {fruits} do I have now?")
    fact = Fact("", a - b, None, f"You have {a - b} {fruits} now.")
  elif op == "place":
    turns = _turns(f"Tell me about {pl.name}.", f"{pl.name} is a town in the {pl.region}.",
                   "Which river runs through it?")
    fact = Fact("", pl.river, uni.rivers, f"The {pl.river} runs through {pl.name}.")
  else:
    turns = _turns(f"What is a {s.name}?", f"A {s.name} is {an(s.kind)}.",
                   "How many legs does it have?")
    fact = Fact("", s.legs, None, f"A {s.name} has {s.legs} legs.")
  return example("chat", turns, fact.sentence, op=op, **_value_spec(fact))


FAMILIES = (
    Family("facts", make_facts, flawed_value, check_fact),
    Family("closedqa", make_closedqa, flawed_value, check_fact),
    Family("extract", make_extract, flawed_extract, check_extract),
    Family("summarize", make_summarize, flawed_summarize, check_summarize),
    Family("classify", make_classify, flawed_value, check_fact),
    Family("chat", make_chat, flawed_value, check_fact),
)
