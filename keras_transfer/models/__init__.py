"""The networks the experiment runs on, each with the cut points that n counts.

Each module here declares `ARCHITECTURES`, a tuple of `Architecture` (architecture.py: how to
build the net, its cut points, its head, its input scale); `MODULES` lists the modules. A
researcher's own network needs no edit here: `--model=module:function` or
`--model=path/to/file.py:function` names a function returning an Architecture (importing.py),
and `register` adds one to this process (docs/architecture.md, "Adding a model").
"""
import importlib
import os

from keras_transfer.models import importing
from keras_transfer.models.architecture import (Architecture, CutPoint, ModelError,
                                                block_multiply_adds, check_declaration,
                                                check_network, first_conv, multiply_adds,
                                                random_states, training_flop)
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


# Networks registered by `register` in this process, and those loaded from the user's code.
_REGISTERED: dict = {}
_LOADED: dict = {}
_CHECKED: set = set()


def get(name) -> Architecture:
    """The network `name`: a built-in one (NAMES), one registered in this process, or the
    Architecture a function of the user's code returns (`module:function`,
    `path/to/file.py:function`, loaded once per process). ModelError says why not."""
    if name in ARCHITECTURES:
        return ARCHITECTURES[name]
    if name in _REGISTERED:
        return _REGISTERED[name]
    if not isinstance(name, str) or not importing.is_spelling(name):
        raise ModelError(f"--model={name} is no network: choose one of {', '.join(NAMES)}, or "
                         f"give your own as {importing.FORMS} (a name given to "
                         "keras_transfer.models.register exists only in the process that "
                         "registered it)")
    key = (name, os.getcwd())  # a file's path is relative to the current directory
    if key not in _LOADED:
        _LOADED[key] = importing.load(name)
    return _LOADED[key]


def register(architecture: Architecture) -> Architecture:
    """Makes `architecture` a --model of this process, by its name (for Python use, e.g. a
    notebook; registering a name again replaces it). In-process only: the grid's nets run in
    processes of their own, which cannot see it; give the grid `--model=module:function`."""
    check_declaration(architecture)
    name = architecture.name
    if not isinstance(name, str) or not name or importing.is_spelling(name) or name in NAMES:
        raise ModelError(f"cannot register {name!r}: a registered name is not a built-in "
                         f"network's ({', '.join(NAMES)}) and holds no ':'; choose another")
    _REGISTERED[name] = architecture
    _CHECKED.difference_update({k for k in _CHECKED if k[0] == name})
    return architecture


def is_builtin(name) -> bool:
    return name in ARCHITECTURES


def is_registered(name) -> bool:
    """Whether `name` exists only in this process (by `register`)."""
    return name in _REGISTERED


def check_build(name, num_classes: int, input_shape) -> None:
    """ModelError unless the network `name` builds for this input and number of classes as the
    experiment needs (check_network): what resolve asks of a network that is not built in,
    before anything is written (the built-in ones are tested)."""
    key = (name, num_classes, tuple(input_shape))
    if key in _CHECKED:
        return
    arch = get(name)
    try:
        model = arch.build(num_classes, tuple(input_shape), dropout=0.5, seed=0)
    except Exception as e:  # the user's code may raise anything: name it on one line
        lines = str(e).strip().splitlines()
        raise ModelError(f"--model={name} does not build for {tuple(input_shape)} images and "
                         f"{num_classes} classes: {type(e).__name__}"
                         + (f": {lines[0]}" if lines else "") + "; its build must take "
                         "(num_classes, input_shape, *, dropout, seed) and work at the data's "
                         "crop (--crop, or min_input to refuse smaller ones)") from None
    check_network(arch, model, num_classes)
    _CHECKED.add(key)


def build(name, num_classes, input_shape, *, dropout=0.5, seed=None):
    """The network `name` (see NAMES), with softmax outputs.

    `seed` makes the initialisation (and dropout masks) reproducible; None draws from Keras'
    global RNG (`keras.utils.set_random_seed`). `dropout` applies to networks with dropout
    layers (caffenet, small); the others have none.
    """
    return get(name).build(num_classes, tuple(input_shape), dropout=dropout, seed=seed)


__all__ = ["ARCHITECTURES", "Architecture", "CAFFENET", "CutPoint", "LAYER_NAMES",
           "ModelError", "NAMES", "SMALL", "block_multiply_adds", "build", "caffenet",
           "check_build", "check_declaration", "check_network", "first_conv", "get",
           "is_builtin", "is_registered", "multiply_adds", "random_states", "register",
           "small", "training_flop"]
