"""Keras model -> TFLite (LiteRT) flatbuffer, in one of four precisions, from a fixed batch-1 signature.

Why a concrete function and not `TFLiteConverter.from_keras_model`: the latter keeps the batch dimension dynamic,
and every Keras `Reshape` then lowers to SHAPE -> STRIDED_SLICE -> PACK -> RESHAPE, ops XNNPACK does not take
(96 extra ops and 33 delegate partitions in a ShuffleNet; docs/design.md, "Why each non-obvious lowering exists"). With a `[1, H, W, C]` signature every
shape is static and those ops fold away.

Quantization modes:
- `"none"`: float32 weights and activations.
- `"float16"`: float16 weights, dequantized to float32 when the model loads (half the file; CPU computes float32).
- `"dynamic"`: int8 weights, float activations (dynamic-range quantization); no calibration data needed.
- `"int8"`: full-integer; only TFLITE_BUILTINS_INT8 ops inside the graph. The model's input/output (`io_dtype`)
  are int8 or uint8, or float32: then one QUANTIZE at the input and one DEQUANTIZE at the output convert at the
  edges (both on XNNPACK), which is what MediaPipe Tasks' ImageClassifier loads as it is (it refuses int8
  tensors; README, "Using the model in an app"). Post-training quantization calibrates activation ranges on
  `representative_images` (float32, already normalized the way the model was trained). A quantization-aware-trained
  model (TF-MOT `quantize_model`) already carries its ranges in fake-quant ops, so it needs no calibration data.
`sparse=True` adds `Optimize.EXPERIMENTAL_SPARSITY`: pruned weights are stored sparse, which is what lets
XNNPACK's sparse fp32 kernels run (docs/design.md, "Sparsity and slimming").

Scores (`scores`): the networks output logits; `"probabilities"` appends a softmax to the converted graph, so a
client shows scores in [0, 1] without knowing the model. In a post-training int8 model with float32 output the
softmax stays float, after the DEQUANTIZE: XNNPACK runs float SOFTMAX but not int8 SOFTMAX, and a float softmax of
the int8 logits keeps their top-1 (an int8 softmax rounds probabilities to steps of 1/256, which ties close
classes). A quantization-aware model's converter quantizes the softmax anyway (it has no per-op opt-out), so there
the SOFTMAX is int8 and runs off XNNPACK (the DEQUANTIZE after it becomes a second partition).
"""
from __future__ import annotations

import contextlib
import re
from typing import Iterable, Iterator

import numpy as np
import tensorflow as tf
import tf_keras as keras

from export.calibration import RANGE_METHODS, calibrate, pixel_input_range, quantize_calibrated
from export.choices import IO_DTYPES, SCORES
from export.choices import QUANTIZATIONS as QUANTIZATION_MODES
from export.evaluate import iterate_images
from export.graph import integer_only_problems
from models.layers import fused_hard_swish


# TF-MOT's wrappers, matched by class name so conversion does not import TF-MOT.
_QAT_LAYER_CLASSES = frozenset({"QuantizeLayer", "QuantizeWrapper", "QuantizeWrapperV2"})
_PRUNING_LAYER_CLASSES = frozenset({"PruneLowMagnitude"})


class ConversionError(RuntimeError):
    """The TFLite converter rejected the model, or the arguments cannot produce the requested model."""


def is_quantization_aware(model: keras.Model) -> bool:
    """True for a TF-MOT quantization-aware-trained model (it carries its own activation ranges)."""
    return any(type(layer).__name__ in _QAT_LAYER_CLASSES for layer in _all_layers(model))


def fixed_input_shape(model: keras.Model) -> tuple[int, int, int, int]:
    """The model's single input shape with the batch fixed at 1; every other dimension must be known."""
    if len(model.inputs) != 1:
        raise ConversionError(f"Expected a model with one image input, got {len(model.inputs)} inputs.")
    shape = tuple(model.inputs[0].shape)
    if any(dim is None for dim in shape[1:]):
        raise ConversionError(
            f"The model's input shape {shape} has unknown dimensions; build it with a fixed input size "
            "(e.g. input_shape=(224, 224, 3)) so the TFLite graph is static."
        )
    return (1, *(int(dim) for dim in shape[1:]))


