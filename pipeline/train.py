"""The train stage: build a network from the zoo and fit it with Keras, resumably.

Recipe: SGD with Nesterov momentum or Adam, cosine learning-rate decay to zero, label smoothing, and decoupled
weight decay (AdamW / SGD's `weight_decay`) on convolution and dense kernels only (not on BatchNorm, biases or
depthwise kernels: MobileNetV1 puts "very little or no weight decay" on depthwise filters, which have few
parameters). Training concerns are Keras callbacks: a checkpoint every epoch, `BackupAndRestore` (a killed run
resumes at the last finished epoch, and ends with the weights it would have had uninterrupted), TensorBoard logs,
and a CSV history that survives the resume.
"""
from __future__ import annotations

import contextlib
import csv
import dataclasses
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import tensorflow as tf
import tf_keras as keras
from tf_keras.src import backend as keras_backend  # RandomGenerator: the random source of Keras' layers

import models
from export.files import new_file_mode
from pipeline import distribute
from pipeline.data import DataSplits

log = logging.getLogger(__name__)

SERIALIZATION_PACKAGE = "mobile_cnn_pipeline"
NO_WEIGHT_DECAY = ("gamma", "beta", "bias", "depthwise_kernel")


@dataclasses.dataclass(frozen=True)
class TrainSettings:
    """How to fit: the optimizer recipe and the budget."""

    epochs: int
    learning_rate: float
    optimizer: str = "adam"
    weight_decay: float = 0.0
    label_smoothing: float = 0.0
    seed: int = 0
    verbose: int | None = None  # None: progress bars on a terminal, one line per epoch otherwise


@dataclasses.dataclass
class TrainResult:
    """A fitted model, its per-epoch history, and its held-out top-1 accuracy in inference mode."""

    model: keras.Model
    history: dict[str, list[float]]
    val_accuracy: float

    def summary(self) -> dict:
        return {"val_accuracy": self.val_accuracy, "history": self.history}


def batch_norm_momentum_for(total_steps: int) -> float:
    """BatchNorm momentum whose moving-average window (1 / (1 - m) steps) is ~1/30 of the training run.

    keras.applications' 0.999 leaves a short run's moving statistics unconverged (docs/design.md, "Training
    defaults"). Clipped to [0.9, 0.99], Keras' default.
    """
    window = min(100.0, max(10.0, total_steps / 30.0))
    return round(1.0 - 1.0 / window, 4)


def build_network(
    name: str,
    data: DataSplits,
    width_multiplier: float,
    bn_momentum: float,
    weights: str | None = None,
    padding: str = "same",
) -> keras.Model:
    """A zoo network sized for `data` (input shape, classes), outputting logits."""
    return models.build(
        name,
        input_shape=data.input_shape,
        num_classes=data.num_classes,
        width_multiplier=width_multiplier,
        weights=weights,
        bn_momentum=bn_momentum,
        padding=padding,
    )


