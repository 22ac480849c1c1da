"""The report's numbers as tables: per condition and n, the paper's decomposition per n, and
the findings with the paper's values (findings.csv).

Every interval is over splits (stats.clustered): nets of one split share their base nets.
Differences between conditions are taken within each target half (findings.Difference).
"""
from __future__ import annotations

import pandas as pd

from keras_transfer import naming
from keras_transfer.metrics import TOP1
from keras_transfer.report import convergence, findings, stats
from keras_transfer.report.runs import is_whole

# The decomposition of the paper's section 4.1, per n, on accuracy relative to each net's base.
DECOMPOSITION = (
    ("lost co-adaptation", "base", "selffer"),
    ("specificity", "selffer", "transfer"),
    ("fine-tuning gain", "transfer+", "base"),
)


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """Per series, condition and n: mean, std, count (of independent clusters: splits, or the
    seeds of a single split), runs and 95% CI half-width of each top-1 metric. The longer twins
    of the convergence control are left out: they are that control alone (report.convergence)."""
    def add(row, group):
        for metric in TOP1:
            for stat, value in stats.clustered(group, metric).items():
                row[f"{metric}_{stat}"] = value
        return row
    df = convergence.without_longer(df)
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
    """Per n, `plus` minus `minus` on top-1 relative to each net's base, within each target
    half (findings.Difference), with CIs over splits; n that no half computes are left out."""
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


_INTERVAL = ("mean", "low", "high", "ci95", "count", "runs", "verdict")


def findings_table(df: pd.DataFrame, metric: str, with_paper: bool = True) -> pd.DataFrame:
    """The findings and Table 1 as one table (findings.csv): each effect, what was compared in
    which half, its interval, count, nets and verdict, the same for the paper's nets
    (`paper_*`, empty when not shown) and the paper's figure 2 value."""
    rows = [("finding", f"{r['finding']}. {r['effect']}", r)
            for r in findings.measure_findings(df, metric, with_paper)]
    rows += [("table1", r["difference"], r)
             for r in findings.measure_table1(df, metric, with_paper)]
    table = []
    for kind, name, row in rows:
        paper = row["paper"] or {}
        table.append({"table": kind, "effect": name, "metric": metric,
                      "compared_within": row["within"],
                      **{key: row[key] for key in _INTERVAL},
                      "paper_metric": findings.PAPER_METRIC if paper else None,
                      **{f"paper_{key}": paper.get(key) for key in _INTERVAL},
                      "paper_compared_within": paper.get("within"),
                      "paper_figure2": row["paper_figure2"]})
    return pd.DataFrame(table)
