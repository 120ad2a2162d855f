"""Package a run's model into the Android demo app: `python -m export.android --run_dir RUN [--app_dir android_demo]`.

The app runs every model through MediaPipe Tasks' ImageClassifier, which reads what it needs from the model's own
TFLite Model Metadata (input normalization, image properties, labels as an associated labels.txt, whether scores
are probabilities). So the model file is the only app asset:
```
RUN/<model_file>   -> android_demo/app/src/main/assets/<asset name>.tflite   (byte for byte)
(generated)        -> android_demo/app/src/androidTest/assets/sample_image.png, sample_expected.json
```
The model is `--model` if given, else the one `model_meta.json`'s `model_file` names (the run's app model), else
the one .tflite in the run directory that matches the meta (preferring a float16/dynamic-range model over
model_float32.tflite, whose input and output tensors look the same). The asset is named
`<model_name>_<precision>.tflite` (e.g. `mobilenet_v3_small_int8.tflite`) unless `--asset_name` says otherwise;
packaging another model adds it beside the others, and the app offers every packaged `.tflite` in its model picker.

Nothing is written until every check has passed: the model carries TFLite Model Metadata (a model without it is
refused: MediaPipe would refuse a float input without NormalizationOptions, and name no categories); its tensors
agree with the run's `model_meta.json`; and its input and output are what MediaPipe's ImageClassifier takes
(`[1, H, W, 3]` uint8 or float32 input, int8 is refused by the client; one mean/std for all channels; square, since
the app hands MediaPipe the centered square of each camera frame). Then every file is staged beside its target
and renamed into place, so an interrupted run leaves the old app or the new one.

The instrumented test's image is `sample_image.png`, already at the model's input size (so MediaPipe's resize is
the identity and host and device see the same pixels), and `sample_expected.json` holds what the host LiteRT
interpreter gives for it when fed as MediaPipe feeds it (raw pixels for a uint8 input, (pixel - mean) / std for a
float one): top-1 category and its score. By default the image is synthetic (smooth colour fields; the candidate
with the widest top-1 margin is kept), so no dataset image ever lands in the app; `--sample_image` uses your own
photo instead.

Exit status of the CLI: 0 packaged, 2 a packaging error (one line on stderr, no traceback).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import struct
import sys
import tempfile
import zlib
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from export import layout
from export.files import new_file_mode
from export.metadata import CLIENT_INPUT_TYPES
from export.meta import (
    MetaError,
    MetaMismatchError,
    UnreadableModelError,
    check_meta_matches_tflite,
    read_meta,
    tensor_spec,
)

PathLike = str | os.PathLike

DEFAULT_APP_DIR = Path(__file__).resolve().parents[1] / "android_demo"
META_FILE = layout.META
MODEL_SUFFIX = ".tflite"
MAIN_ASSETS = Path("app/src/main/assets")
TEST_ASSETS = Path("app/src/androidTest/assets")
MANIFEST = Path("app/src/main/AndroidManifest.xml")
SAMPLE_IMAGE = "sample_image.png"
SAMPLE_EXPECTED = "sample_expected.json"
EXIT_PACKAGING_ERROR = 2
_SAMPLE_CANDIDATES = 16
# Float models: device and host XNNPACK kernels differ in summation order; 1e-3 of the score scale is ample.
_FLOAT_TOLERANCE = 1e-3
_ASSET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*\.tflite$")


class PackagingError(RuntimeError):
    """The run cannot be packaged into the app; the message says what is wrong and how to fix it."""


class MissingFileError(PackagingError, FileNotFoundError):
    """A file the app needs is not in the run directory, or the app directory is not the Android project."""


class MissingMetadataError(PackagingError):
    """The model carries no (or unusable) TFLite Model Metadata, so MediaPipe's ImageClassifier cannot use it."""


class PackagingMismatchError(PackagingError, MetaMismatchError):
    """The model disagrees with model_meta.json, or is not what the client takes; `.mismatches` lists each problem."""

    def __init__(self, model_name: str, mismatches: list[str]):
        self.mismatches = list(mismatches)
        Exception.__init__(
            self,
            f"{model_name} cannot be packaged: " + "; ".join(self.mismatches)
            + ". Regenerate the run's models with the pipeline's convert stage, or pass --model.",
        )


