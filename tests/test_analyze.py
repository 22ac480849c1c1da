"""python -m keras_transfer.analyze and its modules (trained_nets, similarity, predict, filters) on
tiny nets trained for real on synthetic TFRecords."""
import json
import os
import signal
import shutil
import sys
from pathlib import Path

import keras
import matplotlib.image
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from data_prep import quiet_tensorflow
from keras_transfer import analyze, data, filter_images, models, train
from keras_transfer.analyze import cka, predict, similarity, trained_nets
from keras_transfer.report import stats
from keras_transfer.config import Config

SMOKE = dict(model="small", batch_size=8, steps=2, eval_every=2, eval_steps=1, lr=0.05,
             lr_step=0, histogram_every=1, strategy="one_device", dataset="synthetic")
TRANSFER_NS = (1, 2, 3)
RESNET_CUTS = models.get("resnet_small").cut_names  # stem, block1, ...


def _config(data_dir, workdir, **kw):
    return Config(data_dir=str(data_dir), workdir=str(workdir), **{**SMOKE, **kw})


def _train_grid(data_dir, workdir, model, transfer_ns):
    """(WORKDIR, seed folder, split folder) with baseA, baseB and the frozen transfer nets AnB,
    n in `transfer_ns`, of one seed, all `model` nets."""
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    configs = [_config(data_dir, workdir, model=model, target=h) for h in "AB"]
    configs += [_config(data_dir, workdir, model=model, source="A", target="B", n=n)
                for n in transfer_ns]
    for config in configs:
        train.run(config, strategy)
    seed_dir = configs[0].run_dir.parent
    return workdir, seed_dir, data_dir / "synthetic" / "random_0"


@pytest.fixture(scope="module")
def grid(synthetic_data, tmp_path_factory):
    """A grid of `small` nets, CaffeNet's layers conv1..fc7 as cut points, with A1B..A3B."""
    return _train_grid(synthetic_data, tmp_path_factory.mktemp("runs"), SMOKE["model"],
                       TRANSFER_NS)


@pytest.fixture(scope="module")
def resnet_grid(synthetic_data, tmp_path_factory):
    """The base pair of a `resnet_small` grid: batch normalisation, cut points stem, block1,
    ... No transfer nets: predict reads only their result.json, which a test can
    write, and training them would double the time."""
    return _train_grid(synthetic_data, tmp_path_factory.mktemp("runs_resnet"), "resnet_small", ())


