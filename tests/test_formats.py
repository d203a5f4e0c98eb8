"""Per-format record normalisers: every accepted input form and its failures."""
import json

import pytest

from rlhf_jax.data import formats
from rlhf_jax.data.formats import FormatError

HH_PAIR = {
    "chosen": "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: a joke?\n\nAssistant: Why not.",
    "rejected": "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: a joke?\n\nAssistant: No.",
}


def user(content):
  return {"role": "user", "content": content}


def assistant(content):
  return {"role": "assistant", "content": content}


def test_corpus_keeps_text_and_meta_and_drops_other_keys():
  record = formats.normalize_corpus({"body": "abc", "id": 3, "meta": {"src": "x"}}, "body")
  assert record == {"text": "abc", "doc_end": True, "meta": {"src": "x"}}
  json.dumps(record)


@pytest.mark.parametrize("obj, problem", [
    ({"txt": "a"}, "missing key 'text'"),
    ({"text": 5}, "'text' must be a string, got number"),
    ({"text": ""}, "'text' is empty"),
    ({"text": "a", "meta": [1]}, "'meta' must be an object"),
])
def test_corpus_malformed(obj, problem):
  with pytest.raises(FormatError, match=problem):
    formats.normalize_corpus(obj)


def test_parse_hh_transcript_splits_turns_and_keeps_inner_text():
  text = "\n\nHuman: Hi there\n\nAssistant: Human: is not a marker here\n\nHuman:x"
  assert formats.parse_hh_transcript(text) == [
      user("Hi there"), assistant("Human: is not a marker here"), user("x")]


def test_parse_hh_transcript_needs_leading_human_marker():
  with pytest.raises(FormatError, match="must start with"):
    formats.parse_hh_transcript("Human: hi\n\nAssistant: yo")


@pytest.mark.parametrize("obj, messages", [
    ({"messages": [{"role": "system", "content": "be kind", "name": "s"},
                   user("q"), assistant("a")]},
     [{"role": "system", "content": "be kind"}, user("q"), assistant("a")]),
    ({"prompt": "q", "response": "a"}, [user("q"), assistant("a")]),
    ({"prompt": [user("q1"), assistant("a1"), user("q2")], "response": "a2"},
     [user("q1"), assistant("a1"), user("q2"), assistant("a2")]),
    ({"instruction": "Do it.", "output": "Done."}, [user("Do it."), assistant("Done.")]),
    ({"instruction": "Do it.", "input": "", "output": "Done."},
     [user("Do it."), assistant("Done.")]),
    ({"instruction": "Sum.", "input": "1 2", "output": "3"}, [user("Sum.\n\n1 2"), assistant("3")]),
    ({"chosen": "\n\nHuman: q\n\nAssistant: a"}, [user("q"), assistant("a")]),
    ({"text": "\n\nHuman: q\n\nAssistant: a\n\nHuman: q2\n\nAssistant: a2"},
     [user("q"), assistant("a"), user("q2"), assistant("a2")]),
])
def test_sft_input_forms(obj, messages):
  assert formats.normalize_sft(obj) == [{"messages": messages}]


def test_sft_seed_task_gives_one_example_per_instance_with_meta():
  obj = {"instruction": "Add.", "id": "t1", "meta": {"k": 1},
         "instances": [{"input": "1 1", "output": "2"}, {"input": "", "output": "0"}]}
  assert formats.normalize_sft(obj) == [
      {"messages": [user("Add.\n\n1 1"), assistant("2")], "meta": {"k": 1}},
      {"messages": [user("Add."), assistant("0")], "meta": {"k": 1}},
  ]


