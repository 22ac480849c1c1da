"""summary.md: the findings first, then the paper's Table 1, convergence (each base net against
its longer twin, report.convergence), the tables per condition and n, the decomposition and
notes, as Markdown. Each finding and Table 1 row names
what it compared in which target half; beside it stand the paper's value by the same estimator
on the authors' nets, with its interval and verdict, and the value of the paper's figure 2
means. A report of the authors' nets (`paper`) starts with where they come from.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from keras_transfer import metrics, naming
from keras_transfer.metrics import TOP1
from keras_transfer.report import convergence, findings, paper_nets, stats
from keras_transfer.report.runs import (CONVERGED_EVALUATIONS, CONVERGED_SPAN, architecture,
                                        external_bases, n_counts)
from keras_transfer.report.tables import DECOMPOSITION, decomposition, relative_by_n


def _cell(mean, ci, count) -> str:
    if pd.isna(mean):
        return "–"
    ci_text = f" ± {ci:.4f}" if not pd.isna(ci) else ""
    return f"{mean:.4f}{ci_text} ({int(count)})"


def _interval(row) -> str:
    if row.get("not_computable"):
        return findings.NOT_COMPUTABLE
    if pd.isna(row["mean"]):
        return "–"
    if pd.isna(row["ci95"]):
        return f"{row['mean']:+.4f} (no CI)"
    return f"{row['mean']:+.4f} [{row['low']:+.4f}, {row['high']:+.4f}]"


def _paper(measured) -> str:
    """The paper's nets through the report's estimator: interval, splits (nets), verdict."""
    if measured is None:
        return "n/a"
    if measured["not_computable"]:
        return measured["verdict"]
    return (f"{_interval(measured)}, {_units(measured['count'], ['split_dir'])} "
            f"({measured['runs']} nets): {measured['verdict']}")


def _figure2(value) -> str:
    return "n/a" if value is None else f"{value:+.4f}"


def _units(count: int, clusters: list[str]) -> str:
    return f"{count} split{'s' if count != 1 else ''}" if clusters == ["split_dir"] else \
        f"{count} seed{'s' if count != 1 else ''} of one split"


def _within(row) -> str:
    return row["within"] or "–"


def _paper_columns_text(with_paper: bool) -> str:
    base = findings.YOSINSKI2014_TOP1["base"]
    figure2 = (f"*paper's figure 2 (pooled)*: the paper's figure 2 means pooled over halves, "
               f"minus its one base level {base:.3f}: another estimator, with no interval.")
    if not with_paper:
        return figure2
    return (f"*paper's nets*: the same estimator, interval and verdict on the authors' own nets "
            f"({findings.paper_splits()} random splits; `python -m keras_transfer.report "
            f"--paper` reports them in full) with their metric, the mean of the best "
            f"{metrics.PAPER_BEST} of {metrics.PAPER_EVALUATIONS} evaluations "
            f"(`{findings.PAPER_METRIC}`), and its count of splits and nets. "
            + figure2)


def findings_section(df: pd.DataFrame, metric: str, with_paper: bool = True) -> list[str]:
    """The paper's four findings, each with its effect, 95% CI, count and verdict, and the
    paper's value by the same estimator (`with_paper`) and from its figure 2."""
    rel = findings.relative(df, metric)
    if rel.empty:
        return []
    clusters = stats.cluster_columns(rel)
    units = _units(len(rel[clusters].drop_duplicates()), clusters)
    rows = findings.measure_findings(df, metric, with_paper)
    shows_paper = with_paper and rows[0]["paper"] is not None
    lines = ["## Findings", "",
             f"Each effect on top-1 ({TOP1[metric]}) is taken within one target half: each net "
             "minus its own base net (same split, seed and half), then per split and half the "
             "difference of the two conditions' means over the n of the range, in the halves "
             "that have both (*compared within*, with how many splits or seeds each half "
             "gives); those are averaged over the halves of a split, with a 95% CI over "
             f"{units} (Student t; nets of one split share their base nets, so the split is "
             "the independent unit). A difference that no half has both conditions for is "
             "*not computable*. Verdict: *holds* when the whole interval has the paper's sign, "
             "*reversed* when it has the other, *not detected* when it includes 0.", "",
             _paper_columns_text(shows_paper), ""]
    if clusters != ["split_dir"]:
        lines += ["One split only: the intervals are over its seeds and leave out how much the "
                  "choice of split matters.", ""]
    lines += _measured_table(("finding", "effect"), rows, shows_paper,
                             lambda row: (f"{row['finding']}. {row['claim']}", row["effect"]))
    return lines + [""]


