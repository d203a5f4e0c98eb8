"""The scalar head and the reward model: init scale, the EOS read-out, padding and batch
invariance of a response's score, and a params tree that holds a GPT checkpoint's."""
import jax
import jax.numpy as jnp
import numpy as np

from rlhf_jax.models import gpt, heads

CFG = gpt.GPTConfig(vocab_size=50, num_layers=2, num_heads=2, embed_dim=32, max_len=64)


def test_head_init_has_variance_one_over_d_plus_one():
  d = 4000
  params = heads.ScalarHead().init(jax.random.key(0), jnp.zeros((1, 1, d)))["params"]
  kernel = np.asarray(params["kernel"].value, np.float64)
  assert kernel.shape == (d,) and float(params["bias"]) == 0.0
  np.testing.assert_allclose(kernel.var(), 1 / (d + 1), rtol=0.06)  # 4000 samples: ±4.5%


def test_last_token_values_read_the_last_masked_position():
  rng = np.random.default_rng(0)
  values = rng.normal(size=(5, 9)).astype(np.float32)
  mask = np.zeros((5, 9), np.int32)
  for row, (start, end) in enumerate([(2, 5), (0, 9), (3, 4), (1, 8), (0, 0)]):
    mask[row, start:end] = 1
  want = [values[0, 4], values[1, 8], values[2, 3], values[3, 7], values[4, 0]]
  np.testing.assert_array_equal(heads.last_token_values(jnp.asarray(values), mask), want)


@jax.jit
def _scores(params, tokens, mask):
  values = heads.RewardModel(CFG).apply({"params": params}, tokens)
  return heads.last_token_values(values, mask)


def test_score_ignores_padding_and_the_other_rows_of_the_batch():
  params = jax.jit(heads.RewardModel(CFG).init)(jax.random.key(1),
                                                 jnp.zeros((1, 16), jnp.int32))["params"]
  rng = np.random.default_rng(1)
  ids = rng.integers(3, 50, size=11).tolist() + [1]  # a response ending in EOS (id 1)
  pad = 0

  def row(length):
    tokens = np.full(length, pad, np.int32)
    tokens[:len(ids)] = ids
    mask = np.zeros(length, np.int32)
    mask[5:len(ids)] = 1
    return tokens, mask

  tokens16, mask16 = row(16)
  alone = _scores(params, tokens16[None], mask16[None])[0]
  tokens48, mask48 = row(48)
  assert abs(_scores(params, tokens48[None], mask48[None])[0] - alone) < 1e-5
  others = rng.integers(0, 50, size=(5, 16)).astype(np.int32)
  batch = np.concatenate([others[:2], tokens16[None], others[2:]])
  batch_mask = np.concatenate([np.ones((2, 16)), mask16[None], np.ones((3, 16))]).astype(np.int32)
  assert abs(_scores(params, batch, batch_mask)[2] - alone) < 1e-5
  changed = tokens16.copy()
  changed[3] = (changed[3] + 1) % 50  # a different prompt token does change the score
  assert abs(_scores(params, changed[None], mask16[None])[0] - alone) > 1e-4


def test_reward_model_backbone_has_the_gpt_params_tree():
  tokens = jnp.zeros((1, 8), jnp.int32)
  rm = jax.eval_shape(heads.RewardModel(CFG).init, jax.random.key(0), tokens)["params"]
  lm = jax.eval_shape(gpt.GPT(CFG).init, jax.random.key(0), tokens)["params"]
  assert set(rm) == {"backbone", "head"}
  assert jax.tree.structure(rm["backbone"]) == jax.tree.structure(lm)
  assert jax.tree.map(lambda x: x.shape, rm["backbone"]) == jax.tree.map(lambda x: x.shape, lm)
