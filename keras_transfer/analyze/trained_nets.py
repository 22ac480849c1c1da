"""Finished runs of the grid, opened for analysis without training more of them: a run's record
and weights, its net rebuilt from them, the prepared data it was trained on, and where analysis
outputs beside it go.

A finished run is a folder with config.json, result.json and model.weights.h5. Bad input (a
missing or unfinished run, weights that do not fit the data, no prepared data) raises
`AnalysisError`, whose message says what to do, before any output is written.
"""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import keras

from data_prep import layout
from keras_transfer import config as config_lib
from keras_transfer import data, models, naming, transfer
from keras_transfer.run_records import RecordError, RunDir

_SEED_DIR_RE = re.compile(r"^seed\d+$")


class AnalysisError(Exception):
    """The analysis cannot run on this input; the message says why and what to do."""


@dataclasses.dataclass(frozen=True)
class TrainedNet:
    """A finished run directory and what is needed to rebuild its model."""
    run_dir: Path
    config: dict
    result: dict

    @property
    def name(self) -> str:
        return self.config.get("run", self.run_dir.name)

    @property
    def model_name(self) -> str:
        return self.result.get("model") or self.config["model"]

    @property
    def architecture(self) -> models.Architecture:
        """The net's network, whose cut points the analysis compares."""
        try:
            return models.get(self.model_name)
        except ValueError as e:
            raise AnalysisError(f"{self.name} ({self.run_dir}): {e}") from e

    @property
    def num_outputs(self) -> int:
        """fc8's width (older results lack num_outputs: then fc8_outputs or the class count)."""
        if self.result.get("num_outputs"):
            return int(self.result["num_outputs"])
        if self.config.get("fc8_outputs"):
            return int(self.config["fc8_outputs"])
        return len(self.result["data"]["classes"])

    @property
    def weights(self) -> Path:
        return RunDir(self.run_dir).weights_path

    def input_shape(self, image_shape) -> tuple:
        """The net's input for images of `image_shape`: its configured crop, or the default one."""
        height, width, channels = image_shape
        crop = self.config.get("crop") or data.default_crop(self.model_name, min(height, width))
        return (crop, crop, channels)

    def describe(self, image_shape) -> dict:
        return {"run": self.name, "run_dir": str(self.run_dir), "model": self.model_name,
                "num_outputs": self.num_outputs, "input_shape": list(self.input_shape(image_shape))}


def open_run(run_dir) -> TrainedNet:
    """A finished run (RunDir.FINISHED: config.json, result.json and model.weights.h5 present),
    or AnalysisError."""
    run = RunDir(run_dir)
    if not run.path.is_dir():
        raise AnalysisError(f"run directory not found: {run.path} (give a folder such as "
                            "runs/fashion_mnist/random_0/seed0/baseA)")
    missing = run.missing(RunDir.FINISHED)
    below = [] if run.config_path.exists() else _runs_below(run.path)
    if below:
        raise AnalysisError(f"{run.path} is not a run directory but holds runs below it: give a "
                            f"run directory, such as {' or '.join(below)}")
    if missing:
        raise AnalysisError(f"{run.path} is not a finished run: it lacks {', '.join(missing)}. "
                            f"Train it to the end: {_train_command(run)}")
    try:
        config, result = run.load_config(), run.load_result()
    except RecordError as e:
        raise AnalysisError(f"cannot read the run record in {run.path}: {e}") from e
    return TrainedNet(run.path, config, result)


def _runs_below(folder: Path, most: int = 2) -> list[str]:
    """Up to `most` run directories under `folder` (a WORKDIR, a seed folder, ...): finished
    ones if any, base nets first."""
    found = RunDir.find(folder) or RunDir.find(folder, RunDir.CONFIG)
    found.sort(key=lambda run: not run.path.name.startswith("base"))  # stable: baseA, baseB
    return [str(run.path) for run in found[:most]]


def common_architecture(*nets: TrainedNet) -> models.Architecture:
    """The network all `nets` are; AnalysisError if they differ, since cut point n of one
    network does not correspond to cut point n of another."""
    if len({net.model_name for net in nets}) > 1:
        which = ", ".join(f"{net.name} ({net.run_dir}) is a {net.model_name} net" for net in nets)
        raise AnalysisError(f"the nets are of different models: {which}. Compare nets of one "
                            "model, whose cut points correspond.")
    return nets[0].architecture


def _train_command(run: RunDir) -> str:
    """The command that trains the net of an unfinished or damaged run directory to the end."""
    try:
        recorded = config_lib.from_record(run.load_config())
    except (RecordError, ValueError, TypeError):
        return ("python -m keras_transfer.main with the flags it was started with, and "
                "--overwrite if it has a result.json (or ./launch.sh for its grid)")
    return config_lib.command(recorded, overwrite=run.is_done())


