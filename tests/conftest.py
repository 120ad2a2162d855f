"""Shared test settings: the packages set TF_USE_LEGACY_KERAS themselves; keep TensorFlow quiet and small."""
import os
import pathlib

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

IMAGENETTE = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "imagenette-96"


@pytest.fixture
def imagenette_dir() -> pathlib.Path:
    """The shared real-photo dataset beside the checkout; tests that use it skip where it is absent."""
    if not IMAGENETTE.is_dir():
        pytest.skip(f"{IMAGENETTE} is absent (it lives beside the checkout, never inside it)")
    return IMAGENETTE
