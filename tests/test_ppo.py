"""The PPO task: padding invariance, RM scoring layout, the ratio-1 first minibatch, a
controlled run that learns a known reward under the adaptive KL controller, and one-line
errors for bad workdirs. (Exact resume after SIGKILL and SIGTERM in PPO, as in every stage,
is tested by tests/test_pipeline_interrupted.py.)"""
import functools
import logging
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rlhf_jax import configs, errors, metrics, sampling, train
from rlhf_jax.models import gpt, heads
from rlhf_jax.tasks import ppo, reward

sys.path.insert(0, os.path.dirname(__file__))
import ppo_configs  # pylint: disable=g-import-not-at-top,wrong-import-position
from test_cli import assert_one_line_error, run_main  # pylint: disable=g-import-not-at-top

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAD, EOS, VOCAB = 0, 1, 300


# ---------------------------------------------------------------------------- pieces


def tiny_pieces(lr=1e-3, **ppo_overrides):
  cfg = configs.ppo_block()
  cfg.update({**dict(epochs=1, num_minibatches=1, critic_from="reward", kl_coef=0.1,
                     response_len=8), **ppo_overrides})
  model_cfg = gpt.GPTConfig(vocab_size=VOCAB, num_layers=1, num_heads=2, embed_dim=32,
                            max_len=64)
  critic = heads.RewardModel(model_cfg) if cfg.algorithm == "ppo" else None
  models = ppo.Models(gpt.GPT(model_cfg), heads.RewardModel(model_cfg), critic)
  tx = optax.adam(lr)
  pieces = ppo.make_pieces(models, cfg, eos_id=EOS, pad_id=PAD, policy_tx=tx, critic_tx=tx,
                           num_micro=1, policy_lr=optax.constant_schedule(1e-3))

  @jax.jit
  def init(rng):
    state = ppo.init_fn(models, cfg, tx, tx, 32)(rng)
    # A reference that differs from the policy, so KL terms are not all zero.
    reference = models.policy.init(jax.random.fold_in(rng, 1), jnp.zeros((1, 8), jnp.int32))
    return state.replace(reference_params=reference["params"], reward_gain=jnp.float32(1.7),
                         reward_bias=jnp.float32(-0.3))
  return models, pieces, init(jax.random.key(0))


def layout(prompts, responses, p, n):
  """Left-padded prompts [B, p], right-padded responses [B, n] and their masks."""
  b = len(prompts)
  prompt, prompt_mask = np.full((b, p), PAD, np.int32), np.zeros((b, p), np.int32)
  response, mask = np.full((b, n), PAD, np.int32), np.zeros((b, n), np.int32)
  for i, (q, r) in enumerate(zip(prompts, responses)):
    prompt[i, p - len(q):], prompt_mask[i, p - len(q):] = q, 1
    response[i, :len(r)], mask[i, :len(r)] = r, 1
  return tuple(map(jnp.asarray, (prompt, prompt_mask, response, mask)))


def example_rows(seed=0, b=8):
  rng = np.random.default_rng(seed)
  prompts = [list(rng.integers(2, VOCAB, rng.integers(2, 7))) for _ in range(b)]
  responses = []
  for i in range(b):
    r = list(rng.integers(2, VOCAB, rng.integers(1, 6)))
    responses.append(r + [EOS] if i % 3 else r)   # some run out of budget without EOS
  return prompts, responses


_JITTED = {}


def _rollout_and_loss_fn(models, pieces):
  """One jitted program per `pieces` (kept here): each batch shape compiles once."""
  if id(pieces) in _JITTED:
    return _JITTED[id(pieces)][1]

  @jax.jit
  def rollout_and_loss(state, prompt, prompt_mask, response, mask, eos):
    log_probs = sampling.response_log_probs(models.policy, state.policy.params, prompt,
                                            prompt_mask, response, mask, temperature=1.0)
    samples = sampling.Samples(response, log_probs, mask, mask.sum(1), eos)
    experience, _, rollout_metrics = pieces.rollout(state, prompt, prompt_mask, samples)
    totals = ppo.minibatch_totals(experience, state.kl_coef)
    critic_params = state.critic.params if models.critic else ()
    loss, (sums, maxima) = pieces.loss((state.policy.params, critic_params),
                                       {"rollout": experience}, totals)
    return experience, {**rollout_metrics, **sums, **maxima, "loss": loss}
  _JITTED[id(pieces)] = (pieces, rollout_and_loss)  # pieces kept alive: its id stays its own
  return rollout_and_loss


