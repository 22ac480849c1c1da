"""The report on networks other than the paper's: n ranges over the network's own k cut points,
the paper's values are shown only where n means its layers, and one report is on one network."""
import json
import re
import subprocess
import sys

import pandas as pd
import pytest

from keras_transfer import models, report
from keras_transfer.outputs import pyplot
from keras_transfer.report import findings
from keras_transfer.report.figures import n_axis
from report_fixtures import recorded_layers, write_protocol, write_run

EFFECTS = {"co_adaptation": 0.02, "recovery": 0.03, "specificity_slope": 0.01,
           "beyond_training": 0.015}


def test_ranges_of_n_follow_the_cut_points():
    assert findings.middle_n(7) == (3, 4, 5)  # the paper's
    assert findings.middle_n(5) == (3,)
    assert findings.middle_n(4) == (2,)
    names = [d.name for d in findings.table1(5)]
    assert names == ["AnB+ − baseB, n = 1-5", "AnB+ − BnB+, n = 1-5",
                     "AnB+ − baseB, n = 3-5", "AnB+ − BnB+, n = 3-5"]  # 3-k = (k-2)-k: once
    assert [d.name for d in findings.table1(7)][::2] == [
        "AnB+ − baseB, n = 1-7", "AnB+ − baseB, n = 3-7", "AnB+ − baseB, n = 5-7"]


def test_the_papers_network_keeps_the_papers_ranges_and_values(tmp_path):
    write_protocol(tmp_path, **EFFECTS)
    df = report.load_runs(tmp_path)[0]
    rows = findings.measure_findings(df, "top1_final")
    assert [r["effect"] for r in rows] == [
        "baseB − BnB, mean over n = 3-5", "BnB+ − BnB, mean over n = 3-5",
        "slope of BnB − AnB over n = 1-7, per layer", "AnB+ − BnB+, mean over n = 1-7"]
    # The paper's figure 2 means, pooled over halves against its base 0.625.
    assert [f"{r['paper_figure2']:+.4f}" for r in rows] == [
        "+0.0183", "+0.0233", "+0.0119", "+0.0156"]
    table1 = findings.measure_table1(df, "top1_final")
    assert [f"{r['paper_figure2']:+.4f}" for r in table1] == [
        "+0.0170", "+0.0156", "+0.0192", "+0.0152", "+0.0210", "+0.0177"]
    # The authors' nets through the same estimator: counts of their splits behind each.
    assert [r["paper"]["count"] for r in rows] == [4, 2, 4, 0]
    assert [r["paper"]["count"] for r in table1] == [2, 0, 2, 0, 1, 0]
    text = report.summary_markdown(tmp_path, df, report.summarize(df), [], "top1_final")
    assert ("Cut points of small, n = 1-7: conv1, conv2, conv3, conv4, conv5, fc6, fc7"
            in text)
    assert "n/a" not in text


