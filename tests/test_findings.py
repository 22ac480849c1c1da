"""The paper's findings, Table 1 and the headline metric on fixture grids whose answers are known:
each finding built to hold, to be absent and to be reversed, with splits as the independent unit."""
import subprocess
import sys

import pytest

from keras_transfer import metrics, report
from keras_transfer.report import findings
from report_fixtures import SPLIT_NOISE, write_protocol, write_run


def measured(workdir):
    df = report.load_runs(workdir)[0]
    return {row["finding"]: row for row in findings.measure_findings(df, "top1_final")}


@pytest.mark.parametrize("sign,verdict", [(1, "holds"), (0, "not detected"), (-1, "reversed")])
def test_each_finding_holds_is_absent_or_reversed_as_built(tmp_path, sign, verdict):
    write_protocol(tmp_path, co_adaptation=0.02 * sign, recovery=0.02 * sign,
                   specificity_slope=0.01 * sign, beyond_training=0.02 * sign)
    rows = measured(tmp_path)
    expected = {1: 0.02, 2: 0.02, 3: 0.01, 4: 0.02}
    for number, row in rows.items():
        assert row["mean"] == pytest.approx(sign * expected[number], abs=1e-9), number
        assert row["count"] == 4
        assert row["verdict"] == verdict, (number, row)
        assert row["low"] < row["mean"] < row["high"]


def test_the_interval_is_over_splits_not_nets(tmp_path):
    """Nets of one split share their base nets: three seeds per split are still four splits."""
    write_protocol(tmp_path / "one", co_adaptation=0.02, recovery=0.0, specificity_slope=0.0,
                   beyond_training=0.0)
    write_protocol(tmp_path / "three", co_adaptation=0.02, recovery=0.0, specificity_slope=0.0,
                   beyond_training=0.0, seeds=(0, 1, 2))
    one, three = measured(tmp_path / "one")[1], measured(tmp_path / "three")[1]
    assert three["count"] == one["count"] == 4
    assert three["runs"] == 3 * one["runs"]
    assert three["ci95"] == pytest.approx(one["ci95"])
    # t with 3 degrees of freedom over the 4 split values 0.02 + noise.
    values = [0.02 + k * 0.002 for k in SPLIT_NOISE]
    half = 3.182446 * (sum((v - 0.02) ** 2 for v in values) / 3) ** 0.5 / 2
    assert one["ci95"] == pytest.approx(half, rel=1e-5)


def test_one_split_one_seed_is_not_tested(tmp_path):
    write_protocol(tmp_path, co_adaptation=0.02, recovery=0.02, specificity_slope=0.01,
                   beyond_training=0.02, splits=1)
    assert {row["verdict"] for row in measured(tmp_path).values()} == {
        "not tested (needs 2+ splits or seeds)"}


def test_table1_names_both_controls_and_pools_ranges_of_n(tmp_path):
    write_protocol(tmp_path, co_adaptation=0.02, recovery=0.0, specificity_slope=0.0,
                   beyond_training=0.01, noise=0.0)
    df = report.load_runs(tmp_path)[0]
    rows = {row["difference"]: row for row in findings.measure_table1(df, "top1_final")}
    # AnB+ relative to base: 0.01 beyond BnB+, and BnB+ sits at base (recovery of the dip).
    assert rows["AnB+ − BnB+, n = 1-7"]["mean"] == pytest.approx(0.01)
    assert rows["AnB+ − baseB, n = 5-7"]["mean"] == pytest.approx(0.01 + (-0.02 + 0.0) / 3)
    assert rows["AnB+ − baseB, n = 3-7"]["paper_figure2"] == pytest.approx(
        sum(findings.YOSINSKI2014_TOP1["transfer+"][2:]) / 5 - 0.625)
    # AnB+ and BnA+ each against their own half's base; BnB+ only on half B.
    assert rows["AnB+ − baseB, n = 1-7"]["within"] == (
        "BnA+ − baseA on half A (4); AnB+ − baseB on half B (4)")
    assert rows["AnB+ − BnB+, n = 1-7"]["within"] == "AnB+ − BnB+ on half B (4)"
    summary = report.summary_markdown(tmp_path, df, report.summarize(df), [], "top1_final")
    assert (summary.index("## Findings") < summary.index("## Table 1")
            < summary.index("## At a glance"))
    assert "extra training" in summary
    # The glance table is relative to each net's base: both directions pool to the same values.
    assert "| 4 | -0.0200 | -0.0200 | -0.0200 | -0.0100 |" in summary


def test_best_fraction_keeps_the_papers_proportion():
    assert [metrics.best_count(n) for n in (1, 10, 45, 90, 450)] == [1, 1, 1, 2, 10]
    curve = [{"top1": v} for v in [0.5] * 80 + [0.9, 0.91, 0.92, 0.90] + [0.89] * 6]
    values = metrics.top1_metrics(curve)
    assert values["top1_final"] == 0.89
    assert values["top1_best_fraction"] == pytest.approx((0.92 + 0.91) / 2)
    assert values["evaluations"] == 90


@pytest.mark.slow
def test_best10_is_refused_for_runs_with_few_evaluations(tmp_path):
    write_run(tmp_path, source="none", target="B", n=0, top1_final=0.9, curve=[0.5] * 9)
    command = [sys.executable, "-m", "keras_transfer.report", str(tmp_path), "--no_hparams"]
    refused = subprocess.run(command + ["--metric=top1_best10_mean"], capture_output=True,
                             text=True)
    assert refused.returncode == 2
    assert "only 10" in refused.stderr and "top1_final" in refused.stderr
    # main evaluates only the last --eval_last points, whatever --eval_every: both are named
    assert "--eval_last=0" in refused.stderr and "--eval_every" in refused.stderr
    assert not (tmp_path / "report").exists()
    write_run(tmp_path, source="none", target="B", n=0, top1_final=0.9, curve=[0.5] * 99)
    accepted = subprocess.run(command + ["--metric=top1_best10_mean"], capture_output=True,
                              text=True)
    assert accepted.returncode == 0, accepted.stderr


def test_convergence_lists_base_nets_still_learning(tmp_path):
    write_run(tmp_path, source="none", target="B", n=0, top1_final=0.90, curve=[0.80, 0.85])
    write_run(tmp_path, source="A", target="B", n=1, top1_final=0.90, curve=[0.899, 0.90])
    write_run(tmp_path, source="none", target="B", n=0, split="random:1", top1_final=0.90,
              curve=[0.897, 0.899])
    write_run(tmp_path, source="A", target="B", n=1, split="random:1", top1_final=0.90)
    text = report.make_report(tmp_path)["files"]["summary.md"].read_text()
    assert "within 0.5 points of top-1: 1 of 2; other nets: 1 of 1" in text
    late = text.split("Not on a plateau", 1)[1].split("\n\n", 2)[1]
    assert late == "- fashion_mnist/random_0/seed0/baseB: last top-1 0.8000, 0.8500, 0.9000"
    # Without longer twins the plateau check is all there is, and the summary says what it lacks.
    assert "The convergence control was not run" in text
    assert "cannot detect a net stalled under a decayed learning rate" in text
