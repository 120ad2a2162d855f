"""The one vocabulary of blocks shared by all five networks.

Every block is built from Keras layers or from the small registered layers below, never from `Lambda` layers or
raw tensor arithmetic: those become `TFOpLambda` layers that TF-MOT pruning and quantization reject, and `Lambda`
needs code execution on load. Layer names follow keras.applications (`expanded_conv_3/depthwise`) so they read the
same in Netron and in TFLite op profiles.
"""
from __future__ import annotations

import contextlib
import threading
from typing import Callable, Iterator

import tensorflow as tf
import tf_keras as keras

SERIALIZATION_PACKAGE = "mobile_cnn"

# keras.applications uses these for every MobileNet; matching them makes ImageNet weights transferable.
BATCH_NORM_EPSILON = 1e-3
DEFAULT_BATCH_NORM_MOMENTUM = 0.99


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round a channel count to a multiple of `divisor`, never going more than 10% below `value` (MobileNetV2)."""
    min_value = min_value or divisor
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


class _HardActivation(keras.layers.Layer):
    """Base of hard-sigmoid and hard-swish: weightless, with quantization hooks on their intermediate tensors.

    The hooks are identities on the intermediate tensors TFLite keeps as int8 tensors of their own;
    quantization-aware training (models/quantization.py) swaps them for fake-quant ops, so a QAT model carries a
    range for every int8 tensor and converts without calibration data. In float they are no ops at all.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.scaled_input_activation = keras.activations.linear
        self.gate_activation = keras.activations.linear

    def get_prunable_weights(self):
        """Nothing to prune; TF-MOT's `prune_low_magnitude` asks every custom layer."""
        return []


@keras.saving.register_keras_serializable(package=SERIALIZATION_PACKAGE)
class HardSigmoid(_HardActivation):
    """relu6(x + 3) / 6 (MobileNetV3): ADD (RELU6 fused, or both folded into the conv before) and MUL in int8."""

    def call(self, inputs):
        return self.gate_activation(tf.nn.relu6(inputs + 3.0)) * (1.0 / 6.0)


@keras.saving.register_keras_serializable(package=SERIALIZATION_PACKAGE)
class HardSwish(_HardActivation):
    """x * relu6(x + 3) / 6 (MobileNetV3).

    The converter fuses `x * relu6(x + 3) / 6` (and `x * (relu6(x + 3) * (1/6))`, and `min(relu(x + 3), 6)`) into
    one `HARD_SWISH` op, which XNNPACK runs only in float: in int8 each one falls back to the built-in kernel and
    cuts the graph into partitions (keras.applications' V3-Small: 19 of them, 20 partitions). Scaling x first,
    `(x / 6) * relu6(x + 3)`, is the same function but escapes that fusion: it lowers to ADD (with RELU6 fused),
    MUL and MUL, int8 ops XNNPACK takes, and V3-Small/Large run as one XNNPACK partition. In float the fused op is
    the faster one, so float conversions trace under `fused_hard_swish()` (export/convert.py).
    """

    def call(self, inputs):
        if _LOWERING.fused_hard_swish:
            return inputs * tf.nn.relu6(inputs + 3.0) * (1.0 / 6.0)
        return self.scaled_input_activation(inputs * (1.0 / 6.0)) * self.gate_activation(tf.nn.relu6(inputs + 3.0))


class _Lowering(threading.local):
    fused_hard_swish = False


_LOWERING = _Lowering()


@contextlib.contextmanager
def fused_hard_swish() -> Iterator[None]:
    """Inside: hard-swish traces as `x * relu6(x + 3) / 6`, which the converter fuses into one `HARD_SWISH` op.

    For float graphs only: XNNPACK runs the fused op in float (one op instead of ADD, MUL, MUL), never in int8.
    Measured at 224, 1 thread: see README's zoo table.
    """
    previous, _LOWERING.fused_hard_swish = _LOWERING.fused_hard_swish, True
    try:
        yield
    finally:
        _LOWERING.fused_hard_swish = previous


ACTIVATIONS: dict[str, Callable[[str], keras.layers.Layer]] = {
    "relu": lambda name: keras.layers.ReLU(name=name),
    "relu6": lambda name: keras.layers.ReLU(6.0, name=name),
    "hard_swish": lambda name: HardSwish(name=name),
    "swish": lambda name: keras.layers.Activation("swish", name=name),
}


