"""Command line: the only module that defines flags.

  python -m rlhf_jax.main --config=experiments/NAME.py[:ARGS] --workdir=DIR [--config.a.b=V ...]

A config with `stages` is a pipeline: rlhf_jax.pipeline_runner runs its stages in order.
"""
import logging
import sys

from absl import app, flags
from ml_collections import config_flags

from rlhf_jax.errors import Diverged, UserError

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file[:variant].",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and logs.")


def _fail(message: str) -> None:
  print(f"error: {message}", file=sys.stderr)
  sys.exit(2)


def _parse_flags(argv):
  """absl parsing, but a bad flag or config key is one line and exit status 2."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    # A config file that raised carries its traceback: keep the flag and the exception line.
    message = f"{lines[0]} {lines[-1]}" if len(lines) > 1 else lines[0]
    _fail(f"{message} (see --helpfull for valid flags and config keys)")
  except (AttributeError, KeyError) as e:  # a --config.KEY the config does not have
    key = str(e).strip("\"' ")
    given = [a.split("=")[0] for a in argv if a.startswith("--config.") and key in a.split("=")[0]]
    _fail(f"{(given or ['--config.' + key])[0]}: {key!r} is not a key of this config; check "
          f"the spelling (see --helpfull for the config's keys)")
  except (ValueError, TypeError, FileNotFoundError, OSError) as e:
    _fail(f"bad --config: {str(e).strip().splitlines()[-1]}")


def main(argv):
  if len(argv) > 1:
    _fail(f"unexpected arguments {argv[1:]}; pass settings as --config.KEY=VALUE")
  if _WORKDIR.value is None:
    _fail("--workdir is required; pass --workdir=DIR (a new or an existing run directory)")
  try:
    config = _CONFIG.value
    if config is not None:
      _ = config.task  # config_flags reports a failed load on first access
  except Exception as e:  # pylint: disable=broad-except
    _fail(f"cannot load --config: {' '.join(str(e).split())[:300]}")
  if config is None:
    _fail("--config is required; pass --config=experiments/NAME.py[:smoke]")
  # pylint: disable-next=g-import-not-at-top  (keeps --help fast)
  from rlhf_jax import pipeline_runner, train
  logging.getLogger().setLevel(logging.INFO)
  logging.getLogger("absl").setLevel(logging.WARNING)  # orbax/tfds progress chatter
  try:
    if "stages" in config:  # a pipeline experiment: its stage configs in order
      pipeline_runner.run(config, _WORKDIR.value)
    else:
      train.run(config, _WORKDIR.value)
  except UserError as e:
    _fail(str(e))
  except Diverged as e:  # the checkpoints before it are kept
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
  app.run(main, flags_parser=_parse_flags)
