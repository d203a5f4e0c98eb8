"""Command line: the only module that defines flags.

  python -m rlhf_jax.main --config=experiments/NAME.py[:ARGS] --workdir=DIR [--config.a.b=V ...]

A config with `stages` is a pipeline: rlhf_jax.pipeline_runner runs its stages in order.

Several processes (hosts): run the same command on each, plus either
`--coordinator_address=HOST:PORT --num_processes=N --process_id=I` (process 0 listens at
HOST:PORT) or `--distributed` where JAX detects them (TPU pod slices, SLURM, Open MPI,
Kubernetes). The launch is not part of the config: one config runs on any process count.
"""
import logging
import re
import sys

from absl import app, flags
from ml_collections import config_flags

from rlhf_jax.errors import Diverged, UserError

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file[:variant].",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and logs.")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "HOST:PORT where process 0 coordinates a run over several "
    "processes (with --num_processes and --process_id); unset: one process.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in the run.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index, 0 .. N-1.")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False, "Join a multi-process run whose settings JAX detects (TPU pod "
    "slice, SLURM, Open MPI, Kubernetes); the three flags above, when given, take precedence.")


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


def _distributed_settings() -> dict | None:
  """jax.distributed.initialize's arguments from the flags; None: a single process."""
  given = {"coordinator_address": _COORDINATOR.value, "num_processes": _NUM_PROCESSES.value,
           "process_id": _PROCESS_ID.value}
  if not _DISTRIBUTED.value and all(v is None for v in given.values()):
    return None
  missing = [f"--{k}" for k, v in given.items() if v is None]
  if missing and not _DISTRIBUTED.value:
    raise UserError(f"{', '.join(missing)} not set: a multi-process run needs "
                    f"--coordinator_address, --num_processes and --process_id (or "
                    f"--distributed, where JAX detects them)")
  address, count, index = given.values()
  if address is not None and not re.fullmatch(r"[^\s]+:\d+", address):
    raise UserError(f"--coordinator_address={address!r}: write HOST:PORT, process 0's host "
                    f"and a free port, e.g. 10.0.0.1:1234")
  if count is not None and count < 1:
    raise UserError(f"--num_processes={count}: must be at least 1")
  if index is not None and (index < 0 or (count is not None and index >= count)):
    raise UserError(f"--process_id={index} must be in [0, --num_processes={count}): "
                    f"number the processes 0 to {count - 1 if count else 'N-1'}")
  return given


def _initialize_distributed(settings: dict) -> None:
  """jax.distributed.initialize (before anything touches a device)."""
  import jax  # pylint: disable=g-import-not-at-top  (keeps --help fast)
  if settings["num_processes"] != 1:
    # CPU collectives across processes (the CPU backend's; GPUs and TPUs bring their own):
    # gloo, JAX's default since 0.5 and absent before it.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  try:
    jax.distributed.initialize(**settings)
  except ValueError as e:  # --distributed, and JAX detected no cluster (the rest is checked)
    raise UserError(f"--distributed: JAX found no cluster to join ({str(e).rstrip('.')}); "
                    f"pass --coordinator_address, --num_processes and --process_id") from None
  logging.info("process %d of %d (%d local devices of %d)", jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count())


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
    settings = _distributed_settings()
    if settings is not None:
      _initialize_distributed(settings)
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