def rollout_and_loss(models, pieces, state, prompts, responses, p, n):
  """The rollout, and the PPO loss (and its statistics) of the whole batch as one minibatch."""
  prompt, prompt_mask, response, mask = layout(prompts, responses, p, n)
  eos = jnp.asarray([r[-1] == EOS for r in responses])
  return _rollout_and_loss_fn(models, pieces)(state, prompt, prompt_mask, response, mask, eos)


def test_rewards_advantages_and_losses_do_not_depend_on_padding():
  models, pieces, state = tiny_pieces(missing_eos_penalty=0.5, entropy_coef=0.01)
  prompts, responses = example_rows()
  a = rollout_and_loss(models, pieces, state, prompts, responses, p=6, n=6)
  b = rollout_and_loss(models, pieces, state, prompts, responses, p=11, n=9)
  for field in ("rewards_BxN", "values_BxN", "advantages_BxN", "returns_BxN", "log_probs_BxN"):
    x, y = np.asarray(getattr(a[0], field)), np.asarray(getattr(b[0], field))
    np.testing.assert_allclose(x, y[:, :6], atol=2e-5, err_msg=field)
    assert np.all(y[:, 6:] == 0), field
  assert np.all(np.asarray(a[0].rewards_BxN)[np.asarray(a[0].mask_BxN) == 1] != 0)
  for name in ("ppo/score", "ppo/kl", "loss", "policy_loss", "value_loss", "entropy",
               "approx_kl", "ratio_max", "ratio_error"):
    np.testing.assert_allclose(a[1][name], b[1][name], rtol=2e-5, atol=1e-6, err_msg=name)
  assert float(a[1]["ratio_error"]) <= 1e-5  # π_old from the same forward: ratio 1


CRITIC_FREE = [dict(algorithm="grpo", group_size=2, loss_agg="sequence", kl_in="loss",
                    ratio_level="sequence"),
               dict(algorithm="rloo", group_size=4, loss_agg="constant", cliprange_high=0.3,
                    overlong_buffer=3)]


