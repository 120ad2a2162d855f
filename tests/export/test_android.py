"""export.android: only a metadata-bearing model the client can take goes into the app; CLI errors are one line."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter

import tiny_tflite_models as tiny
from export.metadata import write_classifier_metadata
from png_decoding import decode_png
from export import android
from export.android import (
    MissingFileError,
    MissingMetadataError,
    PackagingError,
    PackagingMismatchError,
    package,
    png_bytes,
)
from export.evaluate import TFLiteClassifier
from export.meta import MetaMismatchError, meta_for_tflite, write_meta

REPO = Path(__file__).resolve().parents[2]
LABELS = ["tench", "church", "golf ball", "parachute"]
NORMALIZATION = {"mean": [127.5] * 3, "std": [127.5] * 3, "pixel_range": [0, 255]}
MAIN_ASSETS = Path("app/src/main/assets")
TEST_ASSETS = Path("app/src/androidTest/assets")


def with_metadata(model: bytes) -> bytes:
    """The model with the TFLite Model Metadata the pipeline's metadata stage writes."""
    return write_classifier_metadata(model, name="tiny", labels=LABELS, mean=127.5, std=127.5)


def make_app(tmp_path: Path) -> Path:
    """A stand-in for android_demo/: packaging needs only its manifest and writes the asset folders itself."""
    app = tmp_path / "android_demo"
    (app / "app/src/main").mkdir(parents=True)
    (app / "app/src/main/AndroidManifest.xml").write_text("<manifest/>\n")
    return app


def make_run(tmp_path: Path, quantization: str = "int8", io_dtype: str = "uint8", metadata: bool = True,
             model_file: str | None = "model_int8.tflite", normalization=NORMALIZATION, **meta_extra) -> Path:
    """A run directory as pipeline.run leaves it: float32 model, the quantized app model, model_meta.json."""
    run = tmp_path / "run"
    run.mkdir()
    stamp = with_metadata if metadata else (lambda model: model)
    (run / "model_float32.tflite").write_bytes(stamp(tiny.converted("plain", "none")))
    shipped = run / "model_float32.tflite"
    if quantization != "none":
        shipped = run / f"model_{quantization}.tflite"
        shipped.write_bytes(stamp(tiny.converted("plain", quantization, io_dtype, pixel_range=(-1.0, 1.0))))
    extra = dict(meta_extra)
    if model_file:
        extra["model_file"] = model_file
    write_meta(run / "model_meta.json", meta_for_tflite(shipped, LABELS, normalization, model_name="tiny", **extra))
    (run / "labels.txt").write_text("\n".join(LABELS) + "\n")
    return run


def edit_meta(run: Path, change) -> None:
    meta = json.loads((run / "model_meta.json").read_text())
    change(meta)
    (run / "model_meta.json").write_text(json.dumps(meta))


def snapshot(app: Path) -> dict[str, bytes]:
    return {str(p.relative_to(app)): p.read_bytes() for p in sorted(app.rglob("*")) if p.is_file()}


def test_packages_the_run_s_app_model_and_nothing_else(tmp_path):
    run, app = make_run(tmp_path), make_app(tmp_path)
    result = package(run, app)

    assets = app / MAIN_ASSETS
    assert sorted(p.name for p in assets.iterdir()) == ["tiny_int8.tflite"]  # no labels.txt, no model_meta.json
    assert (assets / "tiny_int8.tflite").read_bytes() == (run / "model_int8.tflite").read_bytes()
    assert result.model_source == run / "model_int8.tflite" and result.model_asset == assets / "tiny_int8.tflite"
    assert result.input_shape == (1, 32, 32, 3) and result.input_dtype == "uint8" and result.num_classes == 4
    assert "model_int8.tflite" in str(result) and json.dumps(result.to_dict())
    assert not [p for p in app.rglob("*.tmp")]


