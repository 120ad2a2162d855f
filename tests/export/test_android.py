"""export.android: a run's model, labels and meta go into the app only when they agree; the CLI's errors are one line."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tiny_tflite_models as tiny
from png_decoding import decode_png
from export import android
from export.android import (
    MissingFileError,
    PackagingError,
    PackagingMismatchError,
    package,
    parse_labels,
    png_bytes,
)
from export.evaluate import TFLiteClassifier
from export.meta import MetaMismatchError, meta_for_tflite, write_meta

REPO = Path(__file__).resolve().parents[2]
LABELS = ["tench", "church", "golf ball", "parachute"]
NORMALIZATION = {"mean": [127.5] * 3, "std": [127.5] * 3, "pixel_range": [0, 255]}
MAIN_ASSETS = Path("app/src/main/assets")
TEST_ASSETS = Path("app/src/androidTest/assets")


def make_app(tmp_path: Path) -> Path:
    """A stand-in for android_demo/: packaging needs only its manifest and writes the asset folders itself."""
    app = tmp_path / "android_demo"
    (app / "app/src/main").mkdir(parents=True)
    (app / "app/src/main/AndroidManifest.xml").write_text("<manifest/>\n")
    return app


def make_run(tmp_path: Path, quantization: str = "int8", io_dtype: str = "int8", labels=LABELS,
             model_file: str | None = "model_int8.tflite", **meta_extra) -> Path:
    """A run directory as pipeline.run leaves it: float32 model, the quantized one, labels.txt, model_meta.json."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "model_float32.tflite").write_bytes(tiny.converted("plain", "none"))
    shipped = run / "model_float32.tflite"
    if quantization != "none":
        shipped = run / f"model_{quantization}.tflite"
        shipped.write_bytes(tiny.converted("plain", quantization, io_dtype))
    extra = dict(meta_extra)
    if model_file:
        extra["model_file"] = model_file
    write_meta(run / "model_meta.json", meta_for_tflite(shipped, labels, NORMALIZATION, model_name="tiny", **extra))
    (run / "labels.txt").write_text("\n".join(labels) + "\n")
    return run


def edit_meta(run: Path, change) -> None:
    meta = json.loads((run / "model_meta.json").read_text())
    change(meta)
    (run / "model_meta.json").write_text(json.dumps(meta))


def snapshot(app: Path) -> dict[str, bytes]:
    return {str(p.relative_to(app)): p.read_bytes() for p in sorted(app.rglob("*")) if p.is_file()}


def test_packages_the_meta_s_model_labels_and_meta(tmp_path):
    run, app = make_run(tmp_path), make_app(tmp_path)
    result = package(run, app)

    assets = app / MAIN_ASSETS
    assert (assets / "model.tflite").read_bytes() == (run / "model_int8.tflite").read_bytes()
    assert (assets / "labels.txt").read_bytes() == (run / "labels.txt").read_bytes()
    assert (assets / "model_meta.json").read_bytes() == (run / "model_meta.json").read_bytes()
    assert result.model_source == run / "model_int8.tflite"
    assert result.model_asset == assets / "model.tflite"
    assert result.input_shape == (1, 32, 32, 3) and result.input_dtype == "int8" and result.num_classes == 4
    assert "model_int8.tflite" in str(result) and json.dumps(result.to_dict())
    assert not [p for p in app.rglob("*.tmp")]


def test_sample_expectation_is_the_host_interpreters_answer_for_the_bundled_pixels(tmp_path):
    run, app = make_run(tmp_path), make_app(tmp_path)
    result = package(run, app)

    image = decode_png((app / TEST_ASSETS / "sample_image.png").read_bytes())
    assert image.shape == (32, 32, 3)  # the model's input size: the app's crop and resize are the identity
    expected = json.loads((app / TEST_ASSETS / "sample_expected.json").read_text())
    normalized = (image.astype(np.float32) - 127.5) / 127.5
    logits = TFLiteClassifier(tiny.converted("plain", "int8"), num_threads=1).logits(normalized[np.newaxis])[0]
    np.testing.assert_allclose(expected["logits"], logits, rtol=0, atol=1e-6)
    assert expected["top1_index"] == int(np.argmax(logits))
    assert expected["top1_label"] == LABELS[expected["top1_index"]] == result.expected_top1_label
    assert expected["image"] == "sample_image.png" and expected["model_file"] == "model_int8.tflite"
    # Two output quantization steps: the device's int8 kernels may round a requantization differently.
    meta = json.loads((run / "model_meta.json").read_text())
    assert expected["logit_tolerance"] == pytest.approx(2 * meta["output"]["quantization"]["scale"])
    assert expected["top1_margin"] > 0


