"""The solver is Caffe's: momentum SGD, kernel weight decay, biases at twice the learning rate,
lr/10 every lr_step."""
import json
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_transfer import models, solver


def _dense_step(strategy, lr=0.1, momentum=0.9, steps=1, l2_decay=0.0, jit_compile=False):
    """Trains a 2->1 linear layer (weights all 1) with loss = sum(output) on x = [1, 2] and
    returns the (kernel, bias) deltas."""
    with strategy.scope():
        layer = keras.layers.Dense(1, kernel_initializer="ones", bias_initializer="ones")
        model = keras.Sequential([keras.Input((2,)), layer])
        model.compile(optimizer=solver.CaffeSGD(learning_rate=lr, momentum=momentum,
                                                l2_decay=l2_decay),
                      loss=lambda y_true, y_pred: tf.reduce_sum(y_pred), jit_compile=jit_compile)
    x = np.array([[1.0, 2.0]], np.float32)
    model.fit(x, np.zeros((1, 1), np.float32), epochs=steps, batch_size=1, verbose=0)
    kernel, bias = layer.get_weights()
    return kernel[:, 0] - 1.0, bias - 1.0


@pytest.mark.parametrize("strategy_fn", [tf.distribute.get_strategy,
                                         lambda: tf.distribute.MirroredStrategy(["/cpu:0"])])
def test_bias_learns_twice_as_fast(strategy_fn):
    dk, db = _dense_step(strategy_fn(), lr=0.1)
    # d(loss)/d(kernel) = x, d(loss)/d(bias) = 1; first momentum step is -lr * grad.
    np.testing.assert_allclose(dk, [-0.1, -0.2], rtol=1e-6)
    np.testing.assert_allclose(db, [-0.2], rtol=1e-6)


def test_momentum_accumulates_for_biases_too():
    dk, db = _dense_step(tf.distribute.get_strategy(), lr=0.1, momentum=0.9, steps=2)
    # Two steps: v1 = -lr g, v2 = 0.9 v1 - lr g -> total = -(1 + 1.9) lr g.
    np.testing.assert_allclose(dk, [-0.29, -0.58], rtol=1e-5)
    np.testing.assert_allclose(db, [-0.58], rtol=1e-5)


@pytest.mark.parametrize("momentum", [0.9, 0.0])  # the fused kernel, and Keras' plain SGD path
def test_conv_and_dense_biases_step_at_twice_the_learning_rate(momentum):
    """One step of the small model (weight decay 0, so the first step is -lr * grad, momentum
    or not): kernels move by -lr * grad, biases by -2 lr * grad, in conv layers (plain and
    grouped) as in dense ones."""
    lr = 0.1
    model = models.small(5, (16, 16, 1), dropout=0.0, seed=0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 16, 16, 1)).astype("float32")
    y = rng.integers(0, 5, 8)
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(
            y, model(x, training=True)))
    variables = model.trainable_variables
    grads = [np.asarray(g) for g in tape.gradient(loss, variables)]
    before = [v.numpy() for v in variables]
    optimizer = solver.CaffeSGD(lr, momentum=momentum, l2_decay=0.0)
    optimizer.apply_gradients(zip([tf.constant(g) for g in grads], variables))
    checked = set()
    for variable, grad, old in zip(variables, grads, before):
        layer, kind = variable.path.split("/")
        multiplier = {"kernel": 1.0, "bias": 2.0}[kind]
        delta = variable.numpy().astype(np.float64) - old
        want = -multiplier * lr * grad.astype(np.float64)
        # Up to rounding of w and w + update (a few ulps of each) and of lr * grad.
        slack = 2 * (np.spacing(np.abs(old)) + np.spacing(np.abs(variable.numpy())))
        with np.errstate(divide="ignore", invalid="ignore"):
            seen = np.nanmedian(delta / (-lr * grad))
        close = bool(np.all(np.abs(delta - want) <= slack + 1e-6 * np.abs(want)))
        assert close, f"{variable.path} moved by {seen:.3g} x (-lr * grad), not {multiplier:g} x"
        # The check can tell 1x from 2x: the update is well above rounding for most entries.
        if kind == "bias" and np.mean(np.abs(want) / 2 > 10 * slack) > 0.5:
            checked.add(layer)
    assert set(models.LAYER_NAMES) <= checked, checked


