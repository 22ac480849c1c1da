"""The demo's own logic (keras_transfer/grid/demo.py): which grid it runs, and that its options are
honoured, not only passed on. The whole demo end to end is the README's demo command."""
import os
import subprocess
import sys

import pytest

from keras_transfer.grid import demo
from keras_transfer.grid.errors import GridError


def test_the_demo_is_the_grid_with_its_defaults_and_the_callers_options_win():
    assert demo.grid_argv([]) == [
        "--flagfile=flags/fashion_mnist.flags", "--workdir=runs", "--splits=0,1,2,3", "--seeds=0",
        "--experiments=transfer,convergence", "--targets=B", "--random_control=half",
        "--random_splits=0"]
    command = demo.grid_argv(["--splits=2,3", "--seeds=1", "--workdir=elsewhere", "--",
                              "--steps=10"])
    # argparse keeps an option's last value: the caller's come after the demo's.
    assert command.index("--seeds=1") > command.index("--seeds=0")
    assert command.index("--workdir=elsewhere") > command.index("--workdir=runs")
    assert "--random_splits=2" in command and command[-2:] == ["--", "--steps=10"]
    # The caller's --random_control replaces the demo's control on half B of the first split.
    assert not any(a.startswith("--random_splits") for a in
                   demo.grid_argv(["--random_control=whole"]))


@pytest.mark.parametrize("argv", [["--model=resnet_small"], ["--", "--model=resnet_small"]])
def test_another_model_trains_into_its_own_folder(argv):
    command = demo.grid_argv(argv)
    assert "--workdir=runs_resnet_small" in command
    assert command[command.index("--"):] == ["--", "--model=resnet_small"]


def test_a_network_of_ones_own_trains_into_a_folder_named_after_its_file_and_function():
    command = demo.grid_argv(["--model=nets/my_model.py:tiny_convnet"])
    assert "--workdir=runs_my_model_tiny_convnet" in command
    assert command[-1] == "--model=nets/my_model.py:tiny_convnet"


def test_splits_that_are_not_random_split_numbers_are_refused():
    with pytest.raises(GridError, match="--splits=0,natman: the demo trains on random splits"):
        demo.grid_argv(["--splits=0,natman"])


@pytest.mark.slow
def test_a_dry_run_plans_the_callers_workdir_and_seeds_and_prepares_nothing(tmp_path):
    workdir = tmp_path / "elsewhere"
    done = subprocess.run([sys.executable, "-m", "keras_transfer.grid.demo", "--dry_run",
                           f"--workdir={workdir}", "--splits=1", "--seeds=3"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"# 32 nets in {workdir}/fashion_mnist: 0 done, 32 to run" in done.stdout
    commands = [line for line in done.stdout.splitlines() if "keras_transfer.main" in line]
    assert len(commands) == 6  # the 4 base nets alone, the 28 others in two packs
    assert all(f"--workdir={workdir} --split=random:1 --seed=3" in c for c in commands)
    packed = [name for c in commands if "--nets=" in c
              for name in c.split("--nets=")[1].split()[0].split(",")]
    assert len(packed) == 28 and all(name.rstrip("+").endswith("B") for name in packed)
    assert not any(tmp_path.iterdir())  # no run folders
    assert "[demo]" not in done.stdout + done.stderr  # no data looked for or prepared


def test_the_findings_and_convergence_sections_are_printed_whole(tmp_path):
    summary = tmp_path / "summary.md"
    summary.write_text("# Report\n\n## Findings\n\n| a |\n\nverdicts\n\n## Table 1\n\nt\n\n"
                       "## Convergence\n\nControl: x\n\n- late\n")
    assert demo.summary_sections(summary) == (
        "## Findings\n\n| a |\n\nverdicts\n\n## Convergence\n\nControl: x\n\n- late\n")
