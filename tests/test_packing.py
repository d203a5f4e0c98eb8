"""Packed SFT and reward-model rows (`data.pack`): every example once per epoch, whole, with
static shapes and exact resume; the losses and scores of the same examples unpacked."""
import functools
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlhf_jax import configs, sharding
from rlhf_jax import tokenizer as tokenizer_lib
from rlhf_jax.data import packing, pipeline, store
from rlhf_jax.errors import UserError
from rlhf_jax.models import gpt, heads
from rlhf_jax.tasks import base, lm, reward, sft

from test_pipeline import _assert_resumes_exactly, _assert_same_batches, _take
from test_reward import rm_config, write_rankings
from test_sft import tiny_sft_config

_WORDS = "the cat sat on a mat and ate fish while dogs barked loudly at night".split()


@pytest.fixture(scope="module")
def tok():
  return tokenizer_lib.train_bpe([" ".join(_WORDS)] * 50, vocab_size=300)


def _conversations(n):
  """Chats of about 8 to 45 tokens: rows of 32 hold one to three; the longest are cut."""
  rng = np.random.default_rng(0)
  return store.InMemorySource([{"messages": [
      {"role": "user", "content": " ".join(rng.choice(_WORDS, rng.integers(1, 6)))},
      {"role": "assistant", "content": " ".join(rng.choice(_WORDS, rng.integers(1, 20)))}]}
                               for _ in range(n)])


def _rankings(n):
  """Records of 2 or 3 responses of 1 to 12 words (rows of 8 to about 28 tokens)."""
  rng = np.random.default_rng(1)
  records = []
  for i in range(n):
    k = int(rng.integers(2, 4))
    records.append({"prompt": [{"role": "user", "content": f"the dogs {i}"}],
                    "responses": [" ".join(rng.choice(_WORDS, rng.integers(1, 13)))
                                  for _ in range(k)],
                    "ranking": [int(r) for r in rng.permutation(k)]})
  return store.InMemorySource(records)


def _segments(segment_ids_L):
  """[start, end) of each segment of a packed row; asserts the ids run 1, 2, ..., then 0s."""
  length = int(np.count_nonzero(segment_ids_L))
  ids_N = segment_ids_L[:length]
  assert not segment_ids_L[length:].any() and (np.diff(ids_N) >= 0).all()
  assert set(ids_N.tolist()) == set(range(1, ids_N.max(initial=0) + 1))
  return [(int(np.argmax(ids_N == s)), int(length - np.argmax(ids_N[::-1] == s)))
          for s in range(1, ids_N.max(initial=0) + 1)]


def test_packed_sft_rows_hold_every_example_once_whole_and_resume(tok):
  source = _conversations(23)
  to_example, _ = pipeline.sft_examples(tok, 32)
  examples = [to_example(i, source[i]) for i in range(len(source))]
  expected = sorted((tuple(e["tokens"][e["tokens"] != tok.pad_id]),
                     tuple(e["loss_mask"][e["tokens"] != tok.pad_id])) for e in examples)
  assert max(len(t) for t, _ in expected) == 32  # some examples are cut to a full row

  def make(state=None, **kwargs):
    return packing.sft_iterator(source, tok, max_len=32, seed=3, state=state,
                                **{"batch_size": 4, **kwargs})

  batches = list(make(repeat=False))  # one shuffled epoch
  found = []
  for batch in batches:
    assert {k: v.shape for k, v in batch.items()} == {k: (4, 32) for k in batch}
    for tokens_L, mask_L, segment_ids_L in zip(batch["tokens"], batch["loss_mask"],
                                               batch["segment_ids"]):
      spans = _segments(segment_ids_L)
      found += [(tuple(tokens_L[a:b]), tuple(mask_L[a:b])) for a, b in spans]
      end = spans[-1][1] if spans else 0
      assert (tokens_L[end:] == tok.pad_id).all() and not mask_L[end:].any()
  assert sorted(found) == expected
  assert len(batches) * 4 < len(source)  # rows hold several examples
  _assert_resumes_exactly(make, skip=3, check=4)  # across the epoch boundary
  halves = [make(shard_index=i, shard_count=2, batch_size=2) for i in range(2)]
  for want in _take(make(), 3):
    got = [next(h) for h in halves]
    _assert_same_batches([want], [{k: np.concatenate([g[k] for g in got]) for k in want}])
  assert halves[0].get_state() == halves[1].get_state()


KEYS = ("tokens", "segment_ids", "branch_ids", "positions", "ranking", "index", "score_row",
        "score_pos")


