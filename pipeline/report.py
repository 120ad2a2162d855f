"""The report: `metrics.json` (stable keys, for machines), `report.md` (for people), `report.png` (a plot), and the
summary table printed at the end of a run. Each stage contributes its own part of metrics.json and its own
section of report.md (pipeline.stage.Stage.metrics / .report); this module holds the keys every run has and
puts the parts together.

metrics.json always has these keys (a value is null where the run did not produce it):
model, width_multiplier, dataset{name, num_classes, num_train, num_val, image_size, skipped_files}, params, macs,
memory_access_cost, accuracy{keras_float, tflite_float32, tflite_quantized, mediapipe_float32, mediapipe_quantized
(top-1 through MediaPipe Tasks' ImageClassifier)}, agreement_quantized_vs_float,
size_bytes{float32, quantized}, quantization, io_dtype, qat, qat_comparison{float_before_qat, int8_ptq, int8_qat}
(only with --qat and int8), sparsity{method, target, overall, per_layer}, stages{name: seconds},
latency{device, num_threads, float32_ms, quantized_ms, details}, distillation, training{epochs, batch_size,
optimizer, learning_rate, weight_decay, label_smoothing, bn_momentum, seed}, verification, run_dir,
config_fingerprint. A channel-slimmed run adds params/macs/memory_access_cost_before_pruning, channels and
channel_pruning{val_accuracy_before_pruning, val_accuracy_after_cut, val_accuracy_after_finetune, iterations}.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from export import layout
from export.files import write_json_atomic, write_text_atomic
from models.complexity import analyze

log = logging.getLogger(__name__)

STAGE = "report"
OUTPUTS = [layout.METRICS, layout.REPORT, layout.PLOT]
TRAINED_STAGES = ("teacher", "train", "student_alone")


def complexity(model) -> dict[str, Any]:
    """Parameters (with BatchNorm moving statistics, as Keras counts them), MACs and memory access cost."""
    result = analyze(model)
    return {"params": int(result.params), "macs": int(result.macs),
            "memory_access_cost": int(result.memory_access_cost)}


def base_metrics(context) -> dict[str, Any]:
    """The keys every run's metrics.json has, from the configuration and the data; null until a stage fills them."""
    config, data = context.config, context.data
    return {
        "model": config.model,
        "width_multiplier": config.width_multiplier,
        "dataset": {"name": config.dataset, "num_classes": data.num_classes, "num_train": data.num_train,
                    "num_val": data.num_val, "image_size": data.image_size,
                    "skipped_files": len(data.skipped_files)},
        "params": None, "macs": None, "memory_access_cost": None,
        "accuracy": {"keras_float": None, "tflite_float32": None, "tflite_quantized": None,
                     "mediapipe_float32": None, "mediapipe_quantized": None},
        "agreement_quantized_vs_float": None,
        "size_bytes": {"float32": None, "quantized": None},
        "quantization": config.quantize,
        "io_dtype": config.io_dtype if config.quantize == "int8" else None,
        "qat": config.qat,
        "qat_comparison": None,
        "sparsity": {"method": config.prune, "target": None, "overall": None, "per_layer": None},
        "stages": {},
        "latency": None,
        "distillation": None,
        "training": {"epochs": config.epochs, "batch_size": config.batch_size, "optimizer": config.optimizer,
                     "learning_rate": config.learning_rate, "weight_decay": config.weight_decay,
                     "label_smoothing": config.label_smoothing, "bn_momentum": context.bn_momentum,
                     "seed": config.seed},
        "verification": {},
        "run_dir": str(context.run_dir),
        "config_fingerprint": config.fingerprint(),
    }


def merge(into: dict[str, Any], part: dict[str, Any]) -> dict[str, Any]:
    """Merge a stage's metrics part into `into`: nested dicts key by key, a non-null value replacing null."""
    for key, value in part.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            merge(into[key], value)
        elif value is not None or key not in into:
            into[key] = value
    return into


