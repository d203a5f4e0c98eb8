"""One decoded JSON record → the canonical form of its data format (DESIGN §3.8).

Canonical forms (all values JSON-serialisable):
  corpus:       {"text": str, "doc_end": bool}
  sft:          {"messages": [{"role", "content"}, ...]}, ending with an assistant turn
  preferences:  {"prompt": [messages], "responses": [str, ...], "ranking": [int, ...]}
  prompts:      {"messages": [messages]}, ending with a user turn
A record's "meta" (a JSON object) is passed through unchanged; other extra keys
are dropped. Each normaliser is pure and raises `FormatError(problem)`; the
reader adds the file and line.
"""
import os
import re

ROLES = ("system", "user", "assistant")
HUMAN_MARKER = "\n\nHuman:"
ASSISTANT_MARKER = "\n\nAssistant:"
_HH_MARKER_RE = re.compile(r"\n\n(Human|Assistant):")
_JSON_TYPE_NAMES = {dict: "object", list: "array", str: "string", int: "number",
                    float: "number", bool: "boolean", type(None): "null"}


class FormatError(ValueError):
  """A record that does not fit its format; the message says what is wrong."""


def json_type_name(value) -> str:
  return _JSON_TYPE_NAMES.get(type(value), type(value).__name__)


def _string(obj: dict, key: str, *, allow_empty: bool = False, where: str = "") -> str:
  if key not in obj:
    raise FormatError(f"missing key '{where}{key}'")
  value = obj[key]
  if not isinstance(value, str):
    raise FormatError(f"'{where}{key}' must be a string, got {json_type_name(value)}")
  if not value and not allow_empty:
    raise FormatError(f"'{where}{key}' is empty")
  return value


def _with_meta(record: dict, obj: dict) -> dict:
  if "meta" in obj:
    if not isinstance(obj["meta"], dict):
      raise FormatError(f"'meta' must be an object, got {json_type_name(obj['meta'])}")
    record["meta"] = obj["meta"]
  return record


def _messages(value, key: str) -> list[dict]:
  """A non-empty list of {"role": one of ROLES, "content": str}; extra keys dropped."""
  if not isinstance(value, list) or not value:
    raise FormatError(f"'{key}' must be a non-empty array of messages")
  messages = []
  for i, message in enumerate(value):
    where = f"{key}[{i}]"
    if not isinstance(message, dict):
      raise FormatError(f"'{where}' must be an object, got {json_type_name(message)}")
    role = _string(message, "role", where=f"{where}.")
    if role not in ROLES:
      raise FormatError(f"'{where}.role' must be one of {', '.join(ROLES)}, got '{role}'")
    content = _string(message, "content", allow_empty=True, where=f"{where}.")
    messages.append({"role": role, "content": content})
  return messages


def _prompt_messages(value, key: str) -> list[dict]:
  """A prompt: a non-empty string (one user turn) or messages ending with a user turn."""
  if isinstance(value, str):
    messages = [{"role": "user", "content": value}]
  elif isinstance(value, list):
    messages = _messages(value, key)
  else:
    raise FormatError(f"'{key}' must be a string or an array of messages, "
                      f"got {json_type_name(value)}")
  if messages[-1]["role"] != "user":
    raise FormatError(f"'{key}' must end with a user turn, not {messages[-1]['role']}")
  if not messages[-1]["content"]:
    raise FormatError(f"the last user turn of '{key}' is empty")
  return messages


def _checked_sft(messages: list[dict]) -> dict:
  if not any(m["role"] == "user" for m in messages):
    raise FormatError("conversation has no user turn")
  if messages[-1]["role"] != "assistant":
    raise FormatError(f"conversation must end with an assistant turn, not {messages[-1]['role']}")
  if any(m["role"] == "assistant" and not m["content"] for m in messages):
    raise FormatError("conversation has an empty assistant turn")
  return {"messages": messages}


