"""MobileNetV3 (Howard et al., 2019): NAS-found bottlenecks with squeeze-and-excite and hard-swish.

Channel rounding follows keras.applications exactly, so its ImageNet weights fit at every width it publishes:
each block's expansion is the table's ratio exp / in applied to the actual (width-scaled) input channels and
rounded with `make_divisible`, the SE squeeze is `make_divisible(expanded / 4)`, the last 1x1 conv is
`make_divisible(6 * in)`, the stem keeps 16 channels at every width, and the last point (1024 / 1280) grows
only for widths above 1.
"""
from __future__ import annotations

from typing import NamedTuple

import tf_keras as keras

from models import layers


class Bneck(NamedTuple):
    """One "bneck" row of the paper's Table 1 (Large) or Table 2 (Small).

    kernel: depthwise kernel size; exp: expansion size; out: output channels; SE: squeeze-and-excite;
    NL: nonlinearity, "RE" (ReLU) or "HS" (hard-swish); s: stride.
    """

    kernel: int
    exp: int
    out: int
    SE: bool
    NL: str
    s: int


TABLE_1_LARGE = (
    Bneck(kernel=3, exp=16, out=16, SE=False, NL="RE", s=1),
    Bneck(kernel=3, exp=64, out=24, SE=False, NL="RE", s=2),
    Bneck(kernel=3, exp=72, out=24, SE=False, NL="RE", s=1),
    Bneck(kernel=5, exp=72, out=40, SE=True, NL="RE", s=2),
    Bneck(kernel=5, exp=120, out=40, SE=True, NL="RE", s=1),
    Bneck(kernel=5, exp=120, out=40, SE=True, NL="RE", s=1),
    Bneck(kernel=3, exp=240, out=80, SE=False, NL="HS", s=2),
    Bneck(kernel=3, exp=200, out=80, SE=False, NL="HS", s=1),
    Bneck(kernel=3, exp=184, out=80, SE=False, NL="HS", s=1),
    Bneck(kernel=3, exp=184, out=80, SE=False, NL="HS", s=1),
    Bneck(kernel=3, exp=480, out=112, SE=True, NL="HS", s=1),
    Bneck(kernel=3, exp=672, out=112, SE=True, NL="HS", s=1),
    Bneck(kernel=5, exp=672, out=160, SE=True, NL="HS", s=2),
    Bneck(kernel=5, exp=960, out=160, SE=True, NL="HS", s=1),
    Bneck(kernel=5, exp=960, out=160, SE=True, NL="HS", s=1),
)
TABLE_2_SMALL = (
    Bneck(kernel=3, exp=16, out=16, SE=True, NL="RE", s=2),
    Bneck(kernel=3, exp=72, out=24, SE=False, NL="RE", s=2),
    Bneck(kernel=3, exp=88, out=24, SE=False, NL="RE", s=1),
    Bneck(kernel=5, exp=96, out=40, SE=True, NL="HS", s=2),
    Bneck(kernel=5, exp=240, out=40, SE=True, NL="HS", s=1),
    Bneck(kernel=5, exp=240, out=40, SE=True, NL="HS", s=1),
    Bneck(kernel=5, exp=120, out=48, SE=True, NL="HS", s=1),
    Bneck(kernel=5, exp=144, out=48, SE=True, NL="HS", s=1),
    Bneck(kernel=5, exp=288, out=96, SE=True, NL="HS", s=2),
    Bneck(kernel=5, exp=576, out=96, SE=True, NL="HS", s=1),
    Bneck(kernel=5, exp=576, out=96, SE=True, NL="HS", s=1),
)
TABLES = {"small": TABLE_2_SMALL, "large": TABLE_1_LARGE}
# The 3x3 stride-2 stem conv, and the last point (the head's 1x1 conv after pooling, without BatchNorm).
STEM_CHANNELS = 16
LAST_POINT_CHANNELS = {"small": 1024, "large": 1280}
NONLINEARITIES = {"RE": "relu", "HS": "hard_swish"}
SQUEEZE_RATIO = 0.25
LAST_CONV_EXPANSION = 6
DEFAULT_DROPOUT = 0.2


def build(
    input_shape: tuple[int, int, int],
    num_classes: int,
    width_multiplier: float,
    dropout: float | None,
    activation: str | None,
    variant: str = "large",
    bn_momentum: float = layers.DEFAULT_BATCH_NORM_MOMENTUM,
    padding: str = "same",
) -> keras.Model:
    """MobileNetV3-Small or -Large; `activation` (default: the paper's RE/HS per row) replaces every nonlinearity.

    The squeeze-and-excite gate keeps its ReLU and hard-sigmoid either way. `padding="symmetric"` pads stride-2
    convolutions by kernel_size // 2 on every side (see `layers._pad_for_stride`).
    """
    if variant not in TABLES:
        raise ValueError(f"variant must be one of {sorted(TABLES)}, got {variant!r}.")
    dropout = DEFAULT_DROPOUT if dropout is None else dropout

    def nonlinearity(paper_name: str) -> str:
        return activation or NONLINEARITIES[paper_name]

    def scaled(channels: int) -> int:
        return layers.make_divisible(channels * width_multiplier)

    options = dict(bn_momentum=bn_momentum, padding=padding)
    inputs = keras.Input(shape=input_shape, name="input")
    x = layers.conv_bn(inputs, STEM_CHANNELS, 3, "Conv", strides=2, activation=nonlinearity("HS"), **options)
    paper_in_channels = STEM_CHANNELS
    for block_id, row in enumerate(TABLES[variant]):
        expanded_channels = layers.make_divisible(x.shape[-1] * (row.exp / paper_in_channels))
        x = layers.inverted_residual(
            x,
            expanded_channels=expanded_channels,
            out_channels=scaled(row.out),
            kernel_size=row.kernel,
            strides=row.s,
            activation=nonlinearity(row.NL),
            name=f"expanded_conv_{block_id}" if block_id else "expanded_conv",
            squeeze_channels=layers.make_divisible(expanded_channels * SQUEEZE_RATIO) if row.SE else None,
            **options,
        )
        paper_in_channels = row.out
    x = layers.conv_bn(
        x,
        layers.make_divisible(x.shape[-1] * LAST_CONV_EXPANSION),
        1,
        "Conv_1",
        activation=nonlinearity("HS"),
        bn_momentum=bn_momentum,
    )
    # keepdims=True: TF-MOT's XNNPACK sparsity policy ends its subgraph at a keepdims pooling (a MEAN op).
    x = keras.layers.GlobalAveragePooling2D(keepdims=True, name="global_average_pool")(x)
    last_point_channels = LAST_POINT_CHANNELS[variant]
    if width_multiplier > 1.0:
        last_point_channels = scaled(last_point_channels)
    x = keras.layers.Conv2D(last_point_channels, 1, name="Conv_2")(x)
    x = layers.activation_layer(nonlinearity("HS"), f"Conv_2/{nonlinearity('HS')}")(x)
    if dropout:
        x = keras.layers.Dropout(dropout, name="dropout")(x)
    x = keras.layers.Conv2D(num_classes, 1, name="Logits")(x)
    logits = keras.layers.Flatten(name="flatten")(x)
    return keras.Model(inputs, logits, name=f"mobilenet_v3_{variant}_{width_multiplier:g}")
