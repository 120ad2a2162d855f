"""Load a Keras model file without running code from it: the one way the pipeline reads `.keras` and `.h5` files.

tf_keras picks its loader by the file's name and hands anything that is not a `.keras` zip to the legacy HDF5
loader, which ignores `safe_mode` and runs the Python bytecode a `Lambda` layer carries. Even the `.keras` loader
with `safe_mode=True` only refuses lambdas: a config may still name any importable module and class. So before
anything is deserialized, the model's config (the zip's `config.json`, or the HDF5 file's `model_config`
attribute, read with h5py) is checked: every object it names must be a Keras built-in class, one of this
project's registered layers, or one of TF-MOT's quantization wrappers, configs and quantizers (QAT models are
HDF5: TF-MOT's `QuantizeLayer` does not reload from `.keras`, see pipeline/quantize.py). `Lambda`, Keras'
TF-op lambdas, the RNN cell wrappers that carry functions, and every unknown class are refused with an
`UnsafeModelFileError` naming the file and the class.

The format is read from the file's first bytes (zip or HDF5 signature), never from its name. The checked bytes
are the loaded bytes: a zip is read into memory once and loaded from a private copy, an HDF5 file is loaded from
the same open h5py handle its config was read from.
"""
from __future__ import annotations

import functools
import inspect
import io
import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Iterator

import tf_keras as keras

ZIP_SIGNATURE = b"PK\x03\x04"
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
# The project's `register_keras_serializable` packages (models/layers.py, pipeline/train.py).
PROJECT_PACKAGES = ("mobile_cnn", "mobile_cnn_pipeline")
# Special markers of Keras' config format that carry data only (a tensor's or array's values, bytes).
DATA_MARKERS = frozenset({"__tensor__", "__numpy__", "__bytes__"})
# Where a config may say a class lives: Keras itself, TF-MOT, or this project's packages.
ALLOWED_MODULE_PREFIXES = ("keras", "tf_keras", "tensorflow_model_optimization", "models", "pipeline")
_KERAS_NAMESPACES = ("layers", "initializers", "regularizers", "constraints", "optimizers", "losses", "metrics")
# Keras classes besides Lambda (and its TF-op variants) whose config may carry Python bytecode: the RNN cell
# wrappers' `dropout_state_filter_visitor` / `residual_fn`, which the HDF5 loader unmarshals and runs.
CODE_CARRYING_CLASSES = frozenset({"DropoutWrapper", "ResidualWrapper"})


class ModelFileError(ValueError):
    """A model file that cannot be loaded: missing, not a Keras model file, or unreadable."""


class UnsafeModelFileError(ModelFileError):
    """A model file whose config names code that loading would run (a `Lambda` layer, an unknown class)."""


def load_model_file(path: str | os.PathLike) -> keras.Model:
    """The Keras model in `path` (a `.keras` zip or HDF5, by content), refusing any file whose config names code."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such model file" + (" (it is a directory)" if path.is_dir() else ""))
    with open(path, "rb") as handle:
        signature = handle.read(len(HDF5_SIGNATURE))
    if signature.startswith(ZIP_SIGNATURE):
        return _load_keras_zip(path)
    if signature == HDF5_SIGNATURE:
        return _load_hdf5(path)
    raise ModelFileError(
        f"{path}: not a Keras model file (neither a .keras zip nor HDF5); give a model saved by this pipeline."
    )


def check_model_config(config: Any, path: str | os.PathLike) -> None:
    """Raise `UnsafeModelFileError` unless every object `config` names is one this module may load."""
    allowed = allowed_class_names()
    for entry in _named_objects(config):
        reason = _refusal(entry, allowed)
        if reason:
            raise UnsafeModelFileError(f"{path}: refused to load: {reason}")


@functools.lru_cache(maxsize=None)
def allowed_class_names() -> frozenset[str]:
    """Keras' public classes (without `Lambda`), the project's registered classes, and TF-MOT's QAT objects."""
    import models  # noqa: F401  (registers the zoo's layers)
    from models import quantization

    names = {"Functional", "Model", "Sequential"}
    for namespace in _KERAS_NAMESPACES:
        module = getattr(keras, namespace)
        names.update(name for name in dir(module) if inspect.isclass(getattr(module, name)))
    if hasattr(keras.optimizers, "schedules"):
        module = keras.optimizers.schedules
        names.update(name for name in dir(module) if inspect.isclass(getattr(module, name)))
    for registered, cls in keras.saving.get_custom_objects().items():
        if registered.split(">", 1)[0] in PROJECT_PACKAGES:
            names.update((registered, cls.__name__))
    for objects in quantization.quantize_scope().custom_objects:  # TF-MOT's wrappers, configs, quantizers + ours
        names.update(objects)
    return frozenset(name for name in names if "lambda" not in name.lower()) - CODE_CARRYING_CLASSES


