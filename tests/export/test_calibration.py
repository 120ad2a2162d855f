"""export.calibration: the per-tensor squared-error range search (the percentile rule is tested in test_convert)."""
import numpy as np
import pytest

import tiny_tflite_models as tiny
from export.calibration import CalibrationError, mse_optimal_range, observed_ranges
from export.convert import ConversionError, to_tflite
from export.graph import integer_only_problems, xnnpack_partitions


def _histogram(values: np.ndarray, bins: int = 4096):
    value_range = (min(values.min(), 0.0), max(values.max(), 0.0))
    return np.histogram(values, bins, range=value_range)[0], value_range


def test_a_laplace_tensor_is_clipped_where_theory_says():
    """For Laplace(0, b) at 8 bits the squared-error-optimal clip is about 9.9 b (Banner et al., ACIQ)."""
    values = np.random.default_rng(0).laplace(0, 1, 1_000_000)  # extremes beyond +-13
    low, high = mse_optimal_range(*_histogram(values))
    assert low == pytest.approx(-9.9, abs=1.0) and high == pytest.approx(9.9, abs=1.0)


def test_a_uniform_tensor_keeps_its_whole_range():
    values = np.random.default_rng(0).uniform(-1, 3, 100_000)
    low, high = mse_optimal_range(*_histogram(values))
    assert low == pytest.approx(-1, abs=0.02) and high == pytest.approx(3, abs=0.05)


def test_a_non_negative_tensor_starts_at_zero():
    values = np.abs(np.random.default_rng(0).normal(0, 1, 100_000))
    low, high = mse_optimal_range(*_histogram(values))
    assert low == 0 and 2.5 < high < 5.5


def test_mse_ranges_convert_to_one_integer_only_partition():
    flatbuffer = to_tflite(tiny.classifier("plain"), "int8", tiny.images(16, seed=3), range_method="mse")
    assert not integer_only_problems(flatbuffer)
    assert xnnpack_partitions(flatbuffer).partitions == 1


def test_unknown_range_method_is_refused():
    with pytest.raises(ConversionError, match="range_method"):
        to_tflite(tiny.classifier(), "int8", tiny.images(2), range_method="minmax")
    with pytest.raises(CalibrationError, match="Unknown range method"):
        observed_ranges(b"", lambda: iter(()), [], method="minmax")
