"""One result structure for every way of timing a .tflite model, and the host benchmark (LiteRT Python interpreter).

`BenchmarkResult` holds what the host benchmark measures and what `export.adb` parses out of `benchmark_model` on
an Android device, field for field, so reports compare them without caring where a number came from. A field a
runner cannot measure is None and `notes` says why (e.g. `benchmark_model` prints no p90/p99; the Python API has
no per-operator profiler).

Host timing: `ai_edge_litert.interpreter.Interpreter` with a fixed thread count; XNNPACK on is the interpreter's
default op resolver (it applies XNNPACK as the default delegate), XNNPACK off is
`OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES` (the built-in kernels only), the same switch `benchmark_model
--use_xnnpack=false` makes. Inputs are random, of the model's own dtype and shape, drawn like `benchmark_model`
draws them (float in [-0.5, 0.5], int8 in [-127, 127], uint8 in [0, 254]) and set once. Each `invoke()` is timed
with `time.perf_counter_ns`. Several models are measured interleaved (docs/design.md, "Counting delegation and timing": noise on a shared
machine): every model is loaded and warmed up first, then `repeats` rounds each run every model's `num_runs`
block, in a rotated order, with one untimed run before each block to re-warm caches after the switch; a model's
latency is the median of its per-round medians. At one thread the CPU time of the invoking thread
(`time.thread_time_ns`) is recorded too: on a shared machine it does not include the time the OS gave to other
processes, so it stays comparable from run to run where wall-clock latency does not.

Peak memory is measured in a fresh subprocess, never in the timing process: the kernel's high-water mark of
resident memory (`VmHWM` in /proc/self/status, reset to the current RSS through /proc/self/clear_refs once the
imports are done) after loading the model and running a few inferences, minus the resident memory (`VmRSS`) at
that reset. `ru_maxrss` would be wrong on Linux: it survives `exec`, so a child of a big process (one that has
imported TensorFlow) starts with its parent's peak. `tracemalloc` would be wrong too: the model, the arena and
XNNPACK's packed weights are native allocations Python never sees. Where /proc is missing (macOS) the
subprocess falls back to `ru_maxrss` growth.
"""
from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from typing import Any, Sequence

import numpy as np

PathLike = str | os.PathLike

HOST_RUNNER = "host-litert-python"
HOST_OP_PROFILE_NOTE = (
    "Not available on the host: the LiteRT Python Interpreter (ai-edge-litert) exposes no per-operator profiler "
    "(no hook to attach TFLite's profiler; invoke() times the whole graph only). Per-op times and the runtime "
    "decomposition come from benchmark_model --enable_op_profiling (python -m pipeline.bench --device adb)."
)
HOST_PEAK_MEMORY_METHOD = (
    "peak resident-memory growth in a fresh subprocess: VmHWM after loading the model and running 5 inferences, "
    "minus VmRSS just before loading it (high-water mark reset after the imports)"
)


HOST_CPU_TIME_NOTE = (
    "cpu_time_ms: CPU time of the invoking thread per run (1 thread: XNNPACK computes there); unlike wall-clock "
    "latency it does not grow while the OS runs other processes, so it compares models on a shared machine"
)


class HostBenchmarkError(RuntimeError):
    """The LiteRT interpreter could not load or run the model on this machine."""


@dataclasses.dataclass(frozen=True)
class BenchmarkSettings:
    """How to run a benchmark; the same settings drive the host runner and benchmark_model on a device."""

    num_threads: int = 1
    use_xnnpack: bool = True
    num_runs: int = 50
    warmup_runs: int = 5
    min_secs: float = 0.0  # keep running past num_runs until this much time has passed (benchmark_model's flag)
    delegate: str = "cpu"  # "cpu", "gpu" or "nnapi" (device only)
    cpu_mask: str | None = None  # hex taskset mask for the big cores, e.g. "f0" (device only)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.num_threads < 1:
            raise ValueError(f"num_threads must be >= 1, got {self.num_threads}.")
        if self.num_runs < 1 or self.warmup_runs < 0 or self.min_secs < 0:
            raise ValueError(
                f"Need num_runs >= 1, warmup_runs >= 0, min_secs >= 0; got {self.num_runs}, {self.warmup_runs}, "
                f"{self.min_secs}."
            )
        if self.delegate not in ("cpu", "gpu", "nnapi"):
            raise ValueError(f"delegate must be 'cpu', 'gpu' or 'nnapi', got {self.delegate!r}.")