def table1_section(df: pd.DataFrame, metric: str, with_paper: bool = True) -> list[str]:
    """The paper's Table 1: AnB+ against baseB and against BnB+, pooled over ranges of n."""
    rel = findings.relative(df, metric)
    if rel.empty or not (rel["condition"] == "transfer+").any():
        return []
    rows = findings.measure_table1(df, metric, with_paper)
    shows_paper = with_paper and rows[0]["paper"] is not None
    lines = ["## Table 1 of the paper: what transfer plus fine-tuning gains", "",
             "Top-1 relative to each net's base, compared within each target half over the n of "
             "each range as the findings are, 95% CI over splits. AnB+ − baseB is what a "
             "practitioner gains over training on the target alone, extra training included; "
             "AnB+ − BnB+ is the gain of the transferred features themselves, BnB+ having had "
             "the same training.", "", _paper_columns_text(shows_paper), ""]
    lines += _measured_table(("difference", "what it measures"), rows, shows_paper,
                             lambda row: (row["difference"], row["measures"]))
    return lines + [""]


def _measured_table(heads: tuple, rows: list[dict], shows_paper: bool, first_cells) -> list[str]:
    """The findings' and Table 1's Markdown table: two columns of their own (`heads`, each row's
    `first_cells(row)`), then what was compared, the measured interval, its count, verdict, the
    paper's nets (`shows_paper`) and the paper's figure 2 value."""
    paper_head, paper_rule = ("paper's nets [95% CI], splits (nets): verdict | ", "---|") \
        if shows_paper else ("", "")
    lines = [f"| {heads[0]} | {heads[1]} | compared within | measured [95% CI] | "
             f"splits/seeds (runs) | verdict | {paper_head}paper's figure 2 (pooled) |",
             f"|---|---|---|---|---|---|{paper_rule}---|"]
    for row in rows:
        first, second = first_cells(row)
        paper = f"{_paper(row['paper'])} | " if shows_paper else ""
        lines.append(f"| {first} | {second} | {_within(row)} | {_interval(row)} | "
                     f"{row['count']} ({row['runs']}) | **{row['verdict']}** | "
                     f"{paper}{_figure2(row['paper_figure2'])} |")
    return lines


def _times(stretch: int) -> str:
    return "twice" if stretch == 2 else f"{stretch} times"


def convergence_section(runs: pd.DataFrame, metric: str, paper: bool = False) -> list[str]:
    """Whether the base nets converged: against their longer twins where the grid trained them
    (report.convergence), else only whether they ended on a plateau, which cannot tell a
    converged net from one stalled under a decayed learning rate. `runs`: every run read,
    before drop_unpaired_bases, so that a baseA trained only as a source is checked too."""
    pairs = convergence.control_pairs(runs, metric)
    bases = runs[(runs["condition"] == "base") & (runs["series"] != convergence.SERIES)]
    if bases.empty and pairs.empty:
        return []
    lines = ["## Convergence", ""]
    if not pairs.empty:
        lines += _control_lines(pairs, bases, metric)
    elif paper:
        lines += ["The authors' nets have no longer twins: only the plateau check below applies.",
                  ""]
    else:
        lines += ["The convergence control was not run: no base net has a longer twin (`baseB-x2`, "
                  "the same net trained on a schedule twice as long). Train them with the grid's "
                  "`--experiments=transfer,convergence` (the demo's default) and make this report "
                  "again.", ""]
    return lines + _plateau_lines(runs, bases, control=not pairs.empty)


