"""What every command line of bert_jax shares: a refused input is one line with exit status 2.

The checks name the key, flag or file and the fix and raise one of INPUT_ERRORS; a command prints
it as `<prog>: error: <message>` on one line and exits 2 (as argparse does for its own errors);
`--debug` keeps the traceback. Anything else (a bug, an accelerator error) keeps its traceback.
"""

from __future__ import annotations

import argparse
import re
import sys
from typing import Any, Callable

# Exit status of a config or input error, reported in one line.
EXIT_USAGE = 2
INPUT_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError, FileExistsError,
                PermissionError)


class Parser(argparse.ArgumentParser):
  """argparse with its errors in one line (the usage is in --help)."""

  def error(self, message):
    self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def command_line_keys(argv: list[str]) -> set[str]:
  """The config keys an argument list overrides: --config.model.hidden_size=256 -> "model.hidden_size"."""
  return {m.group(1) for a in argv if (m := re.match(r"^--?config\.([\w.]+)", a))}


def one_line(message: Any) -> str:
  return " ".join(str(message).split())


def run_command(prog: str, args, command: Callable[[Any], int]) -> int:
  """`command(args)` of an argparse tool (args.command, args.debug): its exit status, or
  EXIT_USAGE after one line on stderr for a refused input."""
  if not args.debug:  # Orbax's notes on read-only checkpoint managers are not for this console
    from absl import logging as absl_logging  # pylint: disable=g-import-not-at-top
    absl_logging.set_verbosity(absl_logging.ERROR)
  try:
    return command(args)
  except INPUT_ERRORS as e:
    if args.debug:
      raise
    print(f"{prog} {args.command}: error: {one_line(e)}", file=sys.stderr)
    return EXIT_USAGE
