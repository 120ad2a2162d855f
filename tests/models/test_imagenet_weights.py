"""ImageNet weights: keras.applications' weights map onto our layers by structure, and the networks are the same.

No download here: keras.applications' models are built with random weights (BatchNorm statistics included, so
every layer matters), mapped onto ours, and both must compute the same logits on the same [-1, 1] input.
"""
import numpy as np
import pytest

import models  # first: it selects Keras 2 (tf_keras) before TensorFlow loads
import tf_keras as keras
from models import imagenet_weights
from models.imagenet_weights import WeightsDownloadError, keras_applications_model, transfer_weights


def _randomize(model: keras.Model, seed: int = 0) -> None:
    """Random weights everywhere, BatchNorm moving statistics too (keras initializes those to 0 and 1)."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        values = []
        for weight in layer.weights:
            shape, name = tuple(weight.shape), weight.name
            if "moving_variance" in name or "gamma" in name:
                values.append(rng.uniform(0.5, 1.5, shape))
            elif "moving_mean" in name or "beta" in name or "bias" in name:
                values.append(rng.normal(0.0, 0.1, shape))
            else:
                fan_in = np.prod(shape[:2]) if "depthwise" in name else np.prod(shape[:-1])
                values.append(rng.normal(0.0, np.sqrt(2.0 / fan_in), shape))
        if values:
            layer.set_weights(values)


@pytest.mark.parametrize(
    "name, width_multiplier, size",
    [
        ("mobilenet_v1", 0.5, 64),
        ("mobilenet_v2", 0.35, 64),
        ("mobilenet_v3_small", 0.75, 96),
        ("mobilenet_v3_large", 1.0, 64),
    ],
)
def test_our_network_computes_keras_applications_outputs(name, width_multiplier, size):
    shape = (size, size, 3)
    theirs = keras_applications_model(name, width_multiplier, shape)
    _randomize(theirs)
    ours = models.build(name, input_shape=shape, width_multiplier=width_multiplier)
    transfer_weights(theirs, ours)
    images = np.random.default_rng(1).uniform(-1.0, 1.0, (2, *shape)).astype(np.float32)
    expected = theirs(images, training=False).numpy()
    actual = ours(images, training=False).numpy()
    assert np.abs(expected).max() > 1e-2  # the logits carry signal, not a vanished activation
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def test_a_new_classifier_keeps_its_own_weights():
    theirs = keras_applications_model("mobilenet_v1", 0.25, (64, 64, 3))
    _randomize(theirs)
    ours = models.build("mobilenet_v1", input_shape=(64, 64, 3), num_classes=10, width_multiplier=0.25)
    classifier_before = ours.get_layer("conv_preds").get_weights()
    transfer_weights(theirs, ours)
    np.testing.assert_array_equal(ours.get_layer("conv_dw_5").depthwise_kernel, theirs.get_layer("conv_dw_5").depthwise_kernel)
    for before, after in zip(classifier_before, ours.get_layer("conv_preds").get_weights()):
        np.testing.assert_array_equal(before, after)


def test_a_different_network_is_rejected():
    theirs = keras_applications_model("mobilenet_v2", 0.35, (64, 64, 3))
    ours = models.build("mobilenet_v1", input_shape=(64, 64, 3), width_multiplier=0.25)
    with pytest.raises(ValueError, match="Cannot map"):
        transfer_weights(theirs, ours)


def test_shufflenets_have_no_keras_imagenet_weights():
    model = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Conv2D(4, 3)])
    for name in ("shufflenet_v1", "shufflenet_v2"):
        with pytest.raises(ValueError, match="No official Keras ImageNet weights"):
            imagenet_weights.load_imagenet_weights(model, name, "imagenet")


def test_unknown_weights_name_lists_the_allowed_ones():
    model = models.build("mobilenet_v1", input_shape=(64, 64, 3), width_multiplier=0.25)
    with pytest.raises(ValueError, match="'imagenet'"):
        imagenet_weights.load_imagenet_weights(model, "mobilenet_v1", "cifar10")


def test_width_without_published_weights_is_rejected():
    model = models.build("mobilenet_v3_small", input_shape=(64, 64, 3), width_multiplier=0.5)
    with pytest.raises(ValueError, match=r"width_multiplier in \(0.75, 1.0\)"):
        imagenet_weights.load_imagenet_weights(model, "mobilenet_v3_small", "imagenet")


def test_offline_download_says_internet_is_needed_once(monkeypatch):
    from tf_keras.src.utils import data_utils

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure: [Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(data_utils, "get_file", offline)
    monkeypatch.setenv("KERAS_HOME", "/tmp/keras-home-for-test")
    model = models.build("mobilenet_v1", input_shape=(64, 64, 3), width_multiplier=0.25)
    with pytest.raises(WeightsDownloadError, match="need internet access once.*/tmp/keras-home-for-test/models"):
        imagenet_weights.load_imagenet_weights(model, "mobilenet_v1", "imagenet")
