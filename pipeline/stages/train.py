"""The train stage: the student network trained on labels, or distilled from a teacher (Hinton et al., 2015), or,
with --prune=channels, Network Slimming's sparsity training (L1 on the channel-ranking BatchNorm gammas)."""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

from export import layout
from pipeline.stage import RunContext, Stage, Summary
from pipeline.train import TrainResult, TrainSettings, build_network, evaluate_accuracy, save_model, train

log = logging.getLogger(__name__)


def train_settings(context: RunContext, **overrides: Any) -> TrainSettings:
    """The run's training recipe (the train section), with `overrides`."""
    config = context.config
    settings = TrainSettings(epochs=config.epochs, learning_rate=config.learning_rate, optimizer=config.optimizer,
                             weight_decay=config.weight_decay, label_smoothing=config.label_smoothing,
                             seed=config.seed, verbose=context.verbose)
    return dataclasses.replace(settings, **overrides)


def fresh_network(context: RunContext, name: str, width_multiplier: float):
    """A new zoo network for this run's data, BatchNorm momentum, weights and stem padding."""
    config = context.config
    return build_network(name, context.data, width_multiplier, context.bn_momentum, config.weights,
                         config.stem_padding)


@dataclasses.dataclass
class TrainedSummary(Summary):
    """A trained network: its size and cost, held-out top-1 (Keras, inference mode) and per-epoch history."""

    model: str
    width_multiplier: float
    val_accuracy: float
    params: int
    macs: int
    memory_access_cost: int
    history: dict[str, list] = dataclasses.field(default_factory=dict)
    distilled: bool = False
    teacher_val_accuracy: float | None = None

    @classmethod
    def of(cls, result: TrainResult, name: str, width: float, **extra: Any) -> "TrainedSummary":
        from pipeline.report import complexity

        return cls(model=name, width_multiplier=width, val_accuracy=result.val_accuracy, history=result.history,
                   **complexity(result.model), **extra)


class FreshNetworkStage(Stage):
    """A stage that trains a new zoo network on labels alone and saves it as its one output (the teacher, the
    student trained alone); `network` names which one and `overrides` change the training recipe."""

    Result = TrainedSummary
    trains = distributed = True
    overrides: dict[str, Any] = {}

    def network(self, config) -> tuple[str, float]:
        raise NotImplementedError

    def reads(self, context: RunContext) -> list[str]:
        return []

    def run(self, context: RunContext) -> TrainedSummary:
        name, width = self.network(context.config)
        model = fresh_network(context, name, width)
        result = train(model, context.data, train_settings(context, **self.overrides),
                       context.path(layout.training_dir(self.name)))
        save_model(model, context.path(self.output))
        return TrainedSummary.of(result, name, width)


def teacher_file(context: RunContext) -> str | None:
    """The teacher model this run distills from: a --teacher_checkpoint file, or the teacher stage's output."""
    config = context.config
    if config.teacher_checkpoint:
        from pipeline.distill import teacher_model_path

        return str(teacher_model_path(Path(config.teacher_checkpoint)))
    return layout.TEACHER_MODEL if config.teacher else None


class TrainStage(Stage):
    name = "train"
    sections = ("data", "train", "distill", "sparsify", "slim")  # --prune=channels trains with L1 on gamma
    Result = TrainedSummary
    output = layout.TRAINED_MODEL
    trains = distributed = extends_chain = True

    def reads(self, context: RunContext) -> list[str]:
        teacher = teacher_file(context)
        return [teacher] if teacher else []

    def run(self, context: RunContext) -> TrainedSummary:
        from pipeline.channel_prune import with_gamma_l1
        from pipeline.distill import distill, load_teacher

        config = context.config
        student = fresh_network(context, config.model, config.width_multiplier)
        if config.slim:
            log.info("sparsity training for channel pruning: L1 %g on the gamma of channel-ranking BatchNorms",
                     config.prune_l1)
            student = with_gamma_l1(student, config.prune_l1)
        work_dir = context.path(layout.training_dir(self.name))
        teacher_path = teacher_file(context)
        extra: dict[str, Any] = {"distilled": teacher_path is not None}
        if teacher_path is None:
            result = train(student, context.data, train_settings(context), work_dir)
        else:
            teacher = load_teacher(context.path(teacher_path))
            log.info("distilling %s from %s (T=%g, alpha=%g)", config.model, teacher_path,
                     config.distill_temperature, config.distill_alpha)
            result = distill(student, teacher, context.data, train_settings(context), config.distill_temperature,
                             config.distill_alpha, work_dir)
            if config.teacher_checkpoint:  # no teacher stage in this run has evaluated it
                extra["teacher_val_accuracy"] = evaluate_accuracy(teacher, context.data)
        save_model(student, context.path(layout.TRAINED_MODEL))
        return TrainedSummary.of(result, config.model, config.width_multiplier, **extra)

    def log_result(self, result: TrainedSummary, context: RunContext) -> None:
        log.info("%s: held-out top-1 %.4f (Keras, float)", result.model, result.val_accuracy)

    def metrics(self, result: TrainedSummary, context: RunContext) -> dict[str, Any]:
        part: dict[str, Any] = {"params": result.params, "macs": result.macs,
                                "memory_access_cost": result.memory_access_cost,
                                "accuracy": {"keras_float": result.val_accuracy}}
        config = context.config
        if config.distill:
            teacher = context.summaries.get("teacher")
            part["distillation"] = {
                "teacher": config.teacher or config.teacher_checkpoint,
                "teacher_val_accuracy": teacher.val_accuracy if teacher else result.teacher_val_accuracy,
                "temperature": config.distill_temperature, "alpha": config.distill_alpha,
                "student_distilled_val_accuracy": result.val_accuracy, "student_alone_val_accuracy": None,
            }
        return part

    def report(self, result: TrainedSummary, context: RunContext) -> list[str]:
        distillation = self.metrics(result, context).get("distillation")
        if not distillation:
            return []
        from pipeline.report import percent

        alone = context.summaries.get("student_alone")
        return ["## Distillation", "",
                f"Teacher `{distillation['teacher']}` (held-out {percent(distillation['teacher_val_accuracy'])}), "
                f"T = {distillation['temperature']:g}, alpha = {distillation['alpha']:g}: distilled student "
                f"{percent(result.val_accuracy)}"
                + (f", the same student trained alone {percent(alone.val_accuracy)}." if alone else ".")]
