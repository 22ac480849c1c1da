"""CaffeNet (the paper's network) and a small member of the same family for 28-64 px images.

Both are functional Keras models with the eight weight layers of the paper under stable names
(`LAYER_NAMES`); their cut points are conv1..fc7, one layer each, so "layer n" is
`LAYER_NAMES[n - 1]`, and fc8 is the head (always new). Both take
float32 mean-subtracted images (the input pipeline crops, subtracts the mean and scales: raw
0-255 differences for CaffeNet as in Caffe, divided by 255 for the small model, which is
initialised for unit-scale inputs; the model itself does not rescale) and output class
probabilities (softmax), so train them with a non-logits loss such as
`SparseCategoricalCrossentropy(from_logits=False)`.

The layers carry Caffe's gaussian initialisation with its per-layer bias constants (the small
model keeps the bias pattern but needs He-scaled kernels, see `small`). Weight decay is the
solver's (solver.CaffeSGD), as in Caffe.
"""
import dataclasses

from keras_transfer import naming
from keras_transfer.models.architecture import Architecture, CutPoint, LayerSeeds

LAYER_NAMES = (*naming.PAPER_LAYERS, "fc8")

# Caffe's LRN in CaffeNet (norm1, norm2).
LRN_SIZE, LRN_ALPHA, LRN_BETA = 5, 1e-4, 0.75


@dataclasses.dataclass(frozen=True)
class ConvSpec:
    filters: int
    kernel: int
    stride: int
    padding: str  # "valid" or "same" (Caffe's pad = kernel // 2 at stride 1)
    groups: int
    bias: float  # Caffe's constant bias initialisation
    pool_after: bool  # max pool 3x3 stride 2
    lrn_after: bool  # LRN after the pool


@dataclasses.dataclass(frozen=True)
class ArchSpec:
    convs: tuple  # five ConvSpec, conv1..conv5
    fc_units: tuple  # (fc6, fc7)
    pool_padding: str
    # "caffe": gaussian std 0.01 (fc6, fc7: 0.005), the paper's. "he": std sqrt(2 / fan_in),
    # for the small model, which at Caffe's fixed std never leaves chance level (its narrow
    # layers shrink the signal ~100x per layer).
    kernel_init: str = "caffe"
    fc_bias: float = 1.0  # fc6, fc7 bias constant


# Caffe's gaussian init: std 0.01 everywhere except fc6/fc7 (0.005); bias constants below.
_CONV_STD, _FC_STD = 0.01, 0.005

CAFFENET = ArchSpec(
    convs=(
        ConvSpec(96, 11, 4, "valid", 1, 0.0, pool_after=True, lrn_after=True),
        ConvSpec(256, 5, 1, "same", 2, 1.0, pool_after=True, lrn_after=True),
        ConvSpec(384, 3, 1, "same", 1, 0.0, pool_after=False, lrn_after=False),
        ConvSpec(384, 3, 1, "same", 2, 1.0, pool_after=False, lrn_after=False),
        ConvSpec(256, 3, 1, "same", 2, 1.0, pool_after=True, lrn_after=False),
    ),
    fc_units=(4096, 4096),
    # Caffe pools in ceil mode; at CaffeNet's sizes (55, 27, 13) floor ("valid") gives the same
    # 27, 13, 6, which tests/test_models.py checks.
    pool_padding="valid",
)

SMALL = ArchSpec(
    convs=(
        ConvSpec(16, 3, 1, "same", 1, 0.0, pool_after=True, lrn_after=True),
        ConvSpec(32, 3, 1, "same", 2, 0.1, pool_after=True, lrn_after=True),
        ConvSpec(48, 3, 1, "same", 1, 0.0, pool_after=False, lrn_after=False),
        ConvSpec(48, 3, 1, "same", 2, 0.1, pool_after=False, lrn_after=False),
        ConvSpec(32, 3, 1, "same", 2, 0.1, pool_after=True, lrn_after=False),
    ),
    fc_units=(128, 128),
    pool_padding="same",
    # Caffe's bias pattern, scaled to the He-initialised activations (about 1 rather than 100).
    kernel_init="he",
    fc_bias=0.1,
)


def caffenet(num_classes, input_shape=(227, 227, 3), *, dropout=0.5, seed=None):
    """The paper's CaffeNet; outputs softmax probabilities.

    227x227x3 -> conv1 96@11x11/4 (55x55) -> ReLU -> maxpool 3/2 (27) -> LRN
    -> conv2 256@5x5 pad 2 groups 2 -> ReLU -> maxpool 3/2 (13) -> LRN
    -> conv3 384@3x3 pad 1 -> conv4 384@3x3 pad 1 groups 2 -> conv5 256@3x3 pad 1 groups 2
    (each ReLU) -> maxpool 3/2 (6x6x256 = 9216) -> fc6 4096 -> dropout -> fc7 4096 -> dropout
    -> fc8 num_classes -> softmax. 0.724 G multiply-adds per image forward at 1000 classes.
    Flatten is in Keras' HWC order (Caffe's is CHW); only matters for importing Caffe weights.
    """
    return _build(CAFFENET, "caffenet", num_classes, input_shape, dropout, seed)


