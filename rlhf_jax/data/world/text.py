"""Parsing helpers shared by the gold checkers: words, numbers, list items, mentions."""
import re

_ITEM_SPLIT = re.compile(r",|;|\n|\band\b", re.IGNORECASE)
_BULLET = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s*")
_NUMBER = re.compile(r"\d+")


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


def mentions(text: str, term: str) -> bool:
  """Whether `term` occurs in `text` as whole words, ignoring case and spacing."""
  pattern = r"(?<!\w)" + r"\s+".join(map(re.escape, term.split())) + r"(?!\w)"
  return re.search(pattern, text, re.IGNORECASE) is not None


def mentioned(text: str, terms) -> list[str]:
  return [term for term in terms if mentions(text, str(term))]


def is_upper(text: str) -> bool:
  """At least one letter and no lower-case letter."""
  return any(c.isalpha() for c in text) and not any(c.islower() for c in text)
