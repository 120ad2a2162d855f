"""The slim stage (--prune channels): Network Slimming removes the channels whose BatchNorm gamma the sparsity
training drove to zero, then fine-tunes; the model gets fewer MACs and parameters, so it gets faster
(docs/design.md, "Sparsity and slimming")."""
from __future__ import annotations

import dataclasses
import logging
from typing import Any

from export import layout
from pipeline.stage import RunContext, Stage, Summary
from pipeline.stages.sparsify import FINE_TUNE_LEARNING_RATE_FACTOR
from pipeline.stages.train import train_settings
from pipeline.train import evaluate_accuracy, load_model, save_model

log = logging.getLogger(__name__)


@dataclasses.dataclass
class SlimSummary(Summary):
    params_before_pruning: int
    macs_before_pruning: int
    memory_access_cost_before_pruning: int
    params: int
    macs: int
    memory_access_cost: int
    channels_before_pruning: dict[str, int]
    channels: dict[str, int]
    val_accuracy_before_pruning: float  # the sparsity-trained model
    val_accuracy_after_cut: float  # right after the (last) cut, before its fine-tuning
    val_accuracy: float  # after fine-tuning
    iterations: list[dict]


class SlimStage(Stage):
    name = "slim"
    sections = ("data", "train", "sparsify", "slim")
    Result = SlimSummary
    when = "slim"
    output = layout.SLIM_MODEL
    trains = distributed = extends_chain = True

    def run(self, context: RunContext) -> SlimSummary:
        from models import channel_pruning
        from pipeline.channel_prune import channel_prune_and_finetune
        from pipeline.report import complexity

        config = context.config
        source = load_model(context.path(context.model_file))
        before, accuracy_before = complexity(source), evaluate_accuracy(source, context.data)
        channels_before = channel_pruning.channel_counts(source)
        result = channel_prune_and_finetune(
            source, context.data, context.run_dir, prune_ratio=config.prune_ratio, target_macs=config.target_macs,
            iterations=config.prune_iterations, l1=config.prune_l1, criterion=config.prune_criterion,
            # Fine-tuning continues the training: the same recipe (optimizer, weight decay, label smoothing).
            finetune=train_settings(context, epochs=config.prune_epochs,
                                    learning_rate=config.learning_rate * FINE_TUNE_LEARNING_RATE_FACTOR),
        )
        save_model(result.model, context.path(layout.SLIM_MODEL))
        after = complexity(result.model)
        return SlimSummary(
            params_before_pruning=before["params"], macs_before_pruning=before["macs"],
            memory_access_cost_before_pruning=before["memory_access_cost"], **after,
            channels_before_pruning=channels_before, channels=result.channels,
            val_accuracy_before_pruning=accuracy_before,
            val_accuracy_after_cut=result.iterations[-1]["val_accuracy_before_finetune"],
            val_accuracy=evaluate_accuracy(result.model, context.data), iterations=result.iterations)

    def log_result(self, result: SlimSummary, context: RunContext) -> None:
        log.info("channels pruned: MACs %s -> %s, held-out top-1 %.4f before, %.4f right after the cut, %.4f after "
                 "fine-tuning", f"{result.macs_before_pruning:,}", f"{result.macs:,}",
                 result.val_accuracy_before_pruning, result.val_accuracy_after_cut, result.val_accuracy)

    def metrics(self, result: SlimSummary, context: RunContext) -> dict[str, Any]:
        # The network itself changed: params and MACs describe the final model, the numbers before are kept.
        return {"params": result.params, "macs": result.macs, "memory_access_cost": result.memory_access_cost,
                "params_before_pruning": result.params_before_pruning,
                "macs_before_pruning": result.macs_before_pruning,
                "memory_access_cost_before_pruning": result.memory_access_cost_before_pruning,
                "channels": result.channels,
                "channel_pruning": {
                    "val_accuracy_before_pruning": result.val_accuracy_before_pruning,
                    "val_accuracy_after_cut": result.val_accuracy_after_cut,
                    "val_accuracy_after_finetune": result.val_accuracy, "iterations": result.iterations}}

    def report(self, result: SlimSummary, context: RunContext) -> list[str]:
        def cut(before: int, after: int) -> str:
            return f"{before:,} | {after:,} | {100 * (after - before) / before:+.1f}%"

        lines = ["## Channel slimming", "",
                 "| | before | after | change |", "|---|---:|---:|---:|",
                 f"| MACs | {cut(result.macs_before_pruning, result.macs)} |",
                 f"| parameters | {cut(result.params_before_pruning, result.params)} |",
                 f"| memory access cost | {cut(result.memory_access_cost_before_pruning, result.memory_access_cost)} |",
                 "", f"Held-out top-1 (Keras float): {100 * result.val_accuracy_before_pruning:.2f}% before the cut, "
                 f"{100 * result.val_accuracy_after_cut:.2f}% right after it, {100 * result.val_accuracy:.2f}% after "
                 f"fine-tuning.", "", "| layer | channels before | after |", "|---|---:|---:|"]
        lines += [f"| {name} | {count} | {result.channels.get(name, count)} |"
                  for name, count in result.channels_before_pruning.items()]
        return lines
