"""Package a run's model into the Android demo app: `python -m export.android --run_dir RUN [--app_dir android_demo]`.

What goes where (the app reads exactly these three assets, and a test image for its instrumented test):
```
RUN/<model_file>           -> android_demo/app/src/main/assets/model.tflite
RUN/labels.txt             -> android_demo/app/src/main/assets/labels.txt
RUN/model_meta.json        -> android_demo/app/src/main/assets/model_meta.json   (byte for byte)
(generated)                -> android_demo/app/src/androidTest/assets/sample_image.png, sample_expected.json
```
The model is `--model` if given, else the one `model_meta.json`'s `model_file` names, else the one .tflite in the
run directory that matches the meta (preferring a float16/dynamic-range model over model_float32.tflite, whose
input and output tensors look the same). Nothing is written until every check has passed: the meta is
valid (export.meta), the model's input and output tensors agree with it (shape, dtype, quantization), labels.txt has
one label per output class and equals the meta's labels, and the input is what the app feeds (`[1, H, W, 3]` RGB
from 0..255 pixels). Then every file is staged beside its target and renamed into place, so an interrupted run
leaves the old app or the new one; the app itself re-checks the three assets against each other at start-up.

The instrumented test's image is `sample_image.png`, already at the model's input size (so the app's crop and
resize are the identity and host and device see the same pixels), and `sample_expected.json` holds what the host
LiteRT interpreter (export.evaluate, XNNPACK, 1 thread — the app's CPU path) gives for it. By default the image is
synthetic (smooth colour fields; the candidate with the widest top-1 margin is kept), so no dataset image ever
lands in the app; `--sample_image` uses your own photo instead.

Exit status of the CLI: 0 packaged, 2 a packaging error (one line on stderr, no traceback).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import struct
import sys
import tempfile
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from export.files import new_file_mode
from export.meta import (
    MetaError,
    MetaMismatchError,
    UnreadableModelError,
    check_meta_matches_tflite,
    read_meta,
    tensor_spec,
)

if TYPE_CHECKING:
    from export.evaluate import TFLiteClassifier

PathLike = str | os.PathLike

DEFAULT_APP_DIR = Path(__file__).resolve().parents[1] / "android_demo"
META_FILE = "model_meta.json"
LABELS_FILE = "labels.txt"
MODEL_ASSET = "model.tflite"
MAIN_ASSETS = Path("app/src/main/assets")
TEST_ASSETS = Path("app/src/androidTest/assets")
MANIFEST = Path("app/src/main/AndroidManifest.xml")
SAMPLE_IMAGE = "sample_image.png"
SAMPLE_EXPECTED = "sample_expected.json"
EXIT_PACKAGING_ERROR = 2
# The app feeds 8-bit camera pixels; a meta with another pixel range needs an app change, not a repackage.
APP_PIXEL_RANGE = [0, 255]
_SAMPLE_CANDIDATES = 16
# Float models: device and host XNNPACK kernels differ in summation order; 1e-3 of the logit scale is ample.
_FLOAT_TOLERANCE = 1e-3


class PackagingError(RuntimeError):
    """The run cannot be packaged into the app; the message says what is wrong and how to fix it."""


class MissingFileError(PackagingError, FileNotFoundError):
    """A file the app needs is not in the run directory, or the app directory is not the Android project."""


class PackagingMismatchError(PackagingError, MetaMismatchError):
    """The model, model_meta.json and labels.txt disagree; `.mismatches` lists every disagreement."""

    def __init__(self, model_name: str, mismatches: list[str]):
        self.mismatches = list(mismatches)
        Exception.__init__(
            self,
            f"{model_name}, {META_FILE} and {LABELS_FILE} disagree: " + "; ".join(self.mismatches)
            + ". Regenerate them together (the pipeline's convert stage writes all three) or pass --model.",
        )


@dataclasses.dataclass(frozen=True)
class PackagedApp:
    """What `package` wrote: the app's three assets and the instrumented test's image and expectation."""

    app_dir: Path
    model_source: Path
    model_sha256: str
    model_asset: Path
    labels_asset: Path
    meta_asset: Path
    sample_image: Path
    sample_expected: Path
    input_shape: tuple[int, ...]
    input_dtype: str
    num_classes: int
    expected_top1_label: str

    def __str__(self) -> str:
        return (
            f"packaged {self.model_source.name} ({self.input_dtype} input {list(self.input_shape)}, "
            f"{self.num_classes} classes, sha256 {self.model_sha256[:12]}) into {self.model_asset.parent}; "
            f"instrumented-test image top-1 on the host: {self.expected_top1_label!r}"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (paths as strings) for a run's stage record."""
        return {key: (str(value) if isinstance(value, Path) else value) for key, value in
                dataclasses.asdict(self).items()}


