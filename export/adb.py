"""Benchmark a .tflite model on an Android device over adb, with TFLite's `benchmark_model` binary or its APK.

Everything goes through `subprocess` with argument lists, never a host shell. `adb shell` is different: adb joins
its arguments with spaces and hands the string to the device's shell, so every argument that travels that way is
quoted with `shlex.quote` (`Adb.shell` takes an argv list and does it): a model path with spaces, quotes or
`; rm -rf /` reaches `benchmark_model` as one argument and runs nothing. `adb push`/`install` take host paths as
plain arguments (adb's sync protocol, no shell).

The flow (`benchmark_on_device`): pick the device (`adb devices -l`; the serial given, else `$ANDROID_SERIAL` as adb
itself reads it; typed errors for no adb, no device, several devices without a serial, unauthorized, offline),
read its facts (getprop, CPU max frequencies), create a fresh directory under /data/local/tmp, push the model
(and the binary), `chmod`, run `benchmark_model` with the same settings as the host runner (`--graph
--num_threads --use_xnnpack --num_runs --warmup_runs --min_secs`, optional `--use_gpu`/`--use_nnapi`, an optional
`taskset` mask for the big cores), parse its output
(`export.benchmark_model_output`), then run it again with `--enable_op_profiling` and once more with
`--report_peak_memory_footprint` (the profiler and the memory-polling thread would skew the timings of the first
run), and remove the directory in a `finally`, also when something failed.

The APK runner (`runner="apk"`) installs the benchmark APK and starts its activity, because Android schedules a
foreground app differently from an `adb shell` binary (tools/benchmark/android/README.md); results come from
logcat (tag `tflite`). The APK splits its `args` extra on whitespace (benchmark_model_jni.cc), so on the device
the model gets a whitespace-free name. Its op profile is not collected: logcat truncates a log entry at about
4 KB, and the profile tables are one entry.

The binary comes from `--benchmark_binary` or `$BENCHMARK_MODEL_BINARY` (the APK from `--benchmark_apk` or
`$BENCHMARK_MODEL_APK`); nothing is downloaded. Where to get them: BUILD.md, "Getting benchmark_model onto a device".
"""
from __future__ import annotations

import dataclasses
import os
import re
import shlex
import shutil
import subprocess
import time
import uuid
from typing import Sequence

from export.benchmark import BenchmarkResult, BenchmarkSettings
from export.benchmark_model_output import (
    BenchmarkModelOutput,
    check_delegate_coverage,
    opaque_delegate_nodes,
    parse_benchmark_model_output,
    runtime_decomposition,
)
from export.device_errors import AdbError

PathLike = str | os.PathLike

BINARY_ENV = "BENCHMARK_MODEL_BINARY"
APK_ENV = "BENCHMARK_MODEL_APK"
SERIAL_ENV = "ANDROID_SERIAL"
BUILD_MD_SECTION = 'BUILD.md, section "Getting benchmark_model onto a device"'
DEVICE_ROOT = "/data/local/tmp"
APK_PACKAGE = "org.tensorflow.lite.benchmark"
APK_ACTIVITY = f"{APK_PACKAGE}/.BenchmarkModelActivity"
BINARY_RUNNER = "android-benchmark_model"
APK_RUNNER = "android-benchmark-apk"
PEAK_MEMORY_METHOD = (
    "benchmark_model --report_peak_memory_footprint in a separate run: the tool process's peak memory footprint, "
    "polled every 50 ms (absolute, includes the tool itself)"
)
_CPU_FREQ_SCRIPT = (
    "for f in /sys/devices/system/cpu/cpu[0-9]*/cpufreq/cpuinfo_max_freq; do "
    'echo "${f#/sys/devices/system/cpu/}" "$(cat "$f")"; done'
)


# ------------------------------------------------------------------------------------------------ errors


class AdbNotInstalledError(AdbError):
    """The `adb` executable is not on PATH."""