def load_model(net: TrainedNet, image_shape) -> keras.Model:
    """The trained net, rebuilt with its own architecture and fc8 width, for these images."""
    input_shape = net.input_shape(image_shape)
    try:
        return transfer.load_trained(net.weights, net.model_name, input_shape, net.num_outputs)
    except (transfer.TransferError, ValueError) as e:
        raise AnalysisError(
            f"{net.name} ({net.run_dir}) does not fit images of shape {tuple(image_shape)} "
            f"(input {input_shape}): {e}\nGive data of the kind the net was trained on (same "
            "image size and channels), e.g. a half prepared by data_prep for its dataset.") from e


def launch_dir(net: TrainedNet) -> Path:
    """The directory the run was launched from, where its relative --data_dir is found."""
    recorded = Path(net.config.get("run_dir", ""))
    if recorded.is_absolute() or not recorded.parts:
        return Path.cwd()
    actual = net.run_dir.resolve()
    parts = len(recorded.parts)
    if actual.parts[-parts:] == recorded.parts:
        return Path(*actual.parts[:-parts])
    return Path.cwd()


def training_half_dir(net: TrainedNet, half: str, data_dir=None) -> Path:
    """Half `half` of the data the net's grid was prepared from (its config's data_dir, dataset
    and split), found relative to the launch directory or the current one."""
    split_dir = net.config.get("split_dir") or naming.split_dir(
        net.config["split"], net.config.get("examples_per_class"))
    relative = layout.half_dir("", net.config["dataset"], split_dir, half)
    if data_dir is not None:
        roots = [Path(data_dir)]
    else:
        recorded = Path(net.config.get("data_dir", "data"))
        roots = [recorded] if recorded.is_absolute() else [launch_dir(net) / recorded, recorded]
    for root in roots:
        if (root / relative / layout.MANIFEST).is_file():
            return root / relative
    raise AnalysisError(
        f"cannot find the prepared data of {net.name}: no {relative}/manifest.json under "
        f"{' or '.join(str(r) for r in roots)}. Pass --data_dir with the folder given to "
        "`python -m data_prep --out` (or prepare it).")


def grid_workdir(run_dir) -> Path | None:
    """The WORKDIR of a run folder in the grid's layout, WORKDIR/<dataset>/<split_dir>/seed<k>/
    <run>; None for a run folder elsewhere."""
    run_dir = Path(run_dir).resolve()
    if _SEED_DIR_RE.match(run_dir.parent.name) and len(run_dir.parents) > 3:
        return run_dir.parents[3]
    return None


def analysis_dir(run_dir: Path) -> Path:
    """WORKDIR/analysis/<dataset>/<split_dir>/seed<k> for a run in the grid's layout, beside the
    report; run folders elsewhere get an analysis/ folder next to them."""
    run_dir = Path(run_dir).resolve()
    if _SEED_DIR_RE.match(run_dir.parent.name):
        seed_dir = run_dir.parent
        return seed_dir.parents[2] / "analysis" / seed_dir.relative_to(seed_dir.parents[2])
    return run_dir.parent / "analysis"


def find_seed_dirs(path) -> list[Path]:
    """Seed folders with a finished base pair: `path` itself, or every one under it."""
    path = Path(path)
    if not path.is_dir():
        raise AnalysisError(f"{path} is not a directory; give the grid's WORKDIR (e.g. runs) or "
                            "one of its WORKDIR/<dataset>/<split_dir>/seed<k> folders")
    candidates = [path] if _SEED_DIR_RE.match(path.name) else sorted(
        p for p in path.rglob("seed*") if p.is_dir() and _SEED_DIR_RE.match(p.name)
        and "analysis" not in p.relative_to(path).parts and "logs" not in p.relative_to(path).parts)
    found = [p for p in candidates
             if all(RunDir(p / f"base{h}").is_done() for h in naming.HALVES)]
    if not found:
        raise AnalysisError(f"no finished base pair under {path}: predict needs baseA and baseB "
                            "with result.json in a WORKDIR/<dataset>/<split_dir>/seed<k> folder. "
                            "Train them first (./launch.sh, or python -m keras_transfer.main "
                            "--source=none --target=A, then --target=B).")
    return found


def workdir_of(seed_dir: Path) -> Path:
    """The grid's WORKDIR of one of its WORKDIR/<dataset>/<split_dir>/seed<k> folders."""
    return Path(seed_dir).resolve().parents[2]
