"""SplitGroupConv2D equals Keras' grouped Conv2D; LocalResponseNorm equals Caffe's formula;
FusedBatchNormalization equals Keras' BatchNormalization and keeps mirrored copies equal."""
import json
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_transfer.layers import FusedBatchNormalization, LocalResponseNorm, SplitGroupConv2D


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


@pytest.mark.slow
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


NORM_SHAPE = (4, 6, 6, 5)  # m = 4 * 6 * 6 = 144 values per channel: m / (m - 1) = 1.007
MOMENTUM, EPSILON = 0.9, 1e-5


def _norm_pair(trainable=True):
    """A FusedBatchNormalization and a keras BatchNormalization with the same momentum,
    epsilon and (non-trivial) gamma, beta, moving mean and moving variance."""
    rng = np.random.default_rng(0)
    channels = NORM_SHAPE[-1]
    weights = [rng.uniform(0.5, 2.0, channels), rng.normal(size=channels),
               rng.normal(size=channels), rng.uniform(0.5, 2.0, channels)]
    pair = []
    for cls in (FusedBatchNormalization, keras.layers.BatchNormalization):
        layer = cls(momentum=MOMENTUM, epsilon=EPSILON)
        layer.build(NORM_SHAPE)
        layer.set_weights([w.astype("float32") for w in weights])
        layer.trainable = trainable
        pair.append(layer)
    return pair


def _norm_input(seed=1):
    rng = np.random.default_rng(seed)
    return tf.constant(rng.normal(loc=2.0, scale=3.0, size=NORM_SHAPE), tf.float32)


def _statistics(layer):
    return layer.moving_mean.numpy(), layer.moving_variance.numpy()


def test_fused_batch_norm_trains_as_keras_batch_norm():
    """Training mode: the same outputs and gradients (input, gamma, beta), the same moving
    mean; the moving variance is fed the unbiased batch variance (x m / (m - 1)) where Keras
    feeds the biased one."""
    fused, plain = _norm_pair()
    start_mean, start_variance = _statistics(plain)
    x = _norm_input()
    upstream = tf.constant(np.random.default_rng(2).normal(size=NORM_SHAPE), tf.float32)

    def output_and_gradients(layer):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
            loss = tf.reduce_sum(y * upstream)
        return [y, *tape.gradient(loss, [x, layer.gamma, layer.beta])]

    for ours, keras_value in zip(output_and_gradients(fused), output_and_gradients(plain)):
        np.testing.assert_allclose(ours, keras_value, rtol=1e-5, atol=1e-5)
    (fused_mean, fused_variance), (plain_mean, plain_variance) = map(_statistics,
                                                                     (fused, plain))
    assert not np.allclose(plain_mean, start_mean)
    np.testing.assert_allclose(fused_mean, plain_mean, rtol=1e-5, atol=1e-6)
    m = np.prod(NORM_SHAPE[:-1])
    np.testing.assert_allclose(fused_variance - MOMENTUM * start_variance,
                               m / (m - 1) * (plain_variance - MOMENTUM * start_variance),
                               rtol=1e-5)
    assert not np.allclose(fused_variance, plain_variance, rtol=1e-5, atol=0)


def test_fused_batch_norm_inference_is_keras_and_leaves_statistics():
    fused, plain = _norm_pair()
    start = _statistics(fused)
    x = _norm_input()
    np.testing.assert_allclose(fused(x, training=False), plain(x, training=False),
                               rtol=1e-5, atol=1e-5)
    for after, before in zip(_statistics(fused), start):
        np.testing.assert_array_equal(after, before)


def test_frozen_fused_batch_norm_runs_in_inference_mode_when_training():
    """trainable=False (a frozen block): a training-mode call normalises with the moving
    statistics, leaves them unchanged, and gamma and beta are not trainable."""
    fused, plain = _norm_pair(trainable=False)
    start = _statistics(fused)
    x = _norm_input()
    frozen = fused(x, training=True)
    np.testing.assert_array_equal(frozen, fused(x, training=False))
    np.testing.assert_allclose(frozen, plain(x, training=False), rtol=1e-5, atol=1e-5)
    for after, before in zip(_statistics(fused), start):
        np.testing.assert_array_equal(after, before)
    assert fused.trainable_weights == []
    # And trainable again, the same call trains: batch statistics, moving statistics updated.
    fused.trainable = True
    assert not np.allclose(fused(x, training=True), frozen, rtol=1e-3, atol=1e-3)
    assert not np.allclose(_statistics(fused)[0], start[0])


