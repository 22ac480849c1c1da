"""Make a target net from a base net: copy cut points 1..n by name, freeze or fine-tune them.

The paper's conditions (design.md section 1): AnB / BnB copy the first n cut points (layers, for
CaffeNet; blocks of layers for the networks with batch normalisation, models/architecture.py) of
baseA / baseB and freeze them; AnB+ / BnB+ copy and fine-tune; the random-features control keeps
the first n cut points at their fresh random initialisation and freezes them. Cut points above n
and the head (fc8) keep the target model's fresh initialisation and train.

Keras 3 facts this relies on (checked in tests/test_transfer.py and tests/test_bn_transfer.py):
- `trainable` must be set before `compile`: a change made after the train function was traced
  is ignored until the model is compiled again. `apply_transfer` refuses a compiled model.
- A frozen layer's weights are not in `model.trainable_weights`, so the optimizer never
  touches them: no update and no weight decay (which is the solver's, as in Caffe).
- `trainable=False` does not switch off Dropout: dropout follows `training=`, so drop6/drop7
  still drop during fit above a frozen fc6/fc7, as in Caffe with lr 0.
- Batch normalisation with `trainable=False` runs in inference mode even when the net trains:
  a frozen block normalises with its copied moving mean and variance and never changes them. A
  fine-tuned block trains as a base net's: batch statistics, moving statistics updated. A new
  block starts from fresh statistics (mean 0, variance 1). The copied variables of a layer are
  all of `get_weights()`, moving statistics included.
- Keras weight files are keyed by object path, not layer name, so base weights are loaded into
  an identical model first and then moved across layer by layer by name.
"""
import dataclasses
import hashlib
import os
import warnings

import numpy as np

from keras_transfer import models, naming


class TransferError(Exception):
    """A base net cannot be read or does not fit the target, or the transfer request is bad."""


@dataclasses.dataclass(frozen=True)
class LayerPlan:
    """What one cut point (or the head) of the target net starts from, and whether it trains."""
    name: str
    origin: str  # "baseA" | "baseB" | "external" (copied), "random" (frozen random init), "new"
    trainable: bool


def read_base_weights(weights_path, model_name, input_shape, num_classes):
    """Weights of a trained base net: {cut point: {layer name: its get_weights()}}.

    `num_classes` is the base net's own head width (its half's class count), which may differ
    from the target's; only cut points 1..n are ever copied.
    """
    return block_weights(load_trained(weights_path, model_name, input_shape, num_classes),
                         model_name)


def load_trained(weights_path, model_name, input_shape, num_classes):
    """The trained net saved in `weights_path`, rebuilt as a `model_name` net; TransferError
    naming the likely cause if the file is missing or does not fit."""
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
    return base


def block_weights(model, model_name) -> dict:
    """{cut point: {layer name: get_weights()}} of a built `model_name` net (head left out)."""
    blocks = models.get(model_name).block_layers(model)
    blocks.pop("head")
    return {cut: {layer.name: layer.get_weights() for layer in layers}
            for cut, layers in blocks.items()}


def apply_transfer(model, *, n, source, base_weights, finetune, origin_label=None,
                   model_name=None):
    """Copy/freeze cut points 1..n of `model` in place for one condition; call before compile.

    source: "none" (a base net, n = 0: nothing copied, everything trains), "A" or "B" (copy
    cut points 1..n from `base_weights`, as returned by `read_base_weights`), "random" (keep the
    fresh init of cut points 1..n, frozen). Copied blocks are frozen unless `finetune`. The
    combinations allowed are naming.net_problem's. `origin_label` names the origin of copied
    blocks in the returned plan, "base" + source by default. `model_name` is the network's
    name in models.NAMES (default: `model.name`).
    Returns one LayerPlan per cut point and one for the head, in order.
    """
    try:
        arch = models.get(model_name or model.name)
    except ValueError as error:
        raise TransferError(f"{error}: give apply_transfer the network's model_name") from error
    blocks = _check_request(model, arch, n, source, base_weights, finetune)
    copies = source in ("A", "B") and n > 0
    if copies:  # all shapes first, so a refused request leaves the model untouched
        for cut in arch.cut_names[:n]:
            _check_block(cut, blocks[cut], base_weights[cut])
    copied_origin = origin_label or f"base{source}"
    plan = []
    for index, name in enumerate((*arch.cut_names, "head"), start=1):
        if index > n:
            origin, trainable = "new", True
        elif source == "random":
            origin, trainable = "random", False
        else:
            for layer in blocks[name]:
                layer.set_weights(base_weights[name][layer.name])
            origin, trainable = copied_origin, bool(finetune)
        for layer in blocks[name]:
            layer.trainable = trainable
        plan.append(LayerPlan(arch.head[0] if name == "head" else name, origin, trainable))
    return plan


