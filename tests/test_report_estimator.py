"""The findings' estimator on small runs tables whose right answers are known: differences are
taken within a target half, verdicts come from the interval, finding 3's slope needs its
selffer term, a difference no half computes is said to be not computable, and the paper's
column is the same estimator on the authors' nets."""
import math

import pandas as pd
import pytest
from scipy import stats as scipy_stats

from keras_transfer import models, report
from keras_transfer.report import findings, paper_nets
from report_fixtures import network_columns, write_run

METRIC = "top1_final"


def net(split, target, condition, n, top1):
    return {"series": "main", "split": f"random:{split}", "split_dir": f"random_{split}",
            "seed": 0, "target": target, "condition": condition, "n": n, "model": "small",
            **network_columns("small"), METRIC: top1}


def same(measured, expected):
    """Equal key by key, NaN equal to NaN (a value not computable is NaN in both)."""
    return all(value == expected[key] or (isinstance(value, float) and math.isnan(value)
                                          and math.isnan(expected[key]))
               for key, value in measured.items())


def by_number(df):
    return {row["finding"]: row for row in findings.measure_findings(df, METRIC)}


def test_conditions_are_compared_within_a_half_when_pooling_would_flip_the_sign():
    """The demo's layout: transfer nets both ways, fine-tuned selffer nets on B only. Half A's
    base is 10 points below B's and its BnA+ nets fall 3 points below it; on half B AnB+ is 1
    point above BnB+. Pooling either way gets the sign wrong; within half B it is +0.01."""
    rows = []
    for split, noise in enumerate((-0.001, 0.0, 0.001)):
        base = {"A": 0.60, "B": 0.70}
        rows += [net(split, h, "base", 0, base[h]) for h in "AB"]
        for n in range(1, 8):
            rows += [net(split, "B", "transfer+", n, base["B"] + 0.01 + noise),
                     net(split, "B", "selffer+", n, base["B"]),
                     net(split, "A", "transfer+", n, base["A"] - 0.03)]
    df = pd.DataFrame(rows)
    tuned = df[df["condition"] != "base"]
    # The traps are real: pooled over halves, on top-1 or on top-1 relative to each base.
    absolute = tuned.groupby("condition")[METRIC].mean()
    assert absolute["transfer+"] - absolute["selffer+"] < 0
    relative = findings.relative(df, METRIC).groupby("condition")[METRIC].mean()
    assert relative["transfer+"] - relative["selffer+"] < 0

    beyond = by_number(df)[4]
    assert beyond["mean"] == pytest.approx(0.01)
    assert beyond["count"] == 3 and beyond["runs"] == 3 * 14
    assert beyond["verdict"] == "holds"
    assert beyond["within"] == "AnB+ − BnB+ on half B (3)"


def test_halves_are_averaged_within_a_split_before_the_interval():
    """Both halves have both conditions: each half's difference counts once per split,
    however many nets it has, and the interval is over the split means."""
    rows = []
    effects = {0: (0.02, 0.00), 1: (0.03, 0.01), 2: (0.01, 0.03)}  # (on A, on B) per split
    for split, (on_a, on_b) in effects.items():
        rows += [net(split, h, "base", 0, 0.8) for h in "AB"]
        for n in range(1, 8):
            rows += [net(split, "A", "transfer+", n, 0.8 + on_a),
                     net(split, "A", "selffer+", n, 0.8),
                     net(split, "B", "transfer+", n, 0.8 + on_b),
                     net(split, "B", "transfer+", n, 0.8 + on_b),  # twice: no extra weight
                     net(split, "B", "selffer+", n, 0.8)]
    beyond = by_number(pd.DataFrame(rows))[4]
    per_split = [(a + b) / 2 for a, b in effects.values()]
    expected = scipy_stats.t.interval(0.95, 2, loc=sum(per_split) / 3,
                                      scale=scipy_stats.sem(per_split))
    assert beyond["mean"] == pytest.approx(sum(per_split) / 3)
    assert (beyond["low"], beyond["high"]) == pytest.approx(expected)
    assert beyond["within"] == "BnA+ − AnA+ on half A (3); AnB+ − BnB+ on half B (3)"


def _co_adaptation_grid(per_split):
    """baseB − BnB over n = 3-5 equal to `per_split[s]` in split s."""
    rows = []
    for split, effect in enumerate(per_split):
        rows.append(net(split, "B", "base", 0, 0.9))
        rows += [net(split, "B", "selffer", n, 0.9 - effect) for n in (3, 4, 5)]
    return pd.DataFrame(rows)


def test_the_verdict_comes_from_the_interval_not_the_mean():
    wide = by_number(_co_adaptation_grid((0.03, -0.01, 0.01)))[1]
    narrow = by_number(_co_adaptation_grid((0.011, 0.009, 0.010)))[1]
    for row in (wide, narrow):
        assert row["mean"] == pytest.approx(0.01)
    assert wide["low"] < 0 < wide["high"]
    assert wide["verdict"] == "not detected"
    assert narrow["low"] > 0 and narrow["verdict"] == "holds"
    below = by_number(_co_adaptation_grid((-0.011, -0.009, -0.010)))[1]
    assert below["verdict"] == "reversed"


