"""Simulated labelers: Bradley–Terry preferences, calibration, ranks with ties."""
import json

import numpy as np
import pytest

from rlhf_jax.data.world import labelers
from rlhf_jax.data.world.config import for_size


def test_gumbel_utilities_give_bradley_terry_preferences():
  rng = np.random.default_rng(0)
  values, tau, n = np.array([0.8, 0.5]), 0.2, 200_000
  u = labelers.utilities(values[None, :], tau, rng.gumbel(size=(n, 2)))
  empirical = np.mean(u[:, 0] > u[:, 1])
  assert empirical == pytest.approx(1 / (1 + np.exp(-(0.8 - 0.5) / tau)), abs=0.005)


def test_expected_agreement_limits_and_calibration():
  rng = np.random.default_rng(1)
  diff_a = rng.normal(0, 0.3, size=5000)
  diff_b = diff_a + rng.normal(0, 0.05, size=5000)
  assert labelers.expected_agreement(diff_a, diff_b, 1e3) == pytest.approx(0.5, abs=1e-3)
  noiseless = np.mean(np.sign(diff_a) == np.sign(diff_b))
  assert labelers.expected_agreement(diff_a, diff_b, 1e-6) == pytest.approx(noiseless, abs=1e-3)
  for target in (0.6, 0.73, 0.85):
    tau = labelers.calibrate_temperature(diff_a, diff_b, target)
    assert labelers.expected_agreement(diff_a, diff_b, tau) == pytest.approx(target, abs=1e-4)


def test_simulated_agreement_matches_expectation():
  rng = np.random.default_rng(2)
  values_a = rng.uniform(size=(4000, 2))
  values_b = values_a + rng.normal(0, 0.03, size=values_a.shape)
  diff_a, diff_b = values_a[:, 0] - values_a[:, 1], values_b[:, 0] - values_b[:, 1]
  tau = labelers.calibrate_temperature(diff_a, diff_b, 0.73)
  u_a = labelers.utilities(values_a, tau, rng.gumbel(size=values_a.shape))
  u_b = labelers.utilities(values_b, tau, rng.gumbel(size=values_b.shape))
  agree = np.mean((u_a[:, 0] > u_a[:, 1]) == (u_b[:, 0] > u_b[:, 1]))
  assert agree == pytest.approx(0.73, abs=0.025)


def test_labeler_bias_and_perceived_values():
  pool = labelers.make_labelers(np.random.default_rng(3), 50, spread=0.3, length_bias=0.05)
  assert pool.weights_LxC.shape == (50, 2)
  np.testing.assert_allclose(pool.weights_LxC.sum(axis=1), 1.0)
  assert np.all((pool.format_weight_L > 0) & (pool.format_weight_L <= 1))
  assert np.std(pool.length_bias_L) > 0 and np.std(pool.hygiene_exponent_L) > 0
  # correctness, completeness, format of: right; wrong; right but unsafe; right but
  # repeated (hygiene 0.1); right but not in the asked format.
  parts = np.array([[1.0, 1.0, 1.0], [0.0, 1.0, 1.0], [1.0, 1.0, 1.0], [1.0, 1.0, 1.0],
                    [1.0, 1.0, 0.0]])
  hygiene, safety = np.array([1.0, 1.0, 1.0, 0.1, 1.0]), np.array([1.0, 1.0, 0.0, 1.0, 1.0])
  for j in range(50):
    v = labelers.perceived(pool, j, parts, hygiene, safety, np.full(5, 5))
    assert v[0] == pytest.approx(1.0)  # a perfect answer is worth 1 to everyone
    assert v[2] == pytest.approx(0.0)  # unsafe responses are worth nothing
    assert v[3] < 0.5 < v[0]  # everyone sees that the repetition is degenerate ...
    assert v[1] < v[4] < v[0]  # ... and that right content in the wrong form beats wrong


def test_dense_ranks_and_pair_differences_skip_identical_texts():
  assert labelers.dense_ranks(np.array([0.2, 0.9, 0.2, -1.0])) == [1, 0, 1, 2]
  diffs = labelers.pair_differences(np.array([3.0, 1.0, 3.0]), np.array([0, 1, 0]))
  np.testing.assert_allclose(diffs, [2.0, -2.0])


def test_label_samples_ranks_model_samples_like_the_world_rankings(tmp_path):
  """The world's labelers rank arbitrary responses: the ideal beats an off-topic answer
  about as often as labelers agree with the gold judge, and identical texts tie."""
  from rlhf_jax.data.world import writer  # pylint: disable=g-import-not-at-top
  root = str(tmp_path / "world")
  writer.write_world(root, seed=3, size="small",
                     config=for_size("small", n_corpus_docs=50, n_sft=20, n_rankings=300,
                                     n_prompts=20))
  records = [json.loads(line) for line in open(f"{root}/rankings/train.jsonl")]
  samples = [(r, [r["responses"][r["meta"]["tiers"].index("ideal")],
                  "Gavale is a town in the north."] * 2)
             for r in records if "ideal" in r["meta"]["tiers"]]
  labelled = writer.label_samples(root, [s[0] for s in samples], [s[1] for s in samples], seed=1)
  ideal_first = np.mean([row["ranking"][0] < row["ranking"][1] for row in labelled])
  assert 0.85 < ideal_first <= 1.0, ideal_first
  assert all(row["ranking"][0] == row["ranking"][2] for row in labelled)  # same text: a tie
  assert all(row["meta"]["tiers"] == ["sample"] * 4 and len(row["meta"]["gold"]) == 4
             for row in labelled)
  again = writer.label_samples(root, [s[0] for s in samples], [s[1] for s in samples], seed=1)
  assert again == labelled  # deterministic in the seed
