"""export.bias_correction: int8 biases shifted so each channel's mean matches the float model's."""
import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

import tiny_tflite_models as tiny
from export.bias_correction import correct_biases
from export.calibration import quantize_calibrated
from export.convert import to_int8_with_float_reference
from export.evaluate import TFLiteClassifier
from export.graph import integer_only_problems, op_histogram, xnnpack_partitions
from test_quantization_report import _with_range_shrunk


@pytest.fixture(scope="module")
def shifted_int8_and_reference():
    """A conv -> pool -> dense model's calibrated graph with the pooled features' range clipped to 1/3: the logits'
    means move. (The dense layer gets a bias: the converter drops an all-zero one, and there is nothing to shift.)"""
    keras.utils.set_random_seed(1)
    inputs = keras.Input(tiny.IMAGE_SHAPE)
    features = keras.layers.GlobalAveragePooling2D(name="pool")(keras.layers.Conv2D(8, 3, activation="relu")(inputs))
    logits = keras.layers.Dense(tiny.NUM_CLASSES, bias_initializer=keras.initializers.Constant(0.1))(features)
    _, reference = to_int8_with_float_reference(keras.Model(inputs, logits), tiny.images(16, seed=3))
    return _with_range_shrunk(reference, "pool/Mean", 0.3), reference


def _mean_logit_shift(int8_model: bytes, reference: bytes, images: np.ndarray) -> float:
    shift = TFLiteClassifier(int8_model).logits(images).mean(0) - TFLiteClassifier(reference).logits(images).mean(0)
    return float(np.abs(shift).max())


@pytest.mark.parametrize("io_dtype", [tf.int8, tf.float32])  # float32: the I/O the pipeline ships
def test_bias_correction_removes_the_mean_shift_and_keeps_the_graph(shifted_int8_and_reference, io_dtype):
    shifted, reference = shifted_int8_and_reference
    int8_model = quantize_calibrated(shifted, io_dtype)
    corrected = correct_biases(int8_model, reference, tiny.images(32, seed=4))
    held_out = tiny.images(32, seed=8)
    before, after = (_mean_logit_shift(model, reference, held_out) for model in (int8_model, corrected))
    assert after < before / 3
    assert op_histogram(corrected) == op_histogram(int8_model)
    float_io = io_dtype == tf.float32
    assert not integer_only_problems(corrected, float_io=float_io) and xnnpack_partitions(corrected).partitions == 1


def test_bias_correction_needs_images(shifted_int8_and_reference):
    shifted, reference = shifted_int8_and_reference
    with pytest.raises(ValueError, match="at least one image"):
        correct_biases(quantize_calibrated(shifted, tf.int8), reference, np.zeros((0, *tiny.IMAGE_SHAPE), np.float32))
