"""What the experiment needs to know about a network: its cut points.

A cut point plays the role of one of the paper's conv1..fc7: n = 1..k copies the first n cut
points of a base net into a target net. A cut point is a block of layers (one layer for
CaffeNet; a stem, a residual block or a group of blocks for a ResNet), named by the prefixes of
its layers' names; its last layer's output is the block's representation (what the CKA analysis
compares). The head (fc8, a classifier) is always new. Every layer that holds variables belongs
to exactly one cut point or to the head, which `block_layers` checks, so nothing a net learns
(kernels, biases, batch normalisation's scale, offset and moving statistics) escapes transfer,
freezing or the per-block hashes of result.json.
"""
from __future__ import annotations

import dataclasses
from typing import Callable


@dataclasses.dataclass(frozen=True)
class CutPoint:
    name: str  # "conv1", "stem", "block3": how the report and the logs call it
    prefixes: tuple  # a layer whose name starts with one of these belongs to the block
    output: str  # the layer whose output is the block's representation


@dataclasses.dataclass(frozen=True)
class Architecture:
    """A network family the experiment runs on; each module of keras_transfer.models declares
    its own in ARCHITECTURES."""
    name: str  # --model
    # (num_classes, input_shape, *, dropout, seed) -> keras.Model with softmax outputs; `seed`
    # makes the initialisation reproducible, None draws from Keras' global RNG.
    build: Callable
    cut_points: tuple  # CutPoint, bottom to top; n counts them
    head: tuple  # name prefixes of the layers that are always new (fc8)
    # Factor applied after mean subtraction by the input pipeline: 1.0 feeds raw 0-255
    # differences (Caffe's CaffeNet), 1/255 unit-scale ones.
    input_scale: float
    # The training crop of a 256 px image at paper scale (227 for CaffeNet, 224 for the Keras
    # applications); None: a few pixels less than the image, for small images.
    crop_of_256: int | None
    # Layer n means the paper's layer n (conv1..fc7), so the paper's values per n compare.
    paper_layers: bool
    # One net leaves a core idle between its small ops: the grid trains several in one process.
    packed: bool
    about: str  # one line for --help
    # The smallest crop (pixels per side) its layers can take: smaller ones leave a pooling or a
    # strided convolution nothing to work on (tests/test_models.py builds both sides of it).
    min_input: int = 1

    @property
    def max_n(self) -> int:
        return len(self.cut_points)

    @property
    def cut_names(self) -> tuple:
        return tuple(cut.name for cut in self.cut_points)

    def block_of(self, layer_name: str) -> str | None:
        """The cut point (or "head") a layer belongs to, None if it matches none."""
        owners = [cut.name for cut in self.cut_points
                  if any(layer_name.startswith(p) for p in cut.prefixes)]
        if any(layer_name.startswith(p) for p in self.head):
            owners.append("head")
        if len(owners) > 1:
            raise ValueError(f"{self.name}: layer {layer_name!r} matches the prefixes of "
                             f"{owners}; each layer must belong to one block")
        return owners[0] if owners else None

    def block_layers(self, model) -> dict:
        """{cut point name, ..., "head": [layers with variables, in model order]}; ValueError if
        a layer holding variables belongs to no block or a block has no layer."""
        blocks = {name: [] for name in (*self.cut_names, "head")}
        for layer in model.layers:
            if not layer.weights:
                continue
            owner = self.block_of(layer.name)
            if owner is None:
                raise ValueError(f"{self.name}: layer {layer.name!r} holds variables but belongs "
                                 f"to no cut point and not to the head; add its name to one")
            blocks[owner].append(layer)
        empty = [name for name, layers in blocks.items() if not layers]
        if empty:
            raise ValueError(f"{self.name}: the blocks {empty} have no layer with variables")
        return blocks


class ModelError(ValueError):
    """A network that cannot take part in the experiment: the message names what is wrong with
    it and how to fix it."""


def check_declaration(arch) -> None:
    """ModelError naming the first field of `arch` that is not what the experiment reads: the
    checks that need no TensorFlow (the grid makes them before it imports any)."""
    if not isinstance(arch, Architecture):
        raise ModelError(f"{arch!r} is a {type(arch).__name__}, not a "
                         "keras_transfer.models.Architecture")
    where = f"Architecture {arch.name!r}"
    if not callable(arch.build):
        raise ModelError(f"{where}: build is {arch.build!r}, not a function (num_classes, "
                         "input_shape, *, dropout, seed) -> keras.Model")
    if not isinstance(arch.cut_points, (tuple, list)) or not arch.cut_points:
        raise ModelError(f"{where}: cut_points must be a tuple of CutPoint, bottom to top, with "
                         "at least one")
    for cut in arch.cut_points:
        if not isinstance(cut, CutPoint):
            raise ModelError(f"{where}: cut_points holds {cut!r}; give CutPoint(name, prefixes, "
                             "output) for each")
        _check_prefixes(f"{where}: cut point {cut.name!r}", cut.prefixes)
    names = [cut.name for cut in arch.cut_points]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ModelError(f"{where}: the cut point names {repeated} are given more than once; "
                         "name each cut point once (n counts them, the report shows them)")
    if "head" in names:
        raise ModelError(f"{where}: a cut point is named 'head', the name of the classifier "
                         "that is always new; name it otherwise")
    _check_prefixes(f"{where}: head", arch.head)
    if not (isinstance(arch.input_scale, (int, float)) and arch.input_scale > 0):
        raise ModelError(f"{where}: input_scale is {arch.input_scale!r}; give a positive number "
                         "(1/255 for unit-scale images)")


