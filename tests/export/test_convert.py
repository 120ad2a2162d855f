"""export.convert: real conversions in every mode, from a fixed batch-1 signature."""
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_model_optimization as tfmot
import tf_keras as keras
from ai_edge_litert.interpreter import Interpreter

import tiny_tflite_models as tiny
from export.convert import ConversionError, is_quantization_aware, to_tflite
from export.evaluate import TFLiteClassifier
from export.graph import integer_only_problems, op_histogram, xnnpack_partitions


def first_op_output_scale(flatbuffer: bytes) -> float:
    """The scale the model's first op (the QUANTIZE of a float input) quantizes to."""
    interpreter = Interpreter(model_content=flatbuffer)
    first_op = interpreter._get_ops_details()[0]  # noqa: SLF001 -- no public API lists the ops
    return interpreter.get_tensor_details()[first_op["outputs"][0]]["quantization"][0]


def io_details(flatbuffer: bytes):
    interpreter = Interpreter(model_content=flatbuffer)
    return interpreter.get_input_details()[0], interpreter.get_output_details()[0]


@pytest.mark.parametrize(
    "quantization, io_dtype, expected_dtype",
    [("none", "int8", np.float32), ("float16", "int8", np.float32), ("dynamic", "int8", np.float32),
     ("int8", "int8", np.int8), ("int8", "uint8", np.uint8)],
)
def test_every_mode_converts_at_a_fixed_batch_of_one(quantization, io_dtype, expected_dtype):
    flatbuffer = tiny.converted("plain", quantization, io_dtype)
    model_input, model_output = io_details(flatbuffer)
    assert list(model_input["shape"]) == [1, 32, 32, 3]
    assert list(model_input["shape_signature"]) == [1, 32, 32, 3]  # static, not [-1, ...]
    assert list(model_output["shape"]) == [1, tiny.NUM_CLASSES]
    assert model_input["dtype"] == expected_dtype and model_output["dtype"] == expected_dtype
    if expected_dtype != np.float32:
        assert model_input["quantization_parameters"]["scales"][0] > 0


def test_modes_store_weights_as_their_precision():
    float32, float16, int8 = (len(tiny.converted("plain", q)) for q in ("none", "float16", "int8"))
    assert "DEQUANTIZE" in op_histogram(tiny.converted("plain", "float16"))  # fp16 weights, float compute
    assert int8 < float16 < float32
    assert integer_only_problems(tiny.converted("plain", "int8")) == []


def test_fixed_batch_removes_the_dynamic_shape_ops_of_a_keras_reshape():
    ours = op_histogram(tiny.converted("reshape", "int8"))
    dynamic_batch = op_histogram(tiny.converted_with_dynamic_batch("reshape"))
    assert {"SHAPE", "PACK", "STRIDED_SLICE"} <= set(dynamic_batch)  # what from_keras_model produces
    assert not {"SHAPE", "PACK", "STRIDED_SLICE"} & set(ours)


def test_int8_needs_representative_images():
    with pytest.raises(ConversionError, match="representative_images"):
        to_tflite(tiny.classifier(), "int8")


def test_representative_images_of_the_wrong_shape_are_named():
    with pytest.raises(ConversionError, match=r"shape \(16, 16, 3\)"):
        to_tflite(tiny.classifier(), "int8", np.zeros((2, 16, 16, 3), np.float32))


@pytest.mark.parametrize("arguments", [{"quantization": "int4"}, {"quantization": "int8", "io_dtype": "int16"}])
def test_unknown_modes_are_rejected_with_the_choices(arguments):
    with pytest.raises(ConversionError, match="choose one of"):
        to_tflite(tiny.classifier(), representative_images=tiny.images(1), **arguments)


def test_converter_failure_names_the_mode_and_a_fix():
    inputs = keras.Input((8, 8, 3))
    outputs = keras.layers.Lambda(lambda t: tf.math.erfinv(t))(inputs)  # no TFLite builtin kernel
    with pytest.raises(ConversionError, match=r"quantization='none'.*Erfinv(.|\n)*How to fix"):
        to_tflite(keras.Model(inputs, outputs), "none")


def test_sparse_float_model_stores_pruned_weights_sparse():
    model = keras.models.clone_model(tiny.classifier())
    model.set_weights(tiny.classifier().get_weights())
    pointwise = next(layer for layer in model.layers if layer.name == "head_conv")
    kernel, bias = pointwise.get_weights()
    kernel[np.random.default_rng(0).random(kernel.shape) < 0.8] = 0.0  # what magnitude pruning leaves
    pointwise.set_weights([kernel, bias])

    dense = to_tflite(model, "none")
    sparse = to_tflite(model, "none", sparse=True)
    sparse_tensors = [t for t in Interpreter(model_content=sparse).get_tensor_details() if t["sparsity_parameters"]]
    assert sparse_tensors and len(sparse) < len(dense)
    assert "DENSIFY" in op_histogram(sparse)


