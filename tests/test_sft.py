"""SFT: the loss covers assistant tokens only, epochs, exact resume, malformed data."""
import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlhf_jax import errors, losses, metrics, train
from rlhf_jax.data import pipeline, store
from rlhf_jax.models import gpt
from rlhf_jax.tasks import lm, sft
from rlhf_jax import tokenizer as tokenizer_lib

from test_cli import assert_one_line_error, run_main
from test_train import assert_checkpoints_finite, tiny_config


def tiny_sft_config(sft_path, **overrides):
  return tiny_config(sft_path, **{"task": "sft", "data.seq_len": 48,
                                  "gold_eval.num_prompts": -1, **overrides})


@pytest.fixture(scope="module")
def batch_and_model(sft_path):
  splits = store.local_dataset(sft_path, "sft")
  tok = tokenizer_lib.train_bpe(sft.chat_texts(splits["train"]), 300)
  batch = next(pipeline.sft_iterator(splits["train"], tok, max_len=48, batch_size=8, seed=0,
                                     shuffle=False))
  model = gpt.GPT(gpt.GPTConfig(vocab_size=tok.vocab_size, num_layers=1, num_heads=2,
                                embed_dim=32, max_len=64))
  params = nn.meta.unbox(model.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32)))["params"]
  return tok, batch, model, params


def _loss(model, params, tokens, mask):
  total, (count, _) = lm.next_token_loss_sum(model, params, jnp.asarray(tokens),
                                             jnp.asarray(mask))
  return float(total / count)


def test_loss_covers_assistant_content_and_eos_only(batch_and_model):
  tok, batch, model, params = batch_and_model
  tokens, mask = batch["tokens"], batch["loss_mask"]
  row = 0
  real = np.nonzero(tokens[row] != tok.pad_id)[0]
  response = np.nonzero(mask[row])[0]
  assert tokens[row, response[-1]] == tok.eos_id and tokens[row, real[0]] == tok.user_id
  reference = _loss(model, params, tokens, mask)

  # The targets of prompt positions carry no weight: other target ids, same loss.
  logits, _ = model.apply({"params": params}, jnp.asarray(tokens[:, :-1]))
  targets = np.array(tokens[:, 1:])
  prompt_targets = np.nonzero(mask[row, 1:] == 0)[0]
  changed = targets.copy()
  changed[row, prompt_targets] = (changed[row, prompt_targets] + 7) % tok.vocab_size
  weights = jnp.asarray(mask[:, 1:])
  same = losses.next_token_xent(logits, jnp.asarray(changed), weights)
  ref = losses.next_token_xent(logits, jnp.asarray(targets), weights)
  assert float(same[0]) == float(ref[0]) and float(same[1]) == float(ref[1])

  # Padding after the EOS is never a target or a context of one.
  padded = np.array(tokens)
  padded[row, real[-1] + 1:] = 3
  assert _loss(model, params, padded, mask) == reference
  # A response token is a target: changing it changes the loss.
  edited = np.array(tokens)
  edited[row, response[0]] = (edited[row, response[0]] + 1) % tok.vocab_size
  assert abs(_loss(model, params, edited, mask) - reference) > 1e-4


@pytest.mark.parametrize("at_epoch_end", [True, False])
def test_epochs_set_the_steps_and_epoch_ends_are_evaluated_unless_turned_off(
    sft_path, tmp_path, at_epoch_end):
  workdir = str(tmp_path / "epochs")
  train.run(tiny_sft_config(sft_path, epochs=2.0, total_steps=0, eval_every=1000,
                            ckpt_every=0, eval_at_epoch_end=at_epoch_end), workdir)
  info = json.load(open(os.path.join(workdir, "info.json")))
  # 240 records, a tenth held out: 216 train examples = 13 batches of 16 per epoch.
  assert info["train_examples"] == 216 and info["steps_per_epoch"] == 13
  assert info["total_steps"] == 26
  rows = metrics.read_metrics(workdir)
  # eval_at_epoch_end=False leaves the first and the last evaluation.
  assert [r["step"] for r in rows if "eval/loss" in r] == ([0, 13, 26] if at_epoch_end
                                                          else [0, 26])
  assert max(r["step"] for r in rows) == 26
  evals = [r["eval/loss"] for r in rows if "eval/loss" in r]
  assert evals[-1] < evals[0] - 0.5, evals


@pytest.mark.parametrize("record,problem", [
    ({"messages": [{"role": "user", "content": "hi"}]}, "must end with an assistant turn"),
    ({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": ""}]},
     "empty assistant turn"),
    ({"messages": [{"role": "robot", "content": "hi"}, {"role": "assistant", "content": "x"}]},
     "must be one of"),
])
def test_malformed_sft_record_is_one_line_naming_file_and_line(tmp_path, sft_path, record,
                                                               problem):
  path = tmp_path / "bad_sft.jsonl"
  good = open(sft_path).readlines()[:5]
  path.write_text("".join(good) + json.dumps(record) + "\n")
  result = run_main("--config=experiments/sft_alpaca.py:smoke", f"--workdir={tmp_path / 'w'}",
                    f"--config.data.path={path}")
  assert_one_line_error(result, f"{path}:6", problem)


def test_divergence_stops_sft_at_the_step_with_the_last_checkpoint_intact(sft_path, tmp_path):
  """lr 1e30 after a 2-step warmup: step 3's loss is NaN (the loop is shared; pretraining's
  and PPO's cases are in test_train.py and test_ppo.py)."""
  workdir = str(tmp_path / "diverged")
  config = tiny_sft_config(sft_path, total_steps=6, eval_every=0, log_every=100, ckpt_every=2,
                           **{"optim.lr": 1e30, "optim.grad_clip": 0.0})
  with pytest.raises(errors.Diverged, match=r"^train/loss is nan.* at step 3; the last "
                                            r"checkpoint \(step 2\) is intact"):
    train.run(config, workdir)
  assert_checkpoints_finite(workdir, [2])
