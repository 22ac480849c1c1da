"""`python -m data_prep`: bad input is one clear line and exit 1 with nothing written; a good
run and `verify` work end to end. Runs in subprocesses, as a user would."""
import shutil

import numpy as np
import pytest

from data_prep import idx, manifest
from data_prep_helpers import error_lines, run_cli


def _refused(done, *phrases):
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    lines = error_lines(done.stderr)
    assert len(lines) == 1 and lines[0].startswith("data_prep: error: "), done.stderr
    for phrase in phrases:
        assert phrase in lines[0], lines[0]


def _fashion_dir(tmp_path, n=20):
    """A tiny Fashion-MNIST-shaped IDX directory (n train and n test images)."""
    d = tmp_path / "idx"
    d.mkdir()
    rng = np.random.default_rng(0)
    for prefix in ("train", "t10k"):
        idx.write_idx(d / f"{prefix}-images-idx3-ubyte.gz",
                      rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        idx.write_idx(d / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n, dtype=np.uint8) % 10)
    return d


def test_missing_source_directory_says_how_to_install(tmp_path):
    done = run_cli("--source=fashion_mnist", f"--source_dir={tmp_path}/nowhere",
                   f"--out={tmp_path}/out")
    _refused(done, "Fashion-MNIST not found", "apt-get install -y dataset-fashion-mnist",
             "--source_dir")
    assert not (tmp_path / "out").exists()


def test_truncated_idx_file_is_refused(tmp_path):
    d = _fashion_dir(tmp_path)
    path = d / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:100])
    done = run_cli(f"--source_dir={d}", f"--out={tmp_path}/out")
    _refused(done, str(path), "truncated")
    assert not (tmp_path / "out").exists()


def test_mis_headed_idx_file_is_refused(tmp_path):
    d = _fashion_dir(tmp_path)
    shutil.copy(d / "train-labels-idx1-ubyte.gz", d / "train-images-idx3-ubyte.gz")
    done = run_cli(f"--source_dir={d}", f"--out={tmp_path}/out")
    _refused(done, "train-images-idx3-ubyte.gz", "IDX magic")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("n", ["0", "-5"])
def test_non_positive_examples_per_class_is_refused(tmp_path, n):
    done = run_cli("--source=synthetic", f"--examples_per_class={n}", f"--out={tmp_path}/out")
    _refused(done, f"--examples_per_class={n}")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("content, phrase", [
    ('{"A": [0, 1], "B": [1, 2]}', "overlap"),
    ('{"A": [], "B": [1, 2]}', "empty"),
    ('{"A": ["Trouser"], "B": ["Unicorn"]}', "unknown classes ['Unicorn']"),
])
def test_bad_split_files_are_refused(tmp_path, content, phrase):
    split_file = tmp_path / "split.json"
    split_file.write_text(content)
    done = run_cli(f"--source_dir={_fashion_dir(tmp_path)}", f"--split=classes:{split_file}",
                   f"--out={tmp_path}/out")
    _refused(done, phrase)
    assert not (tmp_path / "out").exists()


def test_unknown_positional_argument_is_refused():
    _refused(run_cli("prepare"), "unexpected arguments")


@pytest.mark.slow
def test_prepare_verify_and_refuse_a_different_manifest(tmp_path):
    out = tmp_path / "out"
    done = run_cli(f"--source_dir={_fashion_dir(tmp_path)}", "--split=dissimilar",
                   f"--out={out}")
    assert done.returncode == 0, done.stderr
    assert "A 6 classes, B 4 classes; train 20, validation 20 images" in done.stderr
    half_a = out / "fashion_mnist" / "dissimilar" / "A"
    assert manifest.load_manifest(half_a)["counts"] == {"train": 12, "validation": 12}

    done = run_cli("verify", out)
    assert done.returncode == 0 and done.stdout.count("OK") == 2, done.stdout

    # The same output path prepared from other data is refused; the old data stays intact.
    other = tmp_path / "other"
    other.mkdir()
    shard = sorted(half_a.glob("train-*"))[0]
    before = shard.read_bytes()
    done = run_cli(f"--source_dir={_fashion_dir(other, n=30)}", "--split=dissimilar",
                   "--image_size=32", f"--out={out}")
    _refused(done, "different settings", "--overwrite")
    assert shard.read_bytes() == before

    data = bytearray(before)
    data[-10] ^= 0xFF
    shard.write_bytes(bytes(data))
    done = run_cli("verify", out)
    assert done.returncode == 1
    assert f"BAD  {half_a}" in done.stdout and shard.name in done.stdout and "sha256" in done.stdout


def test_verify_without_prepared_data_is_refused(tmp_path):
    _refused(run_cli("verify", tmp_path), "no prepared data", str(tmp_path))
