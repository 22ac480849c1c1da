"""One net of the grid, trained for real on tiny TFRecords: what is copied, frozen and changed."""
import json
import shutil

import pytest
import tensorflow as tf

from keras_transfer import models, train
from keras_transfer.config import Config

SMOKE = dict(model="small", batch_size=8, steps=4, eval_every=2, eval_steps=2, lr=0.05,
             lr_step=0, histogram_every=1, strategy="one_device", dataset="synthetic")


def _config(data_dir, workdir, **kw):
    return Config(data_dir=str(data_dir), workdir=str(workdir), **{**SMOKE, **kw})


def _train(config):
    return train.run(config, tf.distribute.OneDeviceStrategy("/cpu:0"))


def _layers(result):
    return {row["name"]: row for row in result["layers"]}


@pytest.fixture(scope="module")
def bases(synthetic_data, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("runs")
    results = {h: _train(_config(synthetic_data, workdir, target=h)) for h in "AB"}
    return workdir, results


def test_base_net_writes_its_run_directory(synthetic_data, bases):
    workdir, results = bases
    run_dir = _config(synthetic_data, workdir, target="B").run_dir
    assert run_dir.name == "baseB"
    for name in ("config.json", "result.json", "model.weights.h5", "history.json"):
        assert (run_dir / name).is_file(), name
    assert list((run_dir / "tb").glob("events.out.tfevents.*"))
    assert not (run_dir / "backup").exists()
    result = json.loads((run_dir / "result.json").read_text())
    assert result == json.loads(json.dumps(results["B"]))
    assert result["steps"] == 4 and [h["step"] for h in result["history"]] == [2, 4]
    assert 0.0 <= result["top1_final"] <= 1.0
    assert result["top1_best10_mean"] == pytest.approx(
        sum(h["top1"] for h in result["history"]) / 2)
    config = json.loads((run_dir / "config.json").read_text())
    assert config["run"] == "baseB" and config["condition"] == "base"
    assert all(row["origin"] == "new" and row["trainable"] for row in result["layers"])


@pytest.mark.parametrize("finetune", [False, True])
def test_transfer_copies_layers_1_to_n_from_the_base(synthetic_data, bases, finetune):
    workdir, results = bases
    result = _train(_config(synthetic_data, workdir, source="A", target="B", n=3,
                            finetune=finetune))
    assert result["run"] == ("A3B+" if finetune else "A3B")
    base = _layers(results["A"])
    layers = _layers(result)
    for name in models.LAYER_NAMES[:3]:
        row = layers[name]
        assert row["origin"] == "baseA"
        assert row["sha256_start"] == base[name]["sha256_end"]  # an exact copy of baseA's
        if finetune:
            assert row["trainable"] and row["sha256_end"] != row["sha256_start"]
        else:
            assert not row["trainable"] and row["sha256_end"] == row["sha256_start"]
    for name in models.LAYER_NAMES[3:]:
        row = layers[name]
        assert row["origin"] == "new" and row["trainable"]
        assert row["sha256_start"] != base[name]["sha256_end"]
        assert row["sha256_end"] != row["sha256_start"]


def test_selffer_copies_from_its_own_base(synthetic_data, bases):
    workdir, results = bases
    result = _train(_config(synthetic_data, workdir, source="B", target="B", n=7))
    base = _layers(results["B"])
    for name in models.LAYER_NAMES[:7]:
        row = _layers(result)[name]
        assert row["origin"] == "baseB" and not row["trainable"]
        assert row["sha256_start"] == row["sha256_end"] == base[name]["sha256_end"]
    assert _layers(result)["fc8"]["sha256_end"] != _layers(result)["fc8"]["sha256_start"]


def test_random_control_layers_are_fresh_and_frozen(synthetic_data, bases):
    workdir, results = bases
    result = _train(_config(synthetic_data, workdir, source="random", target="B", n=2))
    assert result["run"] == "R2B" and result["condition"] == "random"
    for name in models.LAYER_NAMES[:2]:
        row = _layers(result)[name]
        assert row["origin"] == "random" and not row["trainable"]
        assert row["sha256_end"] == row["sha256_start"]
        for half in "AB":
            assert row["sha256_start"] not in (_layers(results[half])[name]["sha256_start"],
                                               _layers(results[half])[name]["sha256_end"])


def test_finished_run_is_not_trained_again(synthetic_data, bases):
    workdir, results = bases
    config = _config(synthetic_data, workdir, target="A")
    before = (config.run_dir / "result.json").stat().st_mtime_ns
    assert _train(config) == json.loads(json.dumps(results["A"]))
    assert (config.run_dir / "result.json").stat().st_mtime_ns == before


def _refused(config, match):
    with pytest.raises(train.RunError, match=match):
        _train(config)
    assert not config.run_dir.exists()


def test_missing_base_names_the_command_that_trains_it(synthetic_data, tmp_path):
    _refused(_config(synthetic_data, tmp_path, source="A", n=3),
             r"(?s)baseA.*python -m keras_transfer.main --source=none --target=A")
    _refused(_config(synthetic_data, tmp_path, source="B", target="B", n=1), "baseB")


@pytest.mark.parametrize("kw,match", [
    (dict(source="A", n=8), "out of range"),
    (dict(source="A", n=-1), "out of range"),
    (dict(source="none", n=0, finetune=True), "--finetune"),
    (dict(source="none", n=3), "--source=none"),
    (dict(source="A", n=0), "needs --n"),
])
def test_impossible_flags_are_refused(synthetic_data, tmp_path, kw, match):
    _refused(_config(synthetic_data, tmp_path, **kw), match)


def test_data_dir_without_a_manifest_is_refused(tmp_path):
    _refused(_config(tmp_path / "nothing", tmp_path, target="B"), "data_prep")


def _edited_base(synthetic_data, bases, tmp_path, file, edit):
    """A copy of the trained runs whose baseA has `edit` applied to its `file` (JSON)."""
    copy = tmp_path / "runs"
    shutil.copytree(bases[0], copy)
    path = _config(synthetic_data, copy, target="A").run_dir / file
    path.write_text(json.dumps(edit(json.loads(path.read_text()))))
    return copy


def test_base_from_another_model_is_refused(synthetic_data, bases, tmp_path):
    copy = _edited_base(synthetic_data, bases, tmp_path, "config.json",
                        lambda cfg: {**cfg, "model": "caffenet"})
    _refused(_config(synthetic_data, copy, source="A", n=2), "model 'caffenet'")


def test_base_from_another_split_is_refused(synthetic_data, bases, tmp_path):
    copy = _edited_base(synthetic_data, bases, tmp_path, "result.json",
                        lambda r: {**r, "data": {**r["data"], "split": "random:1"}})
    _refused(_config(synthetic_data, copy, source="A", n=2), "random:1")


def test_base_trained_on_other_classes_is_refused(synthetic_data, bases, tmp_path):
    """Same dataset name and split, prepared from other data: the class lists differ."""
    copy = _edited_base(synthetic_data, bases, tmp_path, "result.json",
                        lambda r: {**r, "data": {**r["data"], "classes": [9, 8, 7, 6, 5]}})
    _refused(_config(synthetic_data, copy, source="A", n=2), r"classes \[9, 8, 7, 6, 5\]")