def _alpaca_turns(instruction: str, example: dict, where: str = "") -> list[dict]:
  """User: the instruction, then a blank line and the input if any; assistant: the output."""
  task_input = ""
  if "input" in example:
    task_input = _string(example, "input", allow_empty=True, where=where)
  user = f"{instruction}\n\n{task_input}" if task_input else instruction
  return [{"role": "user", "content": user},
          {"role": "assistant", "content": _string(example, "output", where=where)}]


def parse_hh_transcript(text: str) -> list[dict]:
  """Anthropic HH "\\n\\nHuman: ...\\n\\nAssistant: ..." text → messages in order.

  A turn's content is the text up to the next marker, minus the one space after
  its marker. Consecutive turns of one role are kept as they are (the real data
  has a few); callers check how the conversation must end.
  """
  if not text.startswith(HUMAN_MARKER):
    raise FormatError("HH transcript must start with '\\n\\nHuman:'")
  parts = _HH_MARKER_RE.split(text)  # ["", "Human", " hi", "Assistant", " hello", ...]
  return [{"role": "user" if marker == "Human" else "assistant",
           "content": content.removeprefix(" ")}
          for marker, content in zip(parts[1::2], parts[2::2])]


def normalize_corpus(obj: dict, text_key: str = "text") -> dict:
  return _with_meta({"text": _string(obj, text_key), "doc_end": True}, obj)


def normalize_sft(obj: dict) -> list[dict]:
  """One SFT record → its examples (a seed task yields one per instance).

  Forms, tried in this order of their keys: "messages"; "prompt"+"response";
  "instruction"+"instances" (Alpaca seed task); "instruction"+"output"
  (Alpaca); an HH transcript in "chosen" or "text".
  """
  if "messages" in obj:
    examples = [_checked_sft(_messages(obj["messages"], "messages"))]
  elif "prompt" in obj or "response" in obj:
    if "prompt" not in obj:
      raise FormatError("missing key 'prompt'")
    reply = {"role": "assistant", "content": _string(obj, "response")}
    examples = [_checked_sft(_prompt_messages(obj["prompt"], "prompt") + [reply])]
  elif "instances" in obj:
    examples = _seed_task_examples(obj)
  elif "instruction" in obj or "output" in obj:
    examples = [_checked_sft(_alpaca_turns(_string(obj, "instruction"), obj))]
  elif "chosen" in obj or "text" in obj:
    key = "chosen" if "chosen" in obj else "text"
    examples = [_checked_sft(parse_hh_transcript(_string(obj, key)))]
  else:
    raise FormatError("no SFT fields: expected messages, prompt+response, instruction+output, "
                      "instruction+instances, or an HH transcript in chosen/text")
  return [_with_meta(example, obj) for example in examples]


def _seed_task_examples(obj: dict) -> list[dict]:
  instruction = _string(obj, "instruction")
  instances = obj["instances"]
  if not isinstance(instances, list) or not instances:
    raise FormatError("'instances' must be a non-empty array of {input, output} objects")
  examples = []
  for i, instance in enumerate(instances):
    if not isinstance(instance, dict):
      raise FormatError(f"'instances[{i}]' must be an object, got {json_type_name(instance)}")
    examples.append(_checked_sft(_alpaca_turns(instruction, instance, f"instances[{i}].")))
  return examples


