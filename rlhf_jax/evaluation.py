"""Gold-judged evaluation: sample on held-out prompts, score with the world's judge, summarise.

Every gold-judged number of the project comes from here (DESIGN §3.10): the SFT,
reward-model and PPO stages and the report call these functions.

- `prompt_records`: world records (SFT demonstrations or RL prompts) → {"messages", "meta"};
  `held_out_records` reads them (and few-shot demonstrations) from a world data spec.
- `chat_prompts` / `few_shot_prompts`: left-padded prompt ids. A tuned model sees the
  chat template; a base model is prompted the way its corpus teaches, with same-family
  demonstrations as "Q: ...\\nA: ..." pairs, and its answer ends at the next blank line.
- `generate_texts`: the jitted KV-cache sampler over the mesh, batch by batch.
- `summarize`: gold/score with a 95% bootstrap interval, per category and per family.
- `paired_difference`: mean score difference of two policies on the same prompts, with
  its 95% bootstrap interval; `win_rate`: how often one beats the other (ties ½).
- `sampled_kl`: a policy's KL to a reference on its own samples, per prompt.

Dimensions: N prompts, P prompt length, B generation batch.
"""
import collections
import functools
import json
import os
from typing import Sequence

import jax
import numpy as np
import scipy.stats

from rlhf_jax import sampling, sharding
from rlhf_jax.data import store, world
from rlhf_jax.errors import UserError

SAMPLES_FILE = "samples.jsonl"
CATEGORIES = ("correctness", "completeness", "format", "safety", "hygiene")
_FEW_SHOT_STOPS = ("\n\n", "\nQ:")


def prompt_records(records: Sequence[dict], limit: int = 0) -> list[dict]:
  """{"messages": prompt turns ending with a user turn, "meta"} of judged records.

  SFT demonstrations lose their final assistant turn (the reference answer); records
  without a gold-judge meta are skipped. `limit` > 0 keeps the first `limit`.
  """
  out = []
  for record in records:
    meta = record.get("meta")
    if not isinstance(meta, dict) or "family" not in meta:
      continue
    messages = record["messages"]
    if messages[-1]["role"] == "assistant":
      messages = messages[:-1]
    out.append({"messages": messages, "meta": meta})
    if limit and len(out) == limit:
      break
  return out


def held_out_records(data: str, split: str, num_prompts: int = 0):
  """(prompt records of `split`, the world's SFT demonstrations for few-shot prompts).

  `data` is a world spec (`world:SIZE:SEED/sft` or `/prompts`), or several of one world
  separated by commas (e.g. both: labelers' SFT prompts, then the RL split's users'
  prompts, in that order); each record's "source" names its spec's kind. `num_prompts` > 0
  keeps the first that many prompts of each spec. The demonstrations are always the train
  split of the world's `/sft` data: a `/prompts` split holds no answers to show.
  """
  specs = [spec.strip() for spec in data.split(",") if spec.strip()]
  worlds = {store.world_of(spec) for spec in specs}
  if not specs or None in worlds:
    raise UserError(f"--data={data!r}: gold judging needs world data (world:SIZE:SEED/sft or "
                    f"/prompts, or both comma-separated); pass --data")
  if len(worlds) > 1:
    raise UserError(f"--data={data!r} names several worlds {sorted(worlds)}; evaluate "
                    f"one world's prompts at a time")
  records = []
  for spec in specs:
    kind = "prompts" if store.parse_world_spec(spec)[2] == "prompts" else "sft"
    splits = store.local_dataset(spec, kind)
    if split not in splits:
      raise UserError(f"--split={split!r}; use one of {sorted(splits)}")
    source = splits[split]
    records += [dict(r, source=kind) for r in
                prompt_records((source[i] for i in range(len(source))), num_prompts)]
  train = store.local_dataset(f"{worlds.pop()}/sft", "sft")["train"]
  demonstrations = [train[i] for i in range(len(train))]
  return records, demonstrations


def left_pad(rows: list[list[int]], length: int, pad_id: int):
  tokens_NxP = np.full((len(rows), length), pad_id, np.int32)
  mask_NxP = np.zeros((len(rows), length), np.int32)
  for i, ids in enumerate(rows):
    ids = ids[-length:]  # a long prompt keeps its most recent tokens
    tokens_NxP[i, length - len(ids):] = ids
    mask_NxP[i, length - len(ids):] = 1
  return tokens_NxP, mask_NxP