def grouped_rows(g, seed=0, b=8):
  """example_rows with each prompt asked g times (adjacent rows), every answer different."""
  prompts, responses = example_rows(seed, b)
  return [prompts[i // g * g] for i in range(b)], responses


@pytest.mark.parametrize("options", CRITIC_FREE, ids=lambda o: o["algorithm"])
def test_critic_free_loss_depends_on_neither_padding_nor_the_other_prompts(options):
  """Padding: more prompt and response padding changes no advantage, log-prob or loss.
  Batch composition (per-sequence and constant aggregation): the batch's loss is the mean
  of its prompts' losses, each with only that prompt's group as the minibatch, and a
  group's advantages are the same whatever groups share its batch."""
  g, algorithm = options["group_size"], options["algorithm"]
  models, pieces, state = tiny_pieces(**options, whiten_advantages=False)
  prompts, responses = grouped_rows(g)
  a = rollout_and_loss(models, pieces, state, prompts, responses, p=6, n=6)
  b = rollout_and_loss(models, pieces, state, prompts, responses, p=11, n=9)
  for field in ("advantages_BxN", "log_probs_BxN", "ref_log_probs_BxN"):
    x, y = np.asarray(getattr(a[0], field)), np.asarray(getattr(b[0], field))
    np.testing.assert_allclose(x, y[:, :6], atol=2e-5, err_msg=field)
    assert np.all(y[:, 6:] == 0), field
  for name in (f"{algorithm}/score", f"{algorithm}/kl", "loss", "policy_loss", "entropy"):
    np.testing.assert_allclose(a[1][name], b[1][name], rtol=2e-5, atol=1e-6, err_msg=name)
  assert float(a[1]["ratio_error"]) <= 1e-5  # π_old from the same forward: ratio 1
  assert "value_loss" not in a[1] and np.any(np.asarray(a[0].advantages_BxN) != 0)

  per_group = [rollout_and_loss(models, pieces, state, prompts[i:i + g], responses[i:i + g],
                                p=6, n=6) for i in range(0, len(prompts), g)]
  np.testing.assert_allclose(np.concatenate([np.asarray(x[0].advantages_BxN)
                                             for x in per_group]),
                             a[0].advantages_BxN, atol=1e-6)
  np.testing.assert_allclose(np.mean([float(x[1]["loss"]) for x in per_group]),
                             a[1]["loss"], rtol=5e-5)


@pytest.mark.parametrize("algorithm", ["grpo", "rloo"])
def test_critic_free_raises_a_known_reward(algorithm):
  """A fresh 1-layer policy, reward = +1 per response token among 30 chosen ids (a tenth of
  the vocabulary), 4 responses to each of 16 prompts per iteration: the score rises."""
  chosen = ",".join(str(i) for i in range(100, 130))
  models, pieces, state = tiny_pieces(
      lr=3e-3, algorithm=algorithm, group_size=4, reward=f"token_count:{chosen}", kl_coef=0.05,
      num_minibatches=2, loss_agg="sequence", whiten_advantages=False)
  state = state.replace(reference_params=state.policy.params)
  prompts = np.random.default_rng(1).integers(2, VOCAB, size=(16, 6)).astype(np.int32)
  batch = {"tokens": jnp.asarray(prompts), "mask": jnp.ones_like(prompts)}
  step = jax.jit(pieces.step)
  scores = []
  for i in range(16):
    state, step_metrics = step(state, batch, jax.random.key(i))
    scores.append(float(step_metrics[f"{algorithm}/score"]))
    assert float(step_metrics[f"{algorithm}/first_minibatch_ratio_error"]) <= 1e-5
  print(scores)
  assert np.mean(scores[-4:]) > np.mean(scores[:4]) + 1.0, scores


def test_rm_score_equals_the_right_padded_rm_row():
  """The in-step score (left-padded prompt + response, positions skipping pads) equals the
  RM's training layout: one right-padded row prompt + response, read at its last token."""
  models, pieces, state = tiny_pieces()
  prompts, responses = example_rows(seed=1)
  prompt, prompt_mask, response, mask = layout(prompts, responses, 9, 7)
  scores = np.asarray(jax.jit(pieces.score)(state, prompt, prompt_mask, response, mask))
  length = max(len(q) + len(r) for q, r in zip(prompts, responses))
  rows = np.full((len(prompts), 1, length), PAD, np.int32)
  row_mask = np.zeros_like(rows)
  for i, (q, r) in enumerate(zip(prompts, responses)):
    rows[i, 0, :len(q) + len(r)], row_mask[i, 0, :len(q) + len(r)] = q + r, 1
  raw = jax.jit(functools.partial(reward.response_scores, models.reward))(
      state.reward_params, jnp.asarray(rows), jnp.asarray(row_mask))[:, 0]
  np.testing.assert_allclose(scores, 1.7 * np.asarray(raw) - 0.3, atol=1e-5)
  assert np.std(scores) > 1e-3  # rows really score differently


def test_a_runaway_kl_penalty_stops_the_run_as_a_divergence():
  """β = 1e38 overflows the rewards, returns and value loss of a rollout; the loop's
  device-side tally names the step and the PPO metrics (the loop runs this check on every
  step's metrics: tests/test_train.py)."""
  models, pieces, state = tiny_pieces()
  prompts, responses = example_rows()
  _, step_metrics = rollout_and_loss(models, pieces, state.replace(kl_coef=jnp.float32(1e38)),
                                     prompts, responses, p=6, n=6)
  tally = metrics.tally_add(metrics.tally_start(step_metrics), 3, step_metrics)
  with pytest.raises(errors.Diverged, match=r"ppo/\w+ is (nan|inf|-inf).* at step 3; the last "
                                            r"checkpoint \(step 2\) is intact"):
    metrics.check_finite(jax.device_get(tally), True, 3, last_checkpoint=2)


def test_token_count_reward_hook():
  assert ppo.parse_reward("model") is None and ppo.parse_reward("token_count:42") == (42,)
  assert ppo.parse_reward("token_count:4,5") == (4, 5)
  counts = ppo.token_count_scores(jnp.asarray([[5, 7, 4, 0], [5, 5, 5, 5]]),
                                  jnp.asarray([[1, 1, 1, 0], [1, 1, 0, 0]]), (4, 5))
  np.testing.assert_array_equal(counts, [2.0, 2.0])


# ---------------------------------------------------------------------------- training runs


@pytest.fixture(scope="module")
def prompts_path(tmp_path_factory):
  return ppo_configs.write_prompts(tmp_path_factory.mktemp("prompts") / "prompts.jsonl")


@pytest.fixture(scope="module")
def controlled_run(prompts_path, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("controlled"))
  train.run(ppo_configs.controlled(prompts_path), workdir)
  return workdir


def training_rows(workdir):
  return {r["step"]: r for r in metrics.read_metrics(workdir) if "ppo/score" in r}


def test_ppo_raises_a_known_reward_with_kl_held_near_target(controlled_run):
  config = ppo_configs.controlled("")
  rows = training_rows(controlled_run)
  steps = sorted(rows)
  assert steps == list(range(1, config.total_steps + 1))
  score = [rows[s]["ppo/score"] for s in steps]
  kl = [rows[s]["ppo/kl"] for s in steps]
  assert np.mean(score[-5:]) > np.mean(score[:5]) + 1.0, score
  target = config.ppo.target_kl
  assert target / 2 < np.mean(kl[-5:]) < 2 * target, kl
  for s in steps:   # sampler and trainer log-probs agree on the first minibatch
    assert rows[s]["ppo/first_minibatch_ratio_error"] <= 1e-5, (s, rows[s])
  for s in steps[:-1]:  # β moved towards the target each iteration, by the controller's rule
    error = np.clip(rows[s]["ppo/kl"] / target - 1, -0.2, 0.2)
    expected = rows[s]["ppo/kl_coef"] * (1 + error * config.batch_size / config.ppo.kl_horizon)
    np.testing.assert_allclose(rows[s + 1]["ppo/kl_coef"], expected, rtol=1e-5)


# ---------------------------------------------------------------------------- user errors

SMOKE = "--config=experiments/ppo_world.py:smoke"


def test_prompt_batch_not_divisible_by_devices(tmp_path, prompts_path):
  result = run_main(SMOKE, f"--workdir={tmp_path / 'w'}", f"--config.data.path={prompts_path}",
                    "--config.batch_size=12")
  assert_one_line_error(result, "batch_size=12", "8 data-parallel devices")


def test_logged_rows_warn_when_kl_is_negative_or_the_ratio_runs_away(caplog):
  """The host-side check the loop runs on each logged PPO row (no callback in the step)."""
  with caplog.at_level(logging.WARNING):
    ppo.warn_if_far({"ppo/kl": 0.01, "ppo/ratio_max": 1.5}, ratio_warn=10.0)
    assert not caplog.records
    ppo.warn_if_far({"ppo/kl": -0.02, "ppo/ratio_max": 1.5}, ratio_warn=10.0)
    ppo.warn_if_far({"ppo/kl": 0.01, "ppo/ratio_max": 12.0}, ratio_warn=10.0)
  assert len(caplog.records) == 2 and "moved far" in caplog.records[0].getMessage()
