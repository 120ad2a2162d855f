"""The teacher stage (--teacher): train the teacher network in this run, before the student distills from it."""
from __future__ import annotations

import logging

from export import layout
from pipeline.stage import RunContext
from pipeline.stages.train import FreshNetworkStage, TrainedSummary

log = logging.getLogger(__name__)


class TeacherStage(FreshNetworkStage):
    name = "teacher"
    sections = ("data", "train", "distill")
    when = "teacher"
    output = layout.TEACHER_MODEL
    # The teacher trains on hard labels whatever --label_smoothing says: smoothing pulls every wrong class's logit
    # to the same value, erasing the class similarities its soft targets should carry (Mueller et al., 2019;
    # measured in docs/design.md, "Distillation").
    overrides = {"label_smoothing": 0.0}

    def network(self, config) -> tuple[str, float]:
        return config.teacher, config.teacher_width_multiplier

    def log_result(self, result: TrainedSummary, context: RunContext) -> None:
        log.info("teacher %s: held-out top-1 %.4f", result.model, result.val_accuracy)
