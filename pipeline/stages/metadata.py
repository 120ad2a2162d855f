"""The metadata stage: every converted model written again with its TFLite Model Metadata (name, description,
version, author, license, input normalization and image properties, labels.txt as the output's associated file,
whether the scores are probabilities), so the ecosystem's clients (MediaPipe Tasks, the Support Library, Android
Studio's model binding) load it as it is; each file is then checked the way a client reads it
(docs/design.md, "Adding a stage" walks through this stage)."""
from __future__ import annotations

import dataclasses
import logging
from typing import Any

from export import layout
from pipeline.stage import RunContext, Stage, Summary
from pipeline.stages.convert import client_ready, model_files

log = logging.getLogger(__name__)


@dataclasses.dataclass
class MetadataSummary(Summary):
    """Per artifact: the metadata read back from the written file (labels left out: they are labels.txt)."""

    models: dict[str, dict[str, Any]]


class MetadataStage(Stage):
    name = "metadata"
    sections = ("data", "train", "convert", "package")
    Result = MetadataSummary

    def reads(self, context: RunContext) -> list[str]:
        return [*[layout.converted(name) for name in model_files(context.config).values()], layout.LABELS]

    def writes(self, context: RunContext) -> list[str]:
        return list(model_files(context.config).values())

    def run(self, context: RunContext) -> MetadataSummary:
        from export.files import write_bytes_atomic
        from export.metadata import (DEFAULT_AUTHOR, DEFAULT_LICENSE, check_classifier_metadata, read_metadata,
                                     write_classifier_metadata)

        config, data = context.config, context.data
        labels = context.path(layout.LABELS).read_text(encoding="utf-8").splitlines()
        normalization = data.normalization
        models = {}
        for artifact, name in model_files(config).items():
            flatbuffer = write_classifier_metadata(
                context.path(layout.converted(name)).read_bytes(), name=f"{config.model} {config.width_multiplier:g}",
                labels=labels, mean=normalization.mean, std=normalization.std,
                description=f"{config.model} (width {config.width_multiplier:g}) image classifier, {data.num_classes} "
                            f"classes of {config.dataset}, {data.image_size}x{data.image_size} RGB input, "
                            f"{artifact} {config.quantize if artifact == 'quantized' else ''}".strip(),
                version=config.fingerprint(), author=config.model_author or DEFAULT_AUTHOR,
                license=config.model_license or DEFAULT_LICENSE)
            # Checked as a client reads it: a missing metadata or a wrong label count stops the run here, in one line.
            if client_ready(config, artifact):
                metadata = check_classifier_metadata(flatbuffer, data.num_classes)
            else:
                metadata = read_metadata(flatbuffer)
                log.warning("the %s model keeps raw int8 input/output (--io_dtype int8): MediaPipe Tasks refuses it",
                            artifact)
            write_bytes_atomic(context.path(name), flatbuffer)
            models[artifact] = {key: value for key, value in metadata.items()
                                if key not in ("labels", "associated_files")}
            models[artifact]["num_labels"] = len(metadata["labels"])
        return MetadataSummary(models=models)

    def log_result(self, result: MetadataSummary, context: RunContext) -> None:
        for artifact, metadata in result.models.items():
            log.info("metadata in the %s model: %d labels, scores are %s", artifact, metadata["num_labels"],
                     metadata["scores"])

    def metrics(self, result: MetadataSummary, context: RunContext) -> dict[str, Any]:
        return {"metadata": result.models}

    def report(self, result: MetadataSummary, context: RunContext) -> list[str]:
        lines = ["## Model metadata", "", "| model | labels | scores | normalization (mean / std) |", "|---|---:|---|---|"]
        for artifact, metadata in result.models.items():
            units = (metadata["inputs"] or [{}])[0].get("process_units") or [{}]
            lines.append(f"| {model_files(context.config)[artifact]} | {metadata['num_labels']} | {metadata['scores']} "
                         f"| {units[0].get('mean')} / {units[0].get('std')} |")
        return lines
