"""`python -m pipeline.bench --models all --image_size 224`: the zoo's speed report, FLOPs next to measured latency.

Builds every network of `models.available()` (untrained weights: speed does not depend on them) and, as the
reference, keras.applications' MobileNet / MobileNetV2 / MobileNetV3Small / MobileNetV3Large (`weights=None`,
`classifier_activation=None`, V3 with `include_preprocessing=False`), converts each to float32 and int8 with
`export.convert.to_tflite` (batch 1; int8 calibrated on a few random images, which is fine for speed and
meaningless for accuracy; `set_batch_norm_statistics` says why BatchNorm statistics are set first), benchmarks
all of them in one process, interleaved round by round (the median of the rounds' medians is the latency;
docs/design.md, "Counting delegation and timing"), and writes:

- `bench.json`: every number, per model and precision (the full `BenchmarkResult`s, XNNPACK partitions);
- `bench.md`: one table: params, MACs, memory access cost (ShuffleNetV2's MAC), file size, float32 and int8
  latency, int8 speedup, GMAC/s, XNNPACK partitions;
- `macs_vs_latency.png`: MACs against measured latency, the ShuffleNetV2 paper's "FLOPs are not speed" picture.

MACs and memory access cost come from `models.complexity.analyze` (analytic, see its docstring). `--device adb` runs the same files on a phone
with `benchmark_model` (export/adb.py) and adds the op-profile runtime decomposition.
"""
from __future__ import annotations

import dataclasses
import datetime
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from absl import app, flags, logging

from export.benchmark import BenchmarkSettings, host_facts
from pipeline.bench_report import PRECISIONS, markdown_report, write_report

_QUANTIZATION = {"float32": "none", "int8": "int8"}
REFERENCE_MODELS = ("keras_mobilenet", "keras_mobilenet_v2", "keras_mobilenet_v3_small", "keras_mobilenet_v3_large")
EXIT_BAD_INPUT = 2

FLAGS = flags.FLAGS


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    """Everything `run_zoo_benchmark` needs; the CLI fills it from flags."""

    models: tuple[str, ...]
    reference: bool = True
    image_size: int = 224
    num_classes: int = 1000
    output_dir: str = "bench_out"
    settings: BenchmarkSettings = BenchmarkSettings()
    repeats: int = 5
    calibration_images: int = 8
    reuse_tflite: bool = False
    measure_memory: bool = True
    device: str = "host"
    device_options: dict[str, Any] = dataclasses.field(default_factory=dict)  # export.adb.benchmark_device kwargs


# ------------------------------------------------------------------------------------------------ networks


def zoo_builders(names: Sequence[str], reference: bool, image_size: int, num_classes: int) -> dict[str, tuple[str, Callable]]:
    """name -> (source, zero-argument builder of an untrained Keras model) for our networks and the reference."""
    import models

    shape = (image_size, image_size, 3)
    builders: dict[str, tuple[str, Callable]] = {
        name: ("ours", lambda name=name: models.build(name, input_shape=shape, num_classes=num_classes))
        for name in names
    }
    if reference:
        from tf_keras import applications

        common = dict(input_shape=shape, weights=None, classes=num_classes, classifier_activation=None)
        builders.update({
            "keras_mobilenet": ("keras.applications", lambda: applications.MobileNet(**common)),
            "keras_mobilenet_v2": ("keras.applications", lambda: applications.MobileNetV2(**common)),
            # include_preprocessing=False: no Rescaling inside, the same input contract as our networks.
            "keras_mobilenet_v3_small": ("keras.applications",
                                         lambda: applications.MobileNetV3Small(include_preprocessing=False, **common)),
            "keras_mobilenet_v3_large": ("keras.applications",
                                         lambda: applications.MobileNetV3Large(include_preprocessing=False, **common)),
        })
    return builders


def resolve_model_names(spec: str) -> tuple[str, ...]:
    """'all' or a comma list -> validated network names."""
    import models

    available = models.available()
    if spec.strip() == "all":
        return tuple(available)
    names = tuple(name.strip() for name in spec.split(",") if name.strip())
    unknown = [name for name in names if name not in available]
    if unknown or not names:
        raise ValueError(f"Unknown model(s) {', '.join(unknown) or '(none given)'}; choose from: all, {', '.join(available)}.")
    return names


