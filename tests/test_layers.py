"""SplitGroupConv2D equals Keras' grouped Conv2D; LocalResponseNorm equals Caffe's formula."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_transfer.layers import LocalResponseNorm, SplitGroupConv2D


@pytest.fixture
def bfloat16_policy():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    yield
    keras.mixed_precision.set_global_policy("float32")


def _conv_pair(filters, kernel_size, groups, strides, padding, input_shape):
    """A SplitGroupConv2D and a Conv2D(groups=...) built on input_shape, sharing weights."""
    split = SplitGroupConv2D(filters, kernel_size, groups=groups, strides=strides,
                             padding=padding, activation="relu", bias_initializer="he_normal")
    grouped = keras.layers.Conv2D(filters, kernel_size, groups=groups, strides=strides,
                                  padding=padding, activation="relu")
    split.build(input_shape)
    grouped.build(input_shape)
    assert [w.shape for w in split.get_weights()] == [w.shape for w in grouped.get_weights()]
    grouped.set_weights(split.get_weights())
    return split, grouped


@pytest.mark.parametrize("groups, strides, padding", [
    (2, 1, "same"), (2, 2, "valid"), (4, 1, "valid")])
def test_split_group_conv_equals_keras_grouped_conv(groups, strides, padding):
    input_shape = (3, 9, 9, 8)
    split, grouped = _conv_pair(12, 3, groups, strides, padding, input_shape)
    x = tf.constant(np.random.default_rng(0).normal(size=input_shape), tf.float32)
    upstream = tf.constant(np.random.default_rng(1).normal(
        size=split.compute_output_shape(input_shape)), tf.float32)

    def output_and_gradients(layer):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x)
            loss = tf.reduce_sum(y * upstream)
        return [y, *tape.gradient(loss, [x, *layer.trainable_weights])]

    for ours, keras_value in zip(output_and_gradients(split), output_and_gradients(grouped)):
        np.testing.assert_allclose(ours, keras_value, rtol=1e-5, atol=1e-5)


def test_split_group_conv_groups_are_independent():
    """Output group 0 must not see input group 1: the whole point of grouping."""
    layer = SplitGroupConv2D(4, 3, groups=2, padding="same", bias_initializer="ones")
    x = np.random.default_rng(0).normal(size=(1, 5, 5, 6)).astype("float32")
    changed = x.copy()
    changed[..., 3:] += 10.0
    y, y_changed = layer(x).numpy(), layer(changed).numpy()
    np.testing.assert_array_equal(y[..., :2], y_changed[..., :2])
    assert not np.allclose(y[..., 2:], y_changed[..., 2:])


def test_split_group_conv_rejects_indivisible_channels():
    with pytest.raises(ValueError, match="multiple of groups"):
        SplitGroupConv2D(6, 3, groups=2).build((1, 5, 5, 3))
    with pytest.raises(ValueError, match="multiple of groups"):
        SplitGroupConv2D(5, 3, groups=2)


def test_split_group_conv_config_round_trip():
    layer = SplitGroupConv2D(8, (5, 3), groups=2, strides=(2, 1), padding="same",
                             activation="relu",
                             kernel_initializer=keras.initializers.RandomNormal(stddev=0.01,
                                                                                seed=3),
                             kernel_regularizer=keras.regularizers.L2(2.5e-4), name="conv2")
    config = keras.saving.serialize_keras_object(layer)
    clone = keras.saving.deserialize_keras_object(config)
    assert isinstance(clone, SplitGroupConv2D)
    assert clone.get_config() == layer.get_config()
    layer.build((1, 7, 7, 4))
    clone.build((1, 7, 7, 4))
    np.testing.assert_array_equal(layer.get_weights()[0], clone.get_weights()[0])


def test_model_with_split_group_conv_saves_and_loads(tmp_path):
    inputs = keras.Input((8, 8, 4))
    x = SplitGroupConv2D(6, 3, groups=2, padding="same", name="conv")(inputs)
    outputs = LocalResponseNorm(name="norm")(x)
    model = keras.Model(inputs, outputs)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 4)).astype("float32")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0))


def _caffe_lrn(a, size, alpha, beta, k):
    """Caffe's LRNLayer (ACROSS_CHANNELS) forward, written out loop by loop, NHWC."""
    out = np.empty_like(a, dtype=np.float64)
    channels = a.shape[-1]
    for c in range(channels):
        low, high = max(0, c - size // 2), min(channels, c + size // 2 + 1)
        scale = k + alpha / size * np.sum(a[..., low:high].astype(np.float64) ** 2, axis=-1)
        out[..., c] = a[..., c] / scale ** beta
    return out


def test_lrn_equals_caffe_formula():
    # Values large enough that the alpha term matters: alpha/size * sum a^2 is O(1) here.
    a = np.random.default_rng(0).normal(scale=100.0, size=(2, 3, 3, 7)).astype("float32")
    ours = LocalResponseNorm(size=5, alpha=1e-4, beta=0.75, k=1.0)(a).numpy()
    caffe = _caffe_lrn(a, 5, 1e-4, 0.75, 1.0)
    assert np.abs(caffe / a - 1).max() > 0.1, "test case too weak to see the normalisation"
    np.testing.assert_allclose(ours, caffe, rtol=1e-5)


def test_lrn_equals_tf_lrn_with_converted_parameters():
    a = np.random.default_rng(1).normal(scale=100.0, size=(2, 4, 4, 16)).astype("float32")
    tf_lrn = tf.nn.local_response_normalization(a, depth_radius=2, bias=1.0, alpha=2e-5,
                                                beta=0.75)
    np.testing.assert_allclose(LocalResponseNorm()(a), tf_lrn, rtol=1e-5)
    # The general-beta path (pow) against TF as well.
    tf_lrn = tf.nn.local_response_normalization(a, depth_radius=1, bias=2.0, alpha=1e-4,
                                                beta=0.6)
    ours = LocalResponseNorm(size=3, alpha=3e-4, beta=0.6, k=2.0)(a)
    np.testing.assert_allclose(ours, tf_lrn, rtol=1e-5)


def test_lrn_gradient_equals_tf_lrn_gradient():
    a = tf.constant(np.random.default_rng(2).normal(scale=100.0, size=(2, 3, 3, 9)),
                    tf.float32)

    def gradient(fn):
        with tf.GradientTape() as tape:
            tape.watch(a)
            loss = tf.reduce_sum(fn(a) * tf.range(9, dtype=tf.float32))
        return tape.gradient(loss, a)

    ours = gradient(LocalResponseNorm())
    theirs = gradient(lambda x: tf.nn.local_response_normalization(x, 2, 1.0, 2e-5, 0.75))
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-6)


