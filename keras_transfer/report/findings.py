"""The paper's comparisons and findings, measured on a grid's runs with 95% CIs and a verdict.

Every difference between two conditions is taken within one target half. Each net is first
made relative to its own base net (same split, seed and target half: `relative`); then, per
split and target half, the difference of the two conditions' means over the n of its range,
in the halves that have both; then the mean over those halves within the split; and the
interval is over splits (report.stats), because nets of one split share their base nets.
Subtracting means pooled over both halves would compare nets of different tasks (BnA+ on half
A against BnB+ on half B, when selffer nets are trained on B only), whose bases differ by more
than some effects. A difference no half can compute is reported as not computable, with the
reason, never as a number. Finding 3's slope is fitted per split and target half the same way.

The ranges of n follow the network's k cut points (the paper's k = 7: conv1..fc7). For
networks whose n are the paper's layers (Architecture.paper_layers) the paper's values are
computed from the authors' own nets (`paper_nets.load()`, with their metric, the mean of the
best 10 of 450 evaluations) by the same estimator, with the same interval and verdict. Beside
them stands what the paper's figure 2 means give (`YOSINSKI2014_TOP1`): conditions pooled over
halves against one base level, a different estimator.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import pandas as pd

from keras_transfer import naming
from keras_transfer.report import paper_nets, stats
from keras_transfer.report.runs import architecture, n_counts

# Yosinski et al. 2014, ImageNet top-1 (mean over runs) per n = 1..7 (naming.PAPER_N), and the
# base level, as its figure 2 plots them.
YOSINSKI2014_TOP1 = {
    "base": 0.625,
    "selffer": (0.627, 0.624, 0.621, 0.605, 0.594, 0.619, 0.623),
    "transfer": (0.628, 0.624, 0.619, 0.600, 0.578, 0.581, 0.543),
    "transfer+": (0.637, 0.636, 0.643, 0.640, 0.645, 0.646, 0.647),
    "selffer+": (0.618, 0.622, 0.631, 0.629, 0.630, 0.628, 0.627),
}
REFERENCES = {"yosinski2014": YOSINSKI2014_TOP1}
# The metric of the paper's column: the authors' own, the mean of the best 10 of 450.
PAPER_METRIC = "top1_best10_mean"
NOT_COMPUTABLE = "not computable"


def not_the_papers_layers(arch) -> str:
    """Why the paper's values are left out for `arch` (a network without paper_layers)."""
    return (f"the paper's values are per CaffeNet layer and do not map onto the cut points of "
            f"{arch.name}")


def net_label(condition: str, half: str) -> str:
    """The paper's name of a condition's nets on target `half`: AnB+ on B is BnA+ on A."""
    if condition == "base":
        return f"base{half}"
    kind = condition.rstrip("+")
    source = {"selffer": half, "transfer": naming.other_half(half), "random": "R"}[kind]
    return f"{source}n{half}{'+' if condition.endswith('+') else ''}"


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


def _over_clusters(per_half: pd.Series, rel: pd.DataFrame, conditions, layers,
                   label: Callable[[str], str], unavailable: str, n_used=None) -> dict:
    """The interval over clusters of the per-half values (indexed by cluster columns, then the
    target half) averaged within each cluster, the nets behind them, what was compared in which
    half (`within`, with its count of clusters), the n of `layers` those nets have (`n_used`,
    unless given) and the verdict; not computable, with `unavailable` as the reason, when no
    half has a value."""
    if per_half.empty:
        return {**stats.t_interval([]), "runs": 0, "within": "", "conditions": tuple(conditions),
                "n_used": (), "not_computable": unavailable,
                "verdict": f"{NOT_COMPUTABLE}: {unavailable}"}
    keys = stats.cluster_columns(rel) + ["target"]
    rows = rel[rel["condition"].isin(set(conditions)) & rel["n"].isin(layers)]
    entering = pd.MultiIndex.from_frame(rows[keys]).isin(per_half.index)
    runs = int(entering.sum())
    if n_used is None:
        n_used = sorted(set(rows.loc[entering, "n"]))
    per_cluster = per_half.groupby(level=list(range(len(keys) - 1))).mean()
    interval = {**stats.t_interval(per_cluster.values), "runs": runs}
    halves = per_half.index.get_level_values(-1)
    within = "; ".join(f"{label(half)} ({int((halves == half).sum())})"
                       for half in sorted(set(halves)))
    return {**interval, "within": within, "conditions": tuple(conditions),
            "n_used": tuple(int(n) for n in n_used), "not_computable": None,
            "verdict": stats.verdict(interval)}


