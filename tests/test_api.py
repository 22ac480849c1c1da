"""keras_transfer.api: the commands as Python functions. Their keyword arguments are the
commands' flags, checked as the commands check them; docs/examples/from_python.py, the
example users copy, runs end to end."""
import dataclasses
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import keras_transfer as kt
from data_prep.sources import SyntheticSpec
from keras_transfer import api, naming
from keras_transfer.config import Config
from keras_transfer.grid import __main__ as grid_cli
from train_helpers import SMOKE

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "docs" / "examples" / "from_python.py"


@pytest.mark.parametrize("call, named, suggested", [
    (lambda: kt.train_net(stpes=3), "'stpes'", "steps"),
    (lambda: kt.run_grid(experiment="transfer"), "'experiment'", "experiments"),
    (lambda: kt.run_grid(stps=3), "'stps'", "steps"),  # main's flags go to every net
    (lambda: kt.prepare_data(synthetic_num_clases=3), "'synthetic_num_clases'",
     "synthetic_num_classes"),
    (lambda: kt.load_results("runs", modle="small"), "'modle'", "model"),
    (lambda: kt.make_report("runs", metirc="top1_final"), "'metirc'", "metric"),
])
def test_an_unknown_option_is_named_with_the_closest_ones(call, named, suggested):
    with pytest.raises(kt.OptionError, match=f"unknown option {named} \\(did you mean "
                                             f"{suggested}[ ?]") as refused:
        call()
    assert isinstance(refused.value, TypeError)  # as Python's own unexpected keyword


def test_an_option_nothing_resembles_is_named_with_where_the_options_are():
    with pytest.raises(kt.OptionError, match=r"^train_net\(\) got unknown option 'zzz'; its "
                                             r"options are the flags of python -m "
                                             r"keras_transfer.main"):
        kt.train_net(zzz=1)


def test_every_flag_of_main_is_an_option_of_train_net_and_run_grid(tmp_path):
    """Each Config field, at its default value, passes the name check and main's own flag
    parsing: the values below it (batch_size=0, or steps=-1 when checking batch_size) are
    then refused by main's range check, before anything is written."""
    for field in dataclasses.fields(Config):
        bad = {"steps": -1} if field.name == "batch_size" else {"batch_size": 0}
        with pytest.raises(kt.Error, match=r"is out of range") as refused:
            kt.train_net(**{field.name: getattr(Config(), field.name)}, **bad)
        assert not isinstance(refused.value, kt.OptionError), field.name
    assert not list(tmp_path.iterdir())


def test_train_net_refuses_what_main_refuses_with_main_s_message():
    with pytest.raises(kt.Error, match=r"^--steps=-1 is out of range: it must be 0 or more\.$"):
        kt.train_net(steps=-1)
    with pytest.raises(kt.Error, match=r"--model=nope is no network"):
        kt.train_net(model="nope")
    with pytest.raises(kt.Error, match=r"flag --n=2.5"):
        kt.train_net(n=2.5)


@pytest.mark.slow
def test_train_net_trains_the_net_and_returns_its_result_json(synthetic_data, tmp_path):
    result = kt.train_net(**SMOKE, target="A", data_dir=synthetic_data, workdir=tmp_path)
    written = naming.run_dir(tmp_path, "synthetic", "random_0", 0, "baseA") / "result.json"
    assert result["run"] == "baseA" and result["steps"] == SMOKE["steps"]
    assert json.loads(json.dumps(result)) == json.loads(written.read_text())
    assert kt.train_net(**SMOKE, target="A", data_dir=synthetic_data,
                        workdir=tmp_path) == result  # done: not trained again


@pytest.mark.slow
def test_train_net_s_message_is_main_s_line(synthetic_data, tmp_path):
    """A net main refuses once its inputs are read (no base net to copy from): the exception's
    message is what main prints after `error: `."""
    flags = dict(source="A", n=3, data_dir=synthetic_data, dataset="synthetic", batch_size=8,
                 workdir=tmp_path / "runs", strategy="one_device")
    with pytest.raises(kt.Error) as refused:
        kt.train_net(**flags)
    command = [sys.executable, "-m", "keras_transfer.main",
               *(f"--{name}={value}" for name, value in flags.items())]
    done = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 2
    assert "baseA" in str(refused.value)
    assert done.stderr.strip().endswith(f"\nerror: {refused.value}")


def test_run_grid_passes_main_s_flags_to_every_net_and_plans_with_the_grid_s(tmp_path, capsys):
    summary = kt.run_grid(dry_run=True, splits=[0, 1], experiments=["transfer"], layers=[2],
                          targets="B", workdir=tmp_path / "runs", steps=17, eval_every=5,
                          finetune=None)  # None: the default, as if not given
    printed = capsys.readouterr().out
    commands = [line for line in printed.splitlines() if "keras_transfer.main" in line]
    assert len(commands) == 2 * 4 and len(summary.unfinished) == 2 * 6  # bases alone, packs
    assert all("--steps=17" in c and "--eval_every=5" in c for c in commands)
    assert {c.split("--split=")[1].split()[0] for c in commands} == {"random:0", "random:1"}
    assert summary.status == 0 and not summary.trained and not summary.ok
    assert set(summary.unfinished.values()) == {"planned"}
    assert not (tmp_path / "runs").exists()


