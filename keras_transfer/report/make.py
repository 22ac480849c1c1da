"""The whole report from a WORKDIR, or from the authors' own nets: every file rendered into a
staging folder beside the report folder, which then replaces the report folder whole in one
atomic exchange (data_prep.atomic), so a reader, a crash or a kill sees the old report or the
new one, never files of both; a failed report leaves the previous one untouched.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pandas as pd

from data_prep import atomic
from keras_transfer import metrics, stopping
from keras_transfer.report import convergence, paper_nets
from keras_transfer.report.figures import FORMATS, figure2, figure3, reduced_figure
from keras_transfer.report.findings import PAPER_METRIC, REFERENCES
from keras_transfer.report.hparams import write_hparams
from keras_transfer.report.runs import (ReportError, architecture, drop_unpaired_bases,
                                        load_diverged, load_runs, results_table,
                                        settings_differences)
from keras_transfer.report.summary import prediction_section, summary_markdown
from keras_transfer.report.tables import decomposition_notes, findings_table, summarize


# What the report writes into its folder: replaced whole by every report.
FIGURES = ("figure2", "figure3", "reduced")  # each in every figures.FORMATS
REPORT_FILES = frozenset({"results.csv", "convergence.csv", "findings.csv", "summary.md",
                          "hparams"} | {f"{name}.{fmt}" for name in FIGURES for fmt in FORMATS})
# What `python -m keras_transfer.analyze predict` writes there (its --out: also analysis/): kept.
KEPT_FILES = frozenset({"predict.json", "predict.png", "analysis"})
# Hidden folders of killed reports of earlier versions (inside the report folder): dropped.
LEFTOVERS = (".staging-", ".old-")


def make_report(workdir, out=None, *, reference: str | None = None, dataset: str | None = None,
                model: str | None = None, metric: str = metrics.HEADLINE) -> dict:
    """Writes the report's files into `out` (default WORKDIR/report) and returns {"folder": the
    report folder, "files": {name: path}, "notes": [...], "runs": how many were read,
    "reported": how many the findings, tables and figures are made of}. No HParams runs:
    each net's own TensorBoard events hold its hparams (report.hparams)."""
    workdir = Path(workdir)
    out = check_out(Path(out) if out is not None else workdir / "report", given=out is not None)
    df, notes = load_runs(workdir, dataset, model)
    datasets, network = set(df["dataset"]), architecture(df).name
    diverged = [d for d in load_diverged(workdir) if Path(d["run_dir"]).parts[0] in datasets
                and d["model"] in (network, None)]
    if diverged:
        notes.append(f"{len(diverged)} diverged nets are left out of every mean (see Diverged "
                     "nets)")
    try:
        metrics.check_metric(metric, df["evaluations"].fillna(0))
    except metrics.MetricError as e:
        raise ReportError(str(e)) from None
    return _write_report(df, notes, out, title=workdir, metric=metric, reference=reference,
                         hparams=False, diverged=diverged,
                         prediction=out / "predict.json", settings=settings_differences(df))


def make_paper_report(out, *, reference: str | None = "yosinski2014",
                      metric: str = PAPER_METRIC, hparams: bool = True) -> dict:
    """The same report of the authors' nets (paper_nets.load(), from the shipped CSV; no
    network access), with their metric by default and figure 2 overlaid with the paper's."""
    out = check_out(Path(out), given=True)
    df = paper_nets.load()
    short = df[df["evaluations"] < metrics.MIN_EVALUATIONS_FOR_BEST10]
    notes = [f"{r['paper_dir']}: its log holds {int(r['evaluations'])} evaluations "
             f"(up to iteration {int(r['steps'])}); its {metric} is over those"
             for _, r in short.iterrows()]
    return _write_report(df, notes, out, title=f"the authors' nets, {paper_nets.REPOSITORY}",
                         metric=metric, reference=reference, hparams=hparams, paper=True)


