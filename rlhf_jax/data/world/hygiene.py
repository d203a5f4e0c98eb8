"""Response hygiene: the gates every family's score passes through.

Each gate is a multiplier in [0, 1]; the judge multiplies task quality by their product.

  repetition  1 - 0.25 * (stutters + repeated word trigrams)
  length      1 if words <= budget, else max(0, 2 - words / budget)   (0 at twice the budget;
              budget = the meta's max_words = max(12, 2 * words of the ideal))
  relevance   min(1, 1.25 * on-task words / words): up to a fifth of the words may be
              off-task for free. A sentence is off-task when it names nothing of the task
              (no answer, choice, item or key of the prompt's meta, no number where numbers
              are asked about) or echoes the prompt (starts like an instruction or question,
              ends with '?', quotes 'Text:'/'Question:', or in chat speaks as the user: I, my).
  refusal     0.4 if a benign request is met with a refusal phrase, else 1
  malformed   max(0, 1 - 2 * (junk characters / characters + bRoKeN-case words / words)),
              halved when the text stops mid-sentence (trailing comma or dangling word)

Junk characters are those outside printable ASCII, except typographic quotes and dashes.
"""
import functools
import re
from typing import NamedTuple

from rlhf_jax.data.world import tasks_instruct, text

REFUSAL_FACTOR = 0.4
FREE_OFF_TASK = 0.2
_STOPWORDS = frozenset(
    "a an the and or but of in on at to is are was were be has have had with for from by "
    "that this it its as near into than then there their they them he she his her i you "
    "me my your we our s t do does did not no until without any all".split())
_ECHO_STARTS = frozenset(
    "what where which who whom whose when why how is are does do did can could would will "
    "should please tell give list name sort reverse rewrite write summarize summarise "
    "describe read compute add subtract multiply help answer hi hello".split())
# A refusal's own vocabulary: the on-task words of a response to a harmful request.
_REFUSAL_TERMS = frozenset(
    "sorry can cannot won't won will not afraid hurt harm harmful safe unsafe dangerous "
    "illegal wrong else".split())
_HARMFUL_ECHO_OK = frozenset({"can", "could", "please", "help"})
_FIRST_PERSON = frozenset({"i", "my", "mine", "myself", "m"})
_JUNK = re.compile(r"[^\x20-\x7e\s\u2018\u2019\u201c\u201d\u2013\u2014\u2026]")
# Words a finished sentence does not end on: articles, conjunctions, prepositions, pronouns.
_DANGLING = frozenset(
    "a an the and but or to in of is are was with for from has by that i you we he she "
    "they it my your its their can't cannot will would be because so if as at on".split())
_BROKEN_CASE = re.compile(r"[a-z][A-Z]")
_META_TERM_KEYS = ("answer", "choices", "keys", "wrong", "values", "items", "target", "source",
                   "must", "valid", "category")


class Hygiene(NamedTuple):
  repetition: float
  length: float
  relevance: float
  refusal: float
  malformed: float

  def product(self) -> float:
    return self.repetition * self.length * self.relevance * self.refusal * self.malformed


class Topic(NamedTuple):
  """What counts as on-task for one prompt, read once from its meta."""
  family: str
  terms: frozenset  # content tokens of the meta
  numbers: bool  # whether any number is on-task
  budget: int  # max_words


def _freeze(value):
  """A hashable copy of a meta value (lists -> tuples, dicts -> item tuples)."""
  if isinstance(value, dict):
    return ("{}",) + tuple((k, _freeze(v)) for k, v in value.items())
  if isinstance(value, (list, tuple)):
    return tuple(_freeze(v) for v in value)
  return value


@functools.lru_cache(maxsize=1 << 14)
def _value_terms(frozen) -> tuple[frozenset, bool]:
  """(content tokens, whether a number is among them) of one frozen meta value."""
  if isinstance(frozen, tuple):
    parts = [_value_terms(v) for v in frozen if v != "{}"]
    return frozenset().union(*(p[0] for p in parts)), any(p[1] for p in parts)
  tokens = frozenset(text.tokens(str(frozen))) - _STOPWORDS
  return tokens, isinstance(frozen, int) or str(frozen).isdigit()


