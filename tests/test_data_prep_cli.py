"""`python -m data_prep`: bad input is one clear line and exit 1 with nothing written; a good
run and `verify` work end to end; two runs on one output, a kill while publishing and Ctrl-C
leave the old data or the new, never a mix. Runs in subprocesses, as a user would, with real
signals."""
import os
import re
import shutil
import signal
import time

import numpy as np
import pytest
from PIL import Image

from data_prep import idx, manifest
from data_prep.prepare import prepare
from data_prep.sources import SyntheticSpec
from data_prep_helpers import (class_image, error_lines, make_image_folder, run_cli, start_cli,
                               wait_until)


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


@pytest.mark.parametrize("args, phrase", [
    (["--num_workers=two"], "flag --num_workers=two: invalid literal for int()"),
    (["--flagfile=/nonexistent/x.flags"], "Unable to open flagfile"),
])
def test_a_flag_absl_cannot_parse_is_one_line_too(args, phrase):
    _refused(run_cli(*args), phrase, "(--help lists the flags)")


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


def test_a_folder_of_images_of_several_sizes_is_refused_naming_two_and_the_fix(tmp_path):
    root = make_image_folder(tmp_path / "pets", per_class=3, size=(20, 24))
    odd = root / "owl" / "img_01.png"
    Image.fromarray(class_image(0, 0, size=(16, 16))).save(odd)
    done = run_cli(f"--source=folder:{root}", f"--out={tmp_path / 'out'}")
    _refused(done, f"{root / 'cat' / 'img_00.png'} is 20x24, {odd} is 16x16 (height x width)",
             "--image_size=N")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("lacking", ["missing", "empty"])
def test_a_validation_folder_lacking_a_training_class_is_refused(tmp_path, lacking):
    """ROOT/validation without images of class `fox` (no folder, or an empty one): its half's
    top-1 would be measured on some classes only."""
    root = make_image_folder(tmp_path / "pets", per_class=3, split_layout=True)
    shutil.rmtree(root / "validation" / "fox")
    if lacking == "empty":
        (root / "validation" / "fox").mkdir()
    done = run_cli(f"--source=folder:{root}", "--split=random:0", f"--out={tmp_path / 'out'}")
    _refused(done, f"{root / 'validation'} has no images of training classes fox;",
             "add validation images", "or use the one-folder layout ROOT/<class>/",
             "every 10th image")
    assert not (tmp_path / "out").exists()


def test_a_folder_of_one_class_is_refused_naming_the_real_minimum(tmp_path):
    root = make_image_folder(tmp_path / "pets", classes=("cat",), per_class=3)
    done = run_cli(f"--source=folder:{root}", f"--out={tmp_path / 'out'}")
    _refused(done, f"{root} has 1 class folders; a split into halves A and B needs 4 classes "
             "or more, 2 per half; --split=whole needs 2")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("module", ["data_prep", "data_prep.splits"])
def test_help_lists_every_flag_of_data_prep_and_none_of_absls(module):
    """--help lists what --helpfull lists under data_prep.cli_flags, with the help texts."""
    def listed(text, after=None):
        lines = text.splitlines()
        if after is not None:  # the module's section of --helpfull
            lines = lines[lines.index(after) + 1:]
            lines = lines[:next((i for i, line in enumerate(lines) if line.endswith(":")
                                 and not line.startswith(" ")), len(lines))]
        return {line.split(":")[0].strip().replace("--[no]", "--")
                for line in lines if line.startswith("  --")}

    short = run_cli("--help", module=module)
    full = run_cli("--helpfull", module=module)
    assert "Traceback" not in short.stderr + full.stderr  # absl's --help exits with status 1
    ours = listed(full.stdout, after="data_prep.cli_flags:")
    assert {"--source", "--split", "--out", "--image_size", "--synthetic_seed"} <= ours
    assert listed(short.stdout) == ours
    assert "Resize images to SIZE x SIZE" in short.stdout


def test_verify_without_prepared_data_is_refused(tmp_path):
    _refused(run_cli("verify", tmp_path), "no prepared data", str(tmp_path))


# A preparation that encodes for seconds on two workers, so that a test can act while it runs,
# and a quick one; `seed` changes the images (so the output), not the classes of the halves.
def _long(out, seed, *extra):
    return ("--source=synthetic", "--split=random:0", f"--out={out}",
            "--synthetic_num_classes=4", "--synthetic_image_size=32",
            "--synthetic_train_per_class=1500", "--synthetic_validation_per_class=10",
            f"--synthetic_seed={seed}", "--num_workers=2", "--noprogress", *extra)


def _small(out, seed, *extra):
    return ("--source=synthetic", "--split=random:0", f"--out={out}",
            "--synthetic_num_classes=4", "--synthetic_image_size=32",
            "--synthetic_train_per_class=20", "--synthetic_validation_per_class=5",
            f"--synthetic_seed={seed}", "--noprogress", *extra)


def _prepared(out, seed):
    """Prepares _small(out, seed) in this process (no second TensorFlow start-up)."""
    return prepare("synthetic", "random:0", out, progress=False,
                   synthetic=SyntheticSpec(num_classes=4, image_size=32, train_per_class=20,
                                           validation_per_class=5, seed=seed))


