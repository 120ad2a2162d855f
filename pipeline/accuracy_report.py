"""The accuracy targets of `pipeline.accuracy_bench`: each suite's runs as one row of numbers measured against its
target, and the Markdown tables of the report."""
from __future__ import annotations

from typing import Any, Sequence

from export import layout

PTQ_MAX_LOSS, QAT_MAX_LOSS, PRUNE_2_4_MAX_LOSS, CHANNELS_MAX_LOSS = 0.010, 0.005, 0.015, 0.010
# int8 PTQ's top-1 agreement with its float model: at least PTQ_MIN_AGREEMENT, or PTQ_MIN_AGREEMENT_STRONG where
# the float model is above STRONG_FLOAT (a better model has fewer borderline images to flip).
PTQ_MIN_AGREEMENT, PTQ_MIN_AGREEMENT_STRONG, STRONG_FLOAT = 0.95, 0.97, 0.65
CHANNELS_MIN_MAC_CUT, CHANNELS_MIN_LATENCY_CUT = 0.30, 0.20


def quantization_row(result: dict[str, Any], ptq_agreement: float) -> dict[str, Any]:
    """One quantization run's targets; `ptq_agreement` is the int8 PTQ model's top-1 agreement with its float model
    on the held-out images."""
    metrics = result["metrics"]
    comparison = metrics.get("qat_comparison") or {  # a run without QAT: its int8 model is the post-training one
        "float_before_qat": metrics["accuracy"]["keras_float"], "int8_ptq": metrics["accuracy"]["tflite_quantized"],
        "int8_qat": None}
    float_accuracy = comparison["float_before_qat"]
    ptq_loss = float_accuracy - comparison["int8_ptq"]
    qat_loss = None if comparison["int8_qat"] is None else float_accuracy - comparison["int8_qat"]
    min_agreement = PTQ_MIN_AGREEMENT_STRONG if float_accuracy > STRONG_FLOAT else PTQ_MIN_AGREEMENT
    return {"seed": result["metrics"]["training"]["seed"], "float": float_accuracy,
            "int8_ptq": comparison["int8_ptq"], "int8_qat": comparison["int8_qat"],
            "ptq_loss": ptq_loss, "qat_loss": qat_loss, "ptq_agreement": ptq_agreement,
            "ptq_min_agreement": min_agreement, "ptq_target_met": ptq_loss <= PTQ_MAX_LOSS,
            "ptq_agreement_met": ptq_agreement >= min_agreement,
            "qat_target_met": None if qat_loss is None else qat_loss <= QAT_MAX_LOSS}


def distillation_row(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One student over its seeds: mean accuracies, each seed's gain; met only if every seed gains."""
    runs = [result["metrics"]["distillation"] for result in results]
    distilled = [run["student_distilled_val_accuracy"] for run in runs]
    alone = [run["student_alone_val_accuracy"] for run in runs]
    gains = [d - a for d, a in zip(distilled, alone)]
    return {"teacher": runs[0]["teacher_val_accuracy"], "distilled": sum(distilled) / len(runs),
            "alone": sum(alone) / len(runs), "gain": sum(gains) / len(runs), "gains": gains,
            "seeds": [result["metrics"]["training"]["seed"] for result in results], "target_met": min(gains) > 0}


def prune_2_4_row(result: dict[str, Any]) -> dict[str, Any]:
    before = result["stage_summaries"]["train"]["val_accuracy"]
    after = result["stage_summaries"]["prune"]["val_accuracy"]
    metrics = result["metrics"]
    return {"float": before, "pruned": after, "pruned_int8": metrics["accuracy"]["tflite_quantized"],
            "sparsity": metrics["sparsity"]["overall"], "loss": before - after,
            "target_met": before - after <= PRUNE_2_4_MAX_LOSS}


def channels_row(pruned: dict[str, Any], baseline: dict[str, Any], latency: dict[str, float],
                 latency_224: dict[str, float] | None = None, cpu_time: dict[str, float] | None = None,
                 cpu_time_224: dict[str, float] | None = None) -> dict[str, Any]:
    """The channel-pruning targets of one cut; the latencies are wall-clock medians (ms) by "baseline"/"pruned",
    and the optional CPU times those of the inference thread, which time lent to other processes does not move."""
    metrics, base = pruned["metrics"], baseline["metrics"]
    mac_cut = 1 - metrics["macs"] / metrics["macs_before_pruning"]
    loss = base["accuracy"]["keras_float"] - metrics["accuracy"]["keras_float"]
    latency_cut = 1 - latency["pruned"] / latency["baseline"]
    return {
        "macs_before": metrics["macs_before_pruning"], "macs_after": metrics["macs"],
        "params_before": metrics["params_before_pruning"], "params_after": metrics["params"],
        "mac_cut": mac_cut, "baseline_float": base["accuracy"]["keras_float"],
        "pruned_float": metrics["accuracy"]["keras_float"], "baseline_int8": base["accuracy"]["tflite_quantized"],
        "pruned_int8": metrics["accuracy"]["tflite_quantized"], "loss": loss,
        "int8_latency_ms_before": latency["baseline"], "int8_latency_ms_after": latency["pruned"],
        "latency_cut": latency_cut,
        "int8_latency_ms_224": latency_224,
        "latency_cut_224": 1 - latency_224["pruned"] / latency_224["baseline"] if latency_224 else None,
        "int8_cpu_time_ms": cpu_time, "int8_cpu_time_ms_224": cpu_time_224,
        "cpu_time_cut": 1 - cpu_time["pruned"] / cpu_time["baseline"] if cpu_time else None,
        "cpu_time_cut_224": 1 - cpu_time_224["pruned"] / cpu_time_224["baseline"] if cpu_time_224 else None,
        "target_met": mac_cut >= CHANNELS_MIN_MAC_CUT and loss <= CHANNELS_MAX_LOSS
        and latency_cut >= CHANNELS_MIN_LATENCY_CUT,
    }


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}"