@pytest.mark.slow
def test_a_network_of_five_cut_points(tmp_path):
    write_protocol(tmp_path, **EFFECTS, model="resnet50", middle=(3,))
    for s in range(4):  # random features: figure 3's line
        for n in range(1, 6):
            write_run(tmp_path, source="random", target="B", n=n, split=f"random:{s}",
                      model="resnet50", top1_final=0.5)
    made = report.make_report(tmp_path, reference="yosinski2014")
    assert {"figure2.png", "figure3.png", "summary.md"} <= set(made["files"])
    assert made["files"]["figure2.png"].read_bytes().startswith(b"\x89PNG")
    assert any("figure2: the paper's values are per CaffeNet layer" in note
               for note in made["notes"])

    df = report.load_runs(tmp_path)[0]
    rows = {r["finding"]: r for r in findings.measure_findings(df, "top1_final")}
    assert rows[1]["effect"] == "baseB − BnB, mean over n = 3"
    assert rows[3]["effect"] == "slope of BnB − AnB over n = 1-5, per cut point"
    assert rows[4]["effect"] == "AnB+ − BnB+, mean over n = 1-5"
    for number, effect in zip((1, 2, 3, 4), EFFECTS.values()):
        assert rows[number]["mean"] == pytest.approx(effect, abs=1e-9), number
        assert rows[number]["paper"] is None and rows[number]["paper_figure2"] is None
    # AnB+ and BnB+ on half B at n = 1..5 on 4 splits; BnA+ has no AnA+ on half A.
    assert rows[4]["runs"] == 4 * 5 * 2
    table1 = findings.measure_table1(df, "top1_final")
    assert [r["difference"] for r in table1][::2] == [
        "AnB+ − baseB, n = 1-5", "AnB+ − baseB, n = 3-5"]
    assert all(r["paper"] is None and r["paper_figure2"] is None for r in table1)
    # AnB+ − BnB+ over n = 3-5: the 0.015 beyond training at every n.
    assert table1[3]["mean"] == pytest.approx(0.015)

    text = made["files"]["summary.md"].read_text()
    assert "model resnet50;" in text
    assert "Cut points of resnet50, n = 1-5: conv1, conv2, conv3, conv4, conv5" in text
    assert "The paper column is n/a" in text
    # The paper's columns of the findings and of Table 1: no value of another network.
    rows_of = {"## Findings": (("| 1. ", "| 2. ", "| 3. ", "| 4. "), 4),
               "## Table 1": (("| AnB+ − ",), 4)}
    for heading, (starts, count) in rows_of.items():
        section = text.split(heading, 1)[1].split("\n## ", 1)[0]
        lines = section.splitlines()
        header = next(line for line in lines if line.startswith("| finding |")
                      or line.startswith("| difference |")).strip("| ").split(" | ")
        paper = [i for i, name in enumerate(header) if name.startswith("paper")]
        assert paper, heading
        cells = [[line.strip("| ").split(" | ")[i] for i in paper]
                 for line in lines if line.startswith(starts)]
        assert cells == [["n/a"] * len(paper)] * count, heading
    glance = text.split("## At a glance", 1)[1].split("\n## ", 1)[0]
    assert [line.split(" | ")[0] for line in glance.splitlines() if line[:3] in
            {f"| {n}" for n in range(10)}] == ["| 1", "| 2", "| 3", "| 4", "| 5"]


# Networks of the paper's k = 7 whose cut points are not its layers (mobilenetv2).
SEVEN_OTHER_CUT_POINTS = [name for name, arch in models.ARCHITECTURES.items()
                          if arch.max_n == 7 and not arch.paper_layers]


@pytest.mark.skipif(not SEVEN_OTHER_CUT_POINTS, reason="no such network is declared")
def test_a_network_of_seven_cut_points_that_are_not_the_papers_layers(tmp_path):
    write_protocol(tmp_path, **EFFECTS, splits=2, model=SEVEN_OTHER_CUT_POINTS[0])
    df = report.load_runs(tmp_path)[0]
    rows = findings.measure_findings(df, "top1_final")
    assert rows[0]["effect"] == "baseB − BnB, mean over n = 3-5"
    assert all(r["paper"] is None and r["paper_figure2"] is None
               for r in rows + findings.measure_table1(df, "top1_final"))


def _mixed(workdir):
    write_run(workdir, source="none", target="B", n=0, top1_final=0.9)
    write_run(workdir, source="A", target="B", n=7, top1_final=0.8)
    write_run(workdir, source="none", target="B", n=0, top1_final=0.7, model="resnet50",
              split="random:1")
    write_run(workdir, source="A", target="B", n=5, top1_final=0.6, model="resnet50",
              split="random:1")


@pytest.mark.slow
def test_runs_of_several_networks_are_refused_until_one_is_chosen(tmp_path):
    workdir = tmp_path / "runs"
    _mixed(workdir)
    command = [sys.executable, "-m", "keras_transfer.report", str(workdir), "--no_hparams"]
    refused = subprocess.run(command, capture_output=True, text=True)
    assert refused.returncode == 2
    assert "several models (resnet50, small)" in refused.stderr
    assert "--model=NAME" in refused.stderr
    assert not (workdir / "report").exists()
    with pytest.raises(report.ReportError, match="no runs of model 'caffenet'"):
        report.make_report(workdir, model="caffenet")
    assert not (workdir / "report").exists()
    chosen = subprocess.run(command + ["--model=resnet50"], capture_output=True, text=True)
    assert chosen.returncode == 0, chosen.stderr
    table = pd.read_csv(workdir / "report" / "results.csv")
    assert set(table["model"]) == {"resnet50"} and set(table["run"]) == {"baseB", "A5B"}


