"""The paper's solver: Caffe's SGD with momentum, step schedule and a doubled bias learning rate.

Weight decay is not here: it is an L2 kernel regularizer on the layers (models.py), which is
how Caffe applies it (added to the gradient of weights, never of biases).
"""
from __future__ import annotations

import keras


def step_schedule(lr: float, lr_step: int, decay: float = 0.1):
    """lr * decay ** floor(step / lr_step): the paper divides by 10 every 100k iterations."""
    if lr_step <= 0:
        return lr
    return keras.optimizers.schedules.ExponentialDecay(
        initial_learning_rate=lr, decay_steps=lr_step, decay_rate=decay, staircase=True)


class CaffeSGD(keras.optimizers.SGD):
    """SGD with momentum whose biases learn `bias_lr_multiplier` times faster (Caffe's lr_mult 2).

    For momentum SGD a bias learning rate of 2*lr is the same as doubling the bias gradient, and
    it is applied per variable inside `update_step`, so it also holds under tf.distribute.
    """

    def __init__(self, learning_rate=0.01, momentum=0.9, bias_lr_multiplier=2.0, **kwargs):
        super().__init__(learning_rate=learning_rate, momentum=momentum, **kwargs)
        self.bias_lr_multiplier = float(bias_lr_multiplier)
        self._bias_keys = set()

    def build(self, variables):
        super().build(variables)
        self._bias_keys = {self._var_key(v) for v in variables if is_bias(v)}

    def update_step(self, gradient, variable, learning_rate):
        if self._var_key(variable) in self._bias_keys:
            learning_rate = learning_rate * self.bias_lr_multiplier
        super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        config = super().get_config()
        config["bias_lr_multiplier"] = self.bias_lr_multiplier
        return config


def is_bias(variable) -> bool:
    return variable.name == "bias" and len(variable.shape) == 1


def make_optimizer(lr: float, lr_step: int, momentum: float) -> CaffeSGD:
    return CaffeSGD(learning_rate=step_schedule(lr, lr_step), momentum=momentum)


def current_learning_rate(optimizer) -> float:
    """The learning rate of weights at the optimizer's current step (biases get twice this)."""
    lr = optimizer.learning_rate
    return float(keras.ops.convert_to_numpy(lr))