def package(
    run_dir: PathLike,
    app_dir: PathLike = DEFAULT_APP_DIR,
    model: str | None = None,
    sample_image: PathLike | None = None,
) -> PackagedApp:
    """Check a run's model, labels and meta against each other and copy them into the Android app's assets."""
    run_dir, app_dir = Path(run_dir), Path(app_dir)
    if not run_dir.is_dir():
        raise MissingFileError(f"Run directory {run_dir} does not exist; pass the output directory of pipeline.run.")
    if not (app_dir / MANIFEST).is_file():
        raise MissingFileError(
            f"{app_dir} is not the Android demo project (no {MANIFEST}); pass --app_dir pointing at android_demo/."
        )
    meta_path, labels_path = run_dir / META_FILE, run_dir / LABELS_FILE
    for path in (meta_path, labels_path):
        if not path.is_file():
            raise MissingFileError(f"{path} is missing; the pipeline's convert stage writes it (python -m pipeline.run).")
    try:
        meta = read_meta(meta_path)
    except MetaError as error:
        raise PackagingError(str(error)) from None
    labels_bytes = labels_path.read_bytes()
    try:
        labels = parse_labels(labels_bytes.decode("utf-8"))
    except UnicodeDecodeError:
        raise PackagingError(f"{labels_path} is not UTF-8 text; write one label per line.") from None

    model_path = _choose_model(run_dir, meta, model)
    try:
        tensor_spec(model_path)
    except UnreadableModelError as error:
        raise PackagingError(str(error)) from None
    model_bytes = model_path.read_bytes()
    mismatches = model_mismatches(meta, labels, model_bytes, model_path.name)
    if mismatches:
        raise PackagingMismatchError(model_path.name, mismatches)

    image = _load_sample_image(sample_image, meta) if sample_image is not None else _synthetic_sample_image(
        model_bytes, meta)
    expected = expected_prediction(model_bytes, meta, image)
    expected.update(image=SAMPLE_IMAGE, model_file=model_path.name,
                    model_sha256=hashlib.sha256(model_bytes).hexdigest(),
                    created_by="mobile-cnn export.android (host LiteRT, XNNPACK, 1 thread)")

    main_assets, test_assets = app_dir / MAIN_ASSETS, app_dir / TEST_ASSETS
    files = {
        test_assets / SAMPLE_IMAGE: png_bytes(image),
        test_assets / SAMPLE_EXPECTED: (json.dumps(expected, indent=2) + "\n").encode("utf-8"),
        main_assets / LABELS_FILE: labels_bytes,
        main_assets / META_FILE: meta_path.read_bytes(),
        main_assets / MODEL_ASSET: model_bytes,
    }
    _write_all_or_nothing(files)
    return PackagedApp(
        app_dir=app_dir,
        model_source=model_path,
        model_sha256=expected["model_sha256"],
        model_asset=main_assets / MODEL_ASSET,
        labels_asset=main_assets / LABELS_FILE,
        meta_asset=main_assets / META_FILE,
        sample_image=test_assets / SAMPLE_IMAGE,
        sample_expected=test_assets / SAMPLE_EXPECTED,
        input_shape=tuple(meta["input"]["shape"]),
        input_dtype=meta["input"]["dtype"],
        num_classes=len(labels),
        expected_top1_label=expected["top1_label"],
    )


def parse_labels(text: str) -> list[str]:
    """labels.txt as the app reads it: one label per line, '\\r' stripped, trailing blank lines ignored."""
    lines = [line.rstrip("\r") for line in text.split("\n")]
    while lines and lines[-1] == "":
        lines.pop()
    return lines


def model_mismatches(meta: dict[str, Any], labels: Sequence[str], model: bytes, model_name: str = "model") -> list[str]:
    """Every way `model`, `meta` and `labels` disagree, or ask of the app what it cannot do; empty when packable."""
    problems = []
    try:
        check_meta_matches_tflite(meta, model)
    except MetaMismatchError as error:
        problems.extend(error.mismatches)
    except MetaError as error:  # e.g. two inputs, or a float16 input tensor: nothing the app can feed
        problems.append(str(error))
        return problems
    num_classes = int(np.prod(tensor_spec(model)["output"]["shape"][1:]))
    if len(labels) != num_classes:
        problems.append(f"{LABELS_FILE}: {len(labels)} labels, the model outputs {num_classes} classes")
    elif list(labels) != list(meta["labels"]):
        line = next((i for i, (a, b) in enumerate(zip(labels, meta["labels"])) if a != b),
                    min(len(labels), len(meta["labels"]))) + 1
        problems.append(f"{LABELS_FILE} differs from {META_FILE}'s labels at line {line}")
    shape = list(meta["input"]["shape"])
    if len(shape) != 4 or shape[0] != 1 or shape[3] != 3:
        problems.append(f"input shape {shape}: the app feeds RGB camera frames and needs [1, height, width, 3]")
    pixel_range = list(meta["normalization"].get("pixel_range", APP_PIXEL_RANGE))
    if pixel_range != APP_PIXEL_RANGE:
        problems.append(f"normalization pixel_range {pixel_range}: the app feeds 8-bit pixels, {APP_PIXEL_RANGE}")
    return problems


