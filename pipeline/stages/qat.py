"""The qat stage (--qat): TF-MOT quantization-aware fine-tuning, so int8 conversion starts from weights that have
learned the fake-quant rounding."""
from __future__ import annotations

import dataclasses
import logging

from export import layout
from pipeline.stage import RunContext, Stage, Summary
from pipeline.train import evaluate_accuracy, load_model

log = logging.getLogger(__name__)

# QAT starts from a trained model and only adapts it to the fake-quant rounding: a tenth of the training rate.
LEARNING_RATE_FACTOR = 0.1


@dataclasses.dataclass
class QatSummary(Summary):
    val_accuracy: float


class QatStage(Stage):
    name = "qat"
    sections = ("data", "train", "qat")
    Result = QatSummary
    when = "qat"
    output = layout.QAT_MODEL
    trains = distributed = extends_chain = True

    def run(self, context: RunContext) -> QatSummary:
        from pipeline.quantize import quantization_aware_finetune, save_quantization_aware_model

        config = context.config
        model = quantization_aware_finetune(
            load_model(context.path(context.model_file)), context.data, epochs=config.qat_epochs,
            learning_rate=config.learning_rate * LEARNING_RATE_FACTOR, run_dir=context.run_dir, seed=config.seed,
        )
        save_quantization_aware_model(model, context.path(layout.QAT_MODEL))
        return QatSummary(val_accuracy=evaluate_accuracy(model, context.data))

    def log_result(self, result: QatSummary, context: RunContext) -> None:
        log.info("quantization-aware fine-tuned: held-out top-1 %.4f (Keras, fake-quant)", result.val_accuracy)
