"""The pretraining corpus named by the `data` config block: sources and their weights.

One of `data.path` (local files, globs or `world:SIZE:SEED/corpus`),
`data.tfds_name` (a TFDS catalog dataset) or `data.mixture` (name →
{path or tfds_name, weight}) says where the text comes from; a `data.path`
given next to a config's `data.tfds_name` wins (a local copy for offline use).
"""
import logging
import os
from typing import Any, Iterator

from rlhf_jax.data import store
from rlhf_jax.errors import UserError

_ONE_OF = "set exactly one of --config.data.path, --config.data.tfds_name, --config.data.mixture"


def _splits(data_cfg, path: str, tfds_name: str, valid_path: str = "") -> dict[str, Any]:
  if tfds_name:
    data_dir = os.path.join(store.cache_dir(data_cfg.cache_dir), "tfds")
    return store.catalog_dataset(tfds_name, text_key=data_cfg.text_key, data_dir=data_dir)
  return store.local_dataset(path, "corpus", valid_spec=valid_path,
                             valid_fraction=data_cfg.valid_fraction,
                             skip_malformed=data_cfg.skip_malformed,
                             text_key=data_cfg.text_key, cache=data_cfg.cache_dir)


def corpus_sources(data_cfg) -> dict[str, list[tuple[str, store.Source, float]]]:
  """{"train": [(name, source, weight), ...], "validation": [...]}; weights sum to 1."""
  given = [key for key in ("path", "tfds_name", "mixture") if data_cfg[key]]
  if given == ["path", "tfds_name"]:
    # A local copy given on the command line replaces the config's catalog default.
    logging.info("data.path=%r replaces data.tfds_name=%r", data_cfg.path, data_cfg.tfds_name)
    given = ["path"]
  if len(given) != 1:
    raise UserError(f"the corpus is given by {given or 'none'} of the data keys; {_ONE_OF}")
  if data_cfg.valid_path and not data_cfg.path:
    raise UserError("--config.data.valid_path only applies with --config.data.path; "
                    "drop it or use data.path")
  if not data_cfg.mixture:
    tfds_name = "" if data_cfg.path else data_cfg.tfds_name
    name = tfds_name or "corpus"
    splits = _splits(data_cfg, data_cfg.path, tfds_name, data_cfg.valid_path)
    return {split: [(name, source, 1.0)] for split, source in splits.items()}
  entries = sorted(data_cfg.mixture.items())
  total_weight = 0.0
  for name, entry in entries:
    if bool(entry.get("path")) == bool(entry.get("tfds_name")):
      raise UserError(f"mixture source '{name}' needs exactly one of path and tfds_name; "
                      f"set --config.data.mixture.{name}.path or .tfds_name")
    if not entry.get("weight", 0) > 0:
      raise UserError(f"mixture source '{name}' has weight {entry.get('weight')}; "
                      f"set --config.data.mixture.{name}.weight to a positive number")
    total_weight += entry.weight
  sources = {"train": [], "validation": []}
  for name, entry in entries:
    splits = _splits(data_cfg, entry.get("path", ""), entry.get("tfds_name", ""))
    for split in sources:
      sources[split].append((name, splits[split], entry.weight / total_weight))
  return sources


def training_texts(sources: dict[str, list] | list, max_chars: int = 50_000_000) -> Iterator[str]:
  """Texts of the train sources for BPE training: about `max_chars`, split by weight."""
  train = sources["train"] if isinstance(sources, dict) else sources
  for _, source, weight in train:
    budget = int(max_chars * weight)
    for index in range(len(source)):
      if budget <= 0:
        break
      text = source[index]["text"][:budget]
      budget -= len(text)
      yield text
