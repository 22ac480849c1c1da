"""When a run evaluates, and the evaluation itself: every net of a pack in one pass over the
validation set, each net's history entry and summaries from it, or the net recorded as
diverged. Between two evaluations an `Interval` sums what training reports."""
from __future__ import annotations

import math

from keras_transfer import divergence, solver
from keras_transfer import steps as steps_lib
from keras_transfer.pack import per_net
from keras_transfer.progress import Timing


def eval_points(start: int, total: int, every: int) -> list[int]:
    """The steps after `start` at which a run evaluates: every `every` steps and at the end,
    e.g. (130, 450, 100) -> [200, 300, 400, 450]: a resumed run first finishes its interval."""
    points = list(range((start // every + 1) * every, total, every))
    return points + [total] if start < total else []


def evaluation_steps(total: int, every: int, last: int) -> list[int]:
    """The steps at which a run evaluates: the last `last` of its backup points (every `every`
    steps and at the end), all of them if `last` is 0; e.g. (480, 80, 3) -> [320, 400, 480].
    The report needs only the final value and the convergence control's last evaluations;
    the other points only write a backup."""
    points = eval_points(0, total, every)
    return points[-last:] if last else points


class Interval:
    """The training since a pack's last evaluation: its first step, seconds and, per net, the
    summed training loss and correct top-1 (steps.TRAIN_SUMS)."""

    def __init__(self, start: int, nets):
        self.start, self.seconds = start, 0.0
        self.sums = [dict.fromkeys(steps_lib.TRAIN_SUMS, 0.0) for _ in nets]


def evaluate(nets, pack, val_ds, step: int, interval: Interval, timing: Timing) -> None:
    """All nets of the pack in one pass over the validation set: each net's history entry and
    summaries, or the net recorded as diverged."""
    with timing.phase("evaluate"):
        evaluations = pack.evaluate(val_ds)
    for net, evaluation in zip(nets, evaluations):
        if net.error is None:
            if not math.isfinite(evaluation["loss"]):
                divergence.record(net, step, "the validation loss", evaluation["loss"])
            elif not divergence.weights_finite(net.model):
                divergence.record(net, step, "a weight", "not finite")
    lr = solver.current_learning_rate(nets[0].optimizer)

    def record(net, evaluation, train_sums):
        entry = net.history.add(step=step, evaluation=evaluation, train_sums=train_sums,
                                steps_done=step - interval.start, seconds=interval.seconds,
                                learning_rate=lr)
        with timing.phase("summaries"):
            net.summaries.add(entry)
    for net, evaluation, train_sums in zip(nets, evaluations, interval.sums):
        per_net([net], lambda net: record(net, evaluation, train_sums))
