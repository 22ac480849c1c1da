"""The authors' per-net results shipped in keras_transfer/report/data: what nets there are, that
they give the paper's figure 2 means and the notebook's printed values, and that the report's
findings code runs on them unchanged."""
import gzip
import subprocess
import sys

import pandas as pd
import pytest

from keras_transfer.report import findings, paper_nets, tables


@pytest.fixture(scope="module")
def nets():
    return paper_nets.load()


@pytest.fixture(scope="module")
def main(nets):
    return nets[nets["series"] == "main"]


def test_the_csv_lists_every_directory_and_load_keeps_those_with_logs(nets):
    raw = pd.read_csv(paper_nets.CSV)
    assert len(raw) == 170 and raw["paper_dir"].is_unique
    unlogged = raw[raw["evaluations"] == 0]["paper_dir"].str.replace("results/", "")
    assert len(unlogged) == 22
    assert unlogged.str.startswith(("transfer-ft0B0A", "transfer-ft1B1A", "transfer-ft1A1A",
                                    "transfer-ft1A1B")).all()
    assert len(nets) == 148
    assert nets.groupby("series").size().to_dict() == {"main": 112, "dissimilar": 16,
                                                      "whole": 8, "reduced": 12}


def test_counts_per_condition_target_and_n(main):
    counts = main.groupby(["condition", "target", "n"]).size()
    assert counts["base"].to_dict() == {("A", 0): 4, ("B", 0): 4}
    for condition, target in (("selffer", "A"), ("transfer", "A"), ("transfer", "B")):
        assert counts[condition][target].to_dict() == {n: 4 for n in range(1, 8)}
    # Fine-tuned nets: splits 0 and 1 only, selffer+ on A, transfer+ on B (the logged ones).
    assert counts["selffer+"].to_dict() == {("A", n): c for n, c in
                                            zip(range(1, 8), (1, 1, 2, 1, 2, 2, 1))}
    assert counts["transfer+"].to_dict() == {("B", n): c for n, c in
                                             zip(range(1, 8), (1, 2, 2, 2, 1, 1, 1))}
    fine_tuned = main[main["finetune"]]
    assert set(fine_tuned["split"]) == {"random:0", "random:1"}
    assert (main["steps"] == 450000).all() and main["converged"].all()


def test_the_commit_is_the_one_the_notes_name():
    assert paper_nets.COMMIT in paper_nets.CSV.with_suffix(".md").read_text()


def test_means_reproduce_the_papers_figure2_within_rounding(main):
    paper = findings.YOSINSKI2014_TOP1
    base = main[main["condition"] == "base"]["top1_best10_mean"].mean()
    assert base == pytest.approx(paper["base"], abs=5.5e-4)
    for condition in ("selffer", "transfer", "selffer+", "transfer+"):
        means = main[main["condition"] == condition].groupby("n")["top1_best10_mean"].mean()
        assert means.to_numpy() == pytest.approx(paper[condition], abs=5.5e-4), condition


def test_values_the_authors_notebook_printed(nets):
    """plots/transfer_plots.ipynb's cached outputs (natman and reduced-volume nets)."""
    best10 = nets.set_index("paper_dir")["top1_best10_mean"]
    printed = {"halfnatmanB": 0.537244, "transfernatmanAB_1_1": 0.5392359,
               "transfernatmanAB_1_7": 0.291372, "halfnatmanA": 0.6533991,
               "transfernatmanBA_1_4": 0.5823855, "reduced-1300": 0.5517618,
               "reduced-0250": 0.384284, "reduced-0001": 0.003796}
    for name, value in printed.items():
        assert best10[f"results/{name}"] == pytest.approx(value, abs=1e-7), name


def test_findings_and_table1_run_on_the_table(nets):
    rows = {r["finding"]: r for r in findings.measure_findings(nets, "top1_best10_mean")}
    assert [rows[k]["count"] for k in (1, 2, 3, 4)] == [4, 2, 4, 0]  # splits behind each
    assert rows[3]["verdict"] == "holds"
    assert rows[3]["within"] == "AnA − BnA on half A (4)"  # their selffer nets are all on A
    # Fine-tuned selffer nets on half A only, fine-tuned transfer nets on half B only: no half
    # compares AnB+ with BnB+ (the figure's +0.0156 pools the two halves).
    assert rows[4]["verdict"] == "not computable: no target half has both AnB+ and BnB+"
    table1 = {r["difference"]: r for r in findings.measure_table1(nets, "top1_best10_mean")}
    assert table1["AnB+ − baseB, n = 1-7"]["mean"] == pytest.approx(0.0095, abs=1e-4)
    assert table1["AnB+ − baseB, n = 1-7"]["within"] == "AnB+ − baseB on half B (2)"
    # Across halves, each net against its own base, AnB+ is no better than BnB+.
    across = findings.measure_across_halves(nets, "top1_best10_mean")
    assert across[1]["difference"] == "AnB+ − BnB+, n = 1-7"
    assert across[1]["mean"] == pytest.approx(-0.0003, abs=1e-4)
    assert across[1]["low"] < 0 < across[1]["high"]
    summary = tables.summarize(nets)
    assert set(summary["series"]) == {"main", "dissimilar", "whole", "reduced"}


