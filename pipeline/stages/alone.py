"""The student_alone stage (--distill_compare): the same student trained on labels alone for the same budget, so
the report shows what distillation bought."""
from __future__ import annotations

import logging
from typing import Any

from export import layout
from pipeline.stage import RunContext, Stage
from pipeline.stages.train import TrainedSummary, fresh_network, train_settings
from pipeline.train import save_model, train

log = logging.getLogger(__name__)


class AloneStage(Stage):
    name = "student_alone"
    sections = ("data", "train")
    Result = TrainedSummary
    when = "distill_compare"
    output = layout.ALONE_MODEL
    trains = distributed = True

    def reads(self, context: RunContext) -> list[str]:
        return []

    def run(self, context: RunContext) -> TrainedSummary:
        config = context.config
        student = fresh_network(context, config.model, config.width_multiplier)
        result = train(student, context.data, train_settings(context), context.path(layout.training_dir(self.name)))
        save_model(student, context.path(layout.ALONE_MODEL))
        return TrainedSummary.of(result, config.model, config.width_multiplier)

    def log_result(self, result: TrainedSummary, context: RunContext) -> None:
        log.info("%s trained alone: held-out top-1 %.4f", result.model, result.val_accuracy)

    def metrics(self, result: TrainedSummary, context: RunContext) -> dict[str, Any]:
        return {"distillation": {"student_alone_val_accuracy": result.val_accuracy}}
