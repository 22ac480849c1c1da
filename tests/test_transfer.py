"""Transfer copies what it says, frozen layers stay frozen through fit, bad requests are refused."""
import keras
import numpy as np
import pytest

from keras_transfer import models, solver, transfer
from keras_transfer.transfer import TransferError

INPUT_SHAPE = (16, 16, 1)
BASE_CLASSES = 3
TARGET_CLASSES = 4
# The small model's cut points are its first seven layers, one layer each; fc8 is the head.
CUT_NAMES = models.get("small").cut_names


def _images(count, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(scale=30.0, size=(count, *INPUT_SHAPE)).astype("float32")
    return x, rng.integers(0, TARGET_CLASSES, count)


def _fit(model, steps=3):
    x, y = _images(16 * steps, seed=7)
    # The project's solver, weight decay included: frozen layers must not decay either.
    model.compile(solver.make_optimizer(0.05, lr_step=0, momentum=0.9, weight_decay=5e-4),
                  "sparse_categorical_crossentropy")
    model.fit(x, y, batch_size=16, epochs=1, verbose=0, shuffle=False)


@pytest.fixture(scope="module")
def base_files(tmp_path_factory):
    """baseA and baseB: tiny small-model nets trained a few steps, saved as run dirs do."""
    directory = tmp_path_factory.mktemp("bases")
    paths = {}
    for half, seed in (("A", 11), ("B", 12)):
        model = models.small(BASE_CLASSES, INPUT_SHAPE, seed=seed)
        x, y = _images(32, seed)
        model.compile(keras.optimizers.SGD(0.05), "sparse_categorical_crossentropy")
        model.fit(x, y % BASE_CLASSES, batch_size=16, epochs=1, verbose=0)
        paths[half] = directory / f"base{half}" / "model.weights.h5"
        paths[half].parent.mkdir()
        model.save_weights(paths[half])
    return paths


@pytest.fixture(scope="module")
def base_weights(base_files):
    return {half: transfer.read_base_weights(path, "small", INPUT_SHAPE, BASE_CLASSES)
            for half, path in base_files.items()}


def _target(seed=0):
    return models.small(TARGET_CLASSES, INPUT_SHAPE, seed=seed)


def _snapshot(model):
    return {name: model.get_layer(name).get_weights() for name in models.LAYER_NAMES}


def _equal(weights, other):
    return len(weights) == len(other) and all(np.array_equal(a, b)
                                              for a, b in zip(weights, other))


def _copy_of(base, name):
    """The base net's weights of layer `name`, which is its own cut point in the small model."""
    return base[name][name]


def test_read_base_weights_returns_the_saved_weights_by_cut_point(base_files, base_weights):
    """{cut point: {layer: weights}} of every cut point, equal to the saved net's; the head
    (fc8), never copied, is left out."""
    saved = models.small(BASE_CLASSES, INPUT_SHAPE)
    saved.load_weights(base_files["A"])
    assert tuple(base_weights["A"]) == CUT_NAMES
    assert "fc8" not in CUT_NAMES
    for name in CUT_NAMES:
        assert list(base_weights["A"][name]) == [name]
        assert _equal(_copy_of(base_weights["A"], name), saved.get_layer(name).get_weights())
    assert not _equal(_copy_of(base_weights["A"], "conv1"), _copy_of(base_weights["B"], "conv1"))


def test_read_base_weights_names_a_missing_file(tmp_path):
    missing = tmp_path / "baseA" / "model.weights.h5"
    with pytest.raises(TransferError, match="not found.*baseA/model.weights.h5"):
        transfer.read_base_weights(missing, "small", INPUT_SHAPE, BASE_CLASSES)


def test_read_base_weights_names_an_unreadable_file(tmp_path):
    corrupt = tmp_path / "model.weights.h5"
    corrupt.write_bytes(b"not an h5 file" * 10)
    with pytest.raises(TransferError, match="cannot load .*model.weights.h5"):
        transfer.read_base_weights(corrupt, "small", INPUT_SHAPE, BASE_CLASSES)


@pytest.mark.parametrize("input_shape, num_classes", [
    (INPUT_SHAPE, BASE_CLASSES + 1), ((20, 20, 1), BASE_CLASSES), ((16, 16, 3), BASE_CLASSES)])
def test_read_base_weights_refuses_another_architecture(base_files, input_shape, num_classes):
    with pytest.raises(TransferError, match="cannot load"):
        transfer.read_base_weights(base_files["A"], "small", input_shape, num_classes)


def test_frozen_transfer_copies_and_keeps_layers_through_fit(base_weights):
    model = _target()
    fresh = _snapshot(model)
    plan = transfer.apply_transfer(model, n=3, source="A", base_weights=base_weights["A"],
                                   finetune=False)
    assert [(row.name, row.origin, row.trainable) for row in plan] == [
        ("conv1", "baseA", False), ("conv2", "baseA", False), ("conv3", "baseA", False),
        ("conv4", "new", True), ("conv5", "new", True), ("fc6", "new", True),
        ("fc7", "new", True), ("fc8", "new", True)]
    start = transfer.block_sha256(model, "small")
    for name in models.LAYER_NAMES[:3]:
        assert _equal(model.get_layer(name).get_weights(), _copy_of(base_weights["A"], name))
    for name in models.LAYER_NAMES[3:]:
        assert _equal(model.get_layer(name).get_weights(), fresh[name])

    _fit(model)

    end = transfer.block_sha256(model, "small")
    for name in models.LAYER_NAMES:
        unchanged = end[name] == start[name]
        assert unchanged == (name in models.LAYER_NAMES[:3]), name


def test_finetuned_transfer_copies_then_trains_copied_layers(base_weights):
    model = _target()
    plan = transfer.apply_transfer(model, n=2, source="B", base_weights=base_weights["B"],
                                   finetune=True)
    assert [row.origin for row in plan[:3]] == ["baseB", "baseB", "new"]
    assert all(row.trainable for row in plan)
    for name in ("conv1", "conv2"):
        assert _equal(model.get_layer(name).get_weights(), _copy_of(base_weights["B"], name))

    _fit(model)

    for name in ("conv1", "conv2"):
        assert not _equal(model.get_layer(name).get_weights(), _copy_of(base_weights["B"], name))


def test_random_control_keeps_fresh_init_frozen(base_weights):
    model = _target(seed=5)
    fresh = _snapshot(model)
    plan = transfer.apply_transfer(model, n=4, source="random", base_weights=None,
                                   finetune=False)
    assert [(row.origin, row.trainable) for row in plan[:5]] == [
        ("random", False)] * 4 + [("new", True)]

    _fit(model)

    for name in models.LAYER_NAMES[:4]:
        weights = model.get_layer(name).get_weights()
        assert _equal(weights, fresh[name])
        assert not _equal(weights, _copy_of(base_weights["A"], name))
        assert not _equal(weights, _copy_of(base_weights["B"], name))
    assert not _equal(model.get_layer("conv5").get_weights(), fresh["conv5"])


def test_n0_is_a_base_net(base_weights):
    model = _target()
    fresh = _snapshot(model)
    plan = transfer.apply_transfer(model, n=0, source="none", base_weights=base_weights["A"],
                                   finetune=False)
    assert all(row.origin == "new" and row.trainable for row in plan)
    assert all(_equal(model.get_layer(name).get_weights(), fresh[name])
               for name in models.LAYER_NAMES)


def test_origin_label_names_copied_layers(base_weights):
    plan = transfer.apply_transfer(_target(), n=1, source="A", base_weights=base_weights["A"],
                                   finetune=False, origin_label="baseX")
    assert plan[0].origin == "baseX"


@pytest.mark.parametrize("request_kwargs, message", [
    (dict(n=8, source="A"), "n=8 is out of range: .* from 0 .* to 7"),
    (dict(n=-1, source="A"), "n=-1 is out of range"),
    (dict(n=2.0, source="A"), "n=2.0 is out of range"),
    (dict(n=0, source="A"), "source=A needs n between 1 and 7"),
    (dict(n=0, source="random"), "source=random needs n between 1 and 7"),
    (dict(n=0, source="none", finetune=True), "finetune needs copied layers"),
    (dict(n=0, source="A", finetune=True), "finetune needs copied layers"),
    (dict(n=3, source="none"), "needs n=0"),
    (dict(n=3, source="C"), "source must be one of"),
    (dict(n=3, source="random", finetune=True), "not a condition of the paper"),
    (dict(n=3, source="A", base_weights=None), "needs the base net's weights"),
    (dict(n=3, source="A", base_weights={"conv1": {}}), r"lack cut points \['conv2', 'conv3'\]"),
])
def test_bad_requests_are_refused(base_weights, request_kwargs, message):
    arguments = {"base_weights": base_weights["A"], "finetune": False, **request_kwargs}
    model = _target()
    fresh = _snapshot(model)
    with pytest.raises(TransferError, match=message):
        transfer.apply_transfer(model, **arguments)
    assert all(model.get_layer(name).trainable for name in models.LAYER_NAMES)
    assert all(_equal(model.get_layer(name).get_weights(), fresh[name])
               for name in models.LAYER_NAMES)


def test_base_block_with_other_layers_is_refused(base_weights):
    """A base cut point whose layers are not the target's (another architecture's block) is
    refused before anything is copied."""
    model = _target()
    fresh = _snapshot(model)
    renamed = dict(base_weights["A"], conv2={"conv2_other": _copy_of(base_weights["A"], "conv2")})
    with pytest.raises(TransferError, match=r"cut point conv2.*conv2_other.*'conv2'"):
        transfer.apply_transfer(model, n=2, source="A", base_weights=renamed, finetune=False)
    assert all(_equal(model.get_layer(name).get_weights(), fresh[name])
               for name in models.LAYER_NAMES)


def test_shape_mismatch_names_layer_and_shapes(base_weights):
    model = models.small(TARGET_CLASSES, (16, 16, 3), seed=0)
    with pytest.raises(TransferError,
                       match=r"conv1.*\(3, 3, 1, 16\).*\(16,\).*\(3, 3, 3, 16\)"):
        transfer.apply_transfer(model, n=2, source="A", base_weights=base_weights["A"],
                                finetune=False)


def test_refuses_a_compiled_model(base_weights):
    model = _target()
    model.compile(keras.optimizers.SGD(0.01), "sparse_categorical_crossentropy")
    with pytest.raises(TransferError, match="before model.compile"):
        transfer.apply_transfer(model, n=1, source="A", base_weights=base_weights["A"],
                                finetune=False)


def test_keras_ignores_trainable_changed_after_the_train_function_exists():
    """Why apply_transfer refuses a compiled model: this is Keras 3's behaviour."""
    model = _target()
    _fit(model, steps=1)
    model.get_layer("conv1").trainable = False
    before = model.get_layer("conv1").get_weights()
    x, y = _images(16, seed=3)
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert not _equal(model.get_layer("conv1").get_weights(), before)


def test_frozen_layers_keep_dropout(base_weights):
    model = _target()
    transfer.apply_transfer(model, n=6, source="A", base_weights=base_weights["A"],
                            finetune=False)
    x, _ = _images(4, seed=1)
    # Dropout follows training=, not trainable: drop6 above the frozen fc6 still drops.
    assert not np.allclose(model(x, training=True), model(x, training=True))
    np.testing.assert_array_equal(model(x, training=False), model(x, training=False))


def test_frozen_fc7_keeps_its_dropout_at_n7(base_weights):
    """At n=7 only fc8 is new: drop7, between the frozen fc7 and fc8, must still drop in
    training (drop6 alone would make the outputs vary, so drop7 is looked at directly)."""
    model = _target()
    plan = transfer.apply_transfer(model, n=7, source="A", base_weights=base_weights["A"],
                                   finetune=False)
    assert [row.trainable for row in plan] == [False] * 7 + [True]
    # fc7's output and what fc8 receives (drop7's output), from one pass through the model.
    taps = keras.Model(model.input, [model.get_layer("fc7").output, model.get_layer("fc8").input])
    x, _ = _images(32, seed=1)
    fc7, to_fc8 = (np.asarray(t) for t in taps(x, training=True))
    active = fc7 > 0
    assert active.sum() > 100  # enough live units to see the drop rate
    kept = to_fc8 != 0
    # Inverted dropout at rate 0.5: each unit is zeroed or doubled, about half of each.
    np.testing.assert_allclose(to_fc8[kept], 2.0 * fc7[kept], rtol=1e-6)
    assert 0.35 < 1.0 - kept[active].mean() < 0.65
    fc7, to_fc8 = (np.asarray(t) for t in taps(x, training=False))
    np.testing.assert_array_equal(to_fc8, fc7)
    # And the whole model: random in training, repeatable in inference.
    assert not np.allclose(model(x, training=True), model(x, training=True))
    np.testing.assert_array_equal(model(x, training=False), model(x, training=False))


def test_format_layer_table_lists_every_layer(base_weights):
    plan = transfer.apply_transfer(_target(), n=2, source="B", base_weights=base_weights["B"],
                                   finetune=False)
    table = transfer.format_layer_table(plan)
    lines = table.splitlines()
    assert len(lines) == 1 + len(models.LAYER_NAMES)
    assert lines[1].split() == ["conv1", "baseB", "frozen"]
    assert lines[3].split() == ["conv3", "new", "trainable"]


def test_block_sha256_tracks_weights():
    first, same, other = _target(seed=1), _target(seed=1), _target(seed=2)

    def conv2(model):
        return transfer.block_sha256(model, "small")["conv2"]
    assert conv2(first) == conv2(same)
    assert conv2(first) != conv2(other)
    kernel, bias = first.get_layer("conv2").get_weights()
    first.get_layer("conv2").set_weights([kernel, bias + 1e-3])
    assert conv2(first) != conv2(same)
