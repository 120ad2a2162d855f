"""The app's JVM unit tests (android_demo/app/src/test), compiled with kotlinc and run with JUnit 4 — without Gradle
or an Android SDK, which these machines do not have. The pure logic they test has no Android dependency.

Needs `kotlinc` on PATH (or $KOTLINC), `java`, and JUnit 4 + Hamcrest jars (Debian: `apt-get install kotlin junit4`;
or $JUNIT4_JAR and $HAMCREST_JAR). Skips, saying what is missing, where they are absent. Compiling takes tens of
seconds, so the jar is cached by a hash of the sources and the compiler ($XDG_CACHE_HOME or ~/.cache).

HostParityTest also gets real pipeline files: model_meta.json from export.meta, the sample image and expectation
from export.android, and the host interpreter's raw input/output tensors for that image, so the app's
preprocessing (normalize, quantize) and postprocessing (dequantize, softmax, top-1) are checked byte for byte
against the Python side.
"""
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest

APP = Path(__file__).resolve().parents[2] / "android_demo" / "app"
LOGIC_SOURCES = APP / "src/main/java/org/mobilecnn/demo/logic"
TEST_SOURCES = APP / "src/test/java"
LABELS = ["tench", "church", "golf ball", "parachute"]
NORMALIZATION = {"mean": [127.5] * 3, "std": [127.5] * 3, "pixel_range": [0, 255]}
COMPILE_TIMEOUT_S = 600


def _tool(env_name: str, command: str | None, fallbacks: tuple[str, ...] = ()) -> str | None:
    for candidate in (os.environ.get(env_name), command and shutil.which(command), *fallbacks):
        if candidate and Path(candidate).exists():
            return str(candidate)
    return None


def _toolchain() -> dict[str, str]:
    tools = {
        "kotlinc": _tool("KOTLINC", "kotlinc"),
        "java": _tool("JAVA", "java"),
        "junit": _tool("JUNIT4_JAR", None, ("/usr/share/java/junit4.jar",)),
        "hamcrest": _tool("HAMCREST_JAR", None, ("/usr/share/java/hamcrest-core.jar", "/usr/share/java/hamcrest.jar")),
    }
    missing = [name for name, path in tools.items() if path is None]
    if missing:
        pytest.skip(
            f"Kotlin unit tests not run: {', '.join(missing)} not found (Debian: apt-get install kotlin junit4; "
            "or set KOTLINC / JUNIT4_JAR / HAMCREST_JAR)"
        )
    return tools


def _sources() -> list[Path]:
    return sorted(LOGIC_SOURCES.rglob("*.kt")) + sorted(TEST_SOURCES.rglob("*.kt"))


def _test_classes() -> list[str]:
    classes = []
    for path in sorted(TEST_SOURCES.rglob("*Test.kt")):
        text = path.read_text()
        package = re.search(r"^package\s+([\w.]+)", text, re.M).group(1)
        classes += [f"{package}.{name}" for name in re.findall(r"^class\s+(\w+Test)\b", text, re.M)]
    return classes


def _compiled_jar(tools: dict[str, str]) -> Path:
    digest = hashlib.sha256(os.path.realpath(tools["kotlinc"]).encode())
    for path in _sources():
        digest.update(str(path.relative_to(APP)).encode() + b"\0" + path.read_bytes())
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mobilecnn-kotlin-tests"
    jar = cache / f"{digest.hexdigest()[:24]}.jar"
    if jar.is_file():
        return jar
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as work:
        staged = Path(work) / "tests.jar"
        command = [tools["kotlinc"], *map(str, _sources()), "-cp", tools["junit"], "-include-runtime", "-d", str(staged)]
        done = subprocess.run(command, capture_output=True, text=True, timeout=COMPILE_TIMEOUT_S)
        if done.returncode != 0 or not staged.is_file():
            pytest.fail(f"kotlinc failed (exit {done.returncode}):\n{done.stdout}\n{done.stderr}")
        os.replace(staged, jar)
    return jar


