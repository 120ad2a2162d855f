"""Where the data stage's images come from: scikit-learn's digits, a folder of class sub-folders (with `train/` and
`val/` if present, else a seeded stratified split), or a TensorFlow Datasets name. Every source ends as uint8 RGB
arrays at `image_size` x `image_size` (corrupt files skipped and listed) and its class names.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import tensorflow as tf

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
VALIDATION_FOLDER_NAMES = ("val", "validation", "test")
AUTOTUNE = tf.data.AUTOTUNE


class DataError(ValueError):
    """A dataset the pipeline cannot use; the message says what is wrong and how to fix it, in one line."""


Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def stratified_split(labels: np.ndarray, val_split: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded train/held-out indices with `val_split` of every class held out (at least one image each)."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        held_out = min(len(members) - 1, max(1, round(len(members) * val_split)))
        val.extend(members[:held_out])
        train.extend(members[held_out:])
    return np.sort(np.array(train, dtype=np.int64)), np.sort(np.array(val, dtype=np.int64))


def _resize_uint8(images: tf.Tensor, image_size: int) -> tf.Tensor:
    resized = tf.image.resize(images, [image_size, image_size], antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)


def load_digits(image_size: int, val_split: float, seed: int) -> Arrays:
    """scikit-learn's 1,797 real 8x8 handwritten digits (0..16), scaled to 0..255, upsampled, made 3-channel."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = np.round(digits.images * (255.0 / 16.0)).astype(np.float32)[..., np.newaxis]
    images = _resize_uint8(tf.image.grayscale_to_rgb(tf.constant(pixels)), image_size).numpy()
    labels = digits.target.astype(np.int32)
    train, val = stratified_split(labels, val_split, seed)
    return images[train], labels[train], images[val], labels[val]


def _class_folders(root: Path) -> list[Path]:
    return sorted(path for path in root.iterdir() if path.is_dir() and not path.name.startswith("."))


def _image_files(folder: Path) -> list[Path]:
    return sorted(
        path for path in folder.rglob("*")
        if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")
    )


def _list_folder(root: Path, class_names: list[str] | None = None) -> tuple[list[str], list[Path], list[int]]:
    """(class names, files, labels) of a folder with one sub-folder per class; an empty class, a class name that is
    not one printable line, and (for a training folder) a single class are errors."""
    folders = _class_folders(root)
    if not folders:
        loose = _image_files(root)
        hint = f" (it holds {len(loose)} loose images)" if loose else ""
        raise DataError(
            f"{root} has no class sub-folders{hint}; put each class's images in its own sub-folder, "
            f"e.g. {root}/cat/*.jpg and {root}/dog/*.jpg."
        )
    for folder in folders:
        if not folder.name.isprintable():
            raise DataError(
                f"class folder {str(folder)!r} has a newline or another non-printable character in its name; class "
                f"names become lines of labels.txt and labels in the app: rename the folder."
            )
    names = [folder.name for folder in folders]
    if class_names is None and len(names) < 2:
        raise DataError(
            f"{root} has one class sub-folder ({names[0]!r}); a classifier needs at least two classes: add a "
            f"sub-folder of images for every other class."
        )
    if class_names is not None:
        unknown = sorted(set(names) - set(class_names))
        if unknown:
            raise DataError(
                f"{root} has classes the training folder lacks ({', '.join(unknown[:5])}); "
                f"the held-out folder must use the training folder's class names."
            )
        label_of = {name: index for index, name in enumerate(class_names)}
    else:
        label_of = {name: index for index, name in enumerate(names)}
    files, labels = [], []
    for folder in folders:
        found = _image_files(folder)
        if not found:
            raise DataError(
                f"class folder {folder} holds no images ({', '.join(IMAGE_EXTENSIONS)}); add images or remove "
                f"the folder."
            )
        files.extend(found)
        labels.extend([label_of[folder.name]] * len(found))
    return (class_names or names), files, labels