def _control_lines(pairs: pd.DataFrame, bases: pd.DataFrame, metric: str) -> list[str]:
    """The control's rule, the longer nets' gain per target half, each pair, and the names of
    the base nets that did not converge (the demo prints these lines in a terminal)."""
    gain = convergence.CONVERGED_GAIN * 100
    stretches = sorted(int(s) for s in set(pairs["stretch"]))
    times = " or ".join(_times(s) for s in stretches)
    lines = [f"Control: each base net trained again on a schedule {times} as long (`baseB-x"
             f"{stretches[0]}`: steps, learning-rate steps and evaluation interval multiplied). "
             f"Rule: a base net is converged when its longer twin ends at most {gain:.1f} point "
             f"higher on top-1 ({TOP1[metric]}): {convergence.WHY}.", "",
             "Gain of the longer nets (longer − base) per target half, mean with 95% CI over "
             "splits:", "",
             "| target half | longer − base [95% CI] | splits/seeds (pairs) |", "|---|---|---|"]
    for half, interval in convergence.gains_per_half(pairs).items():
        lines.append(f"| {half} | {_interval(interval)} | "
                     f"{_units(interval['count'], interval['clusters'])} ({interval['runs']}) |")
    lines += ["", "| base net | base | longer | gain | converged |", "|---|---|---|---|---|"]
    for _, row in pairs.iterrows():
        lines.append(f"| {row['run_dir']} | {row['base']:.4f} | {row['longer']:.4f} "
                     f"(x{int(row['stretch'])}) | {row['gain']:+.4f} | "
                     f"{'yes' if row['converged'] else '**no**'} |")
    lines.append("")
    late = convergence.unconverged(pairs)
    if late:
        lines += [f"Not converged: {len(late)} of {len(pairs)} base nets (their longer twin ends "
                  f"more than {gain:.1f} point higher; every comparison against them measures a "
                  "net still learning):", ""]
        lines += [f"- {line}" for line in late] + [""]
    else:
        lines += [f"Not converged: none of the {len(pairs)} base nets (every longer twin within "
                  f"{gain:.1f} point).", ""]
    random_splits = bases[bases["series"] == "main"]
    unchecked = sorted(set(random_splits["run_dir"]) - set(pairs["run_dir"]))
    if unchecked:
        lines += [f"No longer twin, not checked by the control: {', '.join(unchecked)}.", ""]
    return lines


def _plateau_lines(runs: pd.DataFrame, bases: pd.DataFrame, control: bool) -> list[str]:
    """How many nets ended on a plateau, with what that cannot show, and the base nets that did
    not (still rising or falling: unconverged either way)."""
    known = bases.dropna(subset=["converged"])
    if known.empty:
        return []
    done = int(known["converged"].astype(bool).sum())
    others = runs[runs["condition"] != "base"].dropna(subset=["converged"])
    other_text = (f"; other nets: {int(others['converged'].astype(bool).sum())} of {len(others)}"
                  if len(others) else "")
    lines = [f"Plateau check: base nets whose last {CONVERGED_EVALUATIONS} evaluations are within "
             f"{CONVERGED_SPAN * 100:.1f} points of top-1: {done} of {len(known)}{other_text}. "
             "It cannot detect a net stalled under a decayed learning rate: after the learning "
             "rate's last step down every curve is flat, converged or not"
             + ("; the control above can." if control else
                ", so a net that passes it may still be short of converged."), ""]
    late = known[~known["converged"].astype(bool)]
    # With the control, its verdict per net is the one that counts; the plateau list would
    # repeat the lr schedule's shape (a curve still rising at the last step down) as noise.
    if len(late) and not control:
        lines += ["Not on a plateau (their numbers measure a net still learning; a longer "
                  "schedule, `--steps`, would change them):", ""]
        lines += [f"- {r['run_dir']}: last top-1 {r['last_top1']}" for _, r in late.iterrows()]
        lines.append("")
    return lines


