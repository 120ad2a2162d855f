"""The teacher stage (--teacher): train the teacher network in this run, before the student distills from it."""
from __future__ import annotations

import logging

from export import layout
from pipeline.stage import RunContext, Stage
from pipeline.stages.train import TrainedSummary, fresh_network, train_settings
from pipeline.train import save_model, train

log = logging.getLogger(__name__)


class TeacherStage(Stage):
    name = "teacher"
    sections = ("data", "train", "distill")
    Result = TrainedSummary
    when = "teacher"
    output = layout.TEACHER_MODEL
    trains = distributed = True

    def reads(self, context: RunContext) -> list[str]:
        return []

    def run(self, context: RunContext) -> TrainedSummary:
        config = context.config
        model = fresh_network(context, config.teacher, config.teacher_width_multiplier)
        # The teacher trains on hard labels whatever --label_smoothing says: smoothing pulls every wrong class's
        # logit to the same value, erasing the class similarities its soft targets should carry (Mueller et al.,
        # 2019; measured in docs/design.md, "Distillation").
        result = train(model, context.data, train_settings(context, label_smoothing=0.0),
                       context.path(layout.training_dir(self.name)))
        save_model(model, context.path(layout.TEACHER_MODEL))
        return TrainedSummary.of(result, config.teacher, config.teacher_width_multiplier)

    def log_result(self, result: TrainedSummary, context: RunContext) -> None:
        log.info("teacher %s: held-out top-1 %.4f", result.model, result.val_accuracy)
