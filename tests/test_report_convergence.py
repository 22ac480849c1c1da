"""The convergence control in the report (keras_transfer/report/convergence.py): each base net
against its longer twin (`baseB-x2`), written by hand as main's --stretch=2 writes it; the twins
enter summary.md's Convergence section and convergence.csv, and nothing else."""
import json
import tempfile
from pathlib import Path

import pandas as pd
import pytest

from keras_transfer import naming, report
from keras_transfer.report import convergence, findings, stats
from keras_transfer.report.runs import drop_unpaired_bases
from report_fixtures import SPLIT_NOISE, write_protocol, write_run

SPLITS = 4
STALLED = "fashion_mnist/random_0/seed0/baseB"


def write_longer(workdir, *, target, top1_final, split="random:0", seed=0, stretch=2, curve=()):
    """The longer twin of base net `base<target>`: a base net's result.json and config.json under
    the name `base<target>-x<stretch>`, with every step count multiplied."""
    with tempfile.TemporaryDirectory() as scratch:
        plain = write_run(Path(scratch), source="none", target=target, n=0, split=split,
                          seed=seed, top1_final=top1_final, curve=curve)
        result = json.loads((plain / "result.json").read_text())
        config = json.loads((plain / "config.json").read_text())
    name = naming.run_name("none", target, 0, False, stretch)
    run_dir = naming.run_dir(workdir, result["dataset"], result["split_dir"], seed, name)
    run_dir.mkdir(parents=True)
    result["run"] = config["run"] = name
    result["steps"] = config["steps"] = result["steps"] * stretch
    for evaluation in result["history"]:
        evaluation["step"] *= stretch
    config.update(stretch=stretch, run_dir=str(run_dir))
    (run_dir / "config.json").write_text(json.dumps(config))
    (run_dir / "result.json").write_text(json.dumps(result))


def base_values(workdir):
    """{(split, half): top-1} of the base nets write_protocol wrote."""
    values = {}
    for s in range(SPLITS):
        for half in naming.HALVES:
            path = naming.run_dir(workdir, "fashion_mnist", f"random_{s}", 0, f"base{half}")
            values[(s, half)] = json.loads((path / "result.json").read_text())["top1_final"]
    return values


def write_stalled_grid(workdir):
    """write_protocol's grid (4 splits, every finding built to hold) whose base nets all end on a
    plateau, each last three evaluations equal (the plateau check passes them all), with the
    longer twins: 0.2 points higher, but 5 points higher for baseB of random:0, which stalled
    under its decayed learning rate."""
    write_protocol(workdir, co_adaptation=0.02, recovery=0.02, specificity_slope=0.01,
                   beyond_training=0.02, splits=SPLITS)
    for (s, half), value in base_values(workdir).items():
        write_run(workdir, source="none", target=half, n=0, split=f"random:{s}",
                  top1_final=value, curve=[value - 0.1, value, value])
    for (s, half), value in base_values(workdir).items():
        gain = 0.05 if (s, half) == (0, "B") else 0.002
        write_longer(workdir, target=half, split=f"random:{s}", top1_final=value + gain,
                     curve=[value - 0.1, value + gain, value + gain])


def _section(text, heading):
    return text.split(heading, 1)[1].split("\n## ", 1)[0]


def test_a_base_net_stalled_under_a_decayed_learning_rate_is_named_not_converged(tmp_path):
    write_stalled_grid(tmp_path)
    made = report.make_report(tmp_path)
    section = _section(made["files"]["summary.md"].read_text(), "## Convergence")
    # The plateau check passes every base net, the stalled one too: it cannot see the stall.
    assert "within 0.5 points of top-1: 8 of 8" in section
    assert "cannot detect a net stalled under a decayed learning rate" in section
    assert "Not on a plateau" not in section
    # The control names it, and it alone.
    assert "Rule: a base net is converged when its longer twin ends at most 1.0 point higher" \
        in section
    assert convergence.WHY in section
    late = section.split("Not converged: ", 1)[1].split("\n\n", 2)
    assert late[0].startswith("1 of 8 base nets")
    assert late[1].splitlines() == [f"- {STALLED}: 0.9030, 0.9530 at x2 (+5.0 points)"]
    assert f"| {STALLED} | 0.9030 | 0.9530 (x2) | +0.0500 | **no** |" in section
    assert section.count("| **no** |") == 1 and section.count("| yes |") == 7
    table = pd.read_csv(made["files"]["convergence.csv"])
    assert len(table) == 8 and set(table["metric"]) == {"top1_final"}
    assert table.loc[~table["converged"], "run_dir"].tolist() == [STALLED]
    stalled = table.set_index("run_dir").loc[STALLED]
    assert stalled["gain"] == pytest.approx(0.05)
    assert stalled["longer_run_dir"] == STALLED + "-x2"


@pytest.mark.slow
def test_with_the_control_the_plateau_check_lists_no_net(tmp_path):
    """A base net whose curve still rises at its last evaluations is judged by its twin (here
    within the rule), not listed again as off its plateau."""
    write_stalled_grid(tmp_path)
    rising = naming.run_dir(tmp_path, "fashion_mnist", "random_1", 0, "baseB") / "result.json"
    result = json.loads(rising.read_text())
    for evaluation, top1 in zip(result["history"][-3:], (0.80, 0.85, result["top1_final"])):
        evaluation["top1"] = top1
    rising.write_text(json.dumps(result))
    section = _section(report.make_report(tmp_path)["files"]["summary.md"]
                       .read_text(), "## Convergence")
    assert "within 0.5 points of top-1: 7 of 8" in section
    assert "Not on a plateau" not in section
    assert section.count("| **no** |") == 1