@pytest.mark.parametrize("strategy_fn", [tf.distribute.get_strategy,
                                         lambda: tf.distribute.MirroredStrategy(["/cpu:0"])])
@pytest.mark.parametrize("jit_compile", [False, True])
@pytest.mark.parametrize("momentum", [0.9, 0.0])  # the fused kernel, and Keras' plain SGD path
def test_weight_decay_is_added_to_kernel_gradients_only(strategy_fn, jit_compile, momentum):
    dk, db = _dense_step(strategy_fn(), lr=0.1, momentum=momentum, l2_decay=0.5,
                         jit_compile=jit_compile)
    # Kernel: -lr * (x + wd * w) with w = 1; bias: -2 lr * 1, not decayed.
    np.testing.assert_allclose(dk, [-0.15, -0.25], rtol=1e-6)
    np.testing.assert_allclose(db, [-0.2], rtol=1e-6)


@pytest.mark.slow
def test_equals_keras_sgd_with_an_l2_regularizer_on_a_real_model():
    """Caffe's decay in the solver == an L2(wd / 2) kernel regularizer + Keras' momentum SGD."""
    wd, lr = 5e-3, 0.05
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 28, 28, 1)).astype("float32")
    y = rng.integers(0, 5, 16)

    def train(optimizer, regularize):
        model = models.small(5, (28, 28, 1), dropout=0.0, seed=0)
        if regularize:
            for name in models.LAYER_NAMES:
                model.get_layer(name).kernel.regularizer = keras.regularizers.L2(wd / 2)
        model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy())
        model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
        return model.get_weights()

    caffe = train(solver.CaffeSGD(lr, momentum=0.9, l2_decay=wd, bias_lr_multiplier=1.0),
                  regularize=False)
    reference = train(keras.optimizers.SGD(lr, momentum=0.9), regularize=True)
    undecayed = train(solver.CaffeSGD(lr, momentum=0.9, bias_lr_multiplier=1.0),
                      regularize=False)
    for got, want in zip(caffe, reference):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    assert not all(np.allclose(a, b, rtol=1e-4, atol=1e-6) for a, b in zip(undecayed, reference))


def _resnet_small_with_vectors_set(seed=0):
    """resnet_small (conv kernels, BN gamma and beta, fc kernel and bias) with every vector
    variable set to non-zero values, so a decay of them would show."""
    model = models.build("resnet_small", 5, (28, 28, 1), seed=seed)
    rng = np.random.default_rng(seed)
    for variable in model.trainable_variables:
        if len(variable.shape) < 2:
            variable.assign(rng.uniform(0.5, 2.0, variable.shape).astype("float32"))
    return model


@pytest.mark.parametrize("momentum", [0.9, 0.0])  # the fused kernel, and Keras' plain SGD path
def test_weight_decay_spares_batch_norm_scale_and_offset(momentum):
    """A zero data gradient with l2_decay > 0: each kernel shrinks by lr * wd (Caffe's decay),
    while batch normalisation's gamma and beta, like biases, stay where they are."""
    lr, wd = 0.1, 0.5
    model = _resnet_small_with_vectors_set()
    variables = model.trainable_variables
    before = {v.path: v.numpy() for v in variables}
    optimizer = solver.CaffeSGD(lr, momentum=momentum, l2_decay=wd)
    optimizer.apply_gradients(zip([tf.zeros_like(v) for v in variables], variables))
    kinds = {}
    for variable in variables:
        kind = variable.path.split("/")[-1]
        kinds.setdefault(kind, []).append(variable.path)
        if kind == "kernel":
            want = before[variable.path] * (1 - lr * wd)
            np.testing.assert_allclose(variable.numpy(), want, rtol=1e-6, err_msg=variable.path)
        else:
            np.testing.assert_array_equal(variable.numpy(), before[variable.path],
                                          err_msg=variable.path)
    assert set(kinds) == {"kernel", "bias", "gamma", "beta"}


