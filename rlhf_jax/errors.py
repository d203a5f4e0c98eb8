"""The exception types a run ends with, each printed by `main` as one line.

A `UserError` says what is wrong and how to fix it: `main` prints it without a
traceback and exits with status 2. `Diverged` says where a run's numbers became
NaN/Inf: exit status 1, the checkpoints before it kept. Anything else is a bug
and keeps its traceback.
"""
import argparse


class UserError(Exception):
  """A bad path, config value, data record or checkpoint; the message names the fix."""


class Diverged(FloatingPointError):
  """A loss or metric became NaN/Inf; the message names the step, the metric and the fix."""


class ArgumentParser(argparse.ArgumentParser):
  """The thin commands' parser: a usage mistake (a missing or malformed argument) is one
  `error:` line and exit status 2, as a UserError is."""

  def error(self, message):
    self.exit(2, f"error: {message}; see {self.prog} --help\n")
