"""The quantization_report stage: where a post-training int8 model loses its float model's answers, per layer, on
the held-out images (export.quantization_report), with what the int8 remedies tried; the top offenders and a plot
of the error by depth go into report.md, the whole table into metrics.json."""
from __future__ import annotations

import dataclasses
import logging
from typing import Any

from export import layout
from pipeline.config import RunConfig
from pipeline.stage import RunContext, Stage, Summary
from pipeline.stages.convert import is_post_training_int8

log = logging.getLogger(__name__)

# Held-out images the report runs on: the per-layer statistics settle well before, and each image is a pair of
# interpreter runs that keep every tensor.
REPORT_IMAGES = 1000
TOP_OFFENDERS = 5


@dataclasses.dataclass
class QuantizationReportSummary(Summary):
    report: dict[str, Any]


class QuantizationReportStage(Stage):
    name = "quantization_report"
    sections = ("data", "convert")
    Result = QuantizationReportSummary

    def enabled(self, config: RunConfig) -> bool:
        return is_post_training_int8(config)

    def reads(self, context: RunContext) -> list[str]:
        return [layout.CALIBRATED_FLOAT_TFLITE, layout.converted(layout.quantized_tflite("int8"))]

    def writes(self, context: RunContext) -> list[str]:
        return [layout.QUANTIZATION_PLOT]

    def run(self, context: RunContext) -> QuantizationReportSummary:
        from export.files import write_bytes_atomic
        from export.quantization_report import error_by_depth_png, quantization_report

        reference, int8 = (context.path(name).read_bytes() for name in self.reads(context))
        images, _ = context.data.val_arrays()
        report = quantization_report(reference, int8, images[:REPORT_IMAGES])
        write_bytes_atomic(context.path(layout.QUANTIZATION_PLOT), error_by_depth_png(report))
        return QuantizationReportSummary(report=report)

    def log_result(self, result: QuantizationReportSummary, context: RunContext) -> None:
        from export.quantization_report import top_offenders

        worst = top_offenders(result.report, 1)
        log.info("int8 vs its calibrated float model: top-1 agreement %.4f, mean KL %.5f%s",
                 result.report["top1_agreement"], result.report["mean_kl_divergence"],
                 f"; worst range: {worst[0]['layer']} ({worst[0]['range_error']:.3f})" if worst else "")
        measured, goal = _agreement_and_goal(context)
        if measured is not None and measured < goal:
            log.warning("%s", fidelity_verdict(context, result.report).replace("**", ""))  # Markdown bold off

    def metrics(self, result: QuantizationReportSummary, context: RunContext) -> dict[str, Any]:
        converted = context.summaries.get("convert_verify")
        return {"quantization_report": {**result.report,
                                        "remedies": converted.int8_remedies if converted else None}}

    def report(self, result: QuantizationReportSummary, context: RunContext) -> list[str]:
        from export.quantization_report import markdown_lines

        converted = context.summaries.get("convert_verify")
        remedies = (converted.int8_remedies if converted else None) or {}
        verdict = fidelity_verdict(context, result.report)
        return ["## int8 quantization report", "", *markdown_lines(result.report, TOP_OFFENDERS), "",
                f"![int8 error by depth]({layout.QUANTIZATION_PLOT})", "",
                f"int8 remedies: {remedies.get('mode')}; ran: {remedies.get('remedies_ran')}; chosen: "
                f"{remedies.get('chosen')}.", *(["", verdict] if verdict else [])]


def _agreement_and_goal(context: RunContext) -> tuple[float | None, float]:
    """The shipped int8 model's top-1 agreement with float on XNNPACK (None where not measured), and its goal."""
    converted = context.summaries.get("convert_verify")
    return (converted.agreement_quantized_vs_float if converted else None), context.config.int8_min_agreement


def fidelity_verdict(context: RunContext, report: dict[str, Any] | None = None) -> str | None:
    """One sentence on whether the shipped int8 model keeps its float model's answers on the held-out images
    (goal: --int8_min_agreement), and where it does not, which answers int8 changed (from the quantization `report`)
    and what to do; None where conversion measured no agreement.

    The number is the convert stage's, on XNNPACK as the app runs the model; the per-layer table above runs TFLite's
    reference kernels (it reads every tensor), whose int8 rounding differs, so its agreement differs too
    (docs/design.md, "int8 fidelity")."""
    measured, goal = _agreement_and_goal(context)
    if measured is None:
        return None
    if measured >= goal:
        return (f"int8 keeps the float model's top-1 answer on {measured:.2%} of the held-out images (goal {goal:.0%}), "
                f"run as the app runs it, on XNNPACK.")
    near_ties = ""
    if report and "changed_answers" in report:
        near_ties = (f" Of the {report['changed_answers']} answers int8 changes on the reference kernels, "
                     f"{report['changed_near_ties']} are near-ties the float model itself barely decided.")
    # Measured (docs/design.md, "int8 fidelity"): no range or bias remedy moved agreement beyond a seed's noise,
    # and the answers int8 changed were near-ties; QAT trains the int8 model itself rather than matching float.
    return (f"**int8 misses its fidelity goal**: it keeps the float model's top-1 answer on {measured:.2%} of the "
            f"held-out images on XNNPACK (goal {goal:.0%}), after the remedies above.{near_ties} Where that is too "
            f"many, quantization-aware training (`--qat`) trains the int8 model itself; the table above shows which "
            f"layers lose most.")
