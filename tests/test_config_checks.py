"""Config values the run cannot use stop it up front, naming the key, the value and the fix
(through the command line, with nothing left behind: test_bad_inputs.py)."""
import pytest

from rlhf_jax import config_checks, configs
from rlhf_jax.errors import UserError


@pytest.mark.parametrize("key,value", [
    ("log_every", 0), ("eval_steps", 0), ("keep_ckpts", 0), ("epochs", -1.0),
    ("model.dropout", 1.0), ("data.seq_len", 0), ("data.valid_fraction", 1.0),
    ("optim.b2", 1.0), ("optim.eps", 0.0), ("optim.weight_decay", -0.1),
    ("optim.grad_accum_steps", 0), ("optim.min_lr_ratio", 1.5),
    ("sampling.top_p", 0.0), ("sampling.temperature", -1.0), ("optim.lr", float("nan")),
    ("tokenizer.vocab_size", 260), ("rm.margin", -0.1), ("rm.num_responses", 1),
    ("ppo.gamma", 1.01), ("ppo.lam", -0.5), ("ppo.kl_coef", -1.0), ("ppo.target_kl", -1.0),
    ("ppo.cliprange", 0.0), ("ppo.cliprange_value", -0.2), ("ppo.epochs", 0),
    ("ppo.num_minibatches", 0), ("ppo.ema_decay", 1.0), ("ppo.kl_estimator", "kl"),
    ("dpo.beta", 0.0), ("dpo.loss", "kto"), ("dpo.num_responses", 1), ("dpo.kl_prompts", -1),
])
def test_each_out_of_range_value_names_its_key(key, value):
  config = configs.base_config()
  config.rm, config.ppo, config.dpo = configs.rm_block(), configs.ppo_block(), configs.dpo_block()
  config = configs.override(config, **{key: value})
  with pytest.raises(UserError, match=rf"^--config\.{key}="):
    config_checks.check(config)


def test_every_experiment_config_passes():
  from test_experiments import EXPERIMENTS, load_experiment  # pylint: disable=g-import-not-at-top
  checked = 0
  for path in EXPERIMENTS:
    for arg in (None, "smoke"):
      config = load_experiment(path).get_config(arg)
      for stage in (config.stages.split(",") if "stages" in config else [None]):
        config_checks.check(config[stage] if stage else config)
        checked += 1
  assert checked >= 2 * len(EXPERIMENTS)