def _run_cli(monkeypatch, capsys, *argv):
    """The console entry point as a user runs it; returns (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["keras-transfer-analyze", *argv])
    with pytest.raises(SystemExit) as exit_info:
        analyze.run()
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def _activations(run_dir, half_dir, layers):
    """All validation activations at the cut points `layers` of a net in memory (the tiny set
    allows it), float64, flat."""
    net = trained_nets.open_run(run_dir)
    manifest = data.load_half(half_dir)
    model = trained_nets.load_model(net, manifest["image_shape"])
    outputs = {cut.name: cut.output for cut in models.get(net.model_name).cut_points}
    extractor = keras.Model(model.inputs, [model.get_layer(outputs[n]).output for n in layers])
    settings = data.InputSettings(batch_size=16, training=False, model_name=net.model_name)
    batches = [extractor(images, training=False)
               for images, _ in data.build_dataset(half_dir, "validation", settings)]
    return [np.concatenate([np.asarray(b[i], np.float64).reshape(len(b[i]), -1)
                            for b in batches]) for i in range(len(layers))]


@pytest.mark.slow
def test_similarity_cli_writes_json_heatmap_and_tensorboard(grid, monkeypatch, capsys, tmp_path):
    _, seed_dir, split_dir = grid
    out = tmp_path / "sim"
    code, stdout, _ = _run_cli(monkeypatch, capsys, "similarity", "--a", str(seed_dir / "baseA"),
                               "--b", str(seed_dir / "baseA"), "--data", str(split_dir / "B"),
                               "--batch_size", "8", "--out", str(out))
    assert code == 0
    assert "conv1" in stdout
    result = json.loads((out / "similarity.json").read_text())
    assert result["layers"] == list(models.get(SMOKE["model"]).cut_names)
    assert result["batch_size"] == 8 and result["examples"] == 40  # 5 classes x 8 images
    # A net against itself: CKA of a representation with itself is 1 at every layer.
    for name in result["layers"]:
        assert result["cka"][name] == pytest.approx(1.0, abs=1e-4)
    matrix = np.array(result["matrix"], dtype=float)
    assert matrix.shape == (7, 7)
    np.testing.assert_allclose(matrix, matrix.T, atol=1e-4)
    assert matplotlib.image.imread(out / "similarity.png").ndim == 3
    assert list((out / "tb").glob("events.out.tfevents.*"))
    assert not list(tmp_path.glob(".staging-*"))


@pytest.mark.slow
def test_similarity_matches_cka_of_all_activations(grid):
    # The streamed pipeline (per-batch centring, float32 Gram matrices) against numpy CKA of
    # the activations held in memory. 1e-4: float32 Gram matrices against float64 ones.
    _, seed_dir, split_dir = grid
    layers = ("conv1", "conv3", "fc7")
    acts_a = _activations(seed_dir / "baseA", split_dir / "B", layers)
    acts_b = _activations(seed_dir / "baseB", split_dir / "B", layers)
    one_batch = similarity.similarity(seed_dir / "baseA", seed_dir / "baseB", split_dir / "B",
                                      layers=layers, batch_size=40)
    minibatches = similarity.similarity(seed_dir / "baseA", seed_dir / "baseB", split_dir / "B",
                                        layers=layers, batch_size=8)
    assert minibatches["batches"] == 5
    for i, name in enumerate(layers):
        assert one_batch["cka"][name] == pytest.approx(cka.cka(acts_a[i], acts_b[i]), abs=1e-4)
        assert minibatches["cka"][name] == pytest.approx(
            cka.minibatch_cka(acts_a[i], acts_b[i], 8), abs=1e-4)
        assert minibatches["cka_biased"][name] == pytest.approx(
            cka.minibatch_cka(acts_a[i], acts_b[i], 8, "biased"), abs=1e-4)


def _stream(half_dir, crop=None, reorder=None):
    ds = data.build_dataset(half_dir, "validation",
                            data.InputSettings(batch_size=8, training=False, crop=crop))
    if reorder is not None:
        ds = reorder(ds.unbatch()).batch(8)
    return ds.as_numpy_iterator()


def test_a_shuffled_sample_order_is_refused(grid):
    half = grid[2] / "B"
    shuffled = _stream(half, reorder=lambda ds: ds.shuffle(100, seed=1))
    pairs, _ = similarity.paired_batches(_stream(half), shuffled, (1.0, 1.0))
    with pytest.raises(similarity.SampleOrderError, match="differ in order"):
        list(pairs)


def test_a_different_example_count_is_refused(grid):
    half = grid[2] / "B"
    fewer = _stream(half, reorder=lambda ds: ds.take(35))
    pairs, _ = similarity.paired_batches(_stream(half), fewer, (1.0, 1.0))
    with pytest.raises(similarity.SampleOrderError, match="examples"):
        list(pairs)


def test_same_examples_with_different_crops_are_accepted(grid):
    half = grid[2] / "B"
    pairs, stats = similarity.paired_batches(_stream(half, crop=26), _stream(half, crop=22),
                                             (1.0, 1.0))
    shapes = [(a.shape, b.shape) for a, b in pairs]
    assert len(shapes) == 5 and shapes[0] == ((8, 26, 26, 1), (8, 22, 22, 1))
    assert stats == {"batches": 5, "batch_size": 8, "dropped": 0}


def test_bad_input_is_refused_with_nothing_written(grid, monkeypatch, capsys, tmp_path):
    _, seed_dir, split_dir = grid
    out = tmp_path / "out"
    base = ["similarity", "--out", str(out), "--data", str(split_dir / "B")]
    code, _, err = _run_cli(monkeypatch, capsys, *base, "--a", str(tmp_path / "nowhere"),
                            "--b", str(seed_dir / "baseB"))
    assert code == 2 and "run directory not found" in err

    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    for name in ("config.json", "result.json"):
        (unfinished / name).write_text((seed_dir / "baseA" / name).read_text())
    code, _, err = _run_cli(monkeypatch, capsys, *base, "--a", str(unfinished),
                            "--b", str(seed_dir / "baseB"))
    assert code == 2 and "model.weights.h5" in err and "Train it" in err
    assert not out.exists()

    code, _, err = _run_cli(monkeypatch, capsys, "predict", str(tmp_path))
    assert code == 2 and "no finished base pair" in err
    assert not (tmp_path / "report").exists()


def test_data_of_another_shape_is_refused(grid, monkeypatch, capsys, tmp_path):
    from data_prep.prepare import prepare
    from data_prep.sources import SyntheticSpec

    _, seed_dir, _ = grid
    halves = prepare(source="synthetic", split="random:0", out=tmp_path / "rgb", progress=False,
                     synthetic=SyntheticSpec(num_classes=4, image_size=28, channels=3,
                                             train_per_class=2, validation_per_class=4, seed=0))
    out = tmp_path / "out"
    code, _, err = _run_cli(monkeypatch, capsys, "similarity", "--a", str(seed_dir / "baseA"),
                            "--b", str(seed_dir / "baseB"), "--data", str(halves["B"]),
                            "--batch_size", "8", "--out", str(out))
    assert code == 2
    assert "does not fit images of shape (28, 28, 3)" in err and "Give data" in err
    assert not out.exists()


def test_spearman_rank_correlation():
    rng = np.random.default_rng(0)
    x = rng.normal(size=7)
    assert stats.spearman(x, np.exp(x))["rho"] == pytest.approx(1.0)
    # Perfectly reversed: only 2 of the 7! orderings are as extreme.
    reversed_ = stats.spearman(x, -x)
    assert reversed_["rho"] == pytest.approx(-1.0)
    assert reversed_["p_value"] == pytest.approx(2 / 5040)
    assert reversed_["p_value_method"] == "exact permutation"
    y = np.round(rng.normal(size=7), 0)  # with ties
    expected = pd.DataFrame({"x": x, "y": y}).corr(method="spearman").loc["x", "y"]
    assert stats.spearman(x, y)["rho"] == pytest.approx(expected)
    many = stats.spearman(np.arange(12.0), np.arange(12.0) ** 2)
    assert many["rho"] == pytest.approx(1.0) and many["p_value_method"] == "asymptotic t"


def test_predict_overlays_cka_and_the_measured_drop(grid, monkeypatch, capsys):
    workdir, seed_dir, _ = grid
    code, stdout, _ = _run_cli(monkeypatch, capsys, "predict", str(workdir), "--batch_size", "8")
    assert code == 0 and "Spearman rho" in stdout
    report = workdir / "report"
    result = json.loads((report / "predict.json").read_text())
    assert matplotlib.image.imread(report / "predict.png").ndim == 3
    # The measured drops, recomputed from the result files.
    base = json.loads((seed_dir / "baseB" / "result.json").read_text())["top1_final"]
    pooled = result["pooled"]
    for n in range(1, 8):
        if n in TRANSFER_NS:
            transfer = json.loads((seed_dir / f"A{n}B" / "result.json").read_text())
            assert pooled["relative_drop"][n - 1] == pytest.approx(
                (base - transfer["top1_final"]) / base)
        else:
            assert pooled["relative_drop"][n - 1] is None
    on_b = json.loads(
        (workdir / "analysis" / "synthetic" / "random_0" / "seed0" / "similarity"
         / "baseA_vs_baseB_on_B" / "similarity.json").read_text())
    assert pooled["cka"] == [on_b["cka"][name] for name in models.get(SMOKE["model"]).cut_names]
    expected = stats.spearman(pooled["cka"][:3], pooled["relative_drop"][:3])
    assert result["spearman"] == expected and expected["points"] == 3
    # Depth alone, over the same n, is the baseline the CKA is set beside.
    depth = stats.spearman(list(TRANSFER_NS), pooled["relative_drop"][:3])
    assert result["spearman_depth"] == depth
    assert result["better_predictor"] == stats.stronger_predictor(
        {"CKA": expected, "depth": depth})
    assert "depth alone vs the drop" in stdout and "better predictor of the drop" in stdout

    # A second run reuses the CKA of unchanged nets and data.
    code, stdout, _ = _run_cli(monkeypatch, capsys, "predict", str(seed_dir), "--batch_size", "8")
    assert code == 0 and "reused" in stdout


def test_filter_grid_has_one_tile_per_filter():
    kernel = np.random.default_rng(0).normal(size=(3, 3, 1, 10)).astype(np.float32)
    image = filter_images.filter_image(kernel, tile_pixels=3)  # factor 1: the grid itself
    tiles = _tiles(image[..., 0] / 255.0, kernel.shape)
    filled = [t for t in tiles if not np.all(t == 1.0)]
    assert len(tiles) == 12 and len(filled) == 10  # a 3 x 4 grid, two slots left blank
    for i, tile in enumerate(filled):
        f = kernel[:, :, 0, i]
        np.testing.assert_allclose(tile, (f - f.min()) / (f.max() - f.min()), atol=1 / 255)


def test_filters_cli_writes_one_png_per_net(grid, monkeypatch, capsys, tmp_path):
    _, seed_dir, _ = grid
    code, _, _ = _run_cli(monkeypatch, capsys, "filters", str(seed_dir / "baseA"),
                          str(seed_dir / "baseB"), "--out", str(tmp_path))
    assert code == 0
    net = trained_nets.open_run(seed_dir / "baseB")
    model = trained_nets.load_model(net, (28, 28, 1))
    kernel = model.get_layer("conv1").get_weights()[0]
    grid_image = filter_images.filter_grid(kernel)
    png = matplotlib.image.imread(tmp_path / "baseB.png")[..., 0]
    factor = png.shape[0] // grid_image.shape[0]
    assert factor > 1 and png.shape[0] == grid_image.shape[0] * factor
    tiles = _tiles(png[::factor, ::factor], kernel.shape)
    assert len(tiles) == kernel.shape[-1] == models.SMALL.convs[0].filters
    assert all(not np.all(t == 1.0) for t in tiles)
    assert (tmp_path / "baseA.png").is_file()
    assert len(list((tmp_path / "tb").glob("events.out.tfevents.*"))) == 2


def test_a_folder_of_runs_given_for_a_run_names_run_directories_in_it(grid, monkeypatch,
                                                                     capsys, tmp_path):
    """`filters runs` (the WORKDIR) or a seed folder: not told to train it, but shown run
    directories it holds; nothing written."""
    workdir, seed_dir, _ = grid
    for folder in (workdir, seed_dir):
        code, _, err = _run_cli(monkeypatch, capsys, "filters", str(folder),
                                "--out", str(tmp_path / "out"))
        assert code == 2 and len(err.splitlines()) == 1, err
        assert f"{folder} is not a run directory" in err and "Train it" not in err, err
        assert f"such as {seed_dir / 'baseA'} or {seed_dir / 'baseB'}" in err, err
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = _run_cli(monkeypatch, capsys, "filters", str(empty))
    assert code == 2 and "is not a finished run" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]


@pytest.mark.slow
def test_filters_of_a_resnet_net_are_its_stem_convolution(resnet_grid, monkeypatch, capsys,
                                                          tmp_path):
    _, seed_dir, _ = resnet_grid
    code, _, _ = _run_cli(monkeypatch, capsys, "filters", str(seed_dir / "baseB"),
                          "--out", str(tmp_path))
    assert code == 0
    model = trained_nets.load_model(trained_nets.open_run(seed_dir / "baseB"), (28, 28, 1))
    kernel = model.get_layer("stem_conv").get_weights()[0]
    png = matplotlib.image.imread(tmp_path / "baseB.png")[..., 0]
    factor = png.shape[0] // filter_images.filter_grid(kernel).shape[0]
    assert len(_tiles(png[::factor, ::factor], kernel.shape)) == kernel.shape[-1]


def _tiles(image, kernel_shape, pad=1):
    """Every slot of a filter grid, row by row (the layout of filter_images.filter_grid)."""
    kh, kw, _, count = kernel_shape
    cols = int(np.ceil(np.sqrt(count)))
    rows = int(np.ceil(count / cols))
    assert image.shape[:2] == (rows * (kh + pad) + pad, cols * (kw + pad) + pad)
    return [image[pad + r * (kh + pad):pad + r * (kh + pad) + kh,
                  pad + c * (kw + pad):pad + c * (kw + pad) + kw]
            for r in range(rows) for c in range(cols)]


@pytest.mark.slow
def test_similarity_of_resnet_nets_is_one_value_per_cut_point(resnet_grid):
    # Each value is CKA of the output layer of the cut point (stem_pool, block1_out, ...), as
    # numpy computes it from the activations held in memory.
    _, seed_dir, split_dir = resnet_grid
    assert RESNET_CUTS == ("stem", *(f"block{i}" for i in range(1, len(RESNET_CUTS))))
    result = similarity.similarity(seed_dir / "baseA", seed_dir / "baseB", split_dir / "B",
                                   batch_size=40)
    assert result["layers"] == list(RESNET_CUTS)
    assert list(result["cka"]) == list(RESNET_CUTS)
    assert np.array(result["matrix"], dtype=float).shape == (len(RESNET_CUTS),) * 2
    acts_a = _activations(seed_dir / "baseA", split_dir / "B", RESNET_CUTS)
    acts_b = _activations(seed_dir / "baseB", split_dir / "B", RESNET_CUTS)
    for i, name in enumerate(RESNET_CUTS):
        assert result["cka"][name] == pytest.approx(cka.cka(acts_a[i], acts_b[i]), abs=1e-4)


@pytest.mark.slow
def test_resnet_net_against_itself_is_one_at_every_cut_point(resnet_grid, monkeypatch, capsys,
                                                             tmp_path):
    _, seed_dir, split_dir = resnet_grid
    out = tmp_path / "sim"
    code, stdout, _ = _run_cli(monkeypatch, capsys, "similarity", "--a", str(seed_dir / "baseB"),
                               "--b", str(seed_dir / "baseB"), "--data", str(split_dir / "B"),
                               "--batch_size", "8", "--out", str(out))
    assert code == 0 and f"| {RESNET_CUTS[-1]} |" in stdout
    result = json.loads((out / "similarity.json").read_text())
    assert result["layers"] == list(RESNET_CUTS)
    for name in RESNET_CUTS:
        assert result["cka"][name] == pytest.approx(1.0, abs=1e-4)


def test_unknown_cut_point_is_refused_listing_the_models_cut_points(resnet_grid, monkeypatch,
                                                                    capsys, tmp_path):
    _, seed_dir, split_dir = resnet_grid
    out = tmp_path / "out"
    code, _, err = _run_cli(monkeypatch, capsys, "similarity", "--a", str(seed_dir / "baseA"),
                            "--b", str(seed_dir / "baseB"), "--data", str(split_dir / "B"),
                            "--layers", "stem", "fc7", "--batch_size", "8", "--out", str(out))
    assert code == 2
    assert "--layers fc7: resnet_small nets have the cut points " + " ".join(RESNET_CUTS) in err
    assert not out.exists()


def test_nets_of_different_models_are_refused(grid, resnet_grid, monkeypatch, capsys, tmp_path):
    small_seed_dir, resnet_seed_dir = grid[1], resnet_grid[1]
    out = tmp_path / "out"
    code, _, err = _run_cli(monkeypatch, capsys, "similarity", "--a", str(small_seed_dir / "baseA"),
                            "--b", str(resnet_seed_dir / "baseB"), "--data", str(grid[2] / "B"),
                            "--batch_size", "8", "--out", str(out))
    assert code == 2 and "different models" in err
    assert "is a small net" in err and "is a resnet_small net" in err
    assert not out.exists()

    # predict pools n over seed folders, so they must hold nets of one model.
    mixed = tmp_path / "mixed" / "synthetic" / "random_0"
    for seed, seed_dir in (("seed0", small_seed_dir), ("seed1", resnet_seed_dir)):
        for base in ("baseA", "baseB"):
            shutil.copytree(seed_dir / base, mixed / seed / base)
    code, _, err = _run_cli(monkeypatch, capsys, "predict", str(tmp_path / "mixed"),
                            "--batch_size", "8")
    assert code == 2 and "cannot be pooled" in err
    assert not (tmp_path / "mixed" / "report").exists()
    assert not (tmp_path / "mixed" / "analysis").exists()


@pytest.mark.slow
def test_predict_on_resnet_nets_runs_over_its_cut_points(resnet_grid, tmp_path):
    # A copy of the trained base pair, with baseB's top-1 and the results of A1B, A3B and AkB
    # (k: the last cut point) written as predict reads them, so the drops are known.
    workdir, seed_dir, _ = resnet_grid
    copy = tmp_path / "runs" / seed_dir.relative_to(workdir)
    for base in ("baseA", "baseB"):
        shutil.copytree(seed_dir / base, copy / base)
    base_result = json.loads((copy / "baseB" / "result.json").read_text())
    (copy / "baseB" / "result.json").write_text(json.dumps({**base_result, "top1_final": 0.5}))
    k = len(RESNET_CUTS)
    drops = {1: 0.0, 3: 0.2, k: 0.6}  # relative to baseB's 0.5
    for n, drop in drops.items():
        top1 = 0.5 * (1 - drop)
        (copy / f"A{n}B").mkdir()
        (copy / f"A{n}B" / "result.json").write_text(json.dumps({"top1_final": top1}))

    result = predict.predict(tmp_path / "runs", batch_size=8, log=lambda message: None)
    pooled = result["pooled"]
    assert result["model"] == "resnet_small"
    assert pooled["n"] == list(range(1, k + 1)) and pooled["layers"] == list(RESNET_CUTS)
    assert all(value is not None for value in pooled["cka"])
    assert [None if d is None else round(d, 9) for d in pooled["relative_drop"]] == [
        drops.get(n) for n in range(1, k + 1)]
    assert result["spearman"]["points"] == 3
    # The drops rise with n at the three cut points: depth ranks them perfectly.
    assert result["spearman_depth"]["rho"] == pytest.approx(1.0)
    assert result["better_predictor"] in {"depth", "neither"}
    files = predict.write_predict(result, tmp_path / "report")
    assert matplotlib.image.imread(files["predict.png"]).ndim == 3


def test_similarity_folders_name_the_runs_split_and_dataset_they_compare(grid, monkeypatch,
                                                                          capsys, tmp_path):
    """A second net from another split, another dataset, or the same pair on other data gets a
    folder of its own: none replaces another comparison."""
    _, seed_dir, split_dir = grid
    workdir = tmp_path / "runs"
    own = workdir / "synthetic" / "random_0" / "seed0"
    for base in ("baseA", "baseB"):
        shutil.copytree(seed_dir / base, own / base)
    other_split = workdir / "synthetic" / "random_1" / "seed0" / "baseA"
    other_dataset = workdir / "other" / "random_0" / "seed0" / "baseA"
    for copy in (other_split, other_dataset):
        shutil.copytree(seed_dir / "baseA", copy)
    data = "_on_synthetic-random_0-"
    comparisons = [(other_split, "B", f"baseA_vs_synthetic-random_1-seed0-baseA{data}B"),
                   (other_dataset, "B", f"baseA_vs_other-random_0-seed0-baseA{data}B"),
                   (own / "baseB", "B", f"baseA_vs_baseB{data}B"),
                   (own / "baseB", "A", f"baseA_vs_baseB{data}A")]
    folder = workdir / "analysis" / "synthetic" / "random_0" / "seed0" / "similarity"
    for run_b, half, _ in comparisons:
        code, _, err = _run_cli(monkeypatch, capsys, "similarity", "--a", str(own / "baseA"),
                                "--b", str(run_b), "--data", str(split_dir / half),
                                "--batch_size", "8")
        assert code == 0, err
    assert sorted(p.name for p in folder.iterdir()) == sorted(name for *_, name in comparisons)
    for run_b, half, name in comparisons:
        result = json.loads((folder / name / "similarity.json").read_text())
        assert Path(result["b"]["run_dir"]).resolve() == run_b.resolve()
        assert result["data"]["half"] == half

    # A net outside the grid's layout is named by its folder and a digest of its path.
    on_b = {"dataset": "synthetic", "half_dir": str(split_dir / "B"), "half": "B"}
    loose = (tmp_path / "elsewhere" / "baseB", tmp_path / "x" / "elsewhere" / "baseB")
    names = [similarity.default_similarity_out(own / "baseA", run, on_b).name for run in loose]
    assert all(name.startswith("baseA_vs_elsewhere-baseB-") and name.endswith(f"{data}B")
               for name in names)
    assert names[0] != names[1]


def _opened(pid, path):
    """Whether process `pid` has `path` open."""
    try:
        return any(os.readlink(fd) == str(path) for fd in Path(f"/proc/{pid}/fd").iterdir())
    except OSError:  # the process ended, or a descriptor closed while it was read
        return False


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["loading", "working"])
def test_ctrl_c_is_one_line_exit_130_and_writes_nothing(grid, tmp_path, stage):
    """Ctrl-C while TensorFlow loads, or once the nets' weights are being read: one line, no
    traceback, exit 130, no output folder and no staging folder."""
    from data_prep_helpers import loading, start_cli, wait_until
    from keras_transfer.analyze.__main__ import INTERRUPTED

    _, seed_dir, split_dir = grid
    out = tmp_path / "out"
    # TensorFlow's level of logging left to analyze, as for a user: its start-up notices are
    # filtered out of stderr
    env = {k: v for k, v in os.environ.items()
           if k not in (quiet_tensorflow.LEVEL, quiet_tensorflow.DEFAULT_MARK)}
    run = start_cli("similarity", "--a", seed_dir / "baseA", "--b", seed_dir / "baseB",
                    "--data", split_dir / "B", "--batch_size", "8", "--out", out,
                    module="keras_transfer.analyze", env=env)
    if stage == "loading":
        wait_until(lambda: loading(run.pid, "tensorflow"), run, what="TensorFlow loading")
    else:
        weights = seed_dir / "baseA" / "model.weights.h5"
        wait_until(lambda: _opened(run.pid, weights), run, what="baseA's weights being read")
    os.killpg(run.pid, signal.SIGINT)
    _, err = run.communicate(timeout=120)
    assert run.returncode == 130, err
    assert err.splitlines() == [INTERRUPTED], err
    assert list(tmp_path.iterdir()) == []
