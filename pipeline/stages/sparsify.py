"""The sparsify stage (--prune 2:4 | xnnpack | magnitude): TF-MOT zeros weights while fine-tuning. The model keeps
its shape; the zeros shrink the compressed file and, for XNNPACK's sparse fp32 kernels, the latency
(docs/design.md, "Sparsity and slimming")."""
from __future__ import annotations

import dataclasses
import logging
from typing import Any

from export import layout
from pipeline.stage import RunContext, Stage, Summary
from pipeline.train import evaluate_accuracy, load_model, save_model

log = logging.getLogger(__name__)

# Pruning removes half the weights, which the network must recover from: at a tenth of the training rate, 2:4
# fine-tuning on digits recovered to 92.8% top-1, at the full (cosine-decayed) rate to 96.1%.
FINE_TUNE_LEARNING_RATE_FACTOR = 1.0


@dataclasses.dataclass
class SparsifySummary(Summary):
    method: str
    target_sparsity: float
    overall_sparsity: float
    per_layer_sparsity: dict[str, float]
    val_accuracy: float


class SparsifyStage(Stage):
    name = "prune"  # the ledger's and metrics' name since before slimming was a stage of its own
    sections = ("data", "train", "sparsify")
    Result = SparsifySummary
    when = "sparsify"
    output = layout.SPARSE_MODEL
    trains = distributed = extends_chain = True

    def run(self, context: RunContext) -> SparsifySummary:
        from pipeline.prune import prune_and_finetune

        config = context.config
        result = prune_and_finetune(
            load_model(context.path(context.model_file)), context.data, method=config.prune,
            sparsity=config.prune_sparsity, epochs=config.prune_epochs,
            learning_rate=config.learning_rate * FINE_TUNE_LEARNING_RATE_FACTOR, run_dir=context.run_dir,
            seed=config.seed,
        )
        save_model(result.model, context.path(layout.SPARSE_MODEL))
        return SparsifySummary(method=config.prune, target_sparsity=config.prune_sparsity,
                               overall_sparsity=float(result.overall_sparsity),
                               per_layer_sparsity={name: float(v) for name, v in result.per_layer_sparsity.items()},
                               val_accuracy=evaluate_accuracy(result.model, context.data))

    def log_result(self, result: SparsifySummary, context: RunContext) -> None:
        log.info("pruned (%s): overall sparsity %.3f, held-out top-1 %.4f", result.method, result.overall_sparsity,
                 result.val_accuracy)

    def metrics(self, result: SparsifySummary, context: RunContext) -> dict[str, Any]:
        return {"sparsity": {"method": result.method, "target": result.target_sparsity,
                             "overall": result.overall_sparsity, "per_layer": result.per_layer_sparsity}}

    def report(self, result: SparsifySummary, context: RunContext) -> list[str]:
        return ["## Pruning (sparsity)", "",
                f"{result.method}, target {result.target_sparsity:g}: overall sparsity {result.overall_sparsity:.3f}, "
                f"held-out top-1 after fine-tuning {100 * result.val_accuracy:.2f}%.", "",
                "| layer | sparsity |", "|---|---|",
                *[f"| {name} | {value:.3f} |" for name, value in result.per_layer_sparsity.items()]]
