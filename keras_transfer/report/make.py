"""The whole report from a WORKDIR, or from the authors' own nets: every file rendered into a
staging folder first and then moved into place, so a failed report leaves the previous one
untouched.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pandas as pd

from data_prep import atomic
from keras_transfer import metrics
from keras_transfer.report import convergence, paper_nets
from keras_transfer.report.figures import figure2, figure3, reduced_figure
from keras_transfer.report.findings import PAPER_METRIC, REFERENCES
from keras_transfer.report.hparams import write_hparams
from keras_transfer.report.runs import (NETWORK_COLUMNS, ReportError, architecture,
                                        drop_unpaired_bases, load_diverged, load_runs)
from keras_transfer.report.summary import prediction_section, summary_markdown
from keras_transfer.report.tables import decomposition_notes, findings_table, summarize


def make_report(workdir, out=None, *, reference: str | None = None, dataset: str | None = None,
                model: str | None = None, metric: str = metrics.HEADLINE,
                hparams: bool = True) -> dict:
    """Writes the report's files into `out` (default WORKDIR/report) and returns {name: path}."""
    workdir = Path(workdir)
    out = Path(out) if out is not None else workdir / "report"
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
                         hparams=hparams, diverged=diverged,
                         prediction=out / "predict.json")


def make_paper_report(out, *, reference: str | None = "yosinski2014",
                      metric: str = PAPER_METRIC, hparams: bool = True) -> dict:
    """The same report of the authors' nets (paper_nets.load(), from the shipped CSV; no
    network access), with their metric by default and figure 2 overlaid with the paper's."""
    df = paper_nets.load()
    short = df[df["evaluations"] < metrics.MIN_EVALUATIONS_FOR_BEST10]
    notes = [f"{r['paper_dir']}: its log holds {int(r['evaluations'])} evaluations "
             f"(up to iteration {int(r['steps'])}); its {metric} is over those"
             for _, r in short.iterrows()]
    return _write_report(df, notes, Path(out), title=f"the authors' nets, {paper_nets.REPOSITORY}",
                         metric=metric, reference=reference, hparams=hparams, paper=True)


def _write_report(df: pd.DataFrame, notes: list[str], out: Path, *, title, metric: str,
                  reference: str | None, hparams: bool, diverged=(), prediction=None,
                  paper: bool = False) -> dict:
    if df[metric].isna().all():
        notes.append(f"no run has {metric}; figures use top1_final")
        metric = "top1_final"
    all_runs = df  # results.csv and the convergence control; the rest leaves the longer twins out
    df = drop_unpaired_bases(convergence.without_longer(df), notes)
    summary = summarize(df)
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out, prefix=".staging-"))
    written = {}
    try:
        all_runs.drop(columns=NETWORK_COLUMNS).to_csv(staging / "results.csv", index=False)
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
            figure_notes.append("figure3: needs random-features (RnA on the whole dataset, or "
                                "RnB) or dissimilar-split runs; none yet")
        if "reduced" in set(df["series"]):
            reduced_figure(df, staging / "reduced.png", metric)
        else:
            figure_notes.append("reduced.png: no reduced-volume runs (--experiments=reduced)")
        all_notes = notes + decomposition_notes(df) + figure_notes
        text = summary_markdown(title, df, summary, all_notes, metric, diverged, paper=paper,
                                runs=all_runs)
        if prediction is not None:
            text += "\n" + prediction_section(prediction)  # a blank line before its heading
        (staging / "summary.md").write_text(text)
        if hparams:
            write_hparams(df, staging / "hparams")
        for item in sorted(staging.iterdir()):
            target = out / item.name
            if item.is_dir():
                atomic.replace_dir(item, target)
            else:
                os.replace(item, target)
            written[item.name] = target
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {"files": written, "notes": all_notes, "runs": len(all_runs)}