def test_float_model_and_a_user_photo(tmp_path):
    run, app = make_run(tmp_path, quantization="none", model_file="model_float32.tflite"), make_app(tmp_path)
    photo = tmp_path / "photo.png"
    rng = np.random.default_rng(5)
    photo.write_bytes(png_bytes(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)))
    result = package(run, app, sample_image=photo)
    assert result.input_dtype == "float32"
    assert decode_png(result.sample_image.read_bytes()).shape == (32, 32, 3)
    expected = json.loads(result.sample_expected.read_text())
    assert expected["logit_tolerance"] == pytest.approx(1e-3 * max(1.0, max(abs(v) for v in expected["logits"])))


def test_without_model_file_the_model_matching_the_meta_is_chosen(tmp_path):
    run, app = make_run(tmp_path, model_file=None), make_app(tmp_path)
    assert package(run, app).model_source.name == "model_int8.tflite"


def test_without_model_file_float16_is_preferred_over_float32_with_the_same_io(tmp_path):
    run, app = make_run(tmp_path, quantization="none", model_file=None), make_app(tmp_path)
    # A float16 model has float32 input and output like the float32 one; a copy stands in for it here.
    (run / "model_float16.tflite").write_bytes((run / "model_float32.tflite").read_bytes())
    assert package(run, app).model_source.name == "model_float16.tflite"
    assert package(run, app, model="model_float32.tflite").model_source.name == "model_float32.tflite"


def _expect_mismatch(run, app, *fragments):
    before = snapshot(app)
    with pytest.raises(PackagingMismatchError) as caught:
        package(run, app)
    message = str(caught.value)
    for fragment in fragments:
        assert fragment in message, message
    assert "\n" not in message
    assert isinstance(caught.value, MetaMismatchError) and caught.value.mismatches
    assert snapshot(app) == before, "a failed packaging must not touch the app"
    return caught.value


def test_label_count_mismatch(tmp_path):
    run, app = make_run(tmp_path), make_app(tmp_path)
    package(run, app)  # a complete older app is in place; the failed run below must leave it as it is
    (run / "labels.txt").write_text("tench\nchurch\ngolf ball\n")
    _expect_mismatch(run, app, "labels.txt: 3 labels, the model outputs 4 classes")


def test_labels_txt_must_equal_the_meta_labels(tmp_path):
    run, app = make_run(tmp_path), make_app(tmp_path)
    (run / "labels.txt").write_text("tench\nchurch\nparachute\ngolf ball\n")
    _expect_mismatch(run, app, "labels.txt differs from model_meta.json's labels at line 3")


def test_meta_label_count_mismatch(tmp_path):
    run, app = make_run(tmp_path), make_app(tmp_path)
    edit_meta(run, lambda meta: meta["labels"].append("extra"))
    _expect_mismatch(run, app, "labels: meta has 5, the model outputs 4 classes")


def test_shape_mismatch(tmp_path):
    run, app = make_run(tmp_path), make_app(tmp_path)
    edit_meta(run, lambda meta: meta["input"].update(shape=[1, 64, 64, 3]))
    _expect_mismatch(run, app, "input shape: meta says [1, 64, 64, 3], model has [1, 32, 32, 3]")


def test_dtype_mismatch(tmp_path):
    run, app = make_run(tmp_path, model_file="model_float32.tflite"), make_app(tmp_path)  # an int8 meta
    error = _expect_mismatch(run, app, "input dtype: meta says int8, model has float32",
                             "output dtype: meta says int8, model has float32")
    assert any("quantization" in problem for problem in error.mismatches)


def test_quantization_mismatch(tmp_path):
    run, app = make_run(tmp_path), make_app(tmp_path)

    def change(meta):
        meta["input"]["quantization"]["scale"] *= 2
        meta["output"]["quantization"]["zero_point"] += 1

    edit_meta(run, change)
    _expect_mismatch(run, app, "input quantization scale", "output quantization zero_point")