def _write_host_fixture(directory: Path, model: bytes) -> None:
    """Real pipeline files for one model, plus the host interpreter's raw tensors for the packaged sample image."""
    from ai_edge_litert.interpreter import Interpreter

    from export.android import package
    from export.meta import meta_for_tflite, write_meta

    run, app = directory / "run", directory / "app"
    run.mkdir(parents=True)
    (app / "app/src/main").mkdir(parents=True)
    (app / "app/src/main/AndroidManifest.xml").write_text("<manifest/>\n")
    (run / "model.tflite").write_bytes(model)
    meta = meta_for_tflite(run / "model.tflite", LABELS, NORMALIZATION, model_name="tiny", model_file="model.tflite")
    write_meta(run / "model_meta.json", meta)
    (run / "labels.txt").write_text("\n".join(LABELS) + "\n")
    packaged = package(run, app)

    fixture = directory / "fixture"
    fixture.mkdir()
    for source in (packaged.meta_asset, packaged.labels_asset, packaged.sample_image, packaged.sample_expected):
        shutil.copy(source, fixture / source.name)

    from png_decoding import decode_png  # tests/export

    image = decode_png(packaged.sample_image.read_bytes())
    normalized = (image.astype(np.float32) - np.float32(127.5)) / np.float32(127.5)
    interpreter = Interpreter(model_content=model, num_threads=1)
    interpreter.allocate_tensors()
    source, target = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    if np.dtype(source["dtype"]) == np.float32:
        tensor = normalized.astype(np.float32)
    else:  # model_meta.json's documented recipe: round half away from zero, add the zero point, clamp
        scale, zero_point = source["quantization"]
        scaled = normalized / np.float32(scale)
        rounded = np.sign(scaled) * np.floor(np.abs(scaled) + 0.5)
        info = np.iinfo(source["dtype"])
        tensor = np.clip(rounded + zero_point, info.min, info.max).astype(source["dtype"])
    interpreter.set_tensor(source["index"], tensor[np.newaxis])
    interpreter.invoke()
    # Java's ByteBuffer in the app is native order; these machines and Android phones are little-endian.
    (fixture / "input_tensor.bin").write_bytes(tensor.astype(tensor.dtype.newbyteorder("<")).tobytes())
    output = interpreter.get_tensor(target["index"])
    (fixture / "output_tensor.bin").write_bytes(output.astype(output.dtype.newbyteorder("<")).tobytes())


@pytest.fixture
def tools() -> dict[str, str]:
    return _toolchain()


@pytest.fixture
def host_fixtures(tools, tmp_path, monkeypatch) -> Path:
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "export"))  # the shared tiny models
    import tiny_tflite_models as tiny

    root = tmp_path / "fixtures"
    for name, model in (("int8", tiny.converted("plain", "int8")), ("float32", tiny.converted("plain", "none"))):
        _write_host_fixture(tmp_path / name, model)
        shutil.copytree(tmp_path / name / "fixture", root / name)
    return root


def test_kotlin_unit_tests_pass(tools, host_fixtures):
    jar = _compiled_jar(tools)
    classes = _test_classes()
    assert "org.mobilecnn.demo.logic.HostParityTest" in classes
    classpath = os.pathsep.join([str(jar), tools["junit"], tools["hamcrest"]])
    done = subprocess.run(
        [tools["java"], f"-Dmobilecnn.hostFixtures={host_fixtures}", "-cp", classpath, "org.junit.runner.JUnitCore",
         *classes],
        capture_output=True, text=True, timeout=300,
    )
    output = done.stdout + done.stderr
    if done.returncode != 0:
        pytest.fail(f"Kotlin unit tests failed:\n{output[-6000:]}")
    ran = re.search(r"^OK \((\d+) tests?\)", output, re.M)
    assert ran and int(ran.group(1)) >= len(classes), output[-2000:]