def _log(lines):
    return gzip.compress("".join(f"{line}\n" for line in lines).encode())


def test_a_resumed_iteration_keeps_its_latest_evaluation():
    first = _log(["I0101 00:00:00.0 1 solver.cpp:87] Iteration 1000, Testing net",
                  "I0101 00:01:00.0 1 solver.cpp:114] Test score #0: 0.5",
                  "I0101 00:01:00.0 1 solver.cpp:114] Test score #1: 2.0"])
    later = _log(["I0102 00:00:00.0 1 solver.cpp:87] Iteration 1000, Testing net",
                  "I0102 00:01:00.0 1 solver.cpp:114] Test score #0: 0.6",
                  "I0102 00:01:00.0 1 solver.cpp:114] Test score #1: 1.9",
                  "I0102 00:09:00.0 1 solver.cpp:87] Iteration 2000, Testing net",
                  "I0102 00:09:30.0 1 solver.cpp:65] Iteration 2000, loss = 1.0",
                  "I0102 00:10:00.0 1 solver.cpp:114] Test score #0: 0.9"])
    # Order of the files does not matter; a test block cut off by another line is dropped.
    assert paper_nets._evaluations([later, first]) == {1000: 0.6}


def test_n_and_finetuning_from_the_prototxt():
    def proto(layers):
        return "".join(f'layers {{ layer {{ name: "{name}" blobs_lr: {lr} }} }}'
                       for name, lr in layers)
    frozen = proto([("conv1", 0.0), ("conv2", 0.0), ("conv3-new", 1.0), ("fc8-new", 1.0)])
    tuned = proto([("conv1", 1.0), ("conv2", 1.0), ("conv3-new", 1.0), ("fc8-new", 1.0)])
    assert paper_nets._n_and_finetune(frozen, has_base=True) == (2, False)
    assert paper_nets._n_and_finetune(tuned, has_base=True) == (2, True)
    assert paper_nets._n_and_finetune(proto([("conv1", 1.0), ("fc8", 1.0)]), False) == (0, False)
    assert paper_nets._n_and_finetune(proto([("conv1", 0.0), ("fc8", 1.0)]), False) == (1, False)


@pytest.mark.slow
def test_the_paper_command_reports_the_authors_nets(tmp_path):
    out = tmp_path / "paper"
    command = [sys.executable, "-m", "keras_transfer.report", "--paper", f"--out={out}",
               "--no_hparams"]
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    figures = {f"{name}.{kind}" for name in ("figure2", "figure3", "reduced")
               for kind in ("png", "pdf")}
    assert {p.name for p in out.iterdir()} == {"results.csv", "findings.csv", "summary.md",
                                               *figures}
    text = (out / "summary.md").read_text()
    assert paper_nets.REPOSITORY in text and paper_nets.COMMIT in text
    assert ("Fine-tuned nets exist only for random splits 0 and 1 of the 4, and only on one "
            "target half each: 10 AnA+ nets on half A and 10 AnB+ nets on half B") in text
    assert "- finding 4 (AnB+ − BnB+, mean over n = 1-7): not computable" in text
    assert "*paper's nets*" not in text  # they are the measured column here
    assert ("| AnB+ − BnB+, n = 1-7 | AnB+/BnA+ − BnB+/AnA+ across halves (2) | -0.0003 ["
            in text)
    table = pd.read_csv(out / "findings.csv")
    assert set(table["metric"]) == {"top1_best10_mean"}
    assert len(pd.read_csv(out / "results.csv")) == 148


def test_the_authors_nets_are_hparams_runs_of_their_own(tmp_path):
    """They have no TensorBoard events of their own: each gets a run with the hparams and
    final metrics training writes for a net."""
    from keras_transfer import naming
    from keras_transfer.report.hparams import write_hparams
    from train_helpers import hparams_written

    nets = paper_nets.load().head(3)
    write_hparams(nets, tmp_path)
    runs = {path.parent for path in tmp_path.rglob("events.out.tfevents.*")}
    assert runs == {tmp_path / run_dir for run_dir in nets["run_dir"]}
    for _, net in nets.iterrows():
        [(trial, values)] = hparams_written(tmp_path / net["run_dir"])
        assert trial == net["run_dir"] and set(values) == set(naming.HPARAMS) - {"stretch"}
        assert (values["n"], values["finetune"], values["examples_per_class"]) == (
            net["n"], net["finetune"], 0)


@pytest.mark.parametrize("argv, message", [
    (["--paper", "runs", "--out=x"], "give no WORKDIR"),
    (["--paper"], "--paper needs --out"),
    ([], "give the WORKDIR of a grid, or --paper"),
])
def test_the_paper_command_refuses_what_it_cannot_use(tmp_path, argv, message):
    done = subprocess.run([sys.executable, "-m", "keras_transfer.report", *argv],
                          capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 2 and message in done.stderr
    assert list(tmp_path.iterdir()) == []
