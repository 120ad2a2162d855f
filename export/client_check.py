"""Check a .tflite classifier with MediaPipe Tasks' ImageClassifier, from outside, the way an app sees the file.

`mediapipe` 1.2.2 declares `absl-py~=2.3` and TF-MOT 0.8.1 `absl-py~=1.2`, so MediaPipe lives in an environment of
its own (`requirements-client.txt`, built by `.ci/run` into `.venv-client/` at the repository root, or wherever
`$MEDIAPIPE_CLIENT_PYTHON` points). This module, in the main environment, writes the images to a .npy file, runs
`export/mediapipe_client.py` with that environment's Python and reads back MediaPipe's top-1 per image.
"""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import numpy as np

CLIENT_PYTHON_ENV = "MEDIAPIPE_CLIENT_PYTHON"
DEFAULT_CLIENT_PYTHON = Path(__file__).resolve().parent.parent / ".venv-client" / "bin" / "python"
CLIENT_SCRIPT = Path(__file__).resolve().with_name("mediapipe_client.py")
# The bar for "the client agrees with our own evaluation".
MIN_AGREEMENT = 0.995


class ClientCheckError(RuntimeError):
    """MediaPipe could not be run, or refused the model."""


class Top1(NamedTuple):
    """MediaPipe's best category for one image."""

    name: str
    score: float
    index: int


@dataclasses.dataclass(frozen=True)
class MediaPipeCheck:
    """How MediaPipe's ImageClassifier classified a set of images, against our own top-1 (and the true labels)."""

    num_images: int
    agreement: float  # share of images whose MediaPipe top-1 name equals our own evaluation's
    accuracy: float | None  # share whose MediaPipe top-1 name equals the true label (None without labels)
    min_score: float
    max_score: float
    disagreements: list[int]  # the first few image indices where the names differ
    mediapipe_version: str

    @property
    def passed(self) -> bool:
        """True when MediaPipe agrees with our top-1 on at least MIN_AGREEMENT of the images."""
        return self.agreement >= MIN_AGREEMENT

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (for metrics.json)."""
        return {**dataclasses.asdict(self), "passed": self.passed}


def client_python() -> Path | None:
    """The MediaPipe environment's Python: `$MEDIAPIPE_CLIENT_PYTHON`, else `.venv-client/bin/python`; None if absent."""
    configured = os.environ.get(CLIENT_PYTHON_ENV)
    path = Path(configured) if configured else DEFAULT_CLIENT_PYTHON
    return path if path.is_file() else None


def classify_with_mediapipe(
    model_path: str | os.PathLike,
    images_uint8: np.ndarray,
    python: str | os.PathLike | None = None,
    timeout_s: float = 900.0,
) -> tuple[list[Top1], str]:
    """MediaPipe's top-1 for each raw RGB image (uint8 [N, H, W, 3] at the model size), and mediapipe's version."""
    images = np.asarray(images_uint8)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images_uint8 must be uint8 [N, H, W, 3] RGB pixels; got {images.dtype} {list(images.shape)}.")
    python = Path(python) if python is not None else client_python()
    if python is None or not Path(python).is_file():
        raise ClientCheckError(
            f"No MediaPipe environment: build it with `python3 -m venv .venv-client && .venv-client/bin/pip install "
            f"-r requirements-client.txt` (as .ci/run does), or point ${CLIENT_PYTHON_ENV} at its python."
        )
    with tempfile.TemporaryDirectory(prefix="mediapipe_client_") as scratch:
        images_path, output_path = Path(scratch) / "images.npy", Path(scratch) / "results.json"
        np.save(images_path, images)
        command = [os.fspath(python), os.fspath(CLIENT_SCRIPT), "--model", os.fspath(model_path),
                   "--images", os.fspath(images_path), "--output", os.fspath(output_path)]
        try:
            finished = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired:
            raise ClientCheckError(f"MediaPipe took over {timeout_s:.0f} s on {len(images)} images; "
                                   "pass fewer images or a larger timeout_s.") from None
        if finished.returncode != 0:
            raise ClientCheckError(f"MediaPipe refused {os.fspath(model_path)}: {_last_line(finished.stderr)}")
        with open(output_path, encoding="utf-8") as handle:
            report = json.load(handle)
    results = [Top1(str(r["name"]), float(r["score"]), int(r["index"])) for r in report["results"]]
    return results, str(report["mediapipe_version"])


def mediapipe_agreement(
    model_path: str | os.PathLike,
    images_uint8: np.ndarray,
    expected_names: Sequence[str],
    true_names: Sequence[str] | None = None,
    python: str | os.PathLike | None = None,
) -> MediaPipeCheck:
    """Classify `images_uint8` with MediaPipe and compare its top-1 names with `expected_names` (our own
    evaluation's top-1 label per image) and, if given, with `true_names` (the images' real classes)."""
    if len(expected_names) != len(images_uint8) or (true_names is not None and len(true_names) != len(images_uint8)):
        raise ValueError(f"{len(images_uint8)} images but {len(expected_names)} expected names"
                         + (f" and {len(true_names)} true names." if true_names is not None else "."))
    if len(images_uint8) == 0:
        raise ValueError("No images to classify.")
    results, version = classify_with_mediapipe(model_path, images_uint8, python=python)
    names = [result.name for result in results]
    scores = [result.score for result in results]
    differ = [index for index, (ours, theirs) in enumerate(zip(expected_names, names)) if ours != theirs]
    return MediaPipeCheck(
        num_images=len(names),
        agreement=1.0 - len(differ) / len(names),
        accuracy=(float(np.mean([name == true for name, true in zip(names, true_names)]))
                  if true_names is not None else None),
        min_score=float(min(scores)),
        max_score=float(max(scores)),
        disagreements=differ[:20],
        mediapipe_version=version,
    )


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:500] if lines else "(no message)"
