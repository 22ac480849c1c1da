"""Backups survive their own damage: a truncated or deleted newest checkpoint, or a damaged
index file, falls back to the newest good backup; with none good, a real fresh start."""
import numpy as np
import pytest
import tensorflow as tf

from keras_transfer import models, solver
from keras_transfer.backup import Backup
from keras_transfer.run_records import RunDir


def _net(directory):
    model = models.build("small", 3, (26, 26, 1), seed=0)
    optimizer = solver.make_optimizer(0.01, 0, 0.9, 5e-4)
    optimizer.build(model.trainable_variables)
    return model, optimizer, Backup(directory, model, optimizer)


def _step(model, optimizer):
    images = tf.random.stateless_uniform((4, 26, 26, 1), seed=(1, 2))
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.square(model(images, training=False)))
    optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables),
                                  model.trainable_variables))


def _weights(model):
    return [v.numpy().copy() for v in model.variables]


@pytest.fixture
def two_backups(tmp_path):
    """Backups at steps 1 and 2 of a real model and optimizer; the weights at each."""
    model, optimizer, backup = _net(tmp_path / "backup")
    saved = {}
    for step in (1, 2):
        _step(model, optimizer)
        backup.save()
        saved[step] = _weights(model)
    return tmp_path / "backup", saved


def _restore(directory):
    model, optimizer, backup = _net(directory)
    return backup.restore(), model, optimizer


def _same(a, b):
    return all(np.array_equal(x, y) for x, y in zip(a, b))


def test_an_intact_backup_restores_the_newest(two_backups):
    directory, saved = two_backups
    step, model, _ = _restore(directory)
    assert step == 2 and _same(_weights(model), saved[2])


@pytest.mark.parametrize("damage", ["truncate", "delete_data", "delete_index"])
def test_a_damaged_newest_backup_falls_back_to_the_older(two_backups, damage, capsys):
    directory, saved = two_backups
    data = next(directory.glob("ckpt-2.data-*"))
    if damage == "truncate":
        data.write_bytes(data.read_bytes()[:100])
    elif damage == "delete_data":
        data.unlink()
    else:
        (directory / "ckpt-2.index").unlink()
    step, model, optimizer = _restore(directory)
    assert step == 1 and int(optimizer.iterations.numpy()) == 1
    assert _same(_weights(model), saved[1])
    if damage != "delete_index":  # an index-less backup is simply not found
        assert "ckpt-2 is damaged" in capsys.readouterr().err


@pytest.mark.parametrize("content", [b"\x00garbage{{", b"", b"\xff\xfe not UTF-8"],
                         ids=["garbled", "empty", "not_utf8"])
def test_a_damaged_index_file_still_finds_the_backups_and_saves_again(two_backups, content,
                                                                       capsys):
    directory, saved = two_backups
    (directory / "checkpoint").write_bytes(content)
    step, model, optimizer = _restore(directory)
    assert step == 2 and _same(_weights(model), saved[2])
    _step(model, optimizer)
    Backup(directory, model, optimizer).save()  # and the next backup is found again
    assert _restore(directory)[0] == 3


def test_a_stray_file_beside_the_backups_is_no_backup(two_backups):
    """A copy made by hand or a file manager (`ckpt-300 (copy).index`) is neither restored nor
    counted as a step: only TensorFlow's own ckpt-<step> names are backups."""
    directory, saved = two_backups
    for name in ("ckpt-300 (copy).index", "ckpt-.index", "ckpt-2.index~"):
        (directory / name).write_bytes((directory / "ckpt-1.index").read_bytes())
    step, model, _ = _restore(directory)
    assert step == 2 and _same(_weights(model), saved[2])
    run = RunDir(directory.parent)
    assert run.has_backup() and run.backup_step() == 2


def test_no_good_backup_is_a_real_fresh_start(two_backups, tmp_path, capsys):
    directory, _ = two_backups
    for data in directory.glob("ckpt-*.data-*"):
        data.write_bytes(data.read_bytes()[:100])
    fresh_model, _, _ = _net(tmp_path / "unused")
    step, model, optimizer = _restore(directory)
    assert step == 0 and int(optimizer.iterations.numpy()) == 0
    assert _same(_weights(model), _weights(fresh_model))  # same seed, untouched by the failures
    assert "training starts afresh" in capsys.readouterr().err


def test_dropout_rng_state_is_kept_and_a_backup_without_it_still_restores(tmp_path):
    """The dropout layers' seed generators are in the backup; one written before they were
    (model and optimizer alone) restores its weights and leaves them as built."""
    model, optimizer, backup = _net(tmp_path / "backup")
    _step(model, optimizer)
    dropped = model(tf.ones((2, 26, 26, 1)), training=True)  # advances the dropout states
    states = [v.numpy().copy() for v in model.variables if "seed_generator" in v.path]
    assert len(states) == 2
    backup.save()
    old = tf.train.Checkpoint(model=model, optimizer=optimizer)  # as backups were written
    tf.train.CheckpointManager(old, str(tmp_path / "old"), 2).save(checkpoint_number=1)

    step, restored, _ = _restore(tmp_path / "backup")
    assert step == 1 and _same(_weights(restored), _weights(model))
    again = restored(tf.ones((2, 26, 26, 1)), training=True)
    # Not the masks already drawn: the next ones, as the original model draws them.
    np.testing.assert_array_equal(again.numpy(),
                                  model(tf.ones((2, 26, 26, 1)), training=True).numpy())
    assert dropped.shape == again.shape

    built, _, fresh = _net(tmp_path / "elsewhere")
    as_built = [v.numpy().copy() for v in built.variables if "seed_generator" in v.path]
    step, from_old, _ = _restore(tmp_path / "old")
    assert step == 1
    seeds = [v.numpy() for v in from_old.variables if "seed_generator" in v.path]
    assert _same(seeds, as_built) and not _same(seeds, states)
    weights = [v.numpy() for v in from_old.trainable_variables]
    assert _same(weights, [v.numpy() for v in model.trainable_variables])