@keras.saving.register_keras_serializable(package=SERIALIZATION_PACKAGE)
class SparseCategoricalCrossentropyWithSmoothing(keras.losses.Loss):
    """Cross-entropy on integer labels and logits, with label smoothing (Keras 2's sparse loss has none)."""

    def __init__(self, label_smoothing: float = 0.0, name: str = "crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.label_smoothing = label_smoothing

    def call(self, y_true, y_pred):
        return sparse_crossentropy(y_true, y_pred, self.label_smoothing)

    def get_config(self):
        return {**super().get_config(), "label_smoothing": self.label_smoothing}


def sparse_crossentropy(labels: tf.Tensor, logits: tf.Tensor, label_smoothing: float = 0.0) -> tf.Tensor:
    """Per-example cross-entropy of integer `labels` under `logits`, with label smoothing."""
    one_hot = tf.one_hot(tf.cast(tf.reshape(labels, [-1]), tf.int32), depth=tf.shape(logits)[-1], dtype=logits.dtype)
    return keras.losses.categorical_crossentropy(one_hot, logits, from_logits=True, label_smoothing=label_smoothing)


def make_optimizer(settings: TrainSettings, total_steps: int) -> keras.optimizers.Optimizer:
    """Adam(W) or SGD with Nesterov momentum 0.9, cosine-decayed, with decoupled weight decay on kernels."""
    schedule = keras.optimizers.schedules.CosineDecay(settings.learning_rate, decay_steps=max(1, total_steps))
    weight_decay = settings.weight_decay or None
    if settings.optimizer == "adam":
        optimizer = keras.optimizers.AdamW(learning_rate=schedule, weight_decay=weight_decay or 0.0)
    elif settings.optimizer == "sgd":
        optimizer = keras.optimizers.SGD(learning_rate=schedule, momentum=0.9, nesterov=True, weight_decay=weight_decay)
    else:
        raise ValueError(f"Unknown optimizer {settings.optimizer!r}; choose adam or sgd.")
    if weight_decay:
        optimizer.exclude_from_weight_decay(var_names=list(NO_WEIGHT_DECAY))
    return optimizer


def accuracy_metric() -> keras.metrics.Metric:
    return keras.metrics.SparseCategoricalAccuracy(name="accuracy")


def train(
    model: keras.Model,
    data: DataSplits,
    settings: TrainSettings,
    work_dir: Path,
    callbacks: Sequence[keras.callbacks.Callback] = (),
) -> TrainResult:
    """Fit `model` on `data.train`, resuming from `work_dir`'s backup if a previous attempt was interrupted."""
    keras.utils.set_random_seed(settings.seed)
    model.compile(
        optimizer=make_optimizer(settings, settings.epochs * data.steps_per_epoch),
        loss=SparseCategoricalCrossentropyWithSmoothing(settings.label_smoothing),
        metrics=[accuracy_metric()],
    )
    history = fit(model, data, settings, work_dir, callbacks)
    return TrainResult(model=model, history=history, val_accuracy=evaluate_accuracy(model, data))


def fit(
    model: keras.Model,
    data: DataSplits,
    settings: TrainSettings,
    work_dir: Path,
    callbacks: Sequence[keras.callbacks.Callback] = (),
) -> dict[str, list[float]]:
    """`model.fit` with the run's callbacks; returns the per-epoch history of all attempts together.

    A fit killed and run again resumes exactly: BackupAndRestore restores weights, optimizer and epoch, the data
    of the epochs left is what an uninterrupted fit would have seen (`DataSplits.training_epochs`), and dropout
    masks are keyed on the optimizer's step, so the resumed fit ends with the uninterrupted fit's weights.
    """
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    history_path = work_dir / "history.csv"
    # Under a multi-worker strategy every worker restores the chief's backup (pipeline.distribute).
    backup_dir = distribute.chief_path(work_dir / "backup", tf.distribute.get_strategy())
    first_epoch = resumed_epoch(backup_dir)
    if first_epoch:
        log.info("resuming training at epoch %d of %d from %s", first_epoch + 1, settings.epochs, backup_dir)
    standard = [
        # BackupAndRestore first: on a resume it restores weights, optimizer and epoch before anything else runs.
        keras.callbacks.BackupAndRestore(backup_dir=str(backup_dir)),
        _CheckResumedEpoch(first_epoch, backup_dir),
        keras.callbacks.ModelCheckpoint(str(work_dir / "checkpoints" / "last_epoch"), save_weights_only=True),
        keras.callbacks.TensorBoard(log_dir=str(work_dir / "logs"), write_graph=False, profile_batch=0),
        keras.callbacks.CSVLogger(str(history_path), append=True),
    ]
    with _step_keyed_randomness(model, settings.seed):
        # One iterator over all the epochs left, `steps_per_epoch` batches each.
        model.fit(
            data.training_epochs(first_epoch, settings.epochs),
            steps_per_epoch=data.steps_per_epoch,
            validation_data=data.val,
            epochs=settings.epochs,
            callbacks=standard + list(callbacks),
            verbose=_verbosity(settings.verbose),
        )
    return read_history(history_path)


# Where BackupAndRestore's checkpoint (tf_keras' WorkerTrainingState, in the `chief` sub-folder) keeps the number
# of the last epoch it backed up.
_BACKUP_EPOCH_KEY = "ckpt_saved_epoch/.ATTRIBUTES/VARIABLE_VALUE"


def resumed_epoch(backup_dir: Path) -> int:
    """The 0-based epoch a fit backed up in `backup_dir` resumes at: 0 where there is no backup."""
    latest = tf.train.latest_checkpoint(str(Path(backup_dir) / "chief"))
    if latest is None:
        return 0
    return int(tf.train.load_checkpoint(latest).get_tensor(_BACKUP_EPOCH_KEY)) + 1


class _CheckResumedEpoch(keras.callbacks.Callback):
    """Stops a fit whose first epoch is not the one its data starts at (`resumed_epoch` misread the backup)."""

    def __init__(self, first_epoch: int, backup_dir: Path):
        super().__init__()
        self.first_epoch = first_epoch
        self.backup_dir = backup_dir

    def on_epoch_begin(self, epoch, logs=None):
        if self.first_epoch is not None and epoch != self.first_epoch:
            raise RuntimeError(
                f"the training data starts at epoch {self.first_epoch + 1} but Keras resumed at epoch {epoch + 1}; "
                f"delete {self.backup_dir} to restart this training stage."
            )
        self.first_epoch = None


class _StepKeyedRandom(keras_backend.RandomGenerator):
    """A layer's random source during a fit: stateless ops keyed on (seed, layer, optimizer step, replica).

    Keras' default random ops keep their state inside the process, so a resumed fit would draw the first steps'
    dropout masks again; the optimizer's step is restored with the model.
    """

    def __init__(self, seed: int, layer_index: int, step: tf.Variable):
        super().__init__(seed=seed, rng_type=keras_backend.RandomGenerator.RNG_STATELESS)
        self._layer_key = tf.constant([seed, layer_index], tf.int64)
        self._step = step

    def make_seed_for_stateless_op(self):
        fold_in = tf.random.experimental.stateless_fold_in
        step_key = fold_in(self._layer_key, tf.cast(self._step, tf.int64))
        replica = tf.distribute.get_replica_context()
        replica_id = replica.replica_id_in_sync_group if replica is not None else 0
        return fold_in(step_key, tf.cast(replica_id, tf.int64))


@contextlib.contextmanager
def _step_keyed_randomness(model: keras.Model, seed: int) -> Iterator[None]:
    """Give every random layer of `model` (dropout, noise) a `_StepKeyedRandom` source for the duration of a fit;
    the layers get their own sources back afterwards, so saved configurations do not change."""
    random_layers = [layer for layer in model.submodules
                     if isinstance(getattr(layer, "_random_generator", None), keras_backend.RandomGenerator)]
    originals = [layer._random_generator for layer in random_layers]
    for index, layer in enumerate(random_layers):
        layer._random_generator = _StepKeyedRandom(seed, index, model.optimizer.iterations)
    try:
        yield
    finally:
        for layer, original in zip(random_layers, originals):
            layer._random_generator = original


def read_history(path: Path) -> dict[str, list[float]]:
    """Per-epoch metrics from a CSVLogger file; an epoch logged twice (killed, then resumed) counts once."""
    if not Path(path).is_file():
        return {}
    by_epoch: dict[int, dict[str, float]] = {}
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            if row.get("epoch", "epoch") == "epoch":  # a repeated header from an appended resume
                continue
            by_epoch[int(row["epoch"])] = {key: float(value) for key, value in row.items() if key != "epoch" and value}
    columns = sorted({key for row in by_epoch.values() for key in row})
    return {key: [by_epoch[epoch].get(key) for epoch in sorted(by_epoch)] for key in columns}


def evaluate_accuracy(model: keras.Model, data: DataSplits) -> float:
    """Held-out top-1 of `model` in inference mode (moving BatchNorm statistics, no dropout)."""
    images, labels = data.val_arrays()
    logits = model.predict(images, batch_size=max(data.batch_size, 128), verbose=0)
    return float(np.mean(np.argmax(logits, axis=-1) == labels))


def _verbosity(verbose: int | None) -> int:
    if verbose is not None:
        return verbose
    return 1 if sys.stdout.isatty() else 2


def save_model(model: keras.Model, path: Path) -> None:
    """Save a Keras model atomically: a `.keras` file in the same directory, then a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    os.close(handle)
    try:
        model.save(temp)
        os.chmod(temp, new_file_mode())  # mkstemp made it 0600 whatever the umask
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def load_model(path: Path) -> keras.Model:
    """Load a model saved by `save_model`, refusing any file that would run code (pipeline.model_files)."""
    from pipeline.model_files import load_model_file

    return load_model_file(path)
