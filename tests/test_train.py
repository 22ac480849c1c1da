"""One net of the grid, trained for real on tiny TFRecords: what is copied, frozen and changed."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_transfer import data, evaluation, metrics, models, resolve, seeds, train
from train_helpers import smoke_config as _config
from train_helpers import hparams_written
from train_helpers import train_on_cpu as _train


def _layers(result):
    return {row["name"]: row for row in result["layers"]}


@pytest.fixture(scope="module")
def bases(synthetic_data, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("runs")
    results = {h: _train(_config(synthetic_data, workdir, target=h)) for h in "AB"}
    return workdir, results


@pytest.mark.slow
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
    # Best 10/450 of 2 evaluations is the best one; halves of 5 classes have no top-5.
    assert result["evaluations"] == 2
    assert result["top1_best_fraction"] == max(h["top1"] for h in result["history"])
    assert result["top5_final"] is None and all(h["top5"] is None for h in result["history"])
    config = json.loads((run_dir / "config.json").read_text())
    assert config["run"] == "baseB" and config["condition"] == "base"
    assert all(row["origin"] == "new" and row["trainable"] for row in result["layers"])


def test_nets_of_other_splits_and_seeds_are_independent_draws(tmp_path):
    """Initialisation and data order depend on the split and the seed, so more splits are
    independent repeats; the nets of one split and seed (a pack) share one data order."""
    configs = [_config(tmp_path, tmp_path, split=split, seed=seed, source=source, n=n)
               for split in ("random:0", "random:1") for seed in (0, 1)
               for source, n in (("none", 0), ("A", 3))]
    assert len({seeds.init_seed(c) for c in configs}) == len(configs)
    streams = {(c.split, c.seed): seeds.data_seed(c) for c in configs}
    assert len(set(streams.values())) == 4
    a3b = _config(tmp_path, tmp_path, split="random:1", seed=1, source="A", n=3)
    assert seeds.data_seed(a3b) == streams[("random:1", 1)]


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


def _validation_loss(config, result, mean_half):
    """The saved net's loss on the validation images its evaluations saw, centred on the mean
    image of `mean_half`."""
    manifest = data.load_half(config.half_dir(config.target))
    shape = resolve.input_shape_of(config, manifest)
    model = models.build(config.model, result["num_outputs"], shape, dropout=config.dropout)
    model.load_weights(config.run_dir / "model.weights.h5")
    settings = data.InputSettings(batch_size=config.batch_size, training=False, crop=shape[0],
                                  limit=config.eval_steps * config.batch_size,
                                  means=[data.mean_image(config.half_dir(mean_half))])
    ds = data.build_dataset(config.half_dir(config.target), "validation", settings)
    losses = [keras.losses.sparse_categorical_crossentropy(y, model(x[0], training=False))
              for x, y in ds]
    return float(np.mean(np.concatenate(losses)))


@pytest.mark.slow
@pytest.mark.parametrize("mean_image, subtracted", [("base", "A"), ("target", "B")])
def test_a_transfer_net_subtracts_the_mean_image_it_is_asked_for(synthetic_data, bases,
                                                                 tmp_path, mean_image, subtracted):
    """The paper subtracts the base data's mean (A's for AnB); --mean_image=target, B's. Checked
    on what the net saw: its recorded final loss is the loss on inputs centred on that mean."""
    workdir, _ = bases
    shutil.copytree(workdir, tmp_path / "runs")
    config = _config(synthetic_data, tmp_path / "runs", source="A", target="B", n=2,
                     mean_image=mean_image)
    result = _train(config)
    assert result["data"]["mean_half"] == subtracted
    assert json.loads((config.run_dir / "config.json").read_text())["mean_half"] == subtracted
    other = {"A": "B", "B": "A"}[subtracted]
    assert _validation_loss(config, result, subtracted) == pytest.approx(result["loss_final"],
                                                                         rel=1e-5)
    assert _validation_loss(config, result, other) != pytest.approx(result["loss_final"],
                                                                    rel=1e-3)


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


def test_base_from_another_model_is_refused_naming_a_workdir_of_its_own(synthetic_data, bases,
                                                                        tmp_path):
    """That base is good for its own network: the fix is a workdir for this network, never
    --overwrite of the base."""
    copy = _edited_base(synthetic_data, bases, tmp_path, "config.json",
                        lambda cfg: {**cfg, "model": "caffenet"})
    with pytest.raises(train.RunError) as refused:
        _train(_config(synthetic_data, copy, source="A", n=2))
    message = str(refused.value)
    assert "is a --model=caffenet net and this run is --model=small" in message
    assert f"--workdir={copy}_small" in message and "--overwrite" not in message


def test_a_network_of_ones_own_is_given_a_workdir_of_sane_name(synthetic_data, bases, tmp_path):
    """--model=path/file.py:function names a folder by the file and the function."""
    example = Path(__file__).resolve().parents[1] / "docs" / "examples" / "my_model.py"
    copy = _edited_base(synthetic_data, bases, tmp_path, "config.json", lambda cfg: cfg)
    own = _config(synthetic_data, copy, source="A", n=2, model=f"{example}:tiny_convnet")
    with pytest.raises(train.RunError, match=rf"(?s)is a --model=small net and this run is "
                                             rf"--model={example}:tiny_convnet.*"
                                             rf"--workdir={copy}_my_model_tiny_convnet "):
        _train(own)


def test_base_from_another_split_is_refused(synthetic_data, bases, tmp_path):
    copy = _edited_base(synthetic_data, bases, tmp_path, "result.json",
                        lambda r: {**r, "data": {**r["data"], "split": "random:1"}})
    _refused(_config(synthetic_data, copy, source="A", n=2), "random:1")


def test_base_trained_on_other_classes_is_refused(synthetic_data, bases, tmp_path):
    """Same dataset name and split, prepared from other data: the class lists differ."""
    copy = _edited_base(synthetic_data, bases, tmp_path, "result.json",
                        lambda r: {**r, "data": {**r["data"], "classes": [9, 8, 7, 6, 5]}})
    _refused(_config(synthetic_data, copy, source="A", n=2), r"classes \[9, 8, 7, 6, 5\]")


def _tb_scalars(tb_dir, tag):
    """{step: value} of the scalar `tag` in a run's TensorBoard event files."""
    values = {}
    for path in sorted(tb_dir.glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                if value.tag == tag:
                    values[event.step] = float(tf.make_ndarray(value.tensor))
    return values


@pytest.mark.slow
def test_learning_rate_drops_tenfold_at_lr_step(synthetic_data, tmp_path):
    """A real run with --lr_step=3 of 4 steps: the lr it records (history.json and
    TensorBoard, at each evaluation: the lr of the optimizer's current step) is --lr for
    steps 1 and 2 and --lr / 10 from step 3 on."""
    config = _config(synthetic_data, tmp_path, target="A", steps=4, eval_every=1, lr=0.05,
                     lr_step=3, histogram_every=100)
    _train(config)
    want = {1: 0.05, 2: 0.05, 3: 0.005, 4: 0.005}
    history = json.loads((config.run_dir / "history.json").read_text())["history"]
    got = {entry["step"]: entry["learning_rate"] for entry in history}
    assert got == pytest.approx(want, rel=1e-6)
    assert _tb_scalars(config.run_dir / "tb", "train/learning_rate") == pytest.approx(
        want, rel=1e-6)


def test_stretch_trains_the_whole_schedule_longer_under_its_own_name(synthetic_data, tmp_path):
    """--stretch=2 (the convergence control): twice the steps, the lr step and the evaluation
    interval, in baseA-x2 beside baseA."""
    config = _config(synthetic_data, tmp_path, target="A", steps=2, eval_every=1, lr=0.05,
                     lr_step=2, histogram_every=100, stretch=2)
    _train(config)
    assert config.run_dir.name == "baseA-x2"
    history = json.loads((config.run_dir / "history.json").read_text())["history"]
    got = {entry["step"]: entry["learning_rate"] for entry in history}
    assert got == pytest.approx({2: 0.05, 4: 0.005}, rel=1e-6)
    result = json.loads((config.run_dir / "result.json").read_text())
    assert result["run"] == "baseA-x2" and result["steps"] == 4


@pytest.mark.slow
def test_each_net_is_one_tensorboard_run_holding_its_hparams(synthetic_data, tmp_path):
    """A tiny grid (baseA, baseB, then B1B and A1B+ as one pack) and its report: TensorBoard
    finds one run per net under the WORKDIR, its tb/, holding the net's hparams once (an
    earlier start's events, left without a backup, are dropped) and its final metrics."""
    from keras_transfer import naming, report

    workdir = tmp_path / "runs"
    nets = [_config(synthetic_data, workdir, target=h) for h in "AB"]
    stale = nets[0].run_dir / "tb"  # a start killed before its first backup
    with tf.summary.create_file_writer(str(stale)).as_default():
        from tensorboard.plugins.hparams import api as hp
        hp.hparams({"n": 99}, trial_id="an earlier start")
    for net in nets:
        _train(net)
    pack = [_config(synthetic_data, workdir, source="B", n=1),
            _config(synthetic_data, workdir, source="A", n=1, finetune=True)]
    train.run_pack(pack, tf.distribute.OneDeviceStrategy("/cpu:0"))
    report.make_report(workdir)

    runs = {path.parent for path in workdir.rglob("events.out.tfevents.*")}
    assert runs == {net.run_dir / "tb" for net in nets + pack}
    for net in nets + pack:
        trial = str(net.run_dir.relative_to(workdir))
        assert hparams_written(net.run_dir / "tb") == [
            (trial, {name: getattr(net, name) for name in naming.HPARAMS})]
        result = json.loads((net.run_dir / "result.json").read_text())
        for metric in metrics.TOP1:
            assert _tb_scalars(net.run_dir / "tb", metrics.summary_tag(metric)) == \
                pytest.approx({result["steps"]: result[metric]})


class _Stop(Exception):
    """Stands for a kill right after a backup."""


@pytest.fixture
def resumable(monkeypatch):
    """Runs under op determinism whose backups are recorded (and can stop the run)."""
    from tensorflow.python.framework import config as tf_config

    from keras_transfer.backup import Backup

    state = {"stop_at": None, "made": [], "saved": {}}

    class RecordingBackup(Backup):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            state["made"].append(self)

        def save(self):
            super().save()
            state["saved"][self.step()] = _state(self.model, self.optimizer)
            if self.step() == state["stop_at"]:
                raise _Stop

    monkeypatch.setattr(train, "Backup", RecordingBackup)
    yield state
    tf_config.disable_op_determinism()  # --deterministic sets it for the whole process


def _state(model, optimizer):
    """Copies of the model's variables (weights, dropout's RNG states) and of the optimizer's
    (step counter, momentum slots)."""
    return {"model": [v.numpy().copy() for v in model.variables],
            "optimizer": [v.numpy().copy() for v in optimizer.variables]}


def _assert_same_state(got, want):
    for part in ("model", "optimizer"):
        assert len(got[part]) == len(want[part])
        for index, (a, b) in enumerate(zip(got[part], want[part])):
            np.testing.assert_array_equal(a, b, err_msg=f"{part} variable {index}")


@pytest.mark.slow
def test_resumed_run_restores_momentum_and_learning_rate(synthetic_data, tmp_path, resumable):
    """Stopped after its backup at step 2 and resumed, a --deterministic run ends with the
    weights, momentum, step counter, dropout RNG state and learning rate of the same run
    trained without a stop (lr/10 at step 2, so a step counter restarted at 0 would also give
    the wrong lr), having trained on the same batches, crops and dropout masks after the
    resume: the data stream is replayed from the backup's step."""
    from keras_transfer import data, solver
    from keras_transfer.backup import Backup

    kw = dict(target="A", steps=4, eval_every=2, lr=0.05, lr_step=2, momentum=0.9,
              dropout=0.5, deterministic=True, histogram_every=100)
    whole = _config(synthetic_data, tmp_path / "whole", **kw)
    whole_result = _train(whole)
    whole_end = _state(resumable["made"][-1].model, resumable["made"][-1].optimizer)

    split = _config(synthetic_data, tmp_path / "split", **kw)
    resumable.update(stop_at=2, saved={})
    with pytest.raises(_Stop):
        _train(split)
    at_backup = resumable["saved"][2]
    momentum = at_backup["optimizer"][1:]
    assert at_backup["optimizer"][0] == 2 and any(np.any(m != 0) for m in momentum)

    # The backup itself, restored into a fresh model and optimizer as train.py builds them.
    manifest = data.load_half(split.half_dir("A"))
    model = models.build("small", manifest["num_classes"], resolve.input_shape_of(split, manifest),
                         seed=12345)
    optimizer = solver.make_optimizer(split.lr, split.lr_step, split.momentum,
                                      split.weight_decay)
    optimizer.build(model.trainable_variables)
    assert Backup(split.run_dir / "backup", model, optimizer).restore() == 2
    _assert_same_state(_state(model, optimizer), at_backup)
    assert solver.current_learning_rate(optimizer) == pytest.approx(0.005, rel=1e-6)

    resumable.update(stop_at=None)
    split_result = _train(split)
    assert split_result["history"] == whole_result["history"]
    assert ([row["sha256_end"] for row in split_result["layers"]]
            == [row["sha256_end"] for row in whole_result["layers"]])
    _assert_same_state(_state(resumable["made"][-1].model, resumable["made"][-1].optimizer),
                       whole_end)
    assert whole_end["optimizer"][0] == 4
    history = json.loads((split.run_dir / "history.json").read_text())["history"]
    assert [entry["learning_rate"] for entry in history] == pytest.approx([0.005, 0.0005],
                                                                          rel=1e-6)
    # Its hparams were written when it started, not again when it resumed.
    assert [trial for trial, _ in hparams_written(split.run_dir / "tb")] == \
        ["synthetic/random_0/seed0/baseA"]


@pytest.mark.slow
def test_evaluation_points_are_the_last_ones_and_evaluating_trains_nothing(synthetic_data,
                                                                           tmp_path, resumable,
                                                                           capsys):
    """--eval_last=1 evaluates at the end only, still writes a backup and prints a training
    line at every other --eval_every point, and trains the very net that evaluating at every
    point trains."""
    assert evaluation.evaluation_steps(480, 80, 3) == [320, 400, 480]
    assert evaluation.evaluation_steps(450, 100, 3) == [300, 400, 450]
    assert evaluation.evaluation_steps(480, 80, 0) == [80, 160, 240, 320, 400, 480]
    assert evaluation.evaluation_steps(100, 80, 5) == [80, 100]
    kw = dict(target="A", steps=6, eval_every=2, dropout=0.5, deterministic=True)
    every = _train(_config(synthetic_data, tmp_path / "every", **kw))
    resumable.update(saved={})
    capsys.readouterr()
    last = _train(_config(synthetic_data, tmp_path / "last", eval_last=1, **kw))
    steps = [line for line in capsys.readouterr().out.splitlines() if line.startswith("step ")]
    assert len(steps) == 3, steps
    for line, start in zip(steps[:2], ("step 2 of 6: train loss", "step 4 of 6: train loss")):
        assert line.startswith(start) and line.endswith("images/s"), steps
    assert steps[2].startswith("step 6: val top-1"), steps
    assert [h["step"] for h in every["history"]] == [2, 4, 6]
    assert last["history"] == every["history"][-1:] and last["evaluations"] == 1
    assert sorted(resumable["saved"]) == [2, 4, 6]
    assert ([row["sha256_end"] for row in last["layers"]]
            == [row["sha256_end"] for row in every["layers"]])
    assert last["images_per_sec"] > 0


@pytest.mark.slow
def test_one_mirrored_replica_reads_its_pipeline_directly_and_trains_the_same_net(
        synthetic_data, tmp_path):
    """A MirroredStrategy of one replica (each process of the grid) is fed straight from the
    pipeline (data.input_options: no MultiDeviceIterator, whose autotuner thread held up the
    end of a run) and trains the very net OneDeviceStrategy trains."""
    mirrored = tf.distribute.MirroredStrategy(["/cpu:0"])
    options = data.input_options(mirrored)
    assert options.experimental_replication_mode == tf.distribute.InputReplicationMode.PER_REPLICA
    assert not options.experimental_fetch_to_device
    assert data.input_options(tf.distribute.OneDeviceStrategy("/cpu:0")) is None
    kw = dict(target="A", steps=4, eval_every=2, dropout=0.5, deterministic=True)
    alone = _train(_config(synthetic_data, tmp_path / "one", **kw))
    through = train.run(_config(synthetic_data, tmp_path / "mirrored", **kw), mirrored)
    assert through["history"] == alone["history"]
    assert ([row["sha256_end"] for row in through["layers"]]
            == [row["sha256_end"] for row in alone["layers"]])


_TWO_REPLICAS = r"""
import sys, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from keras_transfer import train
from keras_transfer.config import Config
data_dir, workdir = sys.argv[1:]
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
try:
    train.run(Config(data_dir=data_dir, workdir=workdir, dataset="synthetic", batch_size=7,
                     target="A"), strategy)
except train.RunError as e:
    print("refused:", e)
# 40 validation images, 6 per replica: 7 replica batches, so the last step leaves a replica
# with none; eval_steps 4 is the number of global batches. 3 evaluations each.
for eval_steps in (4, 9):
    result = train.run(Config(data_dir=data_dir, workdir=f"{workdir}/{eval_steps}",
                              dataset="synthetic", batch_size=12, steps=6, eval_every=2,
                              eval_steps=eval_steps, lr_step=0, target="A"), strategy)
    print("evaluated at", [h["step"] for h in result["history"]])
"""


@pytest.mark.slow
def test_two_replicas_evaluate_a_partial_last_batch_and_refuse_an_odd_batch(synthetic_data,
                                                                           tmp_path):
    """A subprocess: logical devices must be configured before TensorFlow starts."""
    done = subprocess.run([sys.executable, "-c", _TWO_REPLICAS, str(synthetic_data),
                           str(tmp_path)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert ("refused: --batch_size=7 does not split evenly over the 2 replicas of "
            "MirroredStrategy: give a multiple of 2.") in done.stdout
    assert done.stdout.count("evaluated at [2, 4, 6]") == 2
    assert not (tmp_path / "synthetic").exists()  # the refused run wrote nothing