@pytest.mark.parametrize("share_prompt", [False, True])
def test_packed_preference_batches_hold_every_record_once_and_resume(tok, share_prompt):
  """Every record once, each response's row (its prompt, itself, EOS) rebuilt from the
  tokens of its segment on the prompt (branch 0) and its own branch, with the positions it
  has unpacked; sharing the prompt stores fewer tokens."""
  source = _rankings(21)
  to_example, _ = pipeline.preference_examples(tok, 28, 3)
  unpacked = [to_example(i, source[i]) for i in range(len(source))]
  row_len = 56 if share_prompt else 28

  def make(state=None, **kwargs):
    return packing.preference_iterator(source, tok, max_len=28, num_responses=3,
                                       batch_size=4, num_rows=6, num_groups=2, seed=5,
                                       state=state, row_len=row_len, share_prompt=share_prompt,
                                       **kwargs)

  batches = list(make(repeat=False))
  seen, stored, branches_per_segment = [], 0, set()
  for batch in batches:
    assert {k: v.shape for k, v in batch.items()} == {
        "tokens": (6, row_len), "segment_ids": (6, row_len), "branch_ids": (6, row_len),
        "positions": (6, row_len), "ranking": (4, 3), "index": (4,), "score_row": (4, 3),
        "score_pos": (4, 3)}
    stored += int(np.count_nonzero(batch["segment_ids"]))
    # Each microbatch of gradient accumulation holds its records' rows (rows counted in it).
    for micro in zip(*[np.asarray(base.split_microbatches(batch[key], 2)) for key in KEYS]):
      micro = dict(zip(KEYS, micro))
      for b, index in enumerate(micro["index"]):
        if index < 0:
          assert (micro["ranking"][b] == -1).all()
          continue
        seen.append(int(index))
        want = unpacked[index]
        np.testing.assert_array_equal(micro["ranking"][b], want["ranking"])
        for k in np.flatnonzero(want["ranking"] >= 0):
          row, eos = micro["score_row"][b, k], micro["score_pos"][b, k]
          segment = micro["segment_ids"][row, eos]
          in_segment = micro["segment_ids"][row] == segment
          branches_per_segment.add(len(set(micro["branch_ids"][row][in_segment].tolist())))
          branch = micro["branch_ids"][row]
          visible = np.flatnonzero(in_segment & ((branch == 0) | (branch == k + 1)))
          length = int(np.count_nonzero(want["tokens"][k] != tok.pad_id))
          assert segment > 0 and branch[eos] == k + 1 and visible[-1] == eos
          np.testing.assert_array_equal(micro["tokens"][row, visible], want["tokens"][k, :length])
          np.testing.assert_array_equal(micro["positions"][row, visible], np.arange(length))
          assert want["tokens"][k, length - 1] == tok.eos_id  # the score is read at the EOS
  assert sorted(seen) == list(range(len(source)))
  unpacked_tokens = sum(int(np.count_nonzero(e["tokens"] != tok.pad_id)) for e in unpacked)
  if share_prompt:  # prompts stored once: segments with 3 or 4 branches (a prompt and 2-3)
    assert stored < 0.8 * unpacked_tokens and max(branches_per_segment) >= 3
  else:
    assert stored == unpacked_tokens and branches_per_segment == {2}
    assert len(batches) > -(-len(source) // 4)  # some batches closed early: records spilled
  _assert_resumes_exactly(make, skip=4, check=4)
  with pytest.raises(UserError, match="rm.pack_rows to at least 6"):
    packing.preference_iterator(source, tok, max_len=28, num_responses=3, batch_size=4,
                                num_rows=4, num_groups=2, seed=0)


@pytest.fixture(scope="module")
def reward_model(tok):
  """A tiny RewardModel and random params (params["backbone"] are a GPT's), drawn with NumPy
  on the init's shapes: no init program to compile."""
  model = heads.RewardModel(gpt.GPTConfig(vocab_size=tok.vocab_size, num_layers=1,
                                          num_heads=2, embed_dim=32, max_len=64))
  shapes = nn.meta.unbox(jax.eval_shape(model.init, jax.random.key(0),
                                        jnp.zeros((1, 8), jnp.int32)))["params"]
  rng = np.random.default_rng(0)
  params = jax.tree.map_with_path(
      lambda path, x: (1.0 if path[-1].key == "scale" else 0.0) + rng.normal(0, 0.1, x.shape),
      shapes)
  return model, jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params)


def test_packed_sft_loss_sum_and_count_equal_unpacked(tok, reward_model):
  """Over one pass of the same 12 examples: equal sums and counts. Every real target weighs
  1 and assistant targets (the loss mask) 2, so the count checks the mask and that targets
  stop at segment boundaries (an example's first token is never an assistant token)."""
  source = _conversations(12)
  model, params = gpt.GPT(reward_model[0].cfg), reward_model[1]["backbone"]

  @jax.jit
  def sums(batch):
    weights = batch["loss_mask"] + (batch["tokens"] != tok.pad_id)
    loss_sum, (count, _) = lm.next_token_loss_sum(model, params, batch["tokens"], weights,
                                                  segment_ids_BxT1=batch.get("segment_ids"))
    return jnp.stack([loss_sum, count])

  def total(batches):
    return sum(np.asarray(sums(batch), np.float64) for batch in batches)

  unpacked = total(pipeline.sft_iterator(source, tok, max_len=32, batch_size=4, seed=0,
                                         repeat=False))
  packed = total(packing.sft_iterator(source, tok, max_len=32, batch_size=2, seed=0,
                                      repeat=False))
  assert packed[1] == unpacked[1]  # counts
  np.testing.assert_allclose(packed[0], unpacked[0], rtol=1e-5)  # sums


