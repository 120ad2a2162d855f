"""export.latency: the one benchmark dispatch (host or adb), interleaved round by round."""
from __future__ import annotations

import pytest

from export.benchmark import BenchmarkSettings
from export.latency import measure_latency


def test_device_mode_interleaves_rounds_and_profiles_once(monkeypatch):
    from export import adb
    from export.benchmark import BenchmarkResult

    calls = []

    def fake_benchmark_on_device(path, device, settings, **options):
        calls.append((path, options))
        latency = {"a.tflite": 2.0, "b.tflite": 5.0}[path] + 0.1 * len(calls)
        return BenchmarkResult(model=path, runner=adb.BINARY_RUNNER, device={"model": "Pixel 7"}, settings=settings,
                               num_runs=50, init_ms=1.0, first_inference_ms=3.0, mean_ms=latency, std_ms=0.1,
                               min_ms=latency, max_ms=latency, median_ms=latency)

    serials = []
    monkeypatch.setattr(adb, "select_device", lambda serial=None: serials.append(serial) or f"device {serial}")
    monkeypatch.setattr(adb, "benchmark_on_device", fake_benchmark_on_device)
    results = measure_latency(["a.tflite", "b.tflite"], BenchmarkSettings(), repeats=3, device="adb",
                                    device_options={"serial": "X", "binary": "bm", "enable_op_profiling": True})
    assert [path for path, _ in calls] == ["a.tflite", "b.tflite"] * 3  # round by round, interleaved
    assert [options["enable_op_profiling"] for _, options in calls] == [True, True] + [False] * 4
    assert [options["measure_peak_memory"] for _, options in calls] == [True, True] + [False] * 4
    assert all(options["binary"] == "bm" for _, options in calls) and serials == ["X"]
    assert results[0].repeat_medians_ms == pytest.approx([2.1, 2.3, 2.5]) and results[0].latency_ms == pytest.approx(2.3)


def test_an_unknown_device_is_refused():
    with pytest.raises(ValueError, match="device must be one of host, adb"):
        measure_latency(["a.tflite"], BenchmarkSettings(), repeats=1, device="phone")
