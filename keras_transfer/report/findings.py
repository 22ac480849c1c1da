"""The paper's comparisons and findings, measured on a grid's runs with 95% CIs and a verdict.

Every comparison is made on accuracy relative to each net's own base net (the base of its
target half, split and seed), so the two directions AnB and BnA pool as the paper pooled them
although their halves differ in difficulty. A value is averaged within each split first, and
its interval is over splits (report.stats), because nets of one split share their base
nets. The ranges of n follow the network's k cut points (the paper's k = 7: conv1..fc7). The
paper's own values come from its figure 2 means (`YOSINSKI2014_TOP1`) and are shown only for
networks whose n are the paper's layers (Architecture.paper_layers).
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import pandas as pd

from keras_transfer import naming
from keras_transfer.report import stats
from keras_transfer.report.runs import architecture, n_counts

# Yosinski et al. 2014, ImageNet top-1 (mean over runs) per n = 1..7 (naming.PAPER_N), and the
# base level.
YOSINSKI2014_TOP1 = {
    "base": 0.625,
    "selffer": (0.627, 0.624, 0.621, 0.605, 0.594, 0.619, 0.623),
    "transfer": (0.628, 0.624, 0.619, 0.600, 0.578, 0.581, 0.543),
    "transfer+": (0.637, 0.636, 0.643, 0.640, 0.645, 0.646, 0.647),
    "selffer+": (0.618, 0.622, 0.631, 0.629, 0.630, 0.628, 0.627),
}
REFERENCES = {"yosinski2014": YOSINSKI2014_TOP1}


def not_the_papers_layers(arch) -> str:
    """Why the paper's values are left out for `arch` (a network without paper_layers)."""
    return (f"the paper's values are per CaffeNet layer and do not map onto the cut points of "
            f"{arch.name}")


def all_n(k: int) -> tuple:
    return tuple(range(1, k + 1))


