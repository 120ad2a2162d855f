"""export.quantization_report: per-layer int8 error against the calibrated float model, on tiny models."""
import json

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.lite.tools import flatbuffer_utils

import tiny_tflite_models as tiny
from export.calibration import quantize_calibrated
from export.convert import to_int8_with_float_reference
from export.quantization_report import (
    changed_answers,
    error_by_depth_png,
    keras_layer_name,
    markdown_lines,
    mean_kl_divergence,
    quantization_report,
    top_offenders,
)


@pytest.fixture(scope="module")
def int8_and_reference():
    return to_int8_with_float_reference(tiny.classifier("hard_swish"), tiny.images(16, seed=3))


def _with_range_shrunk(calibrated: bytes, name_part: str, factor: float) -> bytes:
    """The calibrated model with one tensor's recorded range made `factor` times narrower."""
    model = flatbuffer_utils.convert_bytearray_to_object(calibrated)
    tensors = model.subgraphs[0].tensors
    [tensor] = [t for t in tensors if name_part in t.name.decode() and t.quantization is not None
                and t.quantization.min is not None and len(t.quantization.min) == 1]
    tensor.quantization.min = [tensor.quantization.min[0] * factor]
    tensor.quantization.max = [tensor.quantization.max[0] * factor]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def test_report_is_json_ready_and_covers_every_activation(int8_and_reference):
    int8_model, reference = int8_and_reference
    report = quantization_report(reference, int8_model, tiny.images(8, seed=5))
    json.dumps(report, allow_nan=False)
    assert 0 <= report["changed_near_ties"] <= report["changed_answers"] <= report["num_images"]
    layers = [row["layer"] for row in report["layers"]]
    assert layers == ["stem_relu", "hard_swish", "head_conv", "pool", "(model output)"]
    assert report["num_images"] == 8
    for row in report["layers"]:
        assert 0 <= row["range_error"] < 0.05 and 0 <= row["error"] < 0.05  # calibrated on similar images
        low, high = row["range"]
        assert low <= 0 <= high
        assert np.isclose(high - low, 255 * row["scale"])


def test_a_deliberately_bad_range_is_the_top_offender(int8_and_reference):
    _, reference = int8_and_reference
    bad = quantize_calibrated(_with_range_shrunk(reference, "head_conv/Relu", 0.01), tf.int8)
    report = quantization_report(reference, bad, tiny.images(8, seed=5))
    worst = top_offenders(report, 1)[0]
    assert worst["layer"] == "head_conv"
    assert worst["clipped"] > 0.3  # of all values, ReLU zeros included
    assert worst["range_error"] > 0.5
    before = {row["layer"]: row for row in report["layers"]}["hard_swish"]
    assert before["error"] < 0.05  # upstream of the bad range nothing changed
    lines = markdown_lines(report, count=2)
    assert "| head_conv |" in lines[4]


def test_agreement_and_kl_on_hand_made_logits():
    reference = np.log(np.array([[0.5, 0.25, 0.25], [0.1, 0.8, 0.1]]))
    other = np.log(np.array([[0.25, 0.5, 0.25], [0.1, 0.8, 0.1]]))
    expected_first = 0.5 * np.log(2) + 0.25 * np.log(0.5) + 0.0  # sum p log(p / q)
    assert mean_kl_divergence(reference, other) == pytest.approx(expected_first / 2)
    assert mean_kl_divergence(reference + 7.0, other - 3.0) == pytest.approx(expected_first / 2)  # softmax shift
    assert mean_kl_divergence(np.exp(reference), np.exp(other)) == pytest.approx(expected_first / 2)  # probs
    assert mean_kl_divergence(reference, reference) == pytest.approx(0.0)


def test_model_level_numbers_match_the_outputs(int8_and_reference):
    int8_model, reference = int8_and_reference
    images = tiny.images(8, seed=6)
    report = quantization_report(reference, int8_model, images)
    assert 0.0 <= report["mean_kl_divergence"] < 0.01
    assert report["top1_agreement"] == pytest.approx(1.0)  # 8 images, tiny error


def test_unrelated_models_are_refused(int8_and_reference):
    int8_model, _ = int8_and_reference
    other_reference = to_int8_with_float_reference(tiny.classifier("plain"), tiny.images(4, seed=3))[1]
    with pytest.raises(ValueError, match="shares only 1 of the int8 model's 5"):
        quantization_report(other_reference, int8_model, tiny.images(2))


def test_plot_is_a_png(int8_and_reference):
    int8_model, reference = int8_and_reference
    png = error_by_depth_png(quantization_report(reference, int8_model, tiny.images(2, seed=5)))
    assert png.startswith(b"\x89PNG")


def test_keras_layer_name():
    assert keras_layer_name("net/block_1/conv/Conv2D;net/block_1/bn/FusedBatchNormV3") == "block_1/conv"
    assert keras_layer_name("net/re_lu/Relu") == "re_lu"
    assert keras_layer_name("serving_default_input:0") == "serving_default_input:0"


def test_changed_answers_are_split_into_near_ties_and_clear_answers():
    reference = np.array([[0.52, 0.48, 0.0], [0.9, 0.05, 0.05], [0.1, 0.2, 0.7], [0.3, 0.35, 0.35]])
    other = np.array([[0.48, 0.52, 0.0], [0.1, 0.8, 0.1], [0.1, 0.2, 0.7], [0.3, 0.35, 0.35]])
    counts = changed_answers(reference, other)
    # Rows 0 and 3 are near-ties (gaps 0.04 and 0.0); row 0 flips, row 1 (gap 0.85) flips too.
    assert counts == {"near_tie_gap": 0.1, "changed_answers": 2, "changed_near_ties": 1, "near_tie_share": 0.5,
                      "agreement_clear": 0.5}
    assert changed_answers(np.log(reference + 1e-9), other)["changed_near_ties"] == 1  # logits: softmax first
    assert changed_answers(reference, other, gap=0.0)["agreement_clear"] == 0.5