def frozen_prefix(model, model_name, plan) -> list:
    """The cut points at the bottom of `model` that are frozen (per `plan`, apply_transfer's)
    and computed without random draws (no dropout up to their output): their output is a
    function of the input alone, so packmates whose blocks hold the same weights can share it
    (steps.PackSteps). Bottom to top; empty for a net that trains its first block."""
    arch = models.get(model_name)
    position = {layer.name: index for index, layer in enumerate(model.layers)}
    random_from = min((position[layer.name] for layer in model.layers
                       if models.random_states(layer)), default=len(model.layers))
    prefix = []
    for cut, row in zip(arch.cut_points, plan):
        if row.trainable or position[cut.output] >= random_from:
            break
        prefix.append(cut)
    return prefix


def format_layer_table(rows):
    """The plan as an aligned text table for the log, one line per cut point and the head."""
    width = max([5] + [len(row.name) for row in rows])
    lines = [f"{'layer':<{width}}  {'origin':<7}  state"]
    for row in rows:
        lines.append(f"{row.name:<{width}}  {row.origin:<7}  "
                     f"{'trainable' if row.trainable else 'frozen'}")
    return "\n".join(lines)


def block_sha256(model, model_name) -> dict:
    """{cut point or head name, as in the plan: sha256 of every variable of its layers (batch
    normalisation's moving statistics included), in model order}: proves what was copied or
    frozen."""
    arch = models.get(model_name)
    return {arch.head[0] if name == "head" else name: _sha256(layers)
            for name, layers in arch.block_layers(model).items()}


def _sha256(layers):
    return weights_sha256(weight for layer in layers for weight in layer.get_weights())


def weights_sha256(arrays) -> str:
    """The sha256 of weight arrays in order: a block's hash (block_sha256) from its arrays."""
    digest = hashlib.sha256()
    for weight in arrays:
        digest.update(np.ascontiguousarray(weight).tobytes())
    return digest.hexdigest()


def _first_line(error):
    """Keras' load errors print whole weight tensors; the first line says what went wrong."""
    text = str(error).strip()
    return text.splitlines()[0][:300] if text else ""


def _check_request(model, arch, n, source, base_weights, finetune) -> dict:
    """TransferError for a request that cannot be carried out; else the model's blocks."""
    problem = naming.net_problem(source, n, finetune, model=arch.name, cut_names=arch.cut_names)
    if problem:
        raise TransferError(problem)
    if getattr(model, "compiled", False):
        raise TransferError("apply_transfer must run before model.compile: Keras ignores "
                            "trainable changes made after the train function is built")
    try:
        blocks = arch.block_layers(model)
    except ValueError as error:
        raise TransferError(f"model {model.name!r} is not a {arch.name} net: {error}") from error
    if source in ("A", "B") and n > 0:
        if base_weights is None:
            raise TransferError(f"source={source!r} with n={n} needs the base net's weights")
        absent = [name for name in arch.cut_names[:n] if name not in base_weights]
        if absent:
            raise TransferError(f"base net weights lack cut points {absent}")
    return blocks


def _check_block(cut, layers, weights):
    names = [layer.name for layer in layers]
    if sorted(names) != sorted(weights):
        raise TransferError(f"cut point {cut}: the base net has layers {sorted(weights)} but "
                            f"the target net has {sorted(names)}")
    for layer in layers:
        source_shapes = [tuple(np.shape(w)) for w in weights[layer.name]]
        target_shapes = [tuple(w.shape) for w in layer.weights]
        if source_shapes != target_shapes:
            raise TransferError(f"layer {layer.name}: base net weights have shapes "
                                f"{source_shapes} but the target net needs {target_shapes}")