def chat_prompts(tokenizer, records: Sequence[dict], max_prompt_len: int):
  """(tokens [N, P], mask [N, P]): chat template + generation prompt, left-padded.

  P is the longest prompt, at most `max_prompt_len` (longer prompts keep their end).
  """
  rows = [tokenizer.encode_chat(r["messages"], add_generation_prompt=True)[0] for r in records]
  return left_pad(rows, min(max(map(len, rows)), max_prompt_len), tokenizer.pad_id)


def _qa_text(messages: Sequence[dict]) -> str:
  lines = [("Q: " if m["role"] != "assistant" else "A: ") + m["content"] for m in messages]
  return "\n".join(lines)


def few_shot_text(messages: Sequence[dict], shots: Sequence[dict]) -> str:
  """'Q: shot\\nA: answer\\n\\n' per shot (a full demonstration), then 'Q: prompt\\nA:'."""
  blocks = [_qa_text(shot["messages"]) for shot in shots]
  return "\n\n".join(blocks + [_qa_text(messages) + "\nA:"])


def few_shot_prompts(tokenizer, records: Sequence[dict], demonstrations: Sequence[dict],
                     num_shots: int, max_prompt_len: int):
  """(tokens, mask) of plain-text few-shot prompts for a base model.

  Each prompt gets `num_shots` demonstrations of its own family (the same ones for
  every prompt of the family: the first of `demonstrations` in order), fewer if the
  prompt would not fit in `max_prompt_len` tokens.
  """
  by_family = collections.defaultdict(list)
  for demo in demonstrations:
    family = demo.get("meta", {}).get("family")
    if family is not None and len(by_family[family]) < num_shots:
      by_family[family].append(demo)
  rows = []
  for record in records:
    shots = list(by_family[record["meta"]["family"]])
    while True:
      ids = tokenizer.encode(few_shot_text(record["messages"], shots))
      if len(ids) <= max_prompt_len or not shots:
        break
      shots.pop()
    rows.append(ids)
  return left_pad(rows, min(max(map(len, rows)), max_prompt_len), tokenizer.pad_id)


def cut_few_shot_answer(text: str) -> str:
  """A base model's answer ends where its next Q:/A: block would start."""
  for stop in _FEW_SHOT_STOPS:
    text = text.split(stop, 1)[0]
  return text.strip()


@functools.lru_cache(maxsize=16)
def _jitted_sampler(model, max_new_tokens, eos_id, pad_id, temperature, top_k, top_p):
  return jax.jit(functools.partial(
      sampling.sample, model, max_new_tokens=max_new_tokens, eos_id=eos_id, pad_id=pad_id,
      temperature=temperature, top_k=top_k, top_p=top_p))


def generate_ids(model, params, tokens_NxP, mask_NxP, rng, *, mesh, batch_size: int,
                 eos_id: int, pad_id: int, max_new_tokens: int, temperature: float = 0.0,
                 top_k: int = 0, top_p: float = 1.0) -> np.ndarray:
  """Sampled ids [N, max_new_tokens] (pad after EOS), `batch_size` prompts at a time.

  The last batch is filled up with copies of the first prompt, whose outputs are dropped,
  so every call has one static shape. Rows are split over the mesh's batch axes.
  """
  if tokens_NxP.shape[1] + max_new_tokens > model.cfg.max_len:
    raise UserError(f"prompts of {tokens_NxP.shape[1]} tokens + max_new_tokens="
                    f"{max_new_tokens} exceed the model's context of {model.cfg.max_len}; "
                    f"lower max_new_tokens or the prompt length")
  sample_fn = _jitted_sampler(model, max_new_tokens, eos_id, pad_id, float(temperature),
                              int(top_k), float(top_p))
  return sharding.map_batches(
      lambda b, start: sample_fn(params, b["tokens"], b["mask"],
                                 jax.random.fold_in(rng, start)).tokens_BxN,
      {"tokens": tokens_NxP, "mask": mask_NxP}, batch_size, mesh)


def response_mask(ids_NxN, eos_id: int) -> np.ndarray:
  """int32 [N, max_new_tokens]: 1 up to and including each row's first EOS (all of a row
  without one), the `mask_BxN` of the `sampling.Samples` the ids came from."""
  eos = np.asarray(ids_NxN) == eos_id
  return ((np.cumsum(eos, axis=1) - eos) == 0).astype(np.int32)


