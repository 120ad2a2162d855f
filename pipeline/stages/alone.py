"""The student_alone stage (--distill_compare): the same student trained on labels alone for the same budget, so
the report shows what distillation bought."""
from __future__ import annotations

import logging
from typing import Any

from export import layout
from pipeline.stage import RunContext
from pipeline.stages.train import FreshNetworkStage, TrainedSummary

log = logging.getLogger(__name__)


class AloneStage(FreshNetworkStage):
    name = "student_alone"
    sections = ("data", "train")
    when = "distill_compare"
    output = layout.ALONE_MODEL

    def network(self, config) -> tuple[str, float]:
        return config.model, config.width_multiplier

    def log_result(self, result: TrainedSummary, context: RunContext) -> None:
        log.info("%s trained alone: held-out top-1 %.4f", result.model, result.val_accuracy)

    def metrics(self, result: TrainedSummary, context: RunContext) -> dict[str, Any]:
        return {"distillation": {"student_alone_val_accuracy": result.val_accuracy}}