def test_run_grid_refuses_what_the_grid_refuses_with_its_message(tmp_path):
    with pytest.raises(kt.Error, match=r"^--jobs must be at least 1, not 0$"):
        kt.run_grid(jobs=0, workdir=tmp_path)
    with pytest.raises(kt.Error, match=r"argument --splits: .*integers S mean random:S"):
        kt.run_grid(splits="x", workdir=tmp_path)  # argparse's error, not its exit
    with pytest.raises(kt.Error, match=r"^seed= is set by the grid for every net; use "
                                       r"run_grid's own options \(splits, seeds, "):
        kt.run_grid(seed=1, workdir=tmp_path)
    with pytest.raises(kt.Error, match=r"--dry_run is a switch: give dry_run=True or "
                                       r"dry_run=False, not 'yes'"):
        kt.run_grid(dry_run="yes", workdir=tmp_path)
    assert not list(tmp_path.iterdir())


def test_every_option_of_the_grid_is_an_option_of_run_grid(tmp_path, capsys):
    """Each of the grid's flags (read from its parser: --help lists them), at its default."""
    options = {name: action.default for name, action in api._options_of(grid_cli.parser()).items()}
    assert {"splits", "seeds", "experiments", "jobs", "dry_run"} <= set(options)
    kt.run_grid(**{**options, "dry_run": True, "workdir": tmp_path / "runs"})
    assert "# compute:" in capsys.readouterr().out


def test_prepare_data_refuses_synthetic_options_for_another_source(tmp_path):
    with pytest.raises(kt.Error, match=r"^--synthetic_num_classes apply only to "
                                       r"--source=synthetic$"):
        kt.prepare_data(source="fashion_mnist", out=tmp_path, synthetic_num_classes=4)
    assert not list(tmp_path.iterdir())


def test_prepare_data_returns_the_split_folder_with_the_synthetic_options_given(tmp_path):
    folder = kt.prepare_data(source="synthetic", split="random:0", out=tmp_path, progress=False,
                             synthetic_num_classes=4, synthetic_train_per_class=3,
                             synthetic_validation_per_class=2)
    assert folder == tmp_path / "synthetic" / "random_0"
    assert sorted(p.name for p in folder.iterdir()) == ["A", "B"]
    manifest = json.loads((folder / "A" / "manifest.json").read_text())
    assert manifest["source_options"]["synthetic"] == {
        **dataclasses.asdict(SyntheticSpec()), "num_classes": 4, "train_per_class": 3,
        "validation_per_class": 2}
    assert manifest["counts"] == {"train": 2 * 3, "validation": 2 * 2}  # 2 classes per half


def test_the_report_functions_refuse_a_missing_workdir_with_the_report_s_message(tmp_path):
    for call in (kt.load_results, kt.make_report):
        with pytest.raises(kt.Error, match=r"is not a directory; give the --workdir"):
            call(tmp_path / "nowhere")
    with pytest.raises(kt.Error, match=r"^--paper needs --out=DIR"):
        kt.make_report(paper=True)


@pytest.mark.slow
def test_the_example_runs_end_to_end(tmp_path):
    """docs/examples/from_python.py, as a user runs it, in a folder of its own: it trains its
    grid, and what it prints and writes is the grid's results and report; run again, it
    trains nothing."""
    def run_example():
        done = subprocess.run([sys.executable, str(EXAMPLE)], cwd=tmp_path, capture_output=True,
                              text=True, timeout=1200, env={**os.environ, "PYTHONPATH": str(REPO)})
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout

    out = run_example()
    results = pd.read_csv(tmp_path / "runs" / "report" / "results.csv")
    nets = {"baseA", "baseB"} | {f"{s}{n}B{plus}" for s in "AB" for n in (1, 4)
                                 for plus in ("", "+")}
    assert set(results["run"]) == nets and len(results) == len(nets)
    assert results["top1_final"].between(0, 1).all()
    report = tmp_path / "runs" / "report"
    assert {"summary.md", "results.csv", "findings.csv", "figure2.png"} <= {
        p.name for p in report.iterdir()}
    assert f"{len(nets)} trained, 0 already done, 0 unfinished (exit status 0)" in out
    assert "report: runs/report" in out
    findings = pd.read_csv(report / "findings.csv")
    for effect in findings["effect"]:
        assert effect in out  # the findings printed are the report's
    for run, condition in zip(results["run"], results["condition"]):  # the results printed
        assert re.search(rf"^ *{re.escape(run)} +{re.escape(condition)} ", out, re.M), run
    assert f"0 trained, {len(nets)} already done, 0 unfinished (exit status 0)" in run_example()