def test_unstripped_pruning_wrappers_are_refused():
    pruned = tfmot.sparsity.keras.prune_low_magnitude(tiny.classifier("plain"))
    with pytest.raises(ConversionError, match="strip_pruning"):
        to_tflite(pruned, "none")


def test_quantization_aware_model_converts_to_integer_only():
    inputs = keras.Input(tiny.IMAGE_SHAPE)
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", use_bias=False)(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(tiny.NUM_CLASSES)(x)
    qat_model = tfmot.quantization.keras.quantize_model(keras.Model(inputs, outputs))
    assert is_quantization_aware(qat_model) and not is_quantization_aware(tiny.classifier())

    without_images = to_tflite(qat_model, "int8", io_dtype="uint8")  # QAT carries its own ranges
    with_images = to_tflite(qat_model, "int8", tiny.images(4))
    for flatbuffer, dtype in ((without_images, np.uint8), (with_images, np.int8)):
        assert integer_only_problems(flatbuffer) == []
        model_input, model_output = io_details(flatbuffer)
        assert model_input["dtype"] == dtype and model_output["dtype"] == dtype
    # The fake-quant ranges win over calibration: both files quantize the output identically.
    assert io_details(without_images)[1]["quantization"][0] == pytest.approx(io_details(with_images)[1]["quantization"][0])
    with pytest.raises(ConversionError, match="converts only with quantization='int8'"):
        to_tflite(qat_model, "dynamic")
    # The client-ready I/O; the QAT converter quantizes the softmax to int8, which the checks accept.
    learned = [weight.numpy() for weight in qat_model.layers[1].weights]
    deployed = to_tflite(qat_model, "int8", io_dtype="float32", scores="probabilities", pixel_range=(-1.0, 1.0))
    assert integer_only_problems(deployed, float_io=True) == []
    assert [detail["dtype"] for detail in io_details(deployed)] == [np.float32, np.float32]
    assert first_op_output_scale(deployed) == pytest.approx(2.0 / 255.0 * 256.0 / 255.0, rel=1e-5)  # pinned
    np.testing.assert_array_equal([weight.numpy() for weight in qat_model.layers[1].weights], learned)  # restored


def test_hard_swish_is_one_fused_op_in_float_and_unfused_in_int8():
    """Float: the HARD_SWISH op XNNPACK runs in float (faster than ADD, MUL, MUL); int8: the ops XNNPACK runs."""
    from export.evaluate import TFLiteClassifier
    from models.layers import HardSwish

    inputs = keras.Input((8, 8, 3))
    hidden = keras.layers.Conv2D(8, 3, strides=2)(inputs)
    model = keras.Model(inputs, keras.layers.Dense(4)(keras.layers.Flatten()(HardSwish()(hidden))))
    images = np.random.default_rng(0).uniform(-3, 3, (4, 8, 8, 3)).astype(np.float32)
    fused = to_tflite(model, "none")
    assert op_histogram(fused).get("HARD_SWISH") == 1
    np.testing.assert_allclose(TFLiteClassifier(fused).logits(images), model.predict(images, verbose=0),
                               rtol=1e-5, atol=1e-5)
    assert "HARD_SWISH" not in op_histogram(to_tflite(model, "int8", representative_images=images))
    assert op_histogram(to_tflite(model, "dynamic")).get("HARD_SWISH") == 1  # float activations too


def test_int8_calibration_measures_the_range_of_a_tensor_an_op_overwrites_in_place():
    """TFLite's calibrator logs an op's inputs after the op ran, so an input whose buffer the op reused gets the
    output's range (tensorflow/tensorflow#127842): hard-swish's `x / 6` got a range ~6x too wide, and a trained
    MobileNetV3-Small lost 13 points of top-1 in int8. export.calibration re-measures every range."""
    from models.layers import HardSwish

    inputs = keras.Input((8, 8, 3))
    hidden = keras.layers.Conv2D(8, 1, kernel_initializer=keras.initializers.Constant(4.0), name="wide")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(4)(keras.layers.Flatten()(HardSwish(name="swish")(hidden))))
    images = np.random.default_rng(0).uniform(-1, 1, (16, 8, 8, 3)).astype(np.float32)
    flatbuffer = to_tflite(model, "int8", representative_images=images)
    scales = {detail["name"]: detail["quantization"][0]
              for detail in Interpreter(model_content=flatbuffer).get_tensor_details()}
    scaled_input = [scale for name, scale in scales.items() if name.endswith("swish/mul")]
    wide = keras.Model(inputs, hidden).predict(images, verbose=0).reshape(len(images), -1)
    low = np.percentile(wide.min(axis=1), 1, method="nearest")
    high = np.percentile(wide.max(axis=1), 99, method="nearest")  # calibration.observed_ranges
    expected = (high - low) / 6 / 255  # the range of x / 6 over the calibration images
    assert len(scaled_input) == 1 and scaled_input[0] == pytest.approx(expected, rel=0.05)


