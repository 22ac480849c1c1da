"""CaffeNet has the paper's shapes, cost and initialisation; the small model is its cheap kin."""
import math

import keras
import numpy as np
import pytest

from keras_transfer import models
from keras_transfer.layers import FusedBatchNormalization, SplitGroupConv2D


@pytest.fixture(scope="module")
def caffenet():
    """One 1000-class CaffeNet for the whole module (61 M parameters: build it once)."""
    return models.caffenet(1000, seed=0)


@pytest.fixture
def bfloat16_policy():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    yield
    keras.mixed_precision.set_global_policy("float32")


def _output_shapes(model):
    return {layer.name: tuple(layer.output.shape[1:]) for layer in model.layers}


def test_caffenet_layer_shapes_are_caffes(caffenet):
    shapes = _output_shapes(caffenet)
    assert shapes["image"] == (227, 227, 3)
    assert shapes["conv1"] == (55, 55, 96)
    assert shapes["pool1"] == (27, 27, 96)
    assert shapes["conv2"] == (27, 27, 256)
    assert shapes["pool2"] == (13, 13, 256)
    assert shapes["conv3"] == (13, 13, 384)
    assert shapes["conv4"] == (13, 13, 384)
    assert shapes["conv5"] == (13, 13, 256)
    assert shapes["pool5"] == (6, 6, 256)
    assert shapes["flatten"] == (9216,)
    assert shapes["fc6"] == (4096,)
    assert shapes["fc7"] == (4096,)
    assert shapes["fc8"] == (1000,)
    assert shapes["prob"] == (1000,)
    kernels = {name: caffenet.get_layer(name).get_weights()[0].shape
               for name in models.LAYER_NAMES}
    assert kernels == {"conv1": (11, 11, 3, 96), "conv2": (5, 5, 48, 256),
                       "conv3": (3, 3, 256, 384), "conv4": (3, 3, 192, 384),
                       "conv5": (3, 3, 192, 256), "fc6": (9216, 4096), "fc7": (4096, 4096),
                       "fc8": (4096, 1000)}


def test_floor_pooling_equals_caffes_ceil_pooling_at_caffenet_sizes(caffenet):
    """Caffe pools with ceil((in - 3) / 2) + 1; Keras 'valid' uses floor. Same at 55, 27, 13."""
    for pool, conv in (("pool1", "conv1"), ("pool2", "conv2"), ("pool5", "conv5")):
        size_in = caffenet.get_layer(conv).output.shape[1]
        assert caffenet.get_layer(pool).output.shape[1] == math.ceil((size_in - 3) / 2) + 1


def test_caffenet_groups_are_on_conv2_conv4_conv5(caffenet):
    grouped = {name for name in models.LAYER_NAMES
               if isinstance(caffenet.get_layer(name), SplitGroupConv2D)}
    assert grouped == {"conv2", "conv4", "conv5"}
    assert all(caffenet.get_layer(name).groups == 2 for name in grouped)


def test_caffenet_and_small_pass_the_check_a_network_of_ones_own_gets(caffenet):
    """models.check_network (resolve's check of a network that is not built in) holds for the
    built-in ones; test_bn_transfer.py checks the batch-normalised families."""
    models.check_network(models.get("caffenet"), caffenet, 1000)
    models.check_network(models.get("small"), models.small(5, (28, 28, 1)), 5)


