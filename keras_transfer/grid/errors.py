"""The grid's one exception: something the user must fix before the grid can run.

A module of its own so that nets, plan and the backends can all raise it without importing
each other; the command line turns it into `launch.sh: error: ...` and exit code 2.
"""
from __future__ import annotations


class GridError(Exception):
    """Bad grid arguments or an unusable preset; the message says what to change."""
