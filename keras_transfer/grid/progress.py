"""How far a local grid has got, on stderr: nets done, running, failed and left, the time since
the launch, and when it should end.

On a terminal a live bar (tqdm); elsewhere (a log file, SLURM, a pipe) a status line each time a
net ends, and once a minute while none does.

The ETA is the cost still to train over the cost trained per second so far, in the grid's cost
model (cost.net_costs); it is not known until a net has finished in this launch. Nets done
before the launch count for neither side, a net that failed or is left to the next launch leaves
the cost to train, and a running net counts as untrained until it finishes: while many nets run
side by side, the ETA leans long.
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


@dataclasses.dataclass(frozen=True)
class Counts:
    """Nets of the grid by state; `done` includes those done before this launch."""
    done: int
    running: int
    failed: int
    left: int


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

    def eta(self, trained, to_train) -> float | None:
        """Seconds left for the nets `to_train` (keys), at the rate of the nets `trained`."""
        cost = lambda keys: sum(self._costs.get(key, 0.0) for key in keys)
        return eta_seconds(cost(trained), cost(to_train), self._clock() - self._started)

    def status(self, counts: Counts, trained, to_train) -> str:
        """One line: the counts, the time since the launch and the ETA."""
        return f"{counts.done}/{self._total} nets done, {self._details(counts, trained, to_train)}"

    def _details(self, counts: Counts, trained, to_train) -> str:
        eta = self.eta(trained, to_train)
        return (f"{counts.running} running, {counts.failed} failed, {counts.left} left | "
                f"elapsed {duration(self._clock() - self._started)} | ETA "
                + (duration(eta) if eta is not None else "not known yet (no net has finished)"))

    def show(self, counts: Counts, trained, to_train, net_ended: bool = False) -> None:
        """Updates the bar, or prints a status line if a net ended or a minute has passed."""
        now = self._clock()
        if self._bar is not None:
            if counts == self._last_counts and now - self._last_shown < REFRESH_SECONDS:
                return
            self._last_counts, self._last_shown = counts, now
            self._bar.n = counts.done
            self._bar.set_description_str(self._details(counts, trained, to_train),
                                          refresh=False)
            self._bar.refresh()
        elif net_ended or now - self._last_shown >= HEARTBEAT_SECONDS:
            self._last_shown = now
            print(f"[grid] progress: {self.status(counts, trained, to_train)}",
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
