"""Make a target net from a base net: copy layers 1..n by name, freeze or fine-tune them.

The paper's conditions (design.md section 1): AnB / BnB copy the first n layers of baseA /
baseB and freeze them; AnB+ / BnB+ copy and fine-tune; the random-features control keeps the
first n layers at their fresh random initialisation and freezes them. Layers above n (fc8
always) keep the target model's fresh initialisation and train.

Keras 3 facts this relies on (checked in tests/test_transfer.py):
- `trainable` must be set before `compile`: a change made after the train function was traced
  is ignored until the model is compiled again. `apply_transfer` refuses a compiled model.
- A frozen layer's weights are not in `model.trainable_weights`, so the optimizer never
  touches them: no update and no weight decay (which is the solver's, as in Caffe).
- `trainable=False` does not switch off Dropout: dropout follows `training=`, so drop6/drop7
  still drop during fit above a frozen fc6/fc7, as in Caffe with lr 0.
- Keras weight files are keyed by object path, not layer name, so base weights are loaded into
  an identical model first and then moved across layer by layer by name.
"""
import dataclasses
import hashlib
import os
import warnings

import numpy as np

from keras_transfer import models

SOURCES = ("none", "A", "B", "random")
MAX_COPIED_LAYERS = len(models.LAYER_NAMES) - 1  # fc8 is always new


class TransferError(Exception):
    """A base net cannot be read or does not fit the target, or the transfer request is bad."""


@dataclasses.dataclass(frozen=True)
class LayerPlan:
    """What one layer of the target net starts from, and whether it trains."""
    name: str
    origin: str  # "baseA" | "baseB" (copied), "random" (frozen random init), "new"
    trainable: bool


def read_base_weights(weights_path, model_name, input_shape, num_classes):
    """Weights of a trained base net, {layer name: [kernel, bias]} for all of LAYER_NAMES.

    `num_classes` is the base net's own fc8 width (its half's class count), which may differ
    from the target's; only layers 1..n are ever copied.
    """
    weights_path = os.fspath(weights_path)
    if not os.path.isfile(weights_path):
        raise TransferError(f"base net weights not found: {weights_path} (train the base net "
                            f"first; a finished run leaves model.weights.h5 and result.json)")
    base = models.build(model_name, num_classes, input_shape)
    try:
        # Keras only warns when part of a file matches nothing and leaves those layers at
        # their fresh init; a half-loaded base net must be an error here.
        with warnings.catch_warnings():
            warnings.simplefilter("error", UserWarning)
            base.load_weights(weights_path)
    except (OSError, ValueError, KeyError, UserWarning) as error:
        raise TransferError(
            f"cannot load {weights_path} into a {model_name} net with input {tuple(input_shape)} "
            f"and {num_classes} classes; was the base net trained with another architecture, "
            f"input size or number of classes? ({type(error).__name__}: {_first_line(error)})"
        ) from error
    return {name: base.get_layer(name).get_weights() for name in models.LAYER_NAMES}


def apply_transfer(model, *, n, source, base_weights, finetune, origin_label=None):
    """Copy/freeze layers 1..n of `model` in place for one condition; call before compile.

    source: "none" (a base net; n must be 0), "A" or "B" (copy layers 1..n from
    `base_weights`, as returned by `read_base_weights`), "random" (keep the fresh init of
    layers 1..n, frozen). Copied layers are frozen unless `finetune`. n = 0 with any source is
    a base net: nothing copied, everything trains. `origin_label` names the origin of copied
    layers in the returned plan, "base" + source by default.
    Returns one LayerPlan per layer of LAYER_NAMES, in order.
    """
    _check_request(model, n, source, base_weights, finetune)
    copies = source in ("A", "B") and n > 0
    if copies:  # all shapes first, so a refused request leaves the model untouched
        for name in models.LAYER_NAMES[:n]:
            _check_shapes(model.get_layer(name), base_weights[name])
    copied_origin = origin_label or f"base{source}"
    plan = []
    for index, name in enumerate(models.LAYER_NAMES, start=1):
        layer = model.get_layer(name)
        if index > n:
            origin, trainable = "new", True
        elif source == "random":
            origin, trainable = "random", False
        else:
            layer.set_weights(base_weights[name])
            origin, trainable = copied_origin, bool(finetune)
        layer.trainable = trainable
        plan.append(LayerPlan(name, origin, trainable))
    return plan


def format_layer_table(rows):
    """The plan as an aligned text table for the log, one line per layer."""
    lines = [f"{'layer':<6}  {'origin':<7}  state"]
    for row in rows:
        lines.append(f"{row.name:<6}  {row.origin:<7}  "
                     f"{'trainable' if row.trainable else 'frozen'}")
    return "\n".join(lines)


def layer_sha256(layer):
    """sha256 of the layer's weights' bytes, in weight order: proves what was copied or frozen."""
    digest = hashlib.sha256()
    for weight in layer.get_weights():
        digest.update(np.ascontiguousarray(weight).tobytes())
    return digest.hexdigest()


def _first_line(error):
    """Keras' load errors print whole weight tensors; the first line says what went wrong."""
    text = str(error).strip()
    return text.splitlines()[0][:300] if text else ""


def _check_request(model, n, source, base_weights, finetune):
    if source not in SOURCES:
        raise TransferError(f"source must be one of {SOURCES}, got {source!r}")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not (
            0 <= n <= MAX_COPIED_LAYERS):
        raise TransferError(f"n must be an integer in 0..{MAX_COPIED_LAYERS} (fc8 is always "
                            f"new), got {n!r}")
    if source == "none" and n != 0:
        raise TransferError(f"source='none' is a base net and needs n=0, got n={n}; "
                            f"choose source A, B or random to transfer {n} layers")
    if finetune and n == 0:
        raise TransferError("finetune needs copied layers: n=0 is a base net, which trains "
                            "every layer anyway; drop finetune or set n >= 1")
    if finetune and source == "random":
        raise TransferError("finetune with source='random' is not a condition of the paper "
                            "(fine-tuned random layers are just a base net); drop finetune")
    if getattr(model, "compiled", False):
        raise TransferError("apply_transfer must run before model.compile: Keras ignores "
                            "trainable changes made after the train function is built")
    missing = [name for name in models.LAYER_NAMES if name not in
               {layer.name for layer in model.layers}]
    if missing:
        raise TransferError(f"model {model.name!r} lacks layers {missing}; transfer needs "
                            f"the layers {models.LAYER_NAMES}")
    if source in ("A", "B") and n > 0:
        if base_weights is None:
            raise TransferError(f"source={source!r} with n={n} needs the base net's weights")
        absent = [name for name in models.LAYER_NAMES[:n] if name not in base_weights]
        if absent:
            raise TransferError(f"base net weights lack layers {absent}")


def _check_shapes(layer, weights):
    source_shapes = [tuple(np.shape(w)) for w in weights]
    target_shapes = [tuple(w.shape) for w in layer.weights]
    if source_shapes != target_shapes:
        raise TransferError(f"layer {layer.name}: base net weights have shapes {source_shapes} "
                            f"but the target net needs {target_shapes}")
