"""The DPO task: it learns rankings with the frozen reference in the same step (policy =
reference at step 0), resumes exactly, and its loss ignores padding and missing responses."""
import math
import os
import shutil

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from rlhf_jax import configs, losses, metrics, tokenizer as tokenizer_lib, train
from rlhf_jax.data import pipeline
from rlhf_jax.models import gpt
from rlhf_jax.tasks import dpo

from test_reward import gpt_rows_of_one_step, tiny_preference_config, write_rankings
from test_train import rows_without_timing


def dpo_config(data_path, **overrides):
  """12 steps on one device (compiling for one device instead of 8 saves a third of the
  run); dpo/kl on 8 held-out prompts, 4 sampled tokens each."""
  c = tiny_preference_config("dpo", data_path)
  c.update(eval_every=12, ckpt_every=6)
  c.mesh.data = 1
  c.sampling.max_new_tokens = 4
  c.gold_eval.update(num_prompts=-1, batch_size=8)
  c.dpo = configs.dpo_block()
  c.dpo.update(num_responses=5, kl_prompts=8)
  return configs.override(c, **overrides)


def rows(workdir, key):
  return {r["step"]: r[key] for r in metrics.read_metrics(workdir) if key in r}


@pytest.fixture(scope="module")
def rankings(tmp_path_factory):
  return write_rankings(tmp_path_factory.mktemp("dpo_data") / "rankings.jsonl")


@pytest.fixture(scope="module")
def trained_dpo(rankings, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("dpo_run"))
  return workdir, train.run(dpo_config(rankings), workdir)


def test_dpo_learns_the_rankings_starting_from_the_reference(trained_dpo):
  trained_dpo, _ = trained_dpo
  # Before any update the policy is the reference: every implicit reward is 0.
  assert rows(trained_dpo, "train/reward_margin")[1] == 0.0
  assert rows(trained_dpo, "train/accuracy")[1] == 0.5  # all ties count ½
  first, last = [r for r in metrics.read_metrics(trained_dpo) if "dpo/accuracy" in r]
  assert first["step"] == 0 and first["dpo/accuracy"] == 0.5 and first["dpo/kl"] == 0.0
  accuracy = rows(trained_dpo, "train/accuracy")
  assert np.mean([accuracy[s] for s in range(7, 13)]) > 0.9, accuracy  # measured 0.99
  assert last["step"] == 12 and last["dpo/accuracy"] > 0.8, last  # measured 1.0
  assert last["dpo/accuracy_lo"] <= last["dpo/accuracy"] <= last["dpo/accuracy_hi"]
  assert last["dpo/reward_margin"] > 0 and last["dpo/loss"] < first["dpo/loss"]
  assert last["dpo/kl"] != 0.0 and last["dpo/kl_lo"] <= last["dpo/kl"] <= last["dpo/kl_hi"]
  assert "gold/score" not in last and "dpo/label_ceiling" not in last  # no gold judge here


def test_a_step_runs_policy_and_reference_in_one_program(rankings, tmp_path):
  """4 prompts × K = 5 rows: two GPT passes of 20 rows (policy, reference), one step."""
  shape, seen = gpt_rows_of_one_step(dpo.make_task, dpo_config(rankings, batch_size=4),
                                     str(tmp_path))
  assert shape == (4, 5, 24) and seen == [(20, 23), (20, 23)]


def test_the_reference_stays_frozen_while_the_policy_moves(trained_dpo):
  workdir, state = trained_dpo
  target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
                        state)
  earlier = ocp.StandardCheckpointer().restore(
      os.path.join(workdir, "checkpoints", "6", "state"), target)
  assert int(earlier.step) == 6 and int(state.step) == 12
  def host(params):  # NumPy: eager jnp comparisons would compile one program per shape
    return [np.asarray(x) for x in jax.tree.leaves(params)]

  assert all(np.array_equal(a, b) for a, b in zip(host(earlier.reference_params),
                                                  host(state.reference_params)))
  assert not any(np.array_equal(a, b) for a, b in zip(host(earlier.params), host(state.params)))


def test_resume_from_a_middle_checkpoint_matches_the_uninterrupted_run(trained_dpo, rankings,
                                                                       tmp_path):
  trained_dpo, _ = trained_dpo
  workdir = str(tmp_path / "resumed")
  shutil.copytree(trained_dpo, workdir)
  shutil.rmtree(os.path.join(workdir, "checkpoints", "12"))
  train.run(dpo_config(rankings), workdir)
  assert rows_without_timing(workdir) == rows_without_timing(trained_dpo)


def test_padding_and_missing_responses_do_not_change_the_loss(trained_dpo, rankings):
  workdir, state = trained_dpo
  tok = tokenizer_lib.load(os.path.join(workdir, tokenizer_lib.TOKENIZER_FILE))
  model = gpt.GPT(gpt.config_from(dpo_config(rankings).model, tok.vocab_size))
  prompt = [{"role": "user", "content": "rate item 3"}]
  responses = ["good good the cat 0", "the mat 1", "good fish sat 2"]
  ranking = [1, 2, 0]

  @jax.jit
  def loss(tokens, mask, ranking_BxK):
    logratios = dpo.log_ratios(model, state.params, state.reference_params, tokens, mask)
    return losses.dpo_loss(logratios, ranking_BxK, beta=0.1)[0]

  def rows_of(max_len, k):
    tokens, mask, _ = pipeline.preference_rows(tok, prompt, responses, max_len=max_len,
                                               num_rows=k)
    ranks = np.full((1, k), -1, np.int32)
    ranks[0, :3] = ranking
    return tokens[None], mask[None], ranks

  tight = float(loss(*rows_of(24, 3)))
  assert abs(tight - math.log(6)) > 1e-3  # log 3! would mean policy = reference
  # Twice the row length and two missing responses, padded with random tokens, not pad.
  tokens, mask, ranks = rows_of(48, 5)
  noise = np.random.default_rng(0).integers(0, tok.vocab_size, tokens.shape)
  after_eos = np.cumsum(mask, axis=-1) == mask.sum(-1, keepdims=True)  # at or after the EOS
  tokens = np.where(after_eos & (mask == 0), noise, tokens)
  assert (tokens[0, 3:] != tok.pad_id).any()
  np.testing.assert_allclose(float(loss(tokens, mask, ranks)), tight, rtol=2e-6)
