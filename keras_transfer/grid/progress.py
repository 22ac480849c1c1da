"""How far a local grid has got, on stderr: nets done, running, failed and left, the time since
the launch, and when it should end.

On a terminal a live bar (tqdm); elsewhere (a log file, SLURM, a pipe) a status line each time a
net ends, and once a minute while none does.

The ETA is the cost still to train over the cost trained per second since the launch (by all
the processes together), in the grid's cost model (cost.net_costs); it is not known until a
process (a net or a pack of nets) has finished in this launch. Nets done before the launch count
for neither side, and a net that failed or is left to the next launch leaves the cost to train.
A running process counts as trained in part: its running time x the cost the finished processes
trained per second of their own running time, short of its own cost (CREDIT_CAP). So the ETA
falls while long packs run side by side, instead of climbing until one ends, and a process that
overruns never counts as done.
"""
from __future__ import annotations

import dataclasses
import datetime
import os
import sys
import time

from tqdm import tqdm

HEARTBEAT_SECONDS = 60.0  # the longest a log goes without a status line
REFRESH_SECONDS = 1.0  # the live bar's clock ticks this often
FALLBACK_SIZE = (120, 24)  # columns and rows of a terminal of unknown size
# The most of its own cost a running process counts as trained: one that runs longer than the
# rate so far predicts is still not done.
CREDIT_CAP = 0.95


@dataclasses.dataclass(frozen=True)
class Counts:
    """Nets of the grid by state; `done` includes those done before this launch."""
    done: int
    running: int
    failed: int
    left: int


@dataclasses.dataclass(frozen=True)
class Process:
    """One process of the grid (a net or a pack): the keys of its nets, and the seconds it has
    run. Of a process that ended, the nets are the ones it trained (not those that failed or
    were stopped)."""
    nets: tuple
    seconds: float


def eta_seconds(trained_cost: float, cost_to_train: float, elapsed: float) -> float | None:
    """Seconds until `cost_to_train` is trained at the rate so far (`trained_cost` in `elapsed`
    seconds); None while nothing has been trained."""
    if trained_cost <= 0 or elapsed <= 0:
        return None
    return cost_to_train * elapsed / trained_cost


def _width(stream) -> int:
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (OSError, ValueError, AttributeError):
        return 0


def duration(seconds: float) -> str:
    """H:MM:SS (with days beyond 24 hours)."""
    return str(datetime.timedelta(seconds=round(seconds)))


class GridProgress:
    """The progress display of one launch; `costs` maps each net's key to its cost (any unit)."""

    def __init__(self, costs: dict, total: int, stream=None, clock=time.monotonic):
        self._costs, self._total, self._clock = costs, total, clock
        self._stream = sys.stderr if stream is None else stream
        self._started = self._last_shown = clock()
        self._last_counts = None
        self._bar = None
        if self._stream.isatty():
            # A terminal that does not say its size (0 x 0) gets one, or tqdm draws no bar.
            sized = _width(self._stream) > 0
            # The counts and times go where tqdm puts a description, after the bar (its
            # postfix would start with a comma).
            self._bar = tqdm(total=total, file=self._stream, unit="net",
                             dynamic_ncols=sized, ncols=None if sized else FALLBACK_SIZE[0],
                             nrows=None if sized else FALLBACK_SIZE[1],
                             bar_format="[grid] {n}/{total} nets {percentage:3.0f}%|{bar}| "
                                        "{desc}")

    def _cost(self, keys) -> float:
        return sum(self._costs.get(key, 0.0) for key in keys)

    def eta(self, finished, running, left) -> float | None:
        """Seconds left for the nets of the `running` processes and the nets `left` (keys), at
        the rate of the `finished` processes (Process), the running ones credited with their
        share so far. None until a finished process has trained something."""
        trained = sum(self._cost(process.nets) for process in finished)
        # Per second of a process's own running time; a process that trained nothing (it
        # failed or was stopped) says nothing about the rate.
        seconds = sum(process.seconds for process in finished if process.nets)
        rate = trained / seconds if seconds > 0 else 0.0
        in_runs = sum(self._cost(process.nets) for process in running)
        credit = sum(min(rate * process.seconds, CREDIT_CAP * self._cost(process.nets))
                     for process in running)
        # Over the time since the launch: the rate of all the slots together.
        return eta_seconds(trained + credit, self._cost(left) + in_runs - credit,
                           self._clock() - self._started)

    def status(self, counts: Counts, finished, running, left) -> str:
        """One line: the counts, the time since the launch and the ETA (`eta`'s arguments)."""
        details = self._details(counts, finished, running, left)
        return f"{counts.done}/{self._total} nets done, {details}"

    def _details(self, counts: Counts, finished, running, left) -> str:
        eta = self.eta(finished, running, left)
        return (f"{counts.running} running, {counts.failed} failed, {counts.left} left | "
                f"elapsed {duration(self._clock() - self._started)} | ETA "
                + (duration(eta) if eta is not None else "not known yet (no net has finished)"))

    def show(self, counts: Counts, finished, running, left, net_ended: bool = False) -> None:
        """Updates the bar, or prints a status line if a net ended or a minute has passed
        (`eta`'s arguments)."""
        now = self._clock()
        if self._bar is not None:
            if counts == self._last_counts and now - self._last_shown < REFRESH_SECONDS:
                return
            self._last_counts, self._last_shown = counts, now
            self._bar.n = counts.done
            self._bar.set_description_str(self._details(counts, finished, running, left),
                                          refresh=False)
            self._bar.refresh()
        elif net_ended or now - self._last_shown >= HEARTBEAT_SECONDS:
            self._last_shown = now
            print(f"[grid] progress: {self.status(counts, finished, running, left)}",
                  file=self._stream, flush=True)

    def write(self, line: str, out) -> None:
        """Prints a line to `out` without breaking the live bar."""
        if self._bar is not None:
            self._bar.write(line, file=out)
            out.flush()
        else:
            print(line, file=out, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
