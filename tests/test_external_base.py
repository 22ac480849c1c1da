"""Transfer from a network the grid did not train (main's --base_model, external_base.py): a
net copies exactly the saved network's cut points (hash for hash, frozen ones unchanged by
training), inputs of another size and channels are adapted as asked or refused in one line, a
tiny grid with an external base trains no baseA and reports its AnB nets, a mismatched file is
refused before anything is written, and a finished net whose file has changed is stale."""
import csv
import dataclasses
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from keras_transfer import grid, models, report, resolve, run_records, train, transfer
from train_helpers import smoke_config, train_on_cpu

REPO = Path(__file__).resolve().parents[1]
# The synthetic fixture's 28x28x1 images, cropped as the small model crops them.
CROP_SHAPE = (26, 26, 1)


def save_trained(path, model_name, input_shape, num_classes=7, seed=3):
    """A `model_name` net trained a few steps on random data and saved whole (model.save):
    what a researcher brings from elsewhere."""
    import keras

    model = models.build(model_name, num_classes, input_shape, seed=seed)
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="sparse_categorical_crossentropy")
    rng = np.random.default_rng(seed)
    images = rng.normal(size=(16, *input_shape)).astype("float32")
    labels = rng.integers(0, num_classes, size=16)
    model.fit(images, labels, batch_size=8, epochs=1, verbose=0)
    model.save(path)
    return path


def file_sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def saved_block_hashes(path, model_name):
    """{cut point: sha256} of a saved net, read with Keras alone (block_sha256 of the loaded
    model), independently of external_base."""
    import keras

    from keras_transfer import layers
    del layers  # imported for its registration of the custom layers the file holds
    return transfer.block_sha256(keras.saving.load_model(path, compile=False), model_name)


@pytest.fixture(scope="module")
def external_small(tmp_path_factory):
    """A small net saved at the target's crop shape, trained elsewhere on 7 classes."""
    return save_trained(tmp_path_factory.mktemp("external") / "small.keras", "small", CROP_SHAPE)


@pytest.fixture(scope="module")
def external_rgb(tmp_path_factory):
    """A small net of 40x40x3 images: other size and channels than the target's. Its fc6 takes
    5x5x32 features (40 -> 20 -> 10 -> 5 through the pools), the target's crops give 4x4x32."""
    return save_trained(tmp_path_factory.mktemp("external") / "rgb40.keras", "small", (40, 40, 3))


@pytest.mark.slow
def test_transfer_nets_copy_exactly_the_external_weights(synthetic_data, external_small,
                                                         tmp_path):
    frozen = smoke_config(synthetic_data, tmp_path, source="A", n=3,
                          base_model=str(external_small))
    tuned = dataclasses.replace(frozen, n=2, finetune=True)
    results = train.run_pack([frozen, tuned], _cpu())
    saved = saved_block_hashes(external_small, "small")
    for config, result in zip((frozen, tuned), results):
        assert isinstance(result, dict), result
        rows = {row["name"]: row for row in result["layers"]}
        copied = models.get("small").cut_names[:config.n]
        record = result["external_base"]
        assert record["path"] == str(Path(external_small).resolve())
        assert record["sha256"] == file_sha256(external_small)
        assert record["layers"] == {cut: saved[cut] for cut in copied}
        assert record["mean_half"] == "B" and result["data"]["mean_half"] == "B"
        for cut in copied:
            assert rows[cut]["origin"] == "external"
            assert rows[cut]["sha256_start"] == saved[cut]
            if config.finetune:
                assert rows[cut]["sha256_end"] != saved[cut]
            else:  # frozen: unchanged after training
                assert rows[cut]["sha256_end"] == saved[cut]
        for cut in models.get("small").cut_names[config.n:]:
            assert rows[cut]["origin"] == "new" and rows[cut]["sha256_start"] != saved[cut]
        written = json.loads((config.run_dir / "config.json").read_text())
        assert written["base_model"] == str(external_small)
        assert written["external_base"]["sha256"] == file_sha256(external_small)
        assert written["external_base"]["layers"] == record["layers"]
    # No baseA was needed, nor made.
    assert not frozen.base_run_dir("A").exists()


@pytest.mark.slow
def test_other_images_are_adapted_as_asked(synthetic_data, external_rgb, tmp_path):
    """40x40x3 inputs from 28x28x1 images: crops resized and their grey channel repeated, so
    fc6 (whose input width follows the image size) copies too."""
    config = smoke_config(synthetic_data, tmp_path, source="A", n=6, finetune=False,
                          base_model=str(external_rgb), adapt_input="resize",
                          adapt_channels="repeat")
    result = train_on_cpu(config)
    saved = saved_block_hashes(external_rgb, "small")
    assert result["external_base"]["adaptation"] == {"mode": "resize", "size": [40, 40],
                                                     "channels": 3}
    assert result["external_base"]["model_input"] == [40, 40, 3]
    for row in result["layers"][:6]:
        assert row["sha256_start"] == row["sha256_end"] == saved[row["name"]]
    # pad: the 26x26 crops in the middle of 40x40 zeros (the mean, once subtracted).
    padded = dataclasses.replace(config, adapt_input="pad", workdir=str(tmp_path / "pad"))
    assert resolve.resolve(padded).external.adaptation.size == (40, 40)