def _write_report(df: pd.DataFrame, notes: list[str], out: Path, *, title, metric: str,
                  reference: str | None, hparams: bool, diverged=(), prediction=None,
                  paper: bool = False, settings=()) -> dict:
    settings = list(settings)
    if df[metric].isna().all():
        notes.append(f"no run has {metric}; figures use top1_final")
        metric = "top1_final"
    all_runs = df  # results.csv and the convergence control; the rest leaves the longer twins out
    df = drop_unpaired_bases(convergence.without_longer(df), notes)
    summary = summarize(df)
    written = []
    try:
        with atomic.staged_directory(out) as staging:
            results_table(all_runs).to_csv(staging / "results.csv", index=False)
            pairs = convergence.control_pairs(all_runs, metric)
            if not pairs.empty:
                pairs.insert(0, "metric", metric)
                pairs.to_csv(staging / "convergence.csv", index=False, float_format="%.8g")
            if "main" in set(df["series"]):
                figure_notes = figure2(df, staging / "figure2.png", metric,
                                       REFERENCES[reference] if reference else None)
                findings_table(df, metric, with_paper=not paper).to_csv(
                    staging / "findings.csv", index=False)
            else:
                figure_notes = ["figure2.png: no random-split runs (--experiments=transfer)"]
            if set(df["condition"]) & {"random"} or "dissimilar" in set(df["series"]):
                figure_notes += figure3(df, staging / "figure3.png", metric)
            else:
                figure_notes.append("figure3: needs random-features (RnA on the whole dataset, "
                                    "or RnB) or dissimilar-split runs; none yet")
            if "reduced" in set(df["series"]):
                reduced_figure(df, staging / "reduced.png", metric)
            else:
                figure_notes.append("reduced.png: no reduced-volume runs "
                                    "(--experiments=reduced)")
            all_notes = notes + decomposition_notes(df) + figure_notes
            text = summary_markdown(title, df, summary, all_notes, metric, diverged, paper=paper,
                                    runs=all_runs, settings=settings)
            if prediction is not None:
                text += "\n" + prediction_section(prediction)  # a blank line before its heading
            (staging / "summary.md").write_text(text)
            if hparams:
                write_hparams(df, staging / "hparams")
            written = sorted(item.name for item in staging.iterdir())
            _carry_over(out, staging)
            stopping.check_interrupt()  # a Ctrl-C that pandas or matplotlib swallowed
    except OSError as e:
        raise ReportError(f"cannot write the report to {out}: {e.strerror or e} "
                          f"({e.filename or out}); nothing was changed there. Free space or "
                          "give --out a folder you can write") from None
    return {"folder": out, "files": {name: out / name for name in written},
            "notes": settings + all_notes, "runs": len(all_runs), "reported": len(df)}


def check_out(out: Path, *, given: bool) -> Path:
    """`out` if the report can replace it whole: missing, empty, or holding only what the report
    and the analysis write there (REPORT_FILES, KEPT_FILES); ReportError naming the problem and
    the fix otherwise (a file, a folder of other files such as the WORKDIR itself)."""
    option = f"--out {out}" if given else f"{out} (the default report folder)"
    if out.is_symlink() and out.is_dir():
        out = out.resolve()  # the folder it points to is replaced, the link stays
    for path in (out, *out.parents):
        if path.exists() or path.is_symlink():
            if not path.is_dir():
                where = "is a file" if path == out else f"is inside {path}, which is a file"
                raise ReportError(f"{option} {where}, not a folder: give a folder for the "
                                  f"report (it is created if missing), e.g. "
                                  f"--out={path.parent / 'report'}")
            break
    if not out.is_dir():
        return out
    foreign = sorted(p.name for p in out.iterdir()
                     if p.name not in REPORT_FILES | KEPT_FILES and not p.name.startswith("."))
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5
                                          else "")
        raise ReportError(f"{option} holds {len(foreign)} entries the report did not write "
                          f"({shown}), which replacing the folder whole would remove: give a "
                          "new or empty folder for the report (it is created if missing), or "
                          "the folder of an earlier report")
    return out


def _carry_over(out: Path, staging: Path) -> None:
    """What the report folder holds besides the report (KEPT_FILES, other hidden files) into the
    new one, as hard links (copies where the file system has none); staging and temp files of
    killed processes of earlier versions are left behind, removed with the old folder."""
    if not out.is_dir():
        return
    for item in out.iterdir():
        if item.name in REPORT_FILES or item.name.startswith(LEFTOVERS) or (
                item.name.startswith(".") and item.name.endswith(".tmp")):
            continue
        if item.is_dir() and not item.is_symlink():
            shutil.copytree(item, staging / item.name, symlinks=True, copy_function=_link)
        else:
            _link(item, staging / item.name)


def _link(source, destination) -> None:
    if os.path.islink(source):
        shutil.copy2(source, destination, follow_symlinks=False)
        return
    try:
        os.link(source, destination)
    except OSError:
        shutil.copy2(source, destination)