def normalize_preferences(obj: dict) -> dict:
  """One preference record → {"prompt", "responses", "ranking"}.

  Forms: "responses"+"ranking" (with "prompt"); "prompt"+"chosen"+"rejected";
  "chosen"+"rejected" HH transcripts (the prompt is their shared prefix).
  """
  if "responses" in obj or "ranking" in obj:
    if "prompt" not in obj:
      raise FormatError("missing key 'prompt'")
    prompt = _prompt_messages(obj["prompt"], "prompt")
    responses = _responses(obj)
    ranking = _ranking(obj, len(responses))
  elif "prompt" in obj:
    prompt = _prompt_messages(obj["prompt"], "prompt")
    responses = [_string(obj, "chosen"), _string(obj, "rejected")]
    if responses[0] == responses[1]:
      raise FormatError("'chosen' and 'rejected' are identical")
    ranking = [0, 1]
  elif "chosen" in obj or "rejected" in obj:
    prompt, responses = _split_hh_pair(_string(obj, "chosen"), _string(obj, "rejected"))
    ranking = [0, 1]
  else:
    raise FormatError("no preference fields: expected prompt+responses+ranking, "
                      "prompt+chosen+rejected, or HH chosen+rejected transcripts")
  _check_consistent(responses, ranking)
  return _with_meta({"prompt": prompt, "responses": responses, "ranking": ranking}, obj)


def _responses(obj: dict) -> list[str]:
  responses = obj.get("responses")
  if not isinstance(responses, list) or len(responses) < 2:
    raise FormatError("'responses' must be an array of at least 2 strings")
  for i, response in enumerate(responses):
    if not isinstance(response, str) or not response:
      raise FormatError(f"'responses[{i}]' must be a non-empty string")
  return list(responses)


def _ranking(obj: dict, num_responses: int) -> list[int]:
  ranking = obj.get("ranking")
  if not isinstance(ranking, list):
    raise FormatError(f"'ranking' must be an array of ranks, got {json_type_name(ranking)}")
  if len(ranking) != num_responses:
    raise FormatError(f"'ranking' has {len(ranking)} ranks for {num_responses} responses")
  for i, rank in enumerate(ranking):
    if not isinstance(rank, int) or isinstance(rank, bool) or rank < 0:
      raise FormatError(f"'ranking[{i}]' must be a non-negative integer (0 = best), got {rank!r}")
  if len(set(ranking)) == 1:
    raise FormatError("all responses are tied; a ranking must prefer at least one response")
  return list(ranking)


def _check_consistent(responses: list[str], ranking: list[int]) -> None:
  """The same text ranked two ways contradicts itself."""
  first_index = {}
  for i, response in enumerate(responses):
    j = first_index.setdefault(response, i)
    if ranking[j] != ranking[i]:
      raise FormatError(f"responses {j} and {i} are the same text with different ranks")


def _split_hh_pair(chosen: str, rejected: str) -> tuple[list[dict], list[str]]:
  """Two HH transcripts → (prompt messages, [chosen reply, rejected reply]).

  The prompt is the shared text up to and including the last Assistant marker
  both share. The replies are the rest of each transcript, which may be empty
  (a few HH labellers preferred no answer) or hold a further Assistant marker.
  """
  if chosen == rejected:
    raise FormatError("'chosen' and 'rejected' are identical")
  shared = os.path.commonprefix([chosen, rejected])
  cut = shared.rfind(ASSISTANT_MARKER)
  if cut < 0:
    raise FormatError("'chosen' and 'rejected' share no '\\n\\nAssistant:' turn")
  prompt = _prompt_messages(parse_hh_transcript(chosen[:cut]), "prompt")
  start = cut + len(ASSISTANT_MARKER)
  replies = [chosen[start:].removeprefix(" "), rejected[start:].removeprefix(" ")]
  if any(HUMAN_MARKER in reply for reply in replies):
    raise FormatError("'chosen' and 'rejected' differ before their last Human turn")
  return prompt, replies


def normalize_prompt(obj: dict) -> dict:
  """{"prompt": str | messages} or {"messages": messages}, ending with a user turn."""
  if "messages" in obj:
    messages = _prompt_messages(obj["messages"], "messages")
  elif "prompt" in obj:
    messages = _prompt_messages(obj["prompt"], "prompt")
  else:
    raise FormatError("no prompt fields: expected 'prompt' or 'messages'")
  return _with_meta({"messages": messages}, obj)