def test_the_adaptation_resizes_crops_pads_and_repeats_channels():
    import tensorflow as tf

    from keras_transfer import data

    images = tf.constant(np.arange(2 * 4 * 4, dtype="float32").reshape(2, 4, 4, 1))
    pad = data.adapt_images(images, data.InputAdaptation("pad", (6, 6), channels=3)).numpy()
    assert pad.shape == (2, 6, 6, 3) and (pad[:, 1:5, 1:5, 2] == images[..., 0]).numpy().all()
    assert pad[:, 0].sum() == pad[:, :, 5].sum() == 0
    crop = data.adapt_images(images, data.InputAdaptation("crop", (2, 2))).numpy()
    assert (crop == images[:, 1:3, 1:3]).numpy().all()
    resized = data.adapt_images(images, data.InputAdaptation("resize", (8, 8))).numpy()
    assert resized.shape == (2, 8, 8, 1)
    assert resized.mean() == pytest.approx(float(tf.reduce_mean(images)), rel=1e-3)


@pytest.mark.parametrize("flags, message", [
    # The rule for dense layers: fc6 takes 5x5x32 features of 40x40 images, 4x4x32 of the crops.
    (dict(n=6, adapt_channels="repeat"),
     r"^layer fc6 of --base_model=\S+ holds weights of shapes \[\(800, 128\), \(128,\)\], but "
     r"--model=small with 26x26x3 inputs needs \[\(512, 128\), \(128,\)\]: .*--adapt_input="
     r".*--n=5"),
    (dict(n=1), r"takes 3-channel images and half B's have 1: give --adapt_channels=repeat"),
    (dict(n=1, adapt_input="crop", adapt_channels="repeat"),
     r"--adapt_input=crop cannot make the 26x26 crops .* the 40x40 inputs"),
])
def test_inputs_that_cannot_fit_are_refused_in_one_line(synthetic_data, external_rgb,
                                                        tmp_path, flags, message):
    config = smoke_config(synthetic_data, tmp_path / "runs", source="A",
                          base_model=str(external_rgb), **flags)
    with pytest.raises(resolve.RunError, match=message) as refused:
        resolve.resolve(config)
    assert "\n" not in str(refused.value)


@pytest.fixture(scope="module")
def other_architecture(tmp_path_factory):
    """A resnet_small net saved whole: not the small network main is asked to train."""
    return save_trained(tmp_path_factory.mktemp("external") / "resnet.keras", "resnet_small",
                        CROP_SHAPE)


@pytest.mark.slow
@pytest.mark.parametrize("case", ["other architecture", "other shapes", "not a model",
                                  "a zip, not a model"])
def test_a_mismatched_file_is_refused_by_main_in_one_line_writing_nothing(
        synthetic_data, external_rgb, other_architecture, tmp_path, case):
    base_model, n, expected = {
        "other architecture": (other_architecture, 3, r"has no layer conv1 \(cut point conv1 of "
                               r"--model=small, copied for --n=3\): it is not a small network"),
        "other shapes": (external_rgb, 6, r"layer fc6 of .* holds weights of shapes "
                         r"\[\(800, 128\), \(128,\)\], but --model=small with 26x26x3 inputs "
                         r"needs \[\(512, 128\), \(128,\)\]"),
        "not a model": (tmp_path / "notes.keras", 1, r"is not a saved Keras model \(a \.keras "
                        r"file is a zip archive, this one is not\)"),
        "a zip, not a model": (tmp_path / "notes.keras", 1,
                               r"cannot be read as a saved Keras model \(KeyError"),
    }[case]
    if case == "not a model":
        base_model.write_text("not a zip file")
    elif case == "a zip, not a model":
        with zipfile.ZipFile(base_model, "w") as archive:
            archive.writestr("notes.txt", "not a model")
    workdir = tmp_path / "runs"
    done = subprocess.run(
        [sys.executable, "-m", "keras_transfer.main", "--flagfile=flags/smoke.flags",
         "--dataset=synthetic", f"--data_dir={synthetic_data}", f"--workdir={workdir}",
         "--source=A", f"--n={n}", f"--base_model={base_model}", "--adapt_channels=repeat"
         if case == "other shapes" else "--adapt_channels=none"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(REPO)})
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, done.stderr
    assert re.search(expected, errors[0]), errors[0]
    assert not workdir.exists()


