"""The channel-prune stage (Network Slimming): L1 on BatchNorm gamma, remove low-gamma channels, fine-tune, repeat.

Unlike TF-MOT's pruning (pipeline/prune.py), which zeroes weights and keeps every shape, this removes channels:
the result is a smaller ordinary Keras model (models/channel_pruning.py) that is faster on every runtime.

As in the paper, the sparsity training is the ordinary training with an L1 penalty on the gamma of the
BatchNorms that rank prunable channels: with `--prune channels` the train stage trains `with_gamma_l1(model)`.
A regularizer set on an already-built layer is not collected into `model.losses`, so the clean way is a clone from
config with the regularizer in it, weights copied (rather than `add_loss` callables that would be saved with the
model). Each iteration here then (1) selects channels by one global |gamma| ranking and rebuilds the network
without the rest (which drops the regularizer), and (2) fine-tunes it: with the L1 penalty again when another
iteration follows (its sparsity training), without it after the last. With `iterations` N, each iteration removes
an equal share: `1 - (1 - prune_ratio) ** (1 / N)` of the prunable channels left, or the MACs target interpolated
geometrically from the model's MACs to `target_macs`. Total epochs: the training's plus N x the fine-tuning epochs.
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import tf_keras as keras

from models import channel_pruning, complexity
from pipeline.config import DEFAULT_PRUNE_L1
from pipeline.data import DataSplits
from pipeline.train import TrainSettings, accuracy_metric, evaluate_accuracy, fit, make_optimizer, \
    SparseCategoricalCrossentropyWithSmoothing

log = logging.getLogger(__name__)

DEFAULT_L1 = DEFAULT_PRUNE_L1


class ChannelPruneError(channel_pruning.ChannelPruningError):
    """The channel-prune stage cannot run with these arguments; the message says what is allowed."""


@dataclasses.dataclass
class ChannelPruneResult:
    """The fine-tuned pruned model, its per-layer channel counts, costs before/after, and per-iteration records."""

    model: keras.Model
    channels: dict[str, int]
    macs_before_pruning: int
    params_before_pruning: int
    macs: int
    params: int
    val_accuracy: float
    iterations: list[dict]

    def metrics(self) -> dict:
        """The keys metrics.json carries for this stage."""
        return {
            "macs_before_pruning": self.macs_before_pruning,
            "params_before_pruning": self.params_before_pruning,
            "macs": self.macs,
            "params": self.params,
            "channel_prune_val_accuracy": self.val_accuracy,
            "channel_prune_iterations": self.iterations,
            # Per-layer output channels: models.registry.build(..., channels=...) builds this network again.
            "channels": self.channels,
        }


def with_gamma_l1(model: keras.Model, l1: float) -> keras.Model:
    """A copy of `model` (same weights) whose channel-ranking BatchNorms carry an L1 penalty on gamma."""
    ranking = {bn for group in channel_pruning.prunable_groups(model) for bn in group.batch_norms}

    def clone(layer):
        config = layer.get_config()
        if layer.name in ranking:
            config["gamma_regularizer"] = keras.regularizers.L1(l1)
        return layer.__class__.from_config(config)

    sparse = keras.models.clone_model(model, clone_function=clone)
    sparse.set_weights(model.get_weights())
    return sparse


def _check_arguments(prune_ratio, target_macs, iterations, finetune):
    if (prune_ratio is None) == (target_macs is None):
        raise ChannelPruneError("Give exactly one of prune_ratio (a fraction in (0, 1)) or target_macs (a MAC count).")
    if prune_ratio is not None and (isinstance(prune_ratio, bool) or not 0.0 < float(prune_ratio) < 1.0):
        raise ChannelPruneError(f"prune_ratio must be a fraction strictly between 0 and 1, got {prune_ratio!r}.")
    if target_macs is not None and (isinstance(target_macs, bool) or not isinstance(target_macs, (int, np.integer))
                                    or target_macs <= 0):
        raise ChannelPruneError(f"target_macs must be a positive int, got {target_macs!r}.")
    if not isinstance(iterations, int) or iterations < 1:
        raise ChannelPruneError(f"iterations must be a positive int, got {iterations!r}.")
    if not isinstance(finetune.epochs, int) or finetune.epochs < 0:
        raise ChannelPruneError(f"fine-tuning epochs must be a non-negative int, got {finetune.epochs!r}.")
    if not finetune.learning_rate > 0:
        raise ChannelPruneError(f"the fine-tuning learning rate must be positive, got {finetune.learning_rate!r}.")


def _finetune(model: keras.Model, data: DataSplits, settings: TrainSettings, work_dir: Path) -> None:
    if settings.epochs == 0:
        return
    keras.utils.set_random_seed(settings.seed)
    model.compile(
        optimizer=make_optimizer(settings, settings.epochs * data.steps_per_epoch),
        loss=SparseCategoricalCrossentropyWithSmoothing(settings.label_smoothing),
        metrics=[accuracy_metric()],
    )
    fit(model, data, settings, work_dir)


def channel_prune_and_finetune(
    model: keras.Model,
    data: DataSplits,
    run_dir: Path,
    prune_ratio: float | None = None,
    target_macs: int | None = None,
    iterations: int = 1,
    finetune: TrainSettings = TrainSettings(epochs=1, learning_rate=1e-3),
    l1: float = DEFAULT_L1,
    criterion: str = channel_pruning.DEFAULT_CRITERION,
) -> ChannelPruneResult:
    """Prune channels of a sparsity-trained `model` to `prune_ratio` or `target_macs` and fine-tune with the
    `finetune` recipe (its epochs per iteration); `iterations` times (fine-tunes before another iteration keep the
    L1 penalty on gamma); `criterion` ranks the channels (models.channel_pruning.CRITERIA)."""
    _check_arguments(prune_ratio, target_macs, iterations, finetune)
    if not l1 >= 0:
        raise ChannelPruneError(f"l1 must be >= 0, got {l1!r}.")
    before = complexity.analyze(model)
    if target_macs is not None and target_macs >= before.macs:
        raise ChannelPruneError(f"target_macs must be below the model's {before.macs:,} MACs, got {target_macs:,}.")
    work_dir = Path(run_dir) / "channel_prune"
    records = []
    current = model
    for iteration in range(1, iterations + 1):
        if prune_ratio is not None:
            step = {"prune_ratio": 1.0 - (1.0 - prune_ratio) ** (1.0 / iterations)}
        else:
            step = {"target_macs": int(before.macs * (target_macs / before.macs) ** (iteration / iterations))}
        if step.get("target_macs", 0) >= complexity.analyze(current).macs:  # an earlier step overshot: no cut here
            current = channel_pruning.prune_channels(current, {})  # drops the regularizer, keeps every channel
        else:
            current = channel_pruning.prune_channels(current, channel_pruning.select_channels(current, **step,
                                                                                            criterion=criterion))
        before_finetune = evaluate_accuracy(current, data)  # how much the cut itself cost
        if iteration < iterations:
            current = with_gamma_l1(current, l1)  # this fine-tune is the next iteration's sparsity training
        _finetune(current, data, finetune, work_dir / f"iteration_{iteration}")
        costs = complexity.analyze(current)
        record = {"iteration": iteration, **step, "macs": costs.macs, "params": costs.params,
                  "val_accuracy_before_finetune": before_finetune, "val_accuracy": evaluate_accuracy(current, data)}
        log.info("channel pruning iteration %d: %s", iteration, record)
        records.append(record)
    return ChannelPruneResult(
        model=current,
        channels=channel_pruning.channel_counts(current),
        macs_before_pruning=before.macs,
        params_before_pruning=before.params,
        macs=records[-1]["macs"],
        params=records[-1]["params"],
        val_accuracy=records[-1]["val_accuracy"],
        iterations=records,
    )