def test_uint8_meta_on_int8_model(tmp_path):
    run, app = make_run(tmp_path), make_app(tmp_path)
    (run / "model_int8.tflite").write_bytes(tiny.converted("plain", "int8", "uint8"))
    _expect_mismatch(run, app, "input dtype: meta says int8, model has uint8")


def test_a_meta_the_app_cannot_feed_is_refused(tmp_path):
    run, app = make_run(tmp_path), make_app(tmp_path)
    edit_meta(run, lambda meta: meta["normalization"].update(pixel_range=[0, 1]))
    _expect_mismatch(run, app, "pixel_range [0, 1]")


@pytest.mark.parametrize("missing", ["labels.txt", "model_meta.json", "model_int8.tflite"])
def test_missing_run_files(tmp_path, missing):
    run, app = make_run(tmp_path), make_app(tmp_path)
    (run / missing).unlink()
    with pytest.raises(MissingFileError, match=missing):
        package(run, app)
    assert not (app / MAIN_ASSETS).exists()


def test_missing_run_dir_and_wrong_app_dir(tmp_path):
    app = make_app(tmp_path)
    with pytest.raises(MissingFileError, match="Run directory"):
        package(tmp_path / "nowhere", app)
    run = make_run(tmp_path)
    with pytest.raises(MissingFileError, match="not the Android demo project"):
        package(run, tmp_path / "run")


def test_invalid_meta_is_a_packaging_error(tmp_path):
    run, app = make_run(tmp_path), make_app(tmp_path)
    (run / "model_meta.json").write_text("{not json")
    with pytest.raises(PackagingError, match="not valid JSON"):
        package(run, app)


def test_interrupted_staging_leaves_the_app_untouched(tmp_path, monkeypatch):
    run, app = make_run(tmp_path), make_app(tmp_path)
    package(run, app)
    before = snapshot(app)
    (run / "labels.txt").write_text("\n".join(reversed(LABELS)) + "\n")
    edit_meta(run, lambda meta: meta.update(labels=list(reversed(LABELS))))
    calls = []

    def failing_fsync(fd):
        calls.append(fd)
        if len(calls) == 4:
            raise OSError("disk full")

    monkeypatch.setattr(android.os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="disk full"):
        package(run, app)
    assert snapshot(app) == before
    assert not [p for p in app.rglob("*.tmp")]


def test_assets_get_the_mode_the_umask_gives(tmp_path):
    run, app = make_run(tmp_path), make_app(tmp_path)
    previous = os.umask(0o022)
    try:
        result = package(run, app)
    finally:
        os.umask(previous)
    for asset in (result.model_asset, result.labels_asset, result.meta_asset, result.sample_image):
        assert asset.stat().st_mode & 0o777 == 0o644, asset


def test_labels_parse_like_the_app():
    assert parse_labels("tench\r\nchurch\n\ngolf ball\n\n") == ["tench", "church", "", "golf ball"]
    assert parse_labels("") == []


def test_png_round_trip_and_resize_conventions():
    image = np.random.default_rng(1).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    np.testing.assert_array_equal(decode_png(png_bytes(image)), image)
    # Same numbers as the app's ImageOpsTest: pixel centers, so halving averages neighbours and same size copies.
    row = np.array([[[0], [100], [200], [250]]], np.float32)
    np.testing.assert_allclose(android._resize_bilinear(row, 1, 2)[0, :, 0], [50, 225])
    np.testing.assert_allclose(android._resize_bilinear(row, 1, 4), row)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "export.android", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})


def test_cli_packages_and_exits_2_with_one_line_on_a_mismatch(tmp_path):
    run, app = make_run(tmp_path), make_app(tmp_path)
    done = _cli("--run_dir", str(run), "--app_dir", str(app))
    assert done.returncode == 0, done.stderr
    assert "packaged model_int8.tflite" in done.stdout

    (run / "labels.txt").write_text("only one label\n")
    failed = _cli("--run_dir", str(run), "--app_dir", str(app))
    assert failed.returncode == 2
    error_lines = [line for line in failed.stderr.splitlines() if line.strip()]
    assert len(error_lines) == 1 and error_lines[0].startswith("export.android: error: "), failed.stderr
    assert "labels.txt: 1 labels, the model outputs 4 classes" in error_lines[0]
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
