"""Reading local files: path specs, decoding, file:line errors, skipping, `.txt` chunks."""
import gzip
import json
import logging
from pathlib import Path

import pytest

from rlhf_jax.data import readers
from rlhf_jax.errors import UserError

SHARED_DATA = Path(__file__).parents[2] / "shared" / "data"

GOOD = {
    "corpus": {"text": "a document"},
    "sft": {"prompt": "q", "response": "a"},
    "preferences": {"prompt": "q", "chosen": "good", "rejected": "bad"},
    "prompts": {"prompt": "q"},
}
HH_CHOSEN = "\n\nHuman: q\n\nAssistant: yes"
HH_REJECTED = "\n\nHuman: q\n\nAssistant: no"

# One bad line per format and input variant; each must be reported as FILE:3.
MALFORMED = [
    ("corpus", "{not json"),
    ("corpus", "[1, 2]"),
    ("corpus", {"body": "missing text key"}),
    ("corpus", {"text": 3}),
    ("corpus", {"text": ""}),
    ("sft", "{\"messages\": "),
    ("sft", {"messages": [{"role": "user", "content": "q"}]}),
    ("sft", {"messages": [{"role": "robot", "content": "q"},
                          {"role": "assistant", "content": "a"}]}),
    ("sft", {"prompt": "q", "response": ""}),
    ("sft", {"prompt": "q"}),
    ("sft", {"instruction": "i", "input": 5, "output": "o"}),
    ("sft", {"instruction": "i", "instances": [{"input": "x"}]}),
    ("sft", {"chosen": "\n\nHuman: no assistant turn"}),
    ("sft", {"text": "\n\nAssistant: a"}),
    ("sft", {"unrelated": 1}),
    ("preferences", "\"a string\""),
    ("preferences", {"prompt": "q", "chosen": "a"}),
    ("preferences", {"prompt": "q", "chosen": "a", "rejected": "a"}),
    ("preferences", {"prompt": "q", "responses": ["a", "b"], "ranking": [0, "1"]}),
    ("preferences", {"prompt": "q", "responses": ["a", "b"], "ranking": [0, 0]}),
    ("preferences", {"prompt": "q", "responses": ["a", "b", "c"], "ranking": [0, 1]}),
    ("preferences", {"chosen": "\n\nHuman: q", "rejected": "\n\nHuman: r"}),
    ("preferences", {"chosen": HH_CHOSEN, "rejected": 7}),
    ("prompts", "{}"),
    ("prompts", {"prompt": ""}),
    ("prompts", {"messages": [{"role": "user", "content": "q"},
                              {"role": "assistant", "content": "a"}]}),
    ("prompts", {"prompt": "q", "meta": 1}),
]


def write_jsonl(path, lines, *, gz=False):
  """Writes objects as JSON and strings verbatim, one per line."""
  text = "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines)
  data = text.encode("utf-8")
  path.write_bytes(gzip.compress(data) if gz else data)
  return str(path)