@dataclasses.dataclass
class BenchmarkResult:
    """Latency and memory of one model on one runner. Times in milliseconds, sizes in MB."""

    model: str
    runner: str  # "host-litert-python", "android-benchmark_model" or "android-benchmark-apk"
    device: dict[str, Any]
    settings: BenchmarkSettings
    num_runs: int
    init_ms: float | None
    first_inference_ms: float | None
    mean_ms: float | None
    std_ms: float | None
    min_ms: float | None
    max_ms: float | None
    median_ms: float | None
    p90_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    repeat_medians_ms: list[float] = dataclasses.field(default_factory=list)
    # Host, 1 thread: CPU time of the invoking thread per run (XNNPACK runs there), per round's median.
    cpu_repeat_medians_ms: list[float] = dataclasses.field(default_factory=list)
    peak_memory_mb: float | None = None
    peak_memory_method: str = ""
    model_size_mb: float | None = None
    delegations: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    op_profile: list[dict[str, Any]] | None = None  # per node type: node_type, count, avg_ms, percent
    runtime_decomposition: dict[str, float] | None = None  # percent per category (ShuffleNetV2 Figure 2)
    op_profile_note: str = ""
    notes: list[str] = dataclasses.field(default_factory=list)

    @property
    def latency_ms(self) -> float | None:
        """The headline number: median over repeats of each repeat's median (or the median of all runs)."""
        if self.repeat_medians_ms:
            return float(statistics.median(self.repeat_medians_ms))
        return self.median_ms if self.median_ms is not None else self.mean_ms

    @property
    def cpu_time_ms(self) -> float | None:
        """Median over rounds of the median per-run CPU time (host, 1 thread only): blind to time lent to others."""
        return float(statistics.median(self.cpu_repeat_medians_ms)) if self.cpu_repeat_medians_ms else None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        data = dataclasses.asdict(self)
        data["latency_ms"] = self.latency_ms
        data["cpu_time_ms"] = self.cpu_time_ms
        return data


def latency_statistics(latencies_ms: Sequence[float]) -> dict[str, float]:
    """mean, std (population, like benchmark_model), min, max, median, p90, p95, p99 of per-run latencies."""
    values = np.asarray(latencies_ms, dtype=np.float64)
    if values.size == 0:
        raise ValueError("No latencies to summarize.")
    p50, p90, p95, p99 = np.percentile(values, [50, 90, 95, 99])
    return {
        "mean_ms": float(values.mean()),
        "std_ms": float(values.std()),
        "min_ms": float(values.min()),
        "max_ms": float(values.max()),
        "median_ms": float(p50),
        "p90_ms": float(p90),
        "p95_ms": float(p95),
        "p99_ms": float(p99),
    }


def random_input(shape: Sequence[int], dtype: np.dtype, rng: np.random.Generator) -> np.ndarray:
    """A random tensor drawn the way benchmark_model draws its inputs (see the module docstring)."""
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.floating):
        return rng.uniform(-0.5, 0.5, size=shape).astype(dtype)
    if dtype == np.int8:
        return rng.integers(-127, 128, size=shape, dtype=np.int8)
    if dtype == np.uint8:
        return rng.integers(0, 255, size=shape, dtype=np.uint8)
    if dtype == np.bool_:
        return rng.integers(0, 2, size=shape).astype(np.bool_)
    if np.issubdtype(dtype, np.integer):
        return rng.integers(0, 100, size=shape).astype(dtype)
    raise HostBenchmarkError(f"Cannot make a random input of dtype {dtype}.")