@dataclasses.dataclass(frozen=True)
class Difference:
    """mean relative top-1 of `plus` minus that of `minus` over n in `layers` (base = 0),
    within each target half."""
    name: str
    measures: str
    plus: str
    minus: str  # a condition, or "base"
    layers: tuple

    def per_half(self, rel: pd.DataFrame, metric: str) -> pd.Series:
        """Per cluster (split) and target half that has both conditions, the difference of their
        means over `layers`; the base is 0, relative to itself."""
        keys = stats.cluster_columns(rel) + ["target"]
        rows = rel[rel["n"].isin(self.layers)]

        def mean(condition):
            return rows[rows["condition"] == condition].groupby(keys)[metric].mean()
        if self.minus == "base":
            value = mean(self.plus)
        elif self.plus == "base":
            value = -mean(self.minus)
        else:
            value = mean(self.plus) - mean(self.minus)
        return value.dropna()

    def compared(self, half: str) -> str:
        """What is subtracted on target `half`: AnB+ − BnB+ on half B."""
        if half not in naming.HALVES:  # across_halves
            def both(condition):
                return "/".join(net_label(condition, h) for h in reversed(naming.HALVES))
            return f"{both(self.plus)} − {both(self.minus)} across halves"
        return f"{net_label(self.plus, half)} − {net_label(self.minus, half)} on half {half}"

    def unavailable(self, rel: pd.DataFrame) -> str:
        """Why no half of `rel` computes it, in the paper's names (target B): the conditions
        missing in its range of n when some of them were trained at other n."""
        needed = [c for c in (self.plus, self.minus) if c != "base"]
        in_range = set(rel.loc[rel["n"].isin(self.layers), "condition"])
        missing = [c for c in needed if c not in in_range]
        if set(missing) & set(rel["condition"]):
            span = (f"n in {self.layers[0]}-{self.layers[-1]}" if len(self.layers) > 1
                    else f"n = {self.layers[0]}")
            return f"no {' or '.join(net_label(c, 'B') for c in missing)} with {span}"
        names = [net_label(c, "B") for c in needed]
        return "no target half has " + (f"both {names[0]} and {names[1]}" if len(names) > 1
                                        else names[0])

    def measure(self, rel: pd.DataFrame, metric: str) -> dict:
        return _over_clusters(self.per_half(rel, metric), rel, (self.plus, self.minus),
                              self.layers, self.compared, self.unavailable(rel))

    def figure2(self, reference=YOSINSKI2014_TOP1) -> float:
        """The paper's figure 2 means, pooled over halves, against its one base level."""
        def mean_rel(condition):
            if condition == "base":
                return 0.0
            values = [reference[condition][n - 1] for n in self.layers]
            return sum(values) / len(values) - reference["base"]
        return mean_rel(self.plus) - mean_rel(self.minus)


def _ranges(layers) -> str:
    return f"n = {layers[0]}-{layers[-1]}" if len(layers) > 1 else f"n = {layers[0]}"


def _ranges_used(layers, n_used) -> str:
    """`layers` as _ranges writes them, and the n that the nets measured have when those are
    fewer: "n = 1-7 (only n = 1, 2 present)"."""
    if not n_used or set(n_used) >= set(layers):
        return _ranges(layers)
    return f"{_ranges(layers)} (only n = {', '.join(str(n) for n in n_used)} present)"


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
    effect: str  # what the measured value is, its range of n written as _ranges(layers)
    layers: tuple
    measure: Callable[[pd.DataFrame, str], dict]  # (relative runs, metric) -> interval, verdict
    figure2: Callable[[], float]  # from the paper's figure 2 means, for its own layers only

    def label(self, n_used) -> str:
        """`effect`, naming the n the measured nets have when they are fewer than `layers`."""
        return self.effect.replace(_ranges(self.layers), _ranges_used(self.layers, n_used), 1)


def _specificity_slope(layers) -> Callable[[pd.DataFrame, str], dict]:
    specificity = Difference("", "", "selffer", "transfer", layers)

    def measure(rel: pd.DataFrame, metric: str) -> dict:
        """Per split and target half, the least-squares slope over `layers` of specificity
        (BnB − AnB, each relative to its base), averaged over the halves of a split, then the
        interval over splits."""
        keys = stats.cluster_columns(rel) + ["target"]
        slopes, n_used = {}, set()
        for key, group in rel[rel["n"].isin(layers)].groupby(keys):
            means = group.groupby(["condition", "n"])[metric].mean()
            ns = [n for n in layers
                  if ("selffer", n) in means.index and ("transfer", n) in means.index]
            if len(ns) >= 2:
                n_used.update(ns)
                slopes[key] = stats.slope(ns, [means[("selffer", n)] - means[("transfer", n)]
                                               for n in ns])
        per_half = pd.Series(slopes, dtype=float).dropna()
        return _over_clusters(per_half, rel, ("selffer", "transfer"), layers,
                              specificity.compared,
                              f"{specificity.unavailable(rel)} at two or more n", sorted(n_used))
    return measure


def _paper_specificity_slope() -> float:
    ref = YOSINSKI2014_TOP1
    return stats.slope(naming.PAPER_N, [s - t for s, t in zip(ref["selffer"], ref["transfer"])])


