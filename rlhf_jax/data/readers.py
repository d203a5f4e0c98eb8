"""Local data files → normalised records (DESIGN §3.8), in pure Python.

`read_records` is what the dataset builders call: it expands the path spec,
reads JSONL (or plain `.txt` for the corpus, `.gz` of either) and normalises
each record with `formats`. File problems and malformed records are
`UserError`s naming `file:line`; malformed records may be skipped instead.
"""
import glob
import gzip
import json
import logging
import os
from typing import Iterator
import zlib

from rlhf_jax.data import formats
from rlhf_jax.errors import UserError

FORMATS = ("corpus", "sft", "preferences", "prompts")
_GLOB_CHARS = "*?["
_LOGGED_PROBLEMS = 5
_SKIP_HINT = "fix the record or set --config.data.skip_malformed=True"


def expand_paths(spec: str, flag: str = "--config.data.path") -> list[str]:
  """Comma-separated files, globs or directories → sorted, de-duplicated absolute files.

  Directories contribute every file inside them, recursively, except hidden
  ones (names starting with "."). Every entry must match a file, and no
  matched file may be empty. `flag` is the setting that gave `spec`, for messages.
  """
  entries = [entry.strip() for entry in spec.split(",") if entry.strip()]
  if not entries:
    raise UserError(f"data path is empty; set {flag}")
  paths = set()
  for entry in entries:
    matched = _expand_entry(os.path.expanduser(entry))
    if not matched:
      raise UserError(f"data path '{entry}' matches no file; check {flag}")
    paths.update(os.path.abspath(path) for path in matched)
  for path in sorted(paths):
    if os.path.getsize(path) == 0:
      raise UserError(f"data file '{path}' is empty; remove it or fix {flag}")
  return sorted(paths)


def _expand_entry(entry: str) -> list[str]:
  is_glob = any(c in entry for c in _GLOB_CHARS)
  candidates = glob.glob(entry, recursive=True) if is_glob else [entry]
  files = []
  for candidate in candidates:
    if os.path.isdir(candidate):
      files.extend(_files_under(candidate))
    elif os.path.isfile(candidate):
      files.append(candidate)
  return files


def _files_under(directory: str) -> list[str]:
  files = []
  for root, subdirs, names in os.walk(directory):
    subdirs[:] = [d for d in subdirs if not d.startswith(".")]
    files.extend(os.path.join(root, name) for name in names if not name.startswith("."))
  return sorted(files)


def _iter_text_lines(path: str) -> Iterator[tuple[int, str]]:
  """(1-based line number, line with its newline), decoded as UTF-8; `.gz` transparently."""
  opener = gzip.open if path.endswith(".gz") else open
  try:
    with opener(path, "rb") as f:
      for lineno, raw in enumerate(f, start=1):
        try:
          line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
          raise UserError(f"{path}:{lineno}: not valid UTF-8 (byte {e.start + 1} of the line); "
                          "re-encode the file as UTF-8") from None
        yield lineno, line
  except (OSError, EOFError, zlib.error) as e:
    raise UserError(f"cannot read '{path}' ({e}); check the file "
                    "(a `.gz` name must hold gzip data)") from None


def iter_lines(path: str) -> Iterator[tuple[int, str]]:
  """(1-based line number, line without its trailing newline) of a text file."""
  for lineno, line in _iter_text_lines(path):
    yield lineno, line.rstrip("\r\n")


def _is_plain_text(path: str) -> bool:
  return path.removesuffix(".gz").endswith(".txt")


def _split_long_line(line: str, chunk_chars: int) -> list[str]:
  return [line[i:i + chunk_chars] for i in range(0, len(line), chunk_chars)]


def _txt_chunks(lines: Iterator[str], chunk_chars: int) -> list[str]:
  """Lines (with their newlines) → chunks of ≤ chunk_chars that concatenate back exactly.

  Chunks end at line boundaries; only a line longer than a chunk is cut mid-line.
  """
  chunks, current = [], ""
  for line in lines:
    if len(current) + len(line) > chunk_chars and current:
      chunks.append(current)
      current = ""
    if len(line) > chunk_chars:
      *full, current = _split_long_line(line, chunk_chars)
      chunks.extend(full)
    else:
      current += line
  if current:
    chunks.append(current)
  return chunks


def _txt_documents(path: str, chunk_chars: int) -> list[dict]:
  """A plain text file is one document: its chunks, the last marked doc_end."""
  chunks = _txt_chunks((line for _, line in _iter_text_lines(path)), chunk_chars)
  return [{"text": chunk, "doc_end": i == len(chunks) - 1} for i, chunk in enumerate(chunks)]


def _normalize_line(line: str, fmt: str, text_key: str) -> list[dict]:
  try:
    obj = json.loads(line)
  except json.JSONDecodeError as e:
    raise formats.FormatError(f"invalid JSON ({e.msg} at column {e.colno})") from None
  if not isinstance(obj, dict):
    raise formats.FormatError(f"expected a JSON object, got {formats.json_type_name(obj)}")
  if fmt == "corpus":
    return [formats.normalize_corpus(obj, text_key)]
  if fmt == "sft":
    return formats.normalize_sft(obj)
  if fmt == "preferences":
    return [formats.normalize_preferences(obj)]
  return [formats.normalize_prompt(obj)]


def read_records(spec: str, fmt: str, *, skip_malformed: bool = False, text_key: str = "text",
                 txt_chunk_chars: int = 4096) -> tuple[list[dict], int]:
  """All records of the files in `spec`, normalised to `fmt`, and how many were skipped.

  Records come in file order (files sorted). Blank JSONL lines are not records.
  Undecodable bytes are always an error: the file, not one record, is wrong.
  """
  if fmt not in FORMATS:
    raise UserError(f"unknown data format '{fmt}'; use one of {', '.join(FORMATS)}")
  if txt_chunk_chars < 1:
    raise UserError(f"txt_chunk_chars must be positive, got {txt_chunk_chars}")
  records, skipped = [], 0
  for path in expand_paths(spec):
    if _is_plain_text(path):
      if fmt != "corpus":
        raise UserError(f"'{path}' is plain text, which only the corpus format reads; "
                        f"give {fmt} data as JSONL")
      records.extend(_txt_documents(path, txt_chunk_chars))
      continue
    for lineno, line in iter_lines(path):
      if not line.strip():
        continue
      try:
        records.extend(_normalize_line(line, fmt, text_key))
      except formats.FormatError as e:
        if not skip_malformed:
          raise UserError(f"{path}:{lineno}: {e}; {_SKIP_HINT}") from None
        if skipped < _LOGGED_PROBLEMS:
          logging.warning("Skipping malformed %s record %s:%d: %s", fmt, path, lineno, e)
        skipped += 1
  if skipped:
    logging.warning("Skipped %d malformed %s records in '%s'.", skipped, fmt, spec)
  if not records:
    raise UserError(f"no {fmt} records in '{spec}' ({skipped} malformed skipped); "
                    "check --config.data.path and the data format")
  return records, skipped
