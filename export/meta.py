"""`model_meta.json`: the one definition of what the Android app (and the packaging code) learn about a model.

It sits beside `model.tflite` and `labels.txt`. Shapes, dtypes and quantization are read from the .tflite file
itself, never typed by hand, and `check_meta_matches_tflite` proves a meta file still describes its model.

Schema (version 1); keys marked optional may be absent, any other key is extra information readers ignore:

```
{
  "schema_version": 1,
  "created_by": "mobile-cnn export.meta",
  "model_name": "mobilenet_v3_small",           # optional
  "input": {
    "shape": [1, 224, 224, 3],                  # NHWC, batch fixed at 1
    "dtype": "int8",                            # "float32" | "int8" | "uint8"
    "quantization": {"scale": 0.0078, "zero_point": -1}   # null for float32: real = scale * (q - zero_point)
  },
  "output": {
    "shape": [1, 10],
    "dtype": "int8",
    "quantization": {"scale": 0.11, "zero_point": 5},     # null for float32
    "kind": "logits"                            # or "probabilities": read off the graph (a final SOFTMAX)
  },
  "normalization": {                            # model input = (pixel - mean) / std, per RGB channel
    "mean": [127.5, 127.5, 127.5],
    "std": [127.5, 127.5, 127.5],
    "pixel_range": [0, 255]
  },
  "labels": ["cat", "dog", ...]                 # as many as the output has classes, in output order
}
```
Feeding the model: for each RGB pixel value v (0..255), x = (v - mean[c]) / std[c]; for an int8/uint8 input,
q = clamp(round_half_away_from_zero(x / scale) + zero_point). Reading it: score = scale * (q - zero_point), a logit or
a probability as "kind" says.
"""
from __future__ import annotations

import json
import math
import os
from typing import Any, Mapping, Sequence

import numpy as np
from ai_edge_litert.interpreter import Interpreter, OpResolverType

from export.files import write_json_atomic
from export.graph import ModelSource, read_flatbuffer
from export.metadata import output_scores

SCHEMA_VERSION = 1
CREATED_BY = "mobile-cnn export.meta"
DTYPES = ("float32", "int8", "uint8")
REQUIRED_KEYS = ("schema_version", "created_by", "input", "output", "normalization", "labels")
_TENSOR_KEYS = ("shape", "dtype", "quantization")


class MetaError(ValueError):
    """A model_meta.json file that is missing, unreadable, or not in the documented schema."""


class MetaMismatchError(ValueError):
    """model_meta.json disagrees with its .tflite file; `.mismatches` lists each disagreement."""

    def __init__(self, mismatches: list[str]):
        self.mismatches = mismatches
        super().__init__(
            "model_meta.json does not match the .tflite model:\n- "
            + "\n- ".join(mismatches)
            + "\nRegenerate it with export.meta.meta_for_tflite from the model you ship."
        )


class UnreadableModelError(MetaError):
    """The .tflite file is truncated, empty or not a TFLite model at all."""


def tensor_spec(source: ModelSource) -> dict[str, dict[str, Any]]:
    """{"input": ..., "output": ...} with shape, dtype and quantization read from the .tflite file."""
    try:
        interpreter = Interpreter(
            model_content=read_flatbuffer(source),
            experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        )
    except ValueError as error:  # LiteRT's answer to a truncated, empty or foreign file
        name = "the model" if isinstance(source, (bytes, bytearray)) else os.fspath(source)
        raise UnreadableModelError(f"{name} is not a TFLite model LiteRT can load ({error}); convert it again.") from None
    inputs, outputs = interpreter.get_input_details(), interpreter.get_output_details()
    if len(inputs) != 1 or len(outputs) != 1:
        raise MetaError(f"The app takes a model with one input and one output; this one has {len(inputs)} and {len(outputs)}.")
    kind = output_scores(read_flatbuffer(source))
    return {"input": _tensor_meta(inputs[0]), "output": {**_tensor_meta(outputs[0]), "kind": kind}}


def meta_for_tflite(
    tflite_path: ModelSource,
    labels: Sequence[str],
    normalization: Mapping[str, Any] | Any,
    **extra: Any,
) -> dict[str, Any]:
    """The model_meta.json content for a .tflite file; `extra` adds keys (e.g. `model_name`, `quantization`)."""
    labels = [str(label) for label in labels]
    meta = {
        "schema_version": SCHEMA_VERSION,
        "created_by": CREATED_BY,
        **tensor_spec(tflite_path),
        "normalization": _normalization(normalization),
        "labels": labels,
    }
    for key, value in extra.items():
        if key in meta:
            raise MetaError(f"{key!r} is computed from the model; it cannot be passed as an extra field.")
        meta[key] = value
    _validate(meta)
    num_classes = _num_classes(meta["output"]["shape"])
    if len(labels) != num_classes:
        raise MetaMismatchError([f"labels: {len(labels)} given, the model outputs {num_classes} classes"])
    return meta


def write_meta(path: str | os.PathLike, meta: Mapping[str, Any]) -> None:
    """Validate `meta` and write it atomically as JSON."""
    _validate(meta)
    write_json_atomic(path, dict(meta))


def read_meta(path: str | os.PathLike) -> dict[str, Any]:
    """Read and validate a model_meta.json; `MetaError` says what is missing or malformed."""
    try:
        with open(path, encoding="utf-8") as handle:
            meta = json.load(handle)
    except FileNotFoundError:
        raise MetaError(f"{os.fspath(path)} does not exist; write it with export.meta.write_meta.") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise MetaError(f"{os.fspath(path)} is not valid JSON ({error}); regenerate it with export.meta.") from None
    _validate(meta, where=os.fspath(path))
    return meta