def _allowed_functions() -> frozenset[str]:
    return frozenset(name for name in dir(keras.activations) if not name.startswith("_")) - {
        "deserialize", "get", "serialize"}


def _named_objects(config: Any) -> Iterator[dict]:
    """Every dict in `config` that names a class or function for the deserializer (has a `class_name`)."""
    stack = [config]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            if "class_name" in value:
                yield value
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)


def _refusal(entry: dict, allowed: frozenset[str]) -> str | None:
    """Why `entry` may not be deserialized, or None."""
    name = entry.get("class_name")
    if not isinstance(name, str):
        return f"a config entry names a class that is not a string: {str(name)[:60]!r}"
    inner = entry.get("config")
    layer = entry.get("name") or (inner.get("name") if isinstance(inner, dict) else None)
    where = f" (layer {layer!r})" if isinstance(layer, str) else ""
    if name in DATA_MARKERS:
        return None
    if "lambda" in name.lower() or name in CODE_CARRYING_CLASSES:
        return (f"it holds a {name}{where}, whose Python code would run on load; rebuild the model "
                "without Lambda layers (models/layers.py has the zoo's layers)")
    module = entry.get("module")
    if name == "function":  # Keras resolves a "builtins" function among its own activations, losses, metrics
        if module in (None, "builtins") or _is_allowed_module(module):
            if isinstance(inner, str) and inner in _allowed_functions():
                return None
        return f"it names the function {str(inner)[:80]!r}{where}; only Keras' built-in activations load"
    if module is not None and not _is_allowed_module(module):
        return f"it names the module {str(module)[:80]!r}{where}; only Keras, TF-MOT and this project's classes load"
    registered = entry.get("registered_name")
    if name in allowed or (isinstance(registered, str) and registered in allowed):
        return None
    return (f"unknown class {name[:80]!r}{where}; only Keras' built-in layers, this project's layers "
            "(models/layers.py) and TF-MOT's quantization wrappers load")


def _is_allowed_module(module: Any) -> bool:
    return isinstance(module, str) and module.split(".", 1)[0] in ALLOWED_MODULE_PREFIXES


def _load_keras_zip(path: Path) -> keras.Model:
    data = path.read_bytes()
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            config = json.loads(archive.read("config.json"))
    except (zipfile.BadZipFile, KeyError, ValueError, UnicodeDecodeError) as error:
        raise ModelFileError(f"{path}: not a readable .keras file ({_first_line(error)})") from None
    if isinstance(config, dict):
        config.pop("compile_config", None)  # compile=False: the loader never reads it
    check_model_config(config, path)
    # tf_keras reads the zip format only from a name ending in .keras: load the checked bytes from a private copy.
    with tempfile.TemporaryDirectory(prefix="model-file-") as directory:
        copy = Path(directory) / "model.keras"
        copy.write_bytes(data)
        return _deserialize(path, lambda: keras.models.load_model(str(copy), compile=False, safe_mode=True))


def _load_hdf5(path: Path) -> keras.Model:
    import h5py

    try:
        handle = h5py.File(path, "r")
    except OSError as error:
        raise ModelFileError(f"{path}: not a readable HDF5 file ({_first_line(error)})") from None
    with handle:
        raw = handle.attrs.get("model_config")
        if raw is None:
            raise ModelFileError(f"{path}: this HDF5 file holds no Keras model config (weights only?)")
        try:
            config = json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else raw)
        except (ValueError, UnicodeDecodeError) as error:
            raise ModelFileError(f"{path}: its model config is not JSON ({_first_line(error)})") from None
        check_model_config(config, path)
        # The HDF5 loader itself, on the open handle: no dispatch by name, and the bytes checked are the bytes read.
        from tf_keras.src.saving.legacy.hdf5_format import load_model_from_hdf5

        return _deserialize(path, lambda: load_model_from_hdf5(handle, compile=False))


def _deserialize(path: Path, load) -> keras.Model:
    from models.quantization import quantize_scope

    try:
        with quantize_scope():  # TF-MOT's classes resolve only inside it; plain models do not mind
            return load()
    except Exception as error:  # a damaged file fails anywhere in Keras, with any exception type
        raise ModelFileError(f"{path}: Keras could not load it ({_first_line(error)})") from None


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return (text.splitlines()[0] if text else type(error).__name__)[:200]
