"""Where an int8 model loses its float model's answers: per-layer quantization error on held-out images.

The calibrated float model (export.convert.to_int8_with_float_reference) and the int8 model quantized from it are
the same graph with the same tensor names, so both run image by image on interpreters that keep every tensor and
each int8 activation is compared with its float twin. Per tensor (named by the Keras layer the graph keeps):

- `error`: RMSE of the dequantized int8 tensor against the float one, divided by the float tensor's standard
  deviation: the error that has built up to this point, as TFLite's QuantizationDebugger scales it;
- `range_error`: the same ratio for the float tensor rounded and clipped to this tensor's own int8 grid: the error
  this tensor's range alone causes, so a bad range shows here and not in every layer after it;
- `range`: the float interval the int8 scale and zero point cover; `clipped`: the share of float values outside it.

The model-level numbers are the top-1 agreement between the two models and the mean KL divergence of the int8
model's output distribution from the float one's (softmax of the logits; outputs that are already probabilities
are used as they are). Keeping every tensor means TFLite's reference kernels, not XNNPACK, and the two round int8
differently: on a MobileNetV3-Small whose answers are close calls the agreement here was 93.9% where the same
model on XNNPACK agreed on 95.6% (docs/design.md, "int8 fidelity").
"""
from __future__ import annotations

import io
from typing import Iterable

import numpy as np

from export.calibration import tensor_keeping_interpreter
from export.evaluate import agreement, iterate_images, quantize_input

_INTEGER_TYPES = (np.int8, np.uint8, np.int16)
_PROBABILITY_TOLERANCE = 1e-3
# A float answer whose top two probabilities are closer than this is a near-tie: the float model itself barely
# decides it, so int8's rounding may flip it without any layer being badly quantized.
NEAR_TIE_GAP = 0.1


def quantization_report(float_model: bytes, int8_model: bytes, images: Iterable[np.ndarray] | np.ndarray) -> dict:
    """Per-layer and model-level int8-vs-float error on `images` (normalized float32): a JSON-ready dict."""
    reference = tensor_keeping_interpreter(float_model)
    quantized = tensor_keeping_interpreter(int8_model)
    layers, unmatched = _compared_tensors(reference, quantized)
    if len(layers) <= unmatched:  # the model output's generic name alone would match any other model's
        raise ValueError(f"The float model shares only {len(layers)} of the int8 model's {len(layers) + unmatched} "
                         "activation tensors; pass the calibrated float model the int8 model was quantized from "
                         "(export.convert.to_int8_with_float_reference).")
    sums = np.zeros((len(layers), 6))  # n, sum f, sum f^2, int8 squared error, range squared error, clipped
    float_outputs, int8_outputs = [], []
    q_input = quantized.get_input_details()[0]
    for image in iterate_images(images):
        image = np.asarray(image, np.float32)[np.newaxis]
        reference.set_tensor(reference.get_input_details()[0]["index"], image)
        reference.invoke()
        integer_input = np.dtype(q_input["dtype"]).type in _INTEGER_TYPES  # a float input is quantized in the graph
        quantized.set_tensor(q_input["index"], quantize_input(image, q_input) if integer_input else image)
        quantized.invoke()
        for row, layer in enumerate(layers):
            values = reference.get_tensor(layer["float_index"]).astype(np.float64)
            scale, zero_point = layer["scale"], layer["zero_point"]
            dequantized = (quantized.get_tensor(layer["int8_index"]).astype(np.float64) - zero_point) * scale
            own_grid = (np.clip(np.round(values / scale) + zero_point, layer["qmin"], layer["qmax"]) - zero_point) * scale
            outside = (values < layer["range"][0] - scale / 2) | (values > layer["range"][1] + scale / 2)
            sums[row] += (values.size, values.sum(), np.square(values).sum(), np.square(dequantized - values).sum(),
                          np.square(own_grid - values).sum(), outside.sum())
        float_outputs.append(_output(reference))
        int8_outputs.append(_output(quantized))
    if not float_outputs:
        raise ValueError("No held-out images to compare the int8 model with the float model on.")
    rows = []
    for depth, (layer, (n, total, squares, error, range_error, clipped)) in enumerate(zip(layers, sums)):
        std = float(np.sqrt(max(squares / n - (total / n) ** 2, 0.0)))
        rows.append({
            "depth": depth, "layer": layer["layer"], "tensor": layer["tensor"],
            "error": _relative(error, n, std), "range_error": _relative(range_error, n, std),
            "range": [float(bound) for bound in layer["range"]], "scale": layer["scale"],
            "zero_point": layer["zero_point"], "clipped": float(clipped / n), "float_std": std,
        })
    float_outputs, int8_outputs = np.stack(float_outputs), np.stack(int8_outputs)
    return {
        "num_images": len(float_outputs),
        "top1_agreement": agreement(int8_outputs, float_outputs),
        "mean_kl_divergence": mean_kl_divergence(float_outputs, int8_outputs),
        **changed_answers(float_outputs, int8_outputs),
        "layers": rows,
    }


