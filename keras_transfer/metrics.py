"""The number that stands for a trained net, computed from its evaluation history.

The paper reports the mean of the 10 best of a net's 450 validation evaluations; for its
converged nets that is within about 0.001 of the final value, a number for where a net ends.
With the few evaluations of a short schedule, "the 10 best" is most of the learning curve and
measures how fast a net learned instead. So the headline here is the final top-1, and the
paper's rule is offered in its proportion (the best 10/450 of the evaluations), while the
literal best-10 mean is refused for runs with too few evaluations to give it that meaning.
"""
from __future__ import annotations

import math

import numpy as np

PAPER_BEST, PAPER_EVALUATIONS = 10, 450
# The report counts a net as converged when its last this many evaluations lie close together
# (report.runs.converged); runs evaluate at least these by default (--eval_last).
CONVERGED_EVALUATIONS = 3
# Below this many evaluations the 10 best are over a tenth of the learning curve (the paper's
# were 1/45 of it), so their mean is no longer close to where the net ended.
MIN_EVALUATIONS_FOR_BEST10 = 100

HEADLINE = "top1_final"
# Column -> how tables and figures call it.
TOP1 = {
    "top1_final": "final",
    "top1_best_fraction": "best 10/450 of evaluations",
    "top1_best10_mean": "best-10 mean",
}



def summary_tag(metric: str) -> str:
    """The TensorBoard tag under which a net's TOP1 `metric` is recorded when it finishes."""
    return f"result/{metric}"


class MetricError(ValueError):
    """A metric that would not mean what its name says for these runs."""


def best_mean(values, k: int) -> float:
    """The mean of the k largest finite values (NaN if there are none)."""
    best = sorted((v for v in values if v is not None and not math.isnan(v)), reverse=True)[:k]
    return float(np.mean(best)) if best else float("nan")


def best_count(evaluations: int) -> int:
    """How many best evaluations keep the paper's proportion (10 of 450), at least one."""
    return max(1, round(evaluations * PAPER_BEST / PAPER_EVALUATIONS))


def top1_metrics(history) -> dict:
    """Every TOP1 metric, and the number of evaluations, from a run's history entries."""
    values = [e["top1"] for e in history]
    return {
        "top1_final": float(values[-1]) if values else float("nan"),
        "top1_best_fraction": best_mean(values, best_count(len(values))),
        "top1_best10_mean": best_mean(values, PAPER_BEST),
        "evaluations": len(values),
    }


def check_metric(metric: str, evaluations) -> None:
    """Refuses a metric that would not mean what it says for runs with these evaluation counts."""
    if metric not in TOP1:
        raise MetricError(f"unknown metric {metric!r}; choose from {', '.join(TOP1)}")
    fewest = min((int(e) for e in evaluations), default=0)
    if metric == "top1_best10_mean" and fewest < MIN_EVALUATIONS_FOR_BEST10:
        raise MetricError(
            f"top1_best10_mean is the mean of the 10 best evaluations, but some runs have only "
            f"{fewest}: that is the mean of {min(1.0, PAPER_BEST / max(fewest, 1)):.0%} of their "
            f"learning curve (the paper's was 10 of {PAPER_EVALUATIONS}), a measure of learning "
            f"speed, not of accuracy. Use top1_final (the default) or top1_best_fraction (the best "
            f"10/{PAPER_EVALUATIONS} of the evaluations), or train them again evaluating at "
            f"least {MIN_EVALUATIONS_FOR_BEST10} times: --eval_last=0 (by default only the last "
            f"{CONVERGED_EVALUATIONS} of the --eval_every points are evaluated) and --eval_every "
            f"at most 1/{MIN_EVALUATIONS_FOR_BEST10} of --steps.")