def _specificity_grid(selffer_per_n):
    """AnB at -0.01 n relative to its base; BnB at `selffer_per_n` n, on three splits."""
    rows = []
    for split, noise in enumerate((-0.001, 0.0, 0.001)):
        rows.append(net(split, "B", "base", 0, 0.9))
        for n in range(1, 8):
            rows += [net(split, "B", "transfer", n, 0.9 - 0.01 * n + noise),
                     net(split, "B", "selffer", n, 0.9 + selffer_per_n * n + noise)]
    return pd.DataFrame(rows)


@pytest.mark.parametrize("selffer_per_n", [0.0, -0.004, 0.003])
def test_the_specificity_slope_is_of_selffer_minus_transfer(selffer_per_n):
    """The same AnB nets with other BnB nets give another slope of BnB − AnB: an estimator
    that left the selffer term out would give 0.01 every time."""
    slope = by_number(_specificity_grid(selffer_per_n))[3]
    assert slope["mean"] == pytest.approx(0.01 + selffer_per_n)
    assert slope["within"] == "BnB − AnB on half B (3)"
    assert slope["verdict"] == ("holds" if 0.01 + selffer_per_n > 0 else "reversed")


def _paper_layout(workdir):
    """As the authors' nets are: fine-tuned selffer nets on half A, fine-tuned transfer nets
    on half B, frozen nets both ways, bases on both halves."""
    for s in range(3):
        split = f"random:{s}"
        for half, base in (("A", 0.80), ("B", 0.85)):
            write_run(workdir, source="none", target=half, n=0, split=split, top1_final=base)
            other = "B" if half == "A" else "A"
            for n in range(1, 8):
                write_run(workdir, source=other, target=half, n=n, split=split,
                          top1_final=base - 0.01 * n)
                write_run(workdir, source=half, target=half, n=n, split=split,
                          top1_final=base - 0.001 * n)
        for n in range(1, 8):
            write_run(workdir, source="A", target="A", n=n, finetune=True, split=split,
                      top1_final=0.80)
            write_run(workdir, source="A", target="B", n=n, finetune=True, split=split,
                      top1_final=0.86)


def test_a_difference_no_half_computes_is_not_computable(tmp_path):
    _paper_layout(tmp_path)
    df = report.load_runs(tmp_path)[0]
    beyond = by_number(df)[4]
    assert beyond["count"] == 0 and pd.isna(beyond["mean"]) and beyond["runs"] == 0
    assert beyond["verdict"] == "not computable: no target half has both AnB+ and BnB+"
    table1 = {r["difference"]: r for r in findings.measure_table1(df, METRIC)}
    assert table1["AnB+ − BnB+, n = 1-7"]["verdict"].startswith("not computable")
    assert table1["AnB+ − baseB, n = 1-7"]["mean"] == pytest.approx(0.01)
    # The fine-tuned selffer nets of half A still give finding 2, on half A.
    assert by_number(df)[2]["within"] == "AnA+ − AnA on half A (3)"

    made = report.make_report(tmp_path)
    text = made["files"]["summary.md"].read_text()
    row = next(line for line in text.splitlines() if line.startswith("| 4. "))
    cells = row.split(" | ")
    assert cells[3] == "not computable"
    assert "**not computable: no target half has both AnB+ and BnB+**" in row
    table = pd.read_csv(made["files"]["findings.csv"])
    four = table[table["effect"].str.startswith("4.")].iloc[0]
    assert pd.isna(four["mean"]) and four["verdict"].startswith("not computable")


def test_a_range_of_n_without_trained_nets_is_named_by_its_n(tmp_path):
    """Only n = 1 and 2 trained (--layers=1,2), every condition on half B: a difference whose
    range of n holds none of them names the nets missing in that range, not a half without
    them; the slope is labelled with the n it was measured on."""
    for split in range(2):
        for half in "AB":
            write_run(tmp_path, source="none", target=half, n=0, split=f"random:{split}",
                      top1_final=0.9)
        for n in (1, 2):
            for source, finetune in ((s, f) for s in "AB" for f in (False, True)):
                write_run(tmp_path, source=source, target="B", n=n, finetune=finetune,
                          split=f"random:{split}", top1_final=0.88 - 0.01 * n * (source == "A"))
    df = report.load_runs(tmp_path)[0]
    measured = by_number(df)
    assert measured[1]["verdict"] == "not computable: no BnB with n in 3-5"
    assert measured[2]["verdict"] == "not computable: no BnB+ or BnB with n in 3-5"
    assert measured[3]["effect"] == ("slope of BnB − AnB over n = 1-7 (only n = 1, 2 present), "
                                     "per layer")
    assert measured[3]["mean"] == pytest.approx(0.01)
    assert measured[4]["effect"] == "AnB+ − BnB+, mean over n = 1-7 (only n = 1, 2 present)"
    table1 = {r["difference"]: r["verdict"] for r in findings.measure_table1(df, METRIC)}
    assert table1["AnB+ − baseB, n = 3-7"] == "not computable: no AnB+ with n in 3-7"
    assert table1["AnB+ − BnB+, n = 5-7"] == "not computable: no AnB+ or BnB+ with n in 5-7"
    assert table1["AnB+ − baseB, n = 1-7"].startswith("reversed")
    # A condition trained at no n at all is still said to be missing from every half.
    untrained = findings.Difference("", "", "random", "base", (1, 2))
    assert untrained.unavailable(findings.relative(df, METRIC)) == "no target half has RnB"