def _complexity(model) -> dict[str, Any]:
    from models.complexity import analyze

    totals = analyze(model)
    return {"params": totals.params, "trainable_params": totals.trainable_params, "macs": totals.macs,
            "elementwise_ops": totals.elementwise_ops, "memory_access_cost": totals.memory_access_cost}


def set_batch_norm_statistics(model, images) -> None:
    """Give an untrained network the BatchNorm moving statistics of `images`, as training would.

    At initialization every BatchNorm layer is the identity (mean 0, variance 1), so activations drift to ranges
    no trained network has: in MobileNetV3 the int8 `x + 3` of hard-swish then gets an input/output scale ratio
    outside what XNNPACK's int8 ADD accepts, and 17 (V3-Small) or 20 (V3-Large) ADDs fall back to built-in
    kernels, cutting the graph into 18 / 21 partitions. With the statistics set, the same networks convert to
    one XNNPACK partition, as a trained one does; so the speed measured is the speed of a deployable model.
    Momentum 0 for one training-mode pass makes each layer's moving statistics those of this batch (the
    variance with Bessel's correction, as Keras keeps it).
    """
    import tf_keras as keras

    layers = [layer for layer in model.submodules if isinstance(layer, keras.layers.BatchNormalization)]
    momenta = [layer.momentum for layer in layers]
    for layer in layers:
        layer.momentum = 0.0
    try:
        model(images, training=True)
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum


def zoo_metadata(flatbuffer: bytes, name: str, num_classes: int) -> bytes:
    """A zoo file with its TFLite Model Metadata, as every .tflite the project writes carries (the weights are
    untrained, so the labels are placeholders)."""
    from export.metadata import DEFAULT_AUTHOR, DEFAULT_LICENSE, write_classifier_metadata

    return write_classifier_metadata(
        flatbuffer, name=name, labels=[f"class_{index}" for index in range(num_classes)], mean=127.5, std=127.5,
        description=f"{name} with untrained weights, converted by pipeline.bench to measure speed only",
        version="untrained", author=DEFAULT_AUTHOR, license=DEFAULT_LICENSE)


def build_and_convert(config: BenchConfig, converter: Callable | None = None) -> list[dict[str, Any]]:
    """Build, analyze and convert every network; one row per network with its .tflite paths.

    `converter(model, quantization, representative_images=...) -> bytes` defaults to `export.convert.to_tflite`.
    """
    import tf_keras as keras

    from export.calibration import random_calibration_images
    from export.files import write_bytes_atomic
    from export.gpu_compat import check_gpu_compatibility

    if converter is None:
        from export.convert import to_tflite as converter

    tflite_dir = Path(config.output_dir) / "tflite"
    rows = []
    builders = zoo_builders(config.models, config.reference, config.image_size, config.num_classes)
    for name, (source, build) in builders.items():
        started = time.perf_counter()
        keras.utils.set_random_seed(0)
        model = build()
        complexity = _complexity(model)
        images = random_calibration_images(config.calibration_images, config.image_size)
        set_batch_norm_statistics(model, images)
        # float16 is written for the GPU-delegate check only (the GPU delegate runs float models; timing is on the CPU).
        paths = {precision: tflite_dir / f"{name}_{precision}.tflite" for precision in (*PRECISIONS, "float16")}
        for precision, path in paths.items():
            if config.reuse_tflite and (path.is_file() or precision not in PRECISIONS):  # a timing-only rerun
                continue
            flatbuffer = converter(model, _QUANTIZATION.get(precision, precision),
                                   representative_images=images if precision == "int8" else None)
            write_bytes_atomic(path, zoo_metadata(flatbuffer, name, config.num_classes))
        gpu = {precision: check_gpu_compatibility(paths[precision]).as_dict() for precision in ("float32", "float16")
               if paths[precision].is_file()}
        rows.append({"name": name, "source": source, **complexity, "gpu": gpu,
                     "tflite": {precision: str(path) for precision, path in paths.items() if path.is_file()},
                     "size_mb": {precision: path.stat().st_size / 1e6 for precision, path in paths.items()
                                 if path.is_file()}})
        logging.info("%s: built and converted in %.1f s", name, time.perf_counter() - started)
        del model
        keras.backend.clear_session()
    return rows