def test_a_diverged_net_of_another_network_is_left_out(tmp_path):
    _mixed(tmp_path)
    for model, name in (("resnet50", "A4B"), ("small", "A6B")):
        run_dir = tmp_path / "fashion_mnist" / "random_9" / "seed0" / name
        run_dir.mkdir(parents=True)
        (run_dir / "config.json").write_text(json.dumps({"model": model}))
        (run_dir / "diverged.json").write_text(json.dumps({"step": 5}))
    text = report.make_report(tmp_path, model="small")[
        "files"]["summary.md"].read_text()
    assert "random_9/seed0/A6B: by step 5" in text and "A4B" not in text


@pytest.mark.parametrize("model, layers, n, message", [
    ("resnet50", recorded_layers("resnet50"), 6, "n=6 is out of range: .* to 5 for resnet50"),
    ("small", recorded_layers("small"), 8, "n=8 is out of range: .* to 7 for small"),
    ("vgg", [], 3, "its layers do not name the cut points of its network"),
    ("vgg", [{"origin": "new"}], 3, "its layers do not name the cut points of its network"),
    (None, recorded_layers("small"), 3, "model is None"),
])
def test_a_run_beyond_its_networks_cut_points_is_malformed(tmp_path, model, layers, n, message):
    write_run(tmp_path, source="none", target="B", n=0, top1_final=0.9)
    bad = write_run(tmp_path, source="A", target="B", n=n, top1_final=0.8)
    result = {**json.loads((bad / "result.json").read_text()), "model": model, "layers": layers}
    (bad / "result.json").write_text(json.dumps(result))
    made = report.make_report(tmp_path)
    assert made["runs"] == 1
    assert any(re.search(f"skipped malformed {re.escape(str(bad / 'result.json'))}: {message}",
                         note) for note in made["notes"]), made["notes"]


def test_what_n_counts_comes_from_the_records(tmp_path):
    """A network the model registry does not know is reported from what its result.json files
    record: its cut points (`layers`) and whether they are the paper's layers."""
    layers = [{"name": name} for name in ("stage1", "stage2", "stage3", "head")]
    for source, n in (("none", 0), ("A", 1), ("A", 3)):
        run_dir = write_run(tmp_path, source=source, target="B", n=n, top1_final=0.9)
        result = json.loads((run_dir / "result.json").read_text())
        result.update(model="unregistered", layers=layers, paper_layers=False)
        (run_dir / "result.json").write_text(json.dumps(result))
    arch = report.runs.architecture(report.load_runs(tmp_path)[0])
    assert (arch.name, arch.cut_names, arch.max_n, arch.paper_layers) == (
        "unregistered", ("stage1", "stage2", "stage3"), 3, False)


@pytest.mark.parametrize("cut_names, paper_layers", [
    (("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7"), True),
    (("stem", "block1", "block2"), False),
])
def test_records_written_before_paper_layers_read_it_from_their_cut_points(
        tmp_path, cut_names, paper_layers):
    run_dir = write_run(tmp_path, source="none", target="B", n=0, top1_final=0.9)
    result = json.loads((run_dir / "result.json").read_text())
    del result["paper_layers"]
    result["layers"] = [{"name": name} for name in (*cut_names, "fc8")]
    (run_dir / "result.json").write_text(json.dumps(result))
    arch = report.runs.architecture(report.load_runs(tmp_path)[0])
    assert arch.cut_names == cut_names and arch.paper_layers is paper_layers


@pytest.mark.parametrize("model, label", [("resnet50", "cut point n"), ("small", "layer n")])
def test_the_x_axis_names_the_cut_points(model, label):
    plt = pyplot()
    fig, ax = plt.subplots()
    n_axis(ax, models.get(model), 0, "")
    names = models.get(model).cut_names
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0\nbase"] + [
        f"{n}\n{name}" for n, name in enumerate(names, start=1)]
    assert ax.get_xlabel() == label
    plt.close(fig)
