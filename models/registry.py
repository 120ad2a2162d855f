"""One entry point for every network: `build(name, ...)` and `available()`."""
from __future__ import annotations

import importlib
from typing import NamedTuple

import tf_keras as keras

from models import channel_pruning
from models.choices import NETWORKS
from models.layers import ACTIVATIONS

MIN_INPUT_SIZE = 32


class _Entry(NamedTuple):
    module: str
    options: dict


_NETWORKS: dict[str, _Entry] = {
    "mobilenet_v1": _Entry("models.mobilenet_v1", {}),
    "mobilenet_v2": _Entry("models.mobilenet_v2", {}),
    "mobilenet_v3_small": _Entry("models.mobilenet_v3", {"variant": "small"}),
    "mobilenet_v3_large": _Entry("models.mobilenet_v3", {"variant": "large"}),
    "shufflenet_v1": _Entry("models.shufflenet_v1", {}),
    "shufflenet_v2": _Entry("models.shufflenet_v2", {}),
}


assert tuple(sorted(_NETWORKS)) == NETWORKS, "models.choices.NETWORKS must list exactly the registry's networks"


def available() -> list[str]:
    """The names `build` accepts."""
    return sorted(_NETWORKS)


def _check_common_arguments(name, input_shape, num_classes, width_multiplier, activation) -> None:
    if name not in _NETWORKS:
        raise ValueError(f"Unknown model {name!r}. Available models: {', '.join(available())}.")
    if len(input_shape) != 3 or not all(isinstance(d, int) and d > 0 for d in input_shape):
        raise ValueError(f"input_shape must be (height, width, channels) of positive ints, got {input_shape!r}.")
    if min(input_shape[:2]) < MIN_INPUT_SIZE:
        raise ValueError(
            f"{name} needs an input of at least {MIN_INPUT_SIZE}x{MIN_INPUT_SIZE} pixels (its stride is 32); "
            f"got {input_shape[0]}x{input_shape[1]}."
        )
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}.")
    if not width_multiplier > 0:
        raise ValueError(f"width_multiplier must be a positive number, got {width_multiplier!r}.")
    if activation is not None and activation not in ACTIVATIONS:
        raise ValueError(f"Unknown activation {activation!r}; choose None (the paper's) or one of {sorted(ACTIVATIONS)}.")


def build(
    name: str,
    input_shape: tuple[int, int, int] = (224, 224, 3),
    num_classes: int = 1000,
    width_multiplier: float = 1.0,
    dropout: float | None = None,
    activation: str | None = None,
    weights: str | None = None,
    channels: dict[str, int] | None = None,
    **network_options,
) -> keras.Model:
    """Build a network by name; it outputs logits. `dropout=None` and `activation=None` mean the paper's choice.

    `weights="imagenet"` (MobileNet V1/V2/V3) copies keras.applications' ImageNet weights onto our layers.
    `channels` gives per-layer output channel counts (a channel-pruned network: `channel_pruning.channel_counts`
    of it) for the convolutions `models.channel_pruning` can prune; the rest keep the table's.
    """
    input_shape = tuple(input_shape)
    _check_common_arguments(name, input_shape, num_classes, width_multiplier, activation)
    entry = _NETWORKS[name]
    network = importlib.import_module(entry.module)
    model = network.build(
        input_shape=input_shape,
        num_classes=num_classes,
        width_multiplier=width_multiplier,
        dropout=dropout,
        activation=activation,
        **entry.options,
        **network_options,
    )
    if channels:
        if weights is not None:
            raise ValueError("weights and channels cannot be combined: pretrained weights fit the table's widths only.")
        model = channel_pruning.with_channels(model, channels)
    if weights is not None:
        from models.imagenet_weights import load_imagenet_weights

        load_imagenet_weights(model, name, weights)
    return model