def changed_answers(reference_outputs: np.ndarray, other_outputs: np.ndarray, gap: float = NEAR_TIE_GAP) -> dict:
    """How many top-1 answers the other model changes, how many of those the reference model's top two
    probabilities were within `gap` (near-ties), the share of such images, and the agreement on the rest."""
    reference_outputs, other_outputs = np.asarray(reference_outputs, np.float64), np.asarray(other_outputs, np.float64)
    top_two = np.sort(_as_distribution(reference_outputs, _are_probabilities(reference_outputs)), axis=1)[:, -2:]
    near_tie = top_two[:, 1] - top_two[:, 0] < gap
    changed = np.argmax(reference_outputs, axis=1) != np.argmax(other_outputs, axis=1)
    clear = ~near_tie
    return {"near_tie_gap": gap, "changed_answers": int(changed.sum()),
            "changed_near_ties": int((changed & near_tie).sum()), "near_tie_share": float(near_tie.mean()),
            "agreement_clear": float(1 - changed[clear].mean()) if clear.any() else None}


def mean_kl_divergence(reference_outputs: np.ndarray, other_outputs: np.ndarray) -> float:
    """Mean over rows of KL(reference || other) in nats, of the softmax of logits (or of rows that already are
    probability distributions, judged on the reference)."""
    reference_outputs = np.asarray(reference_outputs, np.float64)
    other_outputs = np.asarray(other_outputs, np.float64)
    if reference_outputs.shape != other_outputs.shape or reference_outputs.ndim != 2 or not len(reference_outputs):
        raise ValueError(f"Expected two equal [N, classes] arrays, got {reference_outputs.shape} and "
                         f"{other_outputs.shape}.")
    probabilities = _are_probabilities(reference_outputs)
    p, q = (_as_distribution(rows, probabilities) for rows in (reference_outputs, other_outputs))
    # A class the int8 model rounds to probability 0 would give an infinite divergence; floor it at 1e-12.
    q = np.maximum(q, 1e-12)
    terms = np.where(p > 0, p * (np.log(np.maximum(p, 1e-300)) - np.log(q)), 0.0)
    return float(np.mean(terms.sum(axis=1)))


def _changed_answers_sentence(report: dict) -> str:
    if "changed_answers" not in report:  # a report written before these counts existed
        return ""
    return (f" Of the {report['changed_answers']} answers int8 changes, {report['changed_near_ties']} are near-ties of "
            f"the float model (top two probabilities within {report['near_tie_gap']:g}; {report['near_tie_share']:.1%} "
            f"of the images)" + (f"; on the other images agreement is {report['agreement_clear']:.2%}."
                                 if report["agreement_clear"] is not None else "."))


def top_offenders(report: dict, count: int = 5) -> list[dict]:
    """The `count` layers whose own range costs the most (highest `range_error`), worst first."""
    return sorted(report["layers"], key=lambda row: row["range_error"], reverse=True)[:count]


def markdown_lines(report: dict, count: int = 5) -> list[str]:
    """report.md lines: the model-level numbers and a table of the top offenders."""
    lines = [f"int8 vs float on {report['num_images']} held-out images, tensor by tensor on TFLite's reference "
             f"kernels: top-1 agreement {report['top1_agreement']:.2%}, mean KL divergence "
             f"{report['mean_kl_divergence']:.4f} nats." + _changed_answers_sentence(report),
             "",
             "| depth | layer | own-range error | error so far | range | clipped |",
             "|---:|---|---:|---:|---|---:|"]
    for row in top_offenders(report, count):
        low, high = row["range"]
        lines.append(f"| {row['depth']} | {row['layer']} | {row['range_error']:.3f} | {row['error']:.3f} | "
                     f"[{low:.3g}, {high:.3g}] | {row['clipped']:.2%} |")
    return lines


