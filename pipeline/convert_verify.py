"""The convert-and-verify work: the run's TFLite models beside `labels.txt` and `model_meta.json`, and what each
conversion kept, measured on the held-out split.

Files written into the run directory (each atomically; `model_meta.json` last, since it points at the model):
- `converted/model_float32.tflite` always, and the quantized model `converted/model_<int8|float16|dynamic>.tflite`
  unless `quantization="none"`; the metadata stage writes each, with its TFLite Model Metadata, as
  `model_<precision>.tflite` (export.layout).
- `labels.txt`, one class name per line in output order.
- `model_meta.json` (schema: `export.meta`) describes **the model the app should ship**: the quantized one, or
  the float32 one when `quantization="none"`; its `model_file` key names that file.

Verification: held-out top-1 of the Keras model, of the TFLite float32 model and of the quantized one (run with
the LiteRT interpreter exactly as the app feeds it), the quantized model's top-1 agreement with float32, the op
histogram and XNNPACK partitions of each file, and for int8 whether the graph is integer-only. A failed check
never raises: it is recorded in `checks` and logged as a warning, and the report prints it.

`sparse=True` (a TF-MOT-sparsified model) stores the float32 model's zero weights sparse (`EXPERIMENTAL_SPARSITY`),
which XNNPACK's sparse fp32 inference reads; the quantized model is always stored dense (docs/design.md, "Sparsity
and slimming").

A quantization-aware (TF-MOT) model converts to int8 from its own fake-quant ranges. Its "Keras float"
accuracy is the QAT model's own (fake-quant) accuracy, recorded with `keras_model="quantization_aware"`, and its
float32 TFLite file is made from the same weights with the fake-quant wrappers removed.
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import tf_keras as keras

from export import layout
from export.convert import QUANTIZATION_MODES, is_quantization_aware, to_int8_with_float_reference, to_tflite
from export.int8_remedies import DEFAULT_MIN_AGREEMENT, quantize_with_remedies
from export.evaluate import TFLiteClassifier, agreement, top1_accuracy
from export.files import write_bytes_atomic, write_text_atomic
from export.gpu_compat import check_gpu_compatibility
from export.graph import integer_only_problems, op_histogram, xnnpack_partitions
from export.meta import check_meta_matches_tflite, meta_for_tflite, write_meta
from pipeline.data import DataSplits
from pipeline.train import evaluate_accuracy

log = logging.getLogger(__name__)

# Calibration images for post-training int8: enough to see every class's activation ranges a few times.
REPRESENTATIVE_IMAGES = 200
# Training images after those (never used to calibrate) that judge int8 remedies; fewer than the minimum: none run.
CHECK_IMAGES, MIN_CHECK_IMAGES = 400, 50


@dataclasses.dataclass
class VerifyResult:
    """What the conversion kept, measured on the held-out split; `to_dict()` is the stage's JSON summary.

    Accuracies are top-1 in [0, 1]; the `*_quantized` fields are None when `quantization="none"`.
    `integer_only_problems` is None unless the quantized model is int8. `paths` are relative to the run
    directory.
    """

    model_name: str
    quantization: str
    io_dtype: str | None
    sparse: bool
    keras_model: str  # "float" or "quantization_aware"
    accuracy_keras: float
    accuracy_tflite_float32: float
    accuracy_tflite_quantized: float | None
    agreement_quantized_vs_float: float | None
    size_bytes_float32: int
    size_bytes_quantized: int | None
    op_histogram: dict[str, dict[str, int]]
    xnnpack_partitions: dict[str, dict[str, Any]]
    sparse_tensors: dict[str, int]
    integer_only_problems: list[str] | None
    checks: dict[str, bool]
    paths: dict[str, str]
    num_examples: int
    int8_remedies: dict[str, Any] | None = None  # post-training int8: what export.int8_remedies tried and chose
    gpu_compatibility: dict[str, dict[str, Any]] | None = None  # float models: ops the GPU delegate would reject

    @property
    def passed(self) -> bool:
        """True when every check passed."""
        return all(self.checks.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_name": self.model_name,
            "quantization": self.quantization,
            "io_dtype": self.io_dtype,
            "sparse": self.sparse,
            "keras_model": self.keras_model,
            "accuracy": {
                "keras_float": self.accuracy_keras,
                "tflite_float32": self.accuracy_tflite_float32,
                "tflite_quantized": self.accuracy_tflite_quantized,
            },
            "agreement_quantized_vs_float": self.agreement_quantized_vs_float,
            "size_bytes": {"float32": self.size_bytes_float32, "quantized": self.size_bytes_quantized},
            "op_histogram": self.op_histogram,
            "xnnpack_partitions": self.xnnpack_partitions,
            "sparse_tensors": self.sparse_tensors,
            "integer_only_problems": self.integer_only_problems,
            "checks": self.checks,
            "passed": self.passed,
            "paths": self.paths,
            "num_examples": self.num_examples,
            "int8_remedies": self.int8_remedies,
            "gpu_compatibility": self.gpu_compatibility,
        }


def convert_and_verify(
    model: keras.Model,
    data: DataSplits,
    run_dir: Path,
    quantization: str,
    io_dtype: str,
    sparse: bool,
    model_name: str,
    labels: Sequence[str] | None = None,
    scores: str = "logits",
    remedies: str = "auto",
    min_agreement: float = DEFAULT_MIN_AGREEMENT,
) -> VerifyResult:
    """Convert `model` to float32 and `quantization` TFLite files in `run_dir`, and verify them on held-out data."""
    from pipeline.quantize import float_model_from_quantization_aware

    if quantization not in QUANTIZATION_MODES:
        raise ValueError(f"Unknown quantization {quantization!r}; choose one of: {', '.join(QUANTIZATION_MODES)}.")
    run_dir = Path(run_dir)
    labels = [str(label) for label in (labels if labels is not None else data.class_names)]
    quantization_aware = is_quantization_aware(model)
    if quantization_aware and quantization != "int8":
        raise ValueError(f"A quantization-aware model deploys as int8; got quantization={quantization!r}.")
    float_model = float_model_from_quantization_aware(model) if quantization_aware else model

    remedies_record = None
    files = layout.model_files(quantization)
    flatbuffers = {"float32": to_tflite(float_model, "none", sparse=sparse, scores=scores)}
    if quantization != "none":
        if quantization == "int8" and not quantization_aware:
            flatbuffers["quantized"], calibrated, remedies_record = post_training_int8(
                model, data, io_dtype, scores, remedies, min_agreement)
            write_bytes_atomic(run_dir / layout.CALIBRATED_FLOAT_TFLITE, calibrated)
        else:
            flatbuffers["quantized"] = to_tflite(model, quantization, io_dtype=io_dtype, scores=scores,
                                                 pixel_range=pixel_range(data))
    for artifact, flatbuffer in flatbuffers.items():
        write_bytes_atomic(run_dir / layout.converted(files[artifact]), flatbuffer)
    app_artifact = "quantized" if quantization != "none" else "float32"
    write_text_atomic(run_dir / layout.LABELS, "\n".join(labels) + "\n")
    meta = meta_for_tflite(
        run_dir / layout.converted(files[app_artifact]), labels, data.normalization,
        model_name=model_name, model_file=files[app_artifact], quantization=quantization,
    )
    write_meta(run_dir / layout.META, meta)

    images, image_labels = data.val_arrays()
    keras_logits = model.predict(images, batch_size=max(data.batch_size, 128), verbose=0)
    logits = {artifact: TFLiteClassifier(flatbuffer).logits(images) for artifact, flatbuffer in flatbuffers.items()}
    accuracy = {artifact: top1_accuracy(values, image_labels) for artifact, values in logits.items()}

    checks = {"meta_matches_tflite": _meta_matches(meta, run_dir / layout.converted(files[app_artifact]))}
    problems = None
    if quantization == "int8":
        problems = integer_only_problems(flatbuffers["quantized"], float_io=io_dtype == "float32")
        checks["integer_only"] = not problems
        if problems:
            log.warning("THE INT8 MODEL IS NOT INTEGER-ONLY (%d problem(s)); it will run partly in float or "
                        "off XNNPACK:\n  %s", len(problems), "\n  ".join(problems))
    sparse_tensors = {artifact: count_sparse_tensors(flatbuffer) for artifact, flatbuffer in flatbuffers.items()}
    if sparse:
        checks["sparse_weights_stored"] = sparse_tensors["float32"] > 0
        if not checks["sparse_weights_stored"]:
            log.warning("sparse=True but the converter stored no weight sparse in %s (too few zeros?)",
                        layout.FLOAT_TFLITE)

    result = VerifyResult(
        model_name=model_name,
        quantization=quantization,
        io_dtype=io_dtype if quantization == "int8" else None,
        sparse=sparse,
        keras_model="quantization_aware" if quantization_aware else "float",
        accuracy_keras=top1_accuracy(keras_logits, image_labels),
        accuracy_tflite_float32=accuracy["float32"],
        accuracy_tflite_quantized=accuracy.get("quantized"),
        agreement_quantized_vs_float=(
            agreement(logits["quantized"], logits["float32"]) if "quantized" in logits else None
        ),
        size_bytes_float32=len(flatbuffers["float32"]),
        size_bytes_quantized=len(flatbuffers["quantized"]) if "quantized" in flatbuffers else None,
        op_histogram={artifact: op_histogram(flatbuffer) for artifact, flatbuffer in flatbuffers.items()},
        xnnpack_partitions={
            artifact: xnnpack_partitions(flatbuffer).as_dict() for artifact, flatbuffer in flatbuffers.items()
        },
        sparse_tensors=sparse_tensors,
        integer_only_problems=problems,
        checks=checks,
        paths={"float32": files["float32"], "quantized": files.get("quantized"), "labels": layout.LABELS,
               "meta": layout.META, "app_model": files[app_artifact]},
        num_examples=len(image_labels),
        int8_remedies=remedies_record,
        # The GPU delegate runs float models: float32 always, and float16 where that is the quantized model.
        gpu_compatibility={artifact: check_gpu_compatibility(flatbuffer).as_dict()
                           for artifact, flatbuffer in flatbuffers.items()
                           if artifact == "float32" or quantization == "float16"},
    )
    _log_summary(result)
    return result


def post_training_int8(model: keras.Model, data: DataSplits, io_dtype: str, scores: str, remedies: str = "auto",
                       min_agreement: float = DEFAULT_MIN_AGREEMENT) -> tuple[bytes, bytes, dict[str, Any]]:
    """(int8 model, the calibrated float model it came from, what int8 remedies were tried and chosen).

    Calibrated on REPRESENTATIVE_IMAGES training images; the next CHECK_IMAGES of the same seeded order (never
    used to calibrate) judge the remedies by agreement with the float model (export.int8_remedies)."""
    pool = representative_images(data, REPRESENTATIVE_IMAGES + CHECK_IMAGES)
    calibration, check = pool[:REPRESENTATIVE_IMAGES], pool[REPRESENTATIVE_IMAGES:]
    conversion = {"scores": scores, "pixel_range": pixel_range(data)}
    if len(check) < MIN_CHECK_IMAGES:
        int8, calibrated = to_int8_with_float_reference(model, calibration, io_dtype, **conversion)
        return int8, calibrated, {"mode": remedies, "remedies_ran": False, "chosen": "percentile",
                                  "num_check_images": len(check),
                                  "note": f"fewer than {MIN_CHECK_IMAGES} training images left to judge remedies by"}
    return quantize_with_remedies(model, calibration, check, io_dtype=io_dtype, mode=remedies,
                                  min_agreement=min_agreement, **conversion)


def representative_images(data: DataSplits, count: int = REPRESENTATIVE_IMAGES) -> np.ndarray:
    """`count` un-augmented training images, normalized as in training: int8 calibration data."""
    return np.concatenate([batch[0] for batch in data.representative_dataset(num_samples=count)()])


def pixel_range(data: DataSplits) -> tuple[float, float]:
    """The model input's values for pixels 0 and 255: the int8 input's range, so a client that normalizes the
    pixels itself (MediaPipe, from the metadata) lands on the same int8 values as training's normalization."""
    normalization = data.normalization
    return (0.0 - normalization.mean) / normalization.std, (255.0 - normalization.mean) / normalization.std


