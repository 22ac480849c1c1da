"""Transfer of networks with batch normalisation, per model family: copied blocks carry every
variable (moving statistics included), frozen blocks keep them and normalise with them,
fine-tuned blocks update them, new blocks start from fresh statistics, the random control keeps
its fresh ones, the per-block hashes see them, and every variable belongs to one block.

Families: resnet_small (FusedBatchNormalization) at 28x28x1, and the Keras applications
(Keras' BatchNormalization) ResNet50 and MobileNetV2 at 32x32x3. Each family's nets are built
and trained once per module (a few eager steps on random images) and inspected by the tests.
"""
import hashlib

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_transfer import models, solver, transfer
from keras_transfer.transfer import TransferError

FAMILIES = {"resnet_small": (28, 28, 1), "resnet50": (32, 32, 3), "mobilenetv2": (32, 32, 3)}
BASE_CLASSES, TARGET_CLASSES = 3, 4
N = 2  # cut points copied; every family has more above it
BATCH = 8


def _batch(shape, classes, seed):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(BATCH, *shape)).astype("float32"),
            rng.integers(0, classes, BATCH))


def _train(model, shape, classes, steps, seed):
    """`steps` eager steps of the project's solver (weight decay on) in training mode, on the
    model's trainable variables, as steps.PackSteps trains."""
    optimizer = solver.CaffeSGD(0.05, momentum=0.9, l2_decay=5e-4)
    for step in range(steps):
        x, y = _batch(shape, classes, seed + step)
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(
                y, model(x, training=True)))
        variables = model.trainable_variables
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))


def _digest(array):
    array = np.ascontiguousarray(array)
    return hashlib.sha256(array.tobytes() + str(array.shape).encode()).hexdigest()


def _snapshot(model):
    """{layer name: [digest of each variable]} of every layer with variables."""
    return {layer.name: [_digest(w) for w in layer.get_weights()]
            for layer in model.layers if layer.weights}


def _statistics(model):
    """{batch normalisation layer name: (moving mean, moving variance)}."""
    return {layer.name: (layer.moving_mean.numpy(), layer.moving_variance.numpy())
            for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)}


def _names(blocks, cuts):
    return [layer.name for cut in cuts for layer in blocks[cut]]


def _norms(blocks, cuts):
    return [layer.name for cut in cuts for layer in blocks[cut]
            if isinstance(layer, keras.layers.BatchNormalization)]


def _is_fresh(mean, variance):
    return bool(np.all(mean == 0.0) and np.all(variance == 1.0))


class Family:
    """A model family's trained base net and its weights as a target run reads them."""

    def __init__(self, name, shape, directory):
        self.name, self.shape = name, shape
        self.arch = models.get(name)
        self.base = models.build(name, BASE_CLASSES, shape, seed=1)
        _train(self.base, shape, BASE_CLASSES, steps=2, seed=100)
        path = directory / "model.weights.h5"
        self.base.save_weights(path)
        self.base_weights = transfer.read_base_weights(path, name, shape, BASE_CLASSES)

    def target(self, seed=2):
        return models.build(self.name, TARGET_CLASSES, self.shape, seed=seed)

    def transferred(self, source, finetune, seed=2):
        """A target net with cut points 1..N from `source`, trained a step: the model, its
        plan, and its state fresh, after transfer and after training."""
        model = self.target(seed)
        fresh, fresh_statistics = _snapshot(model), _statistics(model)
        plan = transfer.apply_transfer(
            model, n=N, source=source, finetune=finetune, model_name=self.name,
            base_weights=self.base_weights if source in ("A", "B") else None)
        copied, copied_statistics = _snapshot(model), _statistics(model)
        _train(model, self.shape, TARGET_CLASSES, steps=1, seed=200)
        return dict(model=model, plan=plan, fresh=fresh, fresh_statistics=fresh_statistics,
                    copied=copied, copied_statistics=copied_statistics,
                    trained=_snapshot(model), trained_statistics=_statistics(model),
                    blocks=self.arch.block_layers(model))

    @property
    def below(self):
        return self.arch.cut_names[:N]

    @property
    def above(self):
        return (*self.arch.cut_names[N:], "head")


@pytest.fixture(scope="module", params=list(FAMILIES))
def family(request, tmp_path_factory):
    name = request.param
    return Family(name, FAMILIES[name], tmp_path_factory.mktemp(name))


@pytest.fixture(scope="module")
def frozen(family):
    return family.transferred("A", finetune=False)