def error_by_depth_png(report: dict, title: str = "int8 error by depth") -> bytes:
    """A PNG plot of each tensor's error so far and own-range error against its depth in the graph."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    depths = [row["depth"] for row in report["layers"]]
    figure, axes = pyplot.subplots(figsize=(8, 3.5))
    axes.plot(depths, [row["error"] for row in report["layers"]], marker=".", label="error so far (RMSE / std)")
    axes.plot(depths, [row["range_error"] for row in report["layers"]], marker=".", linestyle="none",
              label="own range's error")
    for row in top_offenders(report, 3):
        axes.annotate(row["layer"], (row["depth"], row["range_error"]), fontsize=7)
    axes.set_xlabel("tensor depth (order in the graph)")
    axes.set_ylabel("RMSE / float std")
    axes.set_title(title)
    axes.legend(fontsize=8)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    pyplot.close(figure)
    return buffer.getvalue()


def keras_layer_name(tensor_name: str) -> str:
    """The Keras layer a TFLite tensor came from: 'model/block_1/conv/Conv2D;...' -> 'block_1/conv'."""
    parts = tensor_name.split(";")[0].split("/")
    return "/".join(parts[1:-1]) if len(parts) > 2 else parts[0]


def _compared_tensors(reference, quantized) -> tuple[list[dict], int]:
    """Op outputs (in execution order) that are per-tensor quantized integers in the int8 model and float in the
    reference, matched by name and shape; and how many such int8 tensors found no float twin."""
    float_by_name = {detail["name"]: detail for detail in reference.get_tensor_details()}
    details = {detail["index"]: detail for detail in quantized.get_tensor_details()}
    outputs = {detail["index"] for detail in quantized.get_output_details()}
    layers, seen, unmatched = [], set(), 0
    for op in quantized._get_ops_details():  # noqa: SLF001  (the only listing of ops in execution order)
        for index in op["outputs"]:
            detail = details.get(index)
            if detail is None or index in seen or np.dtype(detail["dtype"]).type not in _INTEGER_TYPES:
                continue
            seen.add(index)
            scales = detail["quantization_parameters"]["scales"]
            if len(scales) != 1:
                continue
            twin = float_by_name.get(detail["name"])
            if (twin is None or np.dtype(twin["dtype"]) != np.float32
                    or list(twin["shape"]) != list(detail["shape"])):
                unmatched += 1
                continue
            scale, zero_point = float(scales[0]), int(detail["quantization_parameters"]["zero_points"][0])
            info = np.iinfo(detail["dtype"])
            name = "(model output)" if index in outputs else keras_layer_name(detail["name"])
            layers.append({"layer": name, "tensor": detail["name"],
                           "float_index": twin["index"], "int8_index": index, "scale": scale,
                           "zero_point": zero_point, "qmin": info.min, "qmax": info.max,
                           "range": ((info.min - zero_point) * scale, (info.max - zero_point) * scale)})
    return layers, unmatched


def _output(interpreter) -> np.ndarray:
    detail = interpreter.get_output_details()[0]
    values = interpreter.get_tensor(detail["index"]).reshape(-1).astype(np.float64)
    if np.dtype(detail["dtype"]).type in _INTEGER_TYPES:
        scale, zero_point = detail["quantization"]
        values = (values - zero_point) * scale
    return values


def _relative(squared_error: float, count: float, std: float) -> float:
    # A constant float tensor (std 0) that int8 gets wrong gets a huge but finite (JSON-safe) ratio.
    return float(np.sqrt(squared_error / count)) / max(std, 1e-12)


def _are_probabilities(rows: np.ndarray) -> bool:
    """Whether model outputs are probability distributions already (else logits)."""
    return bool(rows.min() >= 0 and np.allclose(rows.sum(axis=1), 1.0, atol=_PROBABILITY_TOLERANCE))


def _as_distribution(rows: np.ndarray, probabilities: bool) -> np.ndarray:
    if probabilities:
        return rows / rows.sum(axis=1, keepdims=True)
    shifted = np.exp(rows - rows.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)