def findings_of(arch) -> tuple:
    """The paper's four findings over the cut points of `arch` (a runs.Network)."""
    k, middle = arch.max_n, middle_n(arch.max_n)
    co_adaptation = Difference(f"baseB − BnB, {_ranges(middle)}", "", "base", "selffer", middle)
    recovery = Difference(f"BnB+ − BnB, {_ranges(middle)}", "", "selffer+", "selffer", middle)
    beyond_training = _over_selffer(all_n(k))
    return (
        Finding(1, "Frozen selffer nets (BnB) dip in the middle layers: features there are "
                   "co-adapted and cannot be relearned by the layers above (fragile "
                   "co-adaptation).",
                f"baseB − BnB, mean over {_ranges(middle)}", middle,
                co_adaptation.measure, co_adaptation.figure2),
        Finding(2, "Fine-tuning recovers the dip: BnB+ is above BnB in the middle layers.",
                f"BnB+ − BnB, mean over {_ranges(middle)}", middle,
                recovery.measure, recovery.figure2),
        Finding(3, "Specificity grows with n: the gap between selffer and transfer nets "
                   "(BnB − AnB) widens toward the top layers.",
                f"slope of BnB − AnB over {_ranges(all_n(k))}, per {n_counts(arch.paper_layers)}",
                all_n(k), _specificity_slope(all_n(k)), _paper_specificity_slope),
        Finding(4, "Transfer plus fine-tuning (AnB+) beats training on the target alone, beyond "
                   "the extra training: AnB+ is above the fine-tuned selffer BnB+.",
                f"AnB+ − BnB+, mean over {_ranges(all_n(k))}", all_n(k),
                beyond_training.measure, beyond_training.figure2),
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


def across_halves(rel: pd.DataFrame) -> pd.DataFrame:
    """`rel` with every net's target half set to one label, so that the estimator compares
    nets of different halves (each still against its own base): the comparison this module
    avoids, offered only to show what it gives."""
    return rel.assign(target="A and B")


def _measured(df: pd.DataFrame, metric: str, differences) -> list[dict]:
    rel = relative(df, metric)
    return [measure(rel, metric) for measure in differences]


@functools.cache
def _paper_measures() -> tuple:
    """The paper's findings and Table 1 on the authors' nets (k = 7), and how many random
    splits those nets hold; once per process."""
    nets = paper_nets.load(series="main")
    arch = architecture(nets)
    return (tuple(_measured(nets, PAPER_METRIC, [f.measure for f in findings_of(arch)])),
            tuple(_measured(nets, PAPER_METRIC, [d.measure for d in table1(arch.max_n)])),
            nets["split_dir"].nunique())


def paper_splits() -> int:
    """How many random splits the authors' nets hold: the most the paper column rests on."""
    return _paper_measures()[2]


def _paper_column(arch, with_paper: bool, table: int, count: int) -> list:
    """The authors' values of the findings (`table` 0) or of Table 1 (1), fresh copies; Nones
    for a network whose n are not the paper's layers or without `with_paper`."""
    if not (arch.paper_layers and with_paper):
        return [None] * count
    return [dict(measured) for measured in _paper_measures()[table]]


def measure_findings(df: pd.DataFrame, metric: str, with_paper: bool = True) -> list[dict]:
    """Each finding measured. For a network whose n are the paper's layers, `paper` is the same
    estimator on the authors' nets (a dict as the measured values; None without `with_paper`)
    and `paper_figure2` the value of the paper's figure 2 means; both None otherwise."""
    arch = architecture(df)
    chosen = findings_of(arch)
    measured = _measured(df, metric, [f.measure for f in chosen])
    papers = _paper_column(arch, with_paper, 0, len(chosen))
    return [{"finding": f.number, "claim": f.claim, **values, "effect": f.label(values["n_used"]),
             "paper": paper, "paper_figure2": f.figure2() if arch.paper_layers else None}
            for f, values, paper in zip(chosen, measured, papers)]


def measure_table1(df: pd.DataFrame, metric: str, with_paper: bool = True) -> list[dict]:
    """Table 1's rows measured; `paper` and `paper_figure2` as in measure_findings."""
    arch = architecture(df)
    chosen = table1(arch.max_n)
    measured = _measured(df, metric, [d.measure for d in chosen])
    papers = _paper_column(arch, with_paper, 1, len(chosen))
    return [{"difference": d.name, "measures": d.measures, **values, "paper": paper,
             "paper_figure2": d.figure2() if arch.paper_layers else None}
            for d, values, paper in zip(chosen, measured, papers)]


def measure_across_halves(df: pd.DataFrame, metric: str) -> list[dict]:
    """Table 1's differences (finding 4 is its AnB+ − BnB+ over every n) compared across halves
    (`across_halves`)."""
    arch = architecture(df)
    rel = across_halves(relative(df, metric))
    return [{"difference": d.name, **d.measure(rel, metric)} for d in table1(arch.max_n)]
