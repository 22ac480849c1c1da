"""The convergence control: is a base net done learning, or would more training lift it?

A plateau in a net's last evaluations cannot tell: after the learning rate's last step down
every curve is flat, converged or not. The grid's convergence experiment therefore trains each
base net a second time on a schedule CONVERGENCE_STRETCH times as long (`baseB-x2`: every
step count of the schedule multiplied) and the report compares the two. A base net counts as
converged when the longer one ends at most CONVERGED_GAIN above it, for the reason WHY gives
(summary.md states it with the rule). The longer nets are this control alone: they enter no
finding, table or figure (`without_longer`), only results.csv, convergence.csv and summary.md's
Convergence section.
"""
from __future__ import annotations

import pandas as pd

from keras_transfer.report import stats

CONVERGED_GAIN = 0.01
WHY = ("the paper's effects are 1-2 points of top-1 (its finding 4 is +1.6, finding 1 +1.8), so "
       "a base net still a point short of its own longer training would move every comparison "
       "against it by as much as an effect")
SERIES = "convergence"  # the series of the longer nets (runs.series_of)
_KEY = ["split_dir", "seed", "target"]


def without_longer(df: pd.DataFrame) -> pd.DataFrame:
    """The runs the findings, tables and figures are made of: all but the longer twins. Those
    are base nets too (condition "base", n 0), so a selection by condition alone would pool them
    with the nets they check."""
    return df[df["series"] != SERIES].reset_index(drop=True)


def control_pairs(df: pd.DataFrame, metric: str = "top1_final") -> pd.DataFrame:
    """Per base net of the random splits with a longer twin (same split, seed and half): both
    values of `metric`, the gain of the longer one and whether the base net converged. Empty
    without the experiment. Pass every run, before drop_unpaired_bases: a baseA trained only as
    the source of AnB is checked too, its features being what AnB copies."""
    bases = df[(df["condition"] == "base") & (df["series"] == "main")]
    longer = df[(df["condition"] == "base") & (df["series"] == SERIES)]
    if bases.empty or longer.empty:
        return pd.DataFrame(columns=[*_KEY, "run_dir", "longer_run_dir", "base", "longer",
                                     "stretch", "gain", "converged"])
    pairs = bases.set_index(_KEY)[["run_dir", metric]].rename(columns={metric: "base"}).join(
        longer.set_index(_KEY)[["run_dir", metric, "stretch"]].rename(
            columns={"run_dir": "longer_run_dir", metric: "longer"}),
        how="inner")
    pairs = pairs.dropna(subset=["base", "longer"])  # a pair without the metric tells nothing
    pairs["gain"] = pairs["longer"] - pairs["base"]
    pairs["converged"] = pairs["gain"] <= CONVERGED_GAIN + 1e-12
    return pairs.reset_index().sort_values(_KEY).reset_index(drop=True)


def gains_per_half(pairs: pd.DataFrame) -> dict:
    """Per target half, the longer nets' mean gain with its 95% interval over splits (seeds
    within a single split: `clusters` names which), as stats.clustered gives it."""
    return {half: {**stats.clustered(rows, "gain"), "clusters": stats.cluster_columns(rows)}
            for half, rows in pairs.groupby("target")}


def unconverged(pairs: pd.DataFrame) -> list[str]:
    """One line per base net that did not converge: where, and how much the longer net gained."""
    return [f"{row['run_dir']}: {row['base']:.4f}, {row['longer']:.4f} at x{int(row['stretch'])} "
            f"(+{row['gain'] * 100:.1f} points)"
            for _, row in pairs[~pairs["converged"]].iterrows()]