def to_tflite(
    model: keras.Model,
    quantization: str,
    representative_images: Iterable[np.ndarray] | np.ndarray | None = None,
    io_dtype: str = "int8",
    sparse: bool = False,
    scores: str = "logits",
    pixel_range: tuple[float, float] | None = None,
    range_method: str = "percentile",
) -> bytes:
    """Convert `model` at batch 1 to a TFLite flatbuffer in `quantization` mode (`none|float16|dynamic|int8`).

    `pixel_range`: the model input's values for pixels 0 and 255, e.g. (-1.0, 1.0) for (pixel - 127.5) / 127.5;
    post-training int8 then quantizes the input on that range (export.calibration.pixel_input_range), so every
    client that normalizes pixels the same way feeds the same int8 input (a quantization-aware model's input
    fake-quant is set to that range for the conversion). Without it the input's range is measured (or learned).
    `range_method` (export.calibration.RANGE_METHODS) chooses post-training int8's activation ranges.
    """
    return _convert(model, quantization, representative_images, io_dtype, sparse, scores, pixel_range,
                    range_method)[0]


def to_int8_with_float_reference(
    model: keras.Model,
    representative_images: Iterable[np.ndarray] | np.ndarray,
    io_dtype: str = "int8",
    range_method: str = "percentile",
    scores: str = "logits",
    pixel_range: tuple[float, float] | None = None,
) -> tuple[bytes, bytes]:
    """Post-training int8 conversion as `to_tflite` does it, and the calibrated float model it was quantized from:
    the same graph in float32, whose tensors carry the names the int8 model keeps (a quantization report's
    reference)."""
    if representative_images is None:
        raise ConversionError("to_int8_with_float_reference needs representative_images to calibrate.")
    if is_quantization_aware(model):
        raise ConversionError("A quantization-aware model has no calibrated float reference; use to_tflite.")
    return _convert(model, "int8", representative_images, io_dtype, False, scores, pixel_range, range_method)