@pytest.mark.slow
def test_a_changed_external_file_makes_a_finished_net_stale(synthetic_data, tmp_path):
    external = save_trained(tmp_path / "base.keras", "small", CROP_SHAPE)
    config = smoke_config(synthetic_data, tmp_path / "runs", source="A", n=1,
                          base_model=str(external))
    first = train_on_cpu(config)
    assert train_on_cpu(config) == first  # the same file: reused
    run = run_records.RunDir(config.run_dir)
    assert run.why_stale(config, None) == []

    save_trained(external, "small", CROP_SHAPE, seed=4)  # trained again elsewhere
    reasons = run.why_stale(config, None)
    assert len(reasons) == 1 and "has changed since it copied its layers" in reasons[0]
    # Another file named: said as such, not as a change of the one it did copy from.
    other = save_trained(tmp_path / "other.keras", "small", CROP_SHAPE, seed=5)
    assert any(f"it copied its layers from --base_model={external}, not {other}" in reason
               for reason in run.why_stale(dataclasses.replace(config, base_model=str(other)),
                                           None))
    with pytest.raises(train.RunError, match="base.keras has changed since it copied its layers"):
        train_on_cpu(config)
    # The grid lists it before it starts, and retrains it only with --overwrite.
    plan = grid.make_plan([grid.PlannedNet("transfer", config.split, config.split_dir, 0, "A",
                                           "B", 1, False, external_base=True)], config)
    assert list(grid.stale_nets(plan, config).values()) == [reasons]
    # A net trained from the grid's baseA does not answer for the external one either.
    from_base_a = dataclasses.replace(config, base_model="")
    assert any("--base_model=" in r for r in run.why_stale(from_base_a, None))
    second = train_on_cpu(dataclasses.replace(config, overwrite=True))
    assert second["external_base"]["sha256"] == file_sha256(external) != \
        first["external_base"]["sha256"]


@pytest.mark.slow
def test_a_grid_with_an_external_base_trains_no_base_a_and_reports_its_transfer_nets(
        synthetic_data, external_small, tmp_path):
    out = io.StringIO()
    args = ["--experiments=transfer", "--targets=B", "--layers=1", "--jobs=2",
            f"--flagfile={REPO / 'flags' / 'smoke.flags'}", f"--workdir={tmp_path / 'runs'}",
            "--", "--dataset=synthetic", f"--data_dir={synthetic_data}",
            f"--base_model={external_small}"]
    assert grid.main(args, out=out) == 0, out.getvalue()
    seed_dir = tmp_path / "runs" / "synthetic" / "random_0" / "seed0"
    assert sorted(p.name for p in seed_dir.iterdir()) == ["A1B", "A1B+", "B1B", "B1B+", "baseB"]
    saved = saved_block_hashes(external_small, "small")
    for name in ("A1B", "A1B+"):
        result = json.loads((seed_dir / name / "result.json").read_text())
        assert result["layers"][0]["sha256_start"] == saved["conv1"]
    made = report.make_report(tmp_path / "runs")
    with open(made["files"]["results.csv"], newline="") as f:
        rows = {row["run"]: row for row in csv.DictReader(f)}
    assert sorted(rows) == ["A1B", "A1B+", "B1B", "B1B+", "baseB"]
    assert rows["A1B"]["condition"] == "transfer" and rows["A1B+"]["condition"] == "transfer+"
    digest = hashlib.sha256(Path(external_small).read_bytes()).hexdigest()
    assert rows["A1B"]["external_base_sha256"] == digest and rows["B1B"]["external_base"] == ""
    summary = Path(made["files"]["summary.md"]).read_text()
    assert (f"baseA is a network trained elsewhere (--base_model): {external_small} "
            f"(sha256 {digest[:12]})") in summary
    # Run again: every net is done and answers for the same file.
    again = io.StringIO()
    assert grid.main(args, out=again) == 0
    assert "5 nets, 5 already done" in again.getvalue(), again.getvalue()


@pytest.mark.parametrize("grid_args, message", [
    (["--targets=A,B"], "give --targets=B"),
    (["--targets=B", "--experiments=transfer,dissimilar"], "dissimilar compare base nets"),
    (["--targets=B"], "give --random_control=half"),
])
def test_a_grid_refuses_what_makes_no_sense_with_an_external_base(external_small, tmp_path,
                                                                  grid_args, message):
    with pytest.raises(grid.GridError, match=message):
        grid.main(["--dry_run", f"--workdir={tmp_path}", *grid_args, "--",
                   f"--base_model={external_small}"], out=io.StringIO())
    assert not any(tmp_path.iterdir())


