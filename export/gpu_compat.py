"""Which ops of a .tflite model the TFLite GPU delegate would reject, and why.

Two sources, merged per op:
- The converter's model analyzer (`tf.lite.experimental.Analyzer.analyze(..., gpu_compatibility=True)`; LiteRT
  ships the same analyzer). Its per-op GPU check was removed upstream in TF 2.19 (tensorflow/tensorflow#77042):
  TF 2.21 and LiteRT 2.22 print "Your model looks compatible with GPU delegate" for any model, even one with a
  Flex op or TOPK_V2. Its "GPU COMPATIBILITY WARNING" lines are still parsed, so a runtime that brings the check
  back is heard.
- Our own reading of the flatbuffer against the GPU delegate's documented limits (`_SUPPORTED_OPS` and
  `_op_problems`): the op set and per-op constraints its compatibility checker enforced before the removal, plus
  the delegate's tensor layout, BHWC, which has no room for a runtime tensor of more than 4 dimensions.

A static check cannot promise the delegate will take a model on a given phone (driver limits, memory), only that
nothing in the graph is known to be refused; the delegate's own log on the device is the final word.
"""
from __future__ import annotations

import dataclasses
import os
import re

from ai_edge_litert import schema_py_generated as schema

from export.graph import ModelSource, op_name, read_flatbuffer, tensor_name, tensor_type


# The builtin ops the GPU delegate's compatibility checker accepted (each still subject to `_op_problems`).
_SUPPORTED_OPS = frozenset({
    "ABS", "ADD", "ADD_N", "ATAN2", "AVERAGE_POOL_2D", "BATCH_MATMUL", "CAST", "CEIL", "CONCATENATION", "CONV_2D",
    "COS", "CUMSUM", "DENSIFY", "DEPTHWISE_CONV_2D", "DEPTH_TO_SPACE", "DEQUANTIZE", "DIV", "DYNAMIC_UPDATE_SLICE",
    "ELU", "EMBEDDING_LOOKUP", "EQUAL", "EXP", "FLOOR", "FLOOR_DIV", "FLOOR_MOD", "FULLY_CONNECTED", "GATHER",
    "GELU", "GREATER", "GREATER_EQUAL", "HARD_SWISH", "LEAKY_RELU", "LESS", "LESS_EQUAL", "LOG", "LOGICAL_AND",
    "LOGISTIC", "LSTM", "MAXIMUM", "MAX_POOL_2D", "MEAN", "MINIMUM", "MIRROR_PAD", "MUL", "NEG", "NOT_EQUAL",
    "ONE_HOT", "PACK", "PAD", "PADV2", "POW", "PRELU", "QUANTIZE", "REDUCE_MAX", "REDUCE_MIN", "REDUCE_PROD",
    "RELU", "RELU6", "RELU_N1_TO_1", "RESHAPE", "RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR", "RSQRT", "SELECT",
    "SELECT_V2", "SIGN", "SIN", "SLICE", "SOFTMAX", "SPACE_TO_DEPTH", "SPLIT", "SPLIT_V", "SQRT", "SQUARE",
    "SQUARED_DIFFERENCE", "STABLEHLO_CLAMP", "STRIDED_SLICE", "SUB", "SUM", "TANH", "TILE", "TRANSPOSE",
    "TRANSPOSE_CONV",
})
# Custom ops the delegate implements itself (MediaPipe's segmentation and pose models use them).
_SUPPORTED_CUSTOM_OPS = frozenset({"Convolution2DTransposeBias", "MaxPoolingWithArgmax2D", "MaxUnpooling2D", "Resampler"})
_MAX_RANK = 4  # BHWC
_REDUCTIONS = ("MEAN", "SUM", "REDUCE_MAX", "REDUCE_MIN", "REDUCE_PROD")
_FLOAT_TYPES = ("float32", "float16")
_WARNING = "GPU COMPATIBILITY WARNING: "
_ANALYZER_OP_LINE = re.compile(r"^\s+Op#(\d+) (\S+?)\(")
_ANALYZER_SUBGRAPH_LINE = re.compile(r"^Subgraph#(\d+)\b")


class GpuCompatibilityError(ValueError):
    """The model could not be read, so its GPU compatibility is unknown."""


@dataclasses.dataclass(frozen=True)
class GpuRejection:
    """One op the GPU delegate would leave to the CPU: its name, position and the reason(s)."""

    op: str
    index: int
    subgraph: int
    message: str


