"""The run's stages in order: data -> (teacher) -> train | distill -> (prune) -> (QAT) -> convert + verify ->
benchmark -> (package) -> report, each recorded in the run directory's `stages.json` so a rerun resumes.

Every stage reads its input model from the file the previous stage wrote (never from memory), so a resumed run
and an uninterrupted one take the same path, and a stage's fingerprint can include its input file's hash.
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import tensorflow as tf
import tf_keras as keras

from pipeline import distribute, report
from pipeline.config import SPARSE_PRUNE_METHODS, RunConfig, write_config
from pipeline.convert_verify import (
    FLOAT_MODEL_FILE,
    LABELS_FILE,
    META_FILE,
    PTQ_BASELINE_FILE,
    convert_and_verify,
    post_training_baseline,
    quantized_model_file,
)
from pipeline.data import DataSplits, load_data
from pipeline.distill import check_teacher, distill, load_teacher, teacher_model_path
from pipeline.stages import StageLedger, StageOutcome, file_digest
from pipeline.train import (
    TrainResult,
    TrainSettings,
    batch_norm_momentum_for,
    build_network,
    evaluate_accuracy,
    load_model,
    save_model,
    train,
)

log = logging.getLogger(__name__)

TEACHER_MODEL = "teacher/model.keras"
TRAINED_MODEL = "model.keras"
ALONE_MODEL = "student_alone/model.keras"
PRUNED_MODEL = "model_pruned.keras"
QAT_MODEL = "model_qat.h5"  # TF-MOT QAT models reload only from HDF5 (pipeline.quantize)
# QAT starts from a trained model and only adapts it to the fake-quant rounding: a tenth of the training rate.
QAT_LEARNING_RATE_FACTOR = 0.1
# Pruning removes half the weights (or whole channels), which the network must recover from: at a tenth of the
# rate, 2:4 fine-tuning on digits recovered to 92.8% top-1, at the full (cosine-decayed) rate to 96.1%.
PRUNE_LEARNING_RATE_FACTOR = 1.0


def seed_everything(seed: int) -> None:
    """Same --seed, same numbers: Python, NumPy and TF seeds, and deterministic TF kernels."""
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def prepare(config: RunConfig, strategy: tf.distribute.Strategy | None = None) -> DataSplits:
    """Load the data and check a given teacher against it: everything that can fail on bad input, before the
    run directory is touched. Batches are global (`--batch_size` x the strategy's replicas), explicitly sharded."""
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
    return StageLedger(run_dir).finished("report")


def run(config: RunConfig, run_dir: Path, data: DataSplits, verbose: int | None = None,
        strategy: tf.distribute.Strategy | None = None) -> dict[str, Any]:
    """Run (or resume) every stage of `config` in `run_dir`; returns the metrics written to metrics.json.

    Models are trained under `strategy`'s scope. A multi-worker cluster's non-chief workers train in their own
    `run_dir/workers/...` and stop after the training stages (returning {}): only the chief writes artifacts.
    """
    strategy = strategy or tf.distribute.get_strategy()
    run_dir = distribute.worker_run_dir(Path(run_dir), strategy)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_config(run_dir, config)
    return _Run(config, run_dir, data, verbose, strategy).all_stages()


class _Run:
    def __init__(self, config: RunConfig, run_dir: Path, data: DataSplits, verbose: int | None,
                 strategy: tf.distribute.Strategy):
        self.config = config
        self.strategy = strategy
        self.data_seconds = data.load_seconds
        self.run_dir = run_dir
        self.data = data
        self.ledger = StageLedger(run_dir)
        self.outcomes: dict[str, StageOutcome] = {}
        total_steps = config.epochs * data.steps_per_epoch
        self.bn_momentum = config.bn_momentum or batch_norm_momentum_for(total_steps)
        log.info("BatchNorm momentum %g for %d training steps (%s)", self.bn_momentum, total_steps,
                 "--bn_momentum" if config.bn_momentum else "auto: a moving-average window of ~1/30 of training")
        self.settings = TrainSettings(
            epochs=config.epochs,
            learning_rate=config.learning_rate,
            optimizer=config.optimizer,
            weight_decay=config.weight_decay,
            label_smoothing=config.label_smoothing,
            seed=config.seed,
            verbose=verbose,
        )
        settings = dataclasses.asdict(self.settings)
        settings.pop("verbose")
        self.common_inputs = {"data": data.fingerprint(), "train_settings": settings, "bn_momentum": self.bn_momentum}

    def path(self, name: str) -> Path:
        return self.run_dir / name

    def stage(self, name: str, inputs: dict[str, Any], outputs: list[str], action) -> StageOutcome:
        outcome = self.ledger.run(name, inputs, outputs, action)
        self.outcomes[name] = outcome
        return outcome

    def scoped(self, action):
        """`action` run inside the strategy's scope: the models, optimizers and metrics it creates are
        distributed."""
        def run_in_scope():
            with self.strategy.scope():
                return action()

        return run_in_scope

    # --- stages ----------------------------------------------------------------------------------------------
    def build_network(self, name: str, width_multiplier: float):
        """A fresh network for this run's data, BatchNorm momentum, weights and stem padding."""
        config = self.config
        return build_network(name, self.data, width_multiplier, self.bn_momentum, config.weights, config.stem_padding)

    def network_inputs(self, name: str, width_multiplier: float) -> dict[str, Any]:
        """What a training stage's network depends on, for its resume fingerprint."""
        config = self.config
        return {**self.common_inputs, "model": name, "width": width_multiplier, "weights": config.weights,
                "padding": config.stem_padding}

    def all_stages(self) -> dict[str, Any]:
        config = self.config
        teacher_path = self.teacher_stage()
        self.train_stage(teacher_path)
        if config.distill_compare:
            self.alone_stage()
        current = TRAINED_MODEL
        if config.prune != "none":
            current = self.prune_stage(current)
        if config.qat:
            if config.quantize == "int8":
                self.ptq_baseline_stage(current)
            current = self.qat_stage(current)
        if not distribute.is_chief(self.strategy):
            log.info("training done on this worker; the chief converts, benchmarks and reports")
            return {}
        self.convert_stage(current)
        if config.device != "none":
            self.benchmark_stage()
        if config.package_app:
            self.package_stage()
        return self.report_stage()

    def teacher_stage(self) -> Path | None:
        config = self.config
        if config.teacher_checkpoint:
            return teacher_model_path(Path(config.teacher_checkpoint))
        if not config.teacher:
            return None

        # The teacher trains on hard labels whatever --label_smoothing says: smoothing pulls every wrong class's
        # logit to the same value, erasing the class similarities its soft targets should carry (Mueller et al.,
        # 2019, "When does label smoothing help?"). Measured (README): a ShuffleNetV2 0.5x student gained 0.76 point
        # from a teacher trained without smoothing and lost 0.34 from the same teacher trained with 0.1.
        settings = dataclasses.replace(self.settings, label_smoothing=0.0)

        def action():
            model = self.build_network(config.teacher, config.teacher_width_multiplier)
            result = train(model, self.data, settings, self.path("teacher"))
            save_model(model, self.path(TEACHER_MODEL))
            return self.train_summary(result, config.teacher, config.teacher_width_multiplier)

        inputs = {**self.network_inputs(config.teacher, config.teacher_width_multiplier),
                  "train_settings": {**self.common_inputs["train_settings"], "label_smoothing": 0.0}}
        outcome = self.stage("teacher", inputs, [TEACHER_MODEL], self.scoped(action))
        log.info("teacher %s: held-out top-1 %.4f", config.teacher, outcome.summary["val_accuracy"])
        return self.path(TEACHER_MODEL)

    def train_stage(self, teacher_path: Path | None) -> None:
        from pipeline.channel_prune import with_gamma_l1

        config = self.config
        # --prune channels: this training is Network Slimming's sparsity training (L1 on the ranking gammas).
        gamma_l1 = config.prune_l1 if config.prune == "channels" else None

        def action():
            student = self.build_network(config.model, config.width_multiplier)
            if gamma_l1 is not None:
                log.info("sparsity training for channel pruning: L1 %g on the gamma of channel-ranking BatchNorms",
                         gamma_l1)
                student = with_gamma_l1(student, gamma_l1)
            if teacher_path is None:
                result = train(student, self.data, self.settings, self.path("train"))
            else:
                teacher = load_teacher(teacher_path)
                log.info("distilling %s from %s (T=%g, alpha=%g)", config.model, teacher_path,
                         config.distill_temperature, config.distill_alpha)
                result = distill(student, teacher, self.data, self.settings, config.distill_temperature,
                                 config.distill_alpha, self.path("train"))
            save_model(student, self.path(TRAINED_MODEL))
            summary = {**self.train_summary(result, config.model, config.width_multiplier),
                       "distilled": teacher_path is not None}
            if config.teacher_checkpoint:  # no teacher stage in this run has evaluated it
                summary["teacher_val_accuracy"] = evaluate_accuracy(teacher, self.data)
            return summary

        inputs = self.network_inputs(config.model, config.width_multiplier)
        if gamma_l1 is not None:
            inputs["gamma_l1"] = gamma_l1
        if teacher_path is not None:
            inputs["teacher"] = {"digest": file_digest(teacher_path), "temperature": config.distill_temperature,
                                 "alpha": config.distill_alpha}
        outcome = self.stage("train", inputs, [TRAINED_MODEL], self.scoped(action))
        log.info("%s: held-out top-1 %.4f (Keras, float)", config.model, outcome.summary["val_accuracy"])

    def alone_stage(self) -> None:
        """--distill_compare: the same student, trained on labels alone for the same budget."""
        config = self.config

        def action():
            student = self.build_network(config.model, config.width_multiplier)
            result = train(student, self.data, self.settings, self.path("student_alone"))
            save_model(student, self.path(ALONE_MODEL))
            return self.train_summary(result, config.model, config.width_multiplier)

        inputs = self.network_inputs(config.model, config.width_multiplier)
        outcome = self.stage("student_alone", inputs, [ALONE_MODEL], self.scoped(action))
        log.info("%s trained alone: held-out top-1 %.4f", config.model, outcome.summary["val_accuracy"])

    def prune_stage(self, source: str) -> str:
        from pipeline.prune import prune_and_finetune

        config = self.config

        def action():
            if config.prune == "channels":
                return channel_action()
            result = prune_and_finetune(
                load_model(self.path(source)), self.data, method=config.prune, sparsity=config.prune_sparsity,
                epochs=config.prune_epochs, learning_rate=config.learning_rate * PRUNE_LEARNING_RATE_FACTOR,
                run_dir=self.run_dir,
            )
            save_model(result.model, self.path(PRUNED_MODEL))
            return {
                "method": config.prune,
                "target_sparsity": config.prune_sparsity,
                "overall_sparsity": float(result.overall_sparsity),
                "per_layer_sparsity": {name: float(value) for name, value in result.per_layer_sparsity.items()},
                "val_accuracy": evaluate_accuracy(result.model, self.data),
            }

        def channel_action():
            from pipeline.channel_prune import channel_prune_and_finetune

            result = channel_prune_and_finetune(
                load_model(self.path(source)), self.data, self.run_dir, prune_ratio=config.prune_ratio,
                target_macs=config.target_macs, iterations=config.prune_iterations, l1=config.prune_l1,
                criterion=config.prune_criterion,
                # Fine-tuning continues the training: the same recipe (optimizer, weight decay, label smoothing).
                finetune=dataclasses.replace(self.settings, epochs=config.prune_epochs,
                                             learning_rate=config.learning_rate * PRUNE_LEARNING_RATE_FACTOR),
            )
            save_model(result.model, self.path(PRUNED_MODEL))
            return {"method": config.prune, "overall_sparsity": 0.0, "per_layer_sparsity": {},
                    "val_accuracy": evaluate_accuracy(result.model, self.data), **result.metrics(),
                    **report.complexity(result.model)}

        inputs = {"source": file_digest(self.path(source)), "data": self.common_inputs["data"],
                  "prune_ratio": config.prune_ratio, "target_macs": config.target_macs,
                  "prune_iterations": config.prune_iterations, "prune_l1": config.prune_l1,
                  "prune_criterion": config.prune_criterion,
                  "method": config.prune, "sparsity": config.prune_sparsity, "epochs": config.prune_epochs,
                  "learning_rate": config.learning_rate, "seed": config.seed}
        outcome = self.stage("prune", inputs, [PRUNED_MODEL], self.scoped(action))
        log.info("pruned (%s): overall sparsity %.3f, held-out top-1 %.4f", config.prune,
                 outcome.summary["overall_sparsity"], outcome.summary["val_accuracy"])
        return PRUNED_MODEL

    def ptq_baseline_stage(self, source: str) -> None:
        """--qat: post-training int8 of the model QAT starts from, so the report shows what QAT bought."""
        config = self.config

        def action():
            return post_training_baseline(load_model(self.path(source)), self.data, self.run_dir, config.io_dtype)

        inputs = {"source": file_digest(self.path(source)), "data": self.common_inputs["data"],
                  "io_dtype": config.io_dtype}
        outcome = self.stage("ptq_baseline", inputs, [PTQ_BASELINE_FILE], action)
        log.info("post-training int8 of the same float model (baseline for QAT): held-out top-1 %.4f (float %.4f)",
                 outcome.summary["tflite_int8_ptq"], outcome.summary["keras_float"])

    def qat_stage(self, source: str) -> str:
        from pipeline.quantize import quantization_aware_finetune, save_quantization_aware_model

        config = self.config

        def action():
            model = quantization_aware_finetune(
                load_model(self.path(source)), self.data, epochs=config.qat_epochs,
                learning_rate=config.learning_rate * QAT_LEARNING_RATE_FACTOR, run_dir=self.run_dir,
            )
            save_quantization_aware_model(model, self.path(QAT_MODEL))
            return {"val_accuracy": evaluate_accuracy(model, self.data)}

        inputs = {"source": file_digest(self.path(source)), "data": self.common_inputs["data"],
                  "epochs": config.qat_epochs, "learning_rate": config.learning_rate, "seed": config.seed}
        outcome = self.stage("qat", inputs, [QAT_MODEL], self.scoped(action))
        log.info("quantization-aware fine-tuned: held-out top-1 %.4f (Keras, fake-quant)",
                 outcome.summary["val_accuracy"])
        return QAT_MODEL

    def convert_stage(self, source: str) -> StageOutcome:
        config = self.config
        outputs = [FLOAT_MODEL_FILE, LABELS_FILE, META_FILE]
        if config.quantize != "none":
            outputs.append(quantized_model_file(config.quantize))

        def action():
            if source == QAT_MODEL:
                from pipeline.quantize import load_quantization_aware_model

                model = load_quantization_aware_model(self.path(source))
            else:
                model = load_model(self.path(source))
            result = convert_and_verify(
                model, self.data, self.run_dir, quantization=config.quantize, io_dtype=config.io_dtype,
                sparse=config.prune in SPARSE_PRUNE_METHODS, model_name=config.model,
            )
            return result.to_dict()

        inputs = {"source": file_digest(self.path(source)), "data": self.common_inputs["data"],
                  "quantize": config.quantize, "io_dtype": config.io_dtype,
                  "sparse": config.prune in SPARSE_PRUNE_METHODS}
        return self.stage("convert_verify", inputs, outputs, action)

    def benchmark_stage(self) -> None:
        config = self.config
        models = {"float32": self.path(FLOAT_MODEL_FILE)}
        if config.quantize != "none":
            models["quantized"] = self.path(quantized_model_file(config.quantize))

        def action():
            return {
                "device": config.device,
                "num_threads": config.num_threads,
                "models": benchmark(models, config.device, config.num_threads, config.benchmark_binary),
            }

        inputs = {name: file_digest(path) for name, path in models.items()}
        inputs.update(device=config.device, num_threads=config.num_threads)
        self.stage("benchmark", inputs, [], action)

    def package_stage(self) -> None:
        from export.android import package

        config = self.config
        inputs = {name: file_digest(self.path(name)) for name in (META_FILE, LABELS_FILE)}
        inputs["app_dir"] = str(Path(config.package_app).resolve())

        def action():
            packaged = package(self.run_dir, Path(config.package_app))
            log.info("%s", packaged)
            return packaged.to_dict()

        self.stage("package_app", inputs, [], action)

    def report_stage(self) -> dict[str, Any]:
        summaries = {name: outcome.summary for name, outcome in self.outcomes.items()}
        seconds = {"data": round(self.data_seconds, 2),
                   **{name: round(outcome.seconds, 2) for name, outcome in self.outcomes.items()}}
        histories = {name: summaries[name].get("history", {}) for name in report.TRAINED_STAGES if name in summaries}

        def action():
            metrics = report.build_metrics(self.config, self.data, summaries, seconds, self.bn_momentum, self.run_dir)
            report.write_report(self.run_dir, metrics, histories)
            return {}

        # Keyed on results only: the data stage's time changes from run to run, the numbers do not.
        self.stage("report", {"summaries": summaries}, report.OUTPUTS, action)
        return report.read_metrics(self.run_dir)

    @staticmethod
    def train_summary(result: TrainResult, name: str, width: float) -> dict[str, Any]:
        return {**report.complexity(result.model), "model": name, "width_multiplier": width,
                "val_accuracy": result.val_accuracy, "history": result.history}


def benchmark(models: dict[str, Path], device: str, num_threads: int,
              benchmark_binary: str | None = None) -> dict[str, dict[str, Any]]:
    """Latency of each .tflite model on `device` (`host`: LiteRT interpreter here; `adb`: a phone)."""
    from export.benchmark import BenchmarkSettings

    settings = BenchmarkSettings(num_threads=num_threads)
    names = list(models)
    if device == "host":
        from export.benchmark import benchmark_host_interleaved

        results = benchmark_host_interleaved([str(models[name]) for name in names], settings, repeats=3)
    else:
        from export.adb import benchmark_device

        results = [benchmark_device(str(models[name]), settings, binary=benchmark_binary) for name in names]
    return {name: result.to_dict() for name, result in zip(names, results)}
