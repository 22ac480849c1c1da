"""The report's numbers as tables: per condition and n, and the paper's decomposition per n.

Every interval is over splits (stats.clustered): nets of one split share their base nets.
"""
from __future__ import annotations

import pandas as pd

from keras_transfer import naming
from keras_transfer.metrics import TOP1
from keras_transfer.report import findings, stats
from keras_transfer.report.runs import is_whole

# The decomposition of the paper's section 4.1, per n, on accuracy relative to each net's base.
DECOMPOSITION = (
    ("lost co-adaptation", "base", "selffer"),
    ("specificity", "selffer", "transfer"),
    ("fine-tuning gain", "transfer+", "base"),
)


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """Per series, condition and n: mean, std, count (of independent clusters: splits, or the
    seeds of a single split), runs and 95% CI half-width of each top-1 metric."""
    def add(row, group):
        for metric in TOP1:
            for stat, value in stats.clustered(group, metric).items():
                row[f"{metric}_{stat}"] = value
        return row
    rows = []
    for (series, cond, n), group in df[df["series"] != "reduced"].groupby(
            ["series", "condition", "n"], sort=True):
        rows.append(add({"series": series, "condition": cond, "n": n}, group))
    # The reduced series is one row per examples-per-class value and data: the whole dataset
    # (the paper's, baseA of every class) or the halves of the splits; the two are other tasks.
    reduced = df[df["series"] == "reduced"]
    data = reduced["split"].map(lambda split: "whole dataset" if is_whole(split) else "halves")
    for (kind, epc), group in reduced.groupby([data, "examples_per_class"], sort=True):
        rows.append(add({"series": "reduced", "condition": "base", "n": 0, "data": kind,
                         "examples_per_class": int(epc)}, group))
    table = pd.DataFrame(rows)
    order = {cond: i for i, cond in enumerate(naming.CONDITIONS)}
    table["_order"] = table["condition"].map(order)
    keys = ["series", "_order", "n"] + [k for k in ("data", "examples_per_class") if k in table]
    table = table.sort_values(keys, kind="stable").drop(columns="_order")
    return table.reset_index(drop=True)


def relative_by_n(df: pd.DataFrame, plus: str, minus: str, metric: str,
                  series: str = "main") -> pd.DataFrame:
    """Per n, `plus` minus `minus` on top-1 relative to each net's base, with clustered CIs."""
    part = df[df["series"] == series].assign(series="main")
    rel = findings.relative(part, metric)
    rows = []
    for n in sorted(int(n) for n in set(rel["n"]) - {0}):
        measured = findings.Difference("", "", plus, minus, (n,)).measure(rel, metric)
        if measured["count"]:
            rows.append({"n": n, **measured})
    return pd.DataFrame(rows, columns=["n", "mean", "std", "count", "ci95", "low", "high", "runs"])


def decomposition(df: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The paper's effects per n with 95% CIs over splits, on top-1 relative to each net's base."""
    tables = [relative_by_n(df, first, second, metric).assign(effect=name)
              for name, first, second in DECOMPOSITION]
    table = pd.concat([t for t in tables if not t.empty] or [pd.DataFrame(columns=["n", "effect"])])
    return table.sort_values("n", kind="stable").reset_index(drop=True)


def decomposition_notes(df: pd.DataFrame) -> list[str]:
    have = set(decomposition(df, "top1_final")["effect"])
    return [f"decomposition: no {name} ({first} and {second} runs of the same split, seed and "
            "target are needed)" for name, first, second in DECOMPOSITION if name not in have]
