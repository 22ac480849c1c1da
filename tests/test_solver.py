"""The solver is Caffe's: momentum SGD, biases at twice the learning rate, lr/10 every lr_step."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_transfer import solver


def _dense_step(strategy, lr=0.1, momentum=0.9, steps=1):
    """Trains a 2->1 linear layer with loss = sum(output) and returns (kernel, bias) deltas."""
    with strategy.scope():
        layer = keras.layers.Dense(1, kernel_initializer="ones", bias_initializer="zeros")
        model = keras.Sequential([keras.Input((2,)), layer])
        model.compile(optimizer=solver.CaffeSGD(learning_rate=lr, momentum=momentum),
                      loss=lambda y_true, y_pred: tf.reduce_sum(y_pred))
    x = np.array([[1.0, 2.0]], np.float32)
    model.fit(x, np.zeros((1, 1), np.float32), epochs=steps, batch_size=1, verbose=0)
    kernel, bias = layer.get_weights()
    return kernel[:, 0] - 1.0, bias


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


def test_step_schedule_divides_by_ten_every_lr_step():
    schedule = solver.step_schedule(0.01, lr_step=100)
    got = [float(schedule(s)) for s in (0, 99, 100, 199, 200, 350)]
    np.testing.assert_allclose(got, [0.01, 0.01, 0.001, 0.001, 0.0001, 0.00001], rtol=1e-5)
    assert solver.step_schedule(0.01, lr_step=0) == 0.01
