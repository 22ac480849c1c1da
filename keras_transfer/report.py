"""The paper's table and figures from a grid's run directories.

`python -m keras_transfer.report WORKDIR [--reference=yosinski2014] [--out=DIR]` reads only the
result.json and config.json files under WORKDIR and writes, into WORKDIR/report by default:
results.csv (one row per run), summary.md (per condition and n: mean, std, count, 95% CI of
top-1; the paper's decomposition per n), figure2.png, figure3.png and reduced.png when their runs
exist, and hparams/ (each run's hparams for TensorBoard's HParams dashboard). Conditions that have
no runs are left out with a note. Every file is rendered first and then moved into place, so a
failed report leaves the previous one untouched.

Command line via argparse, not absl: main's absl flags (config.py) are the package's one absl
namespace, and tools that run beside it in one process (tests, the grid) must not collide with it.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from keras_transfer import naming
from keras_transfer.outputs import pyplot

METRICS = {"top1_best10_mean": "best-10 mean", "top1_final": "final"}
# Figure 2 of the paper: condition -> (label, colour).
FIGURE2_STYLE = {
    "base": ("baseB", "white"),
    "selffer": ("BnB", "#1f4fd1"),
    "selffer+": ("BnB+", "#8fc1ff"),
    "transfer": ("AnB", "#d62728"),
    "transfer+": ("AnB+", "#ff9eb8"),
}
# Yosinski et al. 2014, ImageNet top-1 (mean over runs) per n = 1..7, and the base level
# (design.md section 1). Overlaid on figure 2 with --reference=yosinski2014.
YOSINSKI2014_TOP1 = {
    "base": 0.625,
    "selffer": (0.627, 0.624, 0.621, 0.605, 0.594, 0.619, 0.623),
    "transfer": (0.628, 0.624, 0.619, 0.600, 0.578, 0.581, 0.543),
    "transfer+": (0.637, 0.636, 0.643, 0.640, 0.645, 0.646, 0.647),
    "selffer+": (0.618, 0.622, 0.631, 0.629, 0.630, 0.628, 0.627),
}
REFERENCES = {"yosinski2014": YOSINSKI2014_TOP1}
DISSIMILAR_SPLITS = ("dissimilar", "natman")
# The decomposition of the paper's section 4.1, as (name, minuend, subtrahend) conditions.
DECOMPOSITION = (
    ("lost co-adaptation", "base", "selffer"),
    ("specificity", "selffer", "transfer"),
    ("fine-tuning gain", "transfer+", "base"),
)
PAIR_KEY = ["split_dir", "seed", "target"]
RESULT_COLUMNS = ["run", "condition", "dataset", "split", "split_dir", "seed", "examples_per_class",
                  "source", "target", "n", "finetune", "model", "top1_final", "top5_final",
                  "top1_best10_mean", "top5_best10_mean", "loss_final", "steps",
                  "images_per_sec", "wall_time_sec"]


class ReportError(Exception):
    """The report cannot be made from this WORKDIR; the message says why and what to do."""


# --------------------------------------------------------------------------------------------
# Statistics (no scipy here: Student's t from the regularised incomplete beta function)
# --------------------------------------------------------------------------------------------

def _betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta I_x(a, b), by its continued fraction (modified Lentz)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    if x > (a + 1.0) / (a + b + 2.0):            # the fraction converges fast on this side only
        return 1.0 - _betainc(b, a, 1.0 - x)
    log_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                 + a * math.log(x) + b * math.log1p(-x))
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    result = d
    for m in range(1, 500):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            result *= c * d
        if abs(c * d - 1.0) < 1e-15:
            break
    return math.exp(log_front) * result / a


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with df degrees of freedom."""
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The t with P(T <= t) = p, by bisection on t_cdf (monotone, so this always converges)."""
    if not 0.0 < p < 1.0 or df <= 0:
        raise ValueError(f"need 0 < p < 1 and df > 0, got p={p}, df={df}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if t_cdf(mid, df) < p else (lo, mid)
        if hi - lo < 1e-12:
            break
    return 0.5 * (lo + hi)


def mean_ci(values) -> dict:
    """Mean, sample std, count and the half-width of the 95% Student-t interval (NaN for one value)."""
    x = np.asarray([v for v in values if v is not None and not pd.isna(v)], dtype=float)
    count = len(x)
    mean = float(x.mean()) if count else math.nan
    std = float(x.std(ddof=1)) if count > 1 else math.nan
    ci95 = t_quantile(0.975, count - 1) * std / math.sqrt(count) if count > 1 else math.nan
    return {"mean": mean, "std": std, "count": count, "ci95": ci95}


# --------------------------------------------------------------------------------------------
# Reading the runs
# --------------------------------------------------------------------------------------------

def series_of(split: str, examples_per_class) -> str:
    """Which experiment a run belongs to: the main random-split series, dissimilar, or reduced."""
    if examples_per_class and not pd.isna(examples_per_class):
        return "reduced"
    if str(split) in DISSIMILAR_SPLITS:
        return "dissimilar"
    return "main"


def load_runs(workdir, dataset: str | None = None) -> tuple[pd.DataFrame, list[str]]:
    """One row per result.json under workdir (with its config.json's flags), and notes on skipped files."""
    workdir = Path(workdir)
    if not workdir.is_dir():
        raise ReportError(f"{workdir} is not a directory; give the --workdir of the grid (e.g. runs)")
    rows, notes = [], []
    for path in sorted(workdir.rglob("result.json")):
        try:
            result = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            notes.append(f"skipped unreadable {path}: {e}")
            continue
        row = {k: result.get(k) for k in RESULT_COLUMNS}
        config_path = path.parent / "config.json"
        if config_path.is_file():
            try:
                config = json.loads(config_path.read_text())
            except (OSError, json.JSONDecodeError) as e:
                notes.append(f"ignored unreadable {config_path}: {e}")
                config = {}
            for k, v in config.items():
                if k not in row and not isinstance(v, (dict, list)):
                    row[f"flag_{k}"] = v
        row["run_dir"] = str(path.parent.relative_to(workdir))
        rows.append(row)
    if not rows:
        raise ReportError(f"no result.json under {workdir}: no run has finished there yet "
                          "(train some with ./launch.sh, or point at the grid's workdir)")
    df = pd.DataFrame(rows)
    datasets = sorted(df["dataset"].dropna().unique())
    if dataset is not None:
        if dataset not in datasets:
            raise ReportError(f"no runs of dataset {dataset!r} under {workdir}; it holds "
                              f"{', '.join(datasets)}")
        df = df[df["dataset"] == dataset]
    elif len(datasets) > 1:
        raise ReportError(f"{workdir} holds runs of several datasets ({', '.join(datasets)}); "
                          "choose one with --dataset=NAME")
    df = df.copy()
    df["series"] = [series_of(s, e) for s, e in zip(df["split"], df["examples_per_class"])]
    df["n"] = df["n"].astype(int)
    df["seed"] = df["seed"].astype(int)
    return df.sort_values(["series", "split_dir", "seed", "condition", "n", "run"]).reset_index(drop=True), notes


def drop_unpaired_bases(df: pd.DataFrame, notes: list[str]) -> pd.DataFrame:
    """Leaves out base nets whose half is no transfer net's target (baseA in a target-B grid
    such as the demo): they solve another task, so pooling them into "base" would compare the
    B nets with a mix of A and B. Base-only series (reduced volume) are kept whole."""
    keys = df[["series", "split", "seed", "target"]].apply(tuple, axis=1)
    is_base = df["condition"] == "base"
    targets = set(keys[~is_base])
    unpaired = is_base & df["series"].isin({k[0] for k in targets}) & ~keys.isin(targets)
    if unpaired.any():
        names = sorted(set(df.loc[unpaired, "run"]))
        notes.append(f"left out of tables and figures (no net targets their half): "
                     f"{', '.join(names)}; still listed in results.csv")
    return df[~unpaired].reset_index(drop=True)


# --------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------

def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """Per series, condition and n: mean, std, count and 95% CI half-width of each top-1 metric."""
    rows = []
    for (series, cond, n), group in df.groupby(["series", "condition", "n"], sort=True):
        row = {"series": series, "condition": cond, "n": n}
        if series == "reduced":
            row["examples_per_class"] = int(group["examples_per_class"].iloc[0])
        for metric in METRICS:
            for stat, value in mean_ci(group[metric]).items():
                row[f"{metric}_{stat}"] = value
        rows.append(row)
    if "reduced" in set(df["series"]):  # the reduced series is one row per examples-per-class value
        rows = [r for r in rows if r["series"] != "reduced"]
        for epc, group in df[df["series"] == "reduced"].groupby("examples_per_class"):
            row = {"series": "reduced", "condition": "base", "n": 0, "examples_per_class": int(epc)}
            for metric in METRICS:
                for stat, value in mean_ci(group[metric]).items():
                    row[f"{metric}_{stat}"] = value
            rows.append(row)
    table = pd.DataFrame(rows)
    order = {cond: i for i, cond in enumerate(naming.CONDITIONS)}
    table["_order"] = table["condition"].map(order)
    return table.sort_values(["series", "_order", "n"]).drop(columns="_order").reset_index(drop=True)


def paired_differences(df: pd.DataFrame, first: str, second: str, n: int, metric: str,
                       first_n: int | None = None, second_n: int | None = None) -> pd.Series:
    """first - second for each (split, seed, target) that has both; base nets are n = 0."""
    def pick(cond, at_n):
        rows = df[(df["condition"] == cond) & (df["n"] == (0 if cond == "base" else at_n))]
        return rows.groupby(PAIR_KEY)[metric].mean()
    a = pick(first, n if first_n is None else first_n)
    b = pick(second, n if second_n is None else second_n)
    return (a - b).dropna()


def decomposition(df: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The paper's effects per n with 95% CIs, from differences paired by split, seed and target."""
    main = df[df["series"] == "main"]
    rows = []
    for n in range(1, 8):
        for name, first, second in DECOMPOSITION:
            diffs = paired_differences(main, first, second, n, metric)
            if len(diffs):
                rows.append({"n": n, "effect": name, **mean_ci(diffs)})
    return pd.DataFrame(rows, columns=["n", "effect", "mean", "std", "count", "ci95"])


def decomposition_notes(df: pd.DataFrame) -> list[str]:
    have = set(decomposition(df, "top1_final")["effect"])
    return [f"decomposition: no {name} ({first} and {second} runs of the same split, seed and "
            "target are needed)" for name, first, second in DECOMPOSITION if name not in have]


def _cell(mean, ci, count) -> str:
    if pd.isna(mean):
        return "–"
    ci_text = f" ± {ci:.4f}" if not pd.isna(ci) else ""
    return f"{mean:.4f}{ci_text} ({int(count)})"


def glance_table(summary: pd.DataFrame) -> list[str]:
    """The random-split means as one n x condition table (the numbers behind figure 2)."""
    part = summary[summary["series"] == "main"]
    if part.empty:
        return []
    metric = "top1_final_mean"
    base = part.loc[part["condition"] == "base", metric]
    conditions = [c for c in naming.CONDITIONS[1:] if c in set(part["condition"])]
    lines = ["## At a glance: mean final top-1 per n (random splits)", "",
             f"base: {base.iloc[0]:.4f}" if len(base) else "base: no base runs yet", "",
             "| n | " + " | ".join(conditions) + " |", "|---|" + "---|" * len(conditions)]
    for n in sorted(set(part["n"]) - {0}):
        cells = []
        for cond in conditions:
            value = part.loc[(part["condition"] == cond) & (part["n"] == n), metric]
            cells.append(f"{value.iloc[0]:.4f}" if len(value) else "–")
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    return lines + [""]


def prediction_section(path: Path) -> str:
    """The CKA-vs-transfer panel of `python -m keras_transfer.analyze predict`, when it has run."""
    lines = ["## Predicting transfer from layer similarity", ""]
    try:
        prediction = json.loads(path.read_text())
        spearman = prediction["spearman"]
    except (OSError, ValueError, KeyError):
        return "\n".join(lines + ["Not computed yet: run `python -m keras_transfer.analyze predict "
                                  "WORKDIR`, then this report again.", ""])
    lines += [f"CKA(baseA, baseB) per layer against the measured relative drop of AnB: Spearman "
              f"rho {spearman['rho']:.3f} (exact p {spearman['p_value_exact']:.3g}, {spearman['points']} layers).", "",
              f"![CKA vs transfer drop]({path.name.replace('.json', '.png')})", ""]
    return "\n".join(lines)


def summary_markdown(workdir, df: pd.DataFrame, summary: pd.DataFrame, notes: list[str]) -> str:
    lines = [f"# Transfer results: {workdir}", ""]
    datasets = ", ".join(sorted(df["dataset"].dropna().unique()))
    models = ", ".join(sorted(df["model"].dropna().astype(str).unique()))
    splits = ", ".join(sorted(df["split"].dropna().astype(str).unique()))
    seeds = ", ".join(str(s) for s in sorted(df["seed"].unique()))
    lines += [f"{len(df)} runs; dataset {datasets}; model {models}; splits {splits}; seeds {seeds}.",
              "Top-1 on the validation set of the target half: *final* at the last step, *best-10* the "
              "mean of the 10 best evaluations (the paper's number). Cells: mean ± 95% CI half-width "
              "(Student t, count − 1 degrees of freedom) and (count); std is the sample std.", ""]
    lines += glance_table(summary)
    titles = {"main": "Random splits", "dissimilar": "Dissimilar split", "reduced": "Reduced volume (base nets)"}
    for series in ("main", "dissimilar", "reduced"):
        part = summary[summary["series"] == series]
        if part.empty:
            continue
        lines += [f"## {titles[series]}: top-1 per condition and n", ""]
        first = "examples/class" if series == "reduced" else "n"
        lines += [f"| condition | {first} | count | final | final std | best-10 | best-10 std |",
                  "|---|---|---|---|---|---|---|"]
        for _, r in part.iterrows():
            key = int(r["examples_per_class"]) if series == "reduced" else int(r["n"])
            lines.append(
                f"| {r['condition']} | {key} | {int(r['top1_final_count'])} | "
                f"{_cell(r['top1_final_mean'], r['top1_final_ci95'], r['top1_final_count'])} | "
                f"{_std(r['top1_final_std'])} | "
                f"{_cell(r['top1_best10_mean_mean'], r['top1_best10_mean_ci95'], r['top1_best10_mean_count'])} | "
                f"{_std(r['top1_best10_mean_std'])} |")
        lines.append("")
    for metric, label in METRICS.items():
        table = decomposition(df, metric)
        if table.empty:
            continue
        lines += [f"## Decomposition per n (top-1 {label})", "",
                  "Differences paired by split, seed and target half: lost co-adaptation = "
                  "base − selffer (BnB), specificity = selffer − transfer (BnB − AnB), "
                  "fine-tuning gain = transfer+ − base (AnB+ − baseB).", "",
                  "| n | " + " | ".join(name for name, _, _ in DECOMPOSITION) + " |",
                  "|---|" + "---|" * len(DECOMPOSITION)]
        for n, group in table.groupby("n"):
            cells = []
            for name, _, _ in DECOMPOSITION:
                row = group[group["effect"] == name]
                cells.append(_cell(*row[["mean", "ci95", "count"]].iloc[0]) if len(row) else "–")
            lines.append(f"| {n} | " + " | ".join(cells) + " |")
        lines.append("")
    if notes:
        lines += ["## Notes", ""] + [f"- {note}" for note in notes] + [""]
    return "\n".join(lines)


def _std(value) -> str:
    return "–" if pd.isna(value) else f"{value:.4f}"


# --------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------

def missing_conditions(df: pd.DataFrame, series: str, conditions) -> list[str]:
    have = set(df[df["series"] == series]["condition"])
    return [c for c in conditions if c not in have]


def figure2(df: pd.DataFrame, path: Path, metric: str, reference: dict | None) -> list[str]:
    """Top: every run as a point, offset by condition; bottom: the means per n, baseB dashed."""
    plt = pyplot()
    main = df[(df["series"] == "main") & df["condition"].isin(list(FIGURE2_STYLE))]
    notes = [f"figure2: no {FIGURE2_STYLE[c][0]} ({c}) runs, left out"
             for c in missing_conditions(df, "main", FIGURE2_STYLE)]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 9), sharex=True)
    offsets = {"base": 0.0, "selffer": -0.24, "selffer+": -0.08, "transfer": 0.08, "transfer+": 0.24}
    for cond, (label, colour) in FIGURE2_STYLE.items():
        rows = main[main["condition"] == cond]
        if rows.empty:
            continue
        top.scatter(rows["n"] + offsets[cond], rows[metric], s=36, c=colour, edgecolors="black",
                    linewidths=0.7, label=label, zorder=3)
        means = rows.groupby("n")[metric].mean()
        if cond == "base":
            bottom.axhline(means.mean(), color="black", linestyle="--", linewidth=1.2, label=label)
        else:
            bottom.plot(means.index, means.values, marker="o", color=colour, markeredgecolor="black",
                        linewidth=2, label=label)
    if reference is not None:
        twin = bottom.twinx()
        twin.axhline(reference["base"], color="grey", linestyle=":", linewidth=1)
        for cond, values in reference.items():
            if cond == "base":
                continue
            twin.plot(range(1, 8), values, linestyle=":", marker="x", color=FIGURE2_STYLE[cond][1],
                      linewidth=1.2, label=f"paper {FIGURE2_STYLE[cond][0]}")
        twin.set_ylabel("Yosinski et al. 2014, ImageNet top-1 (dotted)")
    handles = [h for ax in fig.axes[1:] for h in ax.get_legend_handles_labels()[0]]
    labels = [lab for ax in fig.axes[1:] for lab in ax.get_legend_handles_labels()[1]]
    label = METRICS[metric]
    top.set_ylabel(f"top-1 ({label})")
    bottom.set_ylabel(f"mean top-1 ({label})")
    bottom.set_xlabel("layer n at which the network is chopped and retrained")
    bottom.set_xticks(range(0, 8))
    top.legend(loc="lower left", fontsize=8, ncol=5)
    if reference is None:
        handles, labels = bottom.get_legend_handles_labels()
    bottom.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, -0.13), fontsize=8,
                  ncol=5, frameon=False)
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
    dataset = ", ".join(sorted(main["dataset"].dropna().unique()))
    top.set_title(f"Transfer by layer ({dataset}; {len(main)} runs)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return notes


def figure3_series(df: pd.DataFrame, metric: str) -> dict:
    """label -> table of per-n relative top-1 (run minus its base), for the lines of figure 3."""
    lines = {}
    specs = (("random-split transfer (AnB)", "main", "transfer"),
             ("dissimilar-split transfer (AnB)", "dissimilar", "transfer"),
             ("random features (RnB)", "main", "random"))
    for label, series, cond in specs:
        part = df[df["series"] == series]
        rows = []
        for n in range(1, 8):
            diffs = paired_differences(part, cond, "base", n, metric)
            if len(diffs):
                rows.append({"n": n, **mean_ci(diffs)})
        if rows:
            lines[label] = pd.DataFrame(rows)
    return lines


def figure3(df: pd.DataFrame, path: Path, metric: str) -> list[str]:
    plt = pyplot()
    lines = figure3_series(df, metric)
    colours = {"random-split transfer (AnB)": "#d62728", "dissimilar-split transfer (AnB)": "#7b3294",
               "random features (RnB)": "#555555"}
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for label, table in lines.items():
        ax.errorbar(table["n"], table["mean"], yerr=table["ci95"].fillna(0), marker="o", capsize=3,
                    color=colours[label], label=label, linewidth=2)
    ax.axhline(0.0, color="black", linestyle="--", linewidth=1)
    ax.set_xlabel("layer n")
    ax.set_ylabel(f"top-1 minus base top-1 ({METRICS[metric]})")
    ax.set_xticks(range(1, 8))
    ax.set_title("Transfer relative to the base net (error bars: 95% CI)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [f"figure3: no {label} runs, left out" for label in colours if label not in lines]


def reduced_figure(df: pd.DataFrame, path: Path, metric: str) -> None:
    plt = pyplot()
    reduced = df[(df["series"] == "reduced") & (df["condition"] == "base")]
    full = df[(df["series"] == "main") & (df["condition"] == "base")]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for half, marker in (("A", "o"), ("B", "s")):
        rows = reduced[reduced["target"] == half]
        ax.scatter(rows["examples_per_class"], rows[metric], marker=marker, facecolors="white",
                   edgecolors="black", label=f"base{half} runs", zorder=3)
    means = reduced.groupby("examples_per_class")[metric].mean()
    ax.plot(means.index, means.values, color="#1f4fd1", linewidth=2, label="mean")
    if not full.empty:
        ax.axhline(full[metric].mean(), color="black", linestyle="--", linewidth=1,
                   label="all training examples")
    ax.set_xscale("log")
    ax.set_xlabel("training examples per class")
    ax.set_ylabel(f"top-1 ({METRICS[metric]})")
    ax.set_title("Base nets trained on reduced data")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------------------------
# TensorBoard HParams
# --------------------------------------------------------------------------------------------

HPARAM_NAMES = ("source", "target", "n", "finetune", "split", "seed")


def write_hparams(df: pd.DataFrame, logdir: Path) -> None:
    """One TensorBoard run per net: its hparams and top-1 metrics, for the HParams dashboard."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
    from tensorboard.plugins.hparams import api as hp
    hparams = [
        hp.HParam("source", hp.Discrete(sorted(df["source"].astype(str).unique()))),
        hp.HParam("target", hp.Discrete(sorted(df["target"].astype(str).unique()))),
        hp.HParam("n", hp.IntInterval(0, 7)),
        hp.HParam("finetune", hp.Discrete([False, True])),
        hp.HParam("split", hp.Discrete(sorted(df["split"].astype(str).unique()))),
        hp.HParam("seed", hp.IntInterval(int(df["seed"].min()), int(df["seed"].max()))),
    ]
    metrics = [hp.Metric(m, display_name=f"top-1 {label}") for m, label in METRICS.items()]
    with tf.summary.create_file_writer(str(logdir)).as_default():
        hp.hparams_config(hparams=hparams, metrics=metrics)
    for _, row in df.iterrows():
        values = {"source": str(row["source"]), "target": str(row["target"]), "n": int(row["n"]),
                  "finetune": bool(row["finetune"]), "split": str(row["split"]), "seed": int(row["seed"])}
        with tf.summary.create_file_writer(str(logdir / row["run_dir"])).as_default():
            hp.hparams(values, trial_id=row["run_dir"])
            for metric in METRICS:
                if not pd.isna(row[metric]):
                    tf.summary.scalar(metric, float(row[metric]), step=int(row["steps"] or 0))


# --------------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------------

def make_report(workdir, out=None, *, reference: str | None = None, dataset: str | None = None,
                metric: str = "top1_best10_mean", hparams: bool = True) -> dict:
    """Writes the report's files into `out` (default WORKDIR/report) and returns {name: path}."""
    workdir = Path(workdir)
    out = Path(out) if out is not None else workdir / "report"
    df, notes = load_runs(workdir, dataset)
    if df[metric].isna().all():
        notes.append(f"no run has {metric}; figures use top1_final")
        metric = "top1_final"
    all_runs = df
    df = drop_unpaired_bases(df, notes)
    summary = summarize(df)
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out, prefix=".staging-"))
    written = {}
    try:
        all_runs.to_csv(staging / "results.csv", index=False)
        figure_notes = figure2(df, staging / "figure2.png", metric,
                               REFERENCES[reference] if reference else None)
        if set(df["condition"]) & {"random"} or "dissimilar" in set(df["series"]):
            figure_notes += figure3(df, staging / "figure3.png", metric)
        else:
            figure_notes.append("figure3: needs random-features (RnB) or dissimilar-split runs; none yet")
        if "reduced" in set(df["series"]):
            reduced_figure(df, staging / "reduced.png", metric)
        else:
            figure_notes.append("reduced.png: no reduced-volume runs (--experiments=reduced)")
        all_notes = notes + decomposition_notes(df) + figure_notes
        (staging / "summary.md").write_text(summary_markdown(workdir, df, summary, all_notes)
                                            + prediction_section(out / "predict.json"))
        if hparams:
            write_hparams(df, staging / "hparams")
        for item in sorted(staging.iterdir()):
            target = out / item.name
            if item.is_dir():  # swap whole directories: the old one goes only once the new is in place
                old = out / f".old-{item.name}"
                shutil.rmtree(old, ignore_errors=True)
                if target.exists():
                    os.replace(target, old)
                os.replace(item, target)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(item, target)
            written[item.name] = target
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {"files": written, "notes": all_notes, "runs": len(all_runs)}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m keras_transfer.report",
                                description="Table and figures of the transfer grid in WORKDIR.")
    p.add_argument("workdir", help="root of the run directories (the grid's --workdir)")
    p.add_argument("--out", default=None, help="where to write the report (default WORKDIR/report)")
    p.add_argument("--reference", choices=sorted(REFERENCES), default=None,
                   help="overlay a published result on figure 2")
    p.add_argument("--dataset", default=None, help="which dataset, when WORKDIR holds several")
    p.add_argument("--metric", choices=list(METRICS), default="top1_best10_mean",
                   help="top-1 used in the figures (the tables show both)")
    p.add_argument("--no_hparams", dest="hparams", action="store_false",
                   help="skip writing TensorBoard HParams summaries (no TensorFlow import)")
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    report = make_report(args.workdir, args.out, reference=args.reference, dataset=args.dataset,
                         metric=args.metric, hparams=args.hparams)
    print(f"[report] {report['runs']} runs")
    for note in report["notes"]:
        print(f"[report] note: {note}")
    for name, path in report["files"].items():
        print(f"[report] wrote {path}")
    return 0


def run() -> None:
    try:
        sys.exit(main())
    except ReportError as e:
        print(f"report: error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    run()