@pytest.fixture(scope="module")
def finetuned(family):
    return family.transferred("A", finetune=True)


@pytest.fixture(scope="module")
def random_control(family):
    return family.transferred("random", finetune=False)


@pytest.mark.slow
def test_base_net_statistics_moved_away_from_fresh(family):
    """What the copy tests rely on: a trained base net's moving statistics are not the fresh
    ones, so copying them is seen."""
    statistics = _statistics(family.base)
    assert statistics
    assert not any(_is_fresh(*pair) for pair in statistics.values())
    for cut in family.arch.cut_names:
        for name, weights in family.base_weights[cut].items():
            assert all(np.array_equal(a, b) for a, b in
                       zip(weights, family.base.get_layer(name).get_weights())), name


@pytest.mark.slow
def test_copied_blocks_hold_every_base_variable_and_the_rest_stays_fresh(family, frozen):
    """Cut points 1..n hold the base net's variables, moving mean and variance included;
    the cut points above n and the head keep the target's fresh initialisation."""
    assert [(row.name, row.origin, row.trainable) for row in frozen["plan"]] == (
        [(cut, "baseA", False) for cut in family.below]
        + [(cut, "new", True) for cut in family.above[:-1]]
        + [(family.arch.head[0], "new", True)])
    blocks = frozen["blocks"]
    assert _norms(blocks, family.below)
    for cut in family.below:
        for layer in blocks[cut]:
            base = family.base.get_layer(layer.name)
            assert frozen["copied"][layer.name] == [_digest(w) for w in base.get_weights()]
            assert len(layer.get_weights()) == len(base.weights)
    for name in _norms(blocks, family.below):
        for copied, base in zip(frozen["copied_statistics"][name],
                                (family.base.get_layer(name).moving_mean.numpy(),
                                 family.base.get_layer(name).moving_variance.numpy())):
            np.testing.assert_array_equal(copied, base, err_msg=name)
    for name in _names(blocks, family.above):
        assert frozen["copied"][name] == frozen["fresh"][name], name


def test_frozen_blocks_keep_every_variable_through_training(family, frozen):
    """After training steps in training mode, every variable of the frozen blocks (kernels,
    gamma, beta, moving mean and variance) is what was copied; the blocks above changed."""
    blocks = frozen["blocks"]
    for name in _names(blocks, family.below):
        assert frozen["trained"][name] == frozen["copied"][name], name
    for name in _norms(blocks, family.below):
        for after, before in zip(frozen["trained_statistics"][name],
                                 frozen["copied_statistics"][name]):
            np.testing.assert_array_equal(after, before, err_msg=name)
    changed = [name for name in _names(blocks, family.above)
               if frozen["trained"][name] != frozen["copied"][name]]
    assert changed == _names(blocks, family.above)


def _block_outputs(model, cut_point, x):
    """The block's output in training and in inference mode; the model's variables are
    restored afterwards (a training-mode call updates trainable blocks' statistics)."""
    saved = model.get_weights()
    try:
        upto = keras.Model(model.input, model.get_layer(cut_point.output).output)
        return upto(x, training=True).numpy(), upto(x, training=False).numpy()
    finally:
        model.set_weights(saved)


@pytest.mark.slow
def test_frozen_blocks_normalise_with_their_moving_statistics(family, frozen, finetuned):
    """A frozen block runs batch normalisation in inference mode even when the net trains:
    the output of cut point n is the same under training=True and training=False. A trainable
    block's is not (batch statistics), which shows the comparison sees the difference."""
    x, _ = _batch(family.shape, TARGET_CLASSES, seed=300)
    training, inference = _block_outputs(frozen["model"], family.arch.cut_points[N - 1], x)
    np.testing.assert_array_equal(training, inference)
    training, inference = _block_outputs(finetuned["model"], family.arch.cut_points[N - 1], x)
    assert not np.allclose(training, inference, rtol=1e-3, atol=1e-3)
    training, inference = _block_outputs(frozen["model"], family.arch.cut_points[N], x)
    assert not np.allclose(training, inference, rtol=1e-3, atol=1e-3)


