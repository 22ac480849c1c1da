"""The report's statistics match values worked out by hand, and it writes its tables, summary
and figures from result.json files alone, leaving missing conditions out with a note."""
import errno
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from keras_transfer import report
from keras_transfer.report import findings, runs, stats
from report_fixtures import write_protocol, write_run

SPLITS = ("random:0", "random:1", "random:2")
BASE = (0.90, 0.92, 0.94)  # baseB top-1 per split


def write_grid(workdir):
    """Target-B nets on three splits with effects chosen so each statistic is easy to do by hand."""
    for s, (split, base) in enumerate(zip(SPLITS, BASE)):
        write_run(workdir, source="none", target="B", n=0, split=split, top1_final=base,
                  curve=[base - 0.2] * 43 + [base + 0.01])  # 45 evaluations: the best is 1
        for n in range(1, 8):
            selffer = base - 0.002 * n - 0.001 * s  # lost co-adaptation 0.002 n + 0.001 s
            transfer = selffer - 0.01 * n           # specificity 0.01 n
            write_run(workdir, source="B", target="B", n=n, split=split, top1_final=selffer)
            write_run(workdir, source="B", target="B", n=n, finetune=True, split=split,
                      top1_final=base)
            write_run(workdir, source="A", target="B", n=n, split=split, top1_final=transfer)
            write_run(workdir, source="A", target="B", n=n, finetune=True, split=split,
                      top1_final=base + 0.005)      # fine-tuning gain 0.005
            write_run(workdir, source="random", target="B", n=n, split=split,
                      top1_final=0.5 - 0.05 * n)