class NoDeviceError(AdbError):
    """`adb devices` lists no device."""


class MultipleDevicesError(AdbError):
    """Several devices are attached and no serial says which one to use."""


class DeviceNotFoundError(AdbError):
    """The requested serial is not attached."""


class DeviceUnauthorizedError(AdbError):
    """The device has not accepted this computer's RSA key."""


class DeviceOfflineError(AdbError):
    """The device is attached but offline."""


class AdbCommandError(AdbError):
    """An adb command failed or timed out."""


class BenchmarkToolNotFoundError(AdbError):
    """Neither the flag nor the environment variable names a benchmark_model binary (or APK) that exists."""


# ------------------------------------------------------------------------------------------------ devices


@dataclasses.dataclass(frozen=True)
class AttachedDevice:
    """One line of `adb devices -l`: serial, state (device/unauthorized/offline/...) and its key:value details."""

    serial: str
    state: str
    details: dict[str, str]


@dataclasses.dataclass(frozen=True)
class DeviceFacts:
    """What a benchmark ran on (getprop and /sys/devices/system/cpu)."""

    serial: str
    model: str
    manufacturer: str
    soc: str
    board: str
    abi: str
    android_version: str
    sdk: str
    cpu_count: int
    cpu_max_freq_mhz: tuple[int, ...]  # per core, in core order

    def as_dict(self) -> dict:
        """A JSON-ready dict."""
        return {**dataclasses.asdict(self), "cpu_max_freq_mhz": list(self.cpu_max_freq_mhz)}


def find_adb() -> str:
    """The path of the `adb` executable on PATH."""
    path = shutil.which("adb")
    if path is None:
        raise AdbNotInstalledError(
            "adb is not installed or not on PATH. Install Android SDK Platform-Tools "
            "(https://developer.android.com/tools/releases/platform-tools, or `apt install adb`) and make sure "
            "`adb version` runs."
        )
    return path


def list_devices(adb_path: str | None = None) -> list[AttachedDevice]:
    """Every device `adb devices -l` lists, whatever its state."""
    adb_path = adb_path or find_adb()
    completed = _run([adb_path, "devices", "-l"], timeout=30)
    if completed.returncode != 0:
        raise AdbCommandError(f"`adb devices -l` failed (exit {completed.returncode}): {completed.stdout.strip()}")
    devices = []
    for line in completed.stdout.splitlines():
        line = line.strip()
        if not line or line.startswith(("*", "List of devices")) or line.startswith("adb server"):
            continue
        fields = line.split()
        if len(fields) < 2:
            continue
        details = dict(field.split(":", 1) for field in fields[2:] if ":" in field)
        devices.append(AttachedDevice(serial=fields[0], state=fields[1], details=details))
    return devices


def select_device(serial: str | None = None, adb_path: str | None = None) -> Adb:
    """The device named by `serial`, else by `$ANDROID_SERIAL`, else the only one attached; typed errors otherwise."""
    adb_path = adb_path or find_adb()
    devices = list_devices(adb_path)
    source = "--serial"
    if not serial and os.environ.get(SERIAL_ENV):
        # adb's own convention for choosing a device; an explicit serial wins over it.
        serial, source = os.environ[SERIAL_ENV], f"${SERIAL_ENV}"
    if serial:
        matches = [device for device in devices if device.serial == serial]
        if not matches:
            listed = ", ".join(f"{d.serial} ({d.state})" for d in devices) or "none"
            raise DeviceNotFoundError(f"No device with serial {serial!r} (from {source}) is attached. Attached: {listed}.")
        device = matches[0]
    elif not devices:
        raise NoDeviceError(
            "No Android device is attached (`adb devices` lists none). Connect one over USB with USB debugging "
            "enabled (Settings > Developer options), or `adb connect HOST:PORT` for wireless debugging."
        )
    elif len(devices) > 1:
        listed = ", ".join(f"{d.serial} ({d.state})" for d in devices)
        raise MultipleDevicesError(
            f"Several devices are attached ({listed}); choose one: pass --serial SERIAL or set {SERIAL_ENV}."
        )
    else:
        device = devices[0]
    if device.state == "unauthorized":
        raise DeviceUnauthorizedError(
            f"Device {device.serial} is unauthorized: unlock it and accept the 'Allow USB debugging?' prompt "
            "(revoke and re-plug if no prompt shows), then run again."
        )
    if device.state == "offline":
        raise DeviceOfflineError(
            f"Device {device.serial} is offline: re-plug it or run `adb kill-server && adb start-server`, "
            "and check it stays awake."
        )
    if device.state != "device":
        raise AdbCommandError(f"Device {device.serial} is in state {device.state!r}, not ready for commands.")
    return Adb(device.serial, adb_path)