def _points(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:+.1f}"


def _met(flag: bool | None) -> str:
    return "—" if flag is None else "yes" if flag else "**no**"


def _network(row: dict[str, Any]) -> str:
    return f"{row['model']} {row['width']:g}"


def _cpu_cut(cut: float | None) -> str:
    return "" if cut is None else f"; CPU time −{100 * cut:.1f}%"


def _channels_cells(r: dict[str, Any]) -> list[str]:
    return [f"{_network(r)} ({r['cut']})",
            f"{r['macs_before'] / 1e6:.1f} → {r['macs_after'] / 1e6:.1f} (−{100 * r['mac_cut']:.1f}%)",
            f"{r['params_before']:,} → {r['params_after']:,}", f"{_pct(r['baseline_float'])} / {_pct(r['pruned_float'])}",
            _points(r["loss"]), f"{_pct(r['baseline_int8'])} / {_pct(r['pruned_int8'])}",
            f"{r['int8_latency_ms_before']:.3f} → {r['int8_latency_ms_after']:.3f} (−{100 * r['latency_cut']:.1f}%"
            f"{_cpu_cut(r.get('cpu_time_cut'))})",
            (f"{r['int8_latency_ms_224']['baseline']:.2f} → {r['int8_latency_ms_224']['pruned']:.2f} "
             f"(−{100 * r['latency_cut_224']:.1f}%{_cpu_cut(r.get('cpu_time_cut_224'))})"
             if r.get("int8_latency_ms_224") else "—"),
            _met(r["target_met"])]


# suite -> (section title, columns as (name, numeric), a row's cells)
_TABLES = {
    "quantization": (
        "int8 quantization (loss = float − int8, in points)",
        [("network", False), ("seed", True), ("float", True), ("int8 PTQ", True), ("PTQ loss", True),
         ("≤ 1.0?", False), ("PTQ agreement", True), ("≥ 95 (97)?", False), ("int8 QAT", True), ("QAT loss", True),
         ("≤ 0.5?", False)],
        lambda r: [_network(r), str(r["seed"]), _pct(r["float"]), _pct(r["int8_ptq"]), _points(r["ptq_loss"]),
                   _met(r["ptq_target_met"]), f"{100 * r['ptq_agreement']:.2f}", _met(r["ptq_agreement_met"]),
                   _pct(r["int8_qat"]), _points(r["qat_loss"]), _met(r["qat_target_met"])],
    ),
    "distillation": (
        "Distillation (Keras float)",
        [("student", False), ("seeds", False), ("teacher", True), ("distilled (mean)", True),
         ("alone, same epochs (mean)", True), ("gain per seed", False), ("beats alone at every seed?", False)],
        lambda r: [_network(r), ", ".join(map(str, r["seeds"])), _pct(r["teacher"]), _pct(r["distilled"]),
                   _pct(r["alone"]), " / ".join(_points(gain) for gain in r["gains"]), _met(r["target_met"])],
    ),
    "prune_2_4": (
        "2:4 pruning (Keras float before and after fine-tuning)",
        [("network", False), ("float", True), ("2:4 pruned", True), ("sparsity", True), ("loss", True),
         ("≤ 1.5?", False), ("pruned int8", True)],
        lambda r: [_network(r), _pct(r["float"]), _pct(r["pruned"]), f"{r['sparsity']:.3f}", _points(r["loss"]),
                   _met(r["target_met"]), _pct(r["pruned_int8"])],
    ),
    "channels": (
        "Channel pruning (Network Slimming) vs the unpruned network trained for the same total epochs",
        [("network", False), ("MACs (M) before → after", False), ("params before → after", False),
         ("float: unpruned / pruned", False), ("loss", True), ("int8: unpruned / pruned", False),
         ("int8 ms before → after", False), ("int8 ms at 224 before → after", False), ("targets met?", False)],
        _channels_cells,
    ),
}


def markdown_report(report: dict[str, Any]) -> str:
    settings, rows = report["settings"], report["rows"]
    lines = [
        f"# Accuracy targets on {settings['dataset']}",
        "",
        f"{settings['image_size']}×{settings['image_size']} px, {settings['epochs']} training epochs from scratch, "
        f"{settings['fine_tune_epochs']} epochs of QAT / pruning fine-tuning, batch {settings['batch_size']}, seed "
        f"{settings['seed']}; top-1 in % on the held-out split. Created {report['created']} in {report['seconds']} s.",
    ]
    for suite, (title, columns, cells) in _TABLES.items():
        if rows.get(suite):
            lines += ["", f"## {title}", "", "| " + " | ".join(name for name, _ in columns) + " |",
                      "|" + "|".join("---:" if numeric else "---" for _, numeric in columns) + "|",
                      *["| " + " | ".join(cells(row)) + " |" for row in rows[suite]]]
    lines += ["", "Every number comes from the run directories under "
              f"`{settings['output_dir']}` ({layout.METRICS}, {layout.LEDGER}); the commands are in accuracy_bench.json."]
    return "\n".join(lines) + "\n"