@pytest.mark.parametrize("obj, problem", [
    ({"messages": []}, "non-empty array"),
    ({"messages": "hi"}, "non-empty array"),
    ({"messages": [user("q"), "a"]}, r"'messages\[1\]' must be an object"),
    ({"messages": [{"role": "human", "content": "q"}, assistant("a")]}, "must be one of"),
    ({"messages": [{"content": "q"}, assistant("a")]}, r"missing key 'messages\[0\].role'"),
    ({"messages": [user(3), assistant("a")]}, r"'messages\[0\].content' must be a string"),
    ({"messages": [user("q")]}, "must end with an assistant turn"),
    ({"messages": [{"role": "system", "content": "s"}, assistant("a")]}, "no user turn"),
    ({"messages": [user("q"), assistant("")]}, "empty assistant turn"),
    ({"prompt": "q"}, "missing key 'response'"),
    ({"response": "a"}, "missing key 'prompt'"),
    ({"prompt": "q", "response": ""}, "'response' is empty"),
    ({"prompt": 7, "response": "a"}, "string or an array of messages"),
    ({"prompt": [user("q"), assistant("a")], "response": "b"}, "must end with a user turn"),
    ({"instruction": "Do it."}, "missing key 'output'"),
    ({"output": "Done."}, "missing key 'instruction'"),
    ({"instruction": "Do it.", "input": None, "output": "x"}, "'input' must be a string"),
    ({"instruction": "", "output": "x"}, "'instruction' is empty"),
    ({"instruction": "Add.", "instances": []}, "'instances' must be a non-empty array"),
    ({"instruction": "Add.", "instances": [{"input": "1"}]},
     r"missing key 'instances\[0\].output'"),
    ({"instruction": "Add.", "instances": ["x"]}, r"'instances\[0\]' must be an object"),
    ({"instances": [{"output": "2"}]}, "missing key 'instruction'"),
    ({"chosen": "\n\nHuman: only a question"}, "must end with an assistant turn"),
    ({"text": "no markers at all"}, "must start with"),
    ({"chosen": "\n\nHuman: q\n\nAssistant: "}, "empty assistant turn"),
    ({"question": "q", "answer": "a"}, "no SFT fields"),
])
def test_sft_malformed(obj, problem):
  with pytest.raises(FormatError, match=problem):
    formats.normalize_sft(obj)


def test_preferences_pair_with_string_prompt():
  record = formats.normalize_preferences(
      {"prompt": "q", "chosen": "good", "rejected": "bad", "meta": {"id": 1}, "x": 0})
  assert record == {"prompt": [user("q")], "responses": ["good", "bad"], "ranking": [0, 1],
                    "meta": {"id": 1}}


def test_preferences_ranking_with_ties_and_message_prompt():
  obj = {"prompt": [user("q1"), assistant("a1"), user("q2")],
         "responses": ["x", "y", "z"], "ranking": [1, 0, 1]}
  assert formats.normalize_preferences(obj) == {
      "prompt": [user("q1"), assistant("a1"), user("q2")],
      "responses": ["x", "y", "z"], "ranking": [1, 0, 1]}


def test_preferences_hh_prompt_is_shared_prefix():
  assert formats.normalize_preferences(HH_PAIR) == {
      "prompt": [user("hi"), assistant("hello"), user("a joke?")],
      "responses": ["Why not.", "No."], "ranking": [0, 1]}


def test_preferences_hh_keeps_empty_reply_and_text_after_divergence():
  # Both occur in the real HH data: an empty preferred reply, and a reply that
  # continues with a further Assistant marker.
  record = formats.normalize_preferences({
      "chosen": "\n\nHuman: q\n\nAssistant: ",
      "rejected": "\n\nHuman: q\n\nAssistant: a\n\nAssistant: more"})
  assert record["prompt"] == [user("q")]
  assert record["responses"] == ["", "a\n\nAssistant: more"]


def test_preferences_hh_shared_marker_stops_at_divergence():
  # The transcripts diverge inside the second reply, whose marker both share.
  record = formats.normalize_preferences({
      "chosen": "\n\nHuman: q\n\nAssistant: same start, then A",
      "rejected": "\n\nHuman: q\n\nAssistant: same start, then B"})
  assert record["responses"] == ["same start, then A", "same start, then B"]