@functools.lru_cache(maxsize=16)
def _jitted_log_probs(model, temperature):
  return jax.jit(functools.partial(sampling.response_log_probs, model, temperature=temperature))


def sequence_log_probs(model, params, tokens_NxP, mask_NxP, ids_NxN, *, mesh, batch_size: int,
                       eos_id: int, temperature: float = 1.0) -> np.ndarray:
  """log π(y | x) = Σ_t log_softmax(logits / T)[y_t] [N], float64, over each response's
  tokens up to and including its first EOS (`sampling.response_log_probs`)."""
  log_probs_fn = _jitted_log_probs(model, float(temperature))
  rows = {"tokens": tokens_NxP, "mask": mask_NxP, "ids": np.asarray(ids_NxN, np.int32),
          "ids_mask": response_mask(ids_NxN, eos_id)}
  return sharding.map_batches(
      lambda b, _: log_probs_fn(params, b["tokens"], b["mask"], b["ids"], b["ids_mask"]).sum(-1),
      rows, batch_size, mesh).astype(np.float64)


def sampled_kl(model, params, reference_params, tokens_NxP, mask_NxP, rng, *, mesh,
               batch_size: int, eos_id: int, pad_id: int, max_new_tokens: int,
               temperature: float = 1.0) -> np.ndarray:
  """KL(π ‖ π_ref) per prompt [N]: log π(y | x) − log π_ref(y | x) of one response y drawn
  from π at `temperature` (both log-probs at that temperature). Its mean over prompts
  estimates the per-response KL, what ppo/kl tracks with the default k1 estimator."""
  ids_NxN = generate_ids(model, params, tokens_NxP, mask_NxP, rng, mesh=mesh,
                         batch_size=batch_size, eos_id=eos_id, pad_id=pad_id,
                         max_new_tokens=max_new_tokens, temperature=temperature)
  log_probs = {name: sequence_log_probs(model, p, tokens_NxP, mask_NxP, ids_NxN, mesh=mesh,
                                        batch_size=batch_size, eos_id=eos_id,
                                        temperature=temperature)
               for name, p in (("policy", params), ("reference", reference_params))}
  return log_probs["policy"] - log_probs["reference"]


def interval(values, n_resamples: int = 1000, seed: int = 0) -> tuple[float, float, float]:
  """(mean, lo, hi): the mean and its 95% percentile-bootstrap interval."""
  values = np.asarray(values, np.float64)
  if values.size < 2 or np.all(values == values[0]):
    mean = float(values.mean()) if values.size else float("nan")
    return mean, mean, mean
  result = scipy.stats.bootstrap((values,), np.mean, n_resamples=n_resamples,
                                 confidence_level=0.95, method="percentile",
                                 random_state=np.random.default_rng(seed))
  return float(values.mean()), float(result.confidence_interval.low), float(
      result.confidence_interval.high)


def paired_difference(scores_a, scores_b, n_resamples: int = 1000,
                      seed: int = 0) -> tuple[float, float, float]:
  """Mean of a − b over the same prompts and its 95% bootstrap interval (prompts resampled)."""
  a, b = np.asarray(scores_a, np.float64), np.asarray(scores_b, np.float64)
  if a.shape != b.shape:
    raise UserError(f"paired_difference needs scores of the same prompts; got {a.shape} and "
                    f"{b.shape}")
  return interval(a - b, n_resamples, seed)


def win_rate(scores_a, scores_b, n_resamples: int = 1000,
             seed: int = 0) -> tuple[float, float, float]:
  """How often a beats b on the same prompt, a tie counting ½, with its 95% bootstrap
  interval: mean of [a > b] + ½·[a = b] over prompts."""
  a, b = np.asarray(scores_a, np.float64), np.asarray(scores_b, np.float64)
  if a.shape != b.shape:
    raise UserError(f"win_rate needs scores of the same prompts; got {a.shape} and {b.shape}")
  return interval((a > b) + 0.5 * (a == b), n_resamples, seed)


def score(metas: Sequence[dict], responses: Sequence[str]) -> dict[str, np.ndarray]:
  """Gold scores as arrays: {"total": [N], "correctness": [N], ..., "hygiene": [N]}."""
  return world.score_arrays(metas, responses)


