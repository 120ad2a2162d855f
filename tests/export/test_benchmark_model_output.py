"""The benchmark_model output parser on realistic outputs (tests/export/fixtures/, see its README.md).

The fixtures follow the tools' format strings (TFLite benchmark_model old and new, LiteRT benchmark_model, the
benchmark APK's logcat); none of them was captured from a device in this repository.
"""
import pathlib

import pytest

from export import benchmark_model_output as bmo

FIXTURES = pathlib.Path(__file__).parent / "fixtures"


def parse(name: str, exit_code=None) -> bmo.BenchmarkModelOutput:
    return bmo.parse_benchmark_model_output((FIXTURES / name).read_text(), exit_code=exit_code)


def test_new_tflite_build_timings_statistics_memory_and_coverage():
    output = parse("tflite_xnnpack_op_profile.txt")
    assert output.tool == "tflite"
    assert (output.init_us, output.first_inference_us, output.warmup_avg_us, output.inference_avg_us) == (
        61532, 6114, 3598.81, 3580.42
    )
    assert output.warmup.count == 139 and output.warmup.first_us == 6114
    inference = output.inference
    assert (inference.count, inference.min_us, inference.max_us, inference.avg_us, inference.std_us) == (
        279, 3497, 4790, 3580.42, 94
    )
    assert (inference.p5_us, inference.median_us, inference.p95_us) == (3509, 3561, 3702)
    assert (output.init_footprint_mb, output.overall_footprint_mb, output.peak_memory_mb) == (14.2031, 21.8867, None)
    assert output.model_size_mb == 10.2054
    coverage = output.coverage_for("xnnpack")
    assert (coverage.replaced_nodes, coverage.total_nodes, coverage.partitions, coverage.subgraph) == (126, 126, 1, 0)
    assert coverage.complete
    assert output.application_for("XNNPACK").extent == "complete"


def test_op_profile_tables_and_runtime_decomposition():
    profile = parse("tflite_xnnpack_op_profile.txt").op_profile
    assert len(profile.run_order) == 107  # the regular-run table, not the initialization one
    first = profile.run_order[0]
    assert (first.node_type, first.name, first.avg_ms) == (
        "Convolution (NHWC, F32) IGEMM", "Delegate/Convolution (NHWC, F32) IGEMM:0", 0.211
    )
    by_type = {row.node_type: row for row in profile.by_node_type}
    assert by_type["Convolution (NHWC, F32) GEMM"].count == 42
    assert by_type["Convolution (NHWC, F32) DWConv"].avg_ms == pytest.approx(0.539)
    assert profile.total_avg_us == pytest.approx(3735.82)

    shares = bmo.runtime_decomposition(profile)
    assert set(shares) == set(bmo.RUNTIME_CATEGORIES)
    assert sum(shares.values()) == pytest.approx(100.0)
    total_ms = sum(row.avg_ms for row in profile.by_node_type)
    assert shares["depthwise_convolution"] == pytest.approx(100 * 0.539 / total_ms)
    assert shares["convolution"] == pytest.approx(100 * (2.173 + 0.211) / total_ms)
    assert shares["elementwise"] == pytest.approx(100 * (0.489 + 0.212) / total_ms)  # HardSwish + Binary Elementwise
    assert shares["other"] == pytest.approx(100 * 0.108 / total_ms)  # Mean (the SE squeeze)
    assert bmo.opaque_delegate_nodes(profile) == []


def test_old_build_start_column_partitions_and_opaque_delegate_nodes():
    output = parse("tflite_old_build_int8_partitions.txt")
    assert output.inference.median_us is None  # no StatWithPercentiles in this build
    assert output.inference.count == 189 and output.inference_avg_us == 5276.48
    coverage = output.coverage_for("xnnpack")
    assert (coverage.replaced_nodes, coverage.total_nodes, coverage.partitions, coverage.subgraph) == (78, 97, 20, None)
    assert coverage.complete is False
    profile = output.op_profile
    assert [row.node_type for row in profile.run_order[:2]] == ["TfLiteXNNPackDelegate", "HARD_SWISH"]
    assert profile.run_order[1].avg_ms == 0.290
    assert {row.node_type: row.count for row in profile.by_node_type} == {"TfLiteXNNPackDelegate": 20, "HARD_SWISH": 19}
    shares = bmo.runtime_decomposition(profile)
    assert shares["elementwise"] > 30  # the int8 HARD_SWISH ops on built-in kernels
    assert bmo.opaque_delegate_nodes(profile) == ["TfLiteXNNPackDelegate"]


def test_legacy_build_without_node_total_and_single_warmup_run():
    output = parse("tflite_legacy_build.txt")
    assert output.warmup.count == 1 and output.warmup.avg_us == 612034  # "count=1 curr=612034"
    assert output.inference.avg_us == 31027.6
    coverage = output.coverage_for("xnnpack")
    assert (coverage.replaced_nodes, coverage.total_nodes, coverage.complete) == (31, None, None)
    # Builds before TF 2.4 printed max-RSS growth under "Peak memory footprint (MB)".
    assert output.peak_memory_mb == 40.0898


def test_peak_memory_run():
    output = parse("tflite_peak_memory.txt")
    assert output.peak_memory_mb == 26.7344
    assert output.inference.count == 10


def test_litert_benchmark_results_block():
    output = parse("litert_benchmark_results.txt")
    assert output.tool == "litert"
    assert output.init_us == pytest.approx(88050)
    assert output.first_inference_us == pytest.approx(9910)
    assert output.inference_avg_us == pytest.approx(5450)
    assert output.inference.median_us == 5431  # from the statistics line the base tool still prints
    assert (output.init_footprint_mb, output.overall_footprint_mb, output.peak_memory_mb) == (17.36, 24.09, None)
    assert output.coverage_for("xnnpack").subgraph == 0  # "... for subgraph 0 (main)."


