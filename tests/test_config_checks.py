"""Config values the run cannot use stop it up front: one `error:` line naming the key, the
value and the fix, exit 2, and no workdir left behind."""
import pytest

from rlhf_jax import config_checks, configs
from rlhf_jax.errors import UserError

from conftest import SMOKE_PIPELINE_FLAGS
from test_cli import assert_one_line_error, run_main

SMOKE = "--config=experiments/pretrain_world.py:smoke"


@pytest.mark.parametrize("flag,fragment", [
    ("--config.batch_size=-1", "--config.batch_size=-1: must be a number > 0"),
    ("--config.optim.lr=-1", "--config.optim.lr=-1.0: must be a number > 0"),
    ("--config.total_steps=0", "--config.total_steps=0 and epochs=0: nothing to train"),
])
def test_a_bad_value_is_one_line_and_leaves_no_workdir(tmp_path, flag, fragment):
  workdir = tmp_path / "run"
  assert_one_line_error(run_main(SMOKE, f"--workdir={workdir}", flag), fragment)
  assert not workdir.exists()


def test_a_workdir_that_is_a_file_is_one_line(tmp_path):
  path = tmp_path / "notes.txt"
  path.write_text("keep me")
  assert_one_line_error(run_main(SMOKE, f"--workdir={path}"), "is a file", "--workdir")
  assert path.read_text() == "keep me"


def test_the_pipeline_checks_every_stage_before_training_any(tmp_path):
  workdir = tmp_path / "pipeline"
  result = run_main(*SMOKE_PIPELINE_FLAGS, f"--workdir={workdir}", "--config.ppo.optim.lr=0")
  assert_one_line_error(result, "stage ppo:", "--config.optim.lr=0", "--config.ppo.")
  assert not (workdir / "pretrain").exists()  # nothing trained before the PPO stage's error


@pytest.mark.parametrize("key,value", [
    ("log_every", 0), ("eval_steps", 0), ("keep_ckpts", 0), ("epochs", -1.0),
    ("model.dropout", 1.0), ("data.seq_len", 0), ("data.valid_fraction", 1.0),
    ("optim.b2", 1.0), ("optim.eps", 0.0), ("optim.weight_decay", -0.1),
    ("optim.grad_accum_steps", 0), ("optim.min_lr_ratio", 1.5),
    ("sampling.top_p", 0.0), ("sampling.temperature", -1.0), ("optim.lr", float("nan")),
])
def test_each_out_of_range_value_names_its_key(key, value):
  config = configs.override(configs.base_config(), **{key: value})
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