def test_expand_paths_files_globs_directories(tmp_path, monkeypatch):
  for name in ["b.jsonl", "a.jsonl", "sub/c.jsonl", "sub/deeper/d.txt", ".hidden", "sub/.x"]:
    (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / name).write_text("x\n")
  monkeypatch.chdir(tmp_path)
  assert readers.expand_paths("sub") == [
      str(tmp_path / "sub/c.jsonl"), str(tmp_path / "sub/deeper/d.txt")]
  assert readers.expand_paths(" b.jsonl , *.jsonl,a.jsonl") == [
      str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl")]
  assert readers.expand_paths(f"{tmp_path}/**/*.jsonl") == [
      str(tmp_path / p) for p in ["a.jsonl", "b.jsonl", "sub/c.jsonl"]]


@pytest.mark.parametrize("spec, problem", [
    ("nope.jsonl", "data path 'nope.jsonl' matches no file; check --config.data.path"),
    ("a.jsonl,*.parquet", "data path '\\*.parquet' matches no file"),
    ("empty_dir", "data path 'empty_dir' matches no file"),
    (" , ", "data path is empty"),
    ("empty.jsonl", "is empty"),
])
def test_expand_paths_errors(tmp_path, monkeypatch, spec, problem):
  (tmp_path / "a.jsonl").write_text("x\n")
  (tmp_path / "empty.jsonl").write_bytes(b"")
  (tmp_path / "empty_dir").mkdir()
  monkeypatch.chdir(tmp_path)
  with pytest.raises(UserError, match=problem):
    readers.expand_paths(spec)


@pytest.mark.parametrize("gz", [False, True])
def test_iter_lines_numbers_lines_and_strips_newlines(tmp_path, gz):
  data = "première\r\n\n{\"a\": 1}\nno newline at end".encode("utf-8")
  path = tmp_path / ("f.jsonl.gz" if gz else "f.jsonl")
  path.write_bytes(gzip.compress(data) if gz else data)
  assert list(readers.iter_lines(str(path))) == [
      (1, "première"), (2, ""), (3, "{\"a\": 1}"), (4, "no newline at end")]


@pytest.mark.parametrize("name, fmt", [("bad.txt", "corpus"), ("bad.jsonl.gz", "sft")])
def test_undecodable_bytes_name_file_and_line(tmp_path, name, fmt):
  data = b"\xc3\xa9 fine line\n\n" + b"caf\xe9 in latin-1\n"
  if fmt == "sft":
    data = json.dumps(GOOD["sft"]).encode() + b"\n\n" + b'{"prompt": "caf\xe9"}\n'
  path = tmp_path / name
  path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
  with pytest.raises(UserError, match=rf"{path}:3: not valid UTF-8 .*re-encode the file as UTF-8"):
    readers.read_records(str(path), fmt, skip_malformed=True)


def test_corrupt_gzip_is_a_user_error(tmp_path):
  path = tmp_path / "data.jsonl.gz"
  path.write_bytes(b"this is not gzip data")
  with pytest.raises(UserError, match="cannot read .*gzip"):
    readers.read_records(str(path), "corpus")


@pytest.mark.parametrize("fmt", readers.FORMATS)
def test_read_records_valid_file_in_order_with_blank_lines(tmp_path, fmt):
  first = dict(GOOD[fmt], meta={"n": 1})
  path = write_jsonl(tmp_path / "d.jsonl.gz", [first, "", "  ", GOOD[fmt]], gz=True)
  records, skipped = readers.read_records(path, fmt)
  assert skipped == 0 and len(records) == 2
  assert records[0]["meta"] == {"n": 1} and "meta" not in records[1]
  assert {k: v for k, v in records[0].items() if k != "meta"} == records[1]
  json.dumps(records)


def test_read_records_forms_per_format(tmp_path):
  sft = write_jsonl(tmp_path / "sft.jsonl", [
      {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]},
      {"instruction": "Add.", "instances": [{"input": "1 1", "output": "2"}, {"output": "0"}]},
      {"chosen": HH_CHOSEN, "rejected": HH_REJECTED}])
  records, _ = readers.read_records(sft, "sft")
  assert [r["messages"][-1]["content"] for r in records] == ["a", "2", "0", "yes"]
  prefs = write_jsonl(tmp_path / "prefs.json", [
      {"chosen": HH_CHOSEN, "rejected": HH_REJECTED},
      {"prompt": "q", "responses": ["x", "y", "z"], "ranking": [2, 0, 0]}])
  records, _ = readers.read_records(prefs, "preferences")
  assert records[0] == {"prompt": [{"role": "user", "content": "q"}],
                        "responses": ["yes", "no"], "ranking": [0, 1]}
  assert records[1]["ranking"] == [2, 0, 0]
  corpus = write_jsonl(tmp_path / "c.jsonl", [{"body": "b", "text": 1}])
  assert readers.read_records(corpus, "corpus", text_key="body")[0] == [
      {"text": "b", "doc_end": True}]


@pytest.mark.parametrize("fmt, bad_line", MALFORMED)
def test_malformed_record_names_file_and_line(tmp_path, fmt, bad_line):
  path = write_jsonl(tmp_path / "d.jsonl", [GOOD[fmt], "", bad_line, GOOD[fmt]])
  with pytest.raises(UserError) as error:
    readers.read_records(path, fmt)
  message = str(error.value)
  assert message.startswith(f"{path}:3: ")
  assert message.endswith("; fix the record or set --config.data.skip_malformed=True")
  assert "\n" not in message


@pytest.mark.parametrize("fmt", readers.FORMATS)
def test_skip_malformed_counts_logs_and_keeps_the_rest(tmp_path, fmt, caplog):
  bad_lines = [line for f, line in MALFORMED if f == fmt]
  lines = [GOOD[fmt]] + bad_lines + [dict(GOOD[fmt], meta={"last": True})]
  path = write_jsonl(tmp_path / "d.jsonl", lines)
  with caplog.at_level(logging.WARNING):
    records, skipped = readers.read_records(path, fmt, skip_malformed=True)
  assert skipped == len(bad_lines)
  assert len(records) == 2 and records[-1]["meta"] == {"last": True}
  logged = [r.getMessage() for r in caplog.records]
  assert f"{path}:2:" in logged[0]
  assert len(logged) == min(len(bad_lines), 5) + 1
  assert f"Skipped {len(bad_lines)} malformed" in logged[-1]


def test_only_malformed_records_is_an_error_even_when_skipping(tmp_path):
  path = write_jsonl(tmp_path / "d.jsonl", ["{bad", "[]"])
  with pytest.raises(UserError, match=r"no sft records in .*\(2 malformed skipped\)"):
    readers.read_records(path, "sft", skip_malformed=True)


