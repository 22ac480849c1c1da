"""Ending a command's process that has imported TensorFlow without Python's teardown of it.

Python's exit in a process that imported TensorFlow takes about a second (its modules, threads
and C++ objects are torn down one by one) and saves nothing once a command's files are written
and closed. A grid starts a process per net or pack, and the tests start hundreds.
"""
from __future__ import annotations

import logging
import os
import sys


def exit_now(code) -> None:
    """Exits with `code`, read as SystemExit reads it (None: 0; not an int: printed to stderr,
    then 1), after flushing Python's logging and the output streams; nothing else runs."""
    if code is not None and not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: nothing more can be said
            pass
    os._exit(code or 0)