def glance_table(df: pd.DataFrame, metric: str) -> list[str]:
    """The random-split means per n and condition as one table, relative to each net's own
    base net, within each target half and then averaged over halves and splits: the numbers
    behind figure 2's lower panel."""
    rel = findings.relative(df, metric)
    if rel.empty:
        return []
    bases = stats.clustered(df[(df["series"] == "main") & (df["condition"] == "base")], metric)
    conditions = [c for c in naming.CONDITIONS[1:] if c in set(rel["condition"])]
    per_condition = {c: relative_by_n(df, c, "base", metric).set_index("n") for c in conditions}
    lines = [f"## At a glance: mean top-1 ({TOP1[metric]}) per n, relative to each net's base",
             "", f"Base nets: mean top-1 {bases['mean']:.4f} ({bases['runs']} nets). Each cell: "
             "net − its base, averaged within each target half, then over halves and splits.",
             "", "| n | " + " | ".join(conditions) + " |", "|---|" + "---|" * len(conditions)]
    for n in sorted(set(rel["n"]) - {0}):
        cells = [f"{table.loc[n, 'mean']:+.4f}" if n in table.index else "–"
                 for table in per_condition.values()]
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


def _rho(correlation: dict) -> str:
    return (f"rho {correlation['rho']:+.3f} ({correlation['p_value_method']} p "
            f"{correlation['p_value']:.3g})")


def prediction_section(path: Path) -> str:
    """The CKA-vs-transfer panel of `python -m keras_transfer.analyze predict`, when it has run,
    beside depth alone as the predictor of the same drop."""
    lines = ["## Predicting transfer from layer similarity", ""]
    try:
        prediction = json.loads(path.read_text())
        spearman = prediction["spearman"]
        cka_text = _rho(spearman)
    except (OSError, ValueError, KeyError, TypeError):
        return "\n".join(lines + ["Not computed yet: run `python -m keras_transfer.analyze predict "
                                  "WORKDIR`, then this report again.", ""])
    # Predictions written before they said so: of the paper's layers if they name no model
    # (n counted nothing else then) or name the paper's conv1..fc7 as their cut points.
    paper_layers = prediction.get("paper_layers", "model" not in prediction or tuple(
        prediction.get("pooled", {}).get("layers") or ()) == naming.PAPER_LAYERS)
    unit = n_counts(paper_layers)
    lines += [f"Spearman rank correlation with the measured relative drop of AnB "
              f"({prediction.get('metric', 'top1')}) over {spearman['points']} {unit}s:", "",
              "| predictor | Spearman rho (p) |", "|---|---|",
              f"| CKA(baseA, baseB) per {unit} | {cka_text} |"]
    depth = prediction.get("spearman_depth")
    if depth:
        lines += [f"| depth alone ({unit} n) | {_rho(depth)} |", "",
                  f"Better predictor of the drop (larger rank correlation in size): "
                  f"**{prediction['better_predictor']}**.", ""]
    else:
        lines += ["", "Depth alone as the baseline predictor: not in this predict.json (written "
                  "before it was added); run `python -m keras_transfer.analyze predict` again.",
                  ""]
    lines += [f"![CKA vs transfer drop]({path.name.replace('.json', '.png')})", ""]
    return "\n".join(lines)


def _listing(items) -> str:
    items = [str(item) for item in items]
    return " and ".join([", ".join(items[:-1]), items[-1]]) if len(items) > 1 else items[0]


