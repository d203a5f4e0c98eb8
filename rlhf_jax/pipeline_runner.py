"""Runs a pipeline experiment (DESIGN §3.10): its stage configs in order, each through the
unchanged `train.run` in WORKDIR/<stage>, then the report.

A pipeline config has `stages` ("pretrain,sft,rm,ppo": the order), one full stage config
per stage name, `links` ("sft.init_from=pretrain,...": a stage key set to an earlier
stage's workdir) and `report` (`configs.report_block()`; num_prompts=0 skips it).
"""
import contextlib
import json
import logging
import os
import time

import jax
import ml_collections

from rlhf_jax import config_checks, configs, sharding, train
from rlhf_jax.errors import Diverged, UserError

DONE_FILE = "done.json"


def parse_links(links: str) -> dict[str, str]:
  """"sft.init_from=pretrain,ppo.ppo.reward_from=rm" → {"sft.init_from": "pretrain", ...}."""
  pairs = [item.split("=") for item in links.replace(" ", "").split(",") if item]
  if any(len(pair) != 2 or "." not in pair[0] for pair in pairs):
    raise UserError(f"links={links!r}: use comma-separated <stage>.<key>=<earlier stage>")
  return dict(pairs)


def stage_configs(config, workdir: str) -> list[tuple[str, ml_collections.ConfigDict]]:
  """[(stage, its config with the links set to WORKDIR/<earlier stage>)] in run order.

  Pure: copies the stage configs. A link from a stage not in `stages` is left out, so
  that stage keeps its own setting (a partial pipeline starting from an outside run).
  """
  names = [name for name in config.stages.replace(" ", "").split(",") if name]
  unknown = [name for name in names if not isinstance(config.get(name), ml_collections.ConfigDict)
             or "task" not in config[name]]
  if not names or unknown:
    raise UserError(f"stages={config.stages!r}: {unknown or 'none'} is not a stage of this "
                    f"pipeline config; name its stage blocks, e.g. 'pretrain,sft'")
  stages = {name: config[name].copy_and_resolve_references() for name in names}
  for stage in stages.values():
    stage.lock()  # a link to a misspelt key fails instead of adding it
  for key, source in parse_links(config.links).items():
    target = key.split(".")[0]
    if target not in stages or source not in stages:
      continue
    if names.index(source) >= names.index(target):
      raise UserError(f"links: {key}={source} but stage {source!r} does not run before "
                      f"{target!r}; reorder stages={config.stages!r}")
    try:
      configs.override(stages[target], **{key.split(".", 1)[1]: os.path.join(workdir, source)})
    except (KeyError, AttributeError):  # ConfigDict raises either for a missing key
      raise UserError(f"links: stage {target!r} has no key {key.split('.', 1)[1]!r}") from None
  return list(stages.items())


def is_done(stage_dir: str) -> bool:
  return os.path.exists(os.path.join(stage_dir, DONE_FILE))


def _mark_done(stage_dir: str, config, state) -> None:
  """Written only after `train.run` returned normally, atomically: a killed stage has none.
  Several processes: process 0 writes it."""
  if jax.process_index() != 0:
    return
  path = os.path.join(stage_dir, DONE_FILE)
  record = {"step": int(state.step), "time": time.time(), "config": json.loads(config.to_json())}
  with open(path + ".tmp", "w", encoding="utf-8") as f:
    json.dump(record, f, indent=2, sort_keys=True)
  os.replace(path + ".tmp", path)


def _warn_if_changed(stage: str, stage_dir: str, config) -> None:
  with open(os.path.join(stage_dir, DONE_FILE), encoding="utf-8") as f:
    if json.load(f)["config"] != json.loads(config.to_json()):
      logging.warning("stage %s finished with a different config; it is not rerun (delete %s "
                      "to train it again)", stage, stage_dir)


@contextlib.contextmanager
def _naming_the_stage(name: str):
  """A UserError raised inside says which stage, and how its keys are spelled."""
  try:
    yield
  except UserError as e:
    raise UserError(f"stage {name}: {e} (a stage's keys are --config.{name}.KEY)") from None
  except Diverged as e:
    raise Diverged(f"stage {name}: {e} (a stage's keys are --config.{name}.KEY)") from None


def _check_before_training(config, workdir: str, stages) -> None:
  """Every stage's values, devices and outside inputs (those no earlier stage writes), and
  the report's settings, before the first stage trains."""
  config_checks.check_workdir(workdir)
  produced = [os.path.join(workdir, name) for name, _ in stages]
  for name, stage_config in stages:
    with _naming_the_stage(name):
      config_checks.check(stage_config)
      if not is_done(os.path.join(workdir, name)):  # a finished stage reads nothing again
        config_checks.check_devices(stage_config, sharding.make_mesh(stage_config.mesh))
        config_checks.check_inputs(stage_config, produced)
  if config.report.num_prompts:
    from rlhf_jax import report  # pylint: disable=g-import-not-at-top
    report.check_config(config.report)
    sharding.check_batch_size(config.report.batch_size, report.report_mesh(),
                              "--config.report.batch_size")


def run(config, workdir: str) -> None:
  """Trains every stage not yet done, in order, then writes the report."""
  workdir = os.path.abspath(workdir)
  stages = stage_configs(config, workdir)
  names = [name for name, _ in stages]
  _check_before_training(config, workdir, stages)
  for i, (name, stage_config) in enumerate(stages):
    stage_dir = os.path.join(workdir, name)
    done = ", ".join(names[:i])
    if is_done(stage_dir):
      logging.info("stage %d/%d: %s already done; skipped", i + 1, len(stages), name)
      _warn_if_changed(name, stage_dir, stage_config)
      continue
    logging.info("stage %d/%d: %s (%s%d to go)", i + 1, len(stages), name,
                 f"{done} done; " if done else "", len(stages) - i - 1)
    with _naming_the_stage(name):
      state = train.run(stage_config, stage_dir)
    _mark_done(stage_dir, stage_config, state)
  logging.info("all %d stages done in %s", len(stages), workdir)
  if config.report.num_prompts:
    from rlhf_jax import report  # pylint: disable=g-import-not-at-top
    report.write_report(workdir, config.report)
