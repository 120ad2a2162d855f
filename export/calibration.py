"""Post-training int8 calibration that records every activation range correctly.

TFLite's calibrator (tensorflow/lite/tools/optimize/calibration/calibrator.cc) logs each op's *inputs* again after
the op has run. When the memory planner lets the op write its output into an input's buffer (binary element-wise
ops whose input has no other consumer), that input is logged with the output's values, so its range becomes the
union of both (tensorflow/tensorflow#127842, open). In our hard-swish `(x / 6) * relu6(x + 3)` the `x / 6` tensor
then gets the range of the hard-swish output, about 6x too wide, which cost a trained MobileNetV3-Small 13 points
of int8 top-1 (docs/design.md, "Why each non-obvious lowering exists"). The same happens, milder, to residual ADDs.

So the converter is asked for its calibrated float model only (`_experimental_calibrate_only`, the path TFLite's
own QuantizationDebugger uses), every logged range is replaced by one read off a float interpreter that keeps all
tensors (`experimental_preserve_all_tensors`, no delegate, so nothing is shared or fused away), and the model is
quantized from those ranges with the converter's own MLIR quantizer.

The range of a tensor is not the plain min/max over every calibration image but the 1st percentile of the images'
minima and the 99th percentile of their maxima (`RANGE_PERCENTILE`): one image with an extreme activation no
longer widens the int8 step for all the others (measured per network in docs/design.md, same section).
(`method="nearest"`: an interpolated percentile would still let the extreme leak in.)
"""
from __future__ import annotations

from typing import Callable, Iterable

import numpy as np
import tensorflow as tf

RepresentativeDataset = Callable[[], Iterable[list[np.ndarray]]]


RANGE_PERCENTILE = 99.0
# How each activation range is chosen: "percentile" (above) for every tensor, or "mse": per tensor, the clipping
# range whose int8 grid reproduces the calibration values with the least squared error (rounding noise inside the
# range plus the clipped excess), searched on a histogram. The graph's outputs keep the percentile range under
# "mse" too: clipping the largest logit is exactly the error that changes a top-1 answer. "mse" is not the default:
# the squared error of a whole calibration set is ruled by its rare extreme values, so on trained MobileNetV3s it
# chose late-layer ranges about 3x wider than the percentile rule and the int8 model agreed less with float.
RANGE_METHODS = ("percentile", "mse")
_HISTOGRAM_BINS = 4096
_SEARCH_STEPS = 256  # candidate clip values per side


class CalibrationError(ValueError):
    """The calibration settings are not valid."""


def observed_ranges(calibrated: bytes, dataset: RepresentativeDataset, tensors: Iterable[int],
                    method: str = "percentile", keep_percentile: Iterable[int] = ()) -> dict[int, tuple]:
    """(low, high) of each tensor index over `dataset` from a float interpreter whose tensors are never shared.

    "percentile": the (100 - RANGE_PERCENTILE)th percentile of the per-image minima and the RANGE_PERCENTILEth of
    the maxima. "mse": the squared-error-optimal clipping range per tensor (a second pass over `dataset`), except
    for the tensors in `keep_percentile`."""
    if method not in RANGE_METHODS:
        raise CalibrationError(f"Unknown range method {method!r}; choose one of {', '.join(RANGE_METHODS)}.")
    interpreter = tensor_keeping_interpreter(calibrated)
    tensors = list(tensors)
    minima: list[list[float]] = []
    maxima: list[list[float]] = []
    for values in _tensor_values(interpreter, dataset, tensors):
        minima.append([float(v.min()) for v in values])
        maxima.append([float(v.max()) for v in values])
    low = np.percentile(np.asarray(minima), 100.0 - RANGE_PERCENTILE, axis=0, method="nearest")
    high = np.percentile(np.asarray(maxima), RANGE_PERCENTILE, axis=0, method="nearest")
    ranges = {index: (float(low[i]), float(high[i])) for i, index in enumerate(tensors)}
    if method == "mse":
        keep = set(keep_percentile)
        searched = [index for index in tensors if index not in keep]
        bounds = {index: (float(np.min(np.asarray(minima)[:, i])), float(np.max(np.asarray(maxima)[:, i])))
                  for i, index in enumerate(tensors)}
        counts = {index: np.zeros(_HISTOGRAM_BINS, np.int64) for index in searched}
        for values in _tensor_values(interpreter, dataset, searched):
            for index, value in zip(searched, values):
                counts[index] += np.histogram(value, _HISTOGRAM_BINS, range=_histogram_range(*bounds[index]))[0]
        for index in searched:
            ranges[index] = mse_optimal_range(counts[index], _histogram_range(*bounds[index]))
    return ranges


def mse_optimal_range(counts: np.ndarray, value_range: tuple[float, float]) -> tuple[float, float]:
    """The (low, high) int8 range, 0 inside it, that represents a histogram (`counts` of equal bins over
    `value_range`) with the least squared error: clipping error outside plus step^2 / 12 of rounding inside."""
    counts = np.asarray(counts, np.float64)
    edges = np.linspace(*value_range, len(counts) + 1)
    centers = (edges[:-1] + edges[1:]) / 2
    # Prefix sums of n, n*x, n*x^2 give the clipping error of any cut in O(1).
    n, nx, nxx = (np.concatenate([[0.0], np.cumsum(w)]) for w in (counts, counts * centers, counts * centers**2))
    lows = _candidates(value_range[0], edges, side="low")
    highs = _candidates(value_range[1], edges, side="high")
    low_cut = np.searchsorted(centers, lows, side="left")  # bins below index low_cut are clipped up to low
    high_cut = np.searchsorted(centers, highs, side="right")  # bins from high_cut on are clipped down to high
    below = nxx[low_cut] - 2 * lows * nx[low_cut] + lows**2 * n[low_cut]
    above = ((nxx[-1] - nxx[high_cut]) - 2 * highs * (nx[-1] - nx[high_cut]) + highs**2 * (n[-1] - n[high_cut]))
    inside = n[high_cut][np.newaxis, :] - n[low_cut][:, np.newaxis]
    step = (highs[np.newaxis, :] - lows[:, np.newaxis]) / 255.0
    error = below[:, np.newaxis] + above[np.newaxis, :] + np.maximum(inside, 0) * step**2 / 12.0
    best_low, best_high = np.unravel_index(np.argmin(error), error.shape)
    return float(lows[best_low]), float(highs[best_high])