def paper_source_section(df: pd.DataFrame, metric: str) -> list[str]:
    """For a report of the authors' nets: where they come from, which fine-tuned nets exist,
    what rests on them, and what the differences no half computes give across halves."""
    directories = pd.read_csv(paper_nets.CSV)
    main = df[df["series"] == "main"]
    evaluations = int(main["evaluations"].max())
    lines = ["## The authors' nets", "",
             f"From {paper_nets.REPOSITORY}, commit `{paper_nets.COMMIT}`, folder `results/`: "
             f"{len(directories)} net directories, {len(df)} with a training log (the others are "
             f"left out), their Caffe logs read into `keras_transfer/report/data/"
             f"{paper_nets.CSV.name}` (how: `{paper_nets.CSV.with_suffix('.md').name}` beside "
             "it). This report reads only that file. "
             + ("Each net was trained once. " if df["seed"].nunique() == 1 else "")
             + f"Metric: `{metric}` ({TOP1[metric]}); a full log holds {evaluations} "
             f"evaluations, one every {int(main['steps'].max()) // evaluations} iterations.", ""]
    tuned = main[main["finetune"]]
    splits = sorted(tuned["split"].str.replace("random:", "").unique())
    per_half = tuned.groupby(["condition", "target"]).size()
    one_half = tuned.groupby("condition")["target"].nunique().max() == 1
    lines += [f"Fine-tuned nets exist only for random split{'s' if len(splits) != 1 else ''} "
              f"{_listing(splits)} of the {main['split'].nunique()}"
              + (", and only on one target half each: " if one_half else "; ")
              + _listing(f"{count} {findings.net_label(condition, half)} nets on half {half}"
                         for (condition, half), count in per_half.items())
              + ". What compares fine-tuned nets rests on these alone:", ""]
    table1 = findings.measure_table1(df, metric, with_paper=False)
    rows = ([(f"finding {r['finding']} ({r['effect']})", r)
             for r in findings.measure_findings(df, metric, with_paper=False)]
            + [(f"Table 1 {r['difference']}", r) for r in table1])
    lines += [f"- {name}: " + (row["verdict"] if row["not_computable"]
                               else f"{row['within']}, {_interval(row)}")
              for name, row in rows if any(c.endswith("+") for c in row["conditions"])]
    uncomputable = {r["difference"] for r in table1 if r["not_computable"]}
    across = [r for r in findings.measure_across_halves(df, metric)
              if r["difference"] in uncomputable]
    if across:
        lines += ["", "Compared across halves instead (each net still against its own base), "
                  "which sets nets of different tasks against each other and is no finding of "
                  "this report:", "",
                  "| difference | compared | across halves [95% CI] | splits (nets) | verdict |",
                  "|---|---|---|---|---|"]
        lines += [f"| {r['difference']} | {r['within']} | {_interval(r)} | {r['count']} "
                  f"({r['runs']}) | {r['verdict']} |" for r in across]
    return lines + [""]


def summary_markdown(workdir, df: pd.DataFrame, summary: pd.DataFrame, notes: list[str],
                     metric: str, diverged=(), *, paper: bool = False,
                     runs: pd.DataFrame | None = None, settings=()) -> str:
    """summary.md of runs from `workdir`; `paper`: the runs are the authors' nets
    (paper_nets.load()), so their source is described and the paper's nets are not set
    beside themselves. `runs`: every run read, before drop_unpaired_bases (default `df`), for
    the convergence section; the longer twins of the convergence control enter that section
    alone. `settings`: nets trained with other flags than their series
    (runs.settings_differences), listed before the findings."""
    runs = df if runs is None else runs
    df = convergence.without_longer(df)
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
    external = external_bases(df)
    if external:
        lines.append(f"baseA is a network trained elsewhere (--base_model): {'; '.join(external)}"
                     ". The transfer nets (AnB, AnB+) copy its cut points; no baseA was trained.")
    lines += [f"Top-1 on the validation set of the target half; the headline is "
              f"*{TOP1[metric]}* (`{metric}`). *final*: at the last step; *best 10/450*: the mean "
              f"of the best {metrics.PAPER_BEST}/{metrics.PAPER_EVALUATIONS} of a net's "
              "evaluations (the paper's rule in its proportion)."
              + ("" if paper else " Departures from the paper's protocol: docs/fidelity.md."),
              ""]
    if settings:
        lines += ["## Nets trained with other settings", "",
                  "These nets were trained with other values of a flag that changes a result "
                  "than the rest of their series, and are averaged in with them all the same. "
                  "Train them again with the grid's settings (`--overwrite`), or move them out "
                  "of the WORKDIR to leave them out.", ""]
        lines += [f"- {line}" for line in settings] + [""]
    if paper:
        lines += paper_source_section(df, metric)
    lines += findings_section(df, metric, with_paper=not paper)
    lines += table1_section(df, metric, with_paper=not paper)
    lines += convergence_section(runs, metric, paper)
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
                  "On top-1 relative to each net's base, within each target half as the "
                  "findings are, 95% CI over splits: lost co-adaptation = base − selffer "
                  "(baseB − BnB), specificity = selffer − transfer (BnB − AnB), fine-tuning "
                  "gain = transfer+ − base (AnB+ − baseB).", "",
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
