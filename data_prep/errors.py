"""The one exception type for bad input.

The CLI turns a DataPrepError into a one-line message and a non-zero exit, so every message
must say what was wrong and how to fix it; anything else is a bug and keeps its traceback.
"""


class DataPrepError(ValueError):
    """Bad input (missing or corrupt source, bad split, bad option, conflicting output)."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during preparation; the message says whether the new data was published. A
    KeyboardInterrupt, so that whatever stops on Ctrl-C stops on it."""