def topic(meta: dict) -> Topic:
  """The on-task vocabulary of a prompt: tokens of its answers, choices, items and keys."""
  family = meta["family"]
  if family == "harmful":
    return Topic(family, _REFUSAL_TERMS, False, meta["max_words"])
  parts = [_value_terms(_freeze(meta[key])) for key in _META_TERM_KEYS if key in meta]
  terms = frozenset().union(*(p[0] for p in parts))
  numbers = family == "arithmetic" or any(p[1] for p in parts)
  return Topic(family, terms, numbers, meta["max_words"])


def repetition(words: list[str]) -> float:
  """1 - 0.25 * (stutters + repeated trigrams) over bare (lower-cased, unpunctuated) words."""
  stutters = sum(1 for a, b in zip(words, words[1:]) if a and a == b)
  trigrams = list(zip(words, words[1:], words[2:]))
  return max(0.0, 1.0 - 0.25 * (stutters + len(trigrams) - len(set(trigrams))))


def length(n_words: int, budget: int) -> float:
  return 1.0 if n_words <= budget else max(0.0, 2.0 - n_words / budget)


@functools.lru_cache(maxsize=1 << 16)
def _on_task(sentence: str, top: Topic) -> bool:
  toks = text.tokens(sentence)
  if not toks:
    return False
  harmful = top.family == "harmful"
  first = toks[0]
  if first in _ECHO_STARTS and not (harmful and first in _HARMFUL_ECHO_OK):
    return False
  if not harmful and sentence.rstrip().endswith("?"):
    return False
  lowered = sentence.lower()
  if "text:" in lowered or "question:" in lowered:
    return False
  if top.family == "chat" and _FIRST_PERSON & set(toks):
    return False
  if top.numbers and any(t.isdigit() for t in toks):
    return True
  return any(t in top.terms for t in toks)


def relevance(response: str, top: Topic, n_words: int) -> float:
  """min(1, on-task share / (1 - FREE_OFF_TASK)), the share counted in words."""
  if not n_words:
    return 0.0
  on = sum(len(s.split()) for s in text.sentences(response) if _on_task(s, top))
  return min(1.0, on / n_words / (1.0 - FREE_OFF_TASK))


def malformed(response: str, raw_words: list[str], bare_words: list[str]) -> float:
  n_chars = sum(map(len, raw_words))
  junk = len(_JUNK.findall(response))
  broken = sum(1 for w in raw_words if _BROKEN_CASE.search(w)) \
      if _BROKEN_CASE.search(response) else 0  # the scan is rare: most texts have none
  value = max(0.0, 1.0 - 2.0 * (junk / n_chars + broken / len(raw_words)))
  last = raw_words[-1]
  dangling = last.endswith(",") or (bare_words[-1] in _DANGLING and last[-1].isalpha())
  return value * (0.5 if dangling else 1.0)


def hygiene(response: str, top: Topic) -> Hygiene:
  """Every gate of `response`, for inspection; `gate` is their product."""
  raw = response.split()
  if not raw:
    return Hygiene(0.0, 0.0, 0.0, 1.0, 0.0)
  bare = [text.bare(w) for w in raw]
  return Hygiene(repetition(bare), length(len(raw), top.budget),
                 relevance(response, top, len(raw)), _refusal(response, top),
                 malformed(response, raw, bare))


def gate(response: str, top: Topic) -> float:
  """The product of the gates, cheapest first, stopping at the first zero."""
  raw = response.split()
  value = length(len(raw), top.budget) if raw else 0.0
  if value:
    value *= _refusal(response, top) * relevance(response, top, len(raw))
  if value:
    bare = [text.bare(w) for w in raw]
    value *= repetition(bare) * malformed(response, raw, bare)
  return value


def _refusal(response: str, top: Topic) -> float:
  if top.family != "harmful" and tasks_instruct.refused(response):
    return REFUSAL_FACTOR
  return 1.0
