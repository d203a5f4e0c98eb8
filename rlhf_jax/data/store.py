"""Datasets stored as TFDS `array_record` files, built and read without TensorFlow.

`local_dataset` normalises local files once (`readers.read_records`), stores
each record as JSON text in a TFDS dataset inside the cache directory and
returns random-access `Source`s for its "train" and "validation" splits.
The dataset name holds a hash of everything that determines its content
(format, files with sizes and mtimes, options), so a changed file builds a
new dataset and an unchanged one is reused.

Crash and concurrency safety: TFDS writes into an `incomplete.*` directory
and renames it into place when done, so a crashed build leaves no dataset
behind; a file lock makes concurrent builders of one dataset wait for the
first and then reuse its result.
"""
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
from typing import Any, Callable, Sequence

from rlhf_jax.errors import UserError

_STORE_VERSION = 1  # Bump when the stored record layout changes.
_TXT_CHUNK_CHARS = 4096
_WORLD_PREFIX = "world:"
_SPLITS = ("train", "validation")


class Source(Sequence):
  """Random-access records: `len` and `[i]` → normalised dict; a grain data source."""

  def __init__(self, data: Any, decode: Callable[[Any], dict], fingerprint: str = ""):
    self._data = data
    self._decode = decode
    # What identifies the records (the token cache's key); "" = not cacheable.
    self.fingerprint = fingerprint

  def __len__(self) -> int:
    return len(self._data)

  def __getitem__(self, index: int) -> dict:
    if not -len(self) <= index < len(self):
      raise IndexError(f"record {index} of a source with {len(self)} records")
    return self._decode(self._data[index % len(self)])

  def __getitems__(self, indices: Sequence[int]) -> list[dict]:
    return [self._decode(item) for item in self._data.__getitems__(indices)]


class InMemorySource(Source):
  """A `Source` over a list of normalised records (tests, small generated data)."""

  def __init__(self, records: Sequence[dict]):
    super().__init__(list(records), lambda record: record)

  def __getitems__(self, indices: Sequence[int]) -> list[dict]:
    return [self._data[i] for i in indices]


def cache_dir(configured: str = "") -> str:
  """`configured`, else $RLHF_JAX_CACHE_DIR, else ~/.cache/rlhf_jax."""
  path = configured or os.environ.get("RLHF_JAX_CACHE_DIR") or "~/.cache/rlhf_jax"
  return os.path.abspath(os.path.expanduser(path))


