"""MobileNet V1/V2/V3 definitions: keras.applications' parameter counts, the papers' defaults, options, bad input."""
import numpy as np
import pytest

import models  # first: it selects Keras 2 (tf_keras) before TensorFlow loads
import tf_keras as keras
from models import layers, mobilenet_v3
from models.imagenet_weights import keras_applications_model

MOBILENETS = ("mobilenet_v1", "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large")
# keras.applications at 224x224x3, 1000 classes, width 1.0 (docs/design.md; BatchNorm moving statistics included).
KERAS_APPLICATIONS_PARAMS = {
    "mobilenet_v1": 4_253_864,
    "mobilenet_v2": 3_538_984,
    "mobilenet_v3_small": 2_554_968,
    "mobilenet_v3_large": 5_507_432,
}


def _layers_of(model, cls):
    return [layer for layer in model.layers if isinstance(layer, cls)]


@pytest.mark.parametrize("name", MOBILENETS)
def test_parameter_count_equals_keras_applications(name):
    ours = models.build(name)
    assert ours.count_params() == KERAS_APPLICATIONS_PARAMS[name]
    assert keras_applications_model(name, 1.0, (224, 224, 3)).count_params() == KERAS_APPLICATIONS_PARAMS[name]


def test_papers_activations_and_dropout_by_default():
    v1 = models.build("mobilenet_v1", input_shape=(64, 64, 3), num_classes=10)
    v3 = models.build("mobilenet_v3_small", input_shape=(64, 64, 3), num_classes=10)
    assert not _layers_of(v1, layers.HardSwish)
    assert {float(layer.max_value) for layer in _layers_of(v1, keras.layers.ReLU)} == {6.0}
    assert len(_layers_of(v3, layers.HardSwish)) == 19  # the NL = HS positions, the stem and the head
    assert len(_layers_of(v3, layers.HardSigmoid)) == 9  # one per SE block
    assert [layer.rate for layer in _layers_of(v1, keras.layers.Dropout)] == [1e-3]
    assert [layer.rate for layer in _layers_of(v3, keras.layers.Dropout)] == [0.2]
    assert v1.output_shape == v3.output_shape == (None, 10)


def test_activation_override_and_no_dropout():
    model = models.build("mobilenet_v3_large", input_shape=(64, 64, 3), activation="relu6", dropout=0.0)
    assert not _layers_of(model, layers.HardSwish)
    assert not _layers_of(model, keras.layers.Dropout)
    assert len(_layers_of(model, layers.HardSigmoid)) == 8  # the SE gate keeps the paper's hard-sigmoid


def test_layer_names_follow_keras_applications():
    v1 = {layer.name for layer in models.build("mobilenet_v1", input_shape=(64, 64, 3)).layers}
    v3 = {layer.name for layer in models.build("mobilenet_v3_small", input_shape=(64, 64, 3)).layers}
    assert {"conv1", "conv_dw_1", "conv_pw_1", "conv_dw_13", "conv_pw_13", "conv_preds"} <= v1
    assert {"Conv", "expanded_conv/depthwise", "expanded_conv/squeeze_excite/Mul", "expanded_conv_10/project",
            "Conv_1", "Conv_2", "Logits"} <= v3


@pytest.mark.parametrize("name", MOBILENETS)
def test_symmetric_padding_keeps_shapes_and_pads_every_strided_conv(name):
    same = models.build(name, input_shape=(64, 64, 3), num_classes=10, width_multiplier=0.5)
    symmetric = models.build(name, input_shape=(64, 64, 3), num_classes=10, width_multiplier=0.5, padding="symmetric")
    assert symmetric.count_params() == same.count_params()
    strided = [layer for layer in symmetric.layers if getattr(layer, "strides", (1, 1)) == (2, 2)]
    assert strided and all(layer.padding == "valid" for layer in strided)
    pads = _layers_of(symmetric, keras.layers.ZeroPadding2D)
    assert len(pads) == len(strided)
    assert all(pad.padding[0][0] == pad.padding[0][1] for pad in pads)
    assert isinstance(symmetric.layers[1], keras.layers.ZeroPadding2D)
    assert symmetric.layers[1].padding == ((1, 1), (1, 1))


def test_hard_activations_compute_the_papers_functions():
    x = np.linspace(-8, 8, 161, dtype=np.float32)
    hard_sigmoid = np.clip(x + 3, 0, 6) / 6
    np.testing.assert_allclose(layers.HardSigmoid()(x).numpy(), hard_sigmoid, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(layers.HardSwish()(x).numpy(), x * hard_sigmoid, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", MOBILENETS)
def test_any_input_size_and_class_count(name):
    model = models.build(name, input_shape=(40, 56, 3), num_classes=7, width_multiplier=0.5)
    assert model(np.zeros((2, 40, 56, 3), np.float32)).shape == (2, 7)


def test_unknown_mobilenet_v3_variant_names_the_variants():
    with pytest.raises(ValueError, match=r"variant must be one of \['large', 'small'\]"):
        mobilenet_v3.build((64, 64, 3), 10, 1.0, None, None, variant="medium")


@pytest.mark.parametrize(
    "name, options, message",
    [
        ("mobilenet_v1", {"width_multiplier": 0.01}, "width_multiplier >= 0.03125"),
        ("mobilenet_v2", {"width_multiplier": 0}, "positive"),
        ("mobilenet_v3_large", {"padding": "reflect"}, "padding must be one of"),
        ("mobilenet_v1", {"activation": "gelu"}, "relu6"),
        ("mobilenet_v2", {"input_shape": (16, 16, 3)}, "at least 32x32"),
        ("mobilenet_v3_small", {"num_classes": 0}, "positive int"),
        ("mobilenet_v4", {}, "mobilenet_v3_small"),
    ],
)
def test_bad_input_names_the_allowed_values(name, options, message):
    with pytest.raises(ValueError, match=message):
        models.build(name, **{"input_shape": (64, 64, 3), **options})
