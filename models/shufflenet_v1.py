"""ShuffleNetV1 (Zhang et al., 2017): pointwise group convolution + channel shuffle.

Not prunable with TF-MOT's `PruneForLatencyOnXNNPack` at any padding: the policy walks the whole graph from the
3x3 stride-2 stem to the global pool and accepts only Add/Multiply/ReLU-family/BatchNorm/ZeroPadding, depthwise
3x3/5x5 and *ungrouped* stride-1 1x1 Conv2D between. The stem's MaxPooling2D is the first layer it rejects; the
grouped 1x1 convolutions, AveragePooling2D, Concatenate and ChannelShuffle (and ShuffleNetV2's ChannelSplit)
would each fail it too. This is not a whitelist gap: XNNPACK's sparse (NCHW) inference itself has no max pool,
concatenation, split or transpose, so these networks cannot run sparse past their stem (with TF SAME padding the
policy does not even find the stem: it needs `padding="symmetric"`). Prune them with `prune_low_magnitude`
(file size) or remove channels (latency) instead.
"""
from __future__ import annotations

from typing import NamedTuple

import tf_keras as keras

from models import layers


class Stage(NamedTuple):
    """One row of the paper's Table 1: stride, repeat, and output channels for each group count g in GROUPS."""

    layer: str
    stride: int
    repeat: int
    output_channels: tuple[int, int, int, int, int]


# Table 1 of the paper, between Conv1 (24 channels) + MaxPool and GlobalPool + FC.
GROUPS = (1, 2, 3, 4, 8)
TABLE_1 = (
    Stage("stage2", stride=2, repeat=1, output_channels=(144, 200, 240, 272, 384)),
    Stage("stage2", stride=1, repeat=3, output_channels=(144, 200, 240, 272, 384)),
    Stage("stage3", stride=2, repeat=1, output_channels=(288, 400, 480, 544, 768)),
    Stage("stage3", stride=1, repeat=7, output_channels=(288, 400, 480, 544, 768)),
    Stage("stage4", stride=2, repeat=1, output_channels=(576, 800, 960, 1088, 1536)),
    Stage("stage4", stride=1, repeat=3, output_channels=(576, 800, 960, 1088, 1536)),
)
CONV1_CHANNELS = 24
BOTTLENECK_RATIO = 4  # "the number of bottleneck channels is set to 1/4 of the output channels" (section 3.3)
MIN_WIDTH, MAX_WIDTH = 0.25, 2.0  # the paper's 0.25x ... 2x (Table 2)


def shuffle_unit(
    x,
    out_channels: int,
    groups: int,
    strides: int,
    activation: str,
    name: str,
    group_first_pointwise: bool = True,
    bn_momentum: float = layers.DEFAULT_BATCH_NORM_MOMENTUM,
    padding: str = "same",
):
    """Figure 2(b) (stride 1: residual Add) and 2(c) (stride 2: 3x3 average-pooled shortcut, Concat).

    The paper puts the stride-2 unit's ReLU after the Concat. Here it sits on the convolution branch (where it
    fuses into the convolution) instead: the pooled shortcut of a post-ReLU input is already non-negative, so
    the result is the same (exact for relu/relu6), but XNNPACK took no int8 RELU standing alone after a
    CONCATENATION (docs/design.md, "Why each non-obvious lowering exists", average pool).
    """
    bottleneck_channels = out_channels // BOTTLENECK_RATIO
    branch_channels = out_channels - x.shape[-1] if strides == 2 else out_channels
    first_groups = groups if group_first_pointwise else 1
    y = layers.conv_bn(
        x, bottleneck_channels, 1, f"{name}/gconv1", groups=first_groups, activation=activation, bn_momentum=bn_momentum
    )
    if first_groups > 1:  # a shuffle after an ungrouped convolution would only relabel its filters
        y = layers.ChannelShuffle(groups, name=f"{name}/shuffle")(y)
    y = layers.depthwise_bn(y, 3, f"{name}/depthwise", strides, None, bn_momentum, padding)
    # One grouped CONV_2D (Conv2D(groups=g)), which XNNPACK takes in float and int8. Measured against split + g
    # convolutions + concat (224 px, 1 thread, g=3, both one partition): int8 12.2 vs 17.8 ms, float 22.7 vs 25.0.
    y = layers.conv_bn(y, branch_channels, 1, f"{name}/gconv2", groups=groups, bn_momentum=bn_momentum)
    if strides == 1:
        x = keras.layers.Add(name=f"{name}/add")([x, y])
        return layers.activation_layer(activation, f"{name}/{activation}")(x)
    y = layers.activation_layer(activation, f"{name}/gconv2/{activation}")(y)
    shortcut = layers.strided_pool(x, "avg", f"{name}/shortcut_avgpool", padding)
    return keras.layers.Concatenate(name=f"{name}/concat")([shortcut, y])


