"""A network trained elsewhere as the base of transfer nets (main's --base_model).

It takes baseA's role: a net with --source=A (target B) copies its cut points 1..n from the
external network instead of from the grid's baseA, matched by the layer names the --model
architecture declares (models/architecture.py), each copied layer's shapes checked. The file is
a saved Keras model (`.keras`) of the --model architecture; for the keras.applications networks
(resnet50, mobilenetv2) also a weights file saved without the top (`.weights.h5`, `.h5`: what
keras.applications takes as weights=PATH) or `imagenet` (Keras downloads it).

The rule of shapes: a convolution's weights do not depend on the image size, so convolutional
cut points copy at any input size; a copied dense layer (small's and caffenet's fc6) takes the
flattened output of the convolutions, whose width follows the input size, so it copies only
when the target net sees inputs of the external net's size. --adapt_input resizes, centre-crops
or zero-pads the target's crops to that size (after the mean is subtracted); --adapt_channels
repeats a grey channel to the external net's channels. Anything else is refused with one line
naming the layer and both shapes.

The external net's training mean image is not known, so its dependants subtract their target
half's (`Config.mean_half`), and the record says so. Its file's sha256 and the hash of each cut
point copied go into config.json and result.json (`ExternalBase.record`); a finished net whose
file has changed since is stale (run_records.RunDir.why_stale).
"""
from __future__ import annotations

import dataclasses
import functools
import os
import warnings
import zipfile

from data_prep.manifest import sha256_file
from keras_transfer import models

KERAS_MODEL = ".keras"
WEIGHTS_ENDINGS = (".weights.h5", ".h5")
IMAGENET = "imagenet"
ORIGIN = "external"  # the origin of its copied cut points in the layer plan and result.json
# The networks whose weights files keras.applications reads (weights=PATH), by --model.
APPLICATIONS = {"resnet50": "ResNet50", "mobilenetv2": "MobileNetV2"}


class ExternalBaseError(Exception):
    """The external network cannot be a base here; the message says why and what to do."""


def kind_of(base_model: str) -> str:
    """"keras model", "weights" or "imagenet"; "" for a name of none of these kinds."""
    if base_model == IMAGENET:
        return "imagenet"
    if base_model.endswith(KERAS_MODEL):
        return "keras model"
    if base_model.endswith(WEIGHTS_ENDINGS):
        return "weights"
    return ""


def path_problem(base_model: str, model_name: str) -> str | None:
    """What makes --base_model unusable with --model=model_name before it is opened, or None:
    its kind, and its file's existence. Needs no TensorFlow (the grid asks it)."""
    flag = f"--base_model={base_model}"
    kind = kind_of(base_model)
    if not kind:
        return (f"{flag} is neither a saved Keras model (.keras) nor a weights file (.weights.h5, "
                ".h5) nor imagenet: save the network with model.save('NAME.keras')")
    if kind != "keras model" and model_name not in APPLICATIONS:
        return (f"{flag}: a weights file (or imagenet) is read by keras.applications, which "
                f"builds {' and '.join(APPLICATIONS)}, not --model={model_name}; save the "
                "network whole with model.save('NAME.keras')")
    if kind != "imagenet" and not os.path.isfile(base_model):
        return f"{flag}: no such file; give the path of the saved network"
    return None


@functools.lru_cache(maxsize=32)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    return sha256_file(path)


def file_sha256(base_model: str) -> str | None:
    """The sha256 of the external network's file (None for imagenet, or if it is missing);
    cached by size and modification time, as the grid asks for every net."""
    if kind_of(base_model) == "imagenet":
        return None
    try:
        stat = os.stat(base_model)
    except OSError:
        return None
    return _sha256(os.path.abspath(base_model), stat.st_size, stat.st_mtime_ns)


@dataclasses.dataclass(frozen=True)
class ExternalBase:
    """The external network as a base: where it is, what it holds, how the target's inputs
    are fed to it, and the weights of the cut points a net copies."""
    path: str
    sha256: str | None
    kind: str
    input_shape: tuple  # its own input (height, width, channels); None for a size it leaves open
    model_input: tuple  # the input shape its dependants are built for
    adaptation: object  # data.InputAdaptation, or None: the crops as they are
    weights: dict  # {cut point: {layer name: get_weights()}}, cut points 1..n
    digests: dict  # {cut point: sha256 of its copied weights, as result.json's sha256_start}

    def record(self, mean_half: str) -> dict:
        """What config.json and result.json say of it (docs/formats.md)."""
        return {"path": self.path, "sha256": self.sha256, "kind": self.kind,
                "input_shape": list(self.input_shape), "model_input": list(self.model_input),
                "adaptation": self.adaptation.record() if self.adaptation else None,
                "mean_half": mean_half, "layers": dict(self.digests)}


