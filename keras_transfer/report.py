"""The paper's findings, table and figures from a grid's run directories.

`python -m keras_transfer.report WORKDIR [--reference=yosinski2014] [--out=DIR]` reads only the
result.json and config.json files under WORKDIR and writes, into WORKDIR/report by default:
results.csv (one row per run); summary.md: the paper's four findings, each with its effect, 95%
CI and a verdict (keras_transfer.findings), the paper's Table 1, whether the base nets
converged, per condition and n the mean top-1 with its CI, and the decomposition per n;
figure2.png, figure3.png and reduced.png when their runs exist; and hparams/ (each run's
hparams for TensorBoard's HParams dashboard). Intervals are over splits (keras_transfer.stats).
Conditions that have no runs are left out with a note. Every file is rendered first and then
moved into place, so a failed report leaves the previous one untouched.

Command line via argparse, not absl: main's absl flags (config.py) are the package's one absl
namespace, and tools that run beside it in one process (tests, the grid) must not collide with it.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pandas as pd

from keras_transfer import findings, metrics, naming, stats
from keras_transfer.findings import REFERENCES, YOSINSKI2014_TOP1  # noqa: F401 (the report's API)
from keras_transfer.outputs import pyplot

METRICS = metrics.TOP1
# Figure 2 of the paper: condition -> (label, colour, marker); white circles for the base nets,
# dark and light blue for the selffer nets, dark red and pink for the transfer nets, fine-tuned
# nets as crosses.
FIGURE2_STYLE = {
    "base": ("base", "white", "o"),
    "selffer": ("BnB", "#1f3fbf", "o"),
    "selffer+": ("BnB+", "#7fb2ff", "P"),
    "transfer": ("AnB", "#b2182b", "D"),
    "transfer+": ("AnB+", "#ff8fb0", "P"),
}
DISSIMILAR_SPLITS = ("dissimilar", "natman")
# The decomposition of the paper's section 4.1, per n, on accuracy relative to each net's base.
DECOMPOSITION = (
    ("lost co-adaptation", "base", "selffer"),
    ("specificity", "selffer", "transfer"),
    ("fine-tuning gain", "transfer+", "base"),
)
RESULT_COLUMNS = ["run", "condition", "dataset", "split", "split_dir", "seed", "examples_per_class",
                  "source", "target", "n", "finetune", "model", "top1_final", "top1_best_fraction",
                  "top1_best10_mean", "evaluations", "top5_final", "loss_final", "steps",
                  "images_per_sec", "wall_time_sec"]
# A net has converged when its last CONVERGED_EVALUATIONS evaluations are within this top-1 span.
CONVERGED_EVALUATIONS, CONVERGED_SPAN = 3, 0.005


class ReportError(Exception):
    """The report cannot be made from this WORKDIR; the message says why and what to do."""


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


def converged(history) -> bool | None:
    """Whether the last evaluations are within CONVERGED_SPAN of each other (None: too few)."""
    values = [e["top1"] for e in history or []][-CONVERGED_EVALUATIONS:]
    if len(values) < CONVERGED_EVALUATIONS:
        return None
    return max(values) - min(values) <= CONVERGED_SPAN + 1e-12


def load_runs(workdir, dataset: str | None = None) -> tuple[pd.DataFrame, list[str]]:
    """One row per result.json under workdir (with its config.json's flags), and notes on skipped
    files. The top-1 metrics are recomputed from each run's history (metrics.top1_metrics)."""
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
        history = result.get("history") or []
        if history:
            row.update(metrics.top1_metrics(history))
        row["converged"] = converged(history)
        row["last_top1"] = ", ".join(f"{e['top1']:.4f}" for e in history[-CONVERGED_EVALUATIONS:])
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
    for metric in METRICS:
        df[metric] = pd.to_numeric(df[metric], errors="coerce")
    return df.sort_values(["series", "split_dir", "seed", "condition", "n", "run"]).reset_index(drop=True), notes


def drop_unpaired_bases(df: pd.DataFrame, notes: list[str]) -> pd.DataFrame:
    """Leaves out base nets whose half is no transfer net's target (baseA in a target-B grid):
    they solve another task, so pooling them into "base" would compare the B nets with a mix
    of A and B. Base-only series (reduced volume) are kept whole."""
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
    """Per series, condition and n: mean, std, count (of independent clusters: splits, or the
    seeds of a single split), runs and 95% CI half-width of each top-1 metric."""
    def add(row, group):
        for metric in METRICS:
            for stat, value in stats.clustered(group, metric).items():
                row[f"{metric}_{stat}"] = value
        return row
    rows = []
    for (series, cond, n), group in df[df["series"] != "reduced"].groupby(
            ["series", "condition", "n"], sort=True):
        rows.append(add({"series": series, "condition": cond, "n": n}, group))
    # The reduced series is one row per examples-per-class value.
    for epc, group in df[df["series"] == "reduced"].groupby("examples_per_class"):
        rows.append(add({"series": "reduced", "condition": "base", "n": 0,
                         "examples_per_class": int(epc)}, group))
    table = pd.DataFrame(rows)
    order = {cond: i for i, cond in enumerate(naming.CONDITIONS)}
    table["_order"] = table["condition"].map(order)
    return table.sort_values(["series", "_order", "n"]).drop(columns="_order").reset_index(drop=True)


def relative_by_n(df: pd.DataFrame, plus: str, minus: str, metric: str, series: str = "main") -> pd.DataFrame:
    """Per n, `plus` minus `minus` on top-1 relative to each net's base, with clustered CIs."""
    part = df[df["series"] == series].assign(series="main")
    rel = findings.relative(part, metric)
    rows = []
    for n in range(1, naming.MAX_N + 1):
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


def _cell(mean, ci, count) -> str:
    if pd.isna(mean):
        return "–"
    ci_text = f" ± {ci:.4f}" if not pd.isna(ci) else ""
    return f"{mean:.4f}{ci_text} ({int(count)})"


def _interval(row) -> str:
    if pd.isna(row["mean"]):
        return "–"
    if pd.isna(row["ci95"]):
        return f"{row['mean']:+.4f} (no CI)"
    return f"{row['mean']:+.4f} [{row['low']:+.4f}, {row['high']:+.4f}]"


def _units(count: int, clusters: list[str]) -> str:
    return f"{count} split{'s' if count != 1 else ''}" if clusters == ["split_dir"] else \
        f"{count} seed{'s' if count != 1 else ''} of one split"


def findings_section(df: pd.DataFrame, metric: str) -> list[str]:
    """The paper's four findings, each with its effect, 95% CI, count and verdict."""
    rel = findings.relative(df, metric)
    if rel.empty:
        return []
    clusters = stats.cluster_columns(rel)
    units = _units(len(rel[clusters].drop_duplicates()), clusters)
    lines = ["## Findings", "",
             f"Each effect on top-1 ({METRICS[metric]}) relative to each net's own base net, "
             f"averaged within each split, with its 95% CI over {units} "
             "(Student t; nets of one split share their base nets, so the split is the "
             "independent unit). Verdict: *holds* when the whole interval has the paper's sign, "
             "*reversed* when it has the other, *not detected* when it includes 0.", ""]
    if clusters != ["split_dir"]:
        lines += ["One split only: the intervals are over its seeds and leave out how much the "
                  "choice of split matters.", ""]
    lines += ["| finding | effect | paper | measured [95% CI] | splits/seeds (runs) | verdict |",
              "|---|---|---|---|---|---|"]
    for row in findings.measure_findings(df, metric):
        lines.append(f"| {row['finding']}. {row['claim']} | {row['effect']} | {row['paper']:+.4f} | "
                     f"{_interval(row)} | {row['count']} ({row['runs']}) | **{row['verdict']}** |")
    return lines + [""]


def table1_section(df: pd.DataFrame, metric: str) -> list[str]:
    """The paper's Table 1: AnB+ against baseB and against BnB+, pooled over ranges of n."""
    rows = findings.measure_table1(df, metric)
    if not any(r["count"] for r in rows):
        return []
    lines = ["## Table 1 of the paper: what transfer plus fine-tuning gains", "",
             "Top-1 relative to each net's base, pooled over directions and the n of each range, "
             "95% CI over splits. AnB+ − baseB is what a practitioner gains over training on the "
             "target alone, extra training included; AnB+ − BnB+ is the gain of the transferred "
             "features themselves, BnB+ having had the same training.", "",
             "| difference | what it measures | paper | measured [95% CI] | splits/seeds (runs) |",
             "|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['difference']} | {row['measures']} | {row['paper']:+.4f} | "
                     f"{_interval(row)} | {row['count']} ({row['runs']}) |")
    return lines + [""]


def convergence_section(df: pd.DataFrame) -> list[str]:
    """Whether the base nets ended on a plateau, as the paper's converged nets did."""
    bases = df[df["condition"] == "base"]
    if bases.empty or bases["converged"].isna().all():
        return []
    known = bases.dropna(subset=["converged"])
    done = int(known["converged"].astype(bool).sum())
    others = df[(df["condition"] != "base")].dropna(subset=["converged"])
    lines = ["## Convergence", "",
             f"Base nets whose last {CONVERGED_EVALUATIONS} evaluations are within "
             f"{CONVERGED_SPAN * 100:.1f} points of top-1: {done} of {len(known)}; other nets: "
             f"{int(others['converged'].astype(bool).sum())} of {len(others)}.", ""]
    late = known[~known["converged"].astype(bool)]
    if len(late):
        lines += ["Not converged (their numbers measure a net still learning; a longer schedule, "
                  "`--steps`, would change them):", ""]
        lines += [f"- {r['run_dir']}: last top-1 {r['last_top1']}" for _, r in late.iterrows()]
        lines.append("")
    return lines


def glance_table(df: pd.DataFrame, metric: str) -> list[str]:
    """The random-split means per n and condition as one table, relative to each net's own
    base net (the two directions pool fairly only so): the numbers behind figure 2."""
    rel = findings.relative(df, metric)
    if rel.empty:
        return []
    bases = stats.clustered(df[(df["series"] == "main") & (df["condition"] == "base")], metric)
    conditions = [c for c in naming.CONDITIONS[1:] if c in set(rel["condition"])]
    lines = [f"## At a glance: mean top-1 ({METRICS[metric]}) per n, relative to each net's base",
             "", f"Base nets: mean top-1 {bases['mean']:.4f} ({bases['runs']} nets). Each cell: "
             "the mean over splits of (net − its base).", "",
             "| n | " + " | ".join(conditions) + " |", "|---|" + "---|" * len(conditions)]
    for n in sorted(set(rel["n"]) - {0}):
        cells = []
        for cond in conditions:
            value = stats.clustered(rel[(rel["condition"] == cond) & (rel["n"] == n)], metric)
            cells.append(f"{value['mean']:+.4f}" if value["count"] else "–")
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    return lines + [""]


def prediction_section(path: Path) -> str:
    """The CKA-vs-transfer panel of `python -m keras_transfer.analyze predict`, when it has run."""
    lines = ["## Predicting transfer from layer similarity", ""]
    try:
        prediction = json.loads(path.read_text())
        spearman = prediction["spearman"]
        p_text = f"{spearman['p_value_method']} p {spearman['p_value']:.3g}"
    except (OSError, ValueError, KeyError, TypeError):
        return "\n".join(lines + ["Not computed yet: run `python -m keras_transfer.analyze predict "
                                  "WORKDIR`, then this report again.", ""])
    lines += [f"CKA(baseA, baseB) per layer against the measured relative drop of AnB "
              f"({prediction.get('metric', 'top1')}): Spearman rho {spearman['rho']:.3f} "
              f"({p_text}, {spearman['points']} layers).", "",
              f"![CKA vs transfer drop]({path.name.replace('.json', '.png')})", ""]
    return "\n".join(lines)


def summary_markdown(workdir, df: pd.DataFrame, summary: pd.DataFrame, notes: list[str],
                     metric: str) -> str:
    lines = [f"# Transfer results: {workdir}", ""]
    datasets = ", ".join(sorted(df["dataset"].dropna().unique()))
    models = ", ".join(sorted(df["model"].dropna().astype(str).unique()))
    splits = ", ".join(sorted(df["split"].dropna().astype(str).unique()))
    seeds = ", ".join(str(s) for s in sorted(df["seed"].unique()))
    lines += [f"{len(df)} runs; dataset {datasets}; model {models}; splits {splits}; seeds {seeds}.",
              f"Top-1 on the validation set of the target half; the headline is *{METRICS[metric]}* "
              f"(`{metric}`). *final*: at the last step; *best 10/450*: the mean of the best "
              f"{metrics.PAPER_BEST}/{metrics.PAPER_EVALUATIONS} of a net's evaluations (the "
              "paper's rule in its proportion). Departures from the paper's protocol: "
              "docs/fidelity.md.", ""]
    lines += findings_section(df, metric)
    lines += table1_section(df, metric)
    lines += convergence_section(df)
    lines += glance_table(df, metric)
    titles = {"main": "Random splits", "dissimilar": "Dissimilar split", "reduced": "Reduced volume (base nets)"}
    for series in ("main", "dissimilar", "reduced"):
        part = summary[summary["series"] == series]
        if part.empty:
            continue
        lines += [f"## {titles[series]}: top-1 per condition and n", "",
                  "Cells: mean ± 95% CI half-width over splits (or the seeds of one split) and "
                  "(their count); runs: nets behind it.", ""]
        first = "examples/class" if series == "reduced" else "n"
        lines += [f"| condition | {first} | runs | final | final std | best 10/450 |",
                  "|---|---|---|---|---|---|"]
        for _, r in part.iterrows():
            key = int(r["examples_per_class"]) if series == "reduced" else int(r["n"])
            lines.append(
                f"| {r['condition']} | {key} | {int(r['top1_final_runs'])} | "
                f"{_cell(r['top1_final_mean'], r['top1_final_ci95'], r['top1_final_count'])} | "
                f"{_std(r['top1_final_std'])} | "
                f"{_cell(r['top1_best_fraction_mean'], r['top1_best_fraction_ci95'], r['top1_best_fraction_count'])} |")
        lines.append("")
    table = decomposition(df, metric)
    if not table.empty:
        lines += [f"## Decomposition per n (top-1 {METRICS[metric]})", "",
                  "On top-1 relative to each net's base, 95% CI over splits: lost co-adaptation = "
                  "base − selffer (baseB − BnB), specificity = selffer − transfer (BnB − AnB), "
                  "fine-tuning gain = transfer+ − base (AnB+ − baseB).", "",
                  "| n | " + " | ".join(name for name, _, _ in DECOMPOSITION) + " |",
                  "|---|" + "---|" * len(DECOMPOSITION)]
        for n, group in table.groupby("n"):
            cells = []
            for name, _, _ in DECOMPOSITION:
                row = group[group["effect"] == name]
                cells.append(_interval(row.iloc[0]) if len(row) else "–")
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
    """The paper's figure 2. Top: every run a marker, offset by condition. Bottom: the means per
    n of top-1 relative to each net's own base (so AnB and BnA pool fairly), with 95% CI bands
    over splits; with a reference, the paper's means relative to its base on the same axis."""
    plt = pyplot()
    main = df[(df["series"] == "main") & df["condition"].isin(list(FIGURE2_STYLE))]
    notes = [f"figure2: no {FIGURE2_STYLE[c][0]} ({c}) runs, left out"
             for c in missing_conditions(df, "main", FIGURE2_STYLE)]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 9), sharex=True)
    offsets = {"base": 0.0, "selffer": -0.24, "selffer+": -0.08, "transfer": 0.08, "transfer+": 0.24}
    for cond, (label, colour, marker) in FIGURE2_STYLE.items():
        rows = main[main["condition"] == cond]
        if rows.empty:
            continue
        top.scatter(rows["n"] + offsets[cond], rows[metric], s=36, c=colour, marker=marker,
                    edgecolors="black", linewidths=0.7, label=label, zorder=3)
        if cond == "base":
            bottom.axhline(0.0, color="black", linestyle="--", linewidth=1.2, label=label)
            continue
        table = relative_by_n(main, cond, "base", metric)
        if table.empty:
            continue
        bottom.plot(table["n"], table["mean"], marker=marker, color=colour, markeredgecolor="black",
                    linewidth=2, label=label)
        bottom.fill_between(table["n"], table["low"], table["high"], color=colour, alpha=0.25,
                            linewidth=0)
    if reference is not None:
        for cond, values in reference.items():
            if cond == "base":
                continue
            bottom.plot(range(1, 8), [v - reference["base"] for v in values], linestyle=":",
                        marker="x", color=FIGURE2_STYLE[cond][1], linewidth=1.2,
                        label=f"paper {FIGURE2_STYLE[cond][0]}")
    label = METRICS[metric]
    top.set_ylabel(f"top-1 ({label})")
    bottom.set_ylabel(f"top-1 ({label}) minus its base net's,\nmean and 95% CI band")
    bottom.set_xlabel("layer n at which the network is chopped and retrained")
    bottom.set_xticks(range(0, 8))
    top.legend(loc="lower left", fontsize=8, ncol=5)
    bottom.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), fontsize=8, ncol=5,
                  frameon=False)
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
    dataset = ", ".join(sorted(main["dataset"].dropna().unique()))
    splits = main["split_dir"].nunique()
    top.set_title(f"Transfer by layer ({dataset}; {len(main)} runs, {splits} "
                  f"split{'s' if splits != 1 else ''})")
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
        table = relative_by_n(df, cond, "base", metric, series=series)
        if not table.empty:
            lines[label] = table
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
    ax.set_title("Transfer relative to the base net (error bars: 95% CI over splits)")
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
                metric: str = metrics.HEADLINE, hparams: bool = True) -> dict:
    """Writes the report's files into `out` (default WORKDIR/report) and returns {name: path}."""
    workdir = Path(workdir)
    out = Path(out) if out is not None else workdir / "report"
    df, notes = load_runs(workdir, dataset)
    try:
        metrics.check_metric(metric, df["evaluations"].fillna(0))
    except metrics.MetricError as e:
        raise ReportError(str(e)) from None
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
        (staging / "summary.md").write_text(summary_markdown(workdir, df, summary, all_notes, metric)
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
    p.add_argument("--metric", choices=list(METRICS), default=metrics.HEADLINE,
                   help="top-1 used by the findings, figures and decomposition: top1_final (the "
                        "default), top1_best_fraction (the mean of the best 10/450 of a net's "
                        "evaluations, the paper's rule in its proportion) or top1_best10_mean "
                        "(refused for runs with fewer than "
                        f"{metrics.MIN_EVALUATIONS_FOR_BEST10} evaluations)")
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