def test_finetuned_blocks_start_copied_then_update_kernels_and_statistics(family, finetuned):
    """Fine-tuned blocks are copied, trainable, and training changes their kernels and
    their moving statistics."""
    assert [row.trainable for row in finetuned["plan"]] == [True] * (family.arch.max_n + 1)
    assert [row.origin for row in finetuned["plan"][:N]] == ["baseA"] * N
    blocks = finetuned["blocks"]
    for cut in family.below:
        for layer in blocks[cut]:
            base = family.base.get_layer(layer.name)
            assert finetuned["copied"][layer.name] == [_digest(w) for w in base.get_weights()]
            assert finetuned["trained"][layer.name][0] != finetuned["copied"][layer.name][0], (
                f"{layer.name}: {layer.weights[0].path} did not train")
    for name in _norms(blocks, family.below):
        for after, before in zip(finetuned["trained_statistics"][name],
                                 finetuned["copied_statistics"][name]):
            assert not np.array_equal(after, before), name


def test_new_blocks_start_from_fresh_statistics_and_train(family, frozen):
    """Above n: moving mean 0 and variance 1 after the transfer, updated by training."""
    names = _norms(frozen["blocks"], family.above)
    assert names
    for name in names:
        assert _is_fresh(*frozen["copied_statistics"][name]), name
        assert not _is_fresh(*frozen["trained_statistics"][name]), name


@pytest.mark.slow
def test_random_control_keeps_fresh_frozen_blocks(family, random_control):
    """The random-features control: cut points 1..n keep the target's fresh initialisation,
    fresh statistics included, and stay so through training; the blocks above train."""
    assert [(row.origin, row.trainable) for row in random_control["plan"]] == (
        [("random", False)] * N + [("new", True)] * (family.arch.max_n - N + 1))
    blocks = random_control["blocks"]
    base = _snapshot(family.base)
    for name in _names(blocks, family.below):
        assert random_control["copied"][name] == random_control["fresh"][name], name
        assert random_control["trained"][name] == random_control["fresh"][name], name
        assert random_control["trained"][name] != base[name], name
    for name in _norms(blocks, family.below):
        assert _is_fresh(*random_control["trained_statistics"][name]), name
    assert all(random_control["trained"][name] != random_control["fresh"][name]
               for name in _names(blocks, family.above))


@pytest.mark.slow
def test_block_sha256_covers_moving_statistics(family):
    """Changing one moving variance of a block changes that block's hash and no other."""
    model = family.base
    blocks = family.arch.block_layers(model)
    start = transfer.block_sha256(model, family.name)
    assert list(start) == [*family.arch.cut_names, family.arch.head[0]]
    for cut in family.arch.cut_names:
        norm = next(layer for layer in blocks[cut]
                    if isinstance(layer, keras.layers.BatchNormalization))
        variance = norm.moving_variance.numpy()
        changed = variance.copy()
        changed[0] += 0.25
        norm.moving_variance.assign(changed)
        try:
            after = transfer.block_sha256(model, family.name)
        finally:
            norm.moving_variance.assign(variance)
        assert [name for name in start if after[name] != start[name]] == [cut], norm.name
    assert transfer.block_sha256(model, family.name) == start


def test_every_variable_belongs_to_exactly_one_block(family):
    """Every variable of the net is copied, frozen and hashed with exactly one block, and each
    cut point's output is a layer: models.check_network, what resolve asks of a network of
    one's own (tests/test_own_models.py), holds for the built-in ones."""
    model = family.base
    models.check_declaration(family.arch)
    models.check_network(family.arch, model, BASE_CLASSES)
    blocks = family.arch.block_layers(model)
    assert list(blocks) == [*family.arch.cut_names, "head"]
    for cut, layers in blocks.items():
        for layer in layers:
            assert family.arch.block_of(layer.name) == cut
    for cut in family.arch.cut_points:
        assert family.arch.block_of(cut.output) in (cut.name, None)


@pytest.mark.slow
def test_n_outside_the_cut_points_is_refused_naming_k(family):
    """n must be one of 0..k, k the family's number of cut points; a refused request
    leaves the model as it was. n = k, every cut point, is accepted."""
    k = family.arch.max_n
    model = family.target()
    before = _snapshot(model)
    for n in (k + 1, -1):
        with pytest.raises(TransferError, match=rf"n={n} is out of range: .* to {k} for "
                                                rf"{family.name}"):
            transfer.apply_transfer(model, n=n, source="A", base_weights=family.base_weights,
                                    finetune=False, model_name=family.name)
    assert _snapshot(model) == before
    assert all(layer.trainable for layer in model.layers)
    plan = transfer.apply_transfer(model, n=k, source="A", base_weights=family.base_weights,
                                   finetune=False, model_name=family.name)
    assert [row.trainable for row in plan] == [False] * k + [True]
