"""summary.md: the findings first, then the paper's Table 1, convergence, the tables per
condition and n, the decomposition and notes, as Markdown.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from keras_transfer import metrics, models, naming
from keras_transfer.metrics import TOP1
from keras_transfer.report import findings, stats
from keras_transfer.report.runs import (CONVERGED_EVALUATIONS, CONVERGED_SPAN, architecture,
                                       n_counts)
from keras_transfer.report.tables import DECOMPOSITION, decomposition, relative_by_n


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


def _paper(value) -> str:
    return "n/a" if value is None else f"{value:+.4f}"


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
             f"Each effect on top-1 ({TOP1[metric]}) relative to each net's own base net, "
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
        lines.append(f"| {row['finding']}. {row['claim']} | {row['effect']} | "
                     f"{_paper(row['paper'])} | "
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
        lines.append(f"| {row['difference']} | {row['measures']} | {_paper(row['paper'])} | "
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
    lines = [f"## At a glance: mean top-1 ({TOP1[metric]}) per n, relative to each net's base",
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


def whole_control_section(df: pd.DataFrame, metric: str) -> list[str]:
    """The paper's random-features control: RnA on the whole dataset against baseA there,
    per n (figure 3's line)."""
    table = relative_by_n(df, "random", "base", metric, series="whole")
    if table.empty:
        return []
    lines = ["The paper's random-features control (its section 4.3): nets of every class with "
             "layers 1..n random and frozen (RnA), against baseA trained on the whole dataset. "
             f"Top-1 ({TOP1[metric]}) of RnA minus its baseA's, with its 95% CI over seeds "
             "(the whole dataset is one split):", "",
             "| n | RnA − baseA [95% CI] | seeds (runs) |", "|---|---|---|"]
    for _, row in table.iterrows():
        lines.append(f"| {int(row['n'])} | {_interval(row)} | {int(row['count'])} "
                     f"({int(row['runs'])}) |")
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
    try:  # predictions written before they named their model are of the paper's layers
        unit = n_counts(models.get(prediction.get("model", "small")))
    except ValueError:
        unit = "cut point"
    lines += [f"CKA(baseA, baseB) per {unit} against the measured relative drop of AnB "
              f"({prediction.get('metric', 'top1')}): Spearman rho {spearman['rho']:.3f} "
              f"({p_text}, {spearman['points']} {unit}s).", "",
              f"![CKA vs transfer drop]({path.name.replace('.json', '.png')})", ""]
    return "\n".join(lines)


def summary_markdown(workdir, df: pd.DataFrame, summary: pd.DataFrame, notes: list[str],
                     metric: str, diverged=()) -> str:
    lines = [f"# Transfer results: {workdir}", ""]
    arch = architecture(df)
    datasets = ", ".join(sorted(df["dataset"].dropna().unique()))
    splits = ", ".join(sorted(df["split"].dropna().astype(str).unique()))
    seeds = ", ".join(str(s) for s in sorted(df["seed"].unique()))
    lines += [f"{len(df)} runs; dataset {datasets}; model {arch.name}; splits {splits}; "
              f"seeds {seeds}.",
              f"Cut points of {arch.name}, n = 1-{arch.max_n}: {', '.join(arch.cut_names)} "
              "(a net of n copies the first n)."]
    if not arch.paper_layers:
        lines.append(f"The paper column is n/a: {findings.not_the_papers_layers(arch)}.")
    lines += [f"Top-1 on the validation set of the target half; the headline is "
              f"*{TOP1[metric]}* (`{metric}`). *final*: at the last step; *best 10/450*: the mean "
              f"of the best {metrics.PAPER_BEST}/{metrics.PAPER_EVALUATIONS} of a net's "
              "evaluations (the paper's rule in its proportion). Departures from the paper's "
              "protocol: docs/fidelity.md.", ""]
    lines += findings_section(df, metric)
    lines += table1_section(df, metric)
    lines += convergence_section(df)
    lines += glance_table(df, metric)
    titles = {"main": "Random splits",
              "whole": "Whole dataset (the random-features control and its base)",
              "dissimilar": "Dissimilar split", "reduced": "Reduced volume (base nets)"}
    for series in ("main", "whole", "dissimilar", "reduced"):
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
            condition = f"base ({r['data']})" if series == "reduced" else r["condition"]
            final, best = (_cell(r[f"{m}_mean"], r[f"{m}_ci95"], r[f"{m}_count"])
                           for m in ("top1_final", "top1_best_fraction"))
            lines.append(f"| {condition} | {key} | {int(r['top1_final_runs'])} | {final} | "
                         f"{_std(r['top1_final_std'])} | {best} |")
        lines.append("")
        if series == "whole":
            lines += whole_control_section(df, metric)
    table = decomposition(df, metric)
    if not table.empty:
        lines += [f"## Decomposition per n (top-1 {TOP1[metric]})", "",
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
    if diverged:
        lines += ["## Diverged nets", "",
                  "Their loss or weights became NaN or infinite: they have no result and are left "
                  "out of every finding, table, figure and mean above.", ""]
        lines += [f"- {d['run_dir']}: by step {d['step']}, {d['what']}" for d in diverged]
        lines.append("")
    if notes:
        lines += ["## Notes", ""] + [f"- {note}" for note in notes] + [""]
    return "\n".join(lines)


def _std(value) -> str:
    return "–" if pd.isna(value) else f"{value:.4f}"
