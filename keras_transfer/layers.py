"""Layers Keras does not provide in the form this project needs: two of CaffeNet's, and a
batch normalisation that trains at the speed of TensorFlow's fused kernel.

`SplitGroupConv2D` is a grouped convolution (conv2, conv4, conv5 of CaffeNet use groups=2)
computed as one convolution per channel group + concatenate. Keras `Conv2D(groups=2)` gives the
same numbers but, with the TensorFlow backend on CPU, runs through a nested XLA function and
trains 3-6x slower. The kernel is stored with exactly the shape `Conv2D(groups=g)` uses, so
`get_weights()`/`set_weights()` are interchangeable between the two.

`LocalResponseNorm` is Caffe's cross-channel LRN with Caffe's parameters.

`FusedBatchNormalization` is `keras.layers.BatchNormalization` (same variables, arguments and
inference) whose training step is TensorFlow's fused batch-norm kernel.
"""
import keras
import numpy as np
import tensorflow as tf
from keras import ops


@keras.saving.register_keras_serializable(package="keras_transfer")
class SplitGroupConv2D(keras.layers.Layer):
    """2-D convolution in `groups` independent channel groups, as separate convolutions.

    Input channels and filters are each split into `groups` equal consecutive slices; output
    slice g sees only input slice g, as in Caffe's `group` and Keras' `Conv2D(groups=...)`.
    Weights: kernel (kh, kw, in_channels // groups, filters) and bias (filters,), the same
    shapes, order and meaning as `keras.layers.Conv2D(filters, kernel_size, groups=groups)`.
    Channels-last only.
    """

    def __init__(self, filters, kernel_size, *, groups=2, strides=1, padding="valid",
                 activation=None, use_bias=True, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", kernel_regularizer=None, bias_regularizer=None,
                 **kwargs):
        super().__init__(**kwargs)
        if groups < 1 or filters % groups:
            raise ValueError(f"filters={filters} must be a positive multiple of groups={groups}")
        self.filters = int(filters)
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.strides = _pair(strides, "strides")
        self.groups = int(groups)
        self.padding = padding.lower()
        if self.padding not in ("valid", "same"):
            raise ValueError(f"padding must be 'valid' or 'same', got {padding!r}")
        self.activation = keras.activations.get(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.input_spec = keras.layers.InputSpec(ndim=4)

    def build(self, input_shape):
        in_channels = input_shape[-1]
        if in_channels is None or in_channels % self.groups:
            raise ValueError(f"{self.name}: input channels ({in_channels}) must be a known "
                             f"multiple of groups={self.groups}")
        self.input_spec = keras.layers.InputSpec(ndim=4, axes={-1: in_channels})
        self.kernel = self.add_weight(
            name="kernel",
            shape=(*self.kernel_size, in_channels // self.groups, self.filters),
            initializer=self.kernel_initializer, regularizer=self.kernel_regularizer)
        self.bias = None
        if self.use_bias:
            self.bias = self.add_weight(name="bias", shape=(self.filters,),
                                        initializer=self.bias_initializer,
                                        regularizer=self.bias_regularizer)

    def call(self, inputs):
        input_groups = ops.split(inputs, self.groups, axis=-1)
        kernel_groups = ops.split(self.kernel, self.groups, axis=-1)
        outputs = ops.concatenate(
            [ops.conv(x, k, strides=self.strides, padding=self.padding,
                      data_format="channels_last")
             for x, k in zip(input_groups, kernel_groups)], axis=-1)
        if self.use_bias:
            outputs = outputs + self.bias
        return self.activation(outputs)

    def compute_output_shape(self, input_shape):
        batch, height, width, _ = input_shape
        return (batch,
                _conv_output_length(height, self.kernel_size[0], self.strides[0], self.padding),
                _conv_output_length(width, self.kernel_size[1], self.strides[1], self.padding),
                self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters, kernel_size=self.kernel_size, groups=self.groups,
            strides=self.strides, padding=self.padding,
            activation=keras.activations.serialize(self.activation), use_bias=self.use_bias,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
            bias_initializer=keras.initializers.serialize(self.bias_initializer),
            kernel_regularizer=keras.regularizers.serialize(self.kernel_regularizer),
            bias_regularizer=keras.regularizers.serialize(self.bias_regularizer))
        return config


@keras.saving.register_keras_serializable(package="keras_transfer")
class LocalResponseNorm(keras.layers.Layer):
    """Caffe's ACROSS_CHANNELS LRN: b = a / (k + alpha/size * sum_window a^2) ** beta.

    Takes Caffe's parameters (CaffeNet: size 5, alpha 1e-4, beta 0.75, k 1). Equal to
    `tf.nn.local_response_normalization(depth_radius=size // 2, bias=k, alpha=alpha / size,
    beta=beta)`, but computed as a matmul of a^2 with a banded 0/1 channel matrix (the window
    sum) and, for beta = 0.75, rsqrt(d * sqrt(d)) instead of pow: that trains 2x (CaffeNet) to 5x
    (small model) faster on CPU than TF's LRN kernels, and is plain ops under XLA. Computed in
    float32 whatever the compute dtype, because bfloat16 would round away the alpha term; the
    result is cast back.
    """

    def __init__(self, size=5, alpha=1e-4, beta=0.75, k=1.0, **kwargs):
        super().__init__(**kwargs)
        if size < 1 or size % 2 == 0:
            raise ValueError(f"LRN size must be a positive odd number, got {size}")
        self.size = int(size)
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.k = float(k)

    def build(self, input_shape):
        channels = np.arange(input_shape[-1])
        self._window = (np.abs(channels[:, None] - channels[None, :])
                        <= self.size // 2).astype("float32")

    def call(self, inputs):
        x = ops.cast(inputs, "float32")
        window_sum = ops.tensordot(ops.square(x), self._window, axes=[[x.ndim - 1], [0]])
        denominator = self.k + (self.alpha / self.size) * window_sum
        if self.beta == 0.75:
            scale = ops.rsqrt(denominator * ops.sqrt(denominator))
        else:
            scale = ops.power(denominator, -self.beta)
        return ops.cast(x * scale, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(size=self.size, alpha=self.alpha, beta=self.beta, k=self.k)
        return config


@keras.saving.register_keras_serializable(package="keras_transfer")
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """Keras' BatchNormalization trained with `tf.nn.fused_batch_norm` on 4-D inputs.

    Keras 3 computes a training step's batch statistics with separate moments and update ops;
    on CPU those made batch normalisation most of resnet_small's step, and the fused kernel
    trains the same net about 1.5x faster (`python -m keras_transfer.bench --only=batchnorm`
    times both). Same weights (gamma, beta, moving mean and variance, in Keras' order) and the
    same rule for when it trains: batch statistics and a moving-average update only when called
    with training=True on a trainable layer; otherwise (inference, or a frozen block) the
    moving statistics, unchanged, through Keras' own code. Batch statistics are each replica's
    own, as with Keras' `synchronized=False`; the moving statistics are averaged over replicas.
    One difference from Keras: the fused kernel feeds the moving variance the unbiased batch
    variance (x m/(m-1), m values per channel: 1.00004 for a batch of 128 at 14x14) where
    Keras feeds the biased one; training outputs are identical.
    """

    def call(self, inputs, training=None, mask=None):
        fused = (training and self.trainable and mask is None and len(inputs.shape) == 4
                 and self.axis in (-1, 3) and self.scale and self.center and not self.renorm
                 and not self.synchronized)
        if not fused:
            return super().call(inputs, training=training, mask=mask)
        x = ops.cast(inputs, "float32")  # as Keras does: statistics in float32 under bf16
        y, moving_mean, moving_variance = tf.compat.v1.nn.fused_batch_norm(
            x, ops.cast(self.gamma, "float32"), ops.cast(self.beta, "float32"),
            mean=self.moving_mean, variance=self.moving_variance, epsilon=self.epsilon,
            is_training=True, exponential_avg_factor=1.0 - self.momentum)
        # Under MirroredStrategy each replica sees its share of the batch; its moving statistics
        # are one mirrored variable, whose copies would drift apart if each replica assigned
        # its own (Keras' layer does). The replicas' mean keeps them one value.
        replica = tf.distribute.get_replica_context()
        if replica is not None and replica.num_replicas_in_sync > 1:
            moving_mean, moving_variance = replica.all_reduce(
                tf.distribute.ReduceOp.MEAN, [moving_mean, moving_variance])
        self.moving_mean.assign(moving_mean)
        self.moving_variance.assign(moving_variance)
        return ops.cast(y, self.compute_dtype)


def _pair(value, what):
    pair = (value, value) if isinstance(value, int) else tuple(int(v) for v in value)
    if len(pair) != 2:
        raise ValueError(f"{what} must be an int or a pair of ints, got {value!r}")
    return pair


def _conv_output_length(length, kernel, stride, padding):
    if length is None:
        return None
    if padding == "same":
        return -(-length // stride)
    return (length - kernel) // stride + 1