def expected_prediction(
    model: bytes, meta: dict[str, Any], image: np.ndarray, classifier: "TFLiteClassifier | None" = None
) -> dict[str, Any]:
    """The host LiteRT result for one uint8 RGB image at the input size, normalized as the app normalizes it."""
    if classifier is None:
        classifier = _host_classifier(model)
    logits = classifier.logits(_normalize(image, meta)[np.newaxis])[0]
    top1 = int(np.argmax(logits))
    quantization = meta["output"]["quantization"]
    if quantization is not None:
        # Host and device int8 kernels may round a requantization differently: allow two output steps.
        tolerance = 2.0 * float(quantization["scale"])
    else:
        tolerance = _FLOAT_TOLERANCE * max(1.0, float(np.max(np.abs(logits))))
    ordered = np.sort(logits)[::-1]
    return {
        "top1_index": top1,
        "top1_label": meta["labels"][top1],
        "top1_margin": float(ordered[0] - ordered[1]) if len(ordered) > 1 else None,
        "logits": [float(value) for value in logits],
        "logit_tolerance": float(tolerance),
    }


def png_bytes(image: np.ndarray) -> bytes:
    """An 8-bit RGB PNG of an [H, W, 3] uint8 array (lossless, so the device decodes the exact pixels)."""
    image = np.ascontiguousarray(image, dtype=np.uint8)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"Expected an [H, W, 3] image, got shape {image.shape}.")
    height, width = image.shape[:2]

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    rows = b"".join(b"\x00" + image[y].tobytes() for y in range(height))  # filter type 0 on every row
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit, colour type 2 (RGB)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows, 9)) + chunk(b"IEND", b"")


def _host_classifier(model: bytes) -> "TFLiteClassifier":
    from export.evaluate import TFLiteClassifier  # the pipeline's own evaluation: same quantize/dequantize code

    return TFLiteClassifier(model, num_threads=1)


def _normalize(image: np.ndarray, meta: dict[str, Any]) -> np.ndarray:
    mean = np.asarray(meta["normalization"]["mean"], np.float32)
    std = np.asarray(meta["normalization"]["std"], np.float32)
    return (image.astype(np.float32) - mean) / std


def _choose_model(run_dir: Path, meta: dict[str, Any], model: str | None) -> Path:
    named = model or meta.get("model_file")
    if named:
        path = run_dir / named
        if not path.is_file():
            source = "--model" if model else f"{META_FILE}'s model_file"
            raise MissingFileError(f"{path} ({source}) does not exist; run the pipeline's convert stage first.")
        return path
    candidates = sorted(run_dir.glob("*.tflite"))
    if not candidates:
        raise MissingFileError(f"{run_dir} holds no .tflite model; run the pipeline's convert stage first.")
    matching = []
    for candidate in candidates:
        try:
            check_meta_matches_tflite(meta, candidate)
        except (MetaMismatchError, MetaError):
            continue
        matching.append(candidate)
    if len(matching) > 1:
        # float16 and dynamic-range models have float32 input/output like the float32 one: prefer the compressed.
        compressed = [path for path in matching if path.name != "model_float32.tflite"]
        matching = compressed if len(compressed) == 1 else matching
    if len(matching) == 1:
        return matching[0]
    if not matching:
        if len(candidates) == 1:
            return candidates[0]  # report its mismatches in detail
        raise PackagingError(
            f"No .tflite in {run_dir} matches {META_FILE} ({', '.join(p.name for p in candidates)}); "
            "regenerate the meta with the pipeline's convert stage, or pass --model NAME."
        )
    raise PackagingError(
        f"{META_FILE} names no model_file and several models match it ({', '.join(p.name for p in matching)}); "
        "pass --model NAME."
    )


