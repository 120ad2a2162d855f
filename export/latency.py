"""One benchmark dispatch for every command: time .tflite files on the host (LiteRT here) or on an Android phone
over adb (`benchmark_model`), interleaved round by round so the models compared share the machine's state.

`pipeline.run`'s benchmark stage, `pipeline.bench` and `pipeline.accuracy_bench` all measure through
`measure_latency`; the latency of each result is the median of its rounds' medians.
"""
from __future__ import annotations

import os
from typing import Any, Sequence

from export.benchmark import BenchmarkResult, BenchmarkSettings

DEVICES = ("host", "adb")


def measure_latency(
    paths: Sequence[str | os.PathLike],
    settings: BenchmarkSettings,
    repeats: int,
    device: str = "host",
    measure_memory: bool = True,
    device_options: dict[str, Any] | None = None,
) -> list[BenchmarkResult]:
    """One result per path, in order; `device_options` are export.adb.benchmark_on_device's (with `serial`)."""
    if device not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {device!r}.")
    if device == "host":
        from export.benchmark import benchmark_host_interleaved

        return benchmark_host_interleaved(paths, settings, repeats=repeats, measure_peak_memory=measure_memory)
    from export.adb import benchmark_on_device, select_device

    options = {key: value for key, value in (device_options or {}).items() if value is not None}
    adb = select_device(options.pop("serial", None))
    profile = options.pop("enable_op_profiling", True)
    rounds: list[list[BenchmarkResult]] = [[] for _ in paths]
    for round_index in range(repeats):
        first = round_index == 0  # memory and the op profile once: they do not change between rounds
        for index, path in enumerate(paths):
            rounds[index].append(benchmark_on_device(path, adb, settings, measure_peak_memory=measure_memory and first,
                                                     enable_op_profiling=profile and first, **options))
    results = []
    for per_round in rounds:
        result = per_round[0]
        result.repeat_medians_ms = [r.median_ms if r.median_ms is not None else r.mean_ms for r in per_round]
        result.notes.append(f"{repeats} interleaved round(s); latency_ms = median of the rounds' medians")
        results.append(result)
    return results
