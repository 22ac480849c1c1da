"""The paper's figure 2 (transfer by layer), figure 3 (random, dissimilar and random-features
transfer) and the reduced-volume figure, each as a PNG to look at and a PDF (vector) to print
or put in a paper, of the same name.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from keras_transfer import naming
from keras_transfer.metrics import TOP1
from keras_transfer.outputs import pyplot
from keras_transfer.report.findings import not_the_papers_layers
from keras_transfer.report.runs import architecture, is_whole, n_counts
from keras_transfer.report.tables import relative_by_n

FORMATS = ("png", "pdf")  # each figure is written in both (save_figure)

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


def save_figure(fig, path: Path) -> None:
    """Writes the figure as `path` (PNG) and as the same name in every other of FORMATS, then
    closes it. The PDF carries no creation date, so the same runs give the same file."""
    fig.tight_layout()
    for fmt in FORMATS:
        fig.savefig(path.with_suffix(f".{fmt}"), format=fmt, dpi=110,
                    metadata={"CreationDate": None} if fmt == "pdf" else None)
    pyplot().close(fig)


def n_axis(ax, arch, first: int, label: str) -> None:
    """x ticks n = first..k, each under the cut point its nets copy up to (0: the base nets)."""
    ns = range(first, arch.max_n + 1)
    ax.set_xticks(list(ns))
    ax.set_xticklabels([f"{n}\n{arch.cut_names[n - 1]}" if n else "0\nbase" for n in ns])
    ax.set_xlabel(f"{n_counts(arch.paper_layers)} n{label}")


def missing_conditions(df: pd.DataFrame, series: str, conditions) -> list[str]:
    have = set(df[df["series"] == series]["condition"])
    return [c for c in conditions if c not in have]


def figure2(df: pd.DataFrame, path: Path, metric: str, reference: dict | None) -> list[str]:
    """The paper's figure 2. Top: every run a marker, offset by condition. Bottom: the means per
    n of top-1 relative to each net's own base (so AnB and BnA pool fairly), with 95% CI bands
    over splits; with a reference, the paper's figure 2 means relative to its one base level on
    the same axis (pooled over halves, as the figure pooled them)."""
    plt = pyplot()
    arch = architecture(df)
    main = df[(df["series"] == "main") & df["condition"].isin(list(FIGURE2_STYLE))]
    notes = [f"figure2: no {FIGURE2_STYLE[c][0]} ({c}) runs, left out"
             for c in missing_conditions(df, "main", FIGURE2_STYLE)]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 9), sharex=True)
    offsets = {"base": 0.0, "selffer": -0.24, "selffer+": -0.08, "transfer": 0.08,
               "transfer+": 0.24}
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
    if reference is not None and not arch.paper_layers:
        notes.append(f"figure2: {not_the_papers_layers(arch)}; its reference line is left out")
    elif reference is not None:
        for cond, values in reference.items():
            if cond == "base":
                continue
            bottom.plot(naming.PAPER_N, [v - reference["base"] for v in values], linestyle=":",
                        marker="x", color=FIGURE2_STYLE[cond][1], linewidth=1.2,
                        label=f"paper's figure 2 {FIGURE2_STYLE[cond][0]}")
    label = TOP1[metric]
    top.set_ylabel(f"top-1 ({label})")
    bottom.set_ylabel(f"top-1 ({label}) minus its base net's,\nmean and 95% CI band")
    n_axis(bottom, arch, 0, " at which the network is chopped and retrained")
    top.legend(loc="lower left", fontsize=8, ncol=5)
    bottom.legend(loc="upper center", bbox_to_anchor=(0.5, -0.19), fontsize=8, ncol=5,
                  frameon=False)
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
    dataset = ", ".join(sorted(main["dataset"].dropna().unique()))
    splits = main["split_dir"].nunique()
    top.set_title(f"Transfer by layer ({dataset}; {len(main)} runs, {splits} "
                  f"split{'s' if splits != 1 else ''})")
    save_figure(fig, path)
    return notes


RANDOM_WHOLE = "random features, whole dataset (RnA)"
RANDOM_HALF = "random features (RnB)"
FIGURE3_COLOURS = {"random-split transfer (AnB)": "#d62728",
                   "dissimilar-split transfer (AnB)": "#7b3294",
                   RANDOM_WHOLE: "#555555", RANDOM_HALF: "#555555"}


def figure3_series(df: pd.DataFrame, metric: str) -> dict:
    """label -> table of per-n relative top-1 (run minus its base), for the lines of figure 3.
    The random-features line is the paper's, RnA against baseA on the whole dataset, where
    such runs exist; else RnB against baseB on the halves of the random splits."""
    lines = {}
    specs = (("random-split transfer (AnB)", "main", "transfer"),
             ("dissimilar-split transfer (AnB)", "dissimilar", "transfer"),
             (RANDOM_WHOLE, "whole", "random"),
             (RANDOM_HALF, "main", "random"))
    for label, series, cond in specs:
        if label == RANDOM_HALF and RANDOM_WHOLE in lines:
            continue
        table = relative_by_n(df, cond, "base", metric, series=series)
        if not table.empty:
            lines[label] = table
    return lines


def figure3(df: pd.DataFrame, path: Path, metric: str) -> list[str]:
    plt = pyplot()
    arch = architecture(df)
    lines = figure3_series(df, metric)
    colours = FIGURE3_COLOURS
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for label, table in lines.items():
        ax.errorbar(table["n"], table["mean"], yerr=table["ci95"].fillna(0), marker="o", capsize=3,
                    color=colours[label], label=label, linewidth=2)
    ax.axhline(0.0, color="black", linestyle="--", linewidth=1)
    n_axis(ax, arch, 1, "")
    ax.set_ylabel(f"top-1 minus base top-1 ({TOP1[metric]})")
    ax.set_title("Transfer relative to the base net (error bars: 95% CI over splits)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save_figure(fig, path)
    notes = [f"figure3: no {label} runs, left out" for label in list(colours)[:2]
             if label not in lines]
    if RANDOM_WHOLE not in lines and RANDOM_HALF not in lines:
        notes.append("figure3: no random-features runs (RnA on the whole dataset, or RnB) with "
                     "their base, left out")
    return notes


def reduced_figure(df: pd.DataFrame, path: Path, metric: str) -> None:
    """Top-1 of the reduced-volume base nets against their examples per class: those trained on
    the whole dataset (the paper's) and those on the halves of a split, each with its mean and
    the level of its base nets trained on every example."""
    plt = pyplot()
    reduced = df[(df["series"] == "reduced") & (df["condition"] == "base")]
    whole = reduced["split"].map(is_whole).astype(bool)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    groups = (("whole dataset", reduced[whole], "whole", "#2ca02c"),
              ("halves", reduced[~whole], "main", "#1f4fd1"))
    for data, rows, full_series, colour in groups:
        if rows.empty:
            continue
        for half, marker in (("A", "^" if data == "whole dataset" else "o"), ("B", "s")):
            mine = rows[rows["target"] == half]
            if not mine.empty:
                ax.scatter(mine["examples_per_class"], mine[metric], marker=marker,
                           facecolors="white", edgecolors="black", label=f"base{half} runs, {data}",
                           zorder=3)
        means = rows.groupby("examples_per_class")[metric].mean()
        ax.plot(means.index, means.values, color=colour, linewidth=2, label=f"mean, {data}")
        full = df[(df["series"] == full_series) & (df["condition"] == "base")]
        if not full.empty:
            ax.axhline(full[metric].mean(), color=colour, linestyle="--", linewidth=1,
                       label=f"all training examples, {data}")
    ax.set_xscale("log")
    ax.set_xlabel("training examples per class")
    ax.set_ylabel(f"top-1 ({TOP1[metric]})")
    ax.set_title("Base nets trained on reduced data")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    save_figure(fig, path)
