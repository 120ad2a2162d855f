"""Knowledge distillation (Hinton et al., 2015): a student learns from hard labels and a teacher's soft targets.

loss = alpha * CE(labels, student) + (1 - alpha) * T^2 * KL(softmax(teacher / T) || softmax(student / T))

The T^2 factor keeps the soft term's gradients on the scale of the hard term's as T changes (the paper's
section 2). The teacher runs in inference mode and is never updated.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import tensorflow as tf
import tf_keras as keras

from pipeline.data import DataSplits
from pipeline.train import (
    TrainResult,
    TrainSettings,
    accuracy_metric,
    evaluate_accuracy,
    fit,
    load_model,
    make_optimizer,
    sparse_crossentropy,
)

log = logging.getLogger(__name__)


class TeacherError(ValueError):
    """A teacher that cannot teach this student (wrong classes or input size, unreadable file)."""


def distillation_loss(
    labels: tf.Tensor,
    student_logits: tf.Tensor,
    teacher_logits: tf.Tensor,
    alpha: float,
    temperature: float,
    label_smoothing: float = 0.0,
) -> tf.Tensor:
    """Batch mean of alpha * CE(labels) + (1 - alpha) * T^2 * KL(softmax(teacher/T) || softmax(student/T))."""
    hard = sparse_crossentropy(labels, student_logits, label_smoothing)
    teacher_log_probs = tf.nn.log_softmax(teacher_logits / temperature, axis=-1)
    student_log_probs = tf.nn.log_softmax(student_logits / temperature, axis=-1)
    soft = tf.reduce_sum(tf.exp(teacher_log_probs) * (teacher_log_probs - student_log_probs), axis=-1)
    return tf.reduce_mean(alpha * hard + (1.0 - alpha) * temperature**2 * soft)


class Distiller(keras.Model):
    """Trains `student` against `teacher`'s soft targets; calling it runs the student."""

    def __init__(self, student: keras.Model, teacher: keras.Model, temperature: float, alpha: float,
                 label_smoothing: float = 0.0, **kwargs):
        super().__init__(name="distiller", **kwargs)
        self.student = student
        self.teacher = teacher
        self.teacher.trainable = False
        self.temperature = temperature
        self.alpha = alpha
        self.label_smoothing = label_smoothing
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.accuracy = accuracy_metric()

    @property
    def metrics(self):
        return [self.loss_tracker, self.accuracy]

    def call(self, inputs, training=False):
        return self.student(inputs, training=training)

    def train_step(self, data):
        images, labels = data
        teacher_logits = self.teacher(images, training=False)
        with tf.GradientTape() as tape:
            student_logits = self.student(images, training=True)
            loss = distillation_loss(
                labels, student_logits, teacher_logits, self.alpha, self.temperature, self.label_smoothing
            )
            regularization = tf.add_n(self.student.losses) if self.student.losses else 0.0
            total = loss + regularization
            # Under a tf.distribute strategy the optimizer sums the replicas' gradients: divide by the number of
            # replicas so a step follows the global batch's mean loss, as Keras' compiled losses do.
            total = total / tf.distribute.get_strategy().num_replicas_in_sync
        variables = self.student.trainable_variables
        self.optimizer.apply_gradients(zip(tape.gradient(total, variables), variables))
        self.loss_tracker.update_state(loss)
        self.accuracy.update_state(labels, student_logits)
        return {metric.name: metric.result() for metric in self.metrics}

    def test_step(self, data):
        # Held-out loss is the plain hard-label cross-entropy: comparable with a student trained alone.
        images, labels = data
        student_logits = self.student(images, training=False)
        self.loss_tracker.update_state(tf.reduce_mean(sparse_crossentropy(labels, student_logits)))
        self.accuracy.update_state(labels, student_logits)
        return {metric.name: metric.result() for metric in self.metrics}


def distill(
    student: keras.Model,
    teacher: keras.Model,
    data: DataSplits,
    settings: TrainSettings,
    temperature: float,
    alpha: float,
    work_dir: Path,
    callbacks: Sequence[keras.callbacks.Callback] = (),
) -> TrainResult:
    """Train `student` by distillation from `teacher` (resumable like `train.train`); returns the student."""
    check_teacher(teacher, student.input_shape[1:], student.output_shape[-1])
    keras.utils.set_random_seed(settings.seed)
    distiller = Distiller(student, teacher, temperature, alpha, settings.label_smoothing)
    distiller.compile(optimizer=make_optimizer(settings, settings.epochs * data.steps_per_epoch))
    distiller(tf.zeros([1, *data.input_shape]))  # BackupAndRestore can only checkpoint a built model
    history = fit(distiller, data, settings, work_dir, callbacks)
    return TrainResult(model=student, history=history, val_accuracy=evaluate_accuracy(student, data))


def check_teacher(teacher: keras.Model, input_shape: tuple[int, ...], num_classes: int) -> None:
    """Refuse a teacher whose input shape or number of classes differs from the student's."""
    teacher_input = tuple(teacher.input_shape[1:])
    if teacher_input != tuple(input_shape):
        raise TeacherError(
            f"the teacher takes inputs of shape {teacher_input} but the student {tuple(input_shape)}; use a teacher "
            f"trained at the same --image_size."
        )
    if teacher.output_shape[-1] != num_classes:
        raise TeacherError(
            f"the teacher predicts {teacher.output_shape[-1]} classes but the dataset has {num_classes}; use a "
            f"teacher trained on this dataset."
        )


def teacher_model_path(path: Path) -> Path:
    """The teacher's `.keras` file: `path` itself, or `path/model.keras` for a run directory."""
    path = Path(path)
    return path / "model.keras" if path.is_dir() else path


def load_teacher(path: Path) -> keras.Model:
    """A trained teacher from a `.keras` file or a run directory holding `model.keras`."""
    path = teacher_model_path(path)
    if not path.is_file():
        raise TeacherError(f"no teacher model at {path}; give a .keras file or a run directory with model.keras.")
    from pipeline.model_files import ModelFileError

    try:
        return load_model(path)
    except ModelFileError as error:  # its message names the file and why
        raise TeacherError(f"could not load the teacher: {error}") from None
    except Exception as error:  # Keras raises ValueError, OSError, TypeError... for a bad file
        raise TeacherError(f"could not load the teacher {path}: {str(error).splitlines()[0][:200]}") from error