def build_metrics(context, stages) -> dict[str, Any]:
    """metrics.json: the base keys, then each stage's part in run order (later stages win)."""
    metrics = base_metrics(context)
    metrics["stages"] = {"data": round(context.data.load_seconds, 2),
                         **{name: round(outcome.seconds, 2) for name, outcome in context.outcomes.items()}}
    for stage in stages:
        if stage.name in context.summaries:
            merge(metrics, stage.metrics(context.summaries[stage.name], context))
    return metrics


def write(context, ledger, stages) -> dict[str, Any]:
    """The report stage: metrics.json, report.md and report.png, recorded in the ledger like any stage."""
    summaries = {name: outcome.summary for name, outcome in context.outcomes.items()}
    histories = {name: summaries[name].get("history", {}) for name in TRAINED_STAGES if name in summaries}

    def action():
        metrics = build_metrics(context, stages)
        sections = [stage.report(context.summaries[stage.name], context) for stage in stages
                    if stage.name in context.summaries]
        write_json_atomic(context.path(layout.METRICS), metrics)
        write_text_atomic(context.path(layout.REPORT), markdown(metrics, [s for s in sections if s]))
        write_plot(context.path(layout.PLOT), metrics, histories)
        return {}

    # Keyed on results only: the data stage's time changes from run to run, the numbers do not.
    ledger.run(STAGE, {"summaries": summaries}, OUTPUTS, action)
    return read_metrics(context.run_dir)


def read_metrics(run_dir: Path) -> dict[str, Any]:
    return json.loads((Path(run_dir) / layout.METRICS).read_text())


def percent(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.2f}%"


def _size(value: int | None) -> str:
    return "—" if value is None else f"{value / 1e6:.2f} MB" if value >= 1e5 else f"{value / 1e3:.1f} kB"


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f} ms"