def _check_prefixes(what: str, prefixes) -> None:
    """Prefixes are a tuple of layer name beginnings (a bare string would match by letters)."""
    if (not isinstance(prefixes, (tuple, list)) or not prefixes
            or not all(isinstance(p, str) and p for p in prefixes)):
        raise ModelError(f"{what} has prefixes {prefixes!r}; give a tuple of layer name "
                         "beginnings, e.g. ('conv1',)")


def check_network(arch, model, num_classes: int) -> None:
    """ModelError unless `model`, a build of `arch`, is what transfer, training, the hashes of
    result.json and the analysis take: a Keras model with `num_classes` outputs, whose every
    variable belongs to exactly one cut point or to the head, each cut point's output a layer."""
    import keras  # here: the grid reads the declarations without TensorFlow
    if not isinstance(model, keras.Model):
        raise ModelError(f"{arch.name}: build returned a {type(model).__name__}, not a "
                         "keras.Model; return keras.Model(inputs, outputs)")
    try:
        blocks = arch.block_layers(model)
    except ValueError as e:
        raise ModelError(str(e)) from None
    owners = {}
    for block, layers in blocks.items():
        for layer in layers:
            for weight in layer.weights:
                owners.setdefault(id(weight), []).append(block)
    for weight in model.weights:
        found = owners.get(id(weight), [])
        if len(found) != 1:
            where = f"the blocks {found}" if found else "no cut point and not the head"
            raise ModelError(f"{arch.name}: the variable {weight.path} belongs to {where}; "
                             "each variable must belong to exactly one (hold it in one layer "
                             "whose name starts with one block's prefix)")
    for cut in arch.cut_points:
        if cut.output not in {layer.name for layer in model.layers}:
            raise ModelError(f"{arch.name}: cut point {cut.name!r} names its output layer "
                             f"{cut.output!r}, which the model does not have; name the layer "
                             "whose output stands for the block")
    shape = tuple(model.outputs[0].shape) if len(model.outputs) == 1 else None
    if shape is None or shape[1:] != (num_classes,):
        raise ModelError(f"{arch.name}: built for {num_classes} classes, its outputs are "
                         f"{[tuple(o.shape) for o in model.outputs]}, not one (batch, "
                         f"{num_classes}); end with a softmax of num_classes units")


def random_states(model_or_layer) -> list:
    """The state variables of its seed generators (dropout masks), in variable order, which is
    the same for every build of one architecture: what makes a layer random in training."""
    return [v for v in model_or_layer.variables if v.path.endswith("seed_generator_state")]


def first_conv(model):
    """The network's first convolution (conv1 of CaffeNet): the layer whose filters are drawn
    as images, since they look at pixels."""
    for layer in model.layers:
        kernel = getattr(layer, "kernel", None)
        if kernel is not None and len(kernel.shape) == 4:
            return layer
    raise ValueError(f"{model.name} has no convolution")


def multiply_adds(model) -> int:
    """Forward multiply-adds per image of the conv and dense layers, from their built shapes.

    Counts what the paper's 0.724 G counts: kernel multiply-adds only (no bias, batch
    normalisation, ReLU, pooling, LRN or softmax). Depthwise convolutions count one input
    channel per output channel.
    """
    return sum(layer_multiply_adds(model).values())


def layer_multiply_adds(model) -> dict:
    """{layer name: forward multiply-adds per image} of the conv and dense layers, in model
    order (what `multiply_adds` sums)."""
    import keras  # here: the grid reads the declarations without TensorFlow
    counts = {}
    for layer in model.layers:
        kernel = getattr(layer, "kernel", None)
        if kernel is None:
            continue
        if isinstance(layer, keras.layers.Dense):
            fan_in, units = kernel.shape
            counts[layer.name] = int(fan_in * units)
        elif len(kernel.shape) == 4:  # Conv2D, SplitGroupConv2D, DepthwiseConv2D
            kernel_h, kernel_w, in_per_group, filters = kernel.shape
            if isinstance(layer, keras.layers.DepthwiseConv2D):
                filters, in_per_group = in_per_group * filters, 1
            _, out_h, out_w, _ = layer.output.shape
            counts[layer.name] = int(out_h * out_w * filters * kernel_h * kernel_w * in_per_group)
    return counts


def block_multiply_adds(arch: "Architecture", model) -> dict:
    """{cut point name, ..., "head": forward multiply-adds per image}, bottom to top."""
    blocks = {name: 0 for name in (*arch.cut_names, "head")}
    for name, count in layer_multiply_adds(model).items():
        blocks[arch.block_of(name)] += count
    return blocks


def training_flop(blocks: dict, trainable: dict) -> int:
    """FLOP per image of one training step (2 per multiply-add), counting what is computed:
    the forward pass everywhere; for each trainable block its weights' gradient; and the
    gradient of each block's input from the lowest trainable block up (nothing below it is
    differentiated, and its own input's gradient is not needed)."""
    flop, lowest_seen = 0, False
    for name, count in blocks.items():
        flop += 2 * count  # forward
        if trainable[name]:
            flop += 2 * count  # the weights' gradient
        if lowest_seen:
            flop += 2 * count  # the gradient of this block's input
        lowest_seen = lowest_seen or trainable[name]
    return flop


class LayerSeeds:
    """A distinct int seed per initializer/dropout from one model seed, or None throughout.

    Keras initializers with the same int seed draw the same numbers, so every layer needs its
    own; seed * 1000 + i keeps the seeds of different model seeds apart.
    """

    def __init__(self, seed):
        self._seed = seed
        self._count = 0

    def next(self):
        if self._seed is None:
            return None
        self._count += 1
        return int(self._seed) * 1000 + self._count