@dataclasses.dataclass(frozen=True)
class PackagedApp:
    """What `package` wrote: the model asset, and the instrumented test's image and expectation."""

    app_dir: Path
    model_source: Path
    model_sha256: str
    model_asset: Path
    sample_image: Path
    sample_expected: Path
    input_shape: tuple[int, ...]
    input_dtype: str
    num_classes: int
    expected_top1_label: str

    def __str__(self) -> str:
        return (
            f"packaged {self.model_source.name} ({self.input_dtype} input {list(self.input_shape)}, "
            f"{self.num_classes} classes, sha256 {self.model_sha256[:12]}) as {self.model_asset}; "
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
    asset_name: str | None = None,
) -> PackagedApp:
    """Check a run's metadata-bearing model and copy it into the Android app's assets, with a test expectation."""
    run_dir, app_dir = Path(run_dir), Path(app_dir)
    if not run_dir.is_dir():
        raise MissingFileError(f"Run directory {run_dir} does not exist; pass the output directory of pipeline.run.")
    if not (app_dir / MANIFEST).is_file():
        raise MissingFileError(
            f"{app_dir} is not the Android demo project (no {MANIFEST}); pass --app_dir pointing at android_demo/."
        )
    meta_path = run_dir / META_FILE
    if not meta_path.is_file():
        raise MissingFileError(
            f"{meta_path} is missing; the pipeline's convert stage writes it (python -m pipeline.run)."
        )
    try:
        meta = read_meta(meta_path)
    except MetaError as error:
        raise PackagingError(str(error)) from None

    model_path = _choose_model(run_dir, meta, model)
    try:
        tensor_spec(model_path)
    except UnreadableModelError as error:
        raise PackagingError(str(error)) from None
    model_bytes = model_path.read_bytes()
    # model_meta.json describes the run's app model; another model of the run (e.g. --model model_float32.tflite)
    # shares only its input size, labels and normalization.
    described = model is None or model == meta.get("model_file")
    mismatches = model_mismatches(meta, model_bytes, meta_describes_model=described)
    if mismatches:
        raise PackagingMismatchError(model_path.name, mismatches)
    spec = tensor_spec(model_bytes)
    num_classes = int(np.prod(spec["output"]["shape"][1:]))
    check_metadata(model_bytes, num_classes, model_path.name)
    asset = asset_name or default_asset_name(meta, model_path.name)
    if not _ASSET_NAME.match(asset):
        raise PackagingError(
            f"--asset_name {asset!r}: use letters, digits, '.', '_' or '-', ending in {MODEL_SUFFIX}."
        )

    image = _load_sample_image(sample_image, meta) if sample_image is not None else _synthetic_sample_image(
        model_bytes, meta)
    expected = expected_prediction(model_bytes, meta, image)
    expected.update(image=SAMPLE_IMAGE, model_asset=asset, model_file=model_path.name,
                    model_sha256=hashlib.sha256(model_bytes).hexdigest(),
                    created_by="mobile-cnn export.android (host LiteRT, XNNPACK, 1 thread, fed as MediaPipe feeds)")

    main_assets, test_assets = app_dir / MAIN_ASSETS, app_dir / TEST_ASSETS
    files = {
        test_assets / SAMPLE_IMAGE: png_bytes(image),
        test_assets / SAMPLE_EXPECTED: (json.dumps(expected, indent=2) + "\n").encode("utf-8"),
        main_assets / asset: model_bytes,
    }
    _write_all_or_nothing(files)
    return PackagedApp(
        app_dir=app_dir,
        model_source=model_path,
        model_sha256=expected["model_sha256"],
        model_asset=main_assets / asset,
        sample_image=test_assets / SAMPLE_IMAGE,
        sample_expected=test_assets / SAMPLE_EXPECTED,
        input_shape=tuple(spec["input"]["shape"]),
        input_dtype=spec["input"]["dtype"],
        num_classes=num_classes,
        expected_top1_label=expected["top1_label"],
    )


