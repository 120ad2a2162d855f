"""Tiny hand-built tf_keras classifiers (32x32x3, 4 classes) and their TFLite conversions, shared by the export tests.

Conversions take about a second each, so each (variant, mode) is converted once per test session and cached;
tests must not mutate the returned models.
"""
from __future__ import annotations

import functools

import numpy as np

import export  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import tensorflow as tf
import tf_keras as keras

from export.convert import to_tflite

IMAGE_SHAPE = (32, 32, 3)
NUM_CLASSES = 4
VARIANTS = ("plain", "hard_swish", "softmax", "reshape", "shuffle_5d")


def images(count: int, seed: int = 0) -> np.ndarray:
    """Normalized float32 images in [-1, 1], as the data stage produces."""
    return np.random.default_rng(seed).uniform(-1.0, 1.0, (count, *IMAGE_SHAPE)).astype(np.float32)


@functools.lru_cache(maxsize=None)
def classifier(variant: str = "plain") -> keras.Model:
    """Conv-BN-ReLU -> [variant op] -> 1x1 conv -> pool -> dense logits.

    `hard_swish`: the textbook x * relu6(x + 3) / 6, which the converter fuses into one HARD_SWISH op.
    `softmax`: ends in a Softmax layer (probabilities instead of logits).
    `reshape`: a Keras Reshape round trip, which keeps the batch dynamic under `from_keras_model`.
    `shuffle_5d`: a channel shuffle through 5-D tensors (`[N, H, W, g, C/g]`), which the GPU delegate rejects.
    """
    if variant not in VARIANTS:
        raise ValueError(variant)
    keras.utils.set_random_seed(1)
    inputs = keras.Input(IMAGE_SHAPE, name="input")
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", use_bias=False, name="stem_conv")(inputs)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = keras.layers.ReLU(name="stem_relu")(x)
    if variant == "hard_swish":
        x = keras.layers.Lambda(lambda t: t * tf.nn.relu6(t + 3.0) / 6.0, name="hard_swish")(x)
    if variant == "reshape":
        x = keras.layers.Reshape((16 * 16, 16))(x)
        x = keras.layers.Reshape((16, 16, 16))(x)
    if variant == "shuffle_5d":
        x = keras.layers.Reshape((16, 16, 2, 8))(x)
        x = keras.layers.Permute((1, 2, 4, 3))(x)
        x = keras.layers.Reshape((16, 16, 16))(x)
    x = keras.layers.Conv2D(32, 1, activation="relu", name="head_conv")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = keras.layers.Dense(NUM_CLASSES, name="logits")(x)
    if variant == "softmax":
        x = keras.layers.Softmax()(x)
    model = keras.Model(inputs, x, name=f"tiny_{variant}")
    # Give BatchNorm non-trivial statistics so float and int8 differ the way real models do.
    batch_norm = model.layers[2]
    gamma, beta, _, _ = batch_norm.get_weights()
    rng = np.random.default_rng(2)
    batch_norm.set_weights([gamma, beta + 0.1, rng.normal(0, 0.2, 16), rng.uniform(0.5, 2.0, 16)])
    return model


@functools.lru_cache(maxsize=None)
def converted(variant: str = "plain", quantization: str = "int8", io_dtype: str = "int8", scores: str = "logits",
              pixel_range: tuple[float, float] | None = None) -> bytes:
    """`classifier(variant)` through export.convert.to_tflite, calibrated on 16 images."""
    calibration = images(16, seed=3) if quantization == "int8" else None
    return to_tflite(classifier(variant), quantization, calibration, io_dtype=io_dtype, scores=scores,
                     pixel_range=pixel_range)


@functools.lru_cache(maxsize=None)
def converted_with_dynamic_batch(variant: str = "reshape", quantization: str = "int8") -> bytes:
    """The same model through `TFLiteConverter.from_keras_model` (batch left dynamic): the path we avoid.

    `quantization` is `int8` (calibrated, int8 I/O) or `none` (float32).
    """
    converter = tf.lite.TFLiteConverter.from_keras_model(classifier(variant))
    if quantization == "none":
        return converter.convert()
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([image[np.newaxis]] for image in images(8, seed=3))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    return converter.convert()
