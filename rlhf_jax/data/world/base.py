"""Types shared by the task families, and the checker for single-value answers."""
from typing import Any, Callable, NamedTuple

import numpy as np

from rlhf_jax.data.world import text


class Example(NamedTuple):
  """One task instance: the prompt turns, the judge's spec and the ideal response."""
  messages: list[dict[str, str]]  # alternating user/assistant turns ending with a user turn
  meta: dict[str, Any]  # everything the gold judge needs; JSON-serialisable
  ideal: str


class Parts(NamedTuple):
  """A family checker's verdict, each in [0, 1]; `shape` is the family's format check."""
  correctness: float
  completeness: float
  shape: float


class Family(NamedTuple):
  name: str
  make: Callable[..., Example]  # (rng, universe, config) -> Example
  flawed: Callable[..., dict[str, str]]  # (rng, example, universe) -> {tier: response}
  check: Callable[[dict, str], Parts]  # (meta, response) -> Parts


def pick(rng: np.random.Generator, seq):
  return seq[rng.integers(len(seq))]


def pick_other(rng: np.random.Generator, seq, value):
  """A random element of `seq` different from `value`."""
  return pick(rng, [x for x in seq if x != value])


def sample(rng: np.random.Generator, seq, n: int) -> list:
  """`n` distinct elements of `seq` in random order."""
  return [seq[i] for i in rng.permutation(len(seq))[:n]]


def plural(noun: str) -> str:
  if noun.endswith(("ch", "sh", "s", "x")):
    return noun + "es"
  if noun.endswith("y") and noun[-2] not in "aeiou":
    return noun[:-1] + "ies"
  return noun + "s"


def an(word: str) -> str:
  """The word with its indefinite article: 'an insect', 'a fish'."""
  return ("an " if word[0] in "aeiou" else "a ") + word


def user(content: str) -> list[dict[str, str]]:
  return [{"role": "user", "content": content}]


def example(family: str, messages, ideal: str, **spec) -> Example:
  """An Example whose meta holds the family, the spec and the length budget.

  max_words = max(12, 2 * words(ideal)): the judge's length gate scores longer answers down.
  """
  meta = {"family": family, "max_words": max(12, 2 * text.word_count(ideal)), **spec}
  return Example(messages, meta, ideal)


def replace_last(s: str, old: str, new: str) -> str:
  head, sep, tail = s.rpartition(old)
  return head + new + tail if sep else s


def check_value(response: str, answer, choices=None) -> Parts:
  """A single number or a single choice among `choices`; hedging does not pay.

  With k distinct values offered (numbers left of an '=' are work, not answers):
  correctness = 1/k^2 if the answer is among them else 0;
  completeness = 1 if any value of the right kind is given.
  """
  found = text.answer_numbers(response) if isinstance(answer, int) else text.mentioned(
      response, choices)
  if not found:
    return Parts(0.0, 0.0, 1.0)
  if answer not in found:
    return Parts(0.0, 1.0, 1.0)
  return Parts(1.0 / len(set(found)) ** 2, 1.0, 1.0)


def hedged_and_wrong(rng, ideal: str, answer, choices=None) -> dict[str, str]:
  """'partial' names the answer and a wrong one; 'wrong' swaps in a wrong one."""
  if isinstance(answer, int):
    other = answer + int(pick(rng, (-2, -1, 1, 2, 3))) if answer > 2 else answer + 1
    wrong = pick_other(rng, [answer + d for d in (-10, -5, -3, 3, 5, 10) if answer + d >= 0],
                       answer)
  else:
    other = wrong = pick_other(rng, choices, answer)
  return {"partial": replace_last(ideal, str(answer), f"{answer} or {other}"),
          "wrong": replace_last(ideal, str(answer), str(wrong))}
