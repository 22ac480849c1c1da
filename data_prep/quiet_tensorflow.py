"""TensorFlow without its start-up notices: every process of the project imports it through here.

Also without the optional libraries Keras loads for features no process of the project uses:
pandas (to slice a DataFrame given to `fit`) and matplotlib (its image-plotting helpers). They
are about 0.6 s of TensorFlow's 2.7 s import, paid by every net's process. They are hidden only
while TensorFlow imports (Keras then takes them for absent, as it does where they are not
installed) and import normally afterwards; one imported before TensorFlow is left alone.

TensorFlow prints a screenful as it starts: oneDNN and CUDA notices, hints about CPU
instructions, and on a machine without a GPU driver an error that cuInit failed. They come two
ways. Lines logged after start-up obey TF_CPP_MIN_LOG_LEVEL, read when TensorFlow loads. Lines
logged while its libraries load, before absl's logging is initialised ("WARNING: All log
messages before absl::InitializeLog() ..."), ignore it: those are filtered out of stderr while
TensorFlow is imported and lists its devices (where cuInit runs).

The filter is a small process of its own between this one's stderr and the terminal, so that a
line TensorFlow writes just before it aborts the import still reaches the user.

A TF_CPP_MIN_LOG_LEVEL the user set is left alone and nothing is filtered: they see what
TensorFlow prints at that level (0: everything).

Standard library only: the filter process runs this file as a script.
"""
from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import warnings

LEVEL = "TF_CPP_MIN_LOG_LEVEL"
# 2: errors (and fatal errors) are shown, information and warnings are not. A failure explains
# itself in its error lines (a lost worker, an op that cannot run, a device that will not
# start), so those stay; the information and warnings at start-up are TensorFlow's notes about
# its own build and optional libraries, which no user of the project acts on.
DEFAULT_LEVEL = "2"
# Set beside the level when the level is this module's default, so that child processes (the
# grid's runs, a demo's steps) filter as their parent did instead of taking it for the user's.
DEFAULT_MARK = "KERAS_TRANSFER_DEFAULT_TF_LOG_LEVEL"

_ABSL_BANNER = "WARNING: All log messages before absl::InitializeLog() is called"
# An information or warning line of absl's format (I0000 00:00:17.96 1234 port.cc:153] ...) or
# TensorFlow's older one (2024-05-07 19:48:22.210161: I tensorflow/core/util/port.cc:113] ...).
_BELOW_ERROR = re.compile(r"^(?:[IW]\d{4} [\d:.]+ +\d+ |\d{4}-\d\d-\d\d [\d:.]+: [IW] )\S+:\d+\] ")
_NO_DRIVER = "Could not find cuda drivers"
_CUINIT_FAILED = "failed call to cuInit"
# A Python warning tf.data gives for every input pipeline traced in a graph; nothing to act on.
_TF_DATA_OPTIONS_WARNING = "To make it possible to preserve tf.data options"
# Keras' optional imports that nothing here needs (see the module's docstring).
UNUSED_BY_KERAS = ("pandas", "matplotlib")


def default_level_is_used() -> bool:
    """Sets TF_CPP_MIN_LOG_LEVEL to the default unless it is set; whether the default is used
    (not a value the user chose)."""
    level = os.environ.get(LEVEL)
    if level is None:
        os.environ[LEVEL] = os.environ[DEFAULT_MARK] = DEFAULT_LEVEL
        return True
    return os.environ.get(DEFAULT_MARK) == level


def import_tensorflow():
    """`import tensorflow`, its start-up notices left out of stderr unless the user chose a log
    level; returns the module."""
    if "tensorflow" in sys.modules:
        import tensorflow as tf
        return tf
    with _hidden(UNUSED_BY_KERAS):
        if not default_level_is_used():
            import tensorflow as tf
            return tf
        warnings.filterwarnings("ignore", message=_TF_DATA_OPTIONS_WARNING, category=UserWarning)
        with _stderr_filtered():
            import tensorflow as tf
            tf.config.list_physical_devices()  # the GPU platform starts here (cuInit)
    return tf


@contextlib.contextmanager
def _hidden(modules):
    """`import` of each of `modules` not yet imported raises ImportError for the duration, as
    it would if it were not installed (a None in sys.modules means that to Python)."""
    hidden = [name for name in modules if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None
    try:
        yield
    finally:
        for name in hidden:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]


def is_startup_noise(line: str, no_gpu_expected: bool) -> bool:
    """Whether a line of stderr is a start-up notice to leave out. cuInit's failure is one only
    when no GPU is expected (no driver was found, or CUDA_VISIBLE_DEVICES hides them): it then
    says nothing new; on a machine whose GPUs should work it is a real problem and stays."""
    return (line.startswith(_ABSL_BANNER) or bool(_BELOW_ERROR.match(line))
            or (no_gpu_expected and _CUINIT_FAILED in line))


def forward_without_noise(source, sink, gpus_hidden: bool = False) -> None:
    """Copies the lines of `source` (binary) to `sink` as they come, start-up notices left out."""
    no_gpu_expected = gpus_hidden
    for raw in source:
        line = raw.decode("utf-8", errors="replace")
        no_gpu_expected = no_gpu_expected or _NO_DRIVER in line
        if not is_startup_noise(line, no_gpu_expected):
            sink.write(raw)
            sink.flush()


@contextlib.contextmanager
def _stderr_filtered():
    """This process's stderr (file descriptor 2, where TensorFlow's C++ code writes) goes
    through the filter process for the duration."""
    sys.stderr.flush()
    terminal = os.dup(2)
    try:
        # Its own session: a terminal's Ctrl-C stops the import, not the filter, which ends
        # when this process closes the pipe (or dies).
        filter_process = subprocess.Popen([sys.executable, "-I", os.path.abspath(__file__)],
                                          stdin=subprocess.PIPE, stdout=terminal,
                                          stderr=terminal, start_new_session=True)
    except OSError:  # no filter: TensorFlow's lines as they are
        os.close(terminal)
        yield
        return
    os.dup2(filter_process.stdin.fileno(), 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(terminal, 2)
        os.close(terminal)
        filter_process.stdin.close()
        try:  # everything forwarded before this process writes on
            filter_process.wait(timeout=10)
        except subprocess.TimeoutExpired:  # something started meanwhile holds the pipe open
            pass


if __name__ == "__main__":
    forward_without_noise(sys.stdin.buffer, sys.stdout.buffer,
                          gpus_hidden=os.environ.get("CUDA_VISIBLE_DEVICES") in ("", "-1"))
