"""Shared by the tests that train one net on several replicas or workers and compare it with
one process training the same global batches."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
# Deterministic ops, no dropout (each replica draws its own masks), a few steps of baseA.
SAME_AS_ONE_PROCESS = ["--deterministic", "--dropout=0", "--steps=6", "--target=A"]


def main_command(data_dir, workdir, *flags):
    return [sys.executable, "-m", "keras_transfer.main",
            f"--flagfile={REPO / 'flags' / 'smoke.flags'}", "--dataset=synthetic",
            f"--data_dir={data_dir}", f"--workdir={workdir}", *flags]


def run_dir(workdir, name="baseA"):
    return Path(workdir) / "synthetic" / "random_0" / "seed0" / name


def weights(workdir):
    import h5py  # installed with keras
    arrays = []
    with h5py.File(run_dir(workdir) / "model.weights.h5") as f:
        f.visititems(lambda name, item: arrays.append((name, item[()]))
                     if isinstance(item, h5py.Dataset) else None)
    return dict(arrays)


def train_one_process(data_dir, workdir):
    """The reference: the net trained by one process on one device; returns its workdir."""
    done = subprocess.run(main_command(data_dir, workdir, "--strategy=one_device",
                                       *SAME_AS_ONE_PROCESS),
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return workdir


def assert_same_training(workdir, reference, replicas):
    """The run in `workdir` trained on `replicas` replicas as the one-process `reference` did:
    the same evaluations and, within float tolerance, the same losses and final weights."""
    result = json.loads((run_dir(workdir) / "result.json").read_text())
    expected = json.loads((run_dir(reference) / "result.json").read_text())
    assert result["replicas"] == replicas and expected["replicas"] == 1
    assert [h["step"] for h in result["history"]] == [h["step"] for h in expected["history"]]
    for got, want in zip(result["history"], expected["history"]):
        assert got["loss"] == pytest.approx(want["loss"], rel=1e-5, abs=1e-6)
        assert got["top1"] == want["top1"]
    mine, theirs = weights(workdir), weights(reference)
    assert mine.keys() == theirs.keys() and mine
    for name in mine:
        np.testing.assert_allclose(mine[name], theirs[name], rtol=1e-4, atol=1e-6, err_msg=name)
