"""export.graph: op histograms, XNNPACK partitions and the integer-only check on real conversions."""
import pytest

import tiny_tflite_models as tiny
from export.graph import integer_only_problems, op_histogram, xnnpack_partitions


def test_op_histogram_counts_every_op(tmp_path):
    flatbuffer = tiny.converted("plain", "none")
    expected = {"CONV_2D": 2, "FULLY_CONNECTED": 1, "MEAN": 1}  # BatchNorm and ReLU fold into the convolution
    assert op_histogram(flatbuffer) == expected
    path = tmp_path / "model.tflite"
    path.write_bytes(flatbuffer)
    assert op_histogram(path) == op_histogram(str(path)) == expected
    assert op_histogram(tiny.converted("hard_swish", "int8"))["HARD_SWISH"] == 1


def test_op_histogram_rejects_a_file_that_is_not_tflite(tmp_path):
    path = tmp_path / "model.tflite"
    path.write_text("not a model")
    with pytest.raises(ValueError, match="not a TFLite flatbuffer"):
        op_histogram(path)


@pytest.mark.parametrize("quantization", ["none", "float16", "dynamic", "int8"])
def test_a_plain_conv_model_is_one_xnnpack_partition(quantization):
    report = xnnpack_partitions(tiny.converted("plain", quantization))
    assert report.partitions == 1
    assert report.delegated_nodes == report.total_nodes and report.undelegated_ops == {}
    assert report.fully_delegated and report.as_dict()["fully_delegated"]


def test_int8_hard_swish_falls_back_and_splits_the_graph():
    report = xnnpack_partitions(tiny.converted("hard_swish", "int8"))
    assert report.undelegated_ops == {"HARD_SWISH": 1}
    assert report.partitions == 2  # conv before it, conv + pool + dense after it
    assert report.delegated_nodes == report.total_nodes - 1 and not report.fully_delegated
    # XNNPACK takes the same op in float.
    assert xnnpack_partitions(tiny.converted("hard_swish", "none")).fully_delegated


def test_int8_softmax_is_left_to_the_builtin_kernel():
    report = xnnpack_partitions(tiny.converted("softmax", "int8"))
    assert report.undelegated_ops == {"SOFTMAX": 1} and report.partitions == 1
    assert not report.fully_delegated


def test_dynamic_batch_shape_ops_stay_outside_xnnpack():
    report = xnnpack_partitions(tiny.converted_with_dynamic_batch("reshape"))
    assert {"SHAPE", "PACK", "STRIDED_SLICE"} <= set(report.undelegated_ops)
    assert xnnpack_partitions(tiny.converted("reshape", "int8")).fully_delegated


def test_clean_int8_model_has_no_integer_only_problems():
    assert integer_only_problems(tiny.converted("plain", "int8")) == []
    assert integer_only_problems(tiny.converted("plain", "int8", "uint8")) == []  # edge QUANTIZE ops are fine


def test_float_models_are_flagged():
    float32 = integer_only_problems(tiny.converted("plain", "none"))
    assert any("input" in problem and "float32" in problem for problem in float32)
    assert any(problem.startswith("CONV_2D") and "float tensor" in problem for problem in float32)
    float16 = integer_only_problems(tiny.converted("plain", "float16"))
    assert any(problem.startswith("DEQUANTIZE") and "inside the graph" in problem for problem in float16)


def test_int8_hard_swish_and_dynamic_shape_ops_are_flagged():
    (hard_swish,) = integer_only_problems(tiny.converted("hard_swish", "int8"))
    assert hard_swish.startswith("HARD_SWISH")
    dynamic = integer_only_problems(tiny.converted_with_dynamic_batch("reshape"))
    flagged = {problem.split()[0] for problem in dynamic}
    assert {"SHAPE", "PACK", "STRIDED_SLICE"} <= flagged

