"""Distillation: the loss against a hand computation, the Distiller's training step, teacher checks."""
from __future__ import annotations

import math

import numpy as np
import pytest
import tf_keras as keras

from pipeline.distill import Distiller, TeacherError, check_teacher, distill, distillation_loss, load_teacher
from pipeline.train import TrainSettings, build_network, save_model
from tests.pipeline.conftest import TINY_MODEL, TINY_WIDTH


def softmax(values):
    exps = [math.exp(v - max(values)) for v in values]
    return [e / sum(exps) for e in exps]


def hand_loss(label, student, teacher, alpha, temperature):
    """alpha * CE(label) + (1 - alpha) * T^2 * KL(softmax(teacher/T) || softmax(student/T)), written out."""
    cross_entropy = -math.log(softmax(student)[label])
    p_teacher = softmax([t / temperature for t in teacher])
    p_student = softmax([s / temperature for s in student])
    kl = sum(p * math.log(p / q) for p, q in zip(p_teacher, p_student))
    return alpha * cross_entropy + (1 - alpha) * temperature**2 * kl


@pytest.mark.parametrize("alpha, temperature", [(0.5, 4.0), (0.1, 2.0), (1.0, 3.0), (0.0, 1.0), (0.7, 8.0)])
def test_distillation_loss_matches_the_hand_computation(alpha, temperature):
    students = [[1.0, 2.0, -0.5], [0.3, -1.2, 2.2]]
    teachers = [[2.5, 0.5, -1.0], [0.0, 0.4, 1.5]]
    labels = [1, 2]
    expected = np.mean([hand_loss(y, s, t, alpha, temperature) for y, s, t in zip(labels, students, teachers)])
    got = distillation_loss(np.array(labels), np.array(students, np.float32), np.array(teachers, np.float32),
                            alpha, temperature)
    assert float(got) == pytest.approx(expected, rel=1e-5)


def test_identical_logits_leave_only_the_hard_term():
    logits = np.array([[1.0, 2.0, 3.0]], np.float32)
    hard = -math.log(softmax([1.0, 2.0, 3.0])[0])
    assert float(distillation_loss(np.array([0]), logits, logits, 0.3, 5.0)) == pytest.approx(0.3 * hard, rel=1e-5)


def test_distiller_trains_the_student_and_never_the_teacher(tiny_data, tmp_path, caplog):
    keras.utils.set_random_seed(0)
    student = build_network(TINY_MODEL, tiny_data, TINY_WIDTH, bn_momentum=0.9)
    teacher = build_network(TINY_MODEL, tiny_data, 0.5, bn_momentum=0.9)
    teacher_before = [w.copy() for w in teacher.get_weights()]
    student_before = [w.copy() for w in student.get_weights()]
    settings = TrainSettings(epochs=1, learning_rate=1e-3, seed=0, verbose=0)
    result = distill(student, teacher, tiny_data, settings, temperature=4.0, alpha=0.5, work_dir=tmp_path)
    assert result.model is student and 0.0 <= result.val_accuracy <= 1.0
    assert "must be built" not in caplog.text  # BackupAndRestore is active: a killed distillation resumes
    assert set(result.history) >= {"loss", "accuracy", "val_loss", "val_accuracy"}
    for before, after in zip(teacher_before, teacher.get_weights()):
        np.testing.assert_array_equal(before, after)  # BatchNorm statistics included: inference mode
    assert any(not np.array_equal(b, a) for b, a in zip(student_before, student.get_weights()))
    images = tiny_data.val_arrays()[0][:2]
    np.testing.assert_allclose(Distiller(student, teacher, 2.0, 0.5)(images), student(images), atol=1e-6)


def test_teacher_checks(tiny_data, tmp_path):
    teacher = build_network(TINY_MODEL, tiny_data, TINY_WIDTH, bn_momentum=0.9)
    check_teacher(teacher, tiny_data.input_shape, tiny_data.num_classes)
    with pytest.raises(TeacherError, match="classes"):
        check_teacher(teacher, tiny_data.input_shape, tiny_data.num_classes + 1)
    with pytest.raises(TeacherError, match="image_size"):
        check_teacher(teacher, (64, 64, 3), tiny_data.num_classes)
    with pytest.raises(TeacherError, match="no teacher model"):
        load_teacher(tmp_path)
    save_model(teacher, tmp_path / "model.keras")
    assert load_teacher(tmp_path).output_shape == teacher.output_shape  # a run directory works too
