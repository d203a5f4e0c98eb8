"""The reward-model task: learning, one backbone pass per response, normalisation, exact
resume after SIGKILL, and file:line errors for bad rankings."""
import json
import os

import flax.linen as nn
import jax
import numpy as np
import pytest

from rlhf_jax import configs, errors, metrics, sharding, train
from rlhf_jax.data import pipeline
from rlhf_jax.errors import UserError
from rlhf_jax.models import gpt
from rlhf_jax.tasks import reward

from test_train import assert_checkpoints_finite


_FILLER = "the cat sat on a mat and ate fish".split()


def write_rankings(path, num_records=160, seed=0, max_k=5):
  """Rankings a tiny model can learn: more 'good' words rank better; equal counts tie."""
  rng = np.random.default_rng(seed)
  with open(path, "w", encoding="utf-8") as f:
    for i in range(num_records):
      k = int(rng.integers(2, max_k + 1))
      goods = rng.integers(0, 4, size=k)
      goods[0] = (goods[1] + 1) % 4  # never all tied
      responses = [" ".join(["good"] * g + list(rng.choice(_FILLER, size=3))) + f" {j}"
                   for j, g in enumerate(goods)]
      ranking = [int(r) for r in np.unique(-goods, return_inverse=True)[1]]
      f.write(json.dumps({"prompt": f"rate item {i}", "responses": responses,
                          "ranking": ranking}) + "\n")
  return str(path)


def write_references(path, num_records=24):
  with open(path, "w", encoding="utf-8") as f:
    for i in range(num_records):
      f.write(json.dumps({"prompt": f"rate item {i}",
                          "response": "good " * (i % 4) + "cat sat"}) + "\n")
  return str(path)


def tiny_preference_config(task, data_path):
  """A 1-layer, 32-wide model on `write_rankings` data: 12 steps of 8 prompts."""
  c = configs.base_config()
  c.task = task
  c.data.path = data_path
  c.data.seq_len = 24
  c.model.update(preset="tiny", num_layers=1, embed_dim=32)
  c.tokenizer.vocab_size = 300
  c.batch_size = 8
  c.total_steps = 12
  c.optim.update(lr=3e-3, warmup_steps=2)
  c.update(log_every=1, eval_every=6, eval_steps=2, ckpt_every=4)
  return c


def rm_config(data_path, reference_path="", **overrides):
  c = tiny_preference_config("reward", data_path)
  c.rm = configs.rm_block()
  c.rm.update(num_responses=5, reference_path=reference_path, reference_max=0)
  return configs.override(c, **overrides)


def rows(workdir, key):
  return {r["step"]: r[key] for r in metrics.read_metrics(workdir) if key in r}


@pytest.fixture(scope="session")
def rm_data(tmp_path_factory):
  directory = tmp_path_factory.mktemp("rm_data")
  return (write_rankings(directory / "rankings.jsonl"),
          write_references(directory / "references.jsonl"))


@pytest.fixture(scope="session")
def trained_rm(rm_data, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("rm_run"))
  train.run(rm_config(*rm_data), workdir)
  return workdir


def test_rm_learns_and_leaves_metrics_plot_and_normalisation(trained_rm):
  accuracy = rows(trained_rm, "rm/accuracy")
  assert sorted(accuracy) == [0, 6, 12]
  assert accuracy[12] > accuracy[0] + 0.1 and accuracy[12] > 0.6, accuracy
  last = metrics.read_metrics(trained_rm)[-1]
  assert last["rm/accuracy_lo"] <= last["rm/accuracy"] <= last["rm/accuracy_hi"]
  for key in ("rm/loss", "rm/margin", "rm/ece", "rm/accuracy/gap/1"):
    assert np.isfinite(last[key]), key
  assert "rm/label_ceiling" not in last  # no gold judge for these records
  assert set(rows(trained_rm, "train/accuracy")) == set(range(1, 13))
  assert os.path.getsize(os.path.join(trained_rm, "rm_reliability.png")) > 1000
  saved = json.load(open(os.path.join(trained_rm, reward.NORMALIZATION_FILE)))
  assert saved["step"] == 12 and saved["num_references"] == 24


def gpt_rows_of_one_step(make_task, config, workdir):
  """(the first batch's tokens shape, the row shapes of every GPT pass in one step), traced
  with `jax.eval_shape` on a one-device mesh (nothing is compiled)."""
  config = configs.override(config, **{"mesh.data": 1})
  mesh = sharding.make_mesh(config.mesh)
  seen = []

  def count_rows(next_fun, args, kwargs, context):
    if context.method_name == "hidden_states" and isinstance(context.module, gpt.GPT):
      seen.append(args[0].shape)
    return next_fun(*args, **kwargs)

  with jax.set_mesh(mesh), nn.logical_axis_rules(sharding.rules(config.mesh)):
    task = make_task(config, workdir, mesh)
    state = jax.eval_shape(task.init, jax.random.key(0))
    batch = next(task.train_data(None))
    with nn.intercept_methods(count_rows):
      jax.eval_shape(task.step, state, batch, jax.random.key(1))
  return batch["tokens"].shape, seen


