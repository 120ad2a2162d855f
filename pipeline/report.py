"""The report stage: `metrics.json` (stable keys, for machines), `report.md` (for people), `report.png` (a plot),
and the summary table printed at the end of a run.

metrics.json always has these keys (a value is null where the run did not produce it):
model, width_multiplier, dataset{name, num_classes, num_train, num_val, image_size, skipped_files}, params, macs,
memory_access_cost, accuracy{keras_float, tflite_float32, tflite_quantized}, agreement_quantized_vs_float,
size_bytes{float32, quantized}, quantization, io_dtype, qat_comparison{float_before_qat, int8_ptq, int8_qat} (only
with --qat and int8), sparsity{method, target, overall, per_layer},
stages{name: seconds}, latency{device, num_threads, float32_ms, quantized_ms, details}, distillation,
training{epochs, optimizer, learning_rate, weight_decay, label_smoothing, bn_momentum, seed}, verification,
config_fingerprint.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from export.files import write_json_atomic, write_text_atomic
from models.complexity import analyze
from pipeline.config import RunConfig
from pipeline.data import DataSplits

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
REPORT_FILE = "report.md"
PLOT_FILE = "report.png"
OUTPUTS = [METRICS_FILE, REPORT_FILE, PLOT_FILE]
TRAINED_STAGES = ("teacher", "train", "student_alone")


def complexity(model) -> dict[str, Any]:
    """Parameters (with BatchNorm moving statistics, as Keras counts them), MACs and memory access cost."""
    result = analyze(model)
    return {"params": int(result.params), "macs": int(result.macs),
            "memory_access_cost": int(result.memory_access_cost)}


def build_metrics(
    config: RunConfig,
    data: DataSplits,
    summaries: dict[str, dict[str, Any]],
    seconds: dict[str, float],
    bn_momentum: float,
    run_dir: Path,
) -> dict[str, Any]:
    """The metrics.json content from the stages' summaries."""
    trained = summaries["train"]
    verification = dict(summaries.get("convert_verify") or {})
    accuracy = verification.get("accuracy") or {}
    sizes = verification.get("size_bytes") or {}
    prune = summaries.get("prune")
    benchmark = summaries.get("benchmark")
    latency = None
    if benchmark:
        models = benchmark.get("models", {})
        latency = {
            "device": benchmark.get("device"),
            "num_threads": benchmark.get("num_threads"),
            "float32_ms": (models.get("float32") or {}).get("latency_ms"),
            "quantized_ms": (models.get("quantized") or {}).get("latency_ms"),
            "details": models,
        }
    qat_comparison = None
    baseline = summaries.get("ptq_baseline")
    if baseline:
        qat_comparison = {"float_before_qat": baseline["keras_float"], "int8_ptq": baseline["tflite_int8_ptq"],
                          "int8_qat": accuracy.get("tflite_quantized")}
    distillation = None
    if config.distill:
        distillation = {
            "teacher": config.teacher or config.teacher_checkpoint,
            "teacher_val_accuracy": (summaries.get("teacher") or {}).get("val_accuracy",
                                                                        trained.get("teacher_val_accuracy")),
            "temperature": config.distill_temperature,
            "alpha": config.distill_alpha,
            "student_distilled_val_accuracy": trained["val_accuracy"],
            "student_alone_val_accuracy": (summaries.get("student_alone") or {}).get("val_accuracy"),
        }
    return {
        "model": config.model,
        "width_multiplier": config.width_multiplier,
        "dataset": {
            "name": config.dataset,
            "num_classes": data.num_classes,
            "num_train": data.num_train,
            "num_val": data.num_val,
            "image_size": data.image_size,
            "skipped_files": len(data.skipped_files),
        },
        "params": trained.get("params"),
        "macs": trained.get("macs"),
        "memory_access_cost": trained.get("memory_access_cost"),
        "accuracy": {
            "keras_float": accuracy.get("keras_float", trained["val_accuracy"]),
            "tflite_float32": accuracy.get("tflite_float32"),
            "tflite_quantized": accuracy.get("tflite_quantized"),
        },
        "agreement_quantized_vs_float": verification.get("agreement_quantized_vs_float"),
        "size_bytes": {"float32": sizes.get("float32"), "quantized": sizes.get("quantized")},
        "quantization": config.quantize,
        "io_dtype": config.io_dtype if config.quantize == "int8" else None,
        "qat": config.qat,
        "qat_comparison": qat_comparison,
        "sparsity": {
            "method": config.prune,
            "target": config.prune_sparsity if prune else None,
            "overall": prune.get("overall_sparsity") if prune else None,
            "per_layer": prune.get("per_layer_sparsity") if prune else None,
        },
        "stages": seconds,
        "latency": latency,
        "distillation": distillation,
        "training": {
            "epochs": config.epochs,
            "batch_size": config.batch_size,
            "optimizer": config.optimizer,
            "learning_rate": config.learning_rate,
            "weight_decay": config.weight_decay,
            "label_smoothing": config.label_smoothing,
            "bn_momentum": bn_momentum,
            "seed": config.seed,
        },
        "verification": {key: value for key, value in verification.items()
                         if key not in ("accuracy", "size_bytes", "agreement_quantized_vs_float")},
        "run_dir": str(run_dir),
        "config_fingerprint": config.fingerprint(),
        # Channel pruning changes the network itself: params and MACs describe the final model, and the
        # numbers before pruning are kept beside them.
        **_channel_pruning_complexity(prune, trained),
    }


