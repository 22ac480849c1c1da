"""Keras applications at paper scale (224 px crops of 256 px images), untrained (weights=None).

`--model=resnet50`: ResNet50 (He et al. 2016). Cut points: the stem `conv1` (7x7 conv, BN) and
the four stages `conv2`..`conv5` (3, 4, 6, 3 bottleneck blocks), Keras' own layer prefixes;
n = 1..5. The head `predictions` (after global average pooling) is always new.

`--model=mobilenetv2`: MobileNetV2 (Sandler et al. 2018, width 1.0). Cut points: the stem
(`Conv1` and the first inverted residual), then the block groups of one width each: blocks 1-2
(24 channels), 3-5 (32), 6-9 (64), 10-12 (96), 13-15 (160), and block 16 (320) with the 1x1
conv to 1280 (`Conv_1`); n = 1..7. The head `predictions` is always new.

Both keep Keras' layer names (the cut points are declared by them). Their batch normalisation
layers become layers.FusedBatchNormalization (same arguments and variables; Keras' defaults
stand, momentum 0.99: fine at paper-scale schedules), whose moving statistics stay one value
across the replicas of MirroredStrategy, where the copies of Keras' own layer drift apart.
Inputs are unit-scale mean-subtracted images.
"""
import random

from keras_transfer.models.architecture import Architecture, CutPoint


def _seeded(builder):
    """Keras applications take no seed; their unseeded initializers draw their seeds from
    Python's `random`, so a seeded build runs with that generator seeded, then restored."""
    def build(num_classes, input_shape=(224, 224, 3), *, dropout=0.0, seed=None):
        del dropout  # neither network has dropout below its head
        if seed is None:
            return _fused_batch_norm(builder(num_classes, input_shape))
        state = random.getstate()
        random.seed(int(seed))
        try:
            return _fused_batch_norm(builder(num_classes, input_shape))
        finally:
            random.setstate(state)
    build.__doc__ = builder.__doc__
    return build


def _fused_batch_norm(model):
    """The same network with FusedBatchNormalization for Keras' BatchNormalization, and the
    same initial values (cloning rebuilds the variables; they are copied back)."""
    import keras  # here: the grid reads the declarations without TensorFlow

    from keras_transfer.layers import FusedBatchNormalization

    def clone(layer):
        if type(layer) is keras.layers.BatchNormalization:
            return FusedBatchNormalization.from_config(layer.get_config())
        return layer.__class__.from_config(layer.get_config())
    fused = keras.models.clone_model(model, clone_function=clone)
    fused.set_weights(model.get_weights())
    return fused


def _resnet50(num_classes, input_shape):
    """keras.applications.ResNet50, untrained, softmax outputs."""
    import keras  # here: the grid reads the declarations without TensorFlow
    return keras.applications.ResNet50(weights=None, input_shape=input_shape,
                                       classes=num_classes, classifier_activation="softmax")


def _mobilenetv2(num_classes, input_shape):
    """keras.applications.MobileNetV2 (alpha 1.0), untrained, softmax outputs."""
    import keras  # here: the grid reads the declarations without TensorFlow
    return keras.applications.MobileNetV2(weights=None, input_shape=input_shape,
                                          classes=num_classes, classifier_activation="softmax")


def _blocks(numbers):
    return tuple(f"block_{i}_" for i in numbers)


RESNET50_CUT_POINTS = (CutPoint("conv1", ("conv1_",), "conv1_relu"),) + tuple(
    CutPoint(f"conv{stage}", (f"conv{stage}_",), f"conv{stage}_block{blocks}_out")
    for stage, blocks in ((2, 3), (3, 4), (4, 6), (5, 3)))

MOBILENETV2_CUT_POINTS = (
    CutPoint("stem", ("Conv1", "bn_Conv1", "expanded_conv_"), "expanded_conv_project_BN"),
    CutPoint("blocks1-2", _blocks(range(1, 3)), "block_2_add"),
    CutPoint("blocks3-5", _blocks(range(3, 6)), "block_5_add"),
    CutPoint("blocks6-9", _blocks(range(6, 10)), "block_9_add"),
    CutPoint("blocks10-12", _blocks(range(10, 13)), "block_12_add"),
    CutPoint("blocks13-15", _blocks(range(13, 16)), "block_15_add"),
    CutPoint("block16", ("block_16_", "Conv_1"), "out_relu"),
)

ARCHITECTURES = (
    Architecture(name="resnet50", build=_seeded(_resnet50), cut_points=RESNET50_CUT_POINTS,
                 head=("predictions",), input_scale=1.0 / 255.0, crop_of_256=224,
                 paper_layers=False, packed=False,
                 about="keras.applications.ResNet50, 224 px: stem and 4 stages",
                 min_input=32),  # as keras.applications documents
    Architecture(name="mobilenetv2", build=_seeded(_mobilenetv2),
                 cut_points=MOBILENETV2_CUT_POINTS, head=("predictions",),
                 input_scale=1.0 / 255.0, crop_of_256=224, paper_layers=False, packed=False,
                 about="keras.applications.MobileNetV2, 224 px: stem and 6 block groups",
                 min_input=32),
)
