"""How a run stops on a signal, resumably: SIGTERM (a scheduler's preemption, the grid's stop)
or SIGINT (Ctrl-C).

While the nets are built and trained (`SigtermFlag`), either signal is only recorded; the
training loop checks the record after every call of the compiled train step, saves a backup at
the current step and raises `Preempted`, and main exits 128 + the signal (143, 130). Outside
(start-up until the run directory is claimed, finishing) SIGTERM kills the run at once (the
launcher counts that as preempted too, see exit_status.stopped), and SIGINT raises
KeyboardInterrupt at once, which main turns into one line and exit 130, once main has called
`catch_interrupts`. That SIGINT is recorded as well: if
library code swallows the KeyboardInterrupt (TensorFlow can turn one into a SystemError that it
ignores), the training loop still stops at its first step with a backup, instead of training on.

No TensorFlow here: main installs its handler before importing it.
"""
from __future__ import annotations

import signal
import sys
import threading

from keras_transfer.exit_status import INTERRUPTED, STOP_SIGNALS

# The first stop signal this process recorded and has not acted on yet (at most one entry).
_received: list[int] = []


def _record(signum, frame=None) -> None:
    if not _received:
        _received.append(signum)


def _interrupt(signum, frame) -> None:
    _record(signum)
    raise KeyboardInterrupt


def catch_interrupts() -> None:
    """From now on (main thread), SIGINT outside the training loop raises KeyboardInterrupt and
    is recorded for the loop, in case something swallows the exception."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _interrupt)


def exit_if_interrupted(error: BaseException, line: str) -> None:
    """For a command without a training loop (report, analyze), after `catch_interrupts`: if
    `error` is a Ctrl-C's, or came from one that a library swallowed (TensorFlow's import can
    turn it into another error), prints `line` alone and exits 130; otherwise returns."""
    if isinstance(error, KeyboardInterrupt) or received() == signal.SIGINT:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # one line, whatever comes next
        print(line, file=sys.stderr)
        sys.exit(INTERRUPTED)


def check_interrupt() -> None:
    """Raises KeyboardInterrupt if a Ctrl-C was recorded (see catch_interrupts) and not acted
    on, also one that library code swallowed: before a command publishes what it made."""
    if received() == signal.SIGINT:
        raise KeyboardInterrupt


def ignore_interrupts_once_done() -> None:
    """Where catch_interrupts set the handler (a command, not a library call): from now on a
    Ctrl-C is ignored, since the command's output is published and all it could still stop is
    its last lines."""
    if signal.getsignal(signal.SIGINT) is _interrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def received() -> int | None:
    """The stop signal recorded and not yet acted on, or None."""
    return _received[0] if _received else None


class Preempted(Exception):
    """Training stopped on SIGTERM or SIGINT after saving a backup at `step`; `signum` is the
    signal received (SIGTERM if none was recorded)."""

    def __init__(self, step: int, signum: int | None = None):
        signum = signum or received() or signal.SIGTERM
        super().__init__(step, signum)
        self.step = step
        self.signum = signum

    def __str__(self):
        return (f"stopped by {signal.Signals(self.signum).name} at step {self.step}; a backup "
                "was saved, run the same command again to resume")


class SigtermFlag:
    """Records SIGTERM and SIGINT instead of dying on them, while training runs (main thread
    only). `received`: whether one came, also before the block was entered (see
    catch_interrupts); the record is cleared on leaving it."""

    def __init__(self):
        self._previous = {}

    @property
    def received(self) -> bool:
        return bool(_received)

    @property
    def signum(self) -> int | None:
        return received()

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, _record) for s in STOP_SIGNALS}
        return self

    def __exit__(self, *exc):
        for signum, handler in self._previous.items():
            if handler is not None:
                signal.signal(signum, handler)
        _received.clear()
        return False
