"""The networks the experiment runs on, each with the cut points that n counts.

Each module here declares `ARCHITECTURES`, a tuple of `Architecture` (architecture.py: how to
build the net, its cut points, its head, its input scale); `MODULES` lists the modules. Adding a
network is one module and one entry of `MODULES` (docs/architecture.md, "Adding a model").
"""
import importlib

from keras_transfer.models.architecture import (Architecture, CutPoint, block_multiply_adds,
                                                first_conv, multiply_adds, random_states,
                                                training_flop)
from keras_transfer.models.caffenet import (CAFFENET, LAYER_NAMES, SMALL, caffenet,
                                            small)

MODULES = ("caffenet", "resnet_small", "applications")


def _registry() -> dict:
    found = {}
    for module in MODULES:
        for arch in importlib.import_module(f"keras_transfer.models.{module}").ARCHITECTURES:
            if arch.name in found:
                raise ValueError(f"two architectures are named {arch.name!r}")
            found[arch.name] = arch
    return found


ARCHITECTURES = _registry()
NAMES = tuple(ARCHITECTURES)


def get(name) -> Architecture:
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(NAMES)}")
    return ARCHITECTURES[name]


def build(name, num_classes, input_shape, *, dropout=0.5, seed=None):
    """The network `name` (see NAMES), with softmax outputs.

    `seed` makes the initialisation (and dropout masks) reproducible; None draws from Keras'
    global RNG (`keras.utils.set_random_seed`). `dropout` applies to networks with dropout
    layers (caffenet, small); the others have none.
    """
    return get(name).build(num_classes, tuple(input_shape), dropout=dropout, seed=seed)


__all__ = ["ARCHITECTURES", "Architecture", "CAFFENET", "CutPoint", "LAYER_NAMES",
           "NAMES", "SMALL", "block_multiply_adds", "build", "caffenet", "first_conv", "get",
           "multiply_adds", "random_states", "small", "training_flop"]