def host_facts() -> dict[str, Any]:
    """What the host benchmark ran on: CPU, core count, OS, Python and LiteRT versions."""
    return {
        "machine": platform.machine(),
        "processor": _cpu_model_name() or platform.processor(),
        "cpu_count": os.cpu_count(),
        "system": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "ai_edge_litert": _package_version("ai-edge-litert"),
    }


class _HostModel:
    """One loaded interpreter with its inputs set, timed: init (load + allocate) and the first inference."""

    def __init__(self, model_path: PathLike, settings: BenchmarkSettings, rng: np.random.Generator):
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        resolver = OpResolverType.AUTO if settings.use_xnnpack else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        self.path = os.fspath(model_path)
        start = time.perf_counter_ns()
        try:
            self.interpreter = Interpreter(
                model_path=self.path, num_threads=settings.num_threads, experimental_op_resolver_type=resolver
            )
            self.interpreter.allocate_tensors()  # the default XNNPACK delegate is applied here
        except (ValueError, RuntimeError) as error:
            raise HostBenchmarkError(f"LiteRT could not load {self.path}: {error}") from error
        self.init_ms = (time.perf_counter_ns() - start) / 1e6
        for detail in self.interpreter.get_input_details():
            self.interpreter.set_tensor(detail["index"], random_input(detail["shape"], detail["dtype"], rng))
        self.first_inference_ms = self._invoke_ms()

    def _invoke_ms(self) -> float:
        return self._timed_invoke()[0]

    def _timed_invoke(self) -> tuple[float, float]:
        cpu_start, start = time.thread_time_ns(), time.perf_counter_ns()
        self.interpreter.invoke()
        wall, cpu = time.perf_counter_ns() - start, time.thread_time_ns() - cpu_start
        return wall / 1e6, cpu / 1e6

    def run(self, num_runs: int, min_secs: float = 0.0) -> tuple[list[float], list[float]]:
        """Wall-clock and thread-CPU times (ms) of at least `num_runs` runs lasting at least `min_secs` together."""
        walls, cpus = [], []
        deadline = time.perf_counter() + min_secs
        while len(walls) < num_runs or time.perf_counter() < deadline:
            wall, cpu = self._timed_invoke()
            walls.append(wall)
            cpus.append(cpu)
        return walls, cpus


def benchmark_host(
    model_path: PathLike, settings: BenchmarkSettings = BenchmarkSettings(), measure_peak_memory: bool = True
) -> BenchmarkResult:
    """Time one .tflite model on this machine with the LiteRT interpreter."""
    return benchmark_host_interleaved([model_path], settings, repeats=1, measure_peak_memory=measure_peak_memory)[0]