# ------------------------------------------------------------------------------------------------ timing


def xnnpack_report(path: str, num_threads: int) -> dict[str, Any]:
    """XNNPACK partitions of a .tflite file (export.graph)."""
    from export.graph import xnnpack_partitions

    return xnnpack_partitions(path, num_threads=num_threads).as_dict()


def run_zoo_benchmark(config: BenchConfig, converter: Callable | None = None) -> dict[str, Any]:
    """Build, convert and time the zoo; returns the JSON-ready report (also written by `write_report`)."""
    started = time.perf_counter()
    rows = build_and_convert(config, converter)
    build_seconds = time.perf_counter() - started
    files = [(row_index, precision, row["tflite"][precision]) for row_index, row in enumerate(rows) for precision in PRECISIONS]
    from export.latency import measure_latency

    results = measure_latency([path for _, _, path in files], config.settings, config.repeats, config.device,
                              config.measure_memory, config.device_options)
    for (row_index, precision, path), result in zip(files, results):
        row = rows[row_index]
        row.setdefault("results", {})[precision] = result.to_dict()
        row.setdefault("latency_ms", {})[precision] = result.latency_ms
        row.setdefault("cpu_time_ms", {})[precision] = result.cpu_time_ms
        row.setdefault("xnnpack", {})[precision] = (
            xnnpack_report(path, config.settings.num_threads) if config.settings.use_xnnpack else None
        )
    for row in rows:
        latency = row["latency_ms"]
        row["int8_speedup"] = latency["float32"] / latency["int8"] if latency["int8"] else None
        row["gmacs_per_s"] = {
            precision: (row["macs"] / (latency[precision] * 1e-3) / 1e9 if row.get("macs") and latency[precision] else None)
            for precision in PRECISIONS
        }
    device = results[0].device if results else host_facts()
    return {
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
        "config": {**{k: v for k, v in dataclasses.asdict(config).items() if k != "settings"},
                   "settings": dataclasses.asdict(config.settings)},
        "device": device,
        "runner": results[0].runner if results else None,
        "build_seconds": round(build_seconds, 1),
        "total_seconds": round(time.perf_counter() - started, 1),
        "models": rows,
    }


# ------------------------------------------------------------------------------------------------ CLI


def config_from_flags() -> BenchConfig:
    """Turn the absl flags into a `BenchConfig` (ValueError on bad combinations)."""
    if FLAGS.device == "host" and (FLAGS.delegate != "cpu" or FLAGS.cpu_mask or FLAGS.require_full_delegation):
        raise ValueError("--delegate, --cpu_mask and --require_full_delegation apply to --device=adb only.")
    settings = BenchmarkSettings(
        num_threads=FLAGS.num_threads, use_xnnpack=FLAGS.use_xnnpack, num_runs=FLAGS.num_runs,
        warmup_runs=FLAGS.warmup_runs, min_secs=FLAGS.min_secs, delegate=FLAGS.delegate, cpu_mask=FLAGS.cpu_mask,
    )
    device_options = {}
    if FLAGS.device == "adb":
        device_options = {"serial": FLAGS.serial, "binary": FLAGS.benchmark_binary, "runner": FLAGS.android_runner,
                          "apk": FLAGS.benchmark_apk, "require_full_delegation": FLAGS.require_full_delegation,
                          "enable_op_profiling": FLAGS.enable_op_profiling}
    if FLAGS.repeats < 1 or FLAGS.calibration_images < 1:
        raise ValueError("--repeats and --calibration_images must be >= 1.")
    from models.registry import MIN_INPUT_SIZE

    if FLAGS.image_size < MIN_INPUT_SIZE:
        raise ValueError(f"--image_size must be at least {MIN_INPUT_SIZE} (every network's stride is 32), "
                         f"got {FLAGS.image_size}.")
    return BenchConfig(
        models=resolve_model_names(FLAGS.models), reference=FLAGS.reference, image_size=FLAGS.image_size,
        num_classes=FLAGS.num_classes, output_dir=FLAGS.output_dir, settings=settings, repeats=FLAGS.repeats,
        calibration_images=FLAGS.calibration_images, reuse_tflite=FLAGS.reuse_tflite,
        measure_memory=FLAGS.measure_memory, device=FLAGS.device, device_options=device_options,
    )