@pytest.mark.parametrize("share_prompt", [False, True])
def test_packed_rm_scores_equal_unpacked(tok, reward_model, share_prompt):
  source = _rankings(8)
  model, params = reward_model
  unpacked_scores = jax.jit(functools.partial(reward.response_scores, model))
  packed_scores = jax.jit(functools.partial(reward.packed_response_scores, model))
  want, got = {}, {}
  for batch in pipeline.preference_iterator(source, tok, max_len=28, num_responses=3,
                                            batch_size=4, seed=0, repeat=False):
    scores_BxK = unpacked_scores(params, batch["tokens"], batch["response_mask"])
    want.update(zip(batch["index"].tolist(), np.asarray(scores_BxK)))
  for batch in packing.preference_iterator(source, tok, max_len=28, num_responses=3,
                                           batch_size=4, num_rows=4, seed=0, repeat=False,
                                           row_len=56 if share_prompt else 28,
                                           share_prompt=share_prompt):
    scores_BxK = packed_scores(params, batch)
    got.update((i, s) for i, s in zip(batch["index"].tolist(), np.asarray(scores_BxK)) if i >= 0)
  assert sorted(got) == sorted(want) == list(range(8))
  for index, scores_K in want.items():
    k = len(source[index]["responses"])  # the other slots are missing responses
    np.testing.assert_allclose(got[index][:k], scores_K[:k], atol=1e-5)


@pytest.mark.parametrize("stage", ["sft", "reward"])
def test_packed_tasks_train_on_packed_rows_and_count_their_epochs(stage, sft_path, tmp_path):
  """make_task with data.pack (and 2 microbatches): the training batches are packed rows, the
  step traces on them, and an epoch is the packed pass's steps: fewer than unpacked for SFT;
  the reward model's 32 rows hold a whole batch of 16 records (unpacked: 80 rows), so its
  epoch keeps its 9 steps."""
  if stage == "sft":
    config = tiny_sft_config(sft_path, **{"data.pack": True})
    unpacked_steps, make_task = 216 // 16, sft.make_task  # 216 training examples
  else:
    # 32 rows of 48 tokens hold at most 16 records; unpacked, they take 16 × 5 rows of 24.
    config = rm_config(write_rankings(tmp_path / "rankings.jsonl"), **{
        "data.pack": True, "rm.pack_rows": 32, "batch_size": 16, "data.seq_len": 48})
    unpacked_steps, make_task = 144 // 16, reward.make_task  # 144 training records
  config = configs.override(config, **{"mesh.data": 1, "optim.grad_accum_steps": 2})
  mesh = sharding.make_mesh(config.mesh)
  with jax.set_mesh(mesh), nn.logical_axis_rules(sharding.rules(config.mesh)):
    task = make_task(config, str(tmp_path / "run"), mesh)
    batch = next(task.train_data(None))
    rows = 32 if stage == "reward" else config.batch_size
    assert batch["tokens"].shape == batch["segment_ids"].shape == (rows, config.data.seq_len)
    assert batch["segment_ids"].max() > 1  # several examples in a row
    _, metrics = jax.eval_shape(task.step, jax.eval_shape(task.init, jax.random.key(0)), batch,
                                jax.random.key(1))
  assert "train/loss" in metrics
  if stage == "sft":
    assert 0 < task.steps_per_epoch < unpacked_steps
  else:
    assert task.steps_per_epoch == unpacked_steps and task.info["tokens_per_step"] == 32 * 48


@pytest.mark.parametrize("num_records", [160, 170])
def test_packed_rm_evaluation_equals_unpacked_and_keeps_every_record(num_records, tmp_path):
  """The same params evaluated with packed and unpacked held-out batches: with 16
  validation records (two whole batches of 8) the metrics agree; with 17 the unpacked
  pass leaves the last record out and the packed one keeps it."""
  data = write_rankings(tmp_path / "rankings.jsonl", num_records=num_records)
  results = {}
  for pack in (False, True):
    config = rm_config(data, **{"data.pack": pack, "rm.pack_rows": 16, "mesh.data": 1,
                                "eval_steps": 100})
    mesh = sharding.make_mesh(config.mesh)
    with jax.set_mesh(mesh), nn.logical_axis_rules(sharding.rules(config.mesh)):
      task = reward.make_task(config, str(tmp_path / f"run{pack}"), mesh)
      results[pack] = task.evaluate(task.init(jax.random.key(0)), jax.random.key(1))
  held_out = task.info["eval_records"]
  assert held_out == num_records // 10
  assert results[True]["rm/records"] == held_out
  assert results[False]["rm/records"] == held_out // 8 * 8
  if held_out % 8 == 0:
    for key in ("rm/accuracy", "rm/loss", "rm/margin", "rm/ece"):
      np.testing.assert_allclose(results[True][key], results[False][key], rtol=1e-5, atol=1e-6)