def stage_channels(groups: int, width_multiplier: float) -> tuple[int, dict[str, int]]:
    """Conv1's and each stage's output channels, scaled by the width multiplier ("ShuffleNet s x").

    Stage channels stay multiples of 4 * groups (the bottleneck, a quarter of them, feeds a g-group convolution),
    and Conv1's a multiple of groups (a stride-2 unit's branch has stage channels minus input channels).
    """
    if groups not in GROUPS:
        raise ValueError(f"ShuffleNetV1 groups must be one of {GROUPS} (the paper's Table 1); got {groups!r}.")
    if not MIN_WIDTH <= width_multiplier <= MAX_WIDTH:
        raise ValueError(
            f"ShuffleNetV1 width_multiplier must be between {MIN_WIDTH:g} and {MAX_WIDTH:g} (the paper's 0.25x-2x); "
            f"got {width_multiplier!r}."
        )
    column = GROUPS.index(groups)
    channels = {
        row.layer: layers.make_divisible(row.output_channels[column] * width_multiplier, BOTTLENECK_RATIO * groups)
        for row in TABLE_1
    }
    return layers.make_divisible(CONV1_CHANNELS * width_multiplier, groups), channels


def build(
    input_shape: tuple[int, int, int],
    num_classes: int,
    width_multiplier: float,
    dropout: float | None,
    activation: str | None,
    groups: int = 3,
    bn_momentum: float = layers.DEFAULT_BATCH_NORM_MOMENTUM,
    padding: str = "same",
) -> keras.Model:
    """ShuffleNetV1 with `groups` in GROUPS (the paper's headline model is 1x, g=3) and ReLU; logits out."""
    conv1_channels, channels = stage_channels(groups, width_multiplier)
    activation = activation or "relu"
    dropout = 0.0 if dropout is None else dropout  # the paper uses none
    inputs = keras.Input(shape=input_shape, name="input")
    x = layers.shufflenet_stem(inputs, conv1_channels, activation, bn_momentum, padding)
    unit_index = {row.layer: 0 for row in TABLE_1}
    for row in TABLE_1:
        for _ in range(row.repeat):
            unit_index[row.layer] += 1
            x = shuffle_unit(
                x,
                channels[row.layer],
                groups,
                strides=row.stride,
                activation=activation,
                name=f"{row.layer}/unit{unit_index[row.layer]}",
                # "we do not apply group convolution on the first pointwise layer [of Stage2] because the number
                # of input channels is relatively small" (section 3.3)
                group_first_pointwise=sum(unit_index.values()) > 1,
                bn_momentum=bn_momentum,
                padding=padding,
            )
    x = keras.layers.GlobalAveragePooling2D(keepdims=True, name="global_pool")(x)
    if dropout:
        x = keras.layers.Dropout(dropout, name="dropout")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    logits = keras.layers.Dense(num_classes, name="fc")(x)
    return keras.Model(inputs, logits, name=f"shufflenet_v1_{width_multiplier:g}x_g{groups}")