def test_a_second_model_goes_beside_the_first_for_the_app_s_model_picker(tmp_path):
    run, app = make_run(tmp_path), make_app(tmp_path)
    package(run, app)
    assert package(run, app, model="model_float32.tflite").input_dtype == "float32"  # the meta describes int8
    package(run, app, asset_name="my-model.v2.tflite")
    names = sorted(p.name for p in (app / MAIN_ASSETS).iterdir())
    assert names == ["my-model.v2.tflite", "tiny_float32.tflite", "tiny_int8.tflite"]
    expected = json.loads((app / TEST_ASSETS / "sample_expected.json").read_text())
    assert expected["model_asset"] == "my-model.v2.tflite"  # the expectation follows the last packaged model


@pytest.mark.parametrize("name", ["../escape.tflite", "model.bin", ".hidden.tflite", "a b.tflite"])
def test_bad_asset_names_are_refused(tmp_path, name):
    run, app = make_run(tmp_path), make_app(tmp_path)
    with pytest.raises(PackagingError, match="--asset_name"):
        package(run, app, asset_name=name)
    assert not (app / MAIN_ASSETS).exists()


def test_uint8_expectation_is_the_host_interpreter_on_raw_pixels(tmp_path):
    run, app = make_run(tmp_path), make_app(tmp_path)
    result = package(run, app)

    image = decode_png((app / TEST_ASSETS / "sample_image.png").read_bytes())
    assert image.shape == (32, 32, 3)  # the model's input size: MediaPipe's resize is the identity
    expected = json.loads((app / TEST_ASSETS / "sample_expected.json").read_text())
    interpreter = Interpreter(model_content=(run / "model_int8.tflite").read_bytes(), num_threads=1)
    interpreter.allocate_tensors()
    source, target = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    assert source["dtype"] == np.uint8
    interpreter.set_tensor(source["index"], image[np.newaxis])  # what MediaPipe feeds a uint8 input: the pixels
    interpreter.invoke()
    scale, zero_point = target["quantization"]
    scores = (interpreter.get_tensor(target["index"])[0].astype(np.float32) - zero_point) * scale
    np.testing.assert_allclose(expected["scores"], scores, rtol=0, atol=1e-6)
    assert expected["top1_index"] == int(np.argmax(scores))
    assert expected["top1_label"] == LABELS[expected["top1_index"]] == result.expected_top1_label
    assert expected["top1_score"] == pytest.approx(float(np.max(scores)))
    assert expected["image"] == "sample_image.png" and expected["model_asset"] == "tiny_int8.tflite"
    assert expected["score_tolerance"] == pytest.approx(2 * scale)  # two output steps: device rounding may differ
    assert expected["top1_margin"] > 0


def test_float_expectation_is_normalized_as_the_metadata_says_and_a_user_photo(tmp_path):
    run, app = make_run(tmp_path, quantization="none", model_file="model_float32.tflite"), make_app(tmp_path)
    photo = tmp_path / "photo.png"
    photo.write_bytes(png_bytes(np.random.default_rng(5).integers(0, 256, (48, 64, 3), dtype=np.uint8)))
    result = package(run, app, sample_image=photo)
    assert result.input_dtype == "float32" and result.model_asset.name == "tiny_float32.tflite"
    image = decode_png(result.sample_image.read_bytes())
    assert image.shape == (32, 32, 3)
    expected = json.loads(result.sample_expected.read_text())
    logits = TFLiteClassifier(run / "model_float32.tflite").logits(((image - 127.5) / 127.5)[np.newaxis])[0]
    np.testing.assert_allclose(expected["scores"], logits, rtol=0, atol=1e-5)
    assert expected["score_tolerance"] == pytest.approx(1e-3 * max(1.0, max(abs(v) for v in expected["scores"])))


def test_without_model_file_the_model_matching_the_meta_is_chosen(tmp_path):
    run, app = make_run(tmp_path, model_file=None), make_app(tmp_path)
    assert package(run, app).model_source.name == "model_int8.tflite"