def _decode_files(files: list[Path], labels: list[int], image_size: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Decode and resize every file with tf.io in one parallel pass; unreadable files are skipped and returned."""
    indices = np.arange(len(files), dtype=np.int64)
    paths = [str(path) for path in files]

    def decode(index, path):
        image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
        return index, _resize_uint8(image, image_size)

    dataset = (
        tf.data.Dataset.from_tensor_slices((indices, paths))
        .map(decode, num_parallel_calls=AUTOTUNE, deterministic=True)
        .ignore_errors()
        .batch(256)
    )
    kept_indices, kept_images = [], []
    for index_batch, image_batch in dataset.as_numpy_iterator():
        kept_indices.append(index_batch)
        kept_images.append(image_batch)
    if kept_indices:
        kept = np.concatenate(kept_indices)
        images = np.concatenate(kept_images)
    else:
        kept = np.zeros([0], np.int64)
        images = np.zeros([0, image_size, image_size, 3], np.uint8)
    skipped = [paths[index] for index in sorted(set(indices.tolist()) - set(kept.tolist()))]
    return images, np.asarray(labels, np.int32)[kept], skipped


def load_folder(root: Path, image_size: int, val_split: float, seed: int) -> tuple[Arrays, list[str], list[str]]:
    if not root.is_dir():
        raise DataError(f"--dataset={root} is not a folder; give a folder with one sub-folder of images per class.")
    train_root = root / "train" if (root / "train").is_dir() else None
    val_root = next((root / name for name in VALIDATION_FOLDER_NAMES if (root / name).is_dir()), None)
    if train_root is not None and val_root is not None:
        class_names, train_files, train_labels = _list_folder(train_root)
        _, val_files, val_labels = _list_folder(val_root, class_names)
        train_images, train_y, train_skipped = _decode_files(train_files, train_labels, image_size)
        val_images, val_y, val_skipped = _decode_files(val_files, val_labels, image_size)
        skipped = train_skipped + val_skipped
    else:
        class_names, files, labels = _list_folder(train_root or root)
        images, y, skipped = _decode_files(files, labels, image_size)
        train, val = stratified_split(y, val_split, seed)
        train_images, train_y, val_images, val_y = images[train], y[train], images[val], y[val]
    missing = sorted(set(range(len(class_names))) - set(train_y.tolist()))
    if missing:
        raise DataError(
            f"no readable training images for class(es) {', '.join(class_names[i] for i in missing[:5])} in "
            f"{root} ({len(skipped)} unreadable file(s) skipped); add readable images."
        )
    if len(val_y) == 0:
        raise DataError(f"{root} leaves no held-out images; add images or raise --val_split.")
    return (train_images, train_y, val_images, val_y), class_names, skipped


def load_tfds(name: str, image_size: int, val_split: float, seed: int) -> tuple[Arrays, list[str]]:
    """A TensorFlow Datasets image-classification dataset; tensorflow-datasets is an optional dependency."""
    try:
        import tensorflow_datasets as tfds
    except ImportError as error:
        raise DataError(
            f"--dataset=tfds:{name} needs tensorflow-datasets, which is not installed: "
            f"pip install tensorflow-datasets (or use --dataset=digits or a folder)."
        ) from error
    try:
        builder = tfds.builder(name)
        builder.download_and_prepare()
    except Exception as error:  # tfds raises many types (network, unknown name, checksum); all end the same way
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise DataError(
            f"could not load tfds:{name} ({first_line[:200]}); check the name, and note that the first load "
            f"needs network access (or a prepared copy in ~/tensorflow_datasets)."
        ) from error
    label_feature = builder.info.features["label"]
    class_names = list(label_feature.names)

    def materialize(split: str) -> tuple[np.ndarray, np.ndarray]:
        dataset = builder.as_dataset(split=split, as_supervised=True).map(
            lambda image, label: (
                _resize_uint8(tf.image.grayscale_to_rgb(image) if image.shape[-1] == 1 else image, image_size),
                tf.cast(label, tf.int32),
            ),
            num_parallel_calls=AUTOTUNE,
        )
        images, labels = [], []
        for image_batch, label_batch in dataset.batch(256).as_numpy_iterator():
            images.append(image_batch)
            labels.append(label_batch)
        return np.concatenate(images), np.concatenate(labels)

    held_out = next((split for split in ("validation", "test") if split in builder.info.splits), None)
    train_images, train_labels = materialize("train")
    if held_out is not None:
        val_images, val_labels = materialize(held_out)
        return (train_images, train_labels, val_images, val_labels), class_names
    train, val = stratified_split(train_labels, val_split, seed)
    return (train_images[train], train_labels[train], train_images[val], train_labels[val]), class_names
