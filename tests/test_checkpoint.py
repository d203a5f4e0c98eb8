"""Warm starts (`checkpoint.restore_params`): exact trees, fresh parts kept, clear errors
(another model, no checkpoint, a damaged one), nothing written into the source workdir."""
import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rlhf_jax import checkpoint
from rlhf_jax.errors import UserError
from rlhf_jax.models import gpt, heads
from rlhf_jax.tasks import reward
from rlhf_jax.tasks.base import TrainState

CFG = gpt.GPTConfig(vocab_size=40, num_layers=1, num_heads=2, embed_dim=16, max_len=16)
TOKENS = jnp.zeros((1, 8), jnp.int32)


@functools.lru_cache
def _jitted_init(model):  # one compilation per model (they dominate these tests' time)
  return jax.jit(lambda rng: TrainState.create(model.init(rng, TOKENS)["params"],
                                               optax.adam(1e-3)))


def fresh_state(model, seed):
  return _jitted_init(model)(jax.random.key(seed))


def save(workdir, state):
  saver = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"), keep=1)
  saver.save(7, state, {"position": 0})
  saver.wait()
  saver.close()
  return str(workdir)


def listing(directory):
  out = {}
  for root, _, names in os.walk(directory):
    for name in names:
      stat = os.stat(os.path.join(root, name))
      out[os.path.join(root, name)] = (stat.st_size, stat.st_mtime_ns)
  return out


def leaves(tree):
  return [np.asarray(x) for x in jax.tree.leaves(tree)]


def test_rm_warm_start_loads_the_sft_backbone_and_keeps_the_fresh_head(tmp_path):
  source = fresh_state(gpt.GPT(CFG), seed=1)
  sft_dir = save(tmp_path / "sft", source)
  before = listing(sft_dir)
  state = fresh_state(heads.RewardModel(CFG), seed=2)
  warm = reward.warm_start_fn(sft_dir)(state)
  for got, want in zip(leaves(warm.params["backbone"]), leaves(source.params)):
    np.testing.assert_array_equal(got, want)
  for got, want in zip(leaves(warm.params["head"]), leaves(state.params["head"])):
    np.testing.assert_array_equal(got, want)
  assert listing(sft_dir) == before  # nothing written into the source


def test_rm_warm_start_from_an_rm_workdir_restores_backbone_and_head(tmp_path):
  source = fresh_state(heads.RewardModel(CFG), seed=3)
  rm_dir = save(tmp_path / "rm", source)
  warm = reward.warm_start_fn(rm_dir)(fresh_state(heads.RewardModel(CFG), seed=4))
  for got, want in zip(leaves(warm.params), leaves(source.params)):
    np.testing.assert_array_equal(got, want)


def test_a_different_model_is_an_error_listing_its_leaves(tmp_path):
  wider = gpt.GPTConfig(vocab_size=40, num_layers=2, num_heads=2, embed_dim=24, max_len=16)
  sft_dir = save(tmp_path / "sft", fresh_state(gpt.GPT(wider), seed=1))
  with pytest.raises(UserError) as error:
    reward.warm_start_fn(sft_dir)(fresh_state(heads.RewardModel(CFG), seed=2))
  message = str(error.value)
  assert "\n" not in message and sft_dir in message
  assert "not in this model: h_1/" in message
  assert "checkpoint vs model shape/dtype: h_0/attn/out/bias/value (24,)/float32 vs (16,)" in message


def test_a_workdir_without_checkpoints_is_an_error_and_stays_untouched(tmp_path):
  missing = tmp_path / "typo"
  state = fresh_state(gpt.GPT(CFG), seed=1)
  abstract = jax.eval_shape(lambda: state.params)
  shardings = jax.tree.map(lambda x: x.sharding, state.params)
  with pytest.raises(UserError, match="holds no checkpoint.*--config.init_from"):
    checkpoint.restore_params(str(missing), abstract, shardings)
  assert not missing.exists()


def test_a_damaged_source_checkpoint_is_a_one_line_error(tmp_path):
  sft_dir = save(tmp_path / "sft", fresh_state(gpt.GPT(CFG), seed=1))
  step_dir = os.path.join(sft_dir, "checkpoints", "7")
  data_files = [os.path.join(root, name) for root, _, names in os.walk(step_dir)
                for name in names if os.path.basename(root) == "d"]  # OCDBT's data
  largest = max(data_files, key=os.path.getsize)  # the parameters
  os.truncate(largest, os.path.getsize(largest) // 2)
  with pytest.raises(UserError) as error:
    reward.warm_start_fn(sft_dir)(fresh_state(heads.RewardModel(CFG), seed=2))
  message = str(error.value)
  assert "\n" not in message and f"its newest checkpoint {step_dir} is damaged (" in message
  assert "OUT_OF_RANGE" in message, message  # metadata readable; the restore fails
  assert message.endswith("or point init_from at another workdir"), message
  os.remove(os.path.join(step_dir, "state", "manifest.ocdbt"))  # unreadable metadata too
  with pytest.raises(UserError, match="is damaged \\(orbax cannot read its metadata\\)"):
    checkpoint.saved_params_shapes(sft_dir)


def test_a_stop_checkpoint_is_replaced_by_the_next_save_and_not_counted_in_keep(tmp_path):
  """keep=2, saves every 10: a stop at 25 (then at 27, after a resume) keeps 10 and 20 until
  30 replaces the stop's checkpoint; the end is the uninterrupted run's 20 and 30."""
  state = fresh_state(gpt.GPT(CFG), seed=1)
  saver = checkpoint.Checkpointer(str(tmp_path), keep=2)
  every_10 = lambda step: step % 10 == 0
  kept = []
  for step in (10, 20, 25, 27, 30):
    saver.save(step, state, {"position": step}, every_10)
    saver.wait()
    kept.append(sorted(int(n) for n in os.listdir(tmp_path) if n.isdigit()))
  saver.close()
  assert kept == [[10], [10, 20], [10, 20, 25], [10, 20, 27], [20, 30]]
