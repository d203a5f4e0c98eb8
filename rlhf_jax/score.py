"""Score responses with a trained reward model (normalised rewards), one JSON line per record.

  python -m rlhf_jax.score --workdir RM_DIR --data FILE.jsonl[.gz] [--out FILE]

Records: preference pairs {"prompt", "chosen", "rejected"}, HH {"chosen", "rejected"}
transcripts, rankings {"prompt", "responses", "ranking"} → {"rewards": [...], "ranking":
[...]} (chosen first for pairs); single {"prompt", "response"} → {"reward": r}. A record's
"meta" is copied. A malformed record is a one-line error naming file:line. Use it for
best-of-N (score N samples of a prompt, keep the best) or to inspect a reward model.
"""
import functools
import json
import os
import sys

import jax
import ml_collections
import numpy as np

from rlhf_jax import sharding
from rlhf_jax.data import formats, pipeline, readers
from rlhf_jax.errors import ArgumentParser, UserError


def read_scoring_records(path: str) -> list[dict]:
  """{"prompt": messages, "responses": [...], "ranking": [...] | None, "meta"?} per record."""
  records = []
  for file in readers.expand_paths(path, flag="--data"):
    for lineno, line in readers.iter_lines(file):
      if not line.strip():
        continue
      try:
        obj = json.loads(line)
        if not isinstance(obj, dict):
          raise formats.FormatError(f"expected a JSON object, got {formats.json_type_name(obj)}")
        if "response" in obj:
          messages = formats.normalize_sft({k: v for k, v in obj.items()
                                            if k in ("prompt", "response")})[0]["messages"]
          record = {"prompt": messages[:-1], "responses": [messages[-1]["content"]],
                    "ranking": None}
        else:
          record = formats.normalize_preferences(obj)
      except json.JSONDecodeError as e:
        raise UserError(f"{file}:{lineno}: invalid JSON ({e.msg} at column {e.colno}); "
                        f"fix the record") from None
      except formats.FormatError as e:
        raise UserError(f"{file}:{lineno}: {e}; give pairs, rankings or "
                        f"{{prompt, response}} records") from None
      if "meta" in obj:
        record["meta"] = obj["meta"]
      records.append(record)
  if not records:
    raise UserError(f"no records in {path}; pass a JSONL file of pairs, rankings or "
                    f"{{prompt, response}} records")
  return records


def reward_scorer(workdir: str, mesh=None):
  """score(prompts, responses) → normalised rewards [N, K] (float64) with the newest
  checkpoint of a reward-model workdir.

  prompts: N prompt message lists; responses: N lists of response texts; K is the most
  responses of any record, and a record with fewer has NaN in the rest of its row. Rows
  are built as the RM was trained (`pipeline.preference_rows`: prompt, response, EOS).
  """
  from rlhf_jax.tasks import reward  # pylint: disable=g-import-not-at-top  (keeps --help fast)
  if mesh is None:
    mesh = sharding.make_mesh(ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1}))
  model, params, normalization, tok = reward.load_reward_model(workdir, mesh)
  with open(os.path.join(workdir, "config.json"), encoding="utf-8") as f:
    seq_len = json.load(f)["data"]["seq_len"]
  batch_size = sharding.batch_parallelism(mesh) * max(1, 64 // sharding.batch_parallelism(mesh))
  score_fn = jax.jit(functools.partial(reward.normalised_scores, model))

  def score(prompts, responses) -> np.ndarray:
    k = max(len(r) for r in responses)
    rows = [pipeline.preference_rows(tok, p, r, max_len=seq_len, num_rows=k)
            for p, r in zip(prompts, responses)]
    scores_NxK = reward.device_scores(
        lambda p, t, m: score_fn(p, normalization, t, m), params,
        np.stack([r[0] for r in rows]), np.stack([r[1] for r in rows]), batch_size, mesh)
    counts_N = np.array([len(r) for r in responses])
    return np.where(np.arange(k)[None] < counts_N[:, None], scores_NxK, np.nan)
  return score


def score_records(workdir: str, records: list[dict]) -> list[dict]:
  """Output rows (normalised rewards) for `read_scoring_records` records."""
  scores_NxK = reward_scorer(workdir)([r["prompt"] for r in records],
                                      [r["responses"] for r in records])
  out = []
  for record, scores_K in zip(records, scores_NxK):
    values = [round(float(s), 6) for s in scores_K[:len(record["responses"])]]
    row = ({"reward": values[0]} if record["ranking"] is None
           else {"rewards": values, "ranking": record["ranking"]})
    if "meta" in record:
      row["meta"] = record["meta"]
    out.append(row)
  return out


def main(argv=None) -> int:
  parser = ArgumentParser(prog="python -m rlhf_jax.score", description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", required=True, help="a reward-model run's workdir")
  parser.add_argument("--data", required=True, help="JSONL (.gz) of pairs, rankings or "
                      "{prompt, response} records")
  parser.add_argument("--out", default="", help="output JSONL (default: stdout)")
  args = parser.parse_args(argv)
  try:
    rows = score_records(args.workdir, read_scoring_records(args.data))
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
  if args.out:
    with open(args.out, "w", encoding="utf-8") as f:
      f.write(text)
  else:
    sys.stdout.write(text)
  return 0


if __name__ == "__main__":
  sys.exit(main())
