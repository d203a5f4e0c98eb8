"""Parsing helpers shared by the gold checkers: words, numbers, list items, mentions."""
import functools
import re

_ITEM_SPLIT = re.compile(r",|;|\n|\band\b", re.IGNORECASE)
_BULLET = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s*")
_NUMBER = re.compile(r"\d+")
# The left side of a worked equation: "12 - 3 =", "3 times 4 is".
_WORK = re.compile(r"\d+(?:\s*(?:[-+*/x\u00d7]|times|plus|minus)\s*\d+)+\s*(?:=|is\b)",
                   re.IGNORECASE)
_TOKEN = re.compile(r"\w+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")


def normalize(text: str) -> str:
  """Collapses runs of whitespace and strips the ends."""
  return " ".join(text.split())


def words(text: str) -> list[str]:
  return text.split()


def word_count(text: str) -> int:
  return len(text.split())


def numbers(text: str) -> list[int]:
  """Every non-negative integer written with digits, in order."""
  return [int(n) for n in _NUMBER.findall(text)]


def answer_numbers(text: str) -> list[int]:
  """The numbers offered as answers: every number except the left sides of equations."""
  return numbers(_WORK.sub(" ", text))


def bare(word: str) -> str:
  """A word lower-cased without surrounding punctuation."""
  return word.strip(".,;:!?\"'()[]{}").lower()


def split_items(text: str) -> list[str]:
  """List items from commas, semicolons, newlines, 'and' or bullets, lower-cased.

  Text before the last colon of the first line ("Sorted: a, b") is dropped.
  """
  lines = text.strip().split("\n")
  if ":" in lines[0]:
    lines[0] = lines[0].rsplit(":", 1)[1]
  items = []
  for part in _ITEM_SPLIT.split("\n".join(lines)):
    item = _BULLET.sub("", part).strip().strip(".!?\"'").strip().lower()
    if item:
      items.append(normalize(item))
  return items


def bullet_lines(text: str) -> tuple[int, int]:
  """(number of non-empty lines, number of them that start with a bullet '-', '*' or '1.')."""
  lines = [line for line in text.strip().split("\n") if line.strip()]
  return len(lines), sum(bool(_BULLET.match(line)) for line in lines)


def tokens(text: str) -> list[str]:
  """Lower-cased runs of word characters: "Zei's saw!" -> ['zei', 's', 'saw']."""
  return _TOKEN.findall(text.lower())


def sentences(text: str) -> list[str]:
  """Non-empty sentences: split after . ! ? followed by space, and at line breaks."""
  return [s for s in (part.strip() for part in _SENTENCE_END.split(text)) if s]


def mentions(text: str, term) -> bool:
  """Whether `term` occurs in `text` as whole words, ignoring case and spacing."""
  return bool(mentioned(text, [term]))


def mentioned(text: str, terms) -> list:
  """The terms that occur in `text` as whole words (token runs), in the order given."""
  toks = tokens(text)
  present, joined = set(toks), " " + " ".join(toks) + " "
  found = []
  for term in terms:
    single, padded = _term(str(term))
    if single in present if single else padded and padded in joined:
      found.append(term)
  return found


@functools.lru_cache(maxsize=1 << 16)
def _term(term: str) -> tuple[str, str]:
  """(the token of a one-token term, or ''; ' the tokens joined ' of a longer one, or '')."""
  want = tokens(term)
  return (want[0], "") if len(want) == 1 else ("", f" {' '.join(want)} " if want else "")


def is_upper(text: str) -> bool:
  """At least one letter and no lower-case letter."""
  return any(c.isalpha() for c in text) and not any(c.islower() for c in text)
