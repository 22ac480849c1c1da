"""The whole report from a WORKDIR: every file rendered into a staging folder first and then
moved into place, so a failed report leaves the previous one untouched.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from data_prep import atomic
from keras_transfer import metrics
from keras_transfer.report.figures import figure2, figure3, reduced_figure
from keras_transfer.report.findings import REFERENCES
from keras_transfer.report.hparams import write_hparams
from keras_transfer.report.runs import (ReportError, architecture, drop_unpaired_bases,
                                        load_diverged, load_runs)
from keras_transfer.report.summary import prediction_section, summary_markdown
from keras_transfer.report.tables import decomposition_notes, summarize


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
        if "main" in set(df["series"]):
            figure_notes = figure2(df, staging / "figure2.png", metric,
                                   REFERENCES[reference] if reference else None)
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
        (staging / "summary.md").write_text(
            summary_markdown(workdir, df, summary, all_notes, metric, diverged)
            + prediction_section(out / "predict.json"))
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
