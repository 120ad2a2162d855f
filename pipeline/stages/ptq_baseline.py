"""The ptq_baseline stage (--qat with int8): the float model QAT starts from, quantized after training instead,
so one run shows what quantization-aware training bought."""
from __future__ import annotations

import dataclasses
import logging
from typing import Any

from export import layout
from pipeline.config import RunConfig
from pipeline.stage import RunContext, Stage, Summary
from pipeline.train import load_model

log = logging.getLogger(__name__)


@dataclasses.dataclass
class PtqBaselineSummary(Summary):
    keras_float: float
    tflite_int8_ptq: float
    path: str


class PtqBaselineStage(Stage):
    name = "ptq_baseline"
    sections = ("data", "convert")

    Result = PtqBaselineSummary
    output = layout.PTQ_BASELINE_TFLITE

    def enabled(self, config: RunConfig) -> bool:
        return config.qat and config.quantize == "int8"

    def run(self, context: RunContext) -> PtqBaselineSummary:
        from pipeline.convert_verify import post_training_baseline

        result = post_training_baseline(load_model(context.path(context.model_file)), context.data,
                                        context.path(layout.PTQ_BASELINE_TFLITE), context.config.io_dtype,
                                        context.config.scores, context.config.int8_remedies,
                                        context.config.int8_min_agreement)
        return PtqBaselineSummary(**result, path=layout.PTQ_BASELINE_TFLITE)

    def log_result(self, result: PtqBaselineSummary, context: RunContext) -> None:
        log.info("post-training int8 of the same float model (baseline for QAT): held-out top-1 %.4f (float %.4f)",
                 result.tflite_int8_ptq, result.keras_float)

    def comparison(self, result: PtqBaselineSummary, context: RunContext) -> dict[str, Any]:
        converted = context.summaries.get("convert_verify")
        return {"float_before_qat": result.keras_float, "int8_ptq": result.tflite_int8_ptq,
                "int8_qat": converted.accuracy["tflite_quantized"] if converted else None}

    def metrics(self, result: PtqBaselineSummary, context: RunContext) -> dict[str, Any]:
        return {"qat_comparison": self.comparison(result, context)}

    def report(self, result: PtqBaselineSummary, context: RunContext) -> list[str]:
        from pipeline.report import percent

        comparison = self.comparison(result, context)
        return ["## Quantization-aware training", "",
                f"int8 of the float model ({percent(comparison['float_before_qat'])}): post-training "
                f"{percent(comparison['int8_ptq'])}, after quantization-aware training {percent(comparison['int8_qat'])}."]
