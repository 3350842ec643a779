"""Entry points' errors: an expected one is one line on stderr and a non-zero exit, not a traceback.

    if __name__ == "__main__":
      cli.run(main)

Expected errors: a bad flag, config field or value (exit status 2), and, from ``main``, ValueError
(bad values, conversion errors, files that are not JSON or not UTF-8), OSError (missing, unreadable or
existing files, unusable directories) and mdt_jax.errors.RunError (a foreign workdir, a run
stopped by non-finite steps) (exit status 1). They print ``<program>: error: <message>``, the message
naming the file, field or step. Anything else is a bug and keeps its traceback; ``MDT_TRACEBACK=1``
shows the traceback of expected errors too.
"""
from __future__ import annotations

import os
import re
import sys
from pathlib import Path

from absl import app, flags

from mdt_jax.errors import RunError

EXPECTED = (ValueError, OSError, RunError, app.UsageError)
TRACEBACK_ENV = "MDT_TRACEBACK"


def _one_line(text: str) -> str:
  return re.sub(r"\s*\n\s*", " ", str(text)).strip()


def fail(message: str, status: int = 1):
  sys.stderr.write(f"{Path(sys.argv[0]).name}: error: {_one_line(message)}\n")
  sys.exit(status)


def _flag_error(error: Exception) -> str:
  """The one line that says what is wrong with the command line."""
  if isinstance(error, SyntaxError):  # a config file that is not Python (or not UTF-8)
    return f"{error.filename}: {error.msg}"
  if isinstance(error, (AttributeError, KeyError)):  # ml_collections: an override of a missing field
    field = str(error).strip("\"'")
    return f"unknown config field {field!r} in a --config.<field> override (--dry_run lists every field)"
  lines = [line for line in str(error).splitlines() if line.strip()]
  if isinstance(error, flags.Error) and "Error whilst parsing config file" in str(error):
    return f"{lines[0].split(': Error whilst')[0]}: {lines[-1]}"  # flag name, then the config's own error
  return " ".join(lines) or type(error).__name__


def _parse_flags(argv):
  try:
    return flags.FLAGS(argv)
  except Exception as e:  # noqa: BLE001  any failure to parse the command line (config files included)
    if os.environ.get(TRACEBACK_ENV):
      raise
    fail(_flag_error(e), status=2)


def run(main):
  """``absl.app.run(main)`` with expected errors as one line (module docstring)."""

  def guarded(argv):
    try:
      return main(argv)
    except EXPECTED as e:
      if os.environ.get(TRACEBACK_ENV):
        raise
      fail(str(e) or type(e).__name__, status=2 if isinstance(e, app.UsageError) else 1)

  app.run(guarded, flags_parser=_parse_flags)
