"""`pipeline.bench` at tiny settings: two networks at 32 px, a few runs, real .tflite files timed on this host.

Conversion here goes straight through a concrete function (no SavedModel export), which writes the same ops as
`export.convert.to_tflite` in a few seconds instead of about a minute per model on this machine; `to_tflite`
itself is tested in tests/export/. Everything after conversion (analysis, interleaved timing, XNNPACK partitions,
JSON/Markdown/PNG) is the real code path.
"""
import json

import numpy as np
import pytest

from export.benchmark import BenchmarkSettings
from pipeline import bench


def fast_converter(model, quantization, representative_images=None):
    import tensorflow as tf

    shape = (1, *model.inputs[0].shape[1:])

    @tf.function(input_signature=[tf.TensorSpec(shape, tf.float32, name="input")])
    def serving(images):
        return model(images, training=False)

    converter = tf.lite.TFLiteConverter.from_concrete_functions([serving.get_concrete_function()])
    if quantization == "int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([image[np.newaxis]] for image in representative_images)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = converter.inference_output_type = tf.int8
    elif quantization == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    return converter.convert()


@pytest.fixture(scope="module")
def tiny_report(tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("bench")
    config = bench.BenchConfig(
        models=("mobilenet_v2", "shufflenet_v2"),
        reference=False,
        image_size=32,
        num_classes=10,
        output_dir=str(output_dir),
        settings=BenchmarkSettings(num_threads=1, num_runs=5, warmup_runs=2),
        repeats=2,
        calibration_images=2,
    )
    report = bench.run_zoo_benchmark(config, converter=fast_converter)
    paths = bench.write_report(report, output_dir, json_path=str(output_dir / "copy.json"))
    return report, paths


def test_report_files_exist_with_sane_numbers(tiny_report):
    report, paths = tiny_report
    for path in paths.values():
        assert path.is_file() and path.stat().st_size > 0
    assert paths["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads(paths["json"].read_text())
    assert saved == json.loads(paths["json_copy"].read_text())
    assert [row["name"] for row in saved["models"]] == ["mobilenet_v2", "shufflenet_v2"]
    for row in saved["models"]:
        assert row["params"] > 0 and row["macs"] > 0 and row["memory_access_cost"] > 0
        assert row["size_mb"]["int8"] < row["size_mb"]["float32"]
        for precision in bench.PRECISIONS:
            result = row["results"][precision]
            assert result["latency_ms"] > 0 and len(result["repeat_medians_ms"]) == 2
            assert 0 < row["cpu_time_ms"][precision] == result["cpu_time_ms"]
            assert result["num_runs"] == 10
            assert result["min_ms"] <= result["median_ms"] <= result["p90_ms"] <= result["p99_ms"]
            assert result["peak_memory_mb"] > 0
            assert row["gmacs_per_s"][precision] > 0
            assert row["xnnpack"][precision]["partitions"] >= 1
        for precision in ("float32", "float16"):
            assert row["gpu"][precision]["compatible"] and row["gpu"][precision]["rejected"] == []
        assert "int8" not in row["gpu"]  # the GPU delegate's verdict is for float models
        assert row["int8_speedup"] == pytest.approx(row["latency_ms"]["float32"] / row["latency_ms"]["int8"])
    assert saved["runner"] == "host-litert-python" and saved["config"]["settings"]["num_runs"] == 5


def test_markdown_table_has_one_row_per_model(tiny_report):
    _, paths = tiny_report
    text = paths["markdown"].read_text()
    assert "| mobilenet_v2 | ours |" in text and "| shufflenet_v2 | ours |" in text
    assert "int8 speedup" in text and "XNNPACK partitions" in text
    assert "GPU delegate f32 / f16" in text and text.count("| GPU: all ops / GPU: all ops |") == 2
    assert "no per-operator profiler" in text  # the host's missing decomposition is said, not hidden


def test_reuse_tflite_skips_conversion(tiny_report, monkeypatch):
    report, _ = tiny_report
    config = bench.BenchConfig(
        models=("mobilenet_v2",), reference=False, image_size=32, num_classes=10,
        output_dir=report["config"]["output_dir"], settings=BenchmarkSettings(num_runs=2, warmup_runs=0),
        repeats=1, reuse_tflite=True, measure_memory=False,
    )

    def no_conversion(*args, **kwargs):
        raise AssertionError("converted although the .tflite files exist")

    rerun = bench.run_zoo_benchmark(config, converter=no_conversion)
    assert rerun["models"][0]["latency_ms"]["int8"] > 0


def test_reference_models_are_keras_applications_without_preprocessing():
    builders = bench.zoo_builders([], reference=True, image_size=32, num_classes=10)
    assert set(builders) == set(bench.REFERENCE_MODELS)
    source, build = builders["keras_mobilenet_v3_small"]
    model = build()
    assert source == "keras.applications"
    assert not any(type(layer).__name__ == "Rescaling" for layer in model.layers)
    assert model.output_shape == (None, 10)


def test_model_names_are_validated():
    assert bench.resolve_model_names("all") == tuple(__import__("models").available())
    assert bench.resolve_model_names(" mobilenet_v2 ,shufflenet_v1") == ("mobilenet_v2", "shufflenet_v1")
    with pytest.raises(ValueError, match="Unknown model.*resnet50"):
        bench.resolve_model_names("mobilenet_v2,resnet50")


def test_batch_norm_statistics_are_those_of_the_batch_and_momentum_is_restored():
    import models
    import tf_keras as keras

    images = np.random.default_rng(1).uniform(-1, 1, size=(4, 32, 32, 3)).astype(np.float32)
    model = models.build("mobilenet_v2", input_shape=(32, 32, 3), num_classes=10, width_multiplier=0.35)
    layers = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    bench.set_batch_norm_statistics(model, images)
    for layer in (layers[0], layers[len(layers) // 2], layers[-1]):
        # The statistics of the layer's input on this batch, computed with every BatchNorm before it in
        # training mode (which is what the inference pass now reproduces).
        inputs = keras.Model(model.inputs, layer.input)(images, training=True).numpy()
        count = inputs.size // inputs.shape[-1]
        np.testing.assert_allclose(layer.moving_mean.numpy(), inputs.mean(axis=(0, 1, 2)), rtol=1e-3, atol=1e-4)
        np.testing.assert_allclose(layer.moving_variance.numpy(), inputs.var(axis=(0, 1, 2)) * count / (count - 1),
                                   rtol=1e-3, atol=1e-4)  # Keras keeps the variance with Bessel's correction
        assert layer.momentum > 0.9  # restored

def test_untrained_mobilenet_v3_needs_batch_norm_statistics_to_run_whole_on_xnnpack():
    """Why the bench sets them: with identity BatchNorms the int8 hard-swish ADDs fall off XNNPACK."""
    import models
    from export.graph import xnnpack_partitions

    images = np.random.default_rng(0).uniform(-1, 1, size=(2, 64, 64, 3)).astype(np.float32)
    model = models.build("mobilenet_v3_small", input_shape=(64, 64, 3), num_classes=10)
    untrained = xnnpack_partitions(fast_converter(model, "int8", images))
    assert untrained.partitions > 1 and set(untrained.undelegated_ops) == {"ADD"}
    bench.set_batch_norm_statistics(model, images)
    assert xnnpack_partitions(fast_converter(model, "int8", images)).partitions == 1


def _bench_cli(*args, cwd):
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    environment = {**os.environ, "PYTHONPATH": str(repo)}
    environment.pop("TF_CPP_MIN_LOG_LEVEL", None)  # the CLI must quiet TensorFlow's start-up log itself
    return subprocess.run([sys.executable, "-m", "pipeline.bench", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env=environment)


def _one_error_line(done) -> str:
    """The error line, after checking it is the last and that nothing but bench's own progress log precedes it."""
    import re

    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2 and lines and lines[-1].startswith("pipeline.bench: error: "), done.stderr
    assert all(re.match(r"I\d{4} [\d:.]+ +\d+ bench\.py:\d+\] ", line) for line in lines[:-1]), done.stderr
    return lines[-1]


def test_cli_image_size_below_the_stride_is_one_line(tmp_path):
    line = _one_error_line(_bench_cli("--models", "mobilenet_v1", "--image_size", "7", cwd=tmp_path))
    assert "--image_size must be at least 32" in line


def test_cli_a_broken_reused_tflite_is_one_line(tmp_path):
    tflite = tmp_path / "out" / "tflite"
    tflite.mkdir(parents=True)
    for precision in ("float32", "int8"):
        (tflite / f"mobilenet_v1_{precision}.tflite").write_bytes(b"not a model")
    line = _one_error_line(_bench_cli(
        "--models", "mobilenet_v1", "--noreference", "--image_size", "32", "--num_classes", "2", "--reuse_tflite",
        "--output_dir", str(tmp_path / "out"), "--repeats", "1", "--num_runs", "1", "--warmup_runs", "0",
        "--nomeasure_memory", cwd=tmp_path))
    # The first reader of the file (the GPU-delegate check) refuses it.
    assert "mobilenet_v1_float32.tflite" in line and "not a TFLite flatbuffer" in line


def test_cli_device_errors_are_one_line(monkeypatch, capsys):
    from export import tensorflow_logging
    from export.benchmark_model_output import EmptyOutputError

    monkeypatch.setattr(tensorflow_logging, "silence_tensorflow_logging", lambda verbose=False: None)  # no env change
    monkeypatch.setattr(bench, "config_from_flags", lambda: None)

    def empty_result(config):
        raise EmptyOutputError("benchmark_model printed nothing (exit status 0): the binary did not run.",
                               "more lines\nof its log")

    monkeypatch.setattr(bench, "run_zoo_benchmark", empty_result)
    with pytest.raises(SystemExit) as exited:
        bench.main(["pipeline.bench"])
    assert exited.value.code == 2
    assert capsys.readouterr().err == ("pipeline.bench: error: benchmark_model printed nothing (exit status 0): the "
                                       "binary did not run.\n")