def test_each_target_half_shows_the_longer_nets_gain_over_splits(tmp_path):
    write_stalled_grid(tmp_path)
    text = report.make_report(tmp_path)["files"]["summary.md"].read_text()
    section = _section(text, "## Convergence")
    gains_b = [0.05, 0.002, 0.002, 0.002]
    interval = stats.t_interval(gains_b)
    assert (f"| B | +{interval['mean']:.4f} [{interval['low']:+.4f}, {interval['high']:+.4f}] | "
            "4 splits (4) |") in section
    assert "| A | +0.0020 [+0.0020, +0.0020] | 4 splits (4) |" in section


@pytest.mark.slow
def test_x2_runs_leave_findings_table1_and_every_table_and_figure_unchanged(tmp_path):
    write_stalled_grid(tmp_path / "with")
    without = tmp_path / "without"
    write_protocol(without, co_adaptation=0.02, recovery=0.02, specificity_slope=0.01,
                   beyond_training=0.02, splits=SPLITS)
    for (s, half), value in base_values(without).items():
        write_run(without, source="none", target=half, n=0, split=f"random:{s}",
                  top1_final=value, curve=[value - 0.1, value, value])
    made = {name: report.make_report(tmp_path / name, tmp_path / f"{name}-report")
            for name in ("with", "without")}
    files = {name: made[name]["files"] for name in made}
    for name in ("findings.csv", "figure2.png"):
        assert files["with"][name].read_bytes() == files["without"][name].read_bytes(), name
    texts = {name: files[name]["summary.md"].read_text() for name in files}
    assert "The convergence control was not run" in texts["without"]
    for heading in ("## Findings", "## Table 1", "## At a glance", "## Random splits",
                    "## Decomposition"):
        assert _section(texts["with"], heading) == _section(texts["without"], heading), heading

    def without_convergence(text):  # and without the title, which names the workdir
        head, rest = text.split("\n", 1)[1].split("## Convergence", 1)
        return head + "## " + rest.split("\n## ", 1)[1]
    assert without_convergence(texts["with"]) == without_convergence(texts["without"])
    assert made["with"]["notes"] == made["without"]["notes"]
    # results.csv keeps the twins, in their own series; convergence.csv pairs them.
    assert "convergence.csv" in files["with"] and "convergence.csv" not in files["without"]
    results = pd.read_csv(files["with"]["results.csv"])
    longer = results[results["series"] == "convergence"]
    assert len(results) == len(pd.read_csv(files["without"]["results.csv"])) + 8
    assert set(longer["run"]) == {"baseA-x2", "baseB-x2"} and set(longer["stretch"]) == {2}
    # The functions behind them, called on every run read.
    runs = {name: report.load_runs(tmp_path / name)[0] for name in ("with", "without")}
    summaries = {name: report.summarize(runs[name]) for name in runs}
    pd.testing.assert_frame_equal(summaries["with"], summaries["without"])
    markdown = {name: report.summary_markdown("runs", runs[name], summaries[name], [], "top1_final")
                for name in runs}
    assert without_convergence(markdown["with"]) == without_convergence(markdown["without"])
    for measure in (findings.measure_findings, findings.measure_table1):
        measured = {name: pd.DataFrame(measure(runs[name], "top1_final")) for name in runs}
        pd.testing.assert_frame_equal(measured["with"], measured["without"])
    notes = {name: [] for name in runs}
    kept = {name: drop_unpaired_bases(runs[name], notes[name]) for name in runs}
    assert notes["with"] == notes["without"]
    pd.testing.assert_frame_equal(  # flag_run_dir names the workdir; only twins set --stretch
        convergence.without_longer(kept["with"]).drop(columns=["flag_stretch", "flag_run_dir"]),
        kept["without"].drop(columns="flag_run_dir"))


def test_the_gain_interval_is_over_splits_not_nets():
    """Three seeds per split are still four splits: the gains are averaged within each split."""
    rows = []
    for s, noise in enumerate(SPLIT_NOISE):
        for seed in (0, 1, 2):
            for series, run, value in (("main", "baseB", 0.80), ("convergence", "baseB-x2",
                                                                 0.80 + 0.01 + noise * 0.002)):
                rows.append({"run": run, "condition": "base", "series": series,
                             "split_dir": f"random_{s}", "seed": seed, "target": "B",
                             "run_dir": f"random_{s}/seed{seed}/{run}", "top1_final": value,
                             "stretch": 2 if series == "convergence" else 1})
    pairs = convergence.control_pairs(pd.DataFrame(rows))
    assert len(pairs) == 12
    gain = convergence.gains_per_half(pairs)["B"]
    assert gain["count"] == 4 and gain["runs"] == 12 and gain["clusters"] == ["split_dir"]
    expected = stats.t_interval([0.01 + noise * 0.002 for noise in SPLIT_NOISE])
    assert gain["ci95"] == pytest.approx(expected["ci95"])
    assert gain["mean"] == pytest.approx(0.01)


def test_without_longer_twins_the_report_says_how_to_run_the_control(tmp_path):
    write_run(tmp_path, source="none", target="B", n=0, top1_final=0.75, curve=[0.6, 0.75, 0.75])
    write_run(tmp_path, source="A", target="B", n=1, top1_final=0.74)
    made = report.make_report(tmp_path)
    section = _section(made["files"]["summary.md"].read_text(), "## Convergence")
    assert "The convergence control was not run" in section
    assert "`--experiments=transfer,convergence`" in section
    assert "within 0.5 points of top-1: 1 of 1" in section
    assert ("It cannot detect a net stalled under a decayed learning rate: after the learning "
            "rate's last step down every curve is flat, converged or not, so a net that passes "
            "it may still be short of converged.") in section
    assert "convergence.csv" not in made["files"]
