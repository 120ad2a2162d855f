"""The app's JVM unit tests (android_demo/app/src/test), compiled with kotlinc and run with JUnit 4 — without Gradle
or an Android SDK, which these machines do not have. What they test is the app's own logic (choosing a model from
the packaged assets, the GPU-to-CPU fallback, the result text, frame timestamps, the center crop); it has no
Android dependency. Classifying itself is MediaPipe's, and runs only on a device (BUILD.md).

Needs `kotlinc` on PATH (or $KOTLINC), `java`, and JUnit 4 + Hamcrest jars (Debian: `apt-get install kotlin junit4`;
or $JUNIT4_JAR and $HAMCREST_JAR). Skips, saying what is missing, where they are absent. Compiling takes tens of
seconds, so the jar is cached by a hash of the sources and the compiler ($XDG_CACHE_HOME or ~/.cache). Debian's
kotlinc is 1.3.31 while the app builds with Kotlin 2.2: the logic keeps to what both accept.
"""
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

APP = Path(__file__).resolve().parents[2] / "android_demo" / "app"
LOGIC_SOURCES = APP / "src/main/java/org/mobilecnn/demo/logic"
TEST_SOURCES = APP / "src/test/java"
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


def test_every_logic_file_has_a_test():
    """Logic.kt is tested by LogicTest.kt: the app-specific logic is exactly what the JVM tests cover."""
    tested = {path.stem.removesuffix("Test") for path in TEST_SOURCES.rglob("*Test.kt")}
    logic = {path.stem for path in LOGIC_SOURCES.glob("*.kt")}
    assert logic, LOGIC_SOURCES
    assert not logic - tested, f"logic without a JVM test: {sorted(logic - tested)}"


def test_kotlin_unit_tests_pass():
    tools = _toolchain()
    jar = _compiled_jar(tools)
    classes = _test_classes()
    assert len(classes) >= 4, classes
    classpath = os.pathsep.join([str(jar), tools["junit"], tools["hamcrest"]])
    done = subprocess.run(
        [tools["java"], "-cp", classpath, "org.junit.runner.JUnitCore", *classes],
        capture_output=True, text=True, timeout=300,
    )
    output = done.stdout + done.stderr
    if done.returncode != 0:
        pytest.fail(f"Kotlin unit tests failed:\n{output[-6000:]}")
    ran = re.search(r"^OK \((\d+) tests?\)", output, re.M)
    assert ran and int(ran.group(1)) >= len(classes), output[-2000:]
