"""A small residual network with batch normalisation for 28-64 px images (`--model=resnet_small`).

The ResNet counterpart of the `small` model, for the same demo on Fashion-MNIST: a stem and four
basic blocks (He et al. 2016: 3x3 conv, BN, ReLU, 3x3 conv, BN, plus the shortcut, ReLU) in three
stages, then global average pooling and the classifier. Its five cut points play the roles of
the paper's layers: n = 1 copies the stem, n = 5 the stem and all four blocks; the classifier
`fc` is the head, always new.

    stem    conv 3x3 16, BN, ReLU, max pool 3/2          28 -> 14
    block1  16 @ 14                                        stage 1
    block2  32 @ 7 (stride 2, 1x1 projection shortcut)    stage 2
    block3  48 @ 4 (stride 2, 1x1 projection shortcut)    stage 3
    block4  48 @ 4
    head    global average pool, fc (classes), softmax

About 3.0 M multiply-adds per 28x28x1 image (small: 2.2 M). Five cut points rather than seven
keep the demo's grid (2 + 6k nets per split) within the small model's time on 2 CPU cores: the
batch normalisation ops cost more per multiply-add there than convolutions do.

Batch normalisation uses momentum 0.9 and epsilon 1e-5 (Caffe's and PyTorch's defaults): the
demo's schedule is a few thousand steps, and Keras' 0.99 would leave the moving statistics that
inference uses lagging behind the weights. Kernels are He-initialised, convolutions before BN
carry no bias. Inputs are unit-scale mean-subtracted images, as for `small`.
"""
from keras_transfer.models.architecture import Architecture, CutPoint, LayerSeeds

# (filters, stride) of the six blocks; a stride-2 block opens a stage.
BLOCKS = ((16, 1), (32, 2), (48, 2), (48, 1))
STEM_FILTERS = 16
BN_MOMENTUM, BN_EPSILON = 0.9, 1e-5


def resnet_small(num_classes, input_shape=(28, 28, 1), *, dropout=0.0, seed=None,
                 fused_batch_norm=True):
    """Softmax outputs; `dropout` is accepted for a uniform interface and unused (no dropout).
    `fused_batch_norm=False` builds Keras' BatchNormalization instead of layers'
    FusedBatchNormalization (same variables and outputs; `bench --only=batchnorm` times both)."""
    import keras  # here: the grid reads the declarations without TensorFlow

    from keras_transfer.layers import FusedBatchNormalization
    del dropout
    seeds = LayerSeeds(seed)
    norm = FusedBatchNormalization if fused_batch_norm else keras.layers.BatchNormalization

    def conv_bn(x, filters, kernel, stride, name):
        x = keras.layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False,
                                kernel_initializer=keras.initializers.HeNormal(seed=seeds.next()),
                                name=f"{name}_conv")(x)
        return norm(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=f"{name}_bn")(x)

    inputs = keras.Input(shape=input_shape, dtype="float32", name="image")
    x = conv_bn(inputs, STEM_FILTERS, 3, 1, "stem")
    x = keras.layers.ReLU(name="stem_relu")(x)
    x = keras.layers.MaxPooling2D(3, 2, padding="same", name="stem_pool")(x)
    for index, (filters, stride) in enumerate(BLOCKS, start=1):
        name = f"block{index}"
        shortcut = x
        if stride != 1 or x.shape[-1] != filters:
            shortcut = conv_bn(x, filters, 1, stride, f"{name}_proj")
        y = conv_bn(x, filters, 3, stride, f"{name}_1")
        y = keras.layers.ReLU(name=f"{name}_1_relu")(y)
        y = conv_bn(y, filters, 3, 1, f"{name}_2")
        y = keras.layers.Add(name=f"{name}_add")([shortcut, y])
        x = keras.layers.ReLU(name=f"{name}_out")(y)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    # The classifier and the softmax stay float32 under a mixed_bfloat16 policy.
    x = keras.layers.Dense(num_classes, dtype="float32",
                           kernel_initializer=keras.initializers.HeNormal(seed=seeds.next()),
                           name="fc")(x)
    outputs = keras.layers.Activation("softmax", dtype="float32", name="prob")(x)
    return keras.Model(inputs, outputs, name="resnet_small")


CUT_POINTS = (CutPoint("stem", ("stem_",), "stem_pool"),) + tuple(
    CutPoint(f"block{i}", (f"block{i}_",), f"block{i}_out") for i in range(1, len(BLOCKS) + 1))

ARCHITECTURES = (
    Architecture(name="resnet_small", build=resnet_small, cut_points=CUT_POINTS, head=("fc",),
                 input_scale=1.0 / 255.0, crop_of_256=None, paper_layers=False, packed=True,
                 about="a ResNet with batch normalisation for 28-64 px: stem and 4 blocks"),
)
