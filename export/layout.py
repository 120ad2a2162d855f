"""The run directory's layout: the one place where the name of every file a run directory holds is spelled.

pipeline/ writes run directories and export.android reads them; both take the names from here. Paths are
relative to the run directory (the stage ledger records them so), and `RunLayout(run_dir).path(name)` joins them.
`VERSION` is recorded in config.json: a directory written with another layout is refused, never half-read.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

VERSION = 2

CONFIG = "config.json"
LEDGER = "stages.json"
LOCK = ".lock"
METRICS = "metrics.json"
REPORT = "report.md"
PLOT = "report.png"
QUANTIZATION_PLOT = "quantization_error.png"
LABELS = "labels.txt"
META = "model_meta.json"
WORKERS = "workers"  # non-chief workers of a multi-worker run train in workers/<task>-<index>/

# The model chain: each training stage reads the previous stage's file and writes its own (never from memory).
TEACHER_MODEL = "teacher/model.keras"
TRAINED_MODEL = "model.keras"
ALONE_MODEL = "student_alone/model.keras"
SPARSE_MODEL = "model_pruned.keras"  # TF-MOT sparsity (name kept from the single prune stage: users' scripts read it)
SLIM_MODEL = "model_slim.keras"  # channel slimming
QAT_MODEL = "model_qat.h5"  # TF-MOT QAT models reload only from HDF5 (pipeline.quantize)
FLOAT_TFLITE = "model_float32.tflite"
PTQ_BASELINE_TFLITE = "ptq_baseline/model_int8.tflite"
# The calibrated float graph a post-training int8 model was quantized from: the quantization report's reference.
CALIBRATED_FLOAT_TFLITE = "converted/model_calibrated_float32.tflite"


def quantized_tflite(quantization: str, image_size: int | None = None) -> str:
    """`model_int8.tflite`, `model_float16.tflite` or `model_dynamic.tflite`; `model_int8_224.tflite` for the same
    network converted at another input size (pipeline.accuracy_bench times it at a phone's size)."""
    return f"model_{quantization}{'' if image_size is None else f'_{image_size}'}.tflite"


def model_files(quantization: str) -> dict[str, str]:
    """A run's deployable TFLite files by artifact: `float32`, and `quantized` unless `quantization` is "none"."""
    files = {"float32": FLOAT_TFLITE}
    if quantization != "none":
        files["quantized"] = quantized_tflite(quantization)
    return files


def converted(name: str) -> str:
    """Where the convert stage writes a model before the metadata stage writes it, with its metadata, as `name`."""
    return f"converted/{name}"


def training_dir(stage: str) -> str:
    """Where a training stage keeps its checkpoints, backup, TensorBoard logs and history.csv."""
    return stage


@dataclasses.dataclass(frozen=True)
class RunLayout:
    """A run directory: `layout.path(name)` for any of this module's names."""

    root: Path

    def path(self, name: str) -> Path:
        return Path(self.root) / name