def test_layers_under_mixed_bfloat16(bfloat16_policy):
    x = np.random.default_rng(0).normal(scale=30.0, size=(2, 6, 6, 4)).astype("float32")
    conv = SplitGroupConv2D(8, 3, groups=2, padding="same")
    norm = LocalResponseNorm()
    y = norm(conv(x))
    assert conv.kernel.dtype == "float32"
    assert y.dtype == tf.bfloat16
    reference = _caffe_lrn(tf.cast(conv(x), tf.float32).numpy(), 5, 1e-4, 0.75, 1.0)
    np.testing.assert_allclose(tf.cast(y, tf.float32), reference, rtol=2e-2, atol=2e-2)


def test_layers_train_under_jit_compile():
    inputs = keras.Input((8, 8, 4))
    x = SplitGroupConv2D(6, 3, groups=2, padding="same", activation="relu")(inputs)
    x = LocalResponseNorm()(x)
    outputs = keras.layers.Dense(3, activation="softmax")(keras.layers.Flatten()(x))
    model = keras.Model(inputs, outputs)
    x = np.random.default_rng(0).normal(size=(4, 8, 8, 4)).astype("float32")
    y = np.array([0, 1, 2, 0])
    eager = model(x).numpy()
    model.compile(keras.optimizers.SGD(0.1), "sparse_categorical_crossentropy",
                  jit_compile=True)
    np.testing.assert_allclose(model.predict(x, verbose=0), eager, rtol=1e-5, atol=1e-6)
    before = model.layers[1].get_weights()[0]
    model.fit(x, y, epochs=1, batch_size=4, verbose=0)
    assert not np.array_equal(model.layers[1].get_weights()[0], before)