def count_sparse_tensors(flatbuffer: bytes) -> int:
    """How many tensors the converter stored in a sparse format (each is densified at load time)."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAs(flatbuffer, 0)
    return sum(
        1
        for subgraph_index in range(model.SubgraphsLength())
        for subgraph in [model.Subgraphs(subgraph_index)]
        for tensor_index in range(subgraph.TensorsLength())
        if subgraph.Tensors(tensor_index).Sparsity() is not None
    )


def _meta_matches(meta: dict[str, Any], tflite_path: Path) -> bool:
    try:
        check_meta_matches_tflite(meta, tflite_path)
    except ValueError as error:
        log.warning("%s", error)
        return False
    return True


def _log_summary(result: VerifyResult) -> None:
    parts = [f"Keras {result.keras_model} {result.accuracy_keras:.4f}",
             f"TFLite float32 {result.accuracy_tflite_float32:.4f} ({result.size_bytes_float32 / 1e6:.2f} MB)"]
    if result.accuracy_tflite_quantized is not None:
        parts.append(f"TFLite {result.quantization} {result.accuracy_tflite_quantized:.4f} "
                     f"({result.size_bytes_quantized / 1e6:.2f} MB), agreement with float32 "
                     f"{result.agreement_quantized_vs_float:.4f}")
    log.info("held-out top-1 on %d images: %s", result.num_examples, "; ".join(parts))
    failed = [name for name, passed in result.checks.items() if not passed]
    if failed:
        log.warning("verification FAILED: %s", ", ".join(failed))


def post_training_baseline(model: keras.Model, data: DataSplits, output: Path, io_dtype: str,
                           scores: str = "logits", remedies: str = "auto",
                           min_agreement: float = DEFAULT_MIN_AGREEMENT) -> dict[str, Any]:
    """With --qat: the same float model quantized after training instead, so one run shows what QAT bought.

    Writes the int8 model to `output` and returns the held-out top-1 of the float Keras model it came from and of
    its int8 post-training-quantized conversion (calibrated exactly as the main int8 artifact is).
    """
    flatbuffer = post_training_int8(model, data, io_dtype, scores, remedies, min_agreement)[0]
    write_bytes_atomic(Path(output), flatbuffer)
    images, image_labels = data.val_arrays()
    return {
        "keras_float": evaluate_accuracy(model, data),
        "tflite_int8_ptq": top1_accuracy(TFLiteClassifier(flatbuffer).logits(images), image_labels),
    }