def test_reader_usage_errors(tmp_path):
  path = write_jsonl(tmp_path / "d.jsonl", [GOOD["sft"]])
  with pytest.raises(UserError, match="unknown data format 'chat'; use one of corpus, sft"):
    readers.read_records(path, "chat")
  with pytest.raises(UserError, match="txt_chunk_chars must be positive"):
    readers.read_records(path, "corpus", txt_chunk_chars=0)
  (tmp_path / "notes.txt").write_text("plain\n")
  with pytest.raises(UserError, match="only the corpus format reads; give sft data as JSONL"):
    readers.read_records(str(tmp_path / "notes.txt"), "sft")
  blank = write_jsonl(tmp_path / "blank.jsonl", ["", " "])
  with pytest.raises(UserError, match="no prompts records"):
    readers.read_records(blank, "prompts")


TXT_CASES = {
    "short_lines": "first line\nsecond\n\nthird without newline",
    "unicode": "héllo wörld 你好 🙂\n" * 50 + "ünïcödé ✓ 𝔘\n",
    "long_lines": "short\n" + "x" * 1000 + "\n" + "🙂" * 333 + "\nend\n",
    "crlf": "windows\r\nline endings\r\n" * 20,
    "one_char": "z",
}


@pytest.mark.parametrize("case", sorted(TXT_CASES))
@pytest.mark.parametrize("chunk_chars", [1, 7, 64, 4096])
@pytest.mark.parametrize("gz", [False, True])
def test_txt_chunks_concatenate_back_to_the_file(tmp_path, case, chunk_chars, gz):
  text = TXT_CASES[case]
  path = tmp_path / ("doc.txt.gz" if gz else "doc.txt")
  path.write_bytes(gzip.compress(text.encode()) if gz else text.encode())
  records, skipped = readers.read_records(str(path), "corpus", txt_chunk_chars=chunk_chars)
  chunks = [r["text"] for r in records]
  assert "".join(chunks) == text and skipped == 0
  assert all(0 < len(chunk) <= chunk_chars for chunk in chunks)
  assert [r["doc_end"] for r in records] == [False] * (len(chunks) - 1) + [True]
  # A cut falls mid-line only inside a line longer than a chunk.
  cut = 0
  for chunk in chunks[:-1]:
    cut += len(chunk)
    if text[cut - 1] != "\n":
      line_start = text.rfind("\n", 0, cut) + 1
      line_end = text.find("\n", cut)
      line_stop = line_end + 1 if line_end >= 0 else len(text)
      assert line_stop - line_start > chunk_chars


def test_txt_chunks_fill_up_to_the_limit_at_line_boundaries(tmp_path):
  path = tmp_path / "doc.txt"
  path.write_text("aaa\nbbb\ncc\nd\n" + "e" * 10 + "\nf\n")
  records, _ = readers.read_records(str(path), "corpus", txt_chunk_chars=8)
  assert [r["text"] for r in records] == [
      "aaa\nbbb\n", "cc\nd\n", "eeeeeeee", "ee\nf\n"]


def test_several_files_are_read_in_sorted_order(tmp_path):
  (tmp_path / "b.txt").write_text("second doc\n")
  write_jsonl(tmp_path / "a.jsonl", [{"text": "first doc"}])
  (tmp_path / "c.txt").write_text("x" * 10)
  records, _ = readers.read_records(str(tmp_path), "corpus", txt_chunk_chars=4)
  assert [(r["text"], r["doc_end"]) for r in records] == [
      ("first doc", True), ("seco", False), ("nd d", False), ("oc\n", True),
      ("xxxx", False), ("xxxx", False), ("xx", True)]


needs_shared_data = pytest.mark.skipif(
    not SHARED_DATA.is_dir(), reason=f"real data not found at {SHARED_DATA}")


@needs_shared_data
def test_real_hh_harmless_test_split_loads_every_pair():
  records, skipped = readers.read_records(
      str(SHARED_DATA / "hh-rlhf" / "harmless-base-test.jsonl.gz"), "preferences")
  assert (len(records), skipped) == (2312, 0)
  assert all(r["prompt"][-1]["role"] == "user" and r["ranking"] == [0, 1] for r in records)
  assert all(r["responses"][0] != r["responses"][1] for r in records)


@needs_shared_data
def test_real_alpaca_seed_tasks_give_175_examples():
  records, skipped = readers.read_records(
      str(SHARED_DATA / "alpaca" / "seed_tasks.jsonl"), "sft")
  assert (len(records), skipped) == (175, 0)
  assert all([m["role"] for m in r["messages"]] == ["user", "assistant"] for r in records)


@needs_shared_data
def test_real_tinyshakespeare_round_trips():
  path = SHARED_DATA / "tinyshakespeare" / "input.txt"
  records, _ = readers.read_records(str(path), "corpus")
  assert "".join(r["text"] for r in records) == path.read_bytes().decode("utf-8")
  assert sum(r["doc_end"] for r in records) == 1