def _tree(root):
    """Every folder and file below root, with the files' bytes."""
    return {p.relative_to(root): None if p.is_dir() else p.read_bytes()
            for p in sorted(root.rglob("*"))}


def _published(root):
    """The files a reader sees: none in a hidden folder (staging) and no hidden file (locks)."""
    return {p: b for p, b in _tree(root).items()
            if b is not None and not any(part.startswith(".") for part in p.parts)}


def _staged_shards(root):
    """Whether shards are being written in a hidden (staging) folder."""
    return any(any(part.startswith(".") for part in p.relative_to(root).parts)
               for p in root.rglob("*.tfrecord"))


def _seeds(out):
    """The synthetic seed each published half was prepared from."""
    return {h: manifest.load_manifest(out / "synthetic" / "random_0" / h)
            ["source_options"]["synthetic"]["seed"] for h in "AB"}


_TF_START_UP = re.compile(r"^(WARNING: All log messages before absl::InitializeLog|"
                          r"[IWE]\d{4} [\d:.]+ +\d+ \S+:\d+\])")


def _stop_group(process):
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()


@pytest.mark.slow
def test_a_second_data_prep_on_the_same_output_is_refused_naming_the_first(tmp_path):
    """While one run prepares a split, another on the same --out stops with one line naming the
    first process and the fix, and changes nothing; the first finishes as if alone."""
    out = tmp_path / "out"
    _prepared(out, seed=1)
    before = _published(out)
    first = start_cli(*_long(out, 2, "--overwrite"))
    try:
        wait_until(lambda: _staged_shards(out), first, what="the first run to write shards")
        os.killpg(first.pid, signal.SIGSTOP)  # held mid-way, whatever the machine's speed
        second = run_cli(*_long(out, 3, "--overwrite"))
        _refused(second, f"pid {first.pid}", "run this command again")
        assert _published(out) == before
        os.killpg(first.pid, signal.SIGCONT)
        _, err = first.communicate(timeout=300)
        assert first.returncode == 0, err
    finally:
        _stop_group(first)
    assert _seeds(out) == {"A": 2, "B": 2}
    assert run_cli("verify", out).returncode == 0
    assert [p for p in out.rglob(".*")] == []  # no lock file or staging folder is left


@pytest.mark.slow
def test_a_kill_while_publishing_leaves_the_old_halves_or_the_new_never_a_mix(tmp_path):
    """SIGKILL at the first sign of the new data: both halves are then old or both new (or the
    pair is refused), and the same command again publishes whole, leaving nothing behind."""
    out = tmp_path / "out"
    half_a = _prepared(out, seed=1)["A"]
    old = (half_a / "manifest.json").read_bytes()
    # A big old half takes a while to remove: a moment between publishing the two halves, if
    # there is one, then lasts long enough to be caught.
    junk = half_a / "logs"
    junk.mkdir()
    for i in range(20000):
        (junk / str(i)).touch()

    def a_is_new():
        try:
            return (half_a / "manifest.json").read_bytes() != old
        except FileNotFoundError:
            return False

    run = start_cli(*_small(out, 2, "--overwrite"))
    try:
        wait_until(a_is_new, run, what="the new half A to appear")
        os.killpg(run.pid, signal.SIGKILL)
        run.communicate()
    finally:
        _stop_group(run)
    checked = run_cli("verify", out)
    if _seeds(out) == {"A": 2, "B": 2}:
        assert checked.returncode == 0, checked.stdout
    else:
        assert checked.returncode == 1 and "prepared by different runs" in checked.stdout, \
            (_seeds(out), checked.stdout)
    again = run_cli(*_small(out, 2, "--overwrite"))
    assert again.returncode == 0, again.stderr
    assert _seeds(out) == {"A": 2, "B": 2} and run_cli("verify", out).returncode == 0
    assert [p for p in out.rglob(".*")] == []  # the killed run's leftovers are gone


@pytest.mark.slow
@pytest.mark.parametrize("existing", [False, True], ids=["new", "overwrite"])
def test_ctrl_c_is_one_line_and_exit_130_and_publishes_nothing(tmp_path, existing):
    """SIGINT to the process group, as a terminal's Ctrl-C sends it, while workers encode: one
    line, exit 130, no worker traceback, the output as it was (none: no folder either), no
    staging folder and no process left."""
    out = tmp_path / "out"
    if existing:
        _prepared(out, seed=1)
    before = _tree(out) if existing else None
    run = start_cli(*_long(out, 2, "--overwrite"))
    try:
        wait_until(lambda: _staged_shards(out), run, what="shards being written")
        os.killpg(run.pid, signal.SIGINT)
        _, err = run.communicate(timeout=120)
    finally:
        _stop_group(run)
    assert run.returncode == 130, err
    assert error_lines(err) == [
        "data_prep: interrupted; nothing was published; run the same command again"], err
    other = [line for line in err.splitlines()
             if not line.startswith("data_prep") and not _TF_START_UP.match(line)]
    assert other == [], err  # no worker traceback
    if existing:
        assert _tree(out) == before
    else:
        assert not out.exists()
    deadline = time.monotonic() + 30
    while True:  # the workers have gone with the run
        try:
            os.killpg(run.pid, 0)
        except ProcessLookupError:
            break
        assert time.monotonic() < deadline, "a worker outlived the interrupted run"
        time.sleep(0.05)