class Adb:
    """adb commands for one device. `shell` quotes every argument for the device's shell."""

    def __init__(self, serial: str, adb_path: str | None = None):
        self.serial = serial
        self.adb_path = adb_path or find_adb()

    def run(self, arguments: Sequence[str], timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
        """`adb -s SERIAL <arguments>`, stdout and stderr together in `.stdout`."""
        completed = _run([self.adb_path, "-s", self.serial, *arguments], timeout=timeout)
        if check and completed.returncode != 0:
            raise AdbCommandError(
                f"`adb -s {self.serial} {shlex.join(arguments)}` failed (exit {completed.returncode}):\n"
                f"{completed.stdout.strip()[-2000:]}"
            )
        return completed

    def shell(self, argv: Sequence[str], timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
        """Run `argv` on the device; each element reaches the device's shell as exactly one quoted argument."""
        return self.run(["shell", shell_command(argv)], timeout=timeout, check=check)

    def push(self, local_path: PathLike, device_path: str, timeout: float = 300) -> None:
        """Copy a host file to the device."""
        self.run(["push", os.fspath(local_path), device_path], timeout=timeout)

    def facts(self) -> DeviceFacts:
        """Model, SoC, ABI, Android version and per-core max CPU frequency of the device."""
        properties = parse_getprop(self.shell(["getprop"], timeout=30).stdout)
        frequencies = parse_cpu_max_freq(self.shell(["sh", "-c", _CPU_FREQ_SCRIPT], timeout=30, check=False).stdout)
        return DeviceFacts(
            serial=self.serial,
            model=properties.get("ro.product.model", ""),
            manufacturer=properties.get("ro.product.manufacturer", ""),
            soc=properties.get("ro.soc.model") or properties.get("ro.hardware.chipname", ""),
            board=properties.get("ro.board.platform", ""),
            abi=properties.get("ro.product.cpu.abi", ""),
            android_version=properties.get("ro.build.version.release", ""),
            sdk=properties.get("ro.build.version.sdk", ""),
            cpu_count=len(frequencies),
            cpu_max_freq_mhz=tuple(frequencies),
        )


def shell_command(argv: Sequence[str]) -> str:
    """One string for `adb shell` in which every element of `argv` is one shell word."""
    return " ".join(shlex.quote(str(argument)) for argument in argv)


def parse_getprop(text: str) -> dict[str, str]:
    """`[key]: [value]` lines of `getprop` as a dict."""
    return {m.group(1): m.group(2) for m in re.finditer(r"^\[([^\]]+)\]: \[(.*)\]\s*$", text, flags=re.MULTILINE)}


def parse_cpu_max_freq(text: str) -> list[int]:
    """`cpuN/cpufreq/cpuinfo_max_freq KHZ` lines -> max frequency in MHz per core, ordered by core number."""
    cores = {}
    for match in re.finditer(r"^cpu(\d+)/cpufreq/cpuinfo_max_freq (\d+)\s*$", text, flags=re.MULTILINE):
        cores[int(match.group(1))] = int(match.group(2)) // 1000
    return [cores[core] for core in sorted(cores)]


# ------------------------------------------------------------------------------------------------ tools


def resolve_benchmark_binary(path: PathLike | None = None) -> str:
    """The host path of the benchmark_model binary to push: `path`, else `$BENCHMARK_MODEL_BINARY`."""
    return _resolve_tool(path, BINARY_ENV, "--benchmark_binary", "benchmark_model binary (android_aarch64)")


def resolve_benchmark_apk(path: PathLike | None = None) -> str:
    """The host path of the benchmark APK: `path`, else `$BENCHMARK_MODEL_APK`."""
    return _resolve_tool(path, APK_ENV, "--benchmark_apk", "benchmark_model APK")


def _resolve_tool(path: PathLike | None, env_name: str, flag: str, what: str) -> str:
    chosen = os.fspath(path) if path else os.environ.get(env_name, "")
    if not chosen:
        raise BenchmarkToolNotFoundError(
            f"No {what} given: pass {flag}=PATH or set the environment variable {env_name}. This tool downloads "
            f"nothing; {BUILD_MD_SECTION} says where to get a prebuilt one (TensorFlow's nightly artifacts) or "
            "how to build it."
        )
    if not os.path.isfile(chosen):
        source = flag if path else f"${env_name}"
        raise BenchmarkToolNotFoundError(f"The {what} {chosen!r} (from {source}) does not exist. See {BUILD_MD_SECTION}.")
    return chosen


# ------------------------------------------------------------------------------------------------ benchmark


def benchmark_model_arguments(
    device_model: str,
    settings: BenchmarkSettings,
    enable_op_profiling: bool = False,
    report_peak_memory: bool = False,
) -> list[str]:
    """benchmark_model's flags for `settings` (the same meaning as the host runner's)."""
    arguments = [
        f"--graph={device_model}",
        f"--num_threads={settings.num_threads}",
        f"--use_xnnpack={str(settings.use_xnnpack).lower()}",
        f"--num_runs={settings.num_runs}",
        f"--warmup_runs={settings.warmup_runs}",
        f"--min_secs={settings.min_secs:g}",
    ]
    if settings.delegate == "gpu":
        arguments.append("--use_gpu=true")
    elif settings.delegate == "nnapi":
        arguments.append("--use_nnapi=true")
    if enable_op_profiling:
        arguments.append("--enable_op_profiling=true")
    if report_peak_memory:
        arguments.append("--report_peak_memory_footprint=true")
    return arguments


def benchmark_on_device(
    model_path: PathLike,
    adb: Adb,
    settings: BenchmarkSettings = BenchmarkSettings(),
    binary: PathLike | None = None,
    runner: str = "binary",
    apk: PathLike | None = None,
    enable_op_profiling: bool = True,
    measure_peak_memory: bool = True,
    require_full_delegation: bool = False,
    device_root: str = DEVICE_ROOT,
    timeout_s: float = 600,
) -> BenchmarkResult:
    """Run benchmark_model (binary or APK) on the device and parse it into a `BenchmarkResult`."""
    if runner not in ("binary", "apk"):
        raise ValueError(f"runner must be 'binary' or 'apk', got {runner!r}.")
    if settings.cpu_mask is not None and not re.fullmatch(r"(0x)?[0-9a-fA-F]+", settings.cpu_mask):
        raise ValueError(f"cpu_mask must be a hex CPU mask such as 'f0', got {settings.cpu_mask!r}.")
    tool_path = resolve_benchmark_binary(binary) if runner == "binary" else resolve_benchmark_apk(apk)
    facts = adb.facts()
    device_dir = f"{device_root.rstrip('/')}/bench_{uuid.uuid4().hex[:12]}"
    if runner == "apk" and re.search(r"\s", device_dir):
        raise ValueError(f"The benchmark APK splits its arguments on whitespace; device_root {device_root!r} has some.")
    model_name = os.path.basename(os.fspath(model_path))
    if runner == "apk":
        model_name = re.sub(r"[^A-Za-z0-9._-]", "_", model_name)
    device_model = f"{device_dir}/{model_name}"
    try:
        adb.shell(["mkdir", "-p", device_dir])
        adb.push(model_path, device_model)
        if runner == "binary":
            device_binary = f"{device_dir}/benchmark_model"
            adb.push(tool_path, device_binary)
            adb.shell(["chmod", "755", device_binary])
            run = lambda arguments: _run_binary(adb, device_binary, arguments, settings.cpu_mask, timeout_s)  # noqa: E731
        else:
            adb.shell(["chmod", "755", device_dir])
            adb.shell(["chmod", "644", device_model])
            adb.run(["install", "-r", "-d", "-g", tool_path], timeout=300)
            run = lambda arguments: _run_apk(adb, arguments, timeout_s)  # noqa: E731
        output = run(benchmark_model_arguments(device_model, settings))
        if settings.delegate != "cpu" or require_full_delegation:
            requested = settings.delegate if settings.delegate != "cpu" else "xnnpack"
            check_delegate_coverage(output, requested, require_full_delegation)
        # Profiler and memory poller each get a run of their own, so neither skews the timings above.
        profile = None
        if enable_op_profiling and runner == "binary":
            profiling_settings = dataclasses.replace(settings, min_secs=0.0)
            profile = run(benchmark_model_arguments(device_model, profiling_settings, enable_op_profiling=True))
        peak = None
        if measure_peak_memory:
            peak_settings = dataclasses.replace(settings, num_runs=10, min_secs=0.0)
            peak = run(benchmark_model_arguments(device_model, peak_settings, report_peak_memory=True)).peak_memory_mb
    finally:
        _remove_device_dir(adb, device_dir, device_root)
    return _result_from_output(
        output, os.fspath(model_path), facts, settings, BINARY_RUNNER if runner == "binary" else APK_RUNNER, peak,
        profile,
    )


def benchmark_device(
    model_path: PathLike,
    settings: BenchmarkSettings = BenchmarkSettings(),
    serial: str | None = None,
    binary: PathLike | None = None,
    runner: str = "binary",
    apk: PathLike | None = None,
    **options,
) -> BenchmarkResult:
    """Pick the device (`serial`, or the only one attached) and run `benchmark_on_device` there."""
    return benchmark_on_device(model_path, select_device(serial), settings, binary=binary, runner=runner, apk=apk,
                               **options)


def _run_binary(
    adb: Adb, device_binary: str, arguments: list[str], cpu_mask: str | None, timeout_s: float
) -> BenchmarkModelOutput:
    command = (["taskset", cpu_mask.removeprefix("0x")] if cpu_mask else []) + [device_binary, *arguments]
    completed = adb.shell(command, timeout=timeout_s, check=False)
    return parse_benchmark_model_output(completed.stdout, exit_code=completed.returncode)


def _run_apk(adb: Adb, arguments: list[str], timeout_s: float, poll_s: float = 1.0) -> BenchmarkModelOutput:
    adb.shell(["logcat", "-c"])
    adb.shell(["am", "start", "-S", "-W", "-n", APK_ACTIVITY, "--es", "args", " ".join(arguments)])
    deadline = time.monotonic() + timeout_s
    text = ""
    polls_since_result = 0
    try:
        while time.monotonic() < deadline:
            text = adb.shell(["logcat", "-d", "-v", "threadtime", "-s", "tflite", "tflite_BenchmarkModelActivity"]).stdout
            if re.search(r"Benchmarking failed|Failed to (apply|load|mmap)|Disallowed CPU fallback", text):
                break
            if re.search(r"Inference timings in us|BENCHMARK RESULTS", text):
                # The memory lines follow the timings line; give them one more poll to reach logcat.
                if "--report_peak_memory_footprint=true" not in arguments or "peak memory" in text.lower():
                    break
                polls_since_result += 1
                if polls_since_result > 1:
                    break
            elif not adb.shell(["pidof", APK_PACKAGE], check=False).stdout.strip() and "Running TensorFlow" in text:
                break  # the app exited without printing a result: let the parser say why
            time.sleep(poll_s)
        else:
            raise AdbCommandError(f"The benchmark APK printed no result to logcat within {timeout_s:.0f} s.")
    finally:
        adb.shell(["am", "force-stop", APK_PACKAGE], check=False)
    return parse_benchmark_model_output(text)


def _remove_device_dir(adb: Adb, device_dir: str, device_root: str) -> None:
    # Guard the one destructive command: only ever our own fresh directory.
    if not device_dir.startswith(f"{device_root.rstrip('/')}/bench_") or ".." in device_dir:
        raise AdbError(f"Refusing to remove {device_dir!r}: not a benchmark directory.")
    try:
        adb.shell(["rm", "-rf", device_dir], timeout=60, check=False)
    except AdbError:
        pass  # never mask the error that brought us here; a leftover dir in /data/local/tmp is harmless


def _result_from_output(
    output: BenchmarkModelOutput,
    model_path: str,
    facts: DeviceFacts,
    settings: BenchmarkSettings,
    runner: str,
    peak_memory_mb: float | None,
    profile_output: BenchmarkModelOutput | None,
) -> BenchmarkResult:
    statistics = output.inference
    ms = lambda us: None if us is None else us / 1000.0  # noqa: E731
    notes = ["benchmark_model prints no per-run samples: p90/p99 are not available"]
    if statistics is None or statistics.median_us is None:
        notes.append("this benchmark_model build prints no median/p95 (older than StatWithPercentiles)")
    decomposition = op_rows = None
    profile = profile_output.op_profile if profile_output is not None else None
    if profile is not None:
        decomposition = runtime_decomposition(profile)
        op_rows = [dataclasses.asdict(row) for row in profile.by_node_type]
        opaque = opaque_delegate_nodes(profile)
        note = "benchmark_model --enable_op_profiling in a separate run, primary graph, regular runs"
        if opaque:
            note += f"; {', '.join(opaque)} not broken down into operators (counted as 'other')"
    elif profile_output is not None:
        note = "op profiling was requested but benchmark_model printed no profile"
    else:
        note = "not collected" + (" (the APK's logcat truncates the profile tables)" if runner == APK_RUNNER else "")
    return BenchmarkResult(
        model=model_path,
        runner=runner,
        device=facts.as_dict(),
        settings=settings,
        num_runs=statistics.count if statistics else 0,
        init_ms=ms(output.init_us),
        first_inference_ms=ms(output.first_inference_us),
        mean_ms=ms(output.inference_avg_us),
        std_ms=ms(statistics.std_us) if statistics else None,
        min_ms=ms(statistics.min_us) if statistics else None,
        max_ms=ms(statistics.max_us) if statistics else None,
        median_ms=ms(statistics.median_us) if statistics else None,
        p95_ms=ms(statistics.p95_us) if statistics else None,
        peak_memory_mb=peak_memory_mb,
        peak_memory_method=PEAK_MEMORY_METHOD if peak_memory_mb is not None else "not measured",
        model_size_mb=output.model_size_mb,
        delegations=[dataclasses.asdict(d) for d in output.delegations],
        op_profile=op_rows,
        runtime_decomposition=decomposition,
        op_profile_note=note,
        notes=notes,
    )


def _run(command: list[str], timeout: float) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              errors="replace", timeout=timeout)
    except FileNotFoundError as error:
        raise AdbNotInstalledError(f"Could not run {command[0]!r}: {error}.") from error
    except subprocess.TimeoutExpired as error:
        raise AdbCommandError(f"`{shlex.join(command)}` did not finish within {timeout:.0f} s.") from error