def test_caffenet_multiply_adds(caffenet):
    def conv(out, filters, kernel, in_per_group):
        return out * out * filters * kernel * kernel * in_per_group

    by_hand = (conv(55, 96, 11, 3) + conv(27, 256, 5, 96 // 2) + conv(13, 384, 3, 256)
               + conv(13, 384, 3, 384 // 2) + conv(13, 256, 3, 384 // 2)
               + 6 * 6 * 256 * 4096 + 4096 * 4096 + 4096 * 1000)
    assert models.multiply_adds(caffenet) == by_hand
    assert abs(by_hand - 0.724e9) / 0.724e9 < 0.01


def test_caffenet_initialisation_is_caffes(caffenet):
    biases = {name: caffenet.get_layer(name).get_weights()[1] for name in models.LAYER_NAMES}
    for name in ("conv1", "conv3", "fc8"):
        np.testing.assert_array_equal(biases[name], 0.0)
    for name in ("conv2", "conv4", "conv5", "fc6", "fc7"):
        np.testing.assert_array_equal(biases[name], 1.0)
    for name, std in (("conv1", 0.01), ("conv5", 0.01), ("fc6", 0.005), ("fc7", 0.005),
                      ("fc8", 0.01)):
        kernel = caffenet.get_layer(name).get_weights()[0]
        assert abs(kernel.mean()) < 0.05 * std
        assert abs(kernel.std() - std) < 0.02 * std, name


def test_models_carry_no_regularization_loss():
    # Weight decay is the solver's (Caffe's), so the reported loss is the data loss alone.
    model = models.small(5, (28, 28, 1), seed=0)
    model(np.zeros((1, 28, 28, 1), "float32"))
    assert not model.losses
    assert all(getattr(layer, "kernel_regularizer", None) is None for layer in model.layers)


def test_layer_names_are_the_eight_weight_layers():
    model = models.small(5, (28, 28, 1))
    assert tuple(layer.name for layer in model.layers if layer.weights) == models.LAYER_NAMES


def test_small_model_shapes_and_multiply_adds_at_28px():
    model = models.small(5, (28, 28, 1))
    shapes = _output_shapes(model)
    assert shapes["pool1"] == (14, 14, 16)
    assert shapes["pool2"] == (7, 7, 32)
    assert shapes["pool5"] == (4, 4, 32)
    by_hand = (28 * 28 * 16 * 9 * 1 + 14 * 14 * 32 * 9 * 8 + 7 * 7 * 48 * 9 * 32
               + 7 * 7 * 48 * 9 * 24 + 7 * 7 * 32 * 9 * 24 + 512 * 128 + 128 * 128 + 128 * 5)
    assert models.multiply_adds(model) == by_hand
    assert 2e6 <= by_hand <= 3e6


@pytest.mark.parametrize("input_shape", [(26, 26, 1), (32, 32, 3), (64, 64, 3)])
def test_small_model_accepts_28_to_64_px(input_shape):
    model = models.small(7, input_shape, seed=0)
    x = np.random.default_rng(0).normal(size=(2, *input_shape)).astype("float32")
    assert model.predict(x, verbose=0).shape == (2, 7)


def test_outputs_are_probabilities():
    model = models.small(5, (28, 28, 1), seed=0)
    x = np.random.default_rng(0).normal(scale=50.0, size=(3, 28, 28, 1)).astype("float32")
    probabilities = model.predict(x, verbose=0)
    assert (probabilities >= 0).all()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_seed_makes_initialisation_reproducible():
    first, again, other = (models.small(5, (28, 28, 1), seed=s) for s in (1, 1, 2))
    for name in models.LAYER_NAMES:
        np.testing.assert_array_equal(first.get_layer(name).get_weights()[0],
                                      again.get_layer(name).get_weights()[0])
        assert not np.array_equal(first.get_layer(name).get_weights()[0],
                                  other.get_layer(name).get_weights()[0])
    # Each layer draws its own numbers, not a prefix of the same stream.
    conv4 = first.get_layer("conv4").get_weights()[0]
    conv5 = first.get_layer("conv5").get_weights()[0]
    assert not np.array_equal(conv4.ravel()[:100], conv5.ravel()[:100])


def test_build_dispatches_by_name():
    model = models.build("small", 3, (28, 28, 1), seed=0, dropout=0.25)
    assert model.name == "small"
    assert model.get_layer("drop6").rate == 0.25
    assert set(models.ARCHITECTURES) == {"caffenet", "small", "resnet_small", "resnet50",
                                         "mobilenetv2"}
    assert models.NAMES == tuple(models.ARCHITECTURES)
    with pytest.raises(ValueError, match="caffenet"):
        models.build("alexnet", 3, (28, 28, 1))


def test_mixed_bfloat16_keeps_fc8_and_softmax_in_float32(bfloat16_policy):
    model = models.build("small", 5, (28, 28, 1), seed=0)
    assert model.get_layer("conv1").compute_dtype == "bfloat16"
    assert model.get_layer("conv1").kernel.dtype == "float32"
    assert model.get_layer("fc8").compute_dtype == "float32"
    assert model.get_layer("prob").compute_dtype == "float32"
    model.compile(keras.optimizers.SGD(0.01), "sparse_categorical_crossentropy")
    x = np.random.default_rng(0).normal(size=(4, 28, 28, 1)).astype("float32")
    history = model.fit(x, np.arange(4) % 5, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    probabilities = model.predict(x, verbose=0)
    assert probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_small_model_initialisation():
    """He-scaled kernels (Caffe's fixed std leaves this narrow net at chance) and Caffe's bias
    pattern: zero on conv1, conv3, fc8, a positive constant on conv2, conv4, conv5, fc6, fc7."""
    model = models.small(5, (28, 28, 1), seed=0)
    for name in ("conv3", "fc6"):
        kernel = model.get_layer(name).get_weights()[0]
        fan_in = np.prod(kernel.shape[:-1])
        assert abs(kernel.std() - np.sqrt(2 / fan_in)) < 0.05 * np.sqrt(2 / fan_in), name
    biases = {name: model.get_layer(name).get_weights()[1] for name in models.LAYER_NAMES}
    for name in ("conv1", "conv3", "fc8"):
        np.testing.assert_array_equal(biases[name], 0.0)
    positive = {name: float(biases[name][0]) for name in ("conv2", "conv4", "conv5", "fc6", "fc7")}
    assert all(value > 0 for value in positive.values())
    assert len(set(positive.values())) == 1
    for name in positive:
        np.testing.assert_array_equal(biases[name], positive[name])


def test_small_model_learns_from_unit_scale_images():
    """A few SGD steps with the paper's solver settings separate two easy classes."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 512)
    images = rng.normal(scale=0.2, size=(512, 16, 16, 1)).astype("float32")
    images[labels == 0, :, :8] += 0.5  # class 0: bright left half; class 1: bright right half
    images[labels == 1, :, 8:] += 0.5
    model = models.small(2, (16, 16, 1), seed=0)
    model.compile(keras.optimizers.SGD(0.01, momentum=0.9), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(images[:384], labels[:384], batch_size=32, epochs=3, verbose=0)
    _, accuracy = model.evaluate(images[384:], labels[384:], verbose=0)
    assert accuracy > 0.9


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet50", "mobilenetv2"])
def test_keras_applications_are_seeded_and_normalise_with_the_fused_layer(name):
    """The applications' batch normalisation is layers.FusedBatchNormalization (whose moving
    statistics stay one value across replicas); a seed still fixes every initial value."""
    first, again = (models.build(name, 3, (32, 32, 3), seed=4) for _ in range(2))
    kinds = {type(layer) for layer in first.layers
             if isinstance(layer, keras.layers.BatchNormalization)}
    assert kinds == {FusedBatchNormalization}
    for a, b in zip(first.get_weights(), again.get_weights()):
        np.testing.assert_array_equal(a, b)
    other = models.build(name, 3, (32, 32, 3), seed=5)
    assert not np.array_equal(first.get_weights()[0], other.get_weights()[0])


def test_training_flop_counts_only_the_gradients_taken():
    """Forward everywhere; a weights' gradient per trainable block; an input gradient for each
    block above the lowest trainable one. 2 FLOP per multiply-add."""
    blocks = {"conv1": 10, "conv2": 20, "fc6": 30, "head": 40}
    everything = dict.fromkeys(blocks, True)
    assert models.training_flop(blocks, everything) == 2 * 100 + 2 * 100 + 2 * (20 + 30 + 40)
    two_frozen = {**everything, "conv1": False, "conv2": False}
    assert models.training_flop(blocks, two_frozen) == 2 * 100 + 2 * (30 + 40) + 2 * 40
    small = models.build("small", 5, (26, 26, 1))
    per_block = models.block_multiply_adds(models.get("small"), small)
    assert sum(per_block.values()) == models.multiply_adds(small)
    assert list(per_block) == [*models.get("small").cut_names, "head"]


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=[pytest.mark.slow] if models.get(n).crop_of_256 == 224 else [])
    for n in models.NAMES if models.get(n).min_input > 1])  # the Keras applications build slowly
def test_the_smallest_input_a_network_declares_is_the_smallest_it_takes(name):
    """resolve refuses crops below min_input before anything is written, so it must be true:
    the network builds at it and not one pixel below."""
    arch = models.get(name)
    channels = 3
    arch.build(5, (arch.min_input, arch.min_input, channels), dropout=0.5, seed=0)
    with pytest.raises(ValueError):
        arch.build(5, (arch.min_input - 1, arch.min_input - 1, channels), dropout=0.5, seed=0)