def test_fused_batch_norm_trains_under_jit_compile():
    """The compiled train step (steps.PackSteps may XLA-compile it) gives the eager result."""
    eager, compiled = _norm_pair()[0], _norm_pair()[0]
    x = _norm_input()
    want = eager(x, training=True)
    got = tf.function(lambda x: compiled(x, training=True), jit_compile=True)(x)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    for ours, reference in zip(_statistics(compiled), _statistics(eager)):
        np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-6)


def test_fused_batch_norm_under_mixed_bfloat16(bfloat16_policy):
    """bfloat16 outputs, float32 statistics close to the float32 layer's."""
    fused = FusedBatchNormalization(momentum=MOMENTUM, epsilon=EPSILON)
    x = _norm_input()
    y = fused(x, training=True)
    assert y.dtype == tf.bfloat16
    assert fused.moving_mean.dtype == "float32" and fused.gamma.dtype == "float32"
    keras.mixed_precision.set_global_policy("float32")
    reference = FusedBatchNormalization(momentum=MOMENTUM, epsilon=EPSILON)
    want = reference(x, training=True)
    np.testing.assert_allclose(tf.cast(y, tf.float32), want, rtol=2e-2, atol=2e-2)
    for ours, theirs in zip(_statistics(fused), _statistics(reference)):
        np.testing.assert_allclose(ours, theirs, rtol=2e-2, atol=2e-2)


_MIRRORED_NORM = r"""
import json, numpy as np, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
from keras_transfer.layers import FusedBatchNormalization
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
rng = np.random.default_rng(0)
# Each replica sees its own, differently distributed, share of the batch.
shards = [rng.normal(loc=3.0 * i, scale=1.0 + i, size=(2, 3, 3, 4)).astype("float32")
          for i in range(2)]
result = {"replicas": strategy.num_replicas_in_sync, "shards": [s.tolist() for s in shards]}
for name, cls in (("fused", FusedBatchNormalization), ("keras", keras.layers.BatchNormalization)):
    with strategy.scope():
        layer = cls(momentum=0.9, epsilon=1e-5)
        layer.build((None, 3, 3, 4))
    inputs = strategy.experimental_distribute_values_from_function(
        lambda context: tf.constant(shards[context.replica_id_in_sync_group]))
    step = tf.function(lambda x: strategy.run(lambda y: layer(y, training=True), args=(x,)))
    step(inputs)
    result[name] = {v.name: [t.numpy().tolist() for t in v.value.values]
                    for v in (layer.moving_mean, layer.moving_variance)}
print(json.dumps(result))
"""


@pytest.mark.slow
def test_fused_batch_norm_keeps_mirrored_statistics_equal():
    """Under MirroredStrategy over two devices, each replica normalising its own share of the
    batch, the copies of the moving statistics stay one value: the mean of the replicas'
    updates. Keras' own layer, the same step, leaves each copy with its replica's update.

    A subprocess, because logical devices must be configured before TensorFlow starts."""
    done = subprocess.run([sys.executable, "-c", _MIRRORED_NORM], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["replicas"] == 2
    shards = [np.asarray(s, np.float64).reshape(-1, 4) for s in result["shards"]]
    want_mean = (1 - 0.9) * np.mean([s.mean(axis=0) for s in shards], axis=0)
    want_variance = 0.9 + (1 - 0.9) * np.mean([s.var(axis=0, ddof=1) for s in shards], axis=0)
    fused = result["fused"]
    assert fused["moving_mean"][0] == fused["moving_mean"][1]
    assert fused["moving_variance"][0] == fused["moving_variance"][1]
    np.testing.assert_allclose(fused["moving_mean"][0], want_mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fused["moving_variance"][0], want_variance, rtol=1e-5)
    keras_copies = result["keras"]["moving_mean"]
    assert not np.allclose(keras_copies[0], keras_copies[1])
