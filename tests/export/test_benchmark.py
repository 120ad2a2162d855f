"""The host benchmark (LiteRT Python interpreter) on a tiny model written straight from the TFLite schema."""
import json

import flatbuffers
import numpy as np
import pytest
from ai_edge_litert import schema_py_generated as schema

from export import benchmark
from export.benchmark import BenchmarkSettings


def tiny_fully_connected_model(units: int = 256, features: int = 256) -> bytes:
    """A one-op float32 FULLY_CONNECTED model (no TensorFlow needed to write it)."""
    weights = np.random.default_rng(0).standard_normal((units, features)).astype(np.float32)
    buffers = [schema.BufferT() for _ in range(5)]  # 0 empty, 1 weights, 2 bias, 3 output, 4 input
    buffers[1].data = np.frombuffer(weights.tobytes(), dtype=np.uint8)
    buffers[2].data = np.zeros(units * 4, dtype=np.uint8)

    def tensor(name, shape, buffer):
        result = schema.TensorT()
        result.name, result.shape, result.type, result.buffer = name, np.array(shape, np.int32), schema.TensorType.FLOAT32, buffer
        return result

    subgraph = schema.SubGraphT()
    subgraph.tensors = [tensor("input", [1, features], 4), tensor("weights", [units, features], 1),
                        tensor("bias", [units], 2), tensor("output", [1, units], 3)]
    subgraph.inputs, subgraph.outputs = np.array([0], np.int32), np.array([3], np.int32)
    operator = schema.OperatorT()
    operator.opcodeIndex, operator.inputs, operator.outputs = 0, np.array([0, 1, 2], np.int32), np.array([3], np.int32)
    operator.builtinOptionsType = schema.BuiltinOptions.FullyConnectedOptions
    operator.builtinOptions = schema.FullyConnectedOptionsT()
    subgraph.operators = [operator]
    code = schema.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.FULLY_CONNECTED
    code.version = 1
    model = schema.ModelT()
    model.version, model.operatorCodes, model.subgraphs, model.buffers = 3, [code], [subgraph], buffers
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "tiny_fc.tflite"
    path.write_bytes(tiny_fully_connected_model())
    return path


def test_host_benchmark_numbers_are_positive_and_ordered(tiny_model):
    settings = BenchmarkSettings(num_threads=1, num_runs=30, warmup_runs=3)
    result = benchmark.benchmark_host(tiny_model, settings)
    assert result.runner == "host-litert-python"
    assert result.num_runs == 30
    for value in (result.init_ms, result.first_inference_ms, result.mean_ms, result.min_ms, result.median_ms,
                  result.p90_ms, result.p99_ms, result.max_ms, result.latency_ms):
        assert value > 0
    assert result.std_ms >= 0
    assert 0 < result.cpu_time_ms and len(result.cpu_repeat_medians_ms) == 1
    assert result.min_ms <= result.median_ms <= result.p90_ms <= result.p95_ms <= result.p99_ms <= result.max_ms
    assert result.peak_memory_mb >= 0 and "VmHWM" in result.peak_memory_method
    assert result.op_profile is None and result.runtime_decomposition is None
    assert "no per-operator profiler" in result.op_profile_note  # said plainly, not left empty
    assert result.device["cpu_count"] >= 1
    assert json.loads(json.dumps(result.to_dict()))["settings"]["num_threads"] == 1


def test_peak_memory_counts_the_model_even_from_a_big_parent_process(tiny_model, tmp_path):
    ballast = np.ones(64 * 1024 * 1024, dtype=np.uint8)  # a 64 MB parent: ru_maxrss would carry it into the child
    bigger = tmp_path / "bigger_fc.tflite"
    bigger.write_bytes(tiny_fully_connected_model(units=2048, features=2048))  # 16 MB of weights
    growth = benchmark.measure_peak_memory_mb(bigger)
    assert ballast.sum() > 0
    assert 10 < growth < 200


def test_min_secs_extends_the_run(tiny_model):
    result = benchmark.benchmark_host(tiny_model, BenchmarkSettings(num_runs=1, warmup_runs=0, min_secs=0.05),
                                      measure_peak_memory=False)
    assert result.num_runs > 1 and result.peak_memory_mb is None


def test_interleaved_rounds(tiny_model):
    first, second = benchmark.benchmark_host_interleaved(
        [tiny_model, tiny_model], BenchmarkSettings(num_runs=5, warmup_runs=1), repeats=3, measure_peak_memory=False
    )
    for result in (first, second):
        assert len(result.repeat_medians_ms) == 3 and result.num_runs == 15
        assert min(result.repeat_medians_ms) <= result.latency_ms <= max(result.repeat_medians_ms)


def test_xnnpack_switch_selects_the_op_resolver(tiny_model):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    def op_names(resolver):
        interpreter = Interpreter(model_path=str(tiny_model), experimental_op_resolver_type=resolver)
        interpreter.allocate_tensors()
        return [op["op_name"] for op in interpreter._get_ops_details()]  # noqa: SLF001

    # The two resolvers the host runner uses: XNNPACK applied as the default delegate, or built-in kernels only.
    assert "DELEGATE" in op_names(OpResolverType.AUTO)
    assert "DELEGATE" not in op_names(OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    off = benchmark.benchmark_host(tiny_model, BenchmarkSettings(use_xnnpack=False, num_runs=5), measure_peak_memory=False)
    assert off.settings.use_xnnpack is False and off.mean_ms > 0


def test_latency_statistics_order():
    stats = benchmark.latency_statistics([5.0, 1.0, 3.0, 2.0, 100.0])
    assert stats["min_ms"] == 1.0 and stats["max_ms"] == 100.0 and stats["median_ms"] == 3.0
    assert stats["median_ms"] <= stats["p90_ms"] <= stats["p99_ms"] <= stats["max_ms"]


@pytest.mark.parametrize("dtype, low, high", [(np.float32, -0.5, 0.5), (np.int8, -127, 127), (np.uint8, 0, 254)])
def test_random_input_matches_dtype_shape_and_range(dtype, low, high):
    values = benchmark.random_input((1, 8, 8, 3), dtype, np.random.default_rng(0))
    assert values.dtype == dtype and values.shape == (1, 8, 8, 3)
    assert low <= values.min() and values.max() <= high


def test_invalid_settings_and_device_only_options(tiny_model):
    with pytest.raises(ValueError, match="num_threads"):
        BenchmarkSettings(num_threads=0)
    with pytest.raises(ValueError, match="device-only"):
        benchmark.benchmark_host(tiny_model, BenchmarkSettings(delegate="gpu"))


def test_unloadable_model_is_a_typed_error(tmp_path):
    broken = tmp_path / "broken.tflite"
    broken.write_bytes(b"not a flatbuffer")
    with pytest.raises(benchmark.HostBenchmarkError, match="could not load"):
        benchmark.benchmark_host(broken, measure_peak_memory=False)
