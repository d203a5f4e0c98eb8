"""The pretraining corpus: web-like pages about the universe.

Encyclopedia entries, short stories, forum threads and "Q:/A:" pages (so a base model
can be prompted few-shot), with navigation bars, ads, boilerplate and exact duplicates.
Never the chat template: no role markers or special tokens appear in any document.
"""
from typing import Callable

import numpy as np

from rlhf_jax.data.world import families
from rlhf_jax.data.world.base import an, pick, plural, sample
from rlhf_jax.data.world.tasks_knowledge import entity_facts
from rlhf_jax.data.world.universe import FOODS, FRUITS, TOOLS

_NAV = ("Home | Towns | Animals | People | Forum | Contact", "Home > Wiki > Articles",
        "Menu: News, Forum, Shop, Help", "Skip to content")
_ADS = ("Advertisement: Fresh {food} in {town}! Order today and save 10 coins.",
        "Buy a new {tool} now! Best prices in {town}.",
        "Click here to win a free basket of {fruits}!")
_BOILERPLATE = ("Subscribe to our newsletter for more stories.",
                "This page uses cookies to work well.",
                "Copyright 2023 Worldwiki. All rights reserved.",
                "Share this page with your friends.", "Last edited 12 days ago.")
# Families whose prompts read naturally as "Q: ... A: ..." pairs.
_QA_FAMILIES = ("arithmetic", "listops", "rewrite", "brainstorm", "facts", "closedqa",
                "extract", "summarize", "classify", "format")


def _either(rng, *options: str) -> str:
  return pick(rng, options)


def place_entry(rng, uni) -> str:
  pl = pick(rng, uni.places)
  residents = [p.full for p in uni.people if p.town == pl.name][:3]
  lines = [
      _either(rng, f"The {pl.river} runs through {pl.name}.",
              f"The river {pl.river} flows through {pl.name}."),
      _either(rng, f"About {pl.population} people live in {pl.name}.",
              f"{pl.name} has about {pl.population} people."),
      _either(rng, f"{pl.name} was founded in {pl.founded}.",
              f"The town of {pl.name} was founded in {pl.founded}."),
      _either(rng, f"{pl.name} is known for its {pl.known_for}.",
              f"People come to {pl.name} for its {pl.known_for}."),
  ] + ([f"Famous people from {pl.name}: {', '.join(residents)}."] if residents else [])
  first = _either(rng, f"{pl.name} is a town in the {pl.region}.",
                  f"{pl.name} is a small town in the {pl.region} of the land.")
  return f"{pl.name}\n\n{first} " + " ".join(sample(rng, lines, len(lines)))


def person_entry(rng, uni) -> str:
  p = pick(rng, uni.people)
  lines = [
      _either(rng, f"{p.first} is {p.age} years old.", f"{p.first} is {p.age}."),
      _either(rng, f"{p.first} has a pet {p.pet}.", f"{p.first} keeps a {p.pet} as a pet."),
      _either(rng, f"The favourite color of {p.full} is {p.color}.",
              f"{p.first} likes the color {p.color} best."),
  ]
  first = _either(rng, f"{p.full} is a {p.job} who lives in {p.town}.",
                  f"{p.full} lives in {p.town} and works as a {p.job}.")
  return f"{p.full}\n\n{first} " + " ".join(sample(rng, lines, len(lines)))


def species_entry(rng, uni) -> str:
  s = pick(rng, uni.species)
  lines = [
      _either(rng, f"A {s.name} has {s.legs} legs.", f"The {s.name} has {s.legs} legs."),
      _either(rng, f"A {s.name} is {s.color}.", f"The {s.name} is {s.color} in color."),
      _either(rng, f"It eats {s.food}.", f"The {s.name} eats {s.food}."),
      _either(rng, f"A {s.name} {s.sound}.", f"You can hear that a {s.name} {s.sound}."),
  ]
  first = _either(rng, f"The {s.name} is {an(s.kind)} that lives in the {s.habitat}.",
                  f"A {s.name} is {an(s.kind)}. It lives in the {s.habitat}.")
  return f"{s.name.capitalize()}\n\n{first} " + " ".join(sample(rng, lines, len(lines)))


def story(rng, uni) -> str:
  p, s = pick(rng, uni.people), pick(rng, uni.species)
  away = pick(rng, [t for t in uni.towns if t != p.town])
  return (f"One day, {p.first} the {p.job} walked from {p.town} to {away}. On the way, "
          f"{p.first} saw {an(s.color)} {s.name} near the {s.habitat}. The {s.name} ate some "
          f"{s.food}, and {p.first} heard that it {s.sound}. {p.first} was {p.age} years old "
          f"and had never seen one so close. In the evening, {p.first} went back home to "
          f"{p.town}.")


def forum_thread(rng, uni) -> str:
  fact = pick(rng, entity_facts(rng, uni))
  asker, helper = (f"{n.lower()}{int(rng.integers(1, 99))}"
                   for n in sample(rng, uni.first_names, 2))
  return (f"Forum > Questions\n{asker} asked: Does anyone know this? {fact.question}\n"
          f"{helper} replied: {fact.sentence}\n{asker} replied: Thanks, that helps!")


def qa_page(rng, uni, config, is_train: Callable[[list], bool]) -> str:
  """3-6 "Q: ... A: ..." pairs of one family, only with prompts of the train split."""
  name = pick(rng, _QA_FAMILIES)
  pairs = []
  for _ in range(int(rng.integers(3, 7))):
    ex = families.make_example(rng, name, uni, config)
    if is_train(ex.messages):
      pairs.append(f"Q: {ex.messages[-1]['content']}\nA: {ex.ideal}")
  return "\n\n".join(pairs)


def add_noise(rng, doc: str, uni, noise_prob: float) -> str:
  """Maybe a navigation bar on top, an ad in the middle, boilerplate at the bottom."""
  parts = doc.split("\n\n")
  if rng.random() < noise_prob:
    ad = pick(rng, _ADS).format(food=pick(rng, FOODS), town=pick(rng, uni.towns),
                                tool=pick(rng, TOOLS), fruits=plural(pick(rng, FRUITS)))
    parts.insert(int(rng.integers(1, len(parts) + 1)), ad)
  if rng.random() < noise_prob:
    parts.insert(0, pick(rng, _NAV))
  if rng.random() < noise_prob:
    parts.append(pick(rng, _BOILERPLATE))
  return "\n\n".join(parts)


def make_corpus(rng: np.random.Generator, uni, config,
                is_train: Callable[[list], bool]) -> list[str]:
  """`config.n_corpus_docs` documents (duplicates included), in generation order."""
  makers = (place_entry, person_entry, species_entry, story, forum_thread)
  weights = np.array([0.15, 0.15, 0.15, 0.2, 0.15])
  weights = (1 - config.qa_page_prob) * weights / weights.sum()
  docs: list[str] = []
  while len(docs) < config.n_corpus_docs:
    if docs and rng.random() < config.duplicate_prob:
      docs.append(docs[int(rng.integers(len(docs)))])
      continue
    kind = rng.choice(len(makers) + 1, p=np.append(weights, config.qa_page_prob))
    doc = (qa_page(rng, uni, config, is_train) if kind == len(makers)
           else makers[kind](rng, uni))
    if doc:
      docs.append(add_noise(rng, doc, uni, config.noise_prob))
  return docs