@dataclasses.dataclass(frozen=True)
class GpuCompatibility:
    """The verdict for one model: `compatible` when no op is rejected, else `rejected` says which and why."""

    rejected: tuple[GpuRejection, ...]
    total_ops: int

    @property
    def compatible(self) -> bool:
        """True when every op of every subgraph can run on the GPU delegate."""
        return not self.rejected

    def rejected_op_counts(self) -> dict[str, int]:
        """Rejected op name -> how many, sorted by name."""
        counts: dict[str, int] = {}
        for rejection in self.rejected:
            counts[rejection.op] = counts.get(rejection.op, 0) + 1
        return dict(sorted(counts.items()))

    def summary(self) -> str:
        """One line for a report table: `GPU: all ops` or `GPU: 3 ops rejected (SHAPE×2, PACK)`."""
        if self.compatible:
            return "GPU: all ops"
        ops = ", ".join(f"{op}×{count}" if count > 1 else op for op, count in self.rejected_op_counts().items())
        return f"GPU: {len(self.rejected)} op{'s' if len(self.rejected) > 1 else ''} rejected ({ops})"

    def as_dict(self) -> dict:
        """A JSON-ready dict (for metrics.json and bench.json)."""
        return {
            "compatible": self.compatible,
            "total_ops": self.total_ops,
            "rejected_ops": self.rejected_op_counts(),
            "rejected": [dataclasses.asdict(rejection) for rejection in self.rejected],
            "summary": self.summary(),
        }


def check_gpu_compatibility(source: ModelSource) -> GpuCompatibility:
    """The ops of a .tflite model (path or bytes) that the TFLite GPU delegate would reject, with the reasons."""
    data = _read(source)
    model = schema.Model.GetRootAs(data, 0)
    reasons: dict[tuple[int, int], list[str]] = {}
    names: dict[tuple[int, int], str] = {}
    total_ops = 0
    for subgraph_index in range(model.SubgraphsLength()):
        subgraph = model.Subgraphs(subgraph_index)
        total_ops += subgraph.OperatorsLength()
        for op_index in range(subgraph.OperatorsLength()):
            operator = subgraph.Operators(op_index)
            names[(subgraph_index, op_index)] = op_name(model, operator)
            problems = _op_problems(model, subgraph, operator, names[(subgraph_index, op_index)])
            if problems:
                reasons[(subgraph_index, op_index)] = problems
    for rejection in analyzer_gpu_warnings(data):
        key = (rejection.subgraph, rejection.index)
        names.setdefault(key, rejection.op)
        if rejection.message not in reasons.get(key, []):
            reasons.setdefault(key, []).append(rejection.message)
    rejected = tuple(
        GpuRejection(op=names[key], index=key[1], subgraph=key[0], message="; ".join(messages))
        for key, messages in sorted(reasons.items())
    )
    return GpuCompatibility(rejected=rejected, total_ops=total_ops)


def analyzer_gpu_warnings(source: ModelSource) -> list[GpuRejection]:
    """The per-op "GPU COMPATIBILITY WARNING" lines of the converter's model analyzer (none in TF 2.19+)."""
    return parse_analyzer_report(_analyzer_report(_read(source)))


def parse_analyzer_report(text: str) -> list[GpuRejection]:
    """Per-op GPU warnings from the analyzer's text: each warning line follows the `Op#N NAME(...)` it is about."""
    rejections = []
    subgraph, op_index, current_op = 0, None, None
    for line in text.splitlines():
        if match := _ANALYZER_SUBGRAPH_LINE.match(line):
            subgraph, op_index, current_op = int(match.group(1)), None, None
        elif match := _ANALYZER_OP_LINE.match(line):
            op_index, current_op = int(match.group(1)), match.group(2)
        elif line.startswith(_WARNING) and op_index is not None:
            if line.startswith(f"{_WARNING}Subgraph#"):  # the per-subgraph summary, not an op
                continue
            rejections.append(GpuRejection(op=current_op, index=op_index, subgraph=subgraph,
                                           message=line[len(_WARNING):].strip()))
    return rejections


def _analyzer_report(data: bytes) -> str:
    # The analyzer's Python entry point only prints; its wrapper returns the same text.
    try:
        from ai_edge_litert import _pywrap_analyzer_wrapper as analyzer
    except ImportError:  # a LiteRT build without it: TensorFlow's copy of the same analyzer
        from tensorflow.lite.python.analyzer_wrapper import _pywrap_analyzer_wrapper as analyzer
    return analyzer.ModelAnalyzer(data, False, True)


def _read(source: ModelSource) -> bytes:
    name = "the given bytes" if isinstance(source, (bytes, bytearray)) else os.fspath(source)
    try:
        data = read_flatbuffer(source)
    except OSError as error:
        raise GpuCompatibilityError(
            f"Cannot read {name} ({error.strerror or error}); pass the path of an existing .tflite file."
        ) from error
    if len(data) < 8 or not schema.Model.ModelBufferHasIdentifier(data, 0):
        raise GpuCompatibilityError(f"{name} is not a TFLite flatbuffer (no 'TFL3' identifier); pass a .tflite model.")
    return data