def summary_rows(metrics: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(artifact, held-out top-1, size, latency) rows."""
    accuracy, sizes, latency = metrics["accuracy"], metrics["size_bytes"], metrics["latency"] or {}
    rows = [("Keras float", percent(accuracy["keras_float"]), "—", "—"),
            ("TFLite float32", percent(accuracy["tflite_float32"]), _size(sizes["float32"]),
             _ms(latency.get("float32_ms")))]
    if metrics["quantization"] != "none":
        rows.append((f"TFLite {metrics['quantization']}", percent(accuracy["tflite_quantized"]),
                     _size(sizes["quantized"]), _ms(latency.get("quantized_ms"))))
    return rows


def summary_table(metrics: dict[str, Any]) -> str:
    """The plain-text table printed at the end of a run."""
    latency = metrics["latency"]
    where = f"latency ({latency['device']}, {latency['num_threads']} thread)" if latency else "latency"
    rows = [("artifact", "held-out top-1", "size", where), *summary_rows(metrics)]
    widths = [max(len(row[column]) for row in rows) for column in range(4)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    lines.append(f"top-1 agreement, {metrics['quantization']} vs float32: "
                 f"{percent(metrics['agreement_quantized_vs_float'])}")
    comparison = metrics.get("qat_comparison")
    if comparison:
        lines.append(f"int8 of the float model ({percent(comparison['float_before_qat'])}): post-training "
                     f"{percent(comparison['int8_ptq'])}, after quantization-aware training "
                     f"{percent(comparison['int8_qat'])}")
    distillation = metrics.get("distillation")
    if distillation and distillation.get("student_alone_val_accuracy") is not None:
        lines.append(f"distilled student {percent(distillation['student_distilled_val_accuracy'])} vs trained "
                     f"alone {percent(distillation['student_alone_val_accuracy'])} (Keras float, same epochs)")
    if metrics["sparsity"]["overall"] is not None:
        lines.append(f"sparsity ({metrics['sparsity']['method']}): {metrics['sparsity']['overall']:.3f} overall")
    if metrics.get("macs_before_pruning"):
        lines.append(f"channels pruned: MACs {metrics['macs_before_pruning']:,} -> {metrics['macs']:,}, params "
                     f"{metrics['params_before_pruning']:,} -> {metrics['params']:,}")
    lines.append("stages: " + ", ".join(f"{name} {value:.1f}s" for name, value in metrics["stages"].items()))
    return "\n".join(lines)


def markdown(metrics: dict[str, Any], sections: list[list[str]]) -> str:
    """report.md: what was run, the numbers, each stage's section, and where the artifacts are."""
    dataset, training = metrics["dataset"], metrics["training"]
    macs = metrics["macs"]
    lines = [
        f"# {metrics['model']} (width {metrics['width_multiplier']:g}) on {dataset['name']}",
        "",
        f"- data: {dataset['num_classes']} classes, {dataset['num_train']} training / {dataset['num_val']} held-out "
        f"images at {dataset['image_size']}x{dataset['image_size']} ({dataset['skipped_files']} unreadable skipped)",
        f"- network: {metrics['params']:,} parameters"
        + (f", {macs / 1e6:.2f} M multiply-adds per image" if macs is not None else ""),
        f"- training: {training['epochs']} epochs, {training['optimizer']} lr {training['learning_rate']:g} "
        f"(cosine), weight decay {training['weight_decay']:g}, label smoothing {training['label_smoothing']:g}, "
        f"BatchNorm momentum {training['bn_momentum']:g}, seed {training['seed']}",
        f"- quantization: {metrics['quantization']}" + (" after quantization-aware training" if metrics["qat"] else ""),
        "",
        "| artifact | held-out top-1 | size | latency |",
        "|---|---|---|---|",
        *[f"| {' | '.join(row)} |" for row in summary_rows(metrics)],
        "",
        f"Top-1 agreement of the {metrics['quantization']} model with the float32 model: "
        f"{percent(metrics['agreement_quantized_vs_float'])}.",
    ]
    for section in sections:
        lines += ["", *section]
    lines += ["", "## Stages", "", "| stage | seconds |", "|---|---|",
              *[f"| {name} | {value:.1f} |" for name, value in metrics["stages"].items()],
              "", f"Run directory: `{metrics['run_dir']}`. Plot: `{layout.PLOT}`.", ""]
    return "\n".join(lines)


def write_plot(path: Path, metrics: dict[str, Any], histories: dict[str, dict[str, list]]) -> None:
    """Training curves (held-out accuracy per epoch of each trained model) beside top-1 per artifact."""
    import io

    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    from matplotlib import pyplot

    from export.files import write_bytes_atomic

    figure, (curves, bars) = pyplot.subplots(1, 2, figsize=(11, 4))
    for name, history in histories.items():
        for key, style, split in (("val_accuracy", "-", "held-out"), ("accuracy", ":", "training")):
            values = history.get(key)
            if values:
                curves.plot(range(1, len(values) + 1), values, style, label=f"{name}: {split}")
    curves.set(xlabel="epoch", ylabel="top-1", title="training curves")
    curves.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    curves.grid(alpha=0.3)
    if curves.lines:
        curves.legend(fontsize=8)
    accuracy = metrics["accuracy"]
    labels = ["Keras float", "TFLite float32", f"TFLite {metrics['quantization']}"]
    values = [accuracy["keras_float"], accuracy["tflite_float32"], accuracy["tflite_quantized"]]
    shown = [(label, value) for label, value in zip(labels, values) if value is not None]
    bars.bar([label for label, _ in shown], [value for _, value in shown], color=["#777", "#49c", "#e83"][: len(shown)])
    for index, (_, value) in enumerate(shown):
        bars.text(index, value, f"{100 * value:.1f}%", ha="center", va="bottom")
    bars.set(ylim=(0, 1.05), ylabel="held-out top-1", title=f"{metrics['model']} on {metrics['dataset']['name']}")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    pyplot.close(figure)
    write_bytes_atomic(path, buffer.getvalue())
