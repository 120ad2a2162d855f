"""Keep TensorFlow's start-up log off a command's stderr, so that an error is the one line its user reads.

Importing TensorFlow writes C++ log lines to stderr ("Could not find cuda drivers...", the absl "All log messages
before absl::InitializeLog()" notice, cuInit failures) before any Python code can set a log level: those lines
come from absl's C++ logging before it is initialized, which TF_CPP_MIN_LOG_LEVEL does not reach. So the quiet
mode sets TF_CPP_MIN_LOG_LEVEL=3 (errors included: TensorFlow's C++ errors reach Python as exceptions anyway),
turns TensorFlow's Python logger and the library warnings down, and `import_tensorflow` imports TensorFlow with
file descriptor 2 pointed at a temporary file, which is replayed only if the import fails.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import warnings
from types import ModuleType
from typing import Iterator

_LIBRARIES = r"(tensorflow|tf_keras|keras|tensorflow_model_optimization|absl)(\.|$)"
_quiet = False


def silence_tensorflow_logging(verbose: bool = False) -> None:
    """Silence TensorFlow's C++ and Python logging and its libraries' warnings unless `verbose`; call it first."""
    global _quiet
    if verbose:
        return
    _quiet = True
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module=_LIBRARIES)


def import_tensorflow() -> ModuleType:
    """`import tensorflow`, with its start-up log discarded where `silence_tensorflow_logging` asked for quiet."""
    if not _quiet or "tensorflow" in sys.modules:
        import tensorflow

        return tensorflow
    with _stderr_discarded_unless_failing():
        import tensorflow
    logging.getLogger("tensorflow").setLevel(logging.ERROR)  # TensorFlow sets up its logger on import
    return tensorflow


@contextlib.contextmanager
def _stderr_discarded_unless_failing() -> Iterator[None]:
    """Point file descriptor 2 at a temporary file; if the block raises, write what it caught to the real stderr."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as caught:
        os.dup2(caught.fileno(), 2)
        try:
            yield
        except BaseException:
            _restore_stderr(saved)
            caught.seek(0)
            sys.stderr.write(caught.read().decode("utf-8", "replace"))
            raise
        _restore_stderr(saved)


def _restore_stderr(saved: int) -> None:
    sys.stderr.flush()
    os.dup2(saved, 2)
    os.close(saved)