def test_without_model_file_float16_is_preferred_over_float32_with_the_same_io(tmp_path):
    run, app = make_run(tmp_path, quantization="none", model_file=None), make_app(tmp_path)
    # A float16 model has float32 input and output like the float32 one; a copy stands in for it here.
    (run / "model_float16.tflite").write_bytes((run / "model_float32.tflite").read_bytes())
    assert package(run, app).model_source.name == "model_float16.tflite"
    assert package(run, app, model="model_float32.tflite").model_source.name == "model_float32.tflite"


def _expect_refusal(run, app, error_type, *fragments):
    before = snapshot(app)
    with pytest.raises(error_type) as caught:
        package(run, app)
    message = str(caught.value)
    for fragment in fragments:
        assert fragment in message, message
    assert "\n" not in message
    assert snapshot(app) == before, "a refused packaging must not touch the app"
    return caught.value


def test_a_model_without_metadata_is_refused(tmp_path):
    run, app = make_run(tmp_path, metadata=False), make_app(tmp_path)
    _expect_refusal(run, app, MissingMetadataError, "model_int8.tflite", "no TFLite Model Metadata")


def test_an_int8_input_model_is_refused_as_the_client_would(tmp_path):
    run, app = make_run(tmp_path, io_dtype="int8"), make_app(tmp_path)
    error = _expect_refusal(run, app, PackagingMismatchError,
                            "input dtype int8: MediaPipe's ImageClassifier takes uint8 or float32")
    assert isinstance(error, MetaMismatchError) and error.mismatches


def test_per_channel_normalization_is_refused_for_a_float_model(tmp_path):
    per_channel = {"mean": [123.7, 116.3, 103.5], "std": [58.4, 57.1, 57.4]}
    run = make_run(tmp_path, quantization="none", model_file="model_float32.tflite", normalization=per_channel)
    _expect_refusal(run, make_app(tmp_path), PackagingMismatchError, "one mean and std for all three channels")


def test_a_meta_with_another_pixel_range_is_refused(tmp_path):
    run, app = make_run(tmp_path), make_app(tmp_path)
    edit_meta(run, lambda meta: meta["normalization"].update(pixel_range=[0, 1]))
    _expect_refusal(run, app, PackagingMismatchError, "pixel_range [0, 1]")


@pytest.mark.parametrize("change, fragment", [
    (lambda meta: meta["labels"].append("extra"), "labels: meta has 5, the model outputs 4 classes"),
    (lambda meta: meta["input"].update(shape=[1, 64, 64, 3]), "input shape: meta says [1, 64, 64, 3]"),
    (lambda meta: meta["output"]["quantization"].update(zero_point=99), "output quantization zero_point"),
])
def test_a_meta_that_does_not_describe_the_model_is_refused(tmp_path, change, fragment):
    run, app = make_run(tmp_path), make_app(tmp_path)
    package(run, app)  # a complete older app is in place; the refused run below must leave it as it is
    edit_meta(run, change)
    _expect_refusal(run, app, PackagingMismatchError, fragment)


@pytest.mark.parametrize("missing", ["model_meta.json", "model_int8.tflite"])
def test_missing_run_files(tmp_path, missing):
    run, app = make_run(tmp_path), make_app(tmp_path)
    (run / missing).unlink()
    with pytest.raises(MissingFileError, match=missing):
        package(run, app)
    assert not (app / MAIN_ASSETS).exists()


def test_labels_txt_is_no_longer_needed(tmp_path):
    run, app = make_run(tmp_path), make_app(tmp_path)
    (run / "labels.txt").unlink()  # the labels travel inside the model's metadata
    assert package(run, app).num_classes == 4


def test_missing_run_dir_wrong_app_dir_and_invalid_meta(tmp_path):
    app = make_app(tmp_path)
    with pytest.raises(MissingFileError, match="Run directory"):
        package(tmp_path / "nowhere", app)
    run = make_run(tmp_path)
    with pytest.raises(MissingFileError, match="not the Android demo project"):
        package(run, tmp_path / "run")
    (run / "model_meta.json").write_text("{not json")
    with pytest.raises(PackagingError, match="not valid JSON"):
        package(run, app)


