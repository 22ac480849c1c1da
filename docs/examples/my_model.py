"""A network of one's own, run through the whole experiment without editing keras_transfer.

    python -m keras_transfer.main --model=docs/examples/my_model.py:tiny_convnet --target=A
    python -m keras_transfer.main --model=docs/examples/my_model.py:tiny_convnet --source=A --n=2
    ./launch.sh --layers=1,2,3 -- --model=docs/examples/my_model.py:tiny_convnet
    python -m keras_transfer.report runs

`--model=path/to/file.py:function` loads this file by its path (relative to the current
directory); `--model=module:function` imports a module instead (from the current directory
under `python -m`, else from PYTHONPATH). The function takes no arguments and returns an
Architecture; its name becomes the --model spelling, which config.json, result.json and the
report record. Before anything is written, main and the grid build the network for the data
and check it: every variable belongs to exactly one cut point or to the head.

The net: three cut points, then the head that is always new.

    conv_a   conv 3x3 16, ReLU, max pool 2    28 -> 14
    conv_b   conv 3x3 32, ReLU, max pool 2    14 -> 7
    fc_c     global average pool, dense 64, ReLU, dropout
    head     classifier (classes), softmax
"""
from keras_transfer.models import Architecture, CutPoint
from keras_transfer.models.architecture import LayerSeeds


def build(num_classes, input_shape, *, dropout=0.5, seed=None):
    """Softmax outputs; `seed` makes the initialisation and the dropout masks reproducible."""
    import keras  # here: the grid reads the declaration without loading TensorFlow

    seeds = LayerSeeds(seed)  # a seed per initialiser: equal seeds would draw equal numbers

    def conv(x, filters, name):
        x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu", name=name,
                                kernel_initializer=keras.initializers.HeNormal(seeds.next()))(x)
        return keras.layers.MaxPooling2D(2, name=f"{name}_pool")(x)

    inputs = keras.Input(shape=input_shape, name="image")
    x = conv(inputs, 16, "conv_a")
    x = conv(x, 32, "conv_b")
    x = keras.layers.GlobalAveragePooling2D(name="fc_c_gap")(x)
    x = keras.layers.Dense(64, activation="relu", name="fc_c",
                           kernel_initializer=keras.initializers.HeNormal(seeds.next()))(x)
    x = keras.layers.Dropout(dropout, seed=seeds.next(), name="fc_c_drop")(x)
    # The classifier and the softmax stay float32 under --mixed_precision.
    x = keras.layers.Dense(num_classes, dtype="float32", name="classifier",
                           kernel_initializer=keras.initializers.HeNormal(seeds.next()))(x)
    outputs = keras.layers.Activation("softmax", dtype="float32", name="prob")(x)
    return keras.Model(inputs, outputs, name="tiny_convnet")


def tiny_convnet():
    """What --model=docs/examples/my_model.py:tiny_convnet names."""
    return Architecture(
        name="tiny_convnet",
        build=build,
        # Bottom to top; a layer belongs to the cut point its name starts with, and `output`
        # is the layer whose output stands for the block (the CKA analysis compares it).
        cut_points=(CutPoint("conv_a", ("conv_a",), "conv_a_pool"),
                    CutPoint("conv_b", ("conv_b",), "conv_b_pool"),
                    CutPoint("fc_c", ("fc_c",), "fc_c_drop")),
        head=("classifier",),
        input_scale=1.0 / 255.0,  # unit-scale, mean-subtracted images
        crop_of_256=None,  # small images: crop a few pixels less than the image
        paper_layers=False,  # n counts these cut points, not the paper's conv1..fc7
        packed=True,  # a small net leaves a core idle: the grid trains several per process
        about="a three-block conv net declared outside the package",
        min_input=4,  # two 2x2 poolings need at least 4x4 pixels
    )