def middle_n(k: int) -> tuple:
    """The middle cut points, where frozen selffer nets dip: n = 3..k-2, two cut points in from
    either end as the paper's n = 3, 4, 5 of k = 7 are (its BnB 0.621, 0.605, 0.594 against 0.625
    for baseB; no dip at n = 1, 2, and a recovery at n = 6, 7, where little is left to relearn).
    Below k = 5 that range is empty; the middle cut point stands for it."""
    return tuple(range(3, k - 1)) or ((k + 1) // 2,)


def _top(k: int, low: int) -> tuple:
    """n = low..k, at least n = k (Table 1's ranges, for networks of few cut points too)."""
    return tuple(range(max(1, min(low, k)), k + 1))


@dataclasses.dataclass(frozen=True)
class Difference:
    """mean relative top-1 of `plus` minus that of `minus` over n in `layers` (base = 0)."""
    name: str
    measures: str
    plus: str
    minus: str  # a condition, or "base"
    layers: tuple

    def per_split(self, rel: pd.DataFrame, metric: str) -> pd.Series:
        """Per cluster (split), the difference of the pooled means there."""
        clusters = stats.cluster_columns(rel)
        rows = rel[rel["n"].isin(self.layers)]

        def pooled(condition):  # None for the base: relative to itself it is 0
            if condition == "base":
                return None
            return rows[rows["condition"] == condition].groupby(clusters)[metric].mean()
        plus, minus = pooled(self.plus), pooled(self.minus)
        value = -minus if plus is None else plus if minus is None else plus - minus
        return value.dropna()

    def measure(self, rel: pd.DataFrame, metric: str) -> dict:
        runs = rel[rel["n"].isin(self.layers) & rel["condition"].isin({self.plus, self.minus})]
        return {**stats.t_interval(self.per_split(rel, metric)), "runs": len(runs)}

    def paper(self, reference=YOSINSKI2014_TOP1) -> float:
        def mean_rel(condition):
            if condition == "base":
                return 0.0
            values = [reference[condition][n - 1] for n in self.layers]
            return sum(values) / len(values) - reference["base"]
        return mean_rel(self.plus) - mean_rel(self.minus)


def _ranges(layers) -> str:
    return f"n = {layers[0]}-{layers[-1]}" if len(layers) > 1 else f"n = {layers[0]}"


def _over_base(layers) -> Difference:
    return Difference(f"AnB+ − baseB, {_ranges(layers)}",
                      "transfer plus fine-tuning against training on the target half alone "
                      "(includes the effect of training longer)", "transfer+", "base", layers)


def _over_selffer(layers) -> Difference:
    return Difference(f"AnB+ − BnB+, {_ranges(layers)}",
                      "transferred features beyond the extra training: BnB+ was trained as "
                      "long, from its own base net", "transfer+", "selffer+", layers)


def table1(k: int) -> tuple:
    """Table 1 of the paper: the boost of AnB+ over its two controls, pooled over ranges of n
    (for the paper's k = 7: n = 1-7, 3-7 and 5-7; a range that repeats another, as 3-5 and
    3-5 for k = 5, is listed once)."""
    ranges = dict.fromkeys((all_n(k), _top(k, 3), _top(k, k - 2)))
    return tuple(diff for layers in ranges
                 for diff in (_over_base(layers), _over_selffer(layers)))


@dataclasses.dataclass(frozen=True)
class Finding:
    number: int
    claim: str
    effect: str  # what the measured value is
    measure: Callable[[pd.DataFrame, str], dict]  # (relative runs, metric) -> interval + runs
    paper: Callable[[], float]  # the paper's value, meaningful only for its own layers


def _specificity_slope(layers) -> Callable[[pd.DataFrame, str], dict]:
    def measure(rel: pd.DataFrame, metric: str) -> dict:
        """Per split, the least-squares slope over `layers` of specificity (BnB − AnB, each
        relative to its base), then the interval over splits."""
        clusters = stats.cluster_columns(rel)
        slopes = {}
        for key, group in rel.groupby(clusters):
            means = group.groupby(["condition", "n"])[metric].mean()
            xs, ys = [], []
            for n in layers:
                if ("selffer", n) in means.index and ("transfer", n) in means.index:
                    xs.append(n)
                    ys.append(means[("selffer", n)] - means[("transfer", n)])
            if len(xs) >= 2:
                slopes[key] = stats.slope(xs, ys)
        runs = rel[rel["condition"].isin({"selffer", "transfer"})]
        return {**stats.t_interval(slopes.values()), "runs": len(runs)}
    return measure


def _paper_specificity_slope() -> float:
    ref = YOSINSKI2014_TOP1
    return stats.slope(naming.PAPER_N, [s - t for s, t in zip(ref["selffer"], ref["transfer"])])


def findings_of(arch) -> tuple:
    """The paper's four findings over the cut points of `arch` (a models.Architecture)."""
    k, middle = arch.max_n, middle_n(arch.max_n)
    co_adaptation = Difference(f"baseB − BnB, {_ranges(middle)}", "", "base", "selffer", middle)
    recovery = Difference(f"BnB+ − BnB, {_ranges(middle)}", "", "selffer+", "selffer", middle)
    beyond_training = _over_selffer(all_n(k))
    return (
        Finding(1, "Frozen selffer nets (BnB) dip in the middle layers: features there are "
                   "co-adapted and cannot be relearned by the layers above (fragile "
                   "co-adaptation).",
                f"baseB − BnB, mean over {_ranges(middle)}",
                co_adaptation.measure, co_adaptation.paper),
        Finding(2, "Fine-tuning recovers the dip: BnB+ is above BnB in the middle layers.",
                f"BnB+ − BnB, mean over {_ranges(middle)}",
                recovery.measure, recovery.paper),
        Finding(3, "Specificity grows with n: the gap between selffer and transfer nets "
                   "(BnB − AnB) widens toward the top layers.",
                f"slope of BnB − AnB over {_ranges(all_n(k))}, per {n_counts(arch)}",
                _specificity_slope(all_n(k)), _paper_specificity_slope),
        Finding(4, "Transfer plus fine-tuning (AnB+) beats training on the target alone, beyond "
                   "the extra training: AnB+ is above the fine-tuned selffer BnB+.",
                f"AnB+ − BnB+, mean over {_ranges(all_n(k))}",
                beyond_training.measure, beyond_training.paper),
    )


def relative(df: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The random-split nets with `metric` minus their base's (same split, seed, target half);
    base nets stay as rows of 0. Nets without a finished base are left out."""
    main = df[df["series"] == "main"]
    key = ["split_dir", "seed", "target"]
    bases = main[main["condition"] == "base"].groupby(key)[metric].mean().rename("_base")
    rel = main.join(bases, on=key)
    rel = rel.dropna(subset=["_base"]).copy()
    rel[metric] = rel[metric] - rel["_base"]
    return rel.drop(columns="_base")


def measure_findings(df: pd.DataFrame, metric: str) -> list[dict]:
    """Each finding measured; `paper` is None unless the network's n are the paper's layers."""
    arch = architecture(df)
    rel = relative(df, metric)
    rows = []
    for finding in findings_of(arch):
        measured = finding.measure(rel, metric)
        rows.append({"finding": finding.number, "claim": finding.claim, "effect": finding.effect,
                     "paper": finding.paper() if arch.paper_layers else None, **measured,
                     "verdict": stats.verdict(measured)})
    return rows


def measure_table1(df: pd.DataFrame, metric: str) -> list[dict]:
    """Table 1's rows measured; `paper` as in measure_findings."""
    arch = architecture(df)
    rel = relative(df, metric)
    return [{"difference": d.name, "measures": d.measures,
             "paper": d.paper() if arch.paper_layers else None, **d.measure(rel, metric)}
            for d in table1(arch.max_n)]