@pytest.mark.parametrize("momentum", [0.9, 0.0])
def test_batch_norm_scale_and_offset_step_at_the_base_learning_rate(momentum):
    """A unit gradient, no decay: kernels, gamma and beta move by -lr, biases by -2 lr."""
    lr = 0.1
    model = _resnet_small_with_vectors_set()
    variables = model.trainable_variables
    before = {v.path: v.numpy() for v in variables}
    optimizer = solver.CaffeSGD(lr, momentum=momentum, l2_decay=0.0)
    optimizer.apply_gradients(zip([tf.ones_like(v) for v in variables], variables))
    for variable in variables:
        multiplier = 2.0 if variable.path.endswith("/bias") else 1.0
        np.testing.assert_allclose(variable.numpy() - before[variable.path], -multiplier * lr,
                                   rtol=1e-5, err_msg=variable.path)


def test_config_round_trip_keeps_the_caffe_settings():
    optimizer = solver.CaffeSGD(0.01, momentum=0.9, l2_decay=5e-4, bias_lr_multiplier=2.0)
    again = solver.CaffeSGD.from_config(optimizer.get_config())
    assert (again.l2_decay, again.bias_lr_multiplier, again.momentum) == (5e-4, 2.0, 0.9)
    with pytest.raises(ValueError, match="nesterov"):
        solver.CaffeSGD(0.01, nesterov=True)


def test_step_schedule_divides_by_ten_every_lr_step():
    schedule = solver.step_schedule(0.01, lr_step=100)
    got = [float(schedule(s)) for s in (0, 99, 100, 199, 200, 350)]
    np.testing.assert_allclose(got, [0.01, 0.01, 0.001, 0.001, 0.0001, 0.00001], rtol=1e-5)
    assert solver.step_schedule(0.01, lr_step=0) == 0.01


_TWO_REPLICAS = r"""
import json, keras, numpy as np, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from keras_transfer import solver
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
with strategy.scope():
    layer = keras.layers.Dense(1, kernel_initializer="ones", bias_initializer="ones")
    model = keras.Sequential([keras.Input((2,)), layer])
    model.compile(solver.CaffeSGD(0.1, momentum=0.9, l2_decay=0.5),
                  loss=lambda y_true, y_pred: tf.reduce_sum(y_pred))
x = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)
model.fit(x, np.zeros((2, 1), np.float32), epochs=1, batch_size=2, shuffle=False, verbose=0)
print(json.dumps({"replicas": strategy.num_replicas_in_sync,
                  **{v.name: [t.numpy().ravel().tolist() for t in v.value.values]
                     for v in layer.weights}}))
"""


@pytest.mark.slow
def test_every_replica_gets_the_same_fused_update():
    """Under MirroredStrategy with two replicas, the fused kernel updates each device's copy.

    A subprocess, because logical devices must be configured before TensorFlow starts."""
    done = subprocess.run([sys.executable, "-c", _TWO_REPLICAS], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["replicas"] == 2
    kernel_copies, bias_copies = result["kernel"], result["bias"]
    assert kernel_copies[0] == kernel_copies[1] and bias_copies[0] == bias_copies[1]
    # Gradients of the two replicas' sums add up: kernel g = [1 + 3, 2 + 4], bias g = 2.
    # Kernel: 1 - lr (g + wd * 1); bias: 1 - 2 lr g, not decayed.
    np.testing.assert_allclose(kernel_copies[0], [1 - 0.1 * 4.5, 1 - 0.1 * 6.5], rtol=1e-6)
    np.testing.assert_allclose(bias_copies[0], [1 - 0.2 * 2], rtol=1e-6)
