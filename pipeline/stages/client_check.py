"""The client_check stage: every deployable model classified by MediaPipe Tasks' ImageClassifier, the client most
Android apps use, from outside (its own Python environment, as an app sees the file), on the raw held-out pixels;
its top-1 names must equal the pipeline's own evaluation of the same file (docs/design.md, "Outside clients")."""
from __future__ import annotations

import dataclasses
import logging
from typing import Any

import numpy as np

from pipeline.stage import RunContext, Stage, Summary
from pipeline.stages.convert import client_ready, model_files

log = logging.getLogger(__name__)


@dataclasses.dataclass
class ClientCheckSummary(Summary):
    """Per artifact, export.client_check.MediaPipeCheck as JSON; `skipped` says why no client ran."""

    models: dict[str, dict[str, Any]]
    skipped: str | None = None


class ClientCheckStage(Stage):
    name = "client_check"
    sections = ("data", "convert")
    Result = ClientCheckSummary
    when = "client_check"

    def reads(self, context: RunContext) -> list[str]:
        return list(model_files(context.config).values())

    def run(self, context: RunContext) -> ClientCheckSummary:
        from export.client_check import client_python, mediapipe_agreement
        from export.evaluate import TFLiteClassifier

        if client_python() is None:
            return ClientCheckSummary(models={}, skipped="no MediaPipe environment (README, \"Using the model in an "
                                                         "app\", says how to build .venv-client)")
        data = context.data
        images, labels = data.val_arrays()
        names = data.class_names
        models = {}
        for artifact, name in model_files(context.config).items():
            if not client_ready(context.config, artifact):
                continue
            path = context.path(name)
            ours = np.argmax(TFLiteClassifier(path.read_bytes()).logits(images), axis=-1)
            check = mediapipe_agreement(path, data.val_images, [names[i] for i in ours],
                                        true_names=[names[i] for i in labels])
            models[artifact] = check.as_dict()
        return ClientCheckSummary(models=models)

    def log_result(self, result: ClientCheckSummary, context: RunContext) -> None:
        if result.skipped:
            log.warning("MediaPipe client check skipped: %s", result.skipped)
        for artifact, check in result.models.items():
            log.info("MediaPipe ImageClassifier, %s model: top-1 %.4f, same top-1 as ours on %.2f%% of %d images",
                     artifact, check["accuracy"], 100 * check["agreement"], check["num_images"])

    def metrics(self, result: ClientCheckSummary, context: RunContext) -> dict[str, Any]:
        accuracy = {f"mediapipe_{'float32' if artifact == 'float32' else 'quantized'}": check["accuracy"]
                    for artifact, check in result.models.items()}
        return {"accuracy": accuracy, "client_check": {"mediapipe": result.models, "skipped": result.skipped}}

    def report(self, result: ClientCheckSummary, context: RunContext) -> list[str]:
        if result.skipped:
            return ["## MediaPipe client check", "", f"Not run: {result.skipped}."]
        lines = ["## MediaPipe client check", "", "MediaPipe Tasks' ImageClassifier on the held-out images (raw "
                 "pixels; it normalizes them from the model's metadata):", "",
                 "| model | top-1 | same top-1 as the pipeline | scores |", "|---|---:|---:|---|"]
        for artifact, check in result.models.items():
            lines.append(f"| {model_files(context.config)[artifact]} | {100 * check['accuracy']:.2f}% "
                         f"| {100 * check['agreement']:.2f}% | {check['min_score']:.3f} .. {check['max_score']:.3f} |")
        return lines
