"""export.files: atomic writes leave the old file or the whole new one, and no temporary files."""
import json
import os

import pytest

from export import files


def test_writes_bytes_text_and_json_creating_the_directory(tmp_path):
    target = tmp_path / "run" / "nested"
    files.write_bytes_atomic(target / "model.tflite", b"\x00TFL3")
    files.write_text_atomic(target / "labels.txt", "cat\ndog\n")
    files.write_json_atomic(target / "meta.json", {"labels": ["cat", "dog"], "scale": 0.5})

    assert (target / "model.tflite").read_bytes() == b"\x00TFL3"
    assert (target / "labels.txt").read_text() == "cat\ndog\n"
    assert json.loads((target / "meta.json").read_text()) == {"labels": ["cat", "dog"], "scale": 0.5}
    assert sorted(os.listdir(target)) == ["labels.txt", "meta.json", "model.tflite"]


def test_overwrites_an_existing_file(tmp_path):
    path = tmp_path / "labels.txt"
    files.write_text_atomic(path, "old")
    files.write_text_atomic(str(path), "new")
    assert path.read_text() == "new"


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "model.tflite"
    files.write_bytes_atomic(path, b"old model")

    def interrupted_rename(source, destination):
        raise OSError("disk full")

    monkeypatch.setattr(files.os, "replace", interrupted_rename)
    with pytest.raises(OSError, match="disk full"):
        files.write_bytes_atomic(path, b"new model")
    assert path.read_bytes() == b"old model"
    assert os.listdir(tmp_path) == ["model.tflite"]


def test_json_refuses_nan_which_strict_readers_reject(tmp_path):
    with pytest.raises(ValueError):
        files.write_json_atomic(tmp_path / "metrics.json", {"accuracy": float("nan")})
    assert not list(tmp_path.iterdir())


@pytest.fixture
def umask():
    """Set the process umask for one test, and put the old one back."""
    previous = os.umask(0o022)
    yield lambda value: os.umask(value)
    os.umask(previous)


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_files_get_the_mode_the_umask_gives(tmp_path, umask, mask, mode):
    umask(mask)
    files.write_bytes_atomic(tmp_path / "model.tflite", b"\x00TFL3")
    files.write_json_atomic(tmp_path / "meta.json", {})
    assert files.new_file_mode() == mode
    for name in ("model.tflite", "meta.json"):
        assert (tmp_path / name).stat().st_mode & 0o777 == mode