def main(argv: Sequence[str]) -> None:
    from export.tensorflow_logging import import_tensorflow, silence_tensorflow_logging

    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    silence_tensorflow_logging(verbose=logging.get_verbosity() >= logging.DEBUG)
    import_tensorflow()
    try:
        config = config_from_flags()
    except ValueError as error:
        _fail(error)
    from export.adb import AdbError  # benchmark_model's output errors included
    from export.benchmark import HostBenchmarkError
    from export.gpu_compat import GpuCompatibilityError

    try:
        report = run_zoo_benchmark(config)
    except (AdbError, HostBenchmarkError, GpuCompatibilityError) as error:  # typed, and they say how to fix
        _fail(error)
    paths = write_report(report, config.output_dir, FLAGS.json)
    print(markdown_report(report))
    print("Wrote " + ", ".join(str(path) for path in paths.values()))


def _fail(error: Exception) -> None:
    """One line on stderr (a device error's first line: the rest is benchmark_model's log), exit status 2."""
    print(f"pipeline.bench: error: {str(error).strip().splitlines()[0]}", file=sys.stderr)
    sys.exit(EXIT_BAD_INPUT)


def _define_flags() -> None:
    # Defined only when run as a program: absl flags are process-global, and pipeline.run defines some of the
    # same names (--image_size, --device, ...), which would collide wherever both modules are imported.
    flags.DEFINE_string("models", "all", "Comma-separated networks of models.available(), or 'all'.")
    flags.DEFINE_bool("reference", True, "Also measure keras.applications' MobileNet V1/V2/V3 as the reference.")
    flags.DEFINE_integer("image_size", 224, "Square input size in pixels.")
    flags.DEFINE_integer("num_classes", 1000, "Classifier outputs.")
    flags.DEFINE_string("output_dir", "bench_out", "Where bench.json, bench.md, the PNG and the .tflite files go.")
    flags.DEFINE_string("json", None, "Also write the JSON report to this path.")
    flags.DEFINE_integer("num_threads", 1, "CPU threads for inference.")
    flags.DEFINE_integer("num_runs", 50, "Timed runs per model per round.")
    flags.DEFINE_integer("warmup_runs", 5, "Untimed runs per model before the first round.")
    flags.DEFINE_float("min_secs", 0.0, "Minimum seconds per model per round (more runs than --num_runs if needed).")
    flags.DEFINE_integer("repeats", 5, "Interleaved rounds; latency = median of the rounds' medians.")
    flags.DEFINE_bool("use_xnnpack", True, "XNNPACK on (LiteRT's default) or off (built-in kernels only).")
    flags.DEFINE_integer("calibration_images", 8, "Random images to calibrate int8 with (speed only).")
    flags.DEFINE_bool("reuse_tflite", False, "Reuse .tflite files already in --output_dir/tflite (timing-only rerun).")
    flags.DEFINE_bool("measure_memory", True, "Measure peak memory per model (a subprocess each on the host).")
    flags.DEFINE_enum("device", "host", ["host", "adb"], "host: LiteRT here; adb: benchmark_model on a phone.")
    flags.DEFINE_string("serial", None, "adb: device serial when several are attached.")
    flags.DEFINE_string("benchmark_binary", None, "adb: benchmark_model binary (default: $BENCHMARK_MODEL_BINARY).")
    flags.DEFINE_enum("android_runner", "binary", ["binary", "apk"], "adb: push the binary, or use the benchmark APK.")
    flags.DEFINE_string("benchmark_apk", None, "adb with --android_runner=apk: the APK (default: $BENCHMARK_MODEL_APK).")
    flags.DEFINE_enum("delegate", "cpu", ["cpu", "gpu", "nnapi"], "adb: delegate to ask benchmark_model for.")
    flags.DEFINE_string("cpu_mask", None, "adb: hex taskset mask, e.g. f0 for the big cores of a 4+4 SoC.")
    flags.DEFINE_bool("require_full_delegation", False, "adb: fail unless the delegate takes the whole graph.")
    flags.DEFINE_bool("enable_op_profiling", True, "adb: op profile run -> runtime decomposition.")


if __name__ == "__main__":
    _define_flags()
    app.run(main)
