"""The one exception type for user mistakes.

A `UserError` says what is wrong and how to fix it, in one line. `main` prints
it without a traceback and exits with status 2; anything else is a bug and
keeps its traceback.
"""


class UserError(Exception):
  """A bad path, config value, data record or checkpoint; the message names the fix."""
