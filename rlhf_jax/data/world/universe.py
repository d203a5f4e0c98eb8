"""The generated universe: places, people and animal species with attributes.

Names are built from a few syllables so a ~2k-token byte-level BPE covers them;
all other words come from the short fixed lists below.
"""
import dataclasses

import numpy as np

COLORS = ("red", "blue", "green", "yellow", "white", "black", "brown", "orange", "gray", "pink")
FRUITS = ("apple", "pear", "plum", "fig", "lime", "lemon", "cherry", "grape", "peach", "melon")
JOBS = ("baker", "farmer", "teacher", "doctor", "painter", "sailor", "miner", "weaver",
        "potter", "singer")
TOOLS = ("hammer", "drill", "rope", "spade", "ladder", "needle", "brush", "axe", "bucket", "knife")
FOODS = ("bread", "cheese", "honey", "rice", "soup", "fish", "nuts", "beans", "cake", "jam")
REGIONS = ("north", "south", "east", "west", "hills", "coast")
HABITATS = ("forest", "lake", "desert", "marsh", "meadow", "cave")
KIND_LEGS = {"bird": (2,), "fish": (0,), "mammal": (4,), "insect": (6,), "spider": (8,)}
KINDS = tuple(KIND_LEGS)
SOUNDS = ("chirps", "hums", "hisses", "barks", "clicks", "sings")

# Fixed categories for brainstorming; the universe adds "towns" and "animals".
CATEGORIES = {"colors": COLORS, "fruits": FRUITS, "jobs": JOBS, "tools": TOOLS, "foods": FOODS}

_ONSETS = ("b", "br", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "tr")
_VOWELS = ("a", "e", "i", "o", "u", "ai", "ei")
_CODAS = ("", "", "n", "r", "l", "m", "s", "k")
_PLACE_SUFFIXES = ("vale", "ford", "ton", "by", "wick", "moor", "stead", "holm")
# Generated names must not be ordinary words the templates use.
_COMMON_WORDS = (
    "the and was has his her him man men ten son sun run fun bun gun ban bin pin pen tin "
    "ton tan van far bar car tar for nor per sir fir bus gas dam ram rim dim sam tim kin "
    "mat rat sat bat sin din bed red led fed mad sad bad lad mum rum sum bel del mel sel tel "
    "fin fen fan fur bail bum brain bran brim bra dais den don dos fail fair gain gal gel gem "
    "gin gum lain lair lam mail maim main mar mil mis mom nail nil nun pail pain pair pal pan "
    "par pun pus rail rain rein rem ran sail sal sol tail tom tram trail train trek trim "
    "vain veil vein vim von zen kit lit sit bit fit pit nan sea see bee tea key bay day may "
    "ray say way lay pay boy toy buy die lie tie pie bar mar tar lis dim bor nor").split()
_RESERVED = set(COLORS + FRUITS + JOBS + TOOLS + FOODS + REGIONS + HABITATS + KINDS
                + SOUNDS + tuple(_COMMON_WORDS))


@dataclasses.dataclass(frozen=True)
class Place:
  name: str
  region: str
  river: str
  population: int
  founded: int
  known_for: str


@dataclasses.dataclass(frozen=True)
class Person:
  first: str
  last: str
  town: str
  job: str
  age: int
  color: str
  pet: str

  @property
  def full(self) -> str:
    return f"{self.first} {self.last}"


@dataclasses.dataclass(frozen=True)
class Species:
  name: str
  kind: str
  legs: int
  color: str
  habitat: str
  food: str
  sound: str


@dataclasses.dataclass(frozen=True)
class Universe:
  places: tuple[Place, ...]
  people: tuple[Person, ...]
  species: tuple[Species, ...]

  @property
  def towns(self) -> tuple[str, ...]:
    return tuple(p.name for p in self.places)

  @property
  def rivers(self) -> tuple[str, ...]:
    return tuple(sorted({p.river for p in self.places}))

  @property
  def animals(self) -> tuple[str, ...]:
    return tuple(s.name for s in self.species)

  @property
  def first_names(self) -> tuple[str, ...]:
    return tuple(p.first for p in self.people)

  def categories(self) -> dict[str, tuple[str, ...]]:
    return {**CATEGORIES, "towns": self.towns, "animals": self.animals}

  def place(self, name: str) -> Place:
    return next(p for p in self.places if p.name == name)


def _syllable(rng: np.random.Generator) -> str:
  return (_ONSETS[rng.integers(len(_ONSETS))] + _VOWELS[rng.integers(len(_VOWELS))]
          + _CODAS[rng.integers(len(_CODAS))])


def _unique_names(rng, count, make, taken: set[str]) -> list[str]:
  """`count` new names from `make(rng)`, none in `taken` (which is updated)."""
  names = []
  while len(names) < count:
    name = make(rng)
    if len(name) >= 3 and name.lower() not in taken:
      taken.add(name.lower())
      names.append(name)
  return names


def make_universe(rng: np.random.Generator, n_places: int, n_people: int,
                  n_species: int) -> Universe:
  """Samples a universe; every name is unique across all entities and word lists."""
  taken = set(_RESERVED)
  pick = lambda seq: seq[rng.integers(len(seq))]
  place_names = _unique_names(
      rng, n_places, lambda r: (_syllable(r) + pick(_PLACE_SUFFIXES)).capitalize(), taken)
  n_rivers = max(2, n_places // 3)
  rivers = _unique_names(rng, n_rivers, lambda r: _syllable(r).capitalize(), taken)
  places = tuple(
      Place(name, pick(REGIONS), pick(rivers), int(rng.integers(5, 99)) * 100,
            int(rng.integers(1700, 1990)), pick(FOODS))
      for name in place_names)
  species_names = _unique_names(rng, n_species, _syllable, taken)
  species = []
  for name in species_names:
    kind = pick(KINDS)
    species.append(Species(name, kind, KIND_LEGS[kind][0], pick(COLORS), pick(HABITATS),
                           pick(FOODS), pick(SOUNDS)))
  firsts = _unique_names(
      rng, n_people, lambda r: (_syllable(r) + _syllable(r)).capitalize()[:7], taken)
  lasts = _unique_names(
      rng, n_people, lambda r: (_syllable(r) + pick(("er", "son", "an", "ley"))).capitalize(),
      taken)
  people = tuple(
      Person(first, last, pick(place_names), pick(JOBS), int(rng.integers(18, 80)),
             pick(COLORS), pick(species_names))
      for first, last in zip(firsts, lasts))
  return Universe(places, people, tuple(species))
