"""What is inside a .tflite file: its op histogram, what XNNPACK takes, and whether an int8 model is integer-only.

The op histogram and the integer-only check read the flatbuffer itself (the schema module LiteRT ships), so
they work on any file, even one whose ops this interpreter has no kernel for. XNNPACK delegation has to be
observed: the Python interpreter does not say which ops the delegate took, and the pip benchmark tool's
`fully_accelerated` is always false for int8 models that end in SOFTMAX (docs/design.md, "Counting delegation and timing"). After `allocate_tensors()`
with the default XNNPACK delegate, the interpreter's node list holds the original nodes plus one `DELEGATE` node
per partition; walking back from a DELEGATE node's outputs to its inputs finds the original nodes it replaced,
and every other node runs on a built-in kernel. `experimental_preserve_all_tensors` is never used here: it forces
one partition per op.
"""
from __future__ import annotations

import collections
import dataclasses
import os

from ai_edge_litert import schema_py_generated as schema
from ai_edge_litert.interpreter import Interpreter, OpResolverType

ModelSource = str | os.PathLike | bytes | bytearray

_OP_NAMES = {code: name for name, code in vars(schema.BuiltinOperator).items() if not name.startswith("_")}
_TYPE_NAMES = {code: name.lower() for name, code in vars(schema.TensorType).items() if not name.startswith("_")}

# Ops an int8 deployment graph must not contain: dynamic-shape plumbing that XNNPACK does not take (what a
# batch-None Reshape lowers to) and GATHER (a lookup XNNPACK does not take either).
FORBIDDEN_INT8_OPS = ("SHAPE", "PACK", "STRIDED_SLICE", "GATHER")
# XNNPACK runs HARD_SWISH only in float; an int8 one falls back to the built-in kernel and splits the graph.
SLOW_INT8_OPS = ("HARD_SWISH",)
_FLOAT_TYPES = ("float32", "float16", "float64", "bfloat16")
_INTEGER_IO_TYPES = ("int8", "uint8")


@dataclasses.dataclass(frozen=True)
class XnnpackReport:
    """How the XNNPACK delegate split a model: `partitions == 1` and no `undelegated_ops` is the goal."""

    partitions: int
    delegated_nodes: int
    total_nodes: int
    undelegated_ops: dict[str, int]

    @property
    def fully_delegated(self) -> bool:
        """True when one XNNPACK partition runs every node."""
        return self.partitions == 1 and self.delegated_nodes == self.total_nodes

    def as_dict(self) -> dict:
        """A JSON-ready dict (for metrics.json)."""
        return {**dataclasses.asdict(self), "fully_delegated": self.fully_delegated}


def read_flatbuffer(source: ModelSource) -> bytes:
    """The model's bytes, from a path or from bytes already in memory."""
    if isinstance(source, (bytes, bytearray)):
        return bytes(source)
    with open(source, "rb") as handle:
        return handle.read()


def op_histogram(source: ModelSource) -> dict[str, int]:
    """Op name -> count over every subgraph (custom ops as `CUSTOM:<name>`), sorted by name."""
    model = _parse(source)
    counts: collections.Counter[str] = collections.Counter()
    for subgraph in _subgraphs(model):
        for op_index in range(subgraph.OperatorsLength()):
            counts[op_name(model, subgraph.Operators(op_index))] += 1
    return dict(sorted(counts.items()))


def xnnpack_partitions(source: ModelSource, num_threads: int = 1) -> XnnpackReport:
    """Apply the XNNPACK delegate (LiteRT's default) and count its partitions and the nodes it left out."""
    interpreter = Interpreter(
        model_content=read_flatbuffer(source),
        num_threads=num_threads,
        experimental_op_resolver_type=OpResolverType.BUILTIN,  # built-in kernels + the default XNNPACK delegate
    )
    interpreter.allocate_tensors()  # the delegate is applied here
    nodes = interpreter._get_ops_details()  # noqa: SLF001 -- the only way to see the delegate's nodes
    delegates = [node for node in nodes if node["op_name"] == "DELEGATE"]
    original = [node for node in nodes if node["op_name"] != "DELEGATE"]
    producer = {}
    for node in original:
        for tensor in node["outputs"]:
            producer[int(tensor)] = node["index"]
    by_index = {node["index"]: node for node in original}

    delegated: set[int] = set()
    for delegate in delegates:
        boundary = {int(tensor) for tensor in delegate["inputs"]}
        pending = [int(tensor) for tensor in delegate["outputs"]]
        seen_tensors: set[int] = set()
        while pending:
            tensor = pending.pop()
            if tensor in seen_tensors or tensor in boundary or tensor not in producer:
                continue
            seen_tensors.add(tensor)
            node_index = producer[tensor]
            if node_index in delegated:
                continue
            delegated.add(node_index)
            pending.extend(int(t) for t in by_index[node_index]["inputs"] if int(t) >= 0)

    undelegated = collections.Counter(node["op_name"] for node in original if node["index"] not in delegated)
    return XnnpackReport(
        partitions=len(delegates),
        delegated_nodes=len(delegated),
        total_nodes=len(original),
        undelegated_ops=dict(sorted(undelegated.items())),
    )


