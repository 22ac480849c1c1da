"""The paper's solver: Caffe's SGD with momentum, weight decay, step schedule, bias lr x2.

Caffe's update for every learnable blob, with local learning rate `lr` (2 x for biases) and
decay `wd` (0 for biases):  v = momentum * v - lr * (grad + wd * w);  w = w + v.
`CaffeSGD` applies exactly that, with TensorFlow's fused momentum kernel: one pass over each
variable instead of the half-dozen that Keras' generic SGD and an L2 regularizer cost, which is
most of the update time of CaffeNet's 61 M parameters (fc6 alone is 38 M).

Weight decay lives here rather than as a kernel regularizer, as in Caffe's solver: the training
loss reported is the data loss alone (as Caffe displays it), and frozen layers, which the
optimizer never sees, are never decayed.
"""
from __future__ import annotations

import keras
import tensorflow as tf


def step_schedule(lr: float, lr_step: int, decay: float = 0.1):
    """lr * decay ** floor(step / lr_step): the paper divides by 10 every 100k iterations."""
    if lr_step <= 0:
        return lr
    return keras.optimizers.schedules.ExponentialDecay(
        initial_learning_rate=lr, decay_steps=lr_step, decay_rate=decay, staircase=True)


class CaffeSGD(keras.optimizers.SGD):
    """Caffe's momentum SGD: kernels decayed by `l2_decay`, biases at `bias_lr_multiplier` x lr.

    `l2_decay` is Caffe's `weight_decay`: `l2_decay * w` is added to each kernel's gradient
    (the gradient of an L2 loss `l2_decay / 2 * sum(w^2)`); biases are not decayed, nor are
    batch normalisation's scale and offset (vectors, like biases: decaying them would shrink
    the normalised activations, not the model's capacity), which keep the base lr. It is not
    Keras' `weight_decay` argument, which is decoupled from the gradient (AdamW-style) and
    differs from Caffe's under momentum. Both rules apply per variable inside `update_step`,
    so they hold under tf.distribute.
    """

    def __init__(self, learning_rate=0.01, momentum=0.9, l2_decay=0.0, bias_lr_multiplier=2.0,
                 **kwargs):
        super().__init__(learning_rate=learning_rate, momentum=momentum, **kwargs)
        if self.nesterov:
            raise ValueError("CaffeSGD is Caffe's plain momentum SGD; nesterov is not supported")
        self.l2_decay = float(l2_decay)
        self.bias_lr_multiplier = float(bias_lr_multiplier)
        self._bias_keys = set()
        self._undecayed_keys = set()

    def build(self, variables):
        super().build(variables)
        self._bias_keys = {self._var_key(v) for v in variables if is_bias(v)}
        self._undecayed_keys = {self._var_key(v) for v in variables if len(v.shape) < 2}

    def update_step(self, gradient, variable, learning_rate):
        if self._var_key(variable) in self._bias_keys:
            learning_rate = learning_rate * self.bias_lr_multiplier
        decayed = self._var_key(variable) not in self._undecayed_keys
        if isinstance(gradient, tf.IndexedSlices) or self.momentum == 0:
            if self.l2_decay and decayed:
                gradient = tf.convert_to_tensor(gradient) + self.l2_decay * variable
            super().update_step(gradient, variable, learning_rate)
            return
        dtype = variable.dtype
        gradient = tf.cast(gradient, dtype)
        if self.l2_decay and decayed:
            gradient = gradient + tf.cast(self.l2_decay, dtype) * variable
        velocity = self.momentums[self._get_variable_index(variable)]
        # accum = momentum * accum - lr * grad; var += accum: Caffe's rule, in one kernel.
        # Inside a tf.distribute update call, `.handle` is this device's copy.
        tf.raw_ops.ResourceApplyKerasMomentum(
            var=_handle(variable), accum=_handle(velocity), lr=tf.cast(learning_rate, dtype),
            grad=gradient, momentum=tf.cast(self.momentum, dtype), use_locking=False,
            use_nesterov=False)

    def get_config(self):
        config = super().get_config()
        config.update(l2_decay=self.l2_decay, bias_lr_multiplier=self.bias_lr_multiplier)
        return config


def _handle(variable):
    if isinstance(variable, keras.Variable):
        variable = variable.value
    return variable.handle


def is_bias(variable) -> bool:
    return variable.name == "bias" and len(variable.shape) == 1


def make_optimizer(lr: float, lr_step: int, momentum: float, weight_decay: float) -> CaffeSGD:
    return CaffeSGD(learning_rate=step_schedule(lr, lr_step), momentum=momentum,
                    l2_decay=weight_decay)


def optimizer_for(config) -> CaffeSGD:
    """The solver a run's Config describes (its schedule stretched by --stretch): the one place
    the solver's flags are read, so a new schedule flag touches config.py and this module."""
    return make_optimizer(config.lr, config.stretched(config.lr_step), config.momentum,
                          config.weight_decay)


def current_learning_rate(optimizer) -> float:
    """The learning rate of weights at the optimizer's current step (biases get twice this)."""
    lr = optimizer.learning_rate
    return float(keras.ops.convert_to_numpy(lr))
