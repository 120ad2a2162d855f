"""The benchmark stage: latency of the run's TFLite models where --device says (host LiteRT, or a phone over adb),
through the one benchmark dispatch every command uses (export.latency)."""
from __future__ import annotations

import dataclasses
import logging
from typing import Any

from pipeline.config import RunConfig
from pipeline.stage import RunContext, Stage, Summary
from pipeline.stages.convert import model_files

log = logging.getLogger(__name__)

# Interleaved rounds per model on the host: the median of the rounds' medians is the latency.
HOST_REPEATS = 3


@dataclasses.dataclass
class BenchmarkSummary(Summary):
    device: str
    num_threads: int
    models: dict[str, dict[str, Any]]


class BenchmarkStage(Stage):
    name = "benchmark"
    sections = ()
    Result = BenchmarkSummary
    uses_data = False

    def enabled(self, config: RunConfig) -> bool:
        return config.device != "none"

    def reads(self, context: RunContext) -> list[str]:
        return list(model_files(context.config).values())

    def fingerprint_inputs(self, context: RunContext) -> dict[str, Any]:
        # Where it ran is part of what it measured, though not of the run's reproducible numbers.
        config = context.config
        return {**super().fingerprint_inputs(context), "device": config.device, "num_threads": config.num_threads,
                "serial": config.serial}

    def run(self, context: RunContext) -> BenchmarkSummary:
        from export.benchmark import BenchmarkSettings
        from export.latency import measure_latency

        config = context.config
        names = model_files(config)
        results = measure_latency([context.path(file) for file in names.values()],
                                  BenchmarkSettings(num_threads=config.num_threads), device=config.device,
                                  repeats=HOST_REPEATS if config.device == "host" else 1,
                                  device_options={"binary": config.benchmark_binary, "serial": config.serial})
        return BenchmarkSummary(device=config.device, num_threads=config.num_threads,
                                models={name: result.to_dict() for name, result in zip(names, results)})

    def metrics(self, result: BenchmarkSummary, context: RunContext) -> dict[str, Any]:
        return {"latency": {"device": result.device, "num_threads": result.num_threads,
                            "float32_ms": (result.models.get("float32") or {}).get("latency_ms"),
                            "quantized_ms": (result.models.get("quantized") or {}).get("latency_ms"),
                            "details": result.models}}

    def report(self, result: BenchmarkSummary, context: RunContext) -> list[str]:
        return [f"Latency: median on `{result.device}` with {result.num_threads} thread(s) (see metrics.json for p90 "
                f"and memory)."]
