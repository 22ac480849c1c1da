"""The whole-dataset split end to end: `data_prep --split=whole` prepares half A with every class;
the grid trains the paper's random-features control there (baseA and R2A, one pack of the real
main) and counts its compute from that manifest; main refuses half B of it, naming why; and the
report draws RnA against that baseA."""
import io
import json
from pathlib import Path

import pytest

from data_prep.prepare import prepare
from data_prep.sources import SyntheticSpec
from keras_transfer import grid, naming, report, resolve
from train_helpers import smoke_config

REPO = Path(__file__).resolve().parents[1]
CLASSES, TRAIN_PER_CLASS = 4, 8


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("whole") / "data"
    spec = SyntheticSpec(num_classes=CLASSES, image_size=16, train_per_class=TRAIN_PER_CLASS,
                         validation_per_class=4)
    assert prepare("synthetic", "whole", out, synthetic=spec, progress=False) == {
        "A": out / "synthetic" / "whole" / "A"}
    return out


def grid_args(workdir, data_dir, *main_flags, layers="2"):
    return ["--experiments=random", f"--layers={layers}", "--jobs=1",
            f"--flagfile={REPO / 'flags' / 'smoke.flags'}", f"--workdir={workdir}", "--",
            "--dataset=synthetic", f"--data_dir={data_dir}", *main_flags]


@pytest.mark.slow
def test_the_grid_trains_the_whole_dataset_control_and_the_report_draws_it(tmp_path, data_dir):
    workdir = tmp_path / "runs"
    out = io.StringIO()
    assert grid.main(grid_args(workdir, data_dir), out=out) == 0, out.getvalue()
    results = {name: json.loads((naming.run_dir(workdir, "synthetic", "whole", 0, name)
                                 / "result.json").read_text()) for name in ("baseA", "R2A")}
    for result in results.values():
        assert (result["split"], result["target"], result["steps"]) == ("whole", "A", 4)
        assert result["num_outputs"] == CLASSES  # every class of the dataset
        assert result["pack"] == ["baseA", "R2A"]
    origins = [(row["name"], row["origin"], row["trainable"]) for row in results["R2A"]["layers"]]
    assert origins[:3] == [("conv1", "random", False), ("conv2", "random", False),
                           ("conv3", "new", True)]

    made = report.make_report(workdir)
    assert "figure3.png" in made["files"] and "figure2.png" not in made["files"]
    df = report.load_runs(workdir)[0]
    (line,) = report.figure3_series(df, "top1_final").values()
    assert list(line["n"]) == [2]
    assert line["mean"].item() == pytest.approx(results["R2A"]["top1_final"]
                                                - results["baseA"]["top1_final"])
    assert "RnA − baseA" in made["files"]["summary.md"].read_text()


def test_the_dry_run_counts_epochs_of_the_whole_dataset(tmp_path, data_dir):
    out = io.StringIO()
    grid.main(["--dry_run", *grid_args(tmp_path / "runs", data_dir, "--steps=0", "--epochs=2",
                                       layers="1,2")], out=out)
    # baseA, R1A and R2A, each 2 epochs of the whole dataset's training images.
    assert f"{3 * 2 * CLASSES * TRAIN_PER_CLASS} images trained (3 nets)" in out.getvalue()


@pytest.mark.parametrize("source,target", [("none", "B"), ("B", "A")])
def test_main_refuses_half_b_of_the_whole_dataset(tmp_path, data_dir, source, target):
    config = smoke_config(data_dir, tmp_path, split="whole", source=source, target=target,
                          n=0 if source == "none" else 2)
    with pytest.raises(resolve.RunError, match="split whole has every class in half A and no "
                                             r"half B; train its nets on half A \(--target=A"):
        resolve.check_inputs(config)
    assert not any(tmp_path.iterdir())