def _convert(model, quantization, representative_images, io_dtype, sparse, scores, pixel_range,
             range_method) -> tuple[bytes, bytes | None]:
    """The flatbuffer, and for post-training int8 also the calibrated float model (else None)."""
    if range_method not in RANGE_METHODS:
        raise ConversionError(f"Unknown range_method {range_method!r}; choose one of {', '.join(RANGE_METHODS)}.")
    if quantization not in QUANTIZATION_MODES:
        raise ConversionError(f"Unknown quantization {quantization!r}; choose one of {', '.join(QUANTIZATION_MODES)}.")
    if io_dtype not in IO_DTYPES:
        raise ConversionError(f"Unknown io_dtype {io_dtype!r}; choose one of {', '.join(IO_DTYPES)}.")
    if pixel_range is not None and not (len(pixel_range) == 2 and pixel_range[0] < pixel_range[1]):
        raise ConversionError(f"pixel_range must be (value of pixel 0, value of pixel 255), low < high; got {pixel_range!r}.")
    if scores not in SCORES:
        raise ConversionError(f"Unknown scores {scores!r}; choose one of {', '.join(SCORES)}.")
    probabilities = scores == "probabilities"
    if probabilities and _ends_in_softmax(model):
        raise ConversionError(
            "scores='probabilities' appends a softmax, but the model already ends in one; convert it with "
            "scores='logits' (its outputs are probabilities already)."
        )
    input_shape = fixed_input_shape(model)
    if any(type(layer).__name__ in _PRUNING_LAYER_CLASSES for layer in _all_layers(model)):
        raise ConversionError(
            "The model still has TF-MOT pruning wrappers; call tfmot.sparsity.keras.strip_pruning(model) first "
            "(the wrappers' masks and step counters do not belong in the deployed graph)."
        )
    quantization_aware = is_quantization_aware(model)
    if quantization_aware and quantization != "int8":
        # Measured: with Optimize.DEFAULT the fake-quant ops make every op int8 anyway (float io only); without
        # it they become QUANTIZE/DEQUANTIZE pairs that split the graph into XNNPACK partitions.
        raise ConversionError(
            f"A quantization-aware (TF-MOT quantize_model) model converts only with quantization='int8', not "
            f"{quantization!r}; convert the float model from before quantize_model for float32/float16/dynamic."
        )
    if quantization == "int8" and representative_images is None and not quantization_aware:
        raise ConversionError(
            "int8 post-training quantization needs representative_images (a few dozen to a few hundred "
            "training images, float32, normalized as in training) to calibrate activation ranges."
        )

    if quantization == "int8":
        converter = _converter_for(model, input_shape, probabilities)
    else:
        with fused_hard_swish():  # float activations: the one fused op is faster (models/layers.py)
            converter = _converter_for(model, input_shape, probabilities)
    errors: list[ConversionError] = []
    optimizations = []
    if quantization != "none":
        optimizations.append(tf.lite.Optimize.DEFAULT)
    if sparse:
        optimizations.append(tf.lite.Optimize.EXPERIMENTAL_SPARSITY)
    converter.optimizations = optimizations
    if quantization == "float16":
        converter.target_spec.supported_types = [tf.float16]
    elif quantization == "int8":
        converter.inference_input_type = tf.as_dtype(io_dtype)
        converter.inference_output_type = tf.as_dtype(io_dtype)
        if representative_images is not None:
            # With a QAT model the fake-quant ranges win over calibration (checked: same scales either way).
            converter.representative_dataset = _representative_dataset(representative_images, input_shape, errors)
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        # else: a QAT model without images. TF 2.21's converter rejects TFLITE_BUILTINS_INT8 without a
        # representative dataset even for QAT models (its metrics hook builds QuantizationMode without the graph,
        # so it cannot see the fake-quant ops), so the default op set is kept; the QAT ranges still make every op
        # int8, and the check below catches any op QAT left in float.
    calibrated = None
    try:
        if quantization == "int8" and representative_images is not None and not quantization_aware:
            # TFLite's calibrator mis-records some ranges (export/calibration.py): re-measured before quantizing.
            float_softmax = probabilities and io_dtype == "float32"
            calibrated = calibrate(converter, range_method,
                                   input_range=_input_range(pixel_range, io_dtype))
            flatbuffer = quantize_calibrated(calibrated, tf.as_dtype(io_dtype),
                                             float_ops=("SOFTMAX",) if float_softmax else ())
        else:
            qat_input_range = _input_range(pixel_range, io_dtype) if quantization_aware else None
            with _input_quantizer_range(model, qat_input_range):
                flatbuffer = bytes(converter.convert())
    except Exception as error:  # the converter raises ConverterError, ValueError, RuntimeError, ...
        if errors:  # our own complaint about the representative images, raised inside the converter
            raise errors[0] from error
        raise ConversionError(_explain(error, quantization, quantization_aware)) from error
    if quantization == "int8" and representative_images is None:
        _check_integer_only(flatbuffer, float_io=io_dtype == "float32")
    return flatbuffer, calibrated


def _input_range(pixel_range: tuple[float, float] | None, io_dtype: str) -> tuple[float, float] | None:
    """The int8 input's range: a float32 input's is widened off the rounding boundaries
    (export.calibration.pixel_input_range); an integer input takes the pixels as they are, so its quantization must
    be the normalization exactly (scale 1/std)."""
    if pixel_range is None:
        return None
    return pixel_input_range(pixel_range) if io_dtype == "float32" else (float(pixel_range[0]), float(pixel_range[1]))


def _converter_for(model: keras.Model, input_shape: tuple[int, ...], probabilities: bool) -> tf.lite.TFLiteConverter:
    input_dtype = model.inputs[0].dtype

    @tf.function(input_signature=[tf.TensorSpec(input_shape, input_dtype, name="input")])
    def serving(images):
        outputs = model(images, training=False)
        return tf.nn.softmax(outputs) if probabilities else outputs

    concrete = serving.get_concrete_function()
    # The converter saves the trackable object it is given before freezing. Given the Keras model, that save
    # re-traces every layer (30-80 s for a 32 px network); a bare module holding only the variables keeps them
    # alive for freezing at a fraction of the cost, with the same graph.
    variables = tf.Module()
    variables.weights = list(model.variables)
    return tf.lite.TFLiteConverter.from_concrete_functions([concrete], variables)