def default_asset_name(meta: dict[str, Any], model_file: str) -> str:
    """`<model_name>_<precision>.tflite` (model_int8.tflite of mobilenet_v3_small -> mobilenet_v3_small_int8.tflite)."""
    stem = Path(model_file).stem
    precision = stem[len("model_"):] if stem.startswith("model_") else stem
    name = str(meta.get("model_name") or "").strip()
    base = f"{name}_{precision}" if name else stem
    return re.sub(r"[^A-Za-z0-9._-]", "_", base).lstrip("._-") + MODEL_SUFFIX


def model_mismatches(meta: dict[str, Any], model: bytes, meta_describes_model: bool = True) -> list[str]:
    """Every way `model` disagrees with `meta` or is not what MediaPipe's ImageClassifier takes; empty when packable.

    With `meta_describes_model` false (another model of the same run) only the input shape and the number of
    classes must agree with the meta, not dtypes and quantization."""
    problems = []
    try:
        spec = tensor_spec(model)
    except MetaError as error:  # e.g. two inputs, or a float16 input tensor: nothing the client can feed
        return [str(error)]
    if meta_describes_model:
        try:
            check_meta_matches_tflite(meta, model)
        except MetaMismatchError as error:
            problems.extend(error.mismatches)
    else:
        if list(meta["input"]["shape"]) != spec["input"]["shape"]:
            problems.append(f"input shape: meta says {meta['input']['shape']}, model has {spec['input']['shape']}")
        num_classes = int(np.prod(spec["output"]["shape"][1:]))
        if len(meta["labels"]) != num_classes:
            problems.append(f"labels: meta has {len(meta['labels'])}, the model outputs {num_classes} classes")
    shape, dtype = list(spec["input"]["shape"]), spec["input"]["dtype"]
    if len(shape) != 4 or shape[0] != 1 or shape[3] != 3:
        problems.append(f"input shape {shape}: MediaPipe feeds RGB images and needs [1, height, width, 3]")
    elif shape[1] != shape[2]:
        problems.append(f"input shape {shape}: the app classifies the centered square of each frame and needs a "
                        f"square input")
    if dtype not in CLIENT_INPUT_TYPES:
        problems.append(f"input dtype {dtype}: MediaPipe's ImageClassifier takes {' or '.join(CLIENT_INPUT_TYPES)} "
                        f"(convert the int8 model with uint8 input)")
    normalization = meta["normalization"]
    if dtype == "float32" and (len(set(normalization["mean"])) > 1 or len(set(normalization["std"])) > 1):
        problems.append(f"normalization mean {normalization['mean']} std {normalization['std']}: MediaPipe takes one "
                        f"mean and std for all three channels")
    pixel_range = list(normalization.get("pixel_range", [0, 255]))
    if pixel_range != [0, 255]:
        problems.append(f"normalization pixel_range {pixel_range}: MediaPipe feeds 8-bit pixels, [0, 255]")
    return problems


def check_metadata(model: bytes, num_classes: int, model_name: str = "model") -> None:
    """Raise `MissingMetadataError` unless the model carries TFLite Model Metadata a classifier client can use."""
    from export.metadata import check_classifier_metadata

    try:
        check_classifier_metadata(model, num_classes)
    except ValueError as error:
        raise MissingMetadataError(f"{model_name}: {str(error).splitlines()[0]}") from None


def expected_prediction(model: bytes, meta: dict[str, Any], image: np.ndarray, interpreter=None) -> dict[str, Any]:
    """The host LiteRT result for one uint8 RGB image at the input size, fed to the model as MediaPipe feeds it."""
    if interpreter is None:
        interpreter = _host_interpreter(model)
    scores = _client_scores(interpreter, meta, image)
    top1 = int(np.argmax(scores))
    output = interpreter.get_output_details()[0]
    if np.dtype(output["dtype"]) in (np.int8, np.uint8):
        # Host and device int8 kernels may round a requantization differently: allow two output steps.
        tolerance = 2.0 * float(output["quantization"][0])
    else:
        tolerance = _FLOAT_TOLERANCE * max(1.0, float(np.max(np.abs(scores))))
    ordered = np.sort(scores)[::-1]
    return {
        "top1_index": top1,
        "top1_label": meta["labels"][top1],
        "top1_score": float(scores[top1]),
        "top1_margin": float(ordered[0] - ordered[1]) if len(ordered) > 1 else None,
        "scores": [float(value) for value in scores],
        "score_tolerance": float(tolerance),
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


def _host_interpreter(model: bytes):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=model, num_threads=1)
    interpreter.allocate_tensors()
    return interpreter


