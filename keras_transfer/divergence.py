"""A net whose loss or weights became NaN or infinite: how it is detected, and how it is
recorded (its diverged.json, never a result) and taken out of its pack."""
from __future__ import annotations

from pathlib import Path

import tensorflow as tf

from keras_transfer.pack import NetInTraining, fail


class Diverged(Exception):
    """A net's loss or weights became NaN or infinite. It is recorded in the run's
    diverged.json and never counts as done."""

    def __init__(self, run: str, step: int, quantity: str, value, path: Path):
        super().__init__(f"{run} diverged by step {step}: {quantity} is {value}. Recorded in "
                         f"{path}, not as a result. Train it again with other settings (e.g. a "
                         "lower --lr) and --overwrite.")


def weights_finite(model) -> bool:
    return all(bool(tf.reduce_all(tf.math.is_finite(v))) for v in model.trainable_variables)


def record(net: NetInTraining, step: int, quantity: str, value) -> None:
    """Records a diverged net in its diverged.json and takes it out of its pack."""
    entry = {"run": net.config.run, "condition": net.config.condition, "step": step,
             "quantity": quantity, "value": str(value)}
    try:
        path = net.out.write_diverged(entry)
    except OSError as e:
        fail(net, e)
        return
    fail(net, Diverged(net.config.run, step, quantity, value, path))
