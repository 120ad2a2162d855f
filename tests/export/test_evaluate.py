"""export.evaluate: the TFLite classifier reproduces the Keras model; scoring helpers."""
import numpy as np
import pytest

import tiny_tflite_models as tiny
from export.evaluate import TFLiteClassifier, agreement, iterate_images, top1_accuracy

EVAL_IMAGES = tiny.images(48, seed=7)


@pytest.fixture(scope="module")
def keras_logits():
    return tiny.classifier("plain").predict(EVAL_IMAGES, batch_size=16, verbose=0)


@pytest.mark.parametrize("quantization", ["none", "float16", "dynamic"])
def test_float_models_match_keras(quantization, keras_logits, tmp_path):
    path = tmp_path / "model.tflite"
    path.write_bytes(tiny.converted("plain", quantization))
    classifier = TFLiteClassifier(path)
    logits = classifier.logits(EVAL_IMAGES)
    assert logits.shape == (48, tiny.NUM_CLASSES) and logits.dtype == np.float32
    np.testing.assert_allclose(logits, keras_logits, atol=2e-2 if quantization == "float16" else 1e-4)
    assert agreement(logits, keras_logits) >= (0.95 if quantization == "float16" else 1.0)


@pytest.mark.parametrize("io_dtype", ["int8", "uint8"])
def test_int8_models_mostly_agree_with_keras(io_dtype, keras_logits):
    classifier = TFLiteClassifier(tiny.converted("plain", "int8", io_dtype))
    assert classifier.input_dtype == np.dtype(io_dtype) and classifier.input_shape == (1, 32, 32, 3)
    logits = classifier.logits(EVAL_IMAGES)
    assert logits.dtype == np.float32  # dequantized with the output tensor's scale and zero point
    assert agreement(logits, keras_logits) >= 0.85
    assert np.abs(logits - keras_logits).max() < 0.25 * np.abs(keras_logits).max()


def test_accepts_arrays_iterables_and_labelled_batches():
    classifier = TFLiteClassifier(tiny.converted("plain", "none"))
    expected = classifier.logits(EVAL_IMAGES[:4])
    np.testing.assert_array_equal(classifier.logits(list(EVAL_IMAGES[:4])), expected)
    labelled_batches = [(EVAL_IMAGES[:3], np.zeros(3)), (EVAL_IMAGES[3:4], np.zeros(1))]
    np.testing.assert_array_equal(classifier.logits(labelled_batches), expected)
    np.testing.assert_array_equal(classifier.logits(EVAL_IMAGES[0]), expected[:1])
    assert classifier.logits([]).shape == (0, tiny.NUM_CLASSES)
    assert len(list(iterate_images(EVAL_IMAGES[:5]))) == 5


def test_wrong_image_size_is_named():
    classifier = TFLiteClassifier(tiny.converted("plain", "none"))
    with pytest.raises(ValueError, match=r"\(16, 16, 3\)"):
        classifier.logits(np.zeros((1, 16, 16, 3), np.float32))


def test_top1_accuracy_and_agreement():
    logits = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    assert top1_accuracy(logits, np.array([1, 0, 0, 0])) == 0.75
    assert agreement(logits, logits[:, ::-1]) == 0.0
    assert agreement(logits, logits * 3.0) == 1.0
    with pytest.raises(ValueError):
        top1_accuracy(logits, np.array([1, 0]))
    with pytest.raises(ValueError):
        agreement(logits, logits[:2])