def test_apk_logcat_prefixes_are_stripped():
    output = parse("apk_logcat.txt")
    assert output.inference_avg_us == 2871.62 and output.init_us == 79611
    assert output.inference.median_us == 2851
    assert output.overall_footprint_mb == 10.3516
    assert output.coverage_for("XNNPack").complete


@pytest.mark.parametrize(
    "line, message",
    [
        ("11-23 10:15:42.123 23817 23850 I tflite  : Loaded model /x.tflite", "Loaded model /x.tflite"),
        ("I/tflite  (23817): Loaded model /x.tflite", "Loaded model /x.tflite"),
        ("INFO: [benchmark_litert_model.h:84] Model initialization: 88.05 ms", "Model initialization: 88.05 ms"),
        ("ERROR: Failed to apply GPU delegate.", "Failed to apply GPU delegate."),
        ("\t   TfLiteXNNPackDelegate\t 0.221", "\t   TfLiteXNNPackDelegate\t 0.221"),
    ],
)
def test_strip_prefixes(line, message):
    assert bmo.strip_prefixes(line) == message


def test_partial_gpu_delegation_passes_unless_full_delegation_is_required():
    output = parse("tflite_gpu_partial.txt")
    coverage = bmo.check_delegate_coverage(output, "gpu")
    assert (coverage.replaced_nodes, coverage.total_nodes, coverage.partitions) == (148, 183, 5)
    with pytest.raises(bmo.DelegateCoverageError, match=r"took 148 of 183 nodes in 5 partition"):
        bmo.check_delegate_coverage(output, "gpu", require_full_delegation=True)


def test_a_requested_delegate_that_took_nothing_fails_loudly():
    output = parse("tflite_xnnpack_op_profile.txt")
    with pytest.raises(bmo.DelegateCoverageError, match="nnapi delegate was requested"):
        bmo.check_delegate_coverage(output, "nnapi")


def test_an_old_build_is_judged_by_its_applied_line():
    text = (FIXTURES / "tflite_legacy_build.txt").read_text().replace(
        "INFO: Replacing 31 node(s) with delegate (TfLiteXNNPackDelegate) node, yielding 1 partitions.\n", ""
    ).replace("Applied XNNPACK delegate.", "Applied GPU delegate, and the model graph will be completely executed w/ the delegate.")
    output = bmo.parse_benchmark_model_output(text)
    assert bmo.check_delegate_coverage(output, "gpu", require_full_delegation=True).extent == "complete"


def test_delegate_failed_to_apply():
    with pytest.raises(bmo.DelegateFailedError, match="Failed to apply GPU delegate") as error:
        parse("tflite_gpu_failed.txt", exit_code=1)
    assert "unsupported input tensor type int8" in error.value.excerpt


def test_model_file_not_found():
    with pytest.raises(bmo.ModelFileNotFoundError, match="could not open the model file") as error:
        parse("tflite_model_not_found.txt", exit_code=1)
    assert "Could not open '/data/local/tmp/bench_3f2a9c1e7b44/mobilenet_v2_float32.tflite'" in error.value.excerpt


def test_binary_crash_is_reported_with_the_signal():
    with pytest.raises(bmo.BinaryCrashedError, match=r"exit status 139 \(SIGSEGV\)"):
        parse("tflite_segfault.txt", exit_code=139)
    with pytest.raises(bmo.BinaryCrashedError, match="Segmentation fault"):  # adb without exit-status support
        parse("tflite_segfault.txt")


def test_truncated_output():
    with pytest.raises(bmo.TruncatedOutputError, match="ends before its timing results"):
        parse("tflite_truncated.txt")


def test_empty_output_is_a_one_line_device_error():
    from export.adb import AdbError

    for text, status in (("", "(exit status 0)"), ("\n  \n", "(exit status 0)")):
        with pytest.raises(bmo.EmptyOutputError, match="printed nothing") as error:
            bmo.parse_benchmark_model_output(text, exit_code=0)
        assert status in str(error.value) and "\n" not in str(error.value)
        assert isinstance(error.value, bmo.TruncatedOutputError)
        assert isinstance(error.value, AdbError)  # what pipeline.run and pipeline.bench catch
    with pytest.raises(bmo.BinaryCrashedError):  # nothing printed, but the exit status says it crashed
        bmo.parse_benchmark_model_output("", exit_code=139)


@pytest.mark.parametrize(
    "node_type, category",
    [
        ("CONV_2D", "convolution"),
        ("DEPTHWISE_CONV_2D", "depthwise_convolution"),
        ("Convolution (NHWC, QC8) DWConv", "depthwise_convolution"),
        ("Convolution (NHWC, QC8) IGEMM", "convolution"),
        ("Fully Connected (NC, QS8, QC8W) GEMM", "convolution"),
        ("TRANSPOSE", "data_movement"),
        ("Transpose (ND, X32)", "data_movement"),
        ("CONCATENATION", "data_movement"),
        ("SPLIT", "data_movement"),
        ("Copy (NC, X32)", "data_movement"),
        ("HARD_SWISH", "elementwise"),
        ("Binary Elementwise (ND)", "elementwise"),
        ("ADD", "elementwise"),
        ("AVERAGE_POOL_2D", "other"),
        ("Mean (ND) Mean", "other"),
        ("TfLiteXNNPackDelegate", "other"),
    ],
)
def test_op_category(node_type, category):
    assert bmo.op_category(node_type) == category