def test_each_response_goes_through_the_backbone_once_per_step(rm_data, tmp_path):
  """4 prompts × K = 5 rows: the backbone sees 20 rows in one call (not one per pair)."""
  shape, seen = gpt_rows_of_one_step(reward.make_task, rm_config(rm_data[0], batch_size=4),
                                     str(tmp_path))
  assert shape == (4, 5, 24) and seen == [(20, 24)]


def test_normalised_reference_rewards_have_mean_zero(trained_rm, rm_data):
  model, params, normalization, tok = reward.load_reward_model(trained_rm)
  references = [json.loads(line) for line in open(rm_data[1])]
  rows_ = [pipeline.preference_rows(
      tok, [{"role": "user", "content": r["prompt"]}], [r["response"]], max_len=24, num_rows=1)
           for r in references]
  scores = jax.jit(reward.normalised_scores, static_argnums=0)(
      model, params, normalization, np.stack([r[0] for r in rows_]),
      np.stack([r[1] for r in rows_]))
  assert normalization.step == 12 and normalization.gain == 1.0
  assert abs(float(np.mean(np.asarray(scores, np.float64)))) < 1e-3
  assert float(np.std(np.asarray(scores))) > 1e-2  # the rewards themselves differ


def test_more_responses_than_num_responses_is_an_error_naming_file_and_line(rm_data, tmp_path):
  lines = open(rm_data[0]).read().splitlines()
  record = json.loads(lines[5])
  record.update(responses=[f"answer {i}" for i in range(7)], ranking=list(range(7)))
  path = tmp_path / "seven.jsonl"
  path.write_text("\n".join(lines[:5] + [json.dumps(record)] + lines[6:]) + "\n")
  with pytest.raises(UserError, match=rf"^{path}:6: a ranking of 7 responses, but "
                                      r"rm\.num_responses=5; raise"):
    train.run(rm_config(str(path)), str(tmp_path / "run"))


def test_ranking_length_differing_from_responses_is_an_error_naming_file_and_line(tmp_path):
  path = tmp_path / "bad.jsonl"
  good = {"prompt": "p", "responses": ["a", "b", "c"], "ranking": [0, 1, 2]}
  bad = {"prompt": "p", "responses": ["a", "b", "c"], "ranking": [0, 1]}
  path.write_text("\n".join(json.dumps(r) for r in [good, good, bad]) + "\n")
  with pytest.raises(UserError, match=rf"^{path}:3: 'ranking' has 2 ranks for 3 responses"):
    train.run(rm_config(str(path)), str(tmp_path / "run"))


def test_normalisation_with_gain_gives_reference_rewards_std_one(trained_rm, rm_data, tmp_path):
  model, params, _, tok = reward.load_reward_model(trained_rm)
  config = rm_config(*rm_data, **{"rm.normalize_gain": True})
  mesh = sharding.make_mesh(config.mesh)
  normalization = reward.write_normalization(config, str(tmp_path), model, params, tok, mesh,
                                             None, step=12)
  saved = json.load(open(tmp_path / reward.NORMALIZATION_FILE))
  assert saved["gain"] == normalization.gain != 1.0 and saved["step"] == 12
  references = [json.loads(line) for line in open(rm_data[1])]
  rows_ = [pipeline.preference_rows(tok, [{"role": "user", "content": r["prompt"]}],
                                    [r["response"]], max_len=24, num_rows=1)
           for r in references]
  scores = np.asarray(jax.jit(reward.normalised_scores, static_argnums=0)(
      model, params, normalization, np.stack([r[0] for r in rows_]),
      np.stack([r[1] for r in rows_])), np.float64)
  assert abs(scores.mean()) < 1e-3 and abs(scores.std() - 1.0) < 1e-3


def test_divergence_stops_the_rm_at_the_step_with_the_last_checkpoint_intact(rm_data, tmp_path):
  """lr 1e30 after a 2-step warmup: a step's ranking loss turns NaN/Inf and the run stops,
  naming it, before a save (the loop is shared; see test_train.py)."""
  workdir = str(tmp_path / "diverged")
  config = rm_config(rm_data[0], total_steps=6, eval_every=0, log_every=100, ckpt_every=2,
                     **{"optim.lr": 1e30, "optim.grad_clip": 0.0})
  with pytest.raises(errors.Diverged, match=r"^train/loss is (nan|inf).* at step 3; the last "
                                            r"checkpoint \(step 2\) is intact"):
    train.run(config, workdir)
  assert_checkpoints_finite(workdir, [2])
