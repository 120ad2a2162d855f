"""ImageNet weights for our MobileNets, copied from keras.applications' models by structure.

keras.applications publishes ImageNet weights for MobileNet V1/V2/V3 only; the ShuffleNets have none in Keras.
The mapping walks both models' weighted layers in order and pairs them by layer type and weight shapes; it never
guesses from layer names. Every layer must match, except that a classifier with a different number of classes
keeps its fresh initialization (fine-tuning on a new label set).

Our models take inputs in [-1, 1]: keras.applications' MobileNet V1/V2 preprocessing. keras' V3 rescales [0, 255]
inside the model; it is built here without that layer (`include_preprocessing=False`), which makes it take [-1, 1]
too.
"""
from __future__ import annotations

import os
from typing import Callable, NamedTuple

import tf_keras as keras


class WeightsDownloadError(RuntimeError):
    """keras.applications could not download or read its ImageNet weights file."""


class _KerasApplication(NamedTuple):
    constructor: Callable[..., keras.Model]
    widths: tuple[float, ...]  # the `alpha`s keras.applications publishes ImageNet weights for
    resolutions: tuple[int, ...]  # the input sizes it has weights trained at (first: its default)
    options: dict


_KERAS_APPLICATIONS: dict[str, _KerasApplication] = {
    "mobilenet_v1": _KerasApplication(
        keras.applications.MobileNet, (0.25, 0.5, 0.75, 1.0), (224, 128, 160, 192), {}
    ),
    "mobilenet_v2": _KerasApplication(
        keras.applications.MobileNetV2, (0.35, 0.5, 0.75, 1.0, 1.3, 1.4), (224, 96, 128, 160, 192), {}
    ),
    "mobilenet_v3_small": _KerasApplication(
        keras.applications.MobileNetV3Small, (0.75, 1.0), (224,), {"include_preprocessing": False}
    ),
    "mobilenet_v3_large": _KerasApplication(
        keras.applications.MobileNetV3Large, (0.75, 1.0), (224,), {"include_preprocessing": False}
    ),
}
WEIGHTS = ("imagenet",)


def keras_applications_model(
    name: str, width_multiplier: float, input_shape: tuple[int, int, int], weights: str | None = None
) -> keras.Model:
    """keras.applications' model for one of our MobileNets: logits out, [-1, 1] in, 1000 classes."""
    if name not in _KERAS_APPLICATIONS:
        raise ValueError(
            f"No keras.applications counterpart for {name!r}; choose one of {sorted(_KERAS_APPLICATIONS)}."
        )
    application = _KERAS_APPLICATIONS[name]
    return application.constructor(
        input_shape=input_shape,
        alpha=width_multiplier,
        weights=weights,
        include_top=True,
        classes=1000,
        classifier_activation=None,
        **application.options,
    )


def _weighted_layers(model: keras.Model) -> list[keras.layers.Layer]:
    return [layer for layer in model.layers if layer.weights]


def _shapes(layer: keras.layers.Layer) -> list[tuple[int, ...]]:
    return [tuple(weight.shape) for weight in layer.weights]


def _mismatch(source: keras.Model, target: keras.Model) -> str | None:
    """Why `source`'s weights do not fit `target` layer for layer (None when they do, classifier aside)."""
    source_layers, target_layers = _weighted_layers(source), _weighted_layers(target)
    if len(source_layers) != len(target_layers):
        return f"{source.name} has {len(source_layers)} weighted layers, {target.name} has {len(target_layers)}"
    for index, (theirs, ours) in enumerate(zip(source_layers, target_layers)):
        is_classifier = index == len(source_layers) - 1
        if type(theirs) is not type(ours):
            return f"layer {index}: {theirs.name} is a {type(theirs).__name__}, {ours.name} a {type(ours).__name__}"
        if _shapes(theirs) != _shapes(ours) and not (
            is_classifier and _shapes(theirs)[0][:-1] == _shapes(ours)[0][:-1]
        ):
            return f"layer {index}: {theirs.name} has weight shapes {_shapes(theirs)}, {ours.name} {_shapes(ours)}"
    return None


def transfer_weights(source: keras.Model, target: keras.Model) -> None:
    """Copy every weight of `source` onto `target`, pairing weighted layers in order by type and shapes.

    A classifier whose class count differs keeps `target`'s own weights. Raises ValueError when the two are
    not the same network.
    """
    reason = _mismatch(source, target)
    if reason:
        raise ValueError(f"Cannot map {source.name}'s weights onto {target.name}: {reason}.")
    for theirs, ours in zip(_weighted_layers(source), _weighted_layers(target)):
        if _shapes(theirs) == _shapes(ours):
            ours.set_weights(theirs.get_weights())


def _keras_cache_dir() -> str:
    return os.path.join(os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras")), "models")


def load_imagenet_weights(model: keras.Model, name: str, weights: str) -> None:
    """Copy keras.applications' ImageNet weights onto `model` (our `name` network) in place.

    The width is recognized from the model's structure; weights exist for the widths keras.applications publishes.
    """
    if weights not in WEIGHTS:
        raise ValueError(f"weights must be None or one of {WEIGHTS}, got {weights!r}.")
    if name.startswith("shufflenet"):
        raise ValueError(
            f"No official Keras ImageNet weights exist for {name}; build it with weights=None and train it "
            f"(ImageNet weights exist for {', '.join(sorted(_KERAS_APPLICATIONS))})."
        )
    if name not in _KERAS_APPLICATIONS:
        raise ValueError(f"No ImageNet weights for {name!r}; they exist for {', '.join(sorted(_KERAS_APPLICATIONS))}.")
    application = _KERAS_APPLICATIONS[name]
    height, width, channels = model.input_shape[1:]
    if channels != 3:
        raise ValueError(f"ImageNet weights need RGB input (3 channels); {model.name} takes {channels}.")
    # Weight shapes do not depend on the input size: probe the widths at ours (cheap at small sizes), then load
    # the weights trained at our resolution where keras.applications has them.
    width_multiplier = next(
        (
            alpha
            for alpha in application.widths
            if not _mismatch(keras_applications_model(name, alpha, (height, width, channels)), model)
        ),
        None,
    )
    if width_multiplier is None:
        raise ValueError(
            f"keras.applications has ImageNet weights for {name} only at width_multiplier in {application.widths}; "
            f"{model.name} matches none of them."
        )
    size = height if height == width and height in application.resolutions else application.resolutions[0]
    try:
        source = keras_applications_model(name, width_multiplier, (size, size, channels), weights="imagenet")
    except Exception as error:  # this width built fine without weights: what failed is the download or the file
        raise WeightsDownloadError(
            f"Downloading keras.applications' ImageNet weights for {name} (width {width_multiplier:g}) failed: "
            f"{error}. ImageNet weights need internet access once; Keras caches them in {_keras_cache_dir()}."
        ) from error
    transfer_weights(source, model)