def summarize(metas: Sequence[dict], scores: dict[str, np.ndarray],
              prefix: str = "gold") -> dict[str, float]:
  """{prefix}/score with _lo/_hi (95% bootstrap) and /n, per category, per family."""
  mean, lo, hi = interval(scores["total"])
  out = {f"{prefix}/score": mean, f"{prefix}/score_lo": lo, f"{prefix}/score_hi": hi,
         f"{prefix}/n": float(len(metas))}
  for category in CATEGORIES:
    out[f"{prefix}/{category}"] = float(scores[category].mean())
  families = np.array([m["family"] for m in metas])
  for family in sorted(set(families)):
    out[f"{prefix}/family/{family}"] = float(scores["total"][families == family].mean())
  return out


def replace_rows(path: str, step: int, rows: Sequence[dict]) -> None:
  """Appends JSONL `rows` of `step` to `path` atomically; rows of this step or later (left
  by an interrupted run that is now resumed) are dropped first. Several processes hold the
  same rows: process 0 writes them."""
  if jax.process_index() != 0:
    return
  kept = []
  if os.path.exists(path):
    with open(path, encoding="utf-8") as f:
      kept = [line for line in f if line.strip() and json.loads(line)["step"] < step]
  with open(path + ".tmp", "w", encoding="utf-8") as f:
    f.writelines(kept)
    f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
  os.replace(path + ".tmp", path)


def write_samples(path: str, step: int, records: Sequence[dict], responses: Sequence[str],
                  scores: dict[str, np.ndarray]) -> None:
  """One row per prompt {step, id, family, prompt, response, score} (see `replace_rows`)."""
  replace_rows(path, step, [
      {"step": step, "id": record["meta"].get("id", i), "family": record["meta"]["family"],
       "prompt": record["messages"], "response": response,
       "score": {name: float(values[i]) for name, values in scores.items()}}
      for i, (record, response) in enumerate(zip(records, responses))])


def policy_texts(model, params, tokenizer, records, rng, *, mesh, gold_cfg, sampling_cfg,
                 style: str = "chat", demonstrations: Sequence[dict] = ()) -> list[str]:
  """Responses of a policy to `records`: 'chat' (tuned models) or 'few_shot' (base models)."""
  max_prompt_len = model.cfg.max_len - sampling_cfg.max_new_tokens
  if style == "chat":
    tokens, mask = chat_prompts(tokenizer, records, max_prompt_len)
  elif style == "few_shot":
    tokens, mask = few_shot_prompts(tokenizer, records, demonstrations, gold_cfg.num_shots,
                                    max_prompt_len)
  else:
    raise UserError(f"evaluation style {style!r}; use 'chat' or 'few_shot'")
  ids = generate_ids(model, params, tokens, mask, rng, mesh=mesh,
                     batch_size=gold_cfg.batch_size, eos_id=tokenizer.eos_id,
                     pad_id=tokenizer.pad_id, max_new_tokens=sampling_cfg.max_new_tokens,
                     temperature=sampling_cfg.temperature, top_k=sampling_cfg.top_k,
                     top_p=sampling_cfg.top_p)
  texts = tokenizer.decode_responses(ids)
  return [cut_few_shot_answer(t) for t in texts] if style == "few_shot" else texts


def gold_evaluator(config, splits: dict, model, tokenizer, mesh, samples_path: str):
  """evaluate(params, rng, step) → gold metrics on `config.gold_eval.split`, or None when
  the data carries no gold-judge metas (not world data) or `gold_eval.num_prompts` < 0."""
  gold_cfg = config.gold_eval
  if gold_cfg.num_prompts < 0 or gold_cfg.split not in splits:
    return None
  source = splits[gold_cfg.split]
  records = prompt_records((source[i] for i in range(len(source))), gold_cfg.num_prompts)
  if not records:
    return None
  metas = [r["meta"] for r in records]

  def evaluate(params, rng, step: int) -> dict[str, float]:
    texts = policy_texts(model, params, tokenizer, records, rng, mesh=mesh, gold_cfg=gold_cfg,
                         sampling_cfg=config.sampling)
    scores = score(metas, texts)
    write_samples(samples_path, step, records, texts, scores)
    return summarize(metas, scores)
  return evaluate