def test_one_extreme_calibration_image_does_not_set_the_int8_range():
    """Ranges are percentiles of the per-image extremes: one image 20x brighter than the other 99 would widen a
    min/max range 20x and leave every ordinary activation a few int8 steps."""
    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, keras.layers.Dense(4)(keras.layers.Flatten()(inputs)))
    images = np.random.default_rng(0).uniform(-1, 1, (100, 8, 8, 3)).astype(np.float32)
    images[17] *= 20
    flatbuffer = to_tflite(model, "int8", representative_images=images)
    input_scale = Interpreter(model_content=flatbuffer).get_input_details()[0]["quantization"][0]
    assert input_scale == pytest.approx(2 / 255, rel=0.05)


def test_probabilities_append_a_softmax_that_keeps_the_top1():
    images = tiny.images(8, seed=5)
    logits = TFLiteClassifier(tiny.converted("plain", "none")).logits(images)
    probabilities = TFLiteClassifier(tiny.converted("plain", "none", scores="probabilities")).logits(images)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(np.argmax(probabilities, axis=1), np.argmax(logits, axis=1))
    assert op_histogram(tiny.converted("plain", "none", scores="probabilities"))["SOFTMAX"] == 1


def test_int8_with_float_io_keeps_the_softmax_float_and_whole_on_xnnpack():
    flatbuffer = tiny.converted("plain", "int8", "float32", "probabilities")
    model_input, model_output = io_details(flatbuffer)
    assert model_input["dtype"] == np.float32 and model_output["dtype"] == np.float32
    histogram = op_histogram(flatbuffer)
    assert histogram["QUANTIZE"] == 1 and histogram["DEQUANTIZE"] == 1 and histogram["SOFTMAX"] == 1
    assert integer_only_problems(flatbuffer, float_io=True) == []
    assert integer_only_problems(flatbuffer)[0].startswith("model input 'serving_default_input:0' is float32")
    report = xnnpack_partitions(flatbuffer)
    assert report.fully_delegated, report  # unlike an int8 SOFTMAX, which XNNPACK leaves out
    assert "SOFTMAX" in xnnpack_partitions(tiny.converted("plain", "int8", "uint8", "probabilities")).undelegated_ops
    # The float softmax of the int8 logits: the same top-1 as the raw int8 model, probabilities that sum to 1.
    images = tiny.images(16, seed=6)
    raw = TFLiteClassifier(tiny.converted("plain", "int8")).logits(images)
    probabilities = TFLiteClassifier(flatbuffer).logits(images)
    np.testing.assert_array_equal(np.argmax(probabilities, axis=1), np.argmax(raw, axis=1))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_probabilities_are_refused_for_a_model_that_ends_in_a_softmax():
    with pytest.raises(ConversionError, match="already ends in one"):
        to_tflite(tiny.classifier("softmax"), "none", scores="probabilities")
    with pytest.raises(ConversionError, match="Unknown scores 'softmax'; choose one of logits, probabilities"):
        to_tflite(tiny.classifier(), "none", scores="softmax")


def test_pixel_range_keeps_every_pixel_off_the_int8_rounding_boundaries():
    flatbuffer = to_tflite(tiny.classifier(), "int8", tiny.images(16, seed=3), io_dtype="float32",
                           scores="probabilities", pixel_range=(-1.0, 1.0))
    scale = first_op_output_scale(flatbuffer)
    assert scale == pytest.approx(2.0 / 255.0 * 256.0 / 255.0, rel=1e-6)
    steps = (np.arange(256) - 127.5) / 127.5 / scale
    distance_to_boundary = np.abs(np.abs(steps - np.floor(steps)) - 0.5)
    assert distance_to_boundary.min() > 1.9e-3  # ~1/512 of a step: no float rounding can flip a pixel
    with pytest.raises(ConversionError, match="pixel_range must be"):
        to_tflite(tiny.classifier(), "int8", tiny.images(4), pixel_range=(1.0, -1.0))