@pytest.fixture(scope="module")
def external_tiny_convnet(tmp_path_factory):
    """A saved network of another architecture than the grid's default --model=small."""
    model = REPO / "docs" / "examples" / "my_model.py"
    return save_trained(tmp_path_factory.mktemp("external") / "mine.keras",
                        f"{model}:tiny_convnet", CROP_SHAPE)


@pytest.mark.parametrize("base_model, message", [
    ("mine", r"--base_model=\S*mine.keras has no layer conv1 \(cut point conv1 of --model=small"),
    ("junk", r"--base_model=\S*junk.keras is not a saved Keras model"),
])
def test_the_grid_refuses_a_base_model_main_would_refuse_before_it_plans(
        external_tiny_convnet, tmp_path, base_model, message):
    """The grid runs main's check of the network once, before anything is planned (also for
    --dry_run): one line, the grid's usage status 2, nothing written."""
    junk = tmp_path / "junk.keras"
    junk.write_text("not a model")
    path = external_tiny_convnet if base_model == "mine" else junk
    workdir = tmp_path / "runs"
    result = subprocess.run(
        [sys.executable, "-m", "keras_transfer.grid", "--targets=B", "--experiments=transfer",
         "--layers=1", f"--workdir={workdir}", "--dry_run", "--", f"--base_model={path}",
         "--steps=20", "--eval_every=10"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
        env={k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"})  # as a user's
    assert result.returncode == 2, result.stderr
    assert re.fullmatch(rf"launch.sh: error: {message}.*\n", result.stderr), result.stderr
    assert result.stdout == "" and not workdir.exists()


def test_the_grid_loads_tensorflow_to_check_only_a_given_base_model(external_small, tmp_path):
    check = ("import sys; from keras_transfer import grid; "
             "grid.main(['--check_args', '--targets=B', '--experiments=transfer', '--layers=1', "
             "'--random_control=half', '--workdir={}', '--', *sys.argv[1:]]); "
             "print('tensorflow' in sys.modules)").format(tmp_path)
    for flags, loaded in (([], "False"), ([f"--base_model={external_small}"], "True")):
        result = subprocess.run([sys.executable, "-c", check, *flags], cwd=REPO,
                                capture_output=True, text=True, timeout=300)
        assert result.stdout.strip() == loaded, result.stderr


def test_main_refuses_what_makes_no_sense_with_an_external_base(synthetic_data, external_small,
                                                                tmp_path):
    for flags, message in ((dict(source="A", target="A", n=1, base_model=str(external_small)),
                            "--base_model stands in for baseA, so the nets it serves train on "
                            "half B; A1A trains on half A"),
                           (dict(source="A", n=1, adapt_input="resize"),
                            "--adapt_input=resize adapts inputs to a network trained "
                            "elsewhere: give it with --base_model"),
                           (dict(source="A", n=1, base_model=str(tmp_path / "missing.keras")),
                            "missing.keras: no such file"),
                           (dict(source="A", n=1, base_model="weights.h5"),
                            "a weights file .* is read by keras.applications, which builds "
                            "resnet50 and mobilenetv2, not --model=small")):
        with pytest.raises(resolve.RunError, match=message):
            resolve.resolve(smoke_config(synthetic_data, tmp_path / "runs", **flags))
    assert not (tmp_path / "runs").exists()


def test_a_keras_applications_weights_file_is_a_base(tmp_path):
    """keras.applications' weights=PATH: MobileNetV2's weights saved without its top, copied
    by the cut points of --model=mobilenetv2; a file of another network is refused."""
    import keras

    from keras_transfer import external_base
    from keras_transfer.config import Config

    saved = keras.applications.MobileNetV2(weights=None, include_top=False,
                                           input_shape=(32, 32, 3))
    path = tmp_path / "mobilenetv2_notop.weights.h5"
    saved.save_weights(path)
    arch = models.get("mobilenetv2")
    config = Config(model="mobilenetv2", base_model=str(path), source="A", n=2)
    base = external_base.read(config, (32, 32, 3), 5)
    assert base.kind == "weights" and base.sha256 == file_sha256(path)
    for cut in ("stem", "blocks1-2"):
        layers = [layer for layer in saved.layers
                  if layer.weights and arch.block_of(layer.name) == cut]
        assert base.digests[cut] == transfer.weights_sha256(
            w for layer in layers for w in layer.get_weights())
    with pytest.raises(external_base.ExternalBaseError,
                       match=r"cannot be loaded as keras.applications.ResNet50\(include_top=False\)"):
        external_base.read(dataclasses.replace(config, model="resnet50"), (32, 32, 3), 5)


def _cpu():
    import tensorflow as tf

    return tf.distribute.OneDeviceStrategy("/cpu:0")
