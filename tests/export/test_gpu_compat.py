import json

import pytest

import tiny_tflite_models as tiny
from export import gpu_compat
from export.gpu_compat import GpuCompatibilityError, check_gpu_compatibility, parse_analyzer_report
from export.graph import op_histogram

# The analyzer's text as TF 2.8-2.18 printed it, warnings included (shortened).
OLD_ANALYZER_REPORT = """=== TFLite ModelAnalyzer ===

Your TFLite model has '1' subgraph(s). In the subgraph description below,
Subgraph#0 main(T#0) -> [T#3]
  Op#0 CONV_2D(T#0, T#1, T#2) -> [T#4]
  Op#1 CUSTOM:TFLite_Detection_PostProcess(T#4) -> [T#5]
GPU COMPATIBILITY WARNING: Not supported custom op TFLite_Detection_PostProcess
  Op#2 ARG_MAX(T#5, T#6) -> [T#3]
GPU COMPATIBILITY WARNING: Not supported op ARG_MAX

GPU COMPATIBILITY WARNING: Subgraph#0 has GPU delegate compatibility issues at nodes 1, 2 with TFLite runtime version 2.8.2
"""


@pytest.mark.parametrize("quantization", ["none", "float16"])
def test_plain_conv_model_is_compatible(quantization):
    result = check_gpu_compatibility(tiny.converted("plain", quantization))
    assert result.compatible
    assert result.rejected == ()
    assert result.total_ops == sum(op_histogram(tiny.converted("plain", quantization)).values())
    assert result.summary() == "GPU: all ops"


@pytest.mark.parametrize("quantization", ["none", "float16"])
def test_five_dimensional_shuffle_is_rejected_op_by_op(quantization):
    flatbuffer = tiny.converted("shuffle_5d", quantization)
    result = check_gpu_compatibility(flatbuffer)
    assert not result.compatible
    # reshape to 5-D, transpose in 5-D, reshape back from 5-D: three ops touch a 5-D runtime tensor.
    assert result.rejected_op_counts() == {"RESHAPE": 2, "TRANSPOSE": 1}
    assert all("5-D" in rejection.message and "BHWC" in rejection.message for rejection in result.rejected)
    assert result.summary() == "GPU: 3 ops rejected (RESHAPE×2, TRANSPOSE)"
    # The index is the op's position in the subgraph: the ops there are the ones named.
    from ai_edge_litert import schema_py_generated as schema
    from export.graph import op_name

    subgraph = schema.Model.GetRootAs(flatbuffer, 0).Subgraphs(0)
    model = schema.Model.GetRootAs(flatbuffer, 0)
    for rejection in result.rejected:
        assert op_name(model, subgraph.Operators(rejection.index)) == rejection.op


def test_dynamic_batch_plumbing_is_rejected_with_reasons():
    result = check_gpu_compatibility(tiny.converted_with_dynamic_batch("reshape", "none"))
    counts = result.rejected_op_counts()
    assert counts["SHAPE"] == 2
    by_op = {rejection.op: rejection.message for rejection in result.rejected}
    assert by_op["SHAPE"] == "SHAPE has no GPU delegate kernel"
    assert "shrink_axis_mask" in by_op["STRIDED_SLICE"]


def test_path_and_bytes_give_the_same_json_ready_result(tmp_path):
    path = tmp_path / "model.tflite"
    path.write_bytes(tiny.converted("shuffle_5d", "none"))
    from_path = check_gpu_compatibility(path).as_dict()
    assert from_path == check_gpu_compatibility(str(path)).as_dict()
    assert from_path == check_gpu_compatibility(tiny.converted("shuffle_5d", "none")).as_dict()
    assert json.loads(json.dumps(from_path)) == from_path
    assert from_path["compatible"] is False
    assert {"op", "index", "subgraph", "message"} == set(from_path["rejected"][0])


def test_unreadable_inputs_raise_typed_errors(tmp_path):
    with pytest.raises(GpuCompatibilityError, match="Cannot read .*missing.tflite"):
        check_gpu_compatibility(tmp_path / "missing.tflite")
    with pytest.raises(GpuCompatibilityError, match="not a TFLite flatbuffer"):
        check_gpu_compatibility(b"not a model at all")
    (tmp_path / "model.tflite").write_text("hello")
    with pytest.raises(GpuCompatibilityError, match="model.tflite is not a TFLite flatbuffer"):
        check_gpu_compatibility(tmp_path / "model.tflite")


def test_analyzer_warnings_are_parsed_per_op():
    rejections = parse_analyzer_report(OLD_ANALYZER_REPORT)
    assert [(r.op, r.index, r.subgraph, r.message) for r in rejections] == [
        ("CUSTOM:TFLite_Detection_PostProcess", 1, 0, "Not supported custom op TFLite_Detection_PostProcess"),
        ("ARG_MAX", 2, 0, "Not supported op ARG_MAX"),
    ]


def test_analyzer_warnings_join_our_own_findings(monkeypatch):
    report = "Subgraph#0 main(T#0) -> [T#9]\n  Op#0 CONV_2D(T#0) -> [T#1]\nGPU COMPATIBILITY WARNING: too wide\n"
    monkeypatch.setattr(gpu_compat, "_analyzer_report", lambda data: report)
    result = check_gpu_compatibility(tiny.converted("plain", "none"))
    assert [(r.op, r.index, r.message) for r in result.rejected] == [("CONV_2D", 0, "too wide")]


def test_analyzer_runs_on_a_real_model():
    # Upstream removed its per-op check (tensorflow#77042): it must still run and parse, whatever it finds.
    assert isinstance(gpu_compat.analyzer_gpu_warnings(tiny.converted("plain", "none")), list)