@pytest.mark.parametrize("count,expected", [
    # Textbook two-sided 95% critical values of Student's t with count - 1 degrees of freedom.
    (2, 12.7062), (3, 4.3027), (5, 2.7764), (10, 2.2622), (30, 2.0452),
])
def test_t_interval_uses_students_t(count, expected):
    values = [0.0, 1.0] * (count // 2) + [0.5] * (count % 2)
    interval = stats.t_interval(values)
    std = pd.Series(values).std()
    assert interval["ci95"] == pytest.approx(expected * std / math.sqrt(count), rel=1e-4)
    assert interval["low"] == pytest.approx(interval["mean"] - interval["ci95"])


def test_t_interval_by_hand():
    interval = stats.t_interval([0.90, 0.92, 0.94])
    # mean 0.92; std sqrt((0.02^2 + 0 + 0.02^2) / 2) = 0.02; CI 4.302653 * 0.02 / sqrt(3).
    assert interval["mean"] == pytest.approx(0.92)
    assert interval["std"] == pytest.approx(0.02)
    assert interval["count"] == 3
    assert interval["ci95"] == pytest.approx(0.0496828, abs=1e-6)
    single = stats.t_interval([0.5, None])
    assert single["count"] == 1 and single["mean"] == 0.5 and math.isnan(single["ci95"])


@pytest.mark.slow
def test_report_writes_csv_summary_decomposition_and_figures(tmp_path):
    workdir = tmp_path / "runs"
    write_grid(workdir)
    result = report.make_report(workdir, reference="yosinski2014")
    out = workdir / "report"
    assert set(result["files"]) == {"results.csv", "findings.csv", "summary.md", "figure2.png",
                                    "figure3.png", "figure2.pdf", "figure3.pdf"}
    table = pd.read_csv(out / "results.csv")
    assert len(table) == 3 * (1 + 5 * 7)
    assert set(table["condition"]) == {"base", "selffer", "selffer+", "transfer", "transfer+",
                                       "random"}
    a3b = table["run_dir"] == "fashion_mnist/random_1/seed0/A3B"
    assert table.loc[a3b, "top1_final"].item() == \
        pytest.approx(0.92 - 0.006 - 0.001 - 0.03)
    assert "flag_lr" in table.columns

    summary = report.summarize(report.load_runs(workdir)[0])
    base = summary[(summary["condition"] == "base")].iloc[0]
    assert base["top1_final_mean"] == pytest.approx(0.92)
    assert base["top1_final_ci95"] == pytest.approx(0.0496828, abs=1e-6)
    assert base["top1_best_fraction_mean"] == pytest.approx(0.93)  # best 1 of 45 evaluations
    a5b = summary[(summary["condition"] == "transfer") & (summary["n"] == 5)].iloc[0]
    # per split: base - 0.01 - 0.001 s - 0.05 -> 0.84, 0.859, 0.878; std 0.019.
    assert a5b["top1_final_mean"] == pytest.approx(0.859)
    assert a5b["top1_final_std"] == pytest.approx(0.019)

    decomposition = report.decomposition(report.load_runs(workdir)[0], "top1_final")
    at3 = decomposition[decomposition["n"] == 3].set_index("effect")
    # 0.006 + mean(0, .001, .002)
    assert at3.loc["lost co-adaptation", "mean"] == pytest.approx(0.007)
    assert at3.loc["lost co-adaptation", "ci95"] == pytest.approx(
        4.302653 * 0.001 / math.sqrt(3), abs=1e-7)
    assert at3.loc["specificity", "mean"] == pytest.approx(0.03)
    assert at3.loc["fine-tuning gain", "mean"] == pytest.approx(0.005)
    assert at3.loc["fine-tuning gain", "count"] == 3

    text = (out / "summary.md").read_text()
    assert "0.9200 ± 0.0497 (3)" in text
    assert "| 3 | +0.0070 [+0.0045, +0.0095] | +0.0300 [+0.0300, +0.0300] | +0.0050 [" in text
    assert "reduced.png: no reduced-volume runs" in text
    for png in ("figure2.png", "figure3.png"):
        data = (out / png).read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 10_000
    # No HParams runs beside the nets' own (training writes each net's hparams there).
    assert not list(out.rglob("events.out.tfevents.*"))
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no staging left behind


def test_each_figure_is_also_a_pdf_and_findings_csv_holds_each_findings_interval(tmp_path):
    write_grid(tmp_path)
    write_run(tmp_path, source="none", target="B", n=0, split="random:0", seed=1,
              top1_final=0.9, examples_per_class=10)  # a reduced-volume base: reduced.png
    made = report.make_report(tmp_path)
    for name in ("figure2", "figure3", "reduced"):
        pdf = made["files"][f"{name}.pdf"]
        assert pdf.read_bytes().startswith(b"%PDF") and pdf.stat().st_size > 5_000
        assert made["files"][f"{name}.png"].read_bytes().startswith(b"\x89PNG")
    assert not [p for p in (tmp_path / "report").iterdir() if p.name.startswith(".")]

    table = pd.read_csv(tmp_path / "report" / "findings.csv")
    one = table.set_index("effect").loc["1. baseB − BnB, mean over n = 3-5"]
    # baseB − BnB = 0.002 n + 0.001 s: over n = 3-5, 0.008 + 0.001 s on splits s = 0, 1, 2.
    half_width = 4.302653 * 0.001 / math.sqrt(3)
    assert one[["mean", "low", "high"]].tolist() == pytest.approx(
        [0.009, 0.009 - half_width, 0.009 + half_width])
    assert (one["count"], one["runs"], one["verdict"]) == (3, 9, "holds")  # splits, BnB nets
    assert list(table["table"]) == ["finding"] * 4 + ["table1"] * 6
    assert table[["mean", "low", "high", "count", "runs"]].notna().all().all()


def test_figure3_is_relative_to_the_base_of_each_pair(tmp_path):
    write_grid(tmp_path)
    lines = report.figure3_series(report.load_runs(tmp_path)[0], "top1_final")
    random_features = lines["random features (RnB)"].set_index("n")
    assert random_features.loc[2, "mean"] == pytest.approx(0.4 - 0.92)
    assert "dissimilar-split transfer (AnB)" not in lines


def write_whole_control(workdir, seeds=(0, 1)):
    """The paper's control on the whole dataset: per seed baseA and RnA = baseA - 0.03 n."""
    for seed in seeds:
        base = 0.80 + 0.01 * seed
        write_run(workdir, source="none", target="A", n=0, split="whole", seed=seed,
                  top1_final=base)
        for n in range(1, 8):
            write_run(workdir, source="random", target="A", n=n, split="whole", seed=seed,
                      top1_final=base - 0.03 * n)


def _section(text, heading):
    return text.split(heading, 1)[1].split("\n## ", 1)[0]


@pytest.mark.slow
def test_whole_dataset_control_is_figure3s_random_line_and_leaves_the_main_series_alone(tmp_path):
    write_grid(tmp_path)
    before = report.make_report(tmp_path, tmp_path / "before")
    main_runs = report.load_runs(tmp_path)[0]
    write_whole_control(tmp_path)
    after = report.make_report(tmp_path, tmp_path / "after")
    df = report.load_runs(tmp_path)[0]
    assert set(df.loc[df["split"] == "whole", "series"]) == {"whole"}

    lines = report.figure3_series(df, "top1_final")
    assert "random features (RnB)" not in lines  # the whole-dataset control takes its place
    whole = lines["random features, whole dataset (RnA)"].set_index("n")
    # RnA minus the baseA of its own seed, over the 2 seeds of the whole dataset.
    assert whole.loc[2, "mean"] == pytest.approx(-0.06) and whole.loc[2, "count"] == 2
    assert whole.loc[7, "mean"] == pytest.approx(-0.21) and whole.loc[7, "runs"] == 2

    # The random-split series answers as before: findings, Table 1, figure 2, the glance table.
    for measure in (findings.measure_findings, findings.measure_table1):
        assert measure(df, "top1_final") == measure(main_runs, "top1_final")
    assert after["files"]["figure2.png"].read_bytes() == before["files"]["figure2.png"].read_bytes()
    text, old = (made["files"]["summary.md"].read_text() for made in (after, before))
    for heading in ("## Findings", "## Table 1", "## At a glance", "## Random splits",
                    "## Decomposition"):
        assert _section(text, heading) == _section(old, heading)
    # The control is reported with its base, in a section of its own.
    whole_section = _section(text, "## Whole dataset")
    assert "| base | 0 | 2 | 0.8050 ± 0.0635 (2)" in whole_section
    assert "| random | 2 | 2 | 0.7450 ± 0.0635 (2)" in whole_section
    assert "| 2 | -0.0600 [-0.0600, -0.0600] | 2 (2) |" in whole_section
    assert "figure3.png" in after["files"]


def test_without_whole_dataset_runs_figure3_keeps_the_rnb_line(tmp_path):
    write_grid(tmp_path)
    write_run(tmp_path, source="none", target="A", n=0, split="whole", top1_final=0.8)
    lines = report.figure3_series(report.load_runs(tmp_path)[0], "top1_final")
    assert "random features (RnB)" in lines
    assert "random features, whole dataset (RnA)" not in lines


@pytest.mark.slow
def test_reference_overlay_changes_figure2(tmp_path):
    write_grid(tmp_path)
    plain = report.make_report(tmp_path, tmp_path / "plain")
    overlay = report.make_report(tmp_path, tmp_path / "overlay", reference="yosinski2014")
    figure2 = overlay["files"]["figure2.png"].read_bytes()
    assert plain["files"]["figure2.png"].read_bytes() != figure2
    assert all(len(v) == 7 for k, v in report.YOSINSKI2014_TOP1.items() if k != "base")
    again = report.make_report(tmp_path, tmp_path / "again", reference="yosinski2014")
    assert again["files"]["figure2.png"].read_bytes() == figure2
    assert again["files"]["figure2.pdf"].read_bytes() == overlay["files"]["figure2.pdf"].read_bytes()


def test_missing_conditions_are_left_out_with_a_note(tmp_path):
    for split, base in zip(SPLITS[:2], BASE):
        write_run(tmp_path, source="none", target="B", n=0, split=split, top1_final=base)
        write_run(tmp_path, source="A", target="B", n=2, split=split, top1_final=base - 0.1)
    result = report.make_report(tmp_path)
    assert "figure2.png" in result["files"] and "figure3.png" not in result["files"]
    text = result["files"]["summary.md"].read_text()
    assert "figure2: no BnB (selffer) runs, left out" in text
    assert "figure3: needs random-features" in text
    assert "## Decomposition" not in text
    assert "decomposition: no specificity (selffer and transfer runs" in text


def test_reduced_series(tmp_path):
    for epc, value in ((10, 0.5), (100, 0.7)):
        for half in "AB":
            write_run(tmp_path, source="none", target=half, n=0, examples_per_class=epc,
                      top1_final=value + (0.02 if half == "B" else 0.0))
    write_run(tmp_path, source="none", target="B", n=0, top1_final=0.9)
    result = report.make_report(tmp_path)
    assert result["files"]["reduced.png"].read_bytes().startswith(b"\x89PNG")
    summary = report.summarize(report.load_runs(tmp_path)[0])
    reduced = summary[summary["series"] == "reduced"].set_index("examples_per_class")
    assert reduced.loc[100, "top1_final_mean"] == pytest.approx(0.71)
    assert reduced.loc[10, "top1_final_runs"] == 2 and reduced.loc[10, "top1_final_count"] == 1


def test_reduced_series_on_the_whole_dataset_is_apart_from_the_halves(tmp_path):
    for epc, value in ((10, 0.5), (100, 0.7)):
        write_run(tmp_path, source="none", target="A", n=0, split="whole",
                  examples_per_class=epc, top1_final=value - 0.1)
        for half in "AB":
            write_run(tmp_path, source="none", target=half, n=0, examples_per_class=epc,
                      top1_final=value)
    write_run(tmp_path, source="none", target="A", n=0, split="whole", top1_final=0.8)
    result = report.make_report(tmp_path)
    assert result["files"]["reduced.png"].read_bytes().startswith(b"\x89PNG")
    summary = report.summarize(report.load_runs(tmp_path)[0])
    reduced = summary[summary["series"] == "reduced"].set_index(["data", "examples_per_class"])
    assert reduced.loc[("whole dataset", 100), "top1_final_mean"] == pytest.approx(0.6)
    assert reduced.loc[("whole dataset", 100), "top1_final_runs"] == 1
    assert reduced.loc[("halves", 100), "top1_final_mean"] == pytest.approx(0.7)
    assert reduced.loc[("halves", 100), "top1_final_runs"] == 2
    text = result["files"]["summary.md"].read_text()
    assert "| base (whole dataset) | 10 | 1 | 0.4000 (1)" in text
    assert "| base (halves) | 10 | 2 | 0.5000 (1)" in text


@pytest.mark.slow
def test_rerun_replaces_the_report(tmp_path):
    write_grid(tmp_path)
    report.make_report(tmp_path)
    write_run(tmp_path, source="none", target="B", n=0, split="random:3", top1_final=0.96)
    report.make_report(tmp_path)
    assert len(pd.read_csv(tmp_path / "report" / "results.csv")) == 3 * 36 + 1


@pytest.mark.parametrize("make", ["missing", "empty", "two_datasets"])
def test_bad_workdir_is_an_error_with_no_output(tmp_path, make):
    workdir = tmp_path / "runs"
    if make == "empty":
        workdir.mkdir()
    if make == "two_datasets":
        write_run(workdir, source="none", target="B", n=0, top1_final=0.9)
        write_run(workdir, source="none", target="B", n=0, top1_final=0.5, dataset="cifar10")
    result = subprocess.run([sys.executable, "-m", "keras_transfer.report", str(workdir)],
                            capture_output=True, text=True)
    assert result.returncode == 2
    message = {"missing": "is not a directory", "empty": "no result.json under",
               "two_datasets": "choose one with --dataset"}[make]
    assert message in result.stderr
    assert not (workdir / "report").exists()


def test_base_of_a_half_no_net_targets_is_left_out_of_the_base_level(tmp_path):
    """The demo trains baseA only as a source: base means baseB there, not the mean of both."""
    write_run(tmp_path, source="none", target="A", n=0, top1_final=0.96)
    write_run(tmp_path, source="none", target="B", n=0, top1_final=0.80)
    write_run(tmp_path, source="A", target="B", n=3, top1_final=0.78)
    info = report.make_report(tmp_path)
    summary = (tmp_path / "report" / "summary.md").read_text()
    assert "| base | 0 | 1 | 0.8000 (1)" in summary
    assert any("baseA" in note for note in info["notes"])
    assert len(pd.read_csv(tmp_path / "report" / "results.csv")) == 3  # the CSV keeps every run
    # With a net targeting A too, baseA is part of the pooled base level again.
    write_run(tmp_path, source="B", target="A", n=3, top1_final=0.9)
    report.make_report(tmp_path)
    assert "| base | 0 | 2 | 0.8800" in (tmp_path / "report" / "summary.md").read_text()


@pytest.mark.slow
def test_summary_includes_the_cka_prediction_once_computed(tmp_path):
    write_grid(tmp_path)
    report.make_report(tmp_path)
    summary = (tmp_path / "report" / "summary.md").read_text()
    assert "analyze predict" in summary and "Spearman" not in summary
    cka = {"rho": -0.75, "p_value": 0.05, "p_value_method": "exact permutation", "points": 7}
    (tmp_path / "report" / "predict.json").write_text(json.dumps({"spearman": cka}))
    report.make_report(tmp_path)
    summary = (tmp_path / "report" / "summary.md").read_text()
    assert "over 7 layers" in summary
    assert "| CKA(baseA, baseB) per layer | rho -0.750 (exact permutation p 0.05) |" in summary
    assert "Depth alone as the baseline predictor: not in this predict.json" in summary
    assert "(predict.png)" in summary
    depth = {**cka, "rho": 0.9, "p_value": 0.01}
    (tmp_path / "report" / "predict.json").write_text(json.dumps(
        {"spearman": cka, "spearman_depth": depth, "better_predictor": "depth"}))
    report.make_report(tmp_path)
    summary = (tmp_path / "report" / "summary.md").read_text()
    assert "| depth alone (layer n) | rho +0.900 (exact permutation p 0.01) |" in summary
    assert "Better predictor of the drop (larger rank correlation in size): **depth**" in summary


@pytest.mark.parametrize("rhos, better", [
    ((-0.93, 0.96), "depth"), ((-0.96, 0.93), "CKA"), ((-0.9642857142857145, 0.9642857142857143),
                                                       "neither"),
    ((None, 0.5), "depth"), ((None, None), "neither"),
])
def test_the_better_predictor_is_the_larger_rank_correlation_in_size(rhos, better):
    correlations = {name: {"rho": rho} for name, rho in zip(("CKA", "depth"), rhos)}
    assert stats.stronger_predictor(correlations) == better


# --------------------------------------------------------------------------------------------
# Reliability: the report folder is swapped whole; bad --out, unreadable records, mixed settings
# --------------------------------------------------------------------------------------------

REPO = Path(__file__).resolve().parents[1]

# Runs the report's command line, SIGKILLing itself right after its `after`-th call of a function
# that moves or removes files (os.replace, os.rename, shutil.rmtree, data_prep.atomic's folder
# exchange where it has one): every point at which a report can be killed while it publishes.
KILL_AFTER = r"""
import os, shutil, signal, sys
from data_prep import atomic
after, calls = int(sys.argv[1]), [0]
if os.environ.get("NO_EXCHANGE"):  # as on a file system without renameat2's exchange (NFS)
    atomic.exchange = lambda a, b: False

def killing(function):
    def wrapped(*args, **kwargs):
        result = function(*args, **kwargs)
        calls[0] += 1
        if calls[0] == after:
            os.kill(os.getpid(), signal.SIGKILL)
        return result
    return wrapped

for module, name in ((os, "replace"), (os, "rename"), (shutil, "rmtree"),
                     (atomic, "exchange")):
    if hasattr(module, name):
        setattr(module, name, killing(getattr(module, name)))
from keras_transfer.report.__main__ import main
sys.exit(main(sys.argv[2:]))
"""


def _files(folder):
    """{relative path: bytes} of every file under `folder`, hidden ones included."""
    return {str(p.relative_to(folder)): p.read_bytes()
            for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def _leftovers(root):
    return sorted(str(p.relative_to(root)) for p in Path(root).rglob(".*")
                  if p.name.startswith((".staging", ".old-")))


def _small_grid(workdir, split="random:0"):
    write_run(workdir, source="none", target="B", n=0, split=split, top1_final=0.9)
    write_run(workdir, source="B", target="B", n=3, split=split, top1_final=0.88)
    write_run(workdir, source="A", target="B", n=3, split=split, top1_final=0.8)


@pytest.mark.slow
@pytest.mark.parametrize("exchange", [True, False])
def test_a_report_killed_while_it_publishes_leaves_the_old_report_or_the_new_one(tmp_path,
                                                                                 exchange):
    """At every point of publishing, a SIGKILL leaves the whole old report folder or the whole
    new one (analyze's predict.json kept in both), and the next report leaves no staging or
    replaced folder behind. Where folders cannot be exchanged in one step, a kill between the
    two renames leaves no report folder, and the next report puts the old one back first."""
    workdir, out = tmp_path / "runs", tmp_path / "runs" / "report"
    _small_grid(workdir)
    report.make_report(workdir)
    (out / "predict.json").write_text("{}")
    old = _files(out)
    saved = tmp_path / "old_report"
    shutil.copytree(out, saved)
    _small_grid(workdir, split="random:1")
    new_dir = tmp_path / "new_report"
    shutil.copytree(saved, new_dir)
    report.make_report(workdir, new_dir)
    new = _files(new_dir)
    assert new != old and new["predict.json"] == b"{}"
    command = [sys.executable, "-c", KILL_AFTER]
    env = {**os.environ, "NO_EXCHANGE": "" if exchange else "1"}
    after, states = 1, []
    while True:
        shutil.rmtree(out)
        shutil.copytree(saved, out)
        proc = subprocess.run([*command, str(after), str(workdir), f"--out={out}",
                               "--no_hparams"], cwd=REPO, env=env, capture_output=True,
                              text=True, timeout=300)
        if proc.returncode == 0:
            break
        assert proc.returncode == -signal.SIGKILL, proc.stderr
        state = _files(out) if out.exists() else None
        allowed = (old, new) if exchange else (old, new, None)
        assert state in allowed, (after, sorted(state or ()))
        states.append("old" if state == old else "new" if state == new else "none")
        # The next report cleans up after the killed one and publishes the new report.
        report.make_report(workdir)
        assert _files(out) == new, after
        assert _leftovers(tmp_path) == [], after
        after += 1
    assert "new" in states
    assert ("none" in states) == (not exchange)
    assert _files(out) == new and _leftovers(tmp_path) == []


def test_the_report_removes_the_staging_folders_of_dead_reports_only(tmp_path):
    workdir = tmp_path / "runs"
    _small_grid(workdir)
    dead = subprocess.Popen(["true"])
    dead.wait()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    host = socket.gethostname()  # staging folders are named .staging-report-<host>-<pid>-...
    try:
        stale = workdir / f".staging-report-{host}-{dead.pid}-x1"
        running = workdir / f".staging-report-{host}-{live.pid}-x2"
        for folder in (stale, running):
            folder.mkdir()
            (folder / "summary.md").write_text("half")
        # A staging folder of a version of the report that kept it inside the report folder.
        (workdir / "report" / ".staging-abc123").mkdir(parents=True)
        report.make_report(workdir)
        assert not stale.exists() and running.exists()
        assert _leftovers(workdir) == [running.name]
        assert (workdir / "report" / "summary.md").is_file()
    finally:
        live.kill()
        live.wait()


def _report_cli(*argv):
    return subprocess.run([sys.executable, "-m", "keras_transfer.report", *map(str, argv)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("paper", [False, True])
def test_out_pointing_at_a_file_is_one_line_and_nothing_is_written(tmp_path, paper):
    workdir = tmp_path / "runs"
    _small_grid(workdir)
    target = tmp_path / "notes.txt"
    target.write_text("mine")
    before = sorted(p.name for p in tmp_path.iterdir())
    proc = _report_cli(*(["--paper"] if paper else [workdir]), f"--out={target}", "--no_hparams")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert f"--out {target} is a file" in lines[0] and "give a folder" in lines[0]
    assert "Traceback" not in proc.stderr
    assert target.read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert not (workdir / "report").exists() and _leftovers(tmp_path) == []


def test_out_holding_other_files_is_refused_not_replaced(tmp_path):
    """The report replaces its folder whole, so --out at a folder of other files (the WORKDIR
    itself, a home folder) is refused, naming what is there."""
    workdir = tmp_path / "runs"
    _small_grid(workdir)
    (workdir / "notes.txt").write_text("mine")
    before = _files(workdir)
    proc = _report_cli(workdir, f"--out={workdir}", "--no_hparams")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "fashion_mnist" in lines[0] and "notes.txt" in lines[0]
    assert "give a new or empty folder" in lines[0]
    assert _files(workdir) == before and _leftovers(tmp_path) == []


def test_when_no_result_can_be_read_the_unreadable_files_are_named_with_the_fix(tmp_path):
    workdir = tmp_path / "runs"
    for n in range(1, 6):
        run_dir = write_run(workdir, source="A", target="B", n=n, top1_final=0.8)
        (run_dir / "result.json").write_text('{"run": "A')  # cut short by a full disk
    malformed = write_run(workdir, source="none", target="B", n=0, top1_final=0.9)
    (malformed / "result.json").write_text(json.dumps({"run": "baseB", "history": "none"}))
    proc = _report_cli(workdir, "--no_hparams")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    message = lines[0]
    assert "none of the 6 result.json files under" in message
    assert "fashion_mnist/random_0/seed0/A1B/result.json" in message
    assert "and 3 more" in message
    assert "--overwrite" in message  # the fix: train them again
    assert not (workdir / "report").exists()


def test_a_net_trained_with_other_result_flags_is_named_in_the_summary_and_printout(
        tmp_path, capsys):
    workdir = tmp_path / "runs"
    for split in ("random:0", "random:1"):
        _small_grid(workdir, split)
    # By hand, with another learning rate; and one whose config.json does not record --steps.
    write_run(workdir, source="A", target="B", n=3, split="random:1", top1_final=0.7,
              flags={"lr": 0.02})
    write_run(workdir, source="B", target="B", n=3, split="random:1", top1_final=0.88,
              flags={"steps": None})
    assert report.main([str(workdir), "--no_hparams"]) == 0
    expected = ("random_1/seed0/A3B trained with --lr=0.02, the other 5 nets of the main series "
                "with --lr=0.01")
    printed = capsys.readouterr().out
    assert expected in printed
    summary = (workdir / "report" / "summary.md").read_text()
    assert expected in summary
    assert "averaged in" in summary
    assert "--steps" not in summary.split("## Findings")[0]
    # The net is still in the table and the means.
    results = pd.read_csv(workdir / "report" / "results.csv")
    assert len(results) == 6

    # Once it is trained again with the grid's settings the note is gone.
    write_run(workdir, source="A", target="B", n=3, split="random:1", top1_final=0.7)
    assert report.main([str(workdir), "--no_hparams"]) == 0
    assert "trained with" not in capsys.readouterr().out
    assert "trained with" not in (workdir / "report" / "summary.md").read_text()


def test_a_full_disk_is_one_line_and_leaves_the_old_report(tmp_path, monkeypatch):
    workdir = tmp_path / "runs"
    _small_grid(workdir)
    report.make_report(workdir)
    before = _files(workdir / "report")
    _small_grid(workdir, split="random:1")

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(self))
    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(report.ReportError) as error:
        report.make_report(workdir)
    message = str(error.value)
    assert "No space left on device" in message and "nothing was changed" in message
    assert "\n" not in message
    assert _files(workdir / "report") == before and _leftovers(tmp_path) == []


def test_settings_without_a_usual_value_are_named_as_a_mix(tmp_path):
    write_run(tmp_path, source="none", target="B", n=0, top1_final=0.9, flags={"steps": 200})
    write_run(tmp_path, source="A", target="B", n=3, top1_final=0.8)
    write_run(tmp_path, source="none", target="B", n=0, split="random:1", top1_final=0.9,
              flags={"lr": 0.02, "steps": 200})
    write_run(tmp_path, source="A", target="B", n=3, split="random:1", top1_final=0.8,
              flags={"lr": 0.03})
    lines = runs.settings_differences(report.load_runs(tmp_path)[0])
    assert lines == [
        "the main series mixes --steps=100 (random_0/seed0/A3B, random_1/seed0/A3B); "
        "--steps=200 (random_0/seed0/baseB, random_1/seed0/baseB)",
        "random_1/seed0/baseB trained with --lr=0.02, 2 of the other 3 nets of the main series "
        "with --lr=0.01",
        "random_1/seed0/A3B trained with --lr=0.03, 2 of the other 3 nets of the main series "
        "with --lr=0.01"]


@pytest.mark.parametrize("stage", ["loading", "writing"])
def test_ctrl_c_is_one_line_exit_130_and_leaves_the_old_report(tmp_path, stage):
    """Ctrl-C while the report's libraries load, or while it renders into its staging folder:
    one line, no traceback, exit 130, the old report as it was and no staging folder left."""
    from data_prep_helpers import loading, start_cli, wait_until
    from keras_transfer.report.__main__ import INTERRUPTED

    workdir = tmp_path / "runs"
    write_protocol(workdir, co_adaptation=0.02, recovery=0.01, specificity_slope=0.005,
                   beyond_training=0.01, splits=2)
    assert _report_cli(workdir).returncode == 0
    old = {p.name: p.read_bytes() for p in (workdir / "report").iterdir()}
    run = start_cli(workdir, module="keras_transfer.report")
    if stage == "loading":
        wait_until(lambda: loading(run.pid, "pandas"), run, what="pandas loading")
    else:
        wait_until(lambda: any(workdir.glob(".staging-report-*")), run, what="the staging folder")
    os.killpg(run.pid, signal.SIGINT)
    _, err = run.communicate(timeout=120)
    assert run.returncode == 130, err
    assert err.splitlines() == [INTERRUPTED], err
    assert {p.name: p.read_bytes() for p in (workdir / "report").iterdir()} == old
    assert sorted(p.name for p in workdir.iterdir()) == ["fashion_mnist", "report"]


def test_the_printout_and_summary_count_the_runs_alike(tmp_path, capsys):
    """baseA of a target-B grid is read but left out of the tables: the printout counts the
    runs summary.md counts, and says how many were read."""
    from keras_transfer.report.__main__ import main

    workdir = tmp_path / "runs"
    write_run(workdir, source="none", target="A", n=0, top1_final=0.85)
    _small_grid(workdir)
    assert main([str(workdir)]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == ("[report] 3 runs (4 read; base nets of a half no net targets and the "
                          "convergence control's longer twins are not among them)")
    summary = (workdir / "report" / "summary.md").read_text()
    assert "\n3 runs; dataset" in summary
    (workdir / "fashion_mnist" / "random_0" / "seed0" / "baseA" / "result.json").unlink()
    assert main([str(workdir)]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "[report] 3 runs"
    assert "\n3 runs; dataset" in (workdir / "report" / "summary.md").read_text()