def _candidates(extreme: float, edges: np.ndarray, side: str) -> np.ndarray:
    """Clip values from 0 (exclusive) to the observed extreme on one side; just 0 where that side is empty."""
    if (side == "low" and extreme >= 0) or (side == "high" and extreme <= 0):
        return np.zeros(1)
    return extreme * np.arange(1, _SEARCH_STEPS + 1) / _SEARCH_STEPS


def _histogram_range(low: float, high: float) -> tuple[float, float]:
    # Zero always inside (every int8 range holds it) and never an empty range.
    low, high = min(low, 0.0), max(high, 0.0)
    return (low, high) if high > low else (low, low + 1e-6)


def tensor_keeping_interpreter(flatbuffer: bytes):
    """An interpreter that keeps every tensor (no delegate, so nothing is shared or fused away)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(model_content=flatbuffer, experimental_preserve_all_tensors=True,
                              experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interpreter.allocate_tensors()
    return interpreter


def _tensor_values(interpreter, dataset: RepresentativeDataset, tensors: list[int]):
    """For each image of `dataset`, the values of `tensors` after running it."""
    input_index = interpreter.get_input_details()[0]["index"]
    for (image,) in dataset():
        interpreter.set_tensor(input_index, image)
        interpreter.invoke()
        yield [interpreter.get_tensor(index) for index in tensors]


def pixel_input_range(pixel_range: tuple[float, float]) -> tuple[float, float]:
    """The int8 range for a model input that is `pixel_range` = (normalized pixel 0, normalized pixel 255), widened by
    1/255 so that no pixel value falls on a rounding boundary.

    On exactly that range the int8 step is one pixel and the zero point sits half a step off, so with mean 127.5
    every pixel quantizes from x.5: two clients whose float normalization differs in the last bit (MediaPipe's
    `pixel * 2/255 - 1` and our `(pixel - 127.5) / 127.5`) round half the pixels differently, and their top-1
    differs (docs/design.md, "Outside clients"). With the step 256/255 of a pixel every pixel lands at least
    1/512 of a step from a boundary, far beyond float error; two of the 256 pixel values share a step.
    """
    low, high = pixel_range
    center, half = (low + high) / 2.0, (high - low) / 2.0 * 256.0 / 255.0
    return center - half, center + half


def correct_calibration(calibrated: bytes, dataset: RepresentativeDataset, method: str = "percentile",
                        input_range: tuple[float, float] | None = None) -> bytes:
    """The calibrated model with every per-tensor activation range re-measured (see the module docstring), and the
    model input's range set to `input_range` where given."""
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(calibrated)
    subgraph = model.subgraphs[0]
    logged = [index for index, tensor in enumerate(subgraph.tensors)
              if tensor.quantization is not None and tensor.quantization.min is not None
              and len(tensor.quantization.min) == 1]
    ranges = observed_ranges(calibrated, dataset, logged, method, keep_percentile=list(subgraph.outputs))
    for index, (low, high) in ranges.items():
        subgraph.tensors[index].quantization.min = [low]
        subgraph.tensors[index].quantization.max = [high]
    if input_range is not None:
        model_input = subgraph.tensors[subgraph.inputs[0]]
        model_input.quantization.min, model_input.quantization.max = [input_range[0]], [input_range[1]]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def calibrate(converter: tf.lite.TFLiteConverter, method: str = "percentile",
              input_range: tuple[float, float] | None = None) -> bytes:
    """The float model with corrected activation ranges attached, from `converter` (set up for int8 PTQ with its
    representative dataset): the input of `quantize_calibrated`, and the float reference of a quantization report
    (its tensors carry the names the int8 model keeps)."""
    dataset = converter.representative_dataset  # read now: convert() wraps it in a RepresentativeDataset
    converter._experimental_calibrate_only = True  # noqa: SLF001  (TFLite's QuantizationDebugger does the same)
    return correct_calibration(bytes(converter.convert()), dataset, method, input_range)


def quantize_calibrated(calibrated: bytes, io_dtype: tf.DType, float_ops: tuple[str, ...] = ()) -> bytes:
    """Full-integer int8 model from a calibrated float model, with the converter's own MLIR quantizer; `float_ops`
    (TFLite op names, e.g. SOFTMAX) are left in float."""
    from tensorflow.lite.python.convert import mlir_quantize

    return bytes(mlir_quantize(calibrated, input_data_type=io_dtype, output_data_type=io_dtype,
                               denylisted_ops=list(float_ops) or None))


def random_calibration_images(count: int, image_size: int, seed: int = 0) -> np.ndarray:
    """`count` uniform images in the models' input range [-1, 1]: int8 calibration for timing an architecture only
    (the ranges they give are meaningless for accuracy)."""
    return np.random.default_rng(seed).uniform(-1.0, 1.0, (count, image_size, image_size, 3)).astype(np.float32)