def benchmark_host_interleaved(
    model_paths: Sequence[PathLike],
    settings: BenchmarkSettings = BenchmarkSettings(),
    repeats: int = 5,
    measure_peak_memory: bool = True,
) -> list[BenchmarkResult]:
    """Time several models in one process, interleaved round by round; one result per path, in order."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}.")
    if settings.delegate != "cpu" or settings.cpu_mask:
        raise ValueError("The host runner has no GPU/NNAPI delegate or CPU mask; those are device-only settings.")
    rng = np.random.default_rng(settings.seed)
    models = [_HostModel(path, settings, rng) for path in model_paths]
    for model in models:
        model.run(settings.warmup_runs)
    latencies: list[list[float]] = [[] for _ in models]
    repeat_medians: list[list[float]] = [[] for _ in models]
    cpu_repeat_medians: list[list[float]] = [[] for _ in models]
    for round_index in range(repeats):
        order = list(range(len(models)))
        shift = round_index % max(len(models), 1)
        for index in order[shift:] + order[:shift]:
            models[index].run(1)  # untimed: re-warm caches after the previous model
            block, cpu_block = models[index].run(settings.num_runs, settings.min_secs)
            latencies[index].extend(block)
            repeat_medians[index].append(float(statistics.median(block)))
            cpu_repeat_medians[index].append(float(statistics.median(cpu_block)))

    facts = host_facts()
    results = []
    single_thread = settings.num_threads == 1
    for model, model_latencies, medians, cpu_medians in zip(models, latencies, repeat_medians, cpu_repeat_medians):
        peak = measure_peak_memory_mb(model.path, settings) if measure_peak_memory else None
        results.append(
            BenchmarkResult(
                model=model.path,
                runner=HOST_RUNNER,
                device=facts,
                settings=settings,
                num_runs=len(model_latencies),
                init_ms=model.init_ms,
                first_inference_ms=model.first_inference_ms,
                repeat_medians_ms=medians,
                cpu_repeat_medians_ms=cpu_medians if single_thread else [],
                peak_memory_mb=peak,
                peak_memory_method=HOST_PEAK_MEMORY_METHOD if measure_peak_memory else "not measured",
                model_size_mb=os.path.getsize(model.path) / 1e6,
                op_profile=None,
                runtime_decomposition=None,
                op_profile_note=HOST_OP_PROFILE_NOTE,
                notes=[f"{repeats} interleaved round(s) of >= {settings.num_runs} runs; latency_ms = median of "
                       "the rounds' medians", HOST_CPU_TIME_NOTE if single_thread else
                       "cpu_time_ms: only measured at 1 thread (worker threads' time is not the caller's)"],
                **latency_statistics(model_latencies),
            )
        )
    return results


_PEAK_MEMORY_SCRIPT = r"""
import json, resource, sys
import numpy as np
from ai_edge_litert.interpreter import Interpreter, OpResolverType
sys.path.insert(0, sys.argv[2])
from export.benchmark import random_input

def status_kb(key):
    with open("/proc/self/status") as handle:
        return next(int(line.split()[1]) for line in handle if line.startswith(key + ":"))

args = json.loads(sys.argv[1])
try:
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")  # reset VmHWM to the current RSS: the imports' peak does not count
    before_kb, method = status_kb("VmRSS"), "VmHWM"
except OSError:
    before_kb, method = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "ru_maxrss"
resolver = OpResolverType.AUTO if args["use_xnnpack"] else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
interpreter = Interpreter(model_path=args["path"], num_threads=args["num_threads"],
                          experimental_op_resolver_type=resolver)
interpreter.allocate_tensors()
rng = np.random.default_rng(0)
for detail in interpreter.get_input_details():
    interpreter.set_tensor(detail["index"], random_input(detail["shape"], detail["dtype"], rng))
for _ in range(args["runs"]):
    interpreter.invoke()
if method == "VmHWM":
    after_kb = status_kb("VmHWM")
else:  # ru_maxrss is KiB on Linux, bytes on macOS
    after_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 if sys.platform == "darwin" else 1)
print(json.dumps({"peak_growth_mb": (after_kb - before_kb) / 1024.0, "method": method}))
"""


def measure_peak_memory_mb(model_path: PathLike, settings: BenchmarkSettings = BenchmarkSettings(), runs: int = 5) -> float:
    """Peak resident-memory growth (MB) from loading and running the model, in a fresh subprocess."""
    repository_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    arguments = {
        "path": os.fspath(model_path),
        "num_threads": settings.num_threads,
        "use_xnnpack": settings.use_xnnpack,
        "runs": runs,
    }
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    completed = subprocess.run(
        [sys.executable, "-c", _PEAK_MEMORY_SCRIPT, json.dumps(arguments), repository_root],
        capture_output=True,
        text=True,
        timeout=300,
        env=environment,
    )
    if completed.returncode != 0:
        raise HostBenchmarkError(
            f"The peak-memory subprocess for {model_path} failed (exit {completed.returncode}):\n"
            + completed.stderr[-2000:]
        )
    return float(json.loads(completed.stdout.strip().splitlines()[-1])["peak_growth_mb"])


def _cpu_model_name() -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


def _package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None
