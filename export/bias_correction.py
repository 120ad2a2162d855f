"""Empirical bias correction of an int8 model: remove the mean shift that int8 rounding puts on each channel.

Rounding weights and activations does not only add noise: it shifts each output channel's mean, and a shift is
passed on and adds up through the layers (Nagel et al., "Data-Free Quantization", 2019, empirical bias
correction). For each convolution and fully-connected op without a fused activation, in execution order, the
per-channel mean of its int8 output over a few images is compared with the float model's, and the difference is
taken off the op's int32 bias; each op is measured with the corrections before it already applied. Only bias
values change, so the graph (integer-only, one XNNPACK partition) stays as it was.

Ops with a fused ReLU are left alone: after the activation a mean difference no longer says how far the
pre-activation values moved.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np

from export.calibration import tensor_keeping_interpreter
from export.evaluate import iterate_images, quantize_input

_CORRECTED_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")


def correct_biases(int8_model: bytes, float_model: bytes, images: Iterable[np.ndarray] | np.ndarray) -> bytes:
    """`int8_model` with each correctable op's bias shifted so its per-channel output mean matches the calibrated
    `float_model` (export.convert.to_int8_with_float_reference) on `images` (normalized float32, a few dozen)."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    images = [np.asarray(image, np.float32)[np.newaxis] for image in iterate_images(images)]
    if not images:
        raise ValueError("Bias correction needs at least one image.")
    model = flatbuffer_utils.convert_bytearray_to_object(int8_model)
    subgraph = model.subgraphs[0]
    codes = {getattr(schema.BuiltinOperator, name) for name in _CORRECTED_OPS}
    float_names = {detail["name"]: detail["index"]
                   for detail in tensor_keeping_interpreter(float_model).get_tensor_details()}

    def code_of(op):
        operator_code = model.operatorCodes[op.opcodeIndex]
        return max(operator_code.builtinCode, operator_code.deprecatedBuiltinCode)

    # With float32 I/O an int8 model output is renamed ("...:01"): the DEQUANTIZE after it carries the float name.
    dequantized_as = {op.inputs[0]: subgraph.tensors[op.outputs[0]].name.decode() for op in subgraph.operators
                      if code_of(op) == schema.BuiltinOperator.DEQUANTIZE}
    targets = []  # (output tensor index, its float twin's index, bias tensor index)
    for op in subgraph.operators:
        code = code_of(op)
        activation = getattr(op.builtinOptions, "fusedActivationFunction", None)
        if code not in codes or activation != schema.ActivationFunctionType.NONE or len(op.inputs) < 3:
            continue
        output, bias = op.outputs[0], op.inputs[2]
        name = subgraph.tensors[output].name.decode()
        name = name if name in float_names else dequantized_as.get(output, name)
        if bias < 0 or subgraph.tensors[bias].type != schema.TensorType.INT32 or name not in float_names:
            continue
        targets.append((output, float_names[name], bias))
    if not targets:
        return int8_model
    float_means = _channel_means(float_model, images, [twin for _, twin, _ in targets], quantized=False)
    for (output, _, bias), float_mean in zip(targets, float_means):
        current = bytes(flatbuffer_utils.convert_object_to_bytearray(model))
        [int8_mean] = _channel_means(current, images, [output], quantized=True)
        bias_tensor = subgraph.tensors[bias]
        buffer = model.buffers[bias_tensor.buffer]
        values = np.frombuffer(bytes(bytearray(buffer.data)), np.int32).copy()
        scales = np.broadcast_to(np.asarray(bias_tensor.quantization.scale, np.float64), values.shape)
        shift = np.round((int8_mean - float_mean) / scales)
        values = np.clip(values - shift, np.iinfo(np.int32).min, np.iinfo(np.int32).max).astype(np.int32)
        buffer.data = np.frombuffer(values.tobytes(), np.uint8)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _channel_means(flatbuffer: bytes, images: list[np.ndarray], tensors: list[int], quantized: bool):
    """Per-channel (last axis) means of `tensors` over `images`, dequantized for an int8 model (whose input may be
    int8 or, as the pipeline ships it, float32)."""
    interpreter = tensor_keeping_interpreter(flatbuffer)
    model_input = interpreter.get_input_details()[0]
    integer_input = np.dtype(model_input["dtype"]) != np.float32
    details = {detail["index"]: detail for detail in interpreter.get_tensor_details()}
    sums = [None] * len(tensors)
    for image in images:
        interpreter.set_tensor(model_input["index"], quantize_input(image, model_input) if integer_input else image)
        interpreter.invoke()
        for i, index in enumerate(tensors):
            values = interpreter.get_tensor(index).astype(np.float64)
            values = values.reshape(-1, values.shape[-1]).mean(axis=0)
            sums[i] = values if sums[i] is None else sums[i] + values
    means = [total / len(images) for total in sums]
    if quantized:
        means = [(mean - details[index]["quantization"][1]) * details[index]["quantization"][0]
                 for mean, index in zip(means, tensors)]
    return means