@contextlib.contextmanager
def file_lock(path: str):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as lock_file:
    fcntl.flock(lock_file, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(lock_file, fcntl.LOCK_UN)


def _tfds():
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  tfds.disable_progress_bar()
  return tfds


def ensure_world(size: str, seed: int, cache: str = "") -> str:
  """Directory of the generated world (SIZE, SEED), generating it once into the cache."""
  from rlhf_jax.data import world  # pylint: disable=g-import-not-at-top
  root = os.path.join(cache_dir(cache), "world")
  # The format version in the name: worlds cached by an older generator or judge are rebuilt.
  name = f"{size}_seed{seed}_v{world.VERSION}"
  world_dir = os.path.join(root, name)
  if os.path.isdir(world_dir):
    return world_dir
  with file_lock(os.path.join(root, f".{name}.lock")):
    if not os.path.isdir(world_dir):
      tmp_dir = tempfile.mkdtemp(prefix=f".incomplete_{name}_", dir=root)
      try:
        world.write_world(tmp_dir, seed=seed, size=size)
        os.rename(tmp_dir, world_dir)
      finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
  return world_dir


def parse_world_spec(spec: str) -> tuple[str, int, str]:
  """"world:SIZE:SEED/KIND" → (SIZE, SEED, KIND)."""
  body = spec[len(_WORLD_PREFIX):]
  try:
    size_seed, kind = body.split("/")
    size, seed = size_seed.split(":")
    return size, int(seed), kind
  except ValueError:
    raise UserError(f"bad world data spec '{spec}'; write world:SIZE:SEED/KIND, "
                    "e.g. world:small:0/corpus") from None


def world_of(spec: str) -> str | None:
  """"world:SIZE:SEED" of a world data spec ("world:SIZE:SEED/KIND"); None for other data."""
  if not spec.startswith(_WORLD_PREFIX):
    return None
  size, seed, _ = parse_world_spec(spec)
  return f"{_WORLD_PREFIX}{size}:{seed}"


def _file_fingerprints(spec: str) -> list[tuple[str, int, int]]:
  from rlhf_jax.data import readers  # pylint: disable=g-import-not-at-top
  fingerprints = []
  for path in readers.expand_paths(spec):
    stat = os.stat(path)
    fingerprints.append((path, stat.st_size, stat.st_mtime_ns))
  return fingerprints


def _split_records(records: list[dict], valid_fraction: float, spec: str):
  """(train, validation): the last `valid_fraction` of records, at least one each."""
  if not 0.0 < valid_fraction < 1.0:
    raise UserError(f"valid_fraction={valid_fraction} must be in (0, 1); "
                    "fix --config.data.valid_fraction or pass --config.data.valid_path")
  if len(records) < 2:
    raise UserError(f"'{spec}' has {len(records)} record(s), too few to split off validation; "
                    "add data or pass --config.data.valid_path")
  num_valid = min(len(records) - 1, max(1, round(len(records) * valid_fraction)))
  return records[:-num_valid], records[-num_valid:]


def _make_builder(name: str, fmt: str, splits: dict[str, list[dict]], data_dir: str):
  """A TFDS builder whose splits hold `splits` as JSON text, one example per record."""
  tfds = _tfds()

  class _Builder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
      return tfds.core.DatasetInfo(
          builder=self, description=f"rlhf_jax {fmt} records as JSON text.",
          features=tfds.features.FeaturesDict({"record": tfds.features.Text()}),
          disable_shuffling=True)

    def _split_generators(self, dl_manager):
      del dl_manager
      return {split: self._generate_examples(records) for split, records in splits.items()}

    def _generate_examples(self, records):
      for index, record in enumerate(records):
        yield index, {"record": json.dumps(record, ensure_ascii=False)}

  _Builder.name = name
  return _Builder(data_dir=data_dir, file_format="array_record")


def _decode_json_record(example: dict) -> dict:
  return json.loads(example["record"])


def _open_splits(builder) -> dict[str, Source]:
  return {split: Source(builder.as_data_source(split=split), _decode_json_record,
                        f"{builder.name}/{builder.version}/{split}")
          for split in builder.info.splits}


def local_dataset(spec: str, fmt: str, *, valid_spec: str = "", valid_fraction: float = 0.1,
                  skip_malformed: bool = False, text_key: str = "text",
                  cache: str = "") -> dict[str, Source]:
  """{"train", "validation"} Sources of local files in `fmt`, built once into the cache.

  World specs also give the world's held-out "test" split (for evaluation).
  """
  from rlhf_jax.data import readers  # pylint: disable=g-import-not-at-top
  test_spec = ""
  if spec.startswith(_WORLD_PREFIX):
    size, seed, kind = parse_world_spec(spec)
    world_dir = ensure_world(size, seed, cache)
    spec = os.path.join(world_dir, kind, "train.jsonl")
    valid_spec = valid_spec or os.path.join(world_dir, kind, "valid.jsonl")
    test_spec = os.path.join(world_dir, kind, "test.jsonl")
  key = {"version": _STORE_VERSION, "fmt": fmt, "files": _file_fingerprints(spec),
         "valid_files": _file_fingerprints(valid_spec) if valid_spec else [],
         "test_files": _file_fingerprints(test_spec) if test_spec else [],
         "valid_fraction": None if valid_spec else valid_fraction,
         "skip_malformed": skip_malformed, "text_key": text_key,
         "txt_chunk_chars": _TXT_CHUNK_CHARS}
  digest = hashlib.sha256(json.dumps(key).encode()).hexdigest()[:16]
  name = f"rlhf_jax_{fmt}_{digest}"
  data_dir = os.path.join(cache_dir(cache), "tfds")

  def read(path_spec):
    records, skipped = readers.read_records(
        path_spec, fmt, skip_malformed=skip_malformed, text_key=text_key,
        txt_chunk_chars=_TXT_CHUNK_CHARS)
    logging.info("Read %d %s records from '%s' (%d malformed skipped).",
                 len(records), fmt, path_spec, skipped)
    return records

  # A builder reads the dataset's info when constructed: build a new one after any wait, so
  # a dataset that another process finished meanwhile is opened with its splits.
  if _make_builder(name, fmt, {}, data_dir).is_prepared():
    return _open_splits(_make_builder(name, fmt, {}, data_dir))
  with file_lock(os.path.join(data_dir, f".{name}.lock")):
    builder = _make_builder(name, fmt, {}, data_dir)
    if not builder.is_prepared():
      records = read(spec)
      if valid_spec:
        splits = {"train": records, "validation": read(valid_spec)}
      else:
        splits = dict(zip(_SPLITS, _split_records(records, valid_fraction, spec)))
      if test_spec:
        splits["test"] = read(test_spec)
      logging.info("Building %s dataset %s in %s: %d train, %d validation records.", fmt, name,
                   data_dir, len(splits["train"]), len(splits["validation"]))
      builder = _make_builder(name, fmt, splits, data_dir)
      builder.download_and_prepare()
  return _open_splits(builder)


def _catalog_decoder(text_key: str) -> Callable[[dict], dict]:
  def decode(example: dict) -> dict:
    text = example[text_key]
    return {"text": text.decode("utf-8") if isinstance(text, bytes) else str(text),
            "doc_end": True}
  return decode


def catalog_dataset(name: str, *, text_key: str = "text",
                    data_dir: str = "") -> dict[str, Source]:
  """{"train", "validation"} corpus Sources of a TFDS catalog dataset (downloads once).

  Falls back to the "test" split when the dataset has no "validation" split.
  """
  tfds = _tfds()
  data_dir = data_dir or os.path.join(cache_dir(), "tfds")
  try:
    builder = tfds.builder(name, file_format="array_record", data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError as e:
    raise UserError(f"TFDS has no dataset '{name}'; fix --config.data.tfds_name "
                    "or pass a local file via --config.data.path") from e
  try:
    builder.download_and_prepare()
  except Exception as e:  # Offline or unreachable hosts raise many kinds of errors.
    raise UserError(f"TFDS dataset '{name}' could not be downloaded ({type(e).__name__}: "
                    f"{str(e)[:200]}); pass a local file via --config.data.path") from e
  splits = builder.info.splits
  valid_split = "validation" if "validation" in splits else "test"
  if "train" not in splits or valid_split not in splits:
    raise UserError(f"TFDS dataset '{name}' has splits {sorted(splits)}, not train and "
                    "validation/test; pass local files via --config.data.path")
  features = builder.info.features
  if text_key not in features:
    raise UserError(f"TFDS dataset '{name}' has no feature '{text_key}' (it has "
                    f"{sorted(features)}); set --config.data.text_key")
  decode = _catalog_decoder(text_key)
  return {split: Source(builder.as_data_source(split=tfds_split), decode,
                        f"{name}/{builder.version}/{tfds_split}/{text_key}")
          for split, tfds_split in (("train", "train"), ("validation", valid_split))}