def _channel_pruning_complexity(prune: dict[str, Any] | None, trained: dict[str, Any]) -> dict[str, Any]:
    if not prune or "macs_before_pruning" not in prune:
        return {}
    return {"params": prune["params"], "macs": prune["macs"], "memory_access_cost": prune["memory_access_cost"],
            "params_before_pruning": prune["params_before_pruning"],
            "macs_before_pruning": prune["macs_before_pruning"], "channels": prune.get("channels"),
            "memory_access_cost_before_pruning": trained.get("memory_access_cost")}


def write_report(run_dir: Path, metrics: dict[str, Any], histories: dict[str, dict[str, list]]) -> None:
    """Write metrics.json, report.md and report.png into `run_dir` (each atomically)."""
    run_dir = Path(run_dir)
    write_json_atomic(run_dir / METRICS_FILE, metrics)
    write_text_atomic(run_dir / REPORT_FILE, markdown(metrics))
    write_plot(run_dir / PLOT_FILE, metrics, histories)


def read_metrics(run_dir: Path) -> dict[str, Any]:
    return json.loads((Path(run_dir) / METRICS_FILE).read_text())


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.2f}%"


def _size(value: int | None) -> str:
    return "—" if value is None else f"{value / 1e6:.2f} MB" if value >= 1e5 else f"{value / 1e3:.1f} kB"


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f} ms"


def summary_rows(metrics: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(artifact, held-out top-1, size, latency) rows."""
    accuracy, sizes, latency = metrics["accuracy"], metrics["size_bytes"], metrics["latency"] or {}
    rows = [("Keras float", _percent(accuracy["keras_float"]), "—", "—"),
            ("TFLite float32", _percent(accuracy["tflite_float32"]), _size(sizes["float32"]),
             _ms(latency.get("float32_ms")))]
    if metrics["quantization"] != "none":
        rows.append((f"TFLite {metrics['quantization']}", _percent(accuracy["tflite_quantized"]),
                     _size(sizes["quantized"]), _ms(latency.get("quantized_ms"))))
    return rows


def summary_table(metrics: dict[str, Any]) -> str:
    """The plain-text table printed at the end of a run."""
    latency = metrics["latency"]
    where = f"latency ({latency['device']}, {latency['num_threads']} thread)" if latency else "latency"
    header = ("artifact", "held-out top-1", "size", where)
    rows = [header, *summary_rows(metrics)]
    widths = [max(len(row[column]) for row in rows) for column in range(4)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    lines.append(f"top-1 agreement, {metrics['quantization']} vs float32: "
                 f"{_percent(metrics['agreement_quantized_vs_float'])}")
    lines += _qat_comparison_lines(metrics)
    distillation = metrics.get("distillation")
    if distillation and distillation.get("student_alone_val_accuracy") is not None:
        lines.append(f"distilled student {_percent(distillation['student_distilled_val_accuracy'])} vs trained "
                     f"alone {_percent(distillation['student_alone_val_accuracy'])} (Keras float, same epochs)")
    if metrics["sparsity"]["overall"] is not None:
        lines.append(f"sparsity ({metrics['sparsity']['method']}): {metrics['sparsity']['overall']:.3f} overall")
    stages = ", ".join(f"{name} {value:.1f}s" for name, value in metrics["stages"].items())
    lines.append(f"stages: {stages}")
    return "\n".join(lines)


def _qat_comparison_lines(metrics: dict[str, Any]) -> list[str]:
    comparison = metrics.get("qat_comparison")
    if not comparison:
        return []
    return [f"int8 of the float model ({_percent(comparison['float_before_qat'])}): post-training "
            f"{_percent(comparison['int8_ptq'])}, after quantization-aware training {_percent(comparison['int8_qat'])}"]


def markdown(metrics: dict[str, Any]) -> str:
    """report.md: what was run, the numbers, and where the artifacts are."""
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
        f"{_percent(metrics['agreement_quantized_vs_float'])}.",
    ]
    lines += _qat_comparison_lines(metrics)
    if metrics["latency"]:
        lines.append(f"Latency: median on `{metrics['latency']['device']}` with {metrics['latency']['num_threads']} "
                     f"thread(s) (see metrics.json for p90 and memory).")
    distillation = metrics.get("distillation")
    if distillation:
        lines += ["", "## Distillation", "",
                  f"Teacher `{distillation['teacher']}` (held-out {_percent(distillation['teacher_val_accuracy'])}), "
                  f"T = {distillation['temperature']:g}, alpha = {distillation['alpha']:g}: distilled student "
                  f"{_percent(distillation['student_distilled_val_accuracy'])}"
                  + (f", the same student trained alone {_percent(distillation['student_alone_val_accuracy'])}."
                     if distillation.get("student_alone_val_accuracy") is not None else ".")]
    sparsity = metrics["sparsity"]
    if sparsity["overall"] is not None:
        lines += ["", "## Pruning", "", f"{sparsity['method']}, target {sparsity['target']:g}: overall sparsity "
                  f"{sparsity['overall']:.3f}.", "", "| layer | sparsity |", "|---|---|"]
        lines += [f"| {name} | {value:.3f} |" for name, value in (sparsity["per_layer"] or {}).items()]
    failed = [name for name, passed in (metrics["verification"].get("checks") or {}).items() if not passed]
    if failed:
        lines += ["", f"**Failed verification checks: {', '.join(failed)}** (see metrics.json)."]
    problems = metrics["verification"].get("integer_only_problems")
    if problems:
        lines += ["", "## Integer-only check", "", *[f"- {problem}" for problem in problems]]
    lines += ["", "## Stages", "", "| stage | seconds |", "|---|---|",
              *[f"| {name} | {value:.1f} |" for name, value in metrics["stages"].items()],
              "", f"Run directory: `{metrics['run_dir']}`. Plot: `{PLOT_FILE}`.", ""]
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