@pytest.mark.parametrize("obj, problem", [
    ({"prompt": "q", "chosen": "a"}, "missing key 'rejected'"),
    ({"prompt": "q", "chosen": 1, "rejected": "b"}, "'chosen' must be a string"),
    ({"prompt": "q", "chosen": "", "rejected": "b"}, "'chosen' is empty"),
    ({"prompt": "q", "chosen": "a", "rejected": "a"}, "identical"),
    ({"prompt": "", "chosen": "a", "rejected": "b"}, "last user turn of 'prompt' is empty"),
    ({"prompt": [user("q"), assistant("a")], "chosen": "a", "rejected": "b"},
     "must end with a user turn"),
    ({"prompt": "q", "responses": ["a", "b"]}, "'ranking' must be an array"),
    ({"prompt": "q", "responses": ["a", "b"], "ranking": [0]}, "1 ranks for 2 responses"),
    ({"prompt": "q", "responses": ["a", "b"], "ranking": [0, -1]}, "non-negative integer"),
    ({"prompt": "q", "responses": ["a", "b"], "ranking": [0, 1.5]}, "non-negative integer"),
    ({"prompt": "q", "responses": ["a", "b"], "ranking": [False, True]}, "non-negative integer"),
    ({"prompt": "q", "responses": ["a", "b"], "ranking": "01"}, "'ranking' must be an array"),
    ({"prompt": "q", "responses": ["a", "b"], "ranking": [1, 1]}, "all responses are tied"),
    ({"prompt": "q", "responses": ["a"], "ranking": [0]}, "at least 2 strings"),
    ({"prompt": "q", "responses": ["a", ""], "ranking": [0, 1]}, "non-empty string"),
    ({"prompt": "q", "responses": ["a", 3], "ranking": [0, 1]}, "non-empty string"),
    ({"prompt": "q", "responses": ["a", "b", "a"], "ranking": [0, 1, 2]},
     "responses 0 and 2 are the same text"),
    ({"responses": ["a", "b"], "ranking": [0, 1]}, "missing key 'prompt'"),
    ({"chosen": HH_PAIR["chosen"]}, "missing key 'rejected'"),
    ({"chosen": HH_PAIR["chosen"], "rejected": HH_PAIR["chosen"]}, "identical"),
    ({"chosen": "\n\nHuman: q", "rejected": "\n\nHuman: r"}, r"share no '\\n\\nAssistant:'"),
    ({"chosen": "Human: q\n\nAssistant: a", "rejected": "Human: q\n\nAssistant: b"},
     "must start with"),
    ({"chosen": "\n\nHuman: q\n\nAssistant: a\n\nHuman: more\n\nAssistant: x",
      "rejected": "\n\nHuman: q\n\nAssistant: b\n\nHuman: more\n\nAssistant: x"},
     "differ before their last Human turn"),
    ({"question": "q"}, "no preference fields"),
])
def test_preferences_malformed(obj, problem):
  with pytest.raises(FormatError, match=problem):
    formats.normalize_preferences(obj)


@pytest.mark.parametrize("obj, messages", [
    ({"prompt": "q"}, [user("q")]),
    ({"prompt": [{"role": "system", "content": "s"}, user("q")]},
     [{"role": "system", "content": "s"}, user("q")]),
    ({"messages": [user("q"), assistant("a"), user("q2")]},
     [user("q"), assistant("a"), user("q2")]),
])
def test_prompt_input_forms(obj, messages):
  assert formats.normalize_prompt(obj) == {"messages": messages}


@pytest.mark.parametrize("obj, problem", [
    ({"messages": [user("q"), assistant("a")]}, "must end with a user turn"),
    ({"prompt": ""}, "last user turn of 'prompt' is empty"),
    ({"prompt": None}, "string or an array of messages"),
    ({"prompt": [{"role": "gpt", "content": "q"}]}, "must be one of"),
    ({"prompt": "q", "meta": "m"}, "'meta' must be an object"),
    ({"chosen": "a", "rejected": "b"}, "no prompt fields"),
])
def test_prompt_malformed(obj, problem):
  with pytest.raises(FormatError, match=problem):
    formats.normalize_prompt(obj)