def _op_problems(model: schema.Model, subgraph: schema.SubGraph, operator: schema.Operator, name: str) -> list[str]:
    """Why the GPU delegate would refuse this op; empty when nothing known stops it."""
    if name.startswith("CUSTOM:"):
        custom = name.split(":", 1)[1]
        if custom not in _SUPPORTED_CUSTOM_OPS:
            return [f"custom op {custom} has no GPU kernel"]
        return []
    if name not in _SUPPORTED_OPS:
        return [f"{name} has no GPU delegate kernel"]
    inputs = [index for index in operator.InputsAsNumpy().tolist() if index >= 0] if operator.InputsLength() else []
    outputs = operator.OutputsAsNumpy().tolist() if operator.OutputsLength() else []
    problems = []
    for tensor_index in [t for t in inputs if not _is_constant(model, subgraph, t)] + outputs:
        rank = subgraph.Tensors(tensor_index).ShapeLength()
        if rank > _MAX_RANK:
            problems.append(
                f"tensor {tensor_name(subgraph, tensor_index)!r} is {rank}-D; the GPU delegate lays tensors out "
                f"as BHWC (at most 4-D)"
            )
            break
    problems += _constraint_problems(model, subgraph, operator, name, inputs)
    return problems


def _constraint_problems(model, subgraph, operator, name: str, inputs: list[int]) -> list[str]:
    """The per-op limits of the delegate's compatibility checker that real classifiers can run into."""
    def shape(tensor_index: int) -> list[int]:
        tensor = subgraph.Tensors(tensor_index)
        return tensor.ShapeAsNumpy().tolist() if tensor.ShapeLength() else []

    def dtype(tensor_index: int) -> str:
        return tensor_type(subgraph, tensor_index)

    if name in ("STRIDED_SLICE", "SLICE"):
        problems = []
        if len(shape(inputs[0])) not in (3, 4):
            problems.append(f"{name} runs only on 3-D or 4-D tensors, this input is {len(shape(inputs[0]))}-D")
        if name == "STRIDED_SLICE":
            options = _options(operator, schema.StridedSliceOptions)
            masks = {"ellipsis_mask": "EllipsisMask", "new_axis_mask": "NewAxisMask", "shrink_axis_mask": "ShrinkAxisMask"}
            for mask, getter in masks.items():
                if options is not None and getattr(options, getter)():
                    problems.append(f"STRIDED_SLICE with a non-zero {mask} is not supported")
        return problems
    if name in ("PAD", "PADV2", "MIRROR_PAD"):
        paddings = shape(inputs[1]) if len(inputs) > 1 else []
        problems = []
        if len(paddings) != 2 or paddings[0] not in (3, 4):
            problems.append(f"{name} pads only 3-D or 4-D tensors (paddings {paddings})")
        options = _options(operator, schema.MirrorPadOptions) if name == "MIRROR_PAD" else None
        if options is not None and options.Mode() != schema.MirrorPadMode.REFLECT:
            problems.append("MIRROR_PAD runs only in REFLECT mode")
        return problems
    if name == "SOFTMAX":
        options = _options(operator, schema.SoftmaxOptions)
        if options is not None and options.Beta() != 1.0:
            return [f"SOFTMAX with beta {options.Beta()} (only 1.0 is supported)"]
    if name == "DEPTHWISE_CONV_2D":
        options = _options(operator, schema.DepthwiseConv2DOptions)
        channels = shape(inputs[0])[-1] if shape(inputs[0]) else None
        if options is not None and options.DepthMultiplier() != 1 and channels != 1:
            return [f"DEPTHWISE_CONV_2D with depth multiplier {options.DepthMultiplier()} on {channels} channels"]
    if name in _REDUCTIONS:
        if len(inputs) < 2 or not _is_constant(model, subgraph, inputs[1]) or dtype(inputs[1]) != "int32":
            return [f"{name} needs constant int32 axes"]
    if name == "GATHER":
        problems = []
        if dtype(inputs[0]) == "int32":
            problems.append("GATHER of an int32 tensor is not supported")
        if len(shape(inputs[1])) != 1 or dtype(inputs[1]) != "int32":
            problems.append("GATHER takes only 1-D int32 indices")
        return problems
    if name == "ADD_N" and len(inputs) != 2:
        return [f"ADD_N takes exactly 2 inputs, this one {len(inputs)}"]
    if name == "CAST":
        pair = (dtype(inputs[0]), dtype(operator.Outputs(0)))
        allowed = pair[0] == "bool" and pair[1] in _FLOAT_TYPES or pair[0] in _FLOAT_TYPES and pair[1] == "bool" \
            or set(pair) <= {"float32", "int32"}
        if not allowed:
            return [f"CAST from {pair[0]} to {pair[1]} is not supported"]
    if name == "FULLY_CONNECTED" and _is_constant(model, subgraph, inputs[0]):
        return ["FULLY_CONNECTED with a constant input is not supported"]
    return []


def _options(operator: schema.Operator, options_class):
    table = operator.BuiltinOptions()
    if table is None:
        return None
    options = options_class()
    options.Init(table.Bytes, table.Pos)
    return options


def _is_constant(model: schema.Model, subgraph: schema.SubGraph, tensor_index: int) -> bool:
    buffer_index = subgraph.Tensors(tensor_index).Buffer()
    if buffer_index <= 0 or buffer_index >= model.BuffersLength():
        return False
    buffer = model.Buffers(buffer_index)
    return buffer.DataLength() > 0 or buffer.Size() > 0  # Size: data stored after the flatbuffer (large models)
