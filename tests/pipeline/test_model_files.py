"""pipeline.model_files: a model file whose config names code is refused before anything of it runs.

The hostile files hold a Keras `Lambda` layer whose function writes a marker file: tf_keras' HDF5 loader runs it
while rebuilding the model (whatever the file is called), so the marker proves whether code ran.
"""
import io
import json
import shutil
import zipfile

import h5py
import numpy as np
import pytest

import pipeline  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow is imported)
import tf_keras as keras

from pipeline.model_files import ModelFileError, UnsafeModelFileError, load_model_file


def _payload_model(marker):
    """A model whose Lambda layer writes `marker` when the model is rebuilt (as loading does)."""
    inputs = keras.Input((2,))
    outputs = keras.layers.Lambda(
        lambda x, path=str(marker): (__import__("pathlib").Path(path).write_text("ran"), x)[1], name="payload"
    )(inputs)
    model = keras.Model(inputs, outputs)
    marker.unlink(missing_ok=True)  # building it ran the lambda once, here
    return model


def _hdf5_with_payload(tmp_path, name):
    marker = tmp_path / "marker.txt"
    path = tmp_path / name
    _payload_model(marker).save(str(tmp_path / "payload.h5"), save_format="h5")
    marker.unlink(missing_ok=True)
    shutil.move(tmp_path / "payload.h5", path)
    return path, marker


def _dense_model():
    inputs = keras.Input((3,))
    return keras.Model(inputs, keras.layers.Dense(2, name="dense")(inputs))


def test_hdf5_lambda_as_a_teacher_checkpoint_is_refused_and_runs_nothing(tmp_path):
    from pipeline.distill import TeacherError, load_teacher

    path, marker = _hdf5_with_payload(tmp_path, "teacher.h5")
    with pytest.raises(TeacherError, match=r"teacher\.h5: refused to load: it holds a Lambda \(layer 'payload'\)"):
        load_teacher(path)
    assert not marker.exists()


def test_hdf5_lambda_named_model_keras_is_refused_and_runs_nothing(tmp_path):
    from pipeline.train import load_model

    path, marker = _hdf5_with_payload(tmp_path, "model.keras")
    with pytest.raises(UnsafeModelFileError, match="Lambda"):
        load_model(path)
    assert not marker.exists()


def test_replaced_qat_hdf5_with_lambda_is_refused_and_runs_nothing(tmp_path):
    from pipeline.quantize import load_quantization_aware_model

    path, marker = _hdf5_with_payload(tmp_path, "model_qat.h5")
    with pytest.raises(UnsafeModelFileError, match="Lambda"):
        load_quantization_aware_model(path)
    assert not marker.exists()


def test_keras_zip_with_lambda_is_refused(tmp_path):
    marker = tmp_path / "marker.txt"
    _payload_model(marker).save(str(tmp_path / "model.keras"))
    marker.unlink(missing_ok=True)
    with pytest.raises(UnsafeModelFileError, match="Lambda"):
        load_model_file(tmp_path / "model.keras")
    assert not marker.exists()


def test_unknown_class_in_hdf5_is_refused_with_one_clear_line(tmp_path):
    from pipeline.distill import TeacherError, load_teacher

    path = tmp_path / "teacher.h5"
    _dense_model().save(str(path), save_format="h5")
    with h5py.File(path, "r+") as handle:
        handle.attrs["model_config"] = handle.attrs["model_config"].replace('"Dense"', '"NotAKerasLayer"')
    with pytest.raises(TeacherError) as raised:
        load_teacher(path)
    message = str(raised.value)
    assert "\n" not in message
    assert "unknown class 'NotAKerasLayer' (layer 'dense')" in message and "teacher.h5" in message


def test_keras_zip_naming_another_module_is_refused(tmp_path):
    path = tmp_path / "model.keras"
    _dense_model().save(str(path))
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    config = json.loads(members["config.json"])
    config["config"]["layers"][1]["module"] = "subprocess"
    members["config.json"] = json.dumps(config).encode()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    path.write_bytes(buffer.getvalue())
    with pytest.raises(UnsafeModelFileError, match="module 'subprocess'"):
        load_model_file(path)


def test_not_a_model_file(tmp_path):
    (tmp_path / "model.keras").write_bytes(b"not a model")
    with pytest.raises(ModelFileError, match="neither a .keras zip nor HDF5"):
        load_model_file(tmp_path / "model.keras")
    with pytest.raises(ModelFileError, match="no such model file"):
        load_model_file(tmp_path / "missing.keras")


@pytest.mark.parametrize("name, save_format", [("model.keras", "keras"), ("model_qat.h5", "h5")])
def test_a_truncated_model_file_is_one_line(tmp_path, name, save_format):
    path = tmp_path / name
    _dense_model().save(str(path), save_format=save_format)
    path.write_bytes(path.read_bytes()[:600])
    with pytest.raises(ModelFileError) as raised:
        load_model_file(path)
    assert str(raised.value).startswith(f"{path}: ") and "\n" not in str(raised.value)


def test_a_zoo_model_loads_and_the_format_is_read_from_the_content(tmp_path):
    import models
    from pipeline.train import load_model, save_model

    model = models.build("mobilenet_v3_small", input_shape=(32, 32, 3), num_classes=3, width_multiplier=0.25)
    save_model(model, tmp_path / "model.keras")
    shutil.copy(tmp_path / "model.keras", tmp_path / "really_a_zip.h5")
    images = np.random.default_rng(0).uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
    for name in ("model.keras", "really_a_zip.h5"):
        np.testing.assert_array_equal(load_model(tmp_path / name)(images), model(images))


def test_a_quantization_aware_model_loads(tmp_path):
    import models
    from pipeline.quantize import load_quantization_aware_model, quantize_for_training, save_quantization_aware_model

    model = models.build("shufflenet_v2", input_shape=(32, 32, 3), num_classes=3, width_multiplier=0.5)
    quantized = quantize_for_training(model)
    save_quantization_aware_model(quantized, tmp_path / "model_qat.h5")
    images = np.random.default_rng(0).uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
    reloaded = load_quantization_aware_model(tmp_path / "model_qat.h5")
    np.testing.assert_array_equal(reloaded(images, training=False), quantized(images, training=False))


@pytest.mark.parametrize("entry, fragment", [
    ({"class_name": "function", "module": "os", "config": "system"}, "function 'system'"),
    ({"class_name": "function", "module": "builtins", "config": "eval"}, "function 'eval'"),
    ({"class_name": "Popen", "module": "subprocess", "config": {}}, "module 'subprocess'"),
    ({"class_name": "ResidualWrapper", "config": {"residual_fn": ["bytecode"], "residual_fn_type": "lambda"}},
     "ResidualWrapper"),
])
def test_config_entries_that_name_code_are_refused(entry, fragment):
    from pipeline.model_files import check_model_config

    config = {"class_name": "Functional", "config": {"layers": [{"class_name": "Dense", "config": {
        "activation": entry}}]}}
    with pytest.raises(UnsafeModelFileError, match=fragment):
        check_model_config(config, "model.keras")
    check_model_config({"class_name": "Functional", "config": {"layers": [{"class_name": "Dense", "config": {
        "activation": {"class_name": "function", "module": "builtins", "config": "relu"}}}]}}, "model.keras")