def small(num_classes, input_shape=(28, 28, 1), *, dropout=0.5, seed=None):
    """CaffeNet's layout scaled to 28-64 px images; outputs softmax probabilities.

    Same eight weight layers in the same order with the same groups, pooling and LRN placement:
    conv1 16@3x3 -> ReLU -> maxpool 3/2 -> LRN -> conv2 32@3x3 groups 2 -> ReLU -> maxpool 3/2
    -> LRN -> conv3 48@3x3 -> conv4 48@3x3 groups 2 -> conv5 32@3x3 groups 2 -> maxpool 3/2
    -> fc6 128 -> dropout -> fc7 128 -> dropout -> fc8 -> softmax. All convs stride 1 "same"
    (Caffe pad 1), pools "same" (28 -> 14 -> 7 -> 4), so fc6 sees 4x4x32 = 512 features.

    Multiply-adds per image forward at 28x28x1 with 5 classes: conv1 112,896; conv2 451,584;
    conv3 677,376; conv4 508,032; conv5 338,688; fc6 65,536; fc7 16,384; fc8 640; total
    2,171,136 (~2.2 M; `multiply_adds` recounts it). Widths were chosen so 37 nets of the
    Fashion-MNIST demo train on 2 CPU cores in about half an hour, while every layer keeps
    enough channels (>= 16, even per group) for transfer between halves to be meaningful.

    Initialisation: He normal kernels for conv1..fc7 (fc8 keeps Caffe's std 0.01) and Caffe's
    bias pattern at 0.1 instead of 1. Caffe's fixed std 0.01 leaves a net this narrow at chance
    level (measured: 0.20 validation top-1 on 5 Fashion-MNIST classes after 600 steps, against
    0.82 with He init); the pipeline feeds it (pixel - mean) / 255. At that scale LRN with
    Caffe's alpha changes initial activations by well under 1%: it is kept for the layout.
    """
    return _build(SMALL, "small", num_classes, input_shape, dropout, seed)


# One cut point per weight layer below fc8: what n counts in the paper.
_CUT_POINTS = tuple(CutPoint(name, (name,), name) for name in LAYER_NAMES[:-1])

CAFFENET_ARCHITECTURE = Architecture(
    name="caffenet", build=caffenet, cut_points=_CUT_POINTS, head=("fc8",), input_scale=1.0,
    crop_of_256=227, paper_layers=True, packed=False,
    about="the paper's CaffeNet, 227 px crops",
    min_input=67)  # conv1 (11, stride 4) and three 3x3 stride-2 'valid' pools leave 1x1 at 67
SMALL_ARCHITECTURE = Architecture(
    name="small", build=small, cut_points=_CUT_POINTS, head=("fc8",), input_scale=1.0 / 255.0,
    crop_of_256=None, paper_layers=True, packed=True,
    about="CaffeNet's 8 layers scaled to 28-64 px")
ARCHITECTURES = (CAFFENET_ARCHITECTURE, SMALL_ARCHITECTURE)


def _build(spec, model_name, num_classes, input_shape, dropout, seed):
    import keras  # here: the grid reads the declarations without TensorFlow

    from keras_transfer.layers import LocalResponseNorm, SplitGroupConv2D
    seeds = LayerSeeds(seed)
    inputs = keras.Input(shape=input_shape, dtype="float32", name="image")
    x = inputs
    for index, conv in enumerate(spec.convs, start=1):
        common = dict(
            strides=conv.stride, padding=conv.padding, activation="relu",
            kernel_initializer=_kernel_init(spec, _CONV_STD, seeds.next()),
            bias_initializer=keras.initializers.Constant(conv.bias), name=f"conv{index}")
        if conv.groups == 1:
            layer = keras.layers.Conv2D(conv.filters, conv.kernel, **common)
        else:
            layer = SplitGroupConv2D(conv.filters, conv.kernel, groups=conv.groups, **common)
        x = layer(x)
        if conv.pool_after:
            x = keras.layers.MaxPooling2D(3, 2, padding=spec.pool_padding,
                                          name=f"pool{index}")(x)
        if conv.lrn_after:
            x = LocalResponseNorm(LRN_SIZE, LRN_ALPHA, LRN_BETA, name=f"norm{index}")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    for index, units in enumerate(spec.fc_units, start=6):
        x = keras.layers.Dense(
            units, activation="relu",
            kernel_initializer=_kernel_init(spec, _FC_STD, seeds.next()),
            bias_initializer=keras.initializers.Constant(spec.fc_bias), name=f"fc{index}")(x)
        x = keras.layers.Dropout(dropout, seed=seeds.next(), name=f"drop{index}")(x)
    # fc8 and the softmax stay float32 under a mixed_bfloat16 policy: the loss needs them exact.
    x = keras.layers.Dense(
        num_classes, dtype="float32",
        kernel_initializer=keras.initializers.RandomNormal(stddev=_CONV_STD, seed=seeds.next()),
        bias_initializer="zeros", name="fc8")(x)
    outputs = keras.layers.Activation("softmax", dtype="float32", name="prob")(x)
    return keras.Model(inputs, outputs, name=model_name)


def _kernel_init(spec, caffe_std, seed):
    import keras
    if spec.kernel_init == "he":
        return keras.initializers.HeNormal(seed=seed)
    return keras.initializers.RandomNormal(stddev=caffe_std, seed=seed)
