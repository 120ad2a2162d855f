"""The convert_verify stage: the run's TFLite models, labels.txt and model_meta.json, and what each conversion kept,
measured on the held-out split (pipeline.convert_verify does the work)."""
from __future__ import annotations

import dataclasses
import logging
from typing import Any

from export import layout
from pipeline.stage import RunContext, Stage, Summary
from pipeline.train import load_model

log = logging.getLogger(__name__)


@dataclasses.dataclass
class ConvertSummary(Summary):
    """pipeline.convert_verify.VerifyResult as JSON: accuracies, sizes, graph facts and the checks that ran."""

    model_name: str
    quantization: str
    io_dtype: str | None
    sparse: bool
    keras_model: str
    accuracy: dict[str, float | None]
    agreement_quantized_vs_float: float | None
    size_bytes: dict[str, int | None]
    op_histogram: dict[str, dict[str, int]]
    xnnpack_partitions: dict[str, dict[str, Any]]
    sparse_tensors: dict[str, int]
    integer_only_problems: list[str] | None
    checks: dict[str, bool]
    passed: bool
    paths: dict[str, str | None]
    num_examples: int
    int8_remedies: dict[str, Any] | None = None
    gpu_compatibility: dict[str, dict[str, Any]] | None = None


def model_files(config) -> dict[str, str]:
    """The run's deployable TFLite files by artifact (`float32`, and `quantized` unless --quantize=none)."""
    return layout.model_files(config.quantize)


def is_post_training_int8(config) -> bool:
    """True where the int8 model is quantized after training (not from QAT): it has a calibrated float reference."""
    return config.quantize == "int8" and not config.qat


def client_ready(config, artifact: str) -> bool:
    """False for a raw int8-I/O model (--io_dtype int8), which MediaPipe Tasks refuses by design."""
    return not (artifact == "quantized" and config.quantize == "int8" and config.io_dtype == "int8")


class ConvertStage(Stage):
    name = "convert_verify"
    sections = ("data", "convert", "sparsify")  # --prune's method decides whether float weights are stored sparse
    Result = ConvertSummary

    def writes(self, context: RunContext) -> list[str]:
        reference = [layout.CALIBRATED_FLOAT_TFLITE] if is_post_training_int8(context.config) else []
        return [*[layout.converted(name) for name in model_files(context.config).values()], *reference,
                layout.LABELS, layout.META]

    def run(self, context: RunContext) -> ConvertSummary:
        from pipeline.convert_verify import convert_and_verify

        config = context.config
        if context.model_file == layout.QAT_MODEL:
            from pipeline.quantize import load_quantization_aware_model

            model = load_quantization_aware_model(context.path(context.model_file))
        else:
            model = load_model(context.path(context.model_file))
        result = convert_and_verify(model, context.data, context.run_dir, quantization=config.quantize,
                                    io_dtype=config.io_dtype, sparse=config.sparsify, model_name=config.model,
                                    scores=config.scores, remedies=config.int8_remedies,
                                    min_agreement=config.int8_min_agreement)
        return ConvertSummary.from_dict(result.to_dict())

    def metrics(self, result: ConvertSummary, context: RunContext) -> dict[str, Any]:
        shown = ("accuracy", "size_bytes", "agreement_quantized_vs_float")
        return {"accuracy": result.accuracy, "agreement_quantized_vs_float": result.agreement_quantized_vs_float,
                "size_bytes": result.size_bytes,
                "verification": {key: value for key, value in result.to_dict().items() if key not in shown}}

    def report(self, result: ConvertSummary, context: RunContext) -> list[str]:
        lines = ["GPU delegate (static check, export.gpu_compat): " + "; ".join(
            f"{artifact} {check['summary']}" for artifact, check in (result.gpu_compatibility or {}).items()) + ".", ""]
        failed = [name for name, passed in result.checks.items() if not passed]
        if failed:
            lines += [f"**Failed verification checks: {', '.join(failed)}** (see metrics.json).", ""]
        if result.integer_only_problems:
            lines += ["## Integer-only check", "", *[f"- {problem}" for problem in result.integer_only_problems]]
        return lines