def read(config, crop_shape: tuple | None, num_classes: int) -> ExternalBase:
    """The external base of `config` (a Config with copies_external) for target crops of
    `crop_shape`: loaded, its input adaptation chosen and its cut points 1..n checked against
    a --model net of `num_classes` outputs. ExternalBaseError (one line) if it does not fit.
    `crop_shape` None: crops of the external net's own input (the grid's check before the data
    is prepared, where only its network can be checked)."""
    problem = path_problem(config.base_model, config.model)
    if problem:
        raise ExternalBaseError(problem + ".")
    kind = kind_of(config.base_model)
    if kind == "keras model":
        external = _load_keras_model(config.base_model)
        base_shape = _input_shape(config.base_model, external)
    else:  # keras.applications at the paper-scale input its weights were trained at
        side = models.get(config.model).crop_of_256
        base_shape = (side, side, 3)
    model_shape, adaptation = network_input(config, crop_shape or _own_crops(config, base_shape),
                                            base_shape)
    if kind != "keras model":
        external = _load_application_weights(config, model_shape)
    target = models.build(config.model, num_classes, model_shape)
    weights, digests = copied_weights(config, external, target, model_shape)
    return ExternalBase(path=os.path.abspath(config.base_model) if kind != "imagenet" else kind,
                        sha256=file_sha256(config.base_model), kind=kind,
                        input_shape=tuple(base_shape), model_input=tuple(model_shape),
                        adaptation=adaptation, weights=weights,
                        digests=digests)


def _own_crops(config, base_shape: tuple) -> tuple:
    """Crops of the external net's input shape, a size it leaves open taken as the --model's
    crop of a 256 px photo, else 32 px (or its smallest input): all its cut points build."""
    arch = models.get(config.model)
    side = arch.crop_of_256 or max(arch.min_input, 32)
    height, width, channels = base_shape
    return (height or side, width or side, channels)


def network_input(config, crop_shape: tuple, base_shape: tuple):
    """(the target net's input shape, data.InputAdaptation or None) for crops of `crop_shape`
    fed to an external net of input `base_shape` as --adapt_input and --adapt_channels say."""
    from keras_transfer.data import InputAdaptation  # TensorFlow: only where a net is trained

    crop_h, crop_w, channels = crop_shape
    base_h, base_w, base_channels = base_shape
    flag = f"--base_model={config.base_model}"
    if config.adapt_channels == "repeat" and channels != 1:
        raise ExternalBaseError(f"--adapt_channels=repeat repeats the one channel of grey "
                                f"images, but half {config.target}'s have {channels}: drop it.")
    if channels != base_channels:
        if not (config.adapt_channels == "repeat" and channels == 1):
            fix = ("give --adapt_channels=repeat to repeat their grey channel" if channels == 1
                   else "a network of other channels cannot be adapted here")
            raise ExternalBaseError(f"{flag} takes {base_channels}-channel images and half "
                                    f"{config.target}'s have {channels}: {fix}.")
    mode = config.adapt_input
    if mode == "none":
        size = (crop_h, crop_w)
    elif base_h is None or base_w is None:
        raise ExternalBaseError(f"{flag} takes images of any size, so there is no size to "
                                f"--adapt_input={mode} to: give --adapt_input=none.")
    else:
        size = (base_h, base_w)
        smaller = crop_h < base_h or crop_w < base_w
        larger = crop_h > base_h or crop_w > base_w
        if (mode == "crop" and smaller) or (mode == "pad" and larger):
            raise ExternalBaseError(
                f"--adapt_input={mode} cannot make the {crop_h}x{crop_w} crops of half "
                f"{config.target} the {base_h}x{base_w} inputs of {flag}: "
                f"{'crop needs crops at least' if mode == 'crop' else 'pad needs crops at most'}"
                f" that big; use --adapt_input=resize, or {'pad' if mode == 'crop' else 'crop'}.")
    model_channels = base_channels if channels != base_channels else channels
    adaptation = None
    if mode != "none" or model_channels != channels:
        adaptation = InputAdaptation(mode=mode, size=size,
                                     channels=model_channels if model_channels != channels else None)
    return (*size, model_channels), adaptation


