"""The adb flow end to end against a FAKE `adb`: nothing in this file ran on an Android device.

The fake is a small Python script the tests write to a temporary directory and put first on PATH. It records every
call (its argv, one JSON line each), splits `adb shell` strings into words the way the device's POSIX shell would
(`shlex`, with `;`, `&&`, `|` as separate command separators), keeps the device's directories in a state file, and
answers with the realistic `benchmark_model` outputs in tests/export/fixtures/.
"""
import json
import os
import pathlib
import shlex
import stat
import sys

import pytest

from export import adb as adb_module
from export.benchmark import BenchmarkSettings
from export.benchmark_model_output import BinaryCrashedError, DelegateCoverageError, ModelFileNotFoundError

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
SERIAL = "28031FDH2005ZN"
DEVICES_ONE = f"List of devices attached\n{SERIAL}         device usb:1-1 product:panther model:Pixel_7 device:panther transport_id:3\n\n"

FAKE_ADB = r'''
import json, os, shlex, sys

state_dir = os.environ["FAKE_ADB_DIR"]
scenario = json.load(open(os.path.join(state_dir, "scenario.json")))
state_path = os.path.join(state_dir, "state.json")
state = json.load(open(state_path)) if os.path.exists(state_path) else {"dirs": [], "files": [], "am_args": ""}
argv = sys.argv[1:]
with open(os.path.join(state_dir, "calls.jsonl"), "a") as log:
    log.write(json.dumps(argv) + "\n")

def finish(text="", code=0):
    json.dump(state, open(state_path, "w"))
    sys.stdout.write(text)
    sys.exit(code)

def fixture(name):
    return open(os.path.join(scenario["fixtures"], name)).read()

if argv[:2] == ["devices", "-l"]:
    finish(scenario.get("devices", ""))
if argv[0] != "-s" or argv[1] != scenario.get("serial"):
    finish("adb: error: device not found or no -s\n", 1)
command, rest = argv[2], argv[3:]
if command == "push":
    local, remote = rest
    if not os.path.isfile(local):
        finish(f"adb: error: cannot stat '{local}': No such file or directory\n", 1)
    if os.path.dirname(remote) not in state["dirs"]:
        finish(f"adb: error: failed to copy '{local}' to '{remote}': remote secure_mkdirs failed\n", 1)
    state["files"].append(remote)
    finish(f"{local}: 1 file pushed, 0 skipped. 41.3 MB/s ({os.path.getsize(local)} bytes in 0.001s)\n")
if command == "install":
    finish("Performing Streamed Install\nSuccess\n")
if command != "shell" or len(rest) != 1:
    finish(f"unexpected adb call {argv}\n", 2)

lexer = shlex.shlex(rest[0], posix=True, punctuation_chars=True)
lexer.whitespace_split = True
words = list(lexer)
if any(word in (";", "&&", "||", "|", "&", "(", ")", ">", "<") for word in words):
    with open(os.path.join(state_dir, "injections.jsonl"), "a") as log:
        log.write(json.dumps(words) + "\n")
with open(os.path.join(state_dir, "shell.jsonl"), "a") as log:
    log.write(json.dumps(words) + "\n")

if words[0] == "taskset":
    words = words[2:]
name = words[0]
if name == "getprop":
    finish(fixture("getprop.txt"))
if name == "sh" and words[1] == "-c" and "cpuinfo_max_freq" in words[2]:
    finish(scenario["cpufreq"])
if name == "mkdir":
    state["dirs"].append(words[-1]); finish()
if name == "chmod":
    target = words[-1]
    finish() if target in state["files"] + state["dirs"] else finish(f"chmod: {target}: No such file or directory\n", 1)
if name == "rm":
    state["dirs"] = [d for d in state["dirs"] if d != words[-1]]
    state["files"] = [f for f in state["files"] if not f.startswith(words[-1] + "/")]
    finish()
if name.endswith("/benchmark_model"):
    if name not in state["files"]:
        finish(f"/system/bin/sh: {name}: inaccessible or not found\n", 127)
    graph = next(w.split("=", 1)[1] for w in words if w.startswith("--graph="))
    if graph not in state["files"]:
        finish(fixture("tflite_model_not_found.txt"), 1)
    if "--report_peak_memory_footprint=true" in words:
        finish(fixture(scenario["peak_fixture"]))
    finish(fixture(scenario["fixture"]), scenario.get("exit_code", 0))
if name == "logcat":
    if "-c" in words:
        state["logcat"] = ""; finish()
    finish(state.get("logcat", ""))
if name == "am" and words[1] == "start":
    state["am_args"] = words[words.index("--es") + 2]
    peak = "--report_peak_memory_footprint=true" in state["am_args"]
    state["logcat"] = fixture(scenario["logcat_peak_fixture"] if peak else scenario["logcat_fixture"])
    finish("Starting: Intent { cmp=org.tensorflow.lite.benchmark/.BenchmarkModelActivity (has extras) }\nStatus: ok\n")
if name == "am":
    finish()
if name == "pidof":
    finish("", 1)
finish(f"/system/bin/sh: {name}: inaccessible or not found\n", 127)
'''

