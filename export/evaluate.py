"""Run a .tflite classifier on the host exactly as the app does, and score it.

Images go in one at a time at batch 1 (the models are converted with a fixed batch of 1), through the default
LiteRT interpreter with XNNPACK, as float32 already normalized like the training data. For an int8/uint8 model
the input is quantized with the input tensor's own scale and zero point (rounding half away from zero, like
TFLite's quantize kernel and the Android app) and the output is dequantized with the output tensor's, so scores
from every precision are comparable float logits.
"""
from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np
from ai_edge_litert.interpreter import Interpreter

from export.graph import ModelSource, read_flatbuffer

_INTEGER_TYPES = (np.int8, np.uint8, np.int16)


class TFLiteClassifier:
    """A batch-1 TFLite classifier: `logits(images)` returns float logits, one row per image."""

    def __init__(self, source: ModelSource, num_threads: int = 1):
        self._interpreter = Interpreter(model_content=read_flatbuffer(source), num_threads=num_threads)
        self._interpreter.allocate_tensors()
        inputs = self._interpreter.get_input_details()
        outputs = self._interpreter.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ValueError(f"Expected one input and one output, got {len(inputs)} and {len(outputs)}.")
        self._input, self._output = inputs[0], outputs[0]
        if self._input["shape"][0] != 1 or len(self._input["shape"]) != 4:
            raise ValueError(
                f"Expected a [1, H, W, C] input, got {list(self._input['shape'])}; convert with export.convert."
            )
        self._input_quantization = _affine(self._input)
        self._output_quantization = _affine(self._output)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The model's input shape, batch included: (1, H, W, C)."""
        return tuple(int(dim) for dim in self._input["shape"])

    @property
    def input_dtype(self) -> np.dtype:
        """float32 for float models, int8 or uint8 for full-integer ones."""
        return np.dtype(self._input["dtype"])

    @property
    def num_classes(self) -> int:
        """The size of the output vector."""
        return int(np.prod(self._output["shape"][1:]))

    def logits(self, images: Iterable[np.ndarray] | np.ndarray) -> np.ndarray:
        """Float logits, shape [N, num_classes], for normalized float32 images ([N, H, W, C] or an iterable)."""
        rows = []
        for image in iterate_images(images):
            rows.append(self._run(image))
        if not rows:
            return np.zeros((0, self.num_classes), np.float32)
        return np.stack(rows)

    def _run(self, image: np.ndarray) -> np.ndarray:
        image = np.asarray(image, dtype=np.float32)
        if image.shape == self.input_shape[1:]:
            image = image[np.newaxis]
        if image.shape != self.input_shape:
            raise ValueError(f"An image has shape {image.shape}; the model takes {self.input_shape[1:]}.")
        self._interpreter.set_tensor(self._input["index"], self._quantize(image))
        self._interpreter.invoke()
        output = self._interpreter.get_tensor(self._output["index"]).reshape(-1)
        return self._dequantize(output)

    def _quantize(self, image: np.ndarray) -> np.ndarray:
        dtype = self.input_dtype
        if dtype.type not in _INTEGER_TYPES:
            return image.astype(dtype, copy=False)
        return quantize_input(image, self._input)

    def _dequantize(self, output: np.ndarray) -> np.ndarray:
        if output.dtype.type not in _INTEGER_TYPES:
            return output.astype(np.float32)
        scale, zero_point = self._output_quantization
        return ((output.astype(np.float32) - zero_point) * scale).astype(np.float32)


def quantize_input(values: np.ndarray, details: dict) -> np.ndarray:
    """Float values in the integer type of an input tensor (`details` from the interpreter), with its scale and
    zero point, rounding half away from zero like TFLite's quantize kernel and the Android app."""
    scale, zero_point = _affine(details)
    dtype = np.dtype(details["dtype"])
    scaled = np.asarray(values, np.float32) / scale
    rounded = np.sign(scaled) * np.floor(np.abs(scaled) + 0.5)  # half away from zero, as std::round
    info = np.iinfo(dtype)
    return np.clip(rounded + zero_point, info.min, info.max).astype(dtype)


def top1_accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of rows whose arg-max equals the integer label."""
    logits, labels = np.asarray(logits), np.asarray(labels).reshape(-1)
    if logits.shape[0] != labels.shape[0]:
        raise ValueError(f"{logits.shape[0]} rows of logits but {labels.shape[0]} labels.")
    if labels.size == 0:
        raise ValueError("No examples to score.")
    return float(np.mean(np.argmax(logits, axis=-1) == labels))


def agreement(logits_a: np.ndarray, logits_b: np.ndarray) -> float:
    """Fraction of rows where both models predict the same top-1 class (e.g. int8 vs float)."""
    logits_a, logits_b = np.asarray(logits_a), np.asarray(logits_b)
    if logits_a.shape[0] != logits_b.shape[0]:
        raise ValueError(f"Cannot compare {logits_a.shape[0]} predictions with {logits_b.shape[0]}.")
    if logits_a.shape[0] == 0:
        raise ValueError("No predictions to compare.")
    return float(np.mean(np.argmax(logits_a, axis=-1) == np.argmax(logits_b, axis=-1)))


def _affine(details: dict) -> tuple[float, int] | None:
    if np.dtype(details["dtype"]).type not in _INTEGER_TYPES:
        return None
    scales = details["quantization_parameters"]["scales"]
    zero_points = details["quantization_parameters"]["zero_points"]
    if len(scales) != 1 or not scales[0] > 0:
        raise ValueError(
            f"Tensor {details['name']!r} is {np.dtype(details['dtype'])} without one positive per-tensor scale "
            f"(scales={list(scales)}); it cannot be fed from float images."
        )
    return float(scales[0]), int(zero_points[0])


def iterate_images(images) -> Iterator[np.ndarray]:
    """One [H, W, C] image at a time from an [N, H, W, C] array, a tf.data.Dataset or any iterable of images,
    of batches, or of (images, labels) pairs."""
    if hasattr(images, "as_numpy_iterator"):  # tf.data.Dataset
        images = images.as_numpy_iterator()
    if isinstance(images, np.ndarray) or hasattr(images, "numpy"):  # an array or a tf.Tensor
        images = np.asarray(images)
        yield from (images if images.ndim == 4 else images[np.newaxis])
        return
    for item in images:
        if isinstance(item, (tuple, list)):  # (images, labels): keep the images
            item = item[0]
        item = np.asarray(item)
        if item.ndim == 4:
            yield from item
        else:
            yield item
