"""The zoo speed report's rendering: `bench.md` (one table and how to read it), `macs_vs_latency.png` (the
ShuffleNetV2 paper's "FLOPs are not speed" picture) and `bench.json`, from `pipeline.bench`'s JSON-ready report."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

PRECISIONS = ("float32", "int8")


def _fmt(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _latency(row: dict[str, Any], precision: str) -> str:
    cpu = row.get("cpu_time_ms", {}).get(precision)
    return _fmt(row["latency_ms"][precision]) + (f" ({_fmt(cpu)})" if cpu is not None else "")


def _partitions(report: dict[str, Any] | None) -> str:
    if not report:
        return "—"
    text = str(report["partitions"])
    if report.get("undelegated_ops"):
        text += " (" + ", ".join(f"{op}×{count}" for op, count in report["undelegated_ops"].items()) + ")"
    return text


def _gpu(row: dict[str, Any], precision: str) -> str:
    report = (row.get("gpu") or {}).get(precision)
    return report["summary"] if report else "—"


def markdown_report(report: dict[str, Any]) -> str:
    """The report as one Markdown document: settings, device, the table, and how to read it."""
    config, settings, device = report["config"], report["config"]["settings"], report["device"]
    where = ", ".join(f"{k}: {v}" for k, v in device.items() if v not in (None, ""))
    lines = [
        f"# Model zoo speed report ({config['image_size']}×{config['image_size']}, batch 1)",
        "",
        f"Runner `{report['runner']}` on {where}. {settings['num_threads']} thread(s), XNNPACK "
        f"{'on' if settings['use_xnnpack'] else 'off'}, {config['repeats']} interleaved rounds of "
        f"≥ {settings['num_runs']} runs after {settings['warmup_runs']} warm-up runs; latency = median of the "
        f"rounds' medians. Created {report['created']}, {report['total_seconds']} s in all "
        f"({report['build_seconds']} s building and converting).",
        "",
        "| model | source | params | MACs (M) | MAC (M elem.) | size f32 / int8 (MB) | float32 ms (CPU) | int8 ms (CPU) "
        "| int8 speedup | GMAC/s f32 / int8 | XNNPACK partitions f32 / int8 (undelegated ops) | peak mem f32 / int8 (MB) "
        "| GPU delegate f32 / f16 |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---|",
    ]
    for row in report["models"]:
        macs = row.get("macs")
        mac = row.get("memory_access_cost")
        results = row["results"]
        lines.append(
            f"| {row['name']} | {row['source']} | {row['params']:,} | {_fmt(macs / 1e6 if macs else None, 1)} "
            f"| {_fmt(mac / 1e6 if mac else None, 2)} "
            f"| {_fmt(row['size_mb']['float32'])} / {_fmt(row['size_mb']['int8'])} "
            f"| {_latency(row, 'float32')} | {_latency(row, 'int8')} | {_fmt(row['int8_speedup'])}× "
            f"| {_fmt(row['gmacs_per_s']['float32'], 1)} / {_fmt(row['gmacs_per_s']['int8'], 1)} "
            f"| {_partitions(row['xnnpack']['float32'])} / {_partitions(row['xnnpack']['int8'])} "
            f"| {_fmt(results['float32']['peak_memory_mb'], 1)} / {_fmt(results['int8']['peak_memory_mb'], 1)} "
            f"| {_gpu(row, 'float32')} / {_gpu(row, 'float16')} |"
        )
    decompositions = [(row["name"], precision, row["results"][precision]["runtime_decomposition"])
                      for row in report["models"] for precision in PRECISIONS
                      if row["results"][precision].get("runtime_decomposition")]
    if decompositions:
        categories = list(decompositions[0][2])
        lines += ["", "## Runtime decomposition (% of profiled time, benchmark_model op profile)", "",
                  "| model | precision | " + " | ".join(categories) + " |",
                  "|---|---|" + "---:|" * len(categories)]
        lines += [f"| {name} | {precision} | " + " | ".join(_fmt(shares[c], 1) for c in categories) + " |"
                  for name, precision, shares in decompositions]
    first = report["models"][0]["results"]["float32"] if report["models"] else {}
    lines += [
        "",
        "How to read it:",
        "- MACs: multiply-adds of convolutions and dense layers (the papers' FLOPs); MAC: ShuffleNetV2's memory "
        "access cost in elements (feature maps in + out + weights per layer), both from `models.complexity`.",
        "- ms: wall-clock latency; (CPU): the inference thread's CPU time at 1 thread, which leaves out the time "
        "the OS gave other processes: on a shared machine it is the steadier number for comparing models.",
        "- GMAC/s = MACs / latency: how well a network's arithmetic uses the CPU. Low values flag networks bound "
        "by memory traffic, element-wise ops or fragmentation (ShuffleNetV2's guidelines G1–G4).",
        "- Untrained weights, BatchNorm statistics set on the random calibration images (as training would set "
        "them; without, MobileNetV3's int8 hard-swish ADDs fall off XNNPACK): the speed is real, the accuracy "
        "is not measured here.",
        "- XNNPACK partitions: 1 means XNNPACK runs the whole graph; each undelegated op runs on a built-in "
        "kernel and splits the graph.",
        "- GPU delegate: the ops of the float32 and float16 models the TFLite GPU delegate would reject, from a static "
        "check of the graph (`export.gpu_compat`); \"all ops\" means none is known to be refused.",
        f"- Peak memory: {first.get('peak_memory_method', '')}.",
        f"- Per-op profile: {first.get('op_profile_note', '')}",
        "- Timing noise on a shared machine: compare models within one report (docs/design.md, 'Counting delegation and timing').",
    ]
    return "\n".join(lines) + "\n"


def plot_macs_vs_latency(report: dict[str, Any], path: str | os.PathLike) -> None:
    """MACs (x) against measured latency (y), float32 and int8, ours filled and keras.applications hollow."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(9, 6), dpi=120)
    colors = {"float32": "tab:blue", "int8": "tab:orange"}
    for precision in PRECISIONS:
        for source, marker, fill in (("ours", "o", True), ("keras.applications", "s", False)):
            points = [(row["macs"] / 1e6, row["latency_ms"][precision], row["name"]) for row in report["models"]
                      if row["source"] == source and row.get("macs") and row["latency_ms"][precision]]
            if not points:
                continue
            xs, ys, names = zip(*points)
            axis.scatter(xs, ys, marker=marker, s=46, label=f"{precision}, {source}",
                         facecolors=colors[precision] if fill else "none", edgecolors=colors[precision])
            for x, y, name in points:
                axis.annotate(name, (x, y), textcoords="offset points", xytext=(4, 3), fontsize=7)
    settings = report["config"]["settings"]
    axis.set_xlabel("multiply-adds (millions)")
    axis.set_ylabel("measured latency (ms, median)")
    axis.set_title(f"FLOPs are not speed: {report['config']['image_size']}px, {report['runner']}, "
                   f"{settings['num_threads']} thread(s)")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def write_report(report: dict[str, Any], output_dir: str | os.PathLike, json_path: str | None = None) -> dict[str, Path]:
    """Write bench.json, bench.md and macs_vs_latency.png into `output_dir` (and the JSON to `json_path` too)."""
    from export.files import write_json_atomic, write_text_atomic

    output_dir = Path(output_dir)
    paths = {"json": output_dir / "bench.json", "markdown": output_dir / "bench.md",
             "plot": output_dir / "macs_vs_latency.png"}
    write_json_atomic(paths["json"], report)
    if json_path:
        write_json_atomic(json_path, report)
        paths["json_copy"] = Path(json_path)
    write_text_atomic(paths["markdown"], markdown_report(report))
    plot_macs_vs_latency(report, paths["plot"])
    return paths
