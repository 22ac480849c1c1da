"""A flag absl cannot parse, told as every other bad input of a command is told.

absl's own handling of a value it cannot parse (not among an enum's choices, not a number)
prints "FATAL Flags parsing error: ..." and a hint on a second line, and exits 1, whatever the
command's status for bad input is. `parser` gives app.run a flags parser that prints the same
message as the command's one `error:` line instead, with where the flags are listed, and exits
with the command's status.
"""
from __future__ import annotations

import sys

from absl import flags


def parser(prefix: str, status: int):
    """app.run's `flags_parser`: parses argv into absl's FLAGS (--help and --flagfile as absl
    does); a flag it cannot parse is `{prefix}error: ...` on one line and exit `status`."""
    def parse(argv):
        try:
            return flags.FLAGS(argv)
        except flags.Error as error:
            message = str(error).removeprefix("ERROR:: ")  # absl's prefix of a flagfile's error
            print(f"{prefix}error: {message} (--help lists the flags)", file=sys.stderr)
            sys.exit(status)
    return parse