CPUFREQ = "\n".join(
    f"cpu{core}/cpufreq/cpuinfo_max_freq {khz}"
    for core, khz in enumerate([1803000] * 4 + [2348000] * 2 + [2850000] * 2)
) + "\n"


class FakeAdb:
    def __init__(self, directory: pathlib.Path):
        self.directory = directory
        self.scenario = {
            "fixtures": str(FIXTURES),
            "serial": SERIAL,
            "devices": DEVICES_ONE,
            "cpufreq": CPUFREQ,
            "fixture": "tflite_xnnpack_op_profile.txt",
            "peak_fixture": "tflite_peak_memory.txt",
            "logcat_fixture": "apk_logcat.txt",
            "logcat_peak_fixture": "apk_logcat.txt",
        }
        self.configure()

    def configure(self, **changes):
        self.scenario.update(changes)
        (self.directory / "scenario.json").write_text(json.dumps(self.scenario))

    def _lines(self, name):
        path = self.directory / name
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def calls(self):
        return self._lines("calls.jsonl")

    def shell_words(self):
        return self._lines("shell.jsonl")

    def injections(self):
        return self._lines("injections.jsonl")

    def device_dirs(self):
        return json.loads((self.directory / "state.json").read_text())["dirs"]


@pytest.fixture
def fake_adb(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "adb"
    script.write_text(f"#!{sys.executable} -SE\n{FAKE_ADB}")  # -SE: no site-packages, fast start
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_ADB_DIR", str(tmp_path))
    monkeypatch.delenv(adb_module.BINARY_ENV, raising=False)
    monkeypatch.delenv(adb_module.APK_ENV, raising=False)
    monkeypatch.delenv(adb_module.SERIAL_ENV, raising=False)
    return FakeAdb(tmp_path)


@pytest.fixture
def tools(tmp_path):
    binary = tmp_path / "benchmark_model"
    binary.write_bytes(b"\x7fELF fake aarch64 binary")
    apk = tmp_path / "android_aarch64_benchmark_model.apk"
    apk.write_bytes(b"PK fake apk")
    model = tmp_path / "mobilenet_v3_small_float32.tflite"
    model.write_bytes(b"TFL3 fake model")
    return binary, apk, model


# ------------------------------------------------------------------------------------------------ devices


def test_adb_not_installed(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(adb_module.AdbNotInstalledError, match="Platform-Tools"):
        adb_module.select_device()


@pytest.mark.parametrize(
    "devices, serial, error, message",
    [
        ("List of devices attached\n\n", None, adb_module.NoDeviceError, "USB debugging"),
        (
            "* daemon not running; starting now at tcp:5037\n* daemon started successfully\nList of devices attached\n\n",
            None,
            adb_module.NoDeviceError,
            "lists none",
        ),
        (
            f"List of devices attached\n{SERIAL} device usb:1-1 model:Pixel_7\nemulator-5554 device product:sdk model:sdk\n",
            None,
            adb_module.MultipleDevicesError,
            "--serial",
        ),
        (DEVICES_ONE, "R58M123ABC", adb_module.DeviceNotFoundError, "R58M123ABC"),
        (f"List of devices attached\n{SERIAL}\tunauthorized usb:1-1 transport_id:2\n", None,
         adb_module.DeviceUnauthorizedError, "Allow USB debugging"),
        (f"List of devices attached\n{SERIAL}\toffline transport_id:4\n", None, adb_module.DeviceOfflineError,
         "offline"),
    ],
)
def test_device_selection_errors(fake_adb, devices, serial, error, message):
    fake_adb.configure(devices=devices)
    with pytest.raises(error, match=message):
        adb_module.select_device(serial)


def test_several_devices_with_a_serial(fake_adb):
    fake_adb.configure(devices=f"List of devices attached\nemulator-5554 device\n{SERIAL} device usb:1-1\n")
    assert adb_module.select_device(SERIAL).serial == SERIAL


TWO_DEVICES = f"List of devices attached\nemulator-5554 device product:sdk model:sdk\n{SERIAL} device usb:1-1\n"


def test_two_devices_without_a_serial_say_how_to_choose(fake_adb):
    fake_adb.configure(devices=TWO_DEVICES)
    with pytest.raises(adb_module.MultipleDevicesError, match="pass --serial SERIAL or set ANDROID_SERIAL"):
        adb_module.select_device()


def test_android_serial_chooses_the_device(fake_adb, monkeypatch):
    fake_adb.configure(devices=TWO_DEVICES)
    monkeypatch.setenv("ANDROID_SERIAL", SERIAL)
    assert adb_module.select_device().serial == SERIAL


def test_an_explicit_serial_wins_over_android_serial(fake_adb, monkeypatch):
    fake_adb.configure(devices=TWO_DEVICES)
    monkeypatch.setenv("ANDROID_SERIAL", "emulator-5554")
    assert adb_module.select_device(SERIAL).serial == SERIAL


def test_android_serial_naming_a_missing_device(fake_adb, monkeypatch):
    monkeypatch.setenv("ANDROID_SERIAL", "R58M123ABC")
    with pytest.raises(adb_module.DeviceNotFoundError, match=r"'R58M123ABC' \(from \$ANDROID_SERIAL\)"):
        adb_module.select_device()


def test_benchmark_device_with_a_serial_among_two_devices(fake_adb, tools):
    binary, _, model = tools
    fake_adb.configure(devices=TWO_DEVICES)
    result = adb_module.benchmark_device(model, BenchmarkSettings(), serial=SERIAL, binary=binary,
                                         enable_op_profiling=False, measure_peak_memory=False)
    assert result.device["serial"] == SERIAL and result.mean_ms is not None
    assert all(call[:2] == ["-s", SERIAL] for call in fake_adb.calls() if call[:2] != ["devices", "-l"])


def test_device_facts(fake_adb):
    facts = adb_module.select_device().facts()
    assert (facts.model, facts.manufacturer, facts.soc, facts.board) == ("Pixel 7", "Google", "GS201", "gs201")
    assert (facts.abi, facts.android_version, facts.sdk) == ("arm64-v8a", "14", "34")
    assert facts.cpu_count == 8
    assert facts.cpu_max_freq_mhz == (1803, 1803, 1803, 1803, 2348, 2348, 2850, 2850)


# ------------------------------------------------------------------------------------------------ tools


def test_no_binary_names_the_flag_the_variable_and_build_md(fake_adb, tools):
    with pytest.raises(adb_module.BenchmarkToolNotFoundError) as error:
        adb_module.benchmark_on_device(tools[2], adb_module.select_device())
    message = str(error.value)
    assert "--benchmark_binary" in message and "BENCHMARK_MODEL_BINARY" in message
    assert "Getting benchmark_model onto a device" in message
    assert not any(call[2:3] == ["push"] for call in fake_adb.calls())  # failed before touching the device


def test_binary_from_the_environment_variable(fake_adb, tools, monkeypatch):
    monkeypatch.setenv(adb_module.BINARY_ENV, str(tools[0]))
    assert adb_module.resolve_benchmark_binary() == str(tools[0])
    monkeypatch.setenv(adb_module.BINARY_ENV, str(tools[0]) + ".missing")
    with pytest.raises(adb_module.BenchmarkToolNotFoundError, match="does not exist"):
        adb_module.resolve_benchmark_binary()


# ------------------------------------------------------------------------------------------------ the flow


def test_binary_flow_end_to_end(fake_adb, tools):
    binary, _, model = tools
    settings = BenchmarkSettings(num_threads=4, num_runs=50, warmup_runs=5, min_secs=1.0)
    result = adb_module.benchmark_on_device(model, adb_module.select_device(), settings, binary=binary)

    words = fake_adb.shell_words()
    device_dir = words[2][-1]  # after getprop and the cpufreq script: mkdir -p DIR
    assert words[2][:2] == ["mkdir", "-p"] and device_dir.startswith("/data/local/tmp/bench_")
    pushes = [call[3:] for call in fake_adb.calls() if call[2:3] == ["push"]]
    assert pushes == [[str(model), f"{device_dir}/{model.name}"], [str(binary), f"{device_dir}/benchmark_model"]]
    assert ["chmod", "755", f"{device_dir}/benchmark_model"] in words
    timing, profiling, peak = [w for w in words if w[0].endswith("/benchmark_model")]
    assert timing[1:] == [
        f"--graph={device_dir}/{model.name}", "--num_threads=4", "--use_xnnpack=true", "--num_runs=50",
        "--warmup_runs=5", "--min_secs=1",
    ]  # no profiler, no memory poller in the timed run
    assert "--enable_op_profiling=true" in profiling
    assert "--report_peak_memory_footprint=true" in peak and "--enable_op_profiling=true" not in peak
    assert words[-1] == ["rm", "-rf", device_dir] and fake_adb.device_dirs() == []
    assert fake_adb.injections() == []

    assert result.runner == "android-benchmark_model"
    assert result.device["model"] == "Pixel 7" and result.device["cpu_max_freq_mhz"][-1] == 2850
    assert (result.init_ms, result.first_inference_ms, result.mean_ms) == (61.532, 6.114, 3.58042)
    assert (result.min_ms, result.median_ms, result.p95_ms, result.max_ms) == (3.497, 3.561, 3.702, 4.79)
    assert result.p90_ms is None and result.p99_ms is None and "p90/p99" in result.notes[0]
    assert result.num_runs == 279 and result.latency_ms == 3.561
    assert result.peak_memory_mb == 26.7344 and "report_peak_memory_footprint" in result.peak_memory_method
    assert result.delegations[0]["partitions"] == 1
    assert sum(result.runtime_decomposition.values()) == pytest.approx(100)
    assert result.runtime_decomposition["depthwise_convolution"] > 10
    assert json.dumps(result.to_dict())  # JSON-ready


def test_taskset_mask_for_the_big_cores(fake_adb, tools):
    binary, _, model = tools
    settings = BenchmarkSettings(num_threads=2, cpu_mask="c0")
    adb_module.benchmark_on_device(model, adb_module.select_device(), settings, binary=binary,
                                   measure_peak_memory=False, enable_op_profiling=False)
    run = next(w for w in fake_adb.shell_words() if w[0] == "taskset")
    assert run[:2] == ["taskset", "c0"] and run[2].endswith("/benchmark_model")
    with pytest.raises(ValueError, match="hex CPU mask"):
        adb_module.benchmark_on_device(model, adb_module.select_device(), BenchmarkSettings(cpu_mask="f0; reboot"),
                                       binary=binary)


HOSTILE_NAME = "it's a \"model\"; rm -rf $HOME `reboot` && $(id) | tee x.tflite"


def test_hostile_model_path_neither_breaks_nor_injects(fake_adb, tools, tmp_path):
    binary = tools[0]
    hostile_dir = tmp_path / "my models; echo pwned"
    hostile_dir.mkdir()
    model = hostile_dir / HOSTILE_NAME
    model.write_bytes(b"TFL3 fake model")
    result = adb_module.benchmark_on_device(model, adb_module.select_device(), binary=binary)

    assert fake_adb.injections() == []  # no shell command was split into several
    device_dir = fake_adb.shell_words()[2][-1]
    push = next(call for call in fake_adb.calls() if call[2:3] == ["push"])
    assert push[3:] == [str(model), f"{device_dir}/{HOSTILE_NAME}"]  # argv, not a shell string
    run = next(w for w in fake_adb.shell_words() if w[0].endswith("/benchmark_model"))
    assert run[1] == f"--graph={device_dir}/{HOSTILE_NAME}"  # one intact argument
    removals = [w for w in fake_adb.shell_words() if w[0] == "rm"]
    assert removals == [["rm", "-rf", device_dir]]
    assert result.mean_ms == 3.58042


def test_shell_command_quotes_every_argument():
    argv = ["/data/local/tmp/bench_1/benchmark_model", f"--graph=/data/local/tmp/bench_1/{HOSTILE_NAME}"]
    assert shlex.split(adb_module.shell_command(argv)) == argv


def test_the_device_directory_is_removed_when_the_binary_crashes(fake_adb, tools):
    binary, _, model = tools
    fake_adb.configure(fixture="tflite_segfault.txt", exit_code=139)
    with pytest.raises(BinaryCrashedError, match="SIGSEGV"):
        adb_module.benchmark_on_device(model, adb_module.select_device(), binary=binary)
    assert fake_adb.shell_words()[-1][:2] == ["rm", "-rf"] and fake_adb.device_dirs() == []


def test_model_missing_on_the_device(fake_adb, tools):
    binary, _, model = tools
    fake_adb.configure(fixture="tflite_model_not_found.txt", exit_code=1)
    with pytest.raises(ModelFileNotFoundError):
        adb_module.benchmark_on_device(model, adb_module.select_device(), binary=binary)
    assert fake_adb.device_dirs() == []


def test_partial_gpu_delegation_fails_loudly_under_require_full_delegation(fake_adb, tools):
    binary, _, model = tools
    fake_adb.configure(fixture="tflite_gpu_partial.txt")
    result = adb_module.benchmark_device(model, BenchmarkSettings(delegate="gpu"), binary=binary,
                                         measure_peak_memory=False, enable_op_profiling=False)
    assert result.delegations[0]["replaced_nodes"] == 148
    assert "--use_gpu=true" in next(w for w in fake_adb.shell_words() if w[0].endswith("/benchmark_model"))
    with pytest.raises(DelegateCoverageError, match=r"took 148 of 183 nodes in 5 partition"):
        adb_module.benchmark_device(model, BenchmarkSettings(delegate="gpu"), serial=SERIAL, binary=binary,
                                    require_full_delegation=True)
    assert fake_adb.device_dirs() == []


def test_apk_runner_reads_the_result_from_logcat(fake_adb, tools, monkeypatch):
    _, apk, _ = tools
    model = tools[2].with_name("mobile net v2 (int8).tflite")
    model.write_bytes(b"TFL3 fake model")
    monkeypatch.setenv(adb_module.APK_ENV, str(apk))
    result = adb_module.benchmark_on_device(model, adb_module.select_device(), BenchmarkSettings(num_threads=4),
                                            runner="apk")

    calls = fake_adb.calls()
    assert ["install", "-r", "-d", "-g", str(apk)] in [call[2:] for call in calls]
    words = fake_adb.shell_words()
    start = next(w for w in words if w[:2] == ["am", "start"])
    assert start[start.index("-n") + 1] == "org.tensorflow.lite.benchmark/.BenchmarkModelActivity"
    args = start[start.index("--es") + 2]
    device_dir = words[2][-1]
    assert args.split()[0] == f"--graph={device_dir}/mobile_net_v2__int8_.tflite"  # the APK splits on whitespace
    assert ["am", "force-stop", "org.tensorflow.lite.benchmark"] in words
    assert words[-1] == ["rm", "-rf", device_dir] and fake_adb.injections() == []
    assert result.runner == "android-benchmark-apk"
    assert result.mean_ms == pytest.approx(2.87162) and result.median_ms == pytest.approx(2.851)
    assert result.op_profile is None and "logcat" in result.op_profile_note
