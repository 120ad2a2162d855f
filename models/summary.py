"""Per-layer and total complexity of one network: `python -m models.summary --model shufflenet_v2 [--json]`.

Prints a table of every layer (output shape, parameters, MACs, element-wise ops, memory access cost) and the
totals; with `--json`, exactly one JSON object on stdout instead. Counting conventions: `models/complexity.py`.
"""
from __future__ import annotations

import json
import sys
from typing import Any, Sequence

from absl import app, flags

import models
from models import complexity

FLAGS = flags.FLAGS

# Flags that are build options of only some networks: passing them to another network is a user error.
_NETWORK_OPTION_FLAGS = {"groups": ("shufflenet_v1",)}

EXIT_BAD_INPUT = 2


def summarize(
    model_name: str,
    width_multiplier: float = 1.0,
    image_size: int = 224,
    num_classes: int = 1000,
    **network_options: Any,
) -> dict[str, Any]:
    """Build the network and return its complexity as a JSON-ready dict (raises ValueError on bad arguments)."""
    for option, value in network_options.items():
        allowed = _NETWORK_OPTION_FLAGS.get(option, ())
        if value is not None and model_name not in allowed:
            raise ValueError(f"--{option} applies only to {', '.join(allowed) or 'no network'}, not {model_name!r}.")
    options = {k: v for k, v in network_options.items() if v is not None}
    model = models.build(
        model_name,
        input_shape=(image_size, image_size, 3),
        num_classes=num_classes,
        width_multiplier=width_multiplier,
        **options,
    )
    result = complexity.analyze(model).to_dict()
    return {
        "model": model_name,
        "width_multiplier": width_multiplier,
        "image_size": image_size,
        "num_classes": num_classes,
        **options,
        **result,
    }


def format_table(summary: dict[str, Any]) -> str:
    """The per-layer table and the totals as aligned text."""
    headers = ("layer", "type", "output shape", "params", "MACs", "elementwise", "memory access")
    rows = [
        (
            row["name"],
            row["type"],
            _shape_text(row["output_shape"]),
            f"{row['params']:,}",
            f"{row['macs']:,}",
            f"{row['elementwise_ops']:,}",
            f"{row['memory_access_cost']:,}",
        )
        for row in summary["layers"]
    ]
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows)]
    numeric = [False, False, False, True, True, True, True]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if num else c.ljust(w) for c, w, num in zip(cells, widths, numeric)).rstrip()

    options = ", ".join(f"{k}={summary[k]}" for k in _NETWORK_OPTION_FLAGS if k in summary)
    title = (
        f"{summary['model']} width {summary['width_multiplier']:g}, {summary['image_size']}x{summary['image_size']}, "
        f"{summary['num_classes']} classes" + (f", {options}" if options else "")
    )
    rule = "-" * len(line(headers))
    totals = [
        f"params:               {summary['params']:>15,}  ({summary['params'] / 1e6:.2f}M, BatchNorm statistics included)",
        f"trainable params:     {summary['trainable_params']:>15,}  ({summary['trainable_params'] / 1e6:.2f}M)",
        f"MACs (multiply-adds): {summary['macs']:>15,}  ({summary['macs'] / 1e6:.1f}M, conv and FC layers)",
        f"element-wise ops:     {summary['elementwise_ops']:>15,}  ({summary['elementwise_ops'] / 1e6:.1f}M)",
        f"memory access cost:   {summary['memory_access_cost']:>15,}  "
        f"({summary['memory_access_cost'] / 1e6:.1f}M elements)",
    ]
    return "\n".join([title, rule, line(headers), rule, *(line(r) for r in rows), rule, *totals])


def _shape_text(shape: list) -> str:
    if shape and isinstance(shape[0], list):
        return " ".join(_shape_text(s) for s in shape)
    return "x".join(str(d) for d in shape)


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    try:
        summary = summarize(
            FLAGS.model,
            width_multiplier=FLAGS.width_multiplier,
            image_size=FLAGS.image_size,
            num_classes=FLAGS.num_classes,
            groups=FLAGS.groups,
        )
    except ValueError as error:
        print(f"models.summary: error: {error}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    print(json.dumps(summary) if FLAGS.json else format_table(summary))


def _define_flags() -> None:
    # Defined only when run as a program: absl flags are process-global, and pipeline.run defines --model too.
    flags.DEFINE_string("model", "shufflenet_v2", f"Network name, one of: {', '.join(models.available())}.")
    flags.DEFINE_float("width_multiplier", 1.0, "Width multiplier (the networks' allowed values differ; see README).")
    flags.DEFINE_integer("image_size", 224, "Square input size in pixels (at least 32).")
    flags.DEFINE_integer("num_classes", 1000, "Number of output classes.")
    flags.DEFINE_integer("groups", None, "ShuffleNetV1 group count (1, 2, 3, 4 or 8); only for shufflenet_v1.")
    flags.DEFINE_bool("json", False, "Print one JSON object instead of the table.")


if __name__ == "__main__":
    _define_flags()
    app.run(main)