def copied_weights(config, external, target, model_shape) -> tuple[dict, dict]:
    """({cut point: {layer: weights}}, {cut point: sha256}) of cut points 1..n of `external`,
    after checking that each layer of `target` (a --model net) in them is there with the same
    shapes; ExternalBaseError naming the first that is not."""
    from keras_transfer import transfer

    arch = models.get(config.model)
    by_name = {layer.name: layer for layer in external.layers if layer.weights}
    owned = {}
    for name in by_name:
        try:
            owner = arch.block_of(name)
        except ValueError:
            owner = None
        owned.setdefault(owner, []).append(name)
    flag = f"--base_model={config.base_model}"
    blocks = arch.block_layers(target)
    weights, digests = {}, {}
    for index, cut in enumerate(arch.cut_names[:config.n], start=1):
        layers = blocks[cut]
        for layer in layers:
            if layer.name not in by_name:
                raise ExternalBaseError(
                    f"{flag} has no layer {layer.name} (cut point {cut} of --model={arch.name}, "
                    f"copied for --n={config.n}): it is not a {arch.name} network. Save one built "
                    f"as --model={arch.name}, or give the --model it was built as"
                    + (f", or copy fewer cut points (--n={index - 1})." if index > 1 else "."))
            have = [tuple(w.shape) for w in by_name[layer.name].weights]
            need = [tuple(w.shape) for w in layer.weights]
            if have != need:
                raise ExternalBaseError(
                    f"layer {layer.name} of {flag} holds weights of shapes {have}, but "
                    f"--model={arch.name} with {'x'.join(map(str, model_shape))} inputs needs "
                    f"{need}: {_shape_fix(config, have, need, index)}")
        extra = sorted(set(owned.get(cut, [])) - {layer.name for layer in layers})
        if extra:
            raise ExternalBaseError(
                f"{flag} has layers {extra} in cut point {cut} that --model={arch.name} lacks: it "
                f"is not a {arch.name} network. Save one built as --model={arch.name}.")
        weights[cut] = {layer.name: by_name[layer.name].get_weights() for layer in layers}
        digests[cut] = transfer.weights_sha256(
            w for layer in layers for w in weights[cut][layer.name])
    return weights, digests


def _shape_fix(config, have, need, index) -> str:
    """How to make a layer's shapes fit: adapt the input for a dense layer whose input width
    follows the image size or for the first convolution's channels; else another network."""
    kernel_have, kernel_need = have[0] if have else (), need[0] if need else ()
    if len(kernel_have) == 2 and len(kernel_need) == 2 and kernel_have[1:] == kernel_need[1:]:
        return ("a dense layer's input width follows the image size: give --adapt_input=resize, "
                "crop or pad to feed it inputs of the external network's size"
                + (f", or copy the convolutions only (--n={index - 1})." if index > 1 else "."))
    if (len(kernel_have) == 4 and len(kernel_need) == 4 and kernel_have[2] != kernel_need[2]
            and index == 1):
        return ("its input channels differ: give --adapt_channels=repeat for grey images, or "
                "a network trained on images of these channels.")
    return (f"it is not a --model={config.model} network of these widths; save one built as "
            f"--model={config.model}, or give the --model it was built as.")


def _input_shape(path: str, model) -> tuple:
    shapes = model.input_shape
    if isinstance(shapes, list) or len(shapes) != 4:
        raise ExternalBaseError(f"--base_model={path} takes inputs {shapes}; a base net takes "
                                "one batch of images (batch, height, width, channels).")
    return tuple(shapes[1:])


def _first_line(error) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:300] if text else type(error).__name__


def _load_keras_model(path: str):
    """The network saved in `path` (model.save), its custom layers this project's."""
    import keras

    from keras_transfer import layers
    del layers  # imported for its registration of SplitGroupConv2D, LRN and the fused BN
    if path.endswith(".keras") and not zipfile.is_zipfile(path):
        # Keras says "File not found" of a .keras file that is there but not a zip archive.
        raise ExternalBaseError(f"--base_model={path} is not a saved Keras model (a .keras file "
                                "is a zip archive, this one is not); save it with "
                                "model.save('NAME.keras').")
    try:
        return keras.saving.load_model(path, compile=False)
    except (OSError, ValueError, TypeError, KeyError, zipfile.BadZipFile) as error:
        raise ExternalBaseError(f"--base_model={path} cannot be read as a saved Keras model "
                                f"({type(error).__name__}: {_first_line(error)}); save it with "
                                "model.save('NAME.keras').") from error


def _load_application_weights(config, input_shape: tuple):
    """keras.applications' network of --model without its top, `weights` = the file (or
    imagenet), built for `input_shape`."""
    import keras

    name = APPLICATIONS[config.model]
    builder = getattr(keras.applications, name)
    try:
        with warnings.catch_warnings():  # a half-loaded file must be an error, not a warning
            if config.base_model != IMAGENET:  # imagenet warns of sizes other than 224
                warnings.simplefilter("error", UserWarning)
            return builder(weights=config.base_model, include_top=False,
                           input_shape=tuple(input_shape))
    except (OSError, ValueError, TypeError, KeyError, UserWarning) as error:
        raise ExternalBaseError(
            f"--base_model={config.base_model} cannot be loaded as keras.applications.{name}"
            f"(include_top=False) weights at input {tuple(input_shape)} "
            f"({type(error).__name__}: {_first_line(error)}): give weights saved from that "
            "network without its top (save_weights), or a saved .keras model.") from error
