"""MobileNetV2 (Sandler et al., 2018): inverted residuals and linear bottlenecks."""
from __future__ import annotations

from typing import NamedTuple

import tf_keras as keras

from models import layers


class Bottleneck(NamedTuple):
    """One row of the paper's Table 2: expansion factor t, output channels c, repeats n, first stride s."""

    t: int
    c: int
    n: int
    s: int


# Table 2 of the paper, between the 3x3 stem conv (32 channels) and the 1x1 head conv (1280 channels).
TABLE_2 = (
    Bottleneck(t=1, c=16, n=1, s=1),
    Bottleneck(t=6, c=24, n=2, s=2),
    Bottleneck(t=6, c=32, n=3, s=2),
    Bottleneck(t=6, c=64, n=4, s=2),
    Bottleneck(t=6, c=96, n=3, s=1),
    Bottleneck(t=6, c=160, n=3, s=2),
    Bottleneck(t=6, c=320, n=1, s=1),
)
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280


def build(
    input_shape: tuple[int, int, int],
    num_classes: int,
    width_multiplier: float,
    dropout: float | None,
    activation: str | None,
    bn_momentum: float = layers.DEFAULT_BATCH_NORM_MOMENTUM,
    padding: str = "same",
) -> keras.Model:
    """MobileNetV2 with the paper's ReLU6; `padding="symmetric"` for TF-MOT's XNNPACK sparsity policy."""
    activation = activation or "relu6"
    dropout = 0.0 if dropout is None else dropout  # the paper (and keras.applications) use none
    inputs = keras.Input(shape=input_shape, name="input")
    x = layers.conv_bn(
        inputs,
        layers.make_divisible(STEM_CHANNELS * width_multiplier),
        3,
        "Conv",
        strides=2,
        activation=activation,
        bn_momentum=bn_momentum,
        padding=padding,
    )
    block_id = 0
    for row in TABLE_2:
        # int() first, as keras.applications rounds: the same channels at every width, so its weights fit.
        out_channels = layers.make_divisible(int(row.c * width_multiplier))
        for repeat in range(row.n):
            x = layers.inverted_residual(
                x,
                expanded_channels=x.shape[-1] * row.t,
                out_channels=out_channels,
                kernel_size=3,
                strides=row.s if repeat == 0 else 1,
                activation=activation,
                name=f"expanded_conv_{block_id}" if block_id else "expanded_conv",
                bn_momentum=bn_momentum,
                padding=padding,
            )
            block_id += 1
    # The head is not thinned below 1280 channels for small multipliers (paper, section 6.1).
    head_channels = layers.make_divisible(HEAD_CHANNELS * width_multiplier) if width_multiplier > 1.0 else HEAD_CHANNELS
    x = layers.conv_bn(x, head_channels, 1, "Conv_1", activation=activation, bn_momentum=bn_momentum)
    # keepdims=True: TF-MOT's XNNPACK sparsity policy ends its subgraph at a keepdims pooling (a MEAN op).
    x = keras.layers.GlobalAveragePooling2D(keepdims=True, name="global_average_pool")(x)
    if dropout:
        x = keras.layers.Dropout(dropout, name="dropout")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    logits = keras.layers.Dense(num_classes, name="Logits")(x)
    return keras.Model(inputs, logits, name=f"mobilenet_v2_{width_multiplier:g}")

