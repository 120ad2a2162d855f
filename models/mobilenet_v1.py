"""MobileNetV1 (Howard et al., 2017): depthwise separable convolutions.

A depthwise separable layer costs 1/N + 1/Dk^2 of a standard convolution (N output channels, Dk x Dk kernel).
Channel counts follow keras.applications' `int(filters * alpha)` (no rounding to multiples of 8), so its ImageNet
weights fit at every width it publishes (0.25, 0.5, 0.75, 1.0).
"""
from __future__ import annotations

from typing import NamedTuple

import tf_keras as keras

from models import layers


class DepthwiseSeparable(NamedTuple):
    """One "Conv dw / s" + "Conv / s1" pair of the paper's Table 1.

    s: stride of the 3x3 depthwise convolution; c: output channels of the 1x1 pointwise convolution that follows
    (the last number of its filter shape, e.g. 64 in "1 x 1 x 32 x 64").
    """

    s: int
    c: int


# Table 1 of the paper, between the 3x3 stride-2 stem conv (32 channels) and the average pool + FC head. The
# table's last depthwise row reads "s2", a known misprint: the input stays 7x7, and the reference implementation
# (and keras.applications) use stride 1 there.
TABLE_1 = (
    DepthwiseSeparable(s=1, c=64),
    DepthwiseSeparable(s=2, c=128),
    DepthwiseSeparable(s=1, c=128),
    DepthwiseSeparable(s=2, c=256),
    DepthwiseSeparable(s=1, c=256),
    DepthwiseSeparable(s=2, c=512),
    *(DepthwiseSeparable(s=1, c=512),) * 5,
    DepthwiseSeparable(s=2, c=1024),
    DepthwiseSeparable(s=1, c=1024),
)
STEM_CHANNELS = 32
DEFAULT_DROPOUT = 1e-3  # keras.applications' default


def build(
    input_shape: tuple[int, int, int],
    num_classes: int,
    width_multiplier: float,
    dropout: float | None,
    activation: str | None,
    bn_momentum: float = layers.DEFAULT_BATCH_NORM_MOMENTUM,
    padding: str = "same",
) -> keras.Model:
    """MobileNetV1 with the paper's ReLU6; `padding="symmetric"` for TF-MOT's XNNPACK sparsity policy."""
    if int(STEM_CHANNELS * width_multiplier) < 1:
        raise ValueError(
            f"mobilenet_v1 needs width_multiplier >= {1 / STEM_CHANNELS:g} (its narrowest layer has "
            f"{STEM_CHANNELS} * width_multiplier channels, rounded down), got {width_multiplier!r}."
        )
    activation = activation or "relu6"
    dropout = DEFAULT_DROPOUT if dropout is None else dropout
    options = dict(activation=activation, bn_momentum=bn_momentum)

    inputs = keras.Input(shape=input_shape, name="input")
    x = layers.conv_bn(
        inputs, int(STEM_CHANNELS * width_multiplier), 3, "conv1", strides=2, padding=padding, **options
    )
    for block_id, row in enumerate(TABLE_1, start=1):
        x = layers.depthwise_bn(x, 3, f"conv_dw_{block_id}", strides=row.s, padding=padding, **options)
        x = layers.conv_bn(x, int(row.c * width_multiplier), 1, f"conv_pw_{block_id}", **options)
    # keepdims=True: TF-MOT's XNNPACK sparsity policy ends its subgraph at a keepdims pooling (a MEAN op).
    x = keras.layers.GlobalAveragePooling2D(keepdims=True, name="global_average_pool")(x)
    if dropout:
        x = keras.layers.Dropout(dropout, name="dropout")(x)
    # The paper's FC layer, written as keras.applications writes it (a 1x1 convolution) so its weights map 1:1.
    x = keras.layers.Conv2D(num_classes, 1, name="conv_preds")(x)
    logits = keras.layers.Flatten(name="flatten")(x)
    return keras.Model(inputs, logits, name=f"mobilenet_v1_{width_multiplier:g}")
