"""ShuffleNetV2 (Ma et al., 2018): channel split, equal-width branches, concat, channel shuffle."""
from __future__ import annotations

from typing import NamedTuple

import tf_keras as keras

from models import layers


class Stage(NamedTuple):
    """One row of the paper's Table 5: output channels for 0.5x, 1x, 1.5x, 2x, the first unit's stride, repeats.

    The paper writes each stage as two rows, one stride-2 unit and then `repeat - 1` stride-1 units.
    """

    layer: str
    output_channels: tuple[int, int, int, int]
    stride: int
    repeat: int


# Table 5 of the paper, between Conv1 + MaxPool (24 channels at every width) and Conv5 + GlobalPool + FC.
WIDTHS = (0.5, 1.0, 1.5, 2.0)
TABLE_5 = (
    Stage("stage2", output_channels=(48, 116, 176, 244), stride=2, repeat=4),
    Stage("stage3", output_channels=(96, 232, 352, 488), stride=2, repeat=8),
    Stage("stage4", output_channels=(192, 464, 704, 976), stride=2, repeat=4),
)
CONV1_CHANNELS = 24
CONV5_CHANNELS = (1024, 1024, 1024, 2048)


def _width_index(width_multiplier: float) -> int:
    for index, width in enumerate(WIDTHS):
        if abs(width_multiplier - width) < 1e-6:
            return index
    raise ValueError(
        f"ShuffleNetV2 is defined by the paper's channel table (Table 5) only for width_multiplier in "
        f"{', '.join(f'{w:g}' for w in WIDTHS)}; got {width_multiplier!r}."
    )


def shuffle_unit(
    x,
    out_channels: int,
    strides: int,
    activation: str,
    name: str,
    bn_momentum: float = layers.DEFAULT_BATCH_NORM_MOMENTUM,
    padding: str = "same",
):
    """Figure 3(c) (stride 1: split, one branch, concat, shuffle) and 3(d) (stride 2: two branches, no split)."""
    branch_channels = out_channels // 2
    if strides == 1:
        shortcut, x = layers.ChannelSplit(name=f"{name}/split")(x)
    else:
        shortcut = layers.depthwise_bn(x, 3, f"{name}/branch1/depthwise", strides, None, bn_momentum, padding)
        shortcut = layers.conv_bn(
            shortcut, branch_channels, 1, f"{name}/branch1/project", activation=activation, bn_momentum=bn_momentum
        )
    x = layers.conv_bn(x, branch_channels, 1, f"{name}/branch2/expand", activation=activation, bn_momentum=bn_momentum)
    x = layers.depthwise_bn(x, 3, f"{name}/branch2/depthwise", strides, None, bn_momentum, padding)
    x = layers.conv_bn(x, branch_channels, 1, f"{name}/branch2/project", activation=activation, bn_momentum=bn_momentum)
    # Explicit concat + shuffle (CONCATENATION, RESHAPE, TRANSPOSE, RESHAPE). Folding the shuffle into the concat
    # as an interleave (each branch reshaped to [N, H*W, C/2, 1], concatenated on the last axis) is the same
    # function without a TRANSPOSE, but measured slower (224 px, 1 thread: int8 18 vs 12 ms, float 26 vs 21).
    x = keras.layers.Concatenate(name=f"{name}/concat")([shortcut, x])
    return layers.ChannelShuffle(2, name=f"{name}/shuffle")(x)


def build(
    input_shape: tuple[int, int, int],
    num_classes: int,
    width_multiplier: float,
    dropout: float | None,
    activation: str | None,
    bn_momentum: float = layers.DEFAULT_BATCH_NORM_MOMENTUM,
    padding: str = "same",
) -> keras.Model:
    """ShuffleNetV2 at one of the paper's widths (0.5, 1, 1.5, 2) with ReLU; logits out.

    `padding="symmetric"` pads stride-2 convolutions 1 on every side (as the PyTorch reference does) instead of
    TF SAME's (0, 1). Either way TF-MOT's `PruneForLatencyOnXNNPack` rejects this network: see `shufflenet_v1`.
    """
    width = _width_index(width_multiplier)
    activation = activation or "relu"
    dropout = 0.0 if dropout is None else dropout  # the paper uses none
    inputs = keras.Input(shape=input_shape, name="input")
    x = layers.shufflenet_stem(inputs, CONV1_CHANNELS, activation, bn_momentum, padding)
    for stage in TABLE_5:
        for unit in range(stage.repeat):
            x = shuffle_unit(
                x,
                stage.output_channels[width],
                strides=stage.stride if unit == 0 else 1,
                activation=activation,
                name=f"{stage.layer}/unit{unit + 1}",
                bn_momentum=bn_momentum,
                padding=padding,
            )
    x = layers.conv_bn(x, CONV5_CHANNELS[width], 1, "conv5", activation=activation, bn_momentum=bn_momentum)
    x = keras.layers.GlobalAveragePooling2D(keepdims=True, name="global_pool")(x)
    if dropout:
        x = keras.layers.Dropout(dropout, name="dropout")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    logits = keras.layers.Dense(num_classes, name="fc")(x)
    return keras.Model(inputs, logits, name=f"shufflenet_v2_{width_multiplier:g}x")