def _by_hand_over_base(nets, layers):
    """Table 1's AnB+ − baseB by hand: each AnB+ minus its split's baseB, averaged per split
    over n in `layers` (all on half B), then Student's t over the splits."""
    main = nets[nets["series"] == "main"]
    base = main[main["condition"] == "base"].set_index(["split_dir", "target"])[
        findings.PAPER_METRIC]
    tuned = main[(main["condition"] == "transfer+") & main["n"].isin(layers)]
    assert set(tuned["target"]) == {"B"}
    gains = tuned.apply(lambda r: r[findings.PAPER_METRIC] - base[(r["split_dir"], "B")], axis=1)
    per_split = gains.groupby(tuned["split_dir"]).mean()
    low, high = scipy_stats.t.interval(0.95, len(per_split) - 1, loc=per_split.mean(),
                                       scale=scipy_stats.sem(per_split))
    return per_split.mean(), low, high, len(per_split)


def test_the_paper_column_is_the_estimator_on_the_authors_nets(tmp_path):
    _paper_layout(tmp_path)  # a `small` grid: n are the paper's layers
    df = report.load_runs(tmp_path)[0]
    nets = paper_nets.load()
    caffenet = models.get("caffenet")
    own = {r["finding"]: r for r in findings.measure_findings(nets, findings.PAPER_METRIC,
                                                              with_paper=False)}
    for row in findings.measure_findings(df, METRIC):
        theirs = own[row["finding"]]
        assert same(row["paper"], theirs)
        assert row["paper_figure2"] == pytest.approx(theirs["paper_figure2"])
    four = by_number(df)[4]
    # The figure's pooled +0.0156 is no value of the authors' nets compared within a half ...
    assert four["paper_figure2"] == pytest.approx(0.0156, abs=1e-4)
    assert four["paper"]["verdict"] == "not computable: no target half has both AnB+ and BnB+"
    # ... and across halves, each net against its own base, it is about 0.
    across = {r["difference"]: r
              for r in findings.measure_across_halves(nets, findings.PAPER_METRIC)}
    beyond = across["AnB+ − BnB+, n = 1-7"]
    assert f"{beyond['mean']:+.3f} [{beyond['low']:+.3f}, {beyond['high']:+.3f}]" == \
        "-0.000 [-0.009, +0.009]"

    table1 = {r["difference"]: r for r in findings.measure_table1(df, METRIC)}
    over_base = table1["AnB+ − baseB, n = 1-7"]
    mean, low, high, splits = _by_hand_over_base(nets, findings.all_n(caffenet.max_n))
    assert over_base["paper"]["mean"] == pytest.approx(mean)
    assert (over_base["paper"]["low"], over_base["paper"]["high"]) == pytest.approx((low, high))
    assert over_base["paper"]["count"] == splits == 2
    assert f"{mean:+.4f}" == "+0.0095"
    assert over_base["paper_figure2"] == pytest.approx(0.0170, abs=1e-4)  # the figure's

    made = report.make_report(tmp_path)
    text = made["files"]["summary.md"].read_text()
    assert f"{mean:+.4f} [{low:+.4f}, {high:+.4f}], 2 splits (10 nets): holds" in text
    csv = pd.read_csv(made["files"]["findings.csv"]).set_index("effect")
    assert csv.loc["AnB+ − BnB+, n = 1-7", "paper_verdict"].startswith("not computable")
    assert csv.loc["AnB+ − baseB, n = 1-7", ["paper_mean", "paper_low", "paper_high"]].tolist() \
        == pytest.approx([mean, low, high])
    assert csv.loc["AnB+ − baseB, n = 1-7", "paper_metric"] == "top1_best10_mean"


def test_no_paper_column_for_a_network_of_other_cut_points():
    rows = [{**net(s, "B", c, n, 0.9), "model": "resnet50", **network_columns("resnet50")}
            for s in range(2) for c, n in (("base", 0), ("transfer", 3))]
    row = findings.measure_findings(pd.DataFrame(rows), METRIC)[0]
    assert row["paper"] is None and row["paper_figure2"] is None
