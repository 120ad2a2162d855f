"""export.tensorflow_logging: TensorFlow's start-up lines stay off stderr, unless its import fails.

A stand-in `tensorflow` package (written to a temporary directory, first on the path) writes a native-style log
line straight to file descriptor 2, as TensorFlow's C++ start-up does, so the tests need no real TensorFlow.
"""
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
STAND_IN = '''
import os
os.write(2, b"I0000 cudart_stub.cc:31] Could not find cuda drivers on your machine\\n")
if os.environ.get("STAND_IN_FAILS"):
    raise ImportError("stand-in TensorFlow is broken")
'''
PROGRAM = '''
import os, sys
from export.tensorflow_logging import import_tensorflow, silence_tensorflow_logging
silence_tensorflow_logging(verbose=sys.argv[1] == "verbose")
import_tensorflow()
print("TF_CPP_MIN_LOG_LEVEL=" + os.environ.get("TF_CPP_MIN_LOG_LEVEL", ""))
sys.exit("error: one line")
'''


def _run(tmp_path, mode, **env):
    (tmp_path / "tensorflow").mkdir(exist_ok=True)
    (tmp_path / "tensorflow" / "__init__.py").write_text(STAND_IN)
    environment = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{REPO}", **env}
    environment.pop("TF_CPP_MIN_LOG_LEVEL", None)
    return subprocess.run([sys.executable, "-c", PROGRAM, mode], capture_output=True, text=True, timeout=60,
                          env=environment)


def test_quiet_import_leaves_only_the_error_line(tmp_path):
    done = _run(tmp_path, "quiet")
    assert done.stderr == "error: one line\n"
    assert "TF_CPP_MIN_LOG_LEVEL=3" in done.stdout


def test_verbose_keeps_the_start_up_log(tmp_path):
    done = _run(tmp_path, "verbose")
    assert "cudart_stub" in done.stderr


def test_a_failing_import_shows_what_it_printed(tmp_path):
    done = _run(tmp_path, "quiet", STAND_IN_FAILS="1")
    assert "cudart_stub" in done.stderr and "stand-in TensorFlow is broken" in done.stderr