def test_interrupted_staging_leaves_the_app_untouched(tmp_path, monkeypatch):
    run, app = make_run(tmp_path), make_app(tmp_path)
    package(run, app)
    before = snapshot(app)
    calls = []

    def failing_fsync(fd):
        calls.append(fd)
        if len(calls) == 3:
            raise OSError("disk full")

    monkeypatch.setattr(android.os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="disk full"):
        package(run, app, asset_name="other.tflite")
    assert snapshot(app) == before
    assert not [p for p in app.rglob("*.tmp")]


def test_assets_get_the_mode_the_umask_gives(tmp_path):
    run, app = make_run(tmp_path), make_app(tmp_path)
    previous = os.umask(0o022)
    try:
        result = package(run, app)
    finally:
        os.umask(previous)
    for asset in (result.model_asset, result.sample_image):
        assert asset.stat().st_mode & 0o777 == 0o644, asset


def test_png_round_trip_and_resize_conventions():
    image = np.random.default_rng(1).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    np.testing.assert_array_equal(decode_png(png_bytes(image)), image)
    # Pixel centers, as tf.image.resize: halving averages neighbours and the same size copies.
    row = np.array([[[0], [100], [200], [250]]], np.float32)
    np.testing.assert_allclose(android._resize_bilinear(row, 1, 2)[0, :, 0], [50, 225])
    np.testing.assert_allclose(android._resize_bilinear(row, 1, 4), row)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "export.android", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})


def test_cli_packages_and_exits_2_with_one_line_on_a_model_without_metadata(tmp_path):
    run, app = make_run(tmp_path), make_app(tmp_path)
    done = _cli("--run_dir", str(run), "--app_dir", str(app), "--asset_name", "cli.tflite")
    assert done.returncode == 0, done.stderr
    assert "packaged model_int8.tflite" in done.stdout and (app / MAIN_ASSETS / "cli.tflite").is_file()

    (run / "model_int8.tflite").write_bytes(tiny.converted("plain", "int8", "uint8", pixel_range=(-1.0, 1.0)))  # no metadata
    failed = _cli("--run_dir", str(run), "--app_dir", str(app))
    assert failed.returncode == 2
    error_lines = [line for line in failed.stderr.splitlines() if line.strip()]
    assert len(error_lines) == 1 and error_lines[0].startswith("export.android: error: "), failed.stderr
    assert "no TFLite Model Metadata" in error_lines[0]
    assert "Traceback" not in failed.stderr

    missing = _cli("--run_dir", str(tmp_path / "nowhere"), "--app_dir", str(app))
    assert missing.returncode == 2 and "Traceback" not in missing.stderr


@pytest.mark.parametrize("broken", [b"", b"not a model", None])
def test_a_broken_model_is_a_packaging_error(tmp_path, broken):
    run, app = make_run(tmp_path), make_app(tmp_path)
    model = run / "model_int8.tflite"
    model.write_bytes(model.read_bytes()[:200] if broken is None else broken)  # None: truncated
    with pytest.raises(PackagingError, match=r"model_int8\.tflite is not a TFLite model LiteRT can load"):
        package(run, app)
    assert not (app / MAIN_ASSETS).exists()


def test_cli_a_broken_model_is_one_line_and_exit_2(tmp_path):
    run, app = make_run(tmp_path), make_app(tmp_path)
    (run / "model_int8.tflite").write_bytes(b"not a model")
    failed = _cli("--run_dir", str(run), "--app_dir", str(app))
    assert failed.returncode == 2, failed.stderr
    error_lines = [line for line in failed.stderr.splitlines() if line.strip()]
    assert len(error_lines) == 1 and "is not a TFLite model LiteRT can load" in error_lines[0], failed.stderr