def _representative_dataset(images, input_shape: tuple[int, ...], errors: list[ConversionError]):
    """The converter calls this once and iterates; every item is one [1, H, W, C] float32 image.

    Errors are also appended to `errors`, because the converter re-raises them wrapped in its own types.
    """

    def fail(message: str) -> ConversionError:
        errors.append(ConversionError(message))
        return errors[-1]

    def generate() -> Iterator[list[np.ndarray]]:
        count = 0
        for image in iterate_images(images):
            array = np.asarray(image, dtype=np.float32)
            if array.shape == input_shape[1:]:
                array = array[np.newaxis]
            if array.shape != input_shape:
                raise fail(
                    f"A representative image has shape {array.shape}; the model takes {input_shape[1:]} "
                    f"(or {input_shape} with the batch)."
                )
            count += 1
            yield [array]
        if count == 0:
            raise fail("representative_images is empty; int8 calibration needs at least one image.")

    return generate


def _check_integer_only(flatbuffer: bytes, float_io: bool) -> None:
    problems = integer_only_problems(flatbuffer, float_io=float_io)
    if problems:
        raise ConversionError(
            "The quantization-aware model did not convert to integer-only ops: "
            + "; ".join(problems[:5])
            + ". Give every custom layer a TF-MOT QuantizeConfig, or pass representative_images so the converter "
            "calibrates the rest and enforces int8-only ops."
        )


def _explain(error: Exception, quantization: str, quantization_aware: bool) -> str:
    first_lines = _summarize(str(error).strip() or type(error).__name__)
    if quantization == "int8":
        hint = (
            "Full-integer conversion allows only TFLite builtin int8 ops: an op without an int8 kernel (a custom "
            "layer's tf.* call, a float-only op) fails here. Rewrite that layer with int8-capable ops, or "
            "convert with quantization='dynamic' or 'float16'."
        )
        if quantization_aware:
            hint += " For a QAT model, check every custom layer has a QuantizeConfig."
    elif quantization in ("float16", "dynamic"):
        hint = "Check that the model converts with quantization='none' first; the failing op is named above."
    else:
        hint = (
            "An op has no TFLite builtin kernel. Replace it with Keras layers / tf ops that TFLite supports "
            "(see the op named above); the pipeline does not enable SELECT_TF_OPS because the app cannot run them."
        )
    return f"TFLite conversion failed in quantization={quantization!r} mode: {first_lines}\nHow to fix: {hint}"


def _summarize(message: str) -> str:
    """The converter's errors carry pages of MLIR locations; keep the lines that name the failing ops."""
    unsupported = sorted(set(re.findall(r"'tf\.(\w+)' op is neither a custom op nor a flex op", message)))
    if unsupported:
        return f"TensorFlow ops with no TFLite builtin kernel: {', '.join(unsupported)}."
    lines = [line.strip() for line in message.splitlines() if line.strip() and "loc(" not in line]
    return "\n".join(line[:300] for line in lines[:6])


@contextlib.contextmanager
def _input_quantizer_range(model: keras.Model, input_range: tuple[float, float] | None):
    """For the conversion, a QAT model's input fake-quant (the QuantizeLayer on the model input) set to
    `input_range`, the way post-training int8 pins it (export/calibration.py); restored afterwards."""
    quantizers = [layer for layer in model.layers
                  if type(layer).__name__ == "QuantizeLayer" and layer.input is model.inputs[0]]
    variables = [weight for layer in quantizers for weight in layer.weights
                 if weight.name.endswith(("_min:0", "_max:0"))]
    saved = [weight.numpy() for weight in variables]
    try:
        if input_range is not None:
            for weight in variables:
                weight.assign(input_range[0] if weight.name.endswith("_min:0") else input_range[1])
        yield
    finally:
        for weight, value in zip(variables, saved):
            weight.assign(value)


def _ends_in_softmax(model: keras.Model) -> bool:
    last = model.layers[-1] if model.layers else None
    activation = getattr(last, "activation", None)
    return isinstance(last, keras.layers.Softmax) or getattr(activation, "__name__", "") == "softmax"


def _all_layers(model: keras.Model):
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)
