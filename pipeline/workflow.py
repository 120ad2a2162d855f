"""The run: prepare the data, then walk `pipeline.stages.STAGES` in order, each stage recorded in the run directory's
ledger so a rerun resumes, then write the report.

Every stage reads its input model from the file the previous stage wrote (never from memory), so a resumed run
and an uninterrupted one take the same path, and a stage's fingerprint includes its input files' hashes.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import tensorflow as tf
import tf_keras as keras

from export.layout import RunLayout
from pipeline import distribute, report
from pipeline.config import RunConfig
from pipeline.data import DataSplits, load_data
from pipeline.ledger import StageLedger
from pipeline.run_dir import write_config
from pipeline.stage import RunContext, Stage
from pipeline.stages import STAGES
from pipeline.train import batch_norm_momentum_for

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    """Same --seed, same numbers: Python, NumPy and TF seeds, and deterministic TF kernels."""
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def prepare(config: RunConfig, strategy: tf.distribute.Strategy | None = None) -> DataSplits:
    """Load the data and check a given teacher against it: everything that can fail on bad input, before the
    run directory is touched. Batches are global (`--batch_size` x the strategy's replicas), explicitly sharded."""
    from pipeline.distill import check_teacher, load_teacher

    distribute.check_supported(config, config.strategy)
    seed_everything(config.seed)
    batch_size = distribute.global_batch_size(config.batch_size, strategy or tf.distribute.get_strategy())
    data = load_data(config.dataset, config.image_size, batch_size, config.val_split, config.seed,
                     flip=config.defaults.flip)
    # Every source is decoded into memory (no files in the tf.data graph): shard by data.
    data.train, data.val = distribute.shard(data.train), distribute.shard(data.val)
    log.info("stage %-14s done in %.1f s: %s", "data", data.load_seconds, data.describe())
    if config.teacher_checkpoint:
        check_teacher(load_teacher(Path(config.teacher_checkpoint)), data.input_shape, data.num_classes)
    return data


def is_finished(run_dir: Path) -> bool:
    """True when the run in `run_dir` wrote its report (so a new command starts a new run)."""
    return StageLedger(run_dir).finished(report.STAGE)


def run(config: RunConfig, run_dir: Path, data: DataSplits, verbose: int | None = None,
        strategy: tf.distribute.Strategy | None = None, stages: tuple[Stage, ...] = STAGES) -> dict[str, Any]:
    """Run (or resume) every enabled stage of `config` in `run_dir`; returns the metrics written to metrics.json.

    Models are trained under `strategy`'s scope. A multi-worker cluster's non-chief workers train in their own
    `run_dir/workers/...` and stop after the training stages (returning {}): only the chief writes artifacts.
    """
    strategy = strategy or tf.distribute.get_strategy()
    run_dir = distribute.worker_run_dir(Path(run_dir), strategy)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_config(run_dir, config)
    total_steps = config.epochs * data.steps_per_epoch
    bn_momentum = config.bn_momentum or batch_norm_momentum_for(total_steps)
    log.info("BatchNorm momentum %g for %d training steps (%s)", bn_momentum, total_steps,
             "--bn_momentum" if config.bn_momentum else "auto: a moving-average window of ~1/30 of training")
    context = RunContext(config=config, layout=RunLayout(run_dir), data=data, strategy=strategy,
                         bn_momentum=bn_momentum, verbose=verbose)
    ledger = StageLedger(run_dir)
    chief = distribute.is_chief(strategy)
    for stage in stages:
        if not stage.enabled(config):
            continue
        if chief or stage.trains:
            run_stage(stage, context, ledger)
    if not chief:
        log.info("training done on this worker; the chief converts, benchmarks and reports")
        return {}
    return report.write(context, ledger, stages)


def run_stage(stage: Stage, context: RunContext, ledger: StageLedger) -> None:
    """Run one stage (or take its recorded result), and move the model chain's head where it extends it."""
    action = lambda: stage.run(context).to_dict()  # noqa: E731
    outcome = ledger.run(stage.name, stage.fingerprint_inputs(context), stage.writes(context),
                         context.scoped(action) if stage.distributed else action)
    context.outcomes[stage.name] = outcome
    result = stage.Result.from_dict(outcome.summary)
    context.summaries[stage.name] = result
    stage.log_result(result, context)
    if stage.extends_chain:
        context.model_file = stage.writes(context)[0]