def check_meta_matches_tflite(meta: Mapping[str, Any], tflite_path: ModelSource) -> None:
    """Raise `MetaMismatchError` listing every field where `meta` disagrees with the .tflite file."""
    actual = tensor_spec(tflite_path)
    mismatches = []
    for role in ("input", "output"):
        claimed, real = meta.get(role) or {}, actual[role]
        if list(claimed.get("shape") or []) != real["shape"]:
            mismatches.append(f"{role} shape: meta says {claimed.get('shape')}, model has {real['shape']}")
        if claimed.get("dtype") != real["dtype"]:
            mismatches.append(f"{role} dtype: meta says {claimed.get('dtype')}, model has {real['dtype']}")
        mismatches.extend(_quantization_mismatches(role, claimed.get("quantization"), real["quantization"]))
    num_classes = _num_classes(actual["output"]["shape"])
    labels = meta.get("labels") or []
    if len(labels) != num_classes:
        mismatches.append(f"labels: meta has {len(labels)}, the model outputs {num_classes} classes")
    if mismatches:
        raise MetaMismatchError(mismatches)


def _num_classes(output_shape: Sequence[int]) -> int:
    return int(np.prod(output_shape[1:]))


def _tensor_meta(details: Mapping[str, Any]) -> dict[str, Any]:
    dtype = np.dtype(details["dtype"]).name
    if dtype not in DTYPES:
        raise MetaError(f"Tensor {details['name']!r} is {dtype}; the app takes {', '.join(DTYPES)}.")
    quantization = None
    if dtype != "float32":
        scales = details["quantization_parameters"]["scales"]
        zero_points = details["quantization_parameters"]["zero_points"]
        if len(scales) != 1:
            raise MetaError(f"Tensor {details['name']!r} is {dtype} without one per-tensor scale (got {len(scales)}).")
        quantization = {"scale": float(scales[0]), "zero_point": int(zero_points[0])}
    return {"shape": [int(dim) for dim in details["shape"]], "dtype": dtype, "quantization": quantization}


def _normalization(normalization: Mapping[str, Any] | Any) -> dict[str, Any]:
    if hasattr(normalization, "to_dict"):
        normalization = normalization.to_dict()
    if not isinstance(normalization, Mapping) or "mean" not in normalization or "std" not in normalization:
        raise MetaError(
            f"normalization must be a mapping with 'mean' and 'std' (model input = (pixel - mean) / std), "
            f"got {normalization!r}."
        )
    result = dict(normalization)
    for key in ("mean", "std"):
        value = result[key]
        values = [float(value)] * 3 if np.isscalar(value) else [float(v) for v in value]
        result[key] = values
    result.setdefault("pixel_range", [0, 255])
    return result


def _quantization_mismatches(role: str, claimed: Any, real: dict | None) -> list[str]:
    if real is None or claimed is None:
        return [] if real is claimed else [f"{role} quantization: meta says {claimed}, model has {real}"]
    problems = []
    if not math.isclose(float(claimed.get("scale", math.nan)), real["scale"], rel_tol=1e-6):
        problems.append(f"{role} quantization scale: meta says {claimed.get('scale')}, model has {real['scale']}")
    if claimed.get("zero_point") != real["zero_point"]:
        problems.append(
            f"{role} quantization zero_point: meta says {claimed.get('zero_point')}, model has {real['zero_point']}"
        )
    return problems


def _validate(meta: Any, where: str = "model_meta") -> None:
    problems = []
    if not isinstance(meta, Mapping):
        raise MetaError(f"{where}: expected a JSON object, got {type(meta).__name__}.")
    missing = [key for key in REQUIRED_KEYS if key not in meta]
    if missing:
        problems.append(f"missing keys {missing}")
    if "schema_version" in meta and meta["schema_version"] != SCHEMA_VERSION:
        problems.append(f"schema_version {meta['schema_version']!r}, this code reads {SCHEMA_VERSION}")
    for role in ("input", "output"):
        tensor = meta.get(role)
        if role not in meta:
            continue
        if not isinstance(tensor, Mapping) or any(key not in tensor for key in _TENSOR_KEYS):
            problems.append(f"{role!r} must be an object with keys {list(_TENSOR_KEYS)}")
            continue
        if tensor["dtype"] not in DTYPES:
            problems.append(f"{role} dtype {tensor['dtype']!r} is not one of {list(DTYPES)}")
        quantized = tensor["dtype"] in ("int8", "uint8")
        quantization = tensor["quantization"]
        if quantized and not (
            isinstance(quantization, Mapping)
            and isinstance(quantization.get("scale"), (int, float))
            and quantization["scale"] > 0
            and isinstance(quantization.get("zero_point"), int)
        ):
            problems.append(f"{role} is {tensor['dtype']} but quantization is not {{scale > 0, zero_point}}")
        if not quantized and quantization is not None:
            problems.append(f"{role} is {tensor['dtype']} but has quantization {quantization}")
    normalization = meta.get("normalization")
    if "normalization" in meta:
        try:
            means, stds = list(normalization["mean"]), list(normalization["std"])
            if len(means) != 3 or len(stds) != 3 or not all(float(std) > 0 for std in stds):
                raise ValueError
        except (TypeError, KeyError, ValueError):
            problems.append("normalization must hold 'mean' and 'std' lists of 3 numbers, std > 0")
    labels = meta.get("labels")
    if "labels" in meta and not (isinstance(labels, list) and labels and all(isinstance(l, str) for l in labels)):
        problems.append("labels must be a non-empty list of strings")
    if problems:
        raise MetaError(f"{where} is not a valid model_meta.json (schema {SCHEMA_VERSION}): " + "; ".join(problems))