def activation_layer(activation: str, name: str) -> keras.layers.Layer:
    """A fresh activation layer by name (`relu`, `relu6`, `hard_swish`, `swish`)."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"Unknown activation {activation!r}; choose one of {sorted(ACTIVATIONS)}.")
    return ACTIVATIONS[activation](name)


PADDINGS = ("same", "symmetric")


def _pad_for_stride(x: tf.Tensor, kernel_size: int, strides: int, padding: str, name: str) -> tuple[tf.Tensor, str]:
    """Returns the (possibly padded) input and the Keras padding mode for a spatial convolution.

    `"same"` is TF SAME padding, which on even inputs pads (0, 1) like keras.applications, so its ImageNet weights
    see the same sampling grid. `"symmetric"` pads kernel_size // 2 on every side before a strided VALID
    convolution: the only strided form TF-MOT's `PruneForLatencyOnXNNPack` (XNNPACK sparse inference) accepts.
    Stride-1 convolutions are identical either way and stay SAME.
    """
    if padding not in PADDINGS:
        raise ValueError(f"padding must be one of {PADDINGS}, got {padding!r}.")
    if padding == "same" or strides == 1:
        return x, "same"
    return keras.layers.ZeroPadding2D(padding=kernel_size // 2, name=f"{name}/pad")(x), "valid"


def batch_norm(x: tf.Tensor, name: str, momentum: float = DEFAULT_BATCH_NORM_MOMENTUM) -> tf.Tensor:
    return keras.layers.BatchNormalization(epsilon=BATCH_NORM_EPSILON, momentum=momentum, name=name)(x)


def conv_bn(
    x: tf.Tensor,
    filters: int,
    kernel_size: int,
    name: str,
    strides: int = 1,
    activation: str | None = None,
    groups: int = 1,
    bn_momentum: float = DEFAULT_BATCH_NORM_MOMENTUM,
    padding: str = "same",
) -> tf.Tensor:
    """Conv2D (no bias) -> BatchNorm -> optional activation; names `{name}`, `{name}/BatchNorm`, `{name}/{act}`."""
    x, padding = _pad_for_stride(x, kernel_size, strides, padding, name)
    x = keras.layers.Conv2D(
        filters, kernel_size, strides=strides, padding=padding, groups=groups, use_bias=False, name=name
    )(x)
    x = batch_norm(x, f"{name}/BatchNorm", bn_momentum)
    if activation:
        x = activation_layer(activation, f"{name}/{activation}")(x)
    return x


def depthwise_bn(
    x: tf.Tensor,
    kernel_size: int,
    name: str,
    strides: int = 1,
    activation: str | None = None,
    bn_momentum: float = DEFAULT_BATCH_NORM_MOMENTUM,
    padding: str = "same",
) -> tf.Tensor:
    """DepthwiseConv2D (no bias) -> BatchNorm -> optional activation."""
    x, padding = _pad_for_stride(x, kernel_size, strides, padding, name)
    x = keras.layers.DepthwiseConv2D(kernel_size, strides=strides, padding=padding, use_bias=False, name=name)(x)
    x = batch_norm(x, f"{name}/BatchNorm", bn_momentum)
    if activation:
        x = activation_layer(activation, f"{name}/{activation}")(x)
    return x


def squeeze_excite(x: tf.Tensor, squeeze_channels: int, name: str) -> tf.Tensor:
    """Squeeze-and-excite as in MobileNetV3: pool -> 1x1 conv -> ReLU -> 1x1 conv -> hard-sigmoid -> scale."""
    channels = x.shape[-1]
    s = keras.layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}/squeeze_excite/AvgPool")(x)
    s = keras.layers.Conv2D(squeeze_channels, 1, padding="same", name=f"{name}/squeeze_excite/Conv")(s)
    s = keras.layers.ReLU(name=f"{name}/squeeze_excite/Relu")(s)
    s = keras.layers.Conv2D(channels, 1, padding="same", name=f"{name}/squeeze_excite/Conv_1")(s)
    s = HardSigmoid(name=f"{name}/squeeze_excite/HardSigmoid")(s)
    return keras.layers.Multiply(name=f"{name}/squeeze_excite/Mul")([x, s])


def inverted_residual(
    x: tf.Tensor,
    expanded_channels: int,
    out_channels: int,
    kernel_size: int,
    strides: int,
    activation: str,
    name: str,
    squeeze_channels: int | None = None,
    bn_momentum: float = DEFAULT_BATCH_NORM_MOMENTUM,
    padding: str = "same",
) -> tf.Tensor:
    """MobileNetV2/V3 bottleneck: 1x1 expand -> depthwise -> (SE) -> linear 1x1 project, residual when shapes allow.

    The expansion is skipped when it would not widen the input (MobileNetV2's first block, V3's first bneck).
    """
    in_channels = x.shape[-1]
    shortcut = x
    if expanded_channels != in_channels:
        x = conv_bn(x, expanded_channels, 1, f"{name}/expand", activation=activation, bn_momentum=bn_momentum)
    x = depthwise_bn(x, kernel_size, f"{name}/depthwise", strides, activation, bn_momentum, padding)
    if squeeze_channels:
        x = squeeze_excite(x, squeeze_channels, name)
    x = conv_bn(x, out_channels, 1, f"{name}/project", bn_momentum=bn_momentum)
    if strides == 1 and in_channels == out_channels:
        x = keras.layers.Add(name=f"{name}/Add")([shortcut, x])
    return x


def strided_pool(x: tf.Tensor, kind: str, name: str, padding: str = "same") -> tf.Tensor:
    """3x3 stride-2 pooling, padded like the stride-2 convolutions beside it (`_pad_for_stride`).

    `kind="max"` is a MaxPooling2D. `kind="avg"` (ShuffleNetV1's stride-2 shortcut) is a frozen DepthwiseConv2D
    whose every weight is 1/9: the same average, with padded zeros counted as in the PyTorch references
    (`count_include_pad`). Why not AveragePooling2D: XNNPACK runs AVERAGE_POOL_2D only in float; each int8 one
    fell back to the built-in kernel and cut ShuffleNetV1 (g=3) into 4 partitions, while int8 DEPTHWISE_CONV_2D
    runs inside XNNPACK (1 partition). It is an ordinary Keras layer, so TF-MOT quantizes it with its default
    config and never prunes it (depthwise kernels are not prunable). It is created with `trainable=False`;
    setting `model.trainable = True` wholesale would make it a learned downsampling filter (still a valid
    network, no longer the paper's): re-freeze layers named `*/shortcut_avgpool` after doing so.
    """
    if kind not in ("max", "avg"):
        raise ValueError(f"pool kind must be 'max' or 'avg', got {kind!r}.")
    x, keras_padding = _pad_for_stride(x, 3, 2, padding, name)
    if kind == "max":  # zero padding equals the references' -inf padding on post-ReLU inputs
        return keras.layers.MaxPooling2D(3, strides=2, padding=keras_padding, name=name)(x)
    return keras.layers.DepthwiseConv2D(
        3,
        strides=2,
        padding=keras_padding,
        use_bias=False,
        depthwise_initializer=keras.initializers.Constant(1.0 / 9.0),
        trainable=False,
        name=name,
    )(x)


def shufflenet_stem(x: tf.Tensor, channels: int, activation: str, bn_momentum: float, padding: str) -> tf.Tensor:
    """Conv1 (3x3, stride 2) + MaxPool (3x3, stride 2): both ShuffleNets start this way."""
    x = conv_bn(
        x, channels, 3, "conv1", strides=2, activation=activation, bn_momentum=bn_momentum, padding=padding
    )
    return strided_pool(x, "max", "maxpool", padding)


@keras.saving.register_keras_serializable(package=SERIALIZATION_PACKAGE)
class ChannelShuffle(keras.layers.Layer):
    """ShuffleNet's channel shuffle: output channel `j * groups + i` is input channel `i * (C / groups) + j`.

    Lowered as reshape -> transpose -> reshape on static shapes of at most 4 dimensions (`[N, H*W, g, C/g]`): the
    GPU delegate rejects 5-D tensors, and a batch-`None` Keras `Reshape` lowers to SHAPE/STRIDED_SLICE/PACK ops
    outside XNNPACK. Converted from a fixed batch-1 signature it is RESHAPE, TRANSPOSE, RESHAPE, all run by
    XNNPACK in float and int8. No weights: TF-MOT pruning leaves it alone (`get_prunable_weights`), and QAT needs
    only a pass-through QuantizeConfig (a permutation keeps the input's range).
    """

    def __init__(self, groups: int, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(groups, int) or groups < 1:
            raise ValueError(f"ChannelShuffle groups must be a positive int, got {groups!r}.")
        self.groups = groups

    def build(self, input_shape):
        height, width, channels = tuple(input_shape)[1:]
        if None in (height, width, channels):
            raise ValueError(
                f"ChannelShuffle needs a static height, width and channel count (so it lowers to static RESHAPE "
                f"ops); got input shape {tuple(input_shape)}. Build the model with a fixed input size."
            )
        if channels % self.groups:
            raise ValueError(f"ChannelShuffle: {channels} channels do not split into {self.groups} equal groups.")
        super().build(input_shape)

    def call(self, inputs):
        height, width, channels = inputs.shape[1:]
        x = tf.reshape(inputs, [-1, height * width, self.groups, channels // self.groups])
        x = tf.transpose(x, [0, 1, 3, 2])
        return tf.reshape(x, [-1, height, width, channels])

    def compute_output_shape(self, input_shape):
        return tf.TensorShape(input_shape)

    def get_prunable_weights(self):
        return []

    def get_config(self):
        return {**super().get_config(), "groups": self.groups}


@keras.saving.register_keras_serializable(package=SERIALIZATION_PACKAGE)
class ChannelSplit(keras.layers.Layer):
    """ShuffleNetV2's channel split into two equal halves, first half first (one SPLIT op, taken by XNNPACK).

    No weights: TF-MOT pruning leaves it alone (`get_prunable_weights`); QAT needs a pass-through QuantizeConfig.
    """

    def build(self, input_shape):
        channels = tuple(input_shape)[-1]
        if channels is None or channels % 2:
            raise ValueError(f"ChannelSplit needs a static, even channel count; got input shape {tuple(input_shape)}.")
        super().build(input_shape)

    def call(self, inputs):
        return tf.split(inputs, 2, axis=-1)

    def compute_output_shape(self, input_shape):
        shape = tf.TensorShape(input_shape).as_list()
        shape[-1] //= 2
        return [tf.TensorShape(shape), tf.TensorShape(shape)]

    def get_prunable_weights(self):
        return []


def custom_objects() -> dict[str, type]:
    """The registered layers, for loading models outside `keras.saving.load_model`'s registry lookup."""
    return {cls.__name__: cls for cls in (HardSigmoid, HardSwish, ChannelShuffle, ChannelSplit)}