def integer_only_problems(source: ModelSource, float_io: bool = False) -> list[str]:
    """What keeps an int8 model from being integer-only and XNNPACK-friendly; an empty list means clean.

    Flags: model input/output not int8/uint8; float tensors into or out of any op except a QUANTIZE/DEQUANTIZE at
    the model's edges; QUANTIZE/DEQUANTIZE inside the graph; SHAPE/PACK/STRIDED_SLICE/GATHER; int8 HARD_SWISH.
    With `float_io` (a model converted with io_dtype='float32'), a float32 input and output are accepted, and so
    is a float SOFTMAX between the output's DEQUANTIZE and the output (export/convert.py keeps it float).
    """
    model = _parse(source)
    subgraph = model.Subgraphs(0)
    graph_inputs = set(subgraph.InputsAsNumpy().tolist())
    graph_outputs = set(subgraph.OutputsAsNumpy().tolist())
    io_types = _INTEGER_IO_TYPES + (("float32",) if float_io else ())
    problems = []
    for role, tensors in (("input", graph_inputs), ("output", graph_outputs)):
        for tensor_index in sorted(tensors):
            dtype = tensor_type(subgraph, tensor_index)
            if dtype not in io_types:
                problems.append(
                    f"model {role} {tensor_name(subgraph, tensor_index)!r} is {dtype}, not {'/'.join(io_types)}"
                )
    float_tail = _float_softmax_tail(model, subgraph, graph_outputs) if float_io else set()
    for op_index in range(subgraph.OperatorsLength()):
        operator = subgraph.Operators(op_index)
        name = op_name(model, operator)
        inputs = [t for t in operator.InputsAsNumpy().tolist() if t >= 0]
        outputs = [t for t in operator.OutputsAsNumpy().tolist() if t >= 0]
        where = f"{name} (op {op_index}, output {tensor_name(subgraph, outputs[0]) if outputs else '?'!r})"
        if op_index in float_tail:
            continue
        if name in ("QUANTIZE", "DEQUANTIZE"):
            at_edge = bool(graph_inputs.intersection(inputs) or graph_outputs.intersection(outputs))
            if not at_edge:
                problems.append(f"{where} inside the graph: a float or requantization island between int8 ops")
            continue
        if name in FORBIDDEN_INT8_OPS:
            problems.append(f"{where} is dynamic-shape/lookup plumbing that XNNPACK does not take")
        if name in SLOW_INT8_OPS:
            problems.append(f"{where}: XNNPACK does not run HARD_SWISH in int8; lower it to int8-capable ops")
        float_tensors = [t for t in inputs + outputs if tensor_type(subgraph, t) in _FLOAT_TYPES]
        if float_tensors:
            first = float_tensors[0]
            problems.append(
                f"{where} has {len(float_tensors)} float tensor(s), e.g. {tensor_name(subgraph, first)!r} "
                f"({tensor_type(subgraph, first)})"
            )
    return problems


def _float_softmax_tail(model: schema.Model, subgraph: schema.SubGraph, graph_outputs: set[int]) -> set[int]:
    """Indices of each `DEQUANTIZE -> SOFTMAX -> model output` pair of ops (the float-output classifier's tail)."""
    producers = {}
    for op_index in range(subgraph.OperatorsLength()):
        for tensor in subgraph.Operators(op_index).OutputsAsNumpy().tolist():
            producers[tensor] = op_index
    tail = set()
    for output in graph_outputs:
        softmax = producers.get(output)
        if softmax is None or op_name(model, subgraph.Operators(softmax)) != "SOFTMAX":
            continue
        dequantize = producers.get(int(subgraph.Operators(softmax).Inputs(0)))
        if dequantize is not None and op_name(model, subgraph.Operators(dequantize)) == "DEQUANTIZE":
            tail.update((softmax, dequantize))
    return tail


def _parse(source: ModelSource) -> schema.Model:
    data = read_flatbuffer(source)
    if len(data) < 8 or not schema.Model.ModelBufferHasIdentifier(data, 0):
        name = "the given bytes" if isinstance(source, (bytes, bytearray)) else os.fspath(source)
        raise ValueError(f"{name} is not a TFLite flatbuffer (no 'TFL3' identifier).")
    return schema.Model.GetRootAs(data, 0)


def _subgraphs(model: schema.Model):
    return (model.Subgraphs(index) for index in range(model.SubgraphsLength()))


def op_name(model: schema.Model, operator: schema.Operator) -> str:
    """An operator's name: the builtin's (`CONV_2D`) or `CUSTOM:<name>`."""
    opcode = model.OperatorCodes(operator.OpcodeIndex())
    # Codes above 127 live only in builtin_code; older files keep small codes in deprecated_builtin_code.
    code = max(opcode.BuiltinCode(), opcode.DeprecatedBuiltinCode())
    if code == schema.BuiltinOperator.CUSTOM:
        custom = opcode.CustomCode()
        return f"CUSTOM:{custom.decode() if custom else '?'}"
    return _OP_NAMES.get(code, f"BUILTIN_{code}")


def tensor_type(subgraph: schema.SubGraph, tensor_index: int) -> str:
    """A tensor's element type in lower case (`float32`, `int8`, ...)."""
    return _TYPE_NAMES.get(subgraph.Tensors(tensor_index).Type(), "unknown")


def tensor_name(subgraph: schema.SubGraph, tensor_index: int) -> str:
    """A tensor's name, or `tensor N` where it has none."""
    name = subgraph.Tensors(tensor_index).Name()
    return name.decode(errors="replace") if name else f"tensor {tensor_index}"