def _synthetic_sample_image(model: bytes, meta: dict[str, Any]) -> np.ndarray:
    """Smooth random colour fields at the input size; the one whose top-1 logit leads most is kept, so a device
    that agrees with the host cannot fail the check on a near-tie."""
    _, height, width, _ = meta["input"]["shape"]
    rng = np.random.default_rng(0)
    classifier = _host_classifier(model)
    best, best_margin = None, -np.inf
    for _ in range(_SAMPLE_CANDIDATES):
        coarse = rng.uniform(0, 255, size=(4, 4, 3))
        image = _resize_bilinear(coarse, height, width)
        image = np.clip(np.floor(image + 0.5), 0, 255).astype(np.uint8)
        margin = expected_prediction(model, meta, image, classifier)["top1_margin"] or 0.0
        if margin > best_margin:
            best, best_margin = image, margin
    return best


def _resize_bilinear(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize at pixel centers (tf.image.resize's convention, and the app's), in NumPy."""
    def axis(out_size: int, in_size: int):
        position = np.clip((np.arange(out_size) + 0.5) * in_size / out_size - 0.5, 0, in_size - 1)
        low = np.floor(position).astype(int)
        high = np.minimum(low + 1, in_size - 1)
        return low, high, (position - low)

    y0, y1, fy = axis(height, image.shape[0])
    x0, x1, fx = axis(width, image.shape[1])
    top = image[y0][:, x0] * (1 - fx)[None, :, None] + image[y0][:, x1] * fx[None, :, None]
    bottom = image[y1][:, x0] * (1 - fx)[None, :, None] + image[y1][:, x1] * fx[None, :, None]
    return top * (1 - fy)[:, None, None] + bottom * fy[:, None, None]


def _load_sample_image(path: PathLike, meta: dict[str, Any]) -> np.ndarray:
    """Your own photo (PNG/JPEG/BMP/GIF), center-cropped to the model's aspect ratio and resized as the app does."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"--sample_image {path} does not exist.")
    from export.tensorflow_logging import import_tensorflow

    tf = import_tensorflow()  # only here: decoding a user's JPEG is the one thing NumPy cannot do

    try:
        image = tf.io.decode_image(path.read_bytes(), channels=3, expand_animations=False).numpy()
    except (tf.errors.InvalidArgumentError, ValueError) as error:
        raise PackagingError(f"--sample_image {path} is not a PNG/JPEG/BMP/GIF image ({error}).") from None
    _, height, width, _ = meta["input"]["shape"]
    rows, cols = image.shape[:2]
    if cols * height > rows * width:
        crop_cols = max(1, rows * width // height)
        left = (cols - crop_cols) // 2
        image = image[:, left:left + crop_cols]
    else:
        crop_rows = max(1, cols * height // width)
        top = (rows - crop_rows) // 2
        image = image[top:top + crop_rows]
    resized = _resize_bilinear(image.astype(np.float32), height, width)
    return np.clip(np.floor(resized + 0.5), 0, 255).astype(np.uint8)


def _write_all_or_nothing(files: dict[Path, bytes]) -> None:
    """Stage every file beside its target (written and fsync'ed), then rename them all into place; on any failure
    while staging, remove the staged files and leave the targets untouched."""
    staged: list[tuple[str, Path]] = []
    try:
        for target, data in files.items():
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, temp_path = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
            staged.append((temp_path, target))
            os.fchmod(fd, new_file_mode())  # the app's build reads the assets as the user's other files
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
    except BaseException:
        for temp_path, _ in staged:
            try:
                os.unlink(temp_path)
            except FileNotFoundError:
                pass
        raise
    # The model goes last: until it is in place the app still holds a complete older set, except for the meta
    # and labels, which the app checks against the model at start-up.
    for temp_path, target in staged:
        os.replace(temp_path, target)


def _define_flags() -> None:
    from absl import flags

    flags.DEFINE_string("run_dir", None, "Run directory written by python -m pipeline.run.", required=True)
    flags.DEFINE_string("app_dir", str(DEFAULT_APP_DIR), "The Android Studio project to package into.")
    flags.DEFINE_string("model", None, "Model file in the run directory (default: model_meta.json's model_file).")
    flags.DEFINE_string("sample_image", None,
                        "Your own photo for the instrumented test (default: a synthetic image, no dataset files).")


def main(argv: Sequence[str]) -> None:
    from absl import app, flags, logging

    from export.tensorflow_logging import silence_tensorflow_logging

    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    silence_tensorflow_logging(verbose=logging.get_verbosity() >= logging.DEBUG)
    values = flags.FLAGS
    try:
        result = package(values.run_dir, values.app_dir, model=values.model, sample_image=values.sample_image)
    except PackagingError as error:
        print(f"export.android: error: {error}".replace("\n", " "), file=sys.stderr)
        sys.exit(EXIT_PACKAGING_ERROR)
    print(result)


if __name__ == "__main__":
    from absl import app

    _define_flags()
    app.run(main)
