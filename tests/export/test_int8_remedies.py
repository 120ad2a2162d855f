"""export.int8_remedies: the remedies run when the agreement goal is missed (or when forced), and the best wins."""
import pytest

import tiny_tflite_models as tiny
from export.graph import integer_only_problems, xnnpack_partitions
from export.int8_remedies import quantize_with_remedies


def test_goal_met_means_no_remedy():
    _, _, record = quantize_with_remedies(tiny.classifier("plain"), tiny.images(16, seed=3), tiny.images(8, seed=4),
                                          min_agreement=0.0)
    assert record["remedies_ran"] is False and record["chosen"] == "percentile"
    assert list(record["candidates"]) == ["percentile"]


def test_a_missed_goal_tries_every_remedy_and_keeps_the_best():
    int8_model, reference, record = quantize_with_remedies(
        tiny.classifier("plain"), tiny.images(16, seed=3), tiny.images(8, seed=4), min_agreement=1.01,
        extra_calibration_images=tiny.images(16, seed=9))
    assert record["remedies_ran"] is True
    assert set(record["candidates"]) == {
        "percentile", "percentile+bias_correction", "mse", "mse+bias_correction", "percentile_more_images",
        "percentile_more_images+bias_correction"}
    best = max(score["agreement"] for score in record["candidates"].values())
    assert record["candidates"][record["chosen"]]["agreement"] == best
    assert not integer_only_problems(int8_model) and xnnpack_partitions(int8_model).partitions == 1
    assert reference != int8_model


def test_never_and_unknown_modes():
    _, _, record = quantize_with_remedies(tiny.classifier("plain"), tiny.images(4, seed=3), tiny.images(4, seed=4),
                                          mode="never", min_agreement=1.01)
    assert record["remedies_ran"] is False
    _, _, record = quantize_with_remedies(tiny.classifier("plain"), tiny.images(4, seed=3), tiny.images(4, seed=4),
                                          mode="always", min_agreement=0.0)
    assert "percentile_more_images" not in record["candidates"] and len(record["candidates"]) == 4
    with pytest.raises(ValueError, match="Unknown int8 remedy mode"):
        quantize_with_remedies(tiny.classifier("plain"), tiny.images(4), tiny.images(4), mode="sometimes")