def _client_scores(interpreter, meta: dict[str, Any], image: np.ndarray) -> np.ndarray:
    """MediaPipe's preprocessing: a uint8 input gets the raw pixels, a float one (pixel - mean) / std; its scores
    are the dequantized output (it applies no softmax of its own)."""
    source, target = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    if np.dtype(source["dtype"]) == np.uint8:
        tensor = np.asarray(image, np.uint8)
    else:
        mean = np.float32(meta["normalization"]["mean"][0])
        std = np.float32(meta["normalization"]["std"][0])
        tensor = (image.astype(np.float32) - mean) / std
    interpreter.set_tensor(source["index"], tensor[np.newaxis])
    interpreter.invoke()
    output = interpreter.get_tensor(target["index"]).reshape(-1)
    if np.dtype(target["dtype"]) in (np.int8, np.uint8):
        scale, zero_point = target["quantization"]
        return (output.astype(np.float32) - np.float32(zero_point)) * np.float32(scale)
    return output.astype(np.float32)


def _choose_model(run_dir: Path, meta: dict[str, Any], model: str | None) -> Path:
    named = model or meta.get("model_file")
    if named:
        path = run_dir / named
        if not path.is_file():
            source = "--model" if model else f"{META_FILE}'s model_file"
            raise MissingFileError(f"{path} ({source}) does not exist; run the pipeline's convert stage first.")
        return path
    candidates = sorted(run_dir.glob(f"*{MODEL_SUFFIX}"))
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
    """Smooth random colour fields at the input size; the one whose top-1 score leads most is kept, so a device
    that agrees with the host cannot fail the check on a near-tie."""
    _, height, width, _ = meta["input"]["shape"]
    rng = np.random.default_rng(0)
    interpreter = _host_interpreter(model)
    best, best_margin = None, -np.inf
    for _ in range(_SAMPLE_CANDIDATES):
        coarse = rng.uniform(0, 255, size=(4, 4, 3))
        image = _resize_bilinear(coarse, height, width)
        image = np.clip(np.floor(image + 0.5), 0, 255).astype(np.uint8)
        margin = expected_prediction(model, meta, image, interpreter)["top1_margin"] or 0.0
        if margin > best_margin:
            best, best_margin = image, margin
    return best


def _resize_bilinear(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize at pixel centers (tf.image.resize's convention), in NumPy."""
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
    """Your own photo (PNG/JPEG/BMP/GIF), center-cropped to the model's aspect ratio and resized (bilinear)."""
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
    # The model goes last: a failure while renaming leaves at worst a new test expectation beside an old model,
    # which the instrumented test reports as a mismatch rather than passing.
    for temp_path, target in staged:
        os.replace(temp_path, target)


def _define_flags() -> None:
    from absl import flags

    flags.DEFINE_string("run_dir", None, "Run directory written by python -m pipeline.run.", required=True)
    flags.DEFINE_string("app_dir", str(DEFAULT_APP_DIR), "The Android Studio project to package into.")
    flags.DEFINE_string("model", None, "Model file in the run directory (default: model_meta.json's model_file).")
    flags.DEFINE_string("asset_name", None,
                        "File name in the app's assets (default: <model_name>_<precision>.tflite); the app lists "
                        "every packaged .tflite in its model picker.")
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
        result = package(values.run_dir, values.app_dir, model=values.model, sample_image=values.sample_image,
                         asset_name=values.asset_name)
    except PackagingError as error:
        print(f"export.android: error: {error}".replace("\n", " "), file=sys.stderr)
        sys.exit(EXIT_PACKAGING_ERROR)
    print(result)


if __name__ == "__main__":
    from absl import app

    _define_flags()
    app.run(main)
