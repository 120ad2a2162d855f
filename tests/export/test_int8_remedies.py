"""export.int8_remedies: the remedies run when the agreement goal is missed (or when forced), and the best wins."""
import pytest

import tiny_tflite_models as tiny
from export.graph import integer_only_problems, xnnpack_partitions
import numpy as np

from export.int8_remedies import quantize_with_remedies, sign_test_p


def test_goal_met_means_no_remedy():
    _, _, record = quantize_with_remedies(tiny.classifier("plain"), tiny.images(16, seed=3), tiny.images(8, seed=4),
                                          min_agreement=0.0)
    assert record["remedies_ran"] is False and record["chosen"] == "percentile"
    assert list(record["candidates"]) == ["percentile"]


def test_a_missed_goal_tries_every_remedy_and_keeps_the_best():
    # With the I/O the pipeline ships (float32 in, probabilities out), where bias correction once failed.
    int8_model, reference, record = quantize_with_remedies(
        tiny.classifier("plain"), tiny.images(16, seed=3), tiny.images(8, seed=4), io_dtype="float32",
        min_agreement=1.01, extra_calibration_images=tiny.images(16, seed=9), scores="probabilities",
        pixel_range=(-1.0, 1.0))
    assert record["remedies_ran"] is True
    assert set(record["candidates"]) == {
        "percentile", "percentile+bias_correction", "mse", "mse+bias_correction", "percentile_more_images",
        "percentile_more_images+bias_correction"}
    best = max(score["agreement"] for score in record["candidates"].values())
    assert record["candidates"][record["best"]]["agreement"] == best
    # 8 check images cannot show a significant gain (at best p = 1/256 needs 8 wins): the baseline stays.
    assert record["chosen"] == "percentile"
    assert all(score["sign_test_p"] >= 0.05 for name, score in record["candidates"].items() if name != "percentile")
    assert not integer_only_problems(int8_model, float_io=True) and xnnpack_partitions(int8_model).partitions == 1
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


def test_sign_test():
    baseline = np.array([True] * 90 + [False] * 10)
    assert sign_test_p(baseline, baseline) == 1.0  # no image differs: no evidence
    two_better = baseline.copy()
    two_better[90:92] = True
    assert sign_test_p(two_better, baseline) == 0.25  # 2 wins of 2: p = 1/4
    eight_better = baseline.copy()
    eight_better[90:98] = True
    assert sign_test_p(eight_better, baseline) == 1 / 256
    mixed = eight_better.copy()
    mixed[:2] = False  # 8 wins, 2 losses
    assert sign_test_p(mixed, baseline) == (45 + 10 + 1) / 1024
