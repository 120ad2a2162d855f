"""The data stage: `load_data(...) -> DataSplits` for `digits`, a folder of class sub-folders, or `tfds:NAME`.

Every source ends as uint8 RGB images of `image_size` x `image_size` held in memory (decoded once, with corrupt
files skipped and counted), then `tf.data` pipelines with augmentation (random crop by pad + crop, and a horizontal
flip where the data allows it) and prefetch; each training epoch's order and augmentation depend only on the seed
and the epoch's number, so a resumed fit sees what an uninterrupted one would have. Models take one input range,
`(pixel - 127.5) / 127.5` for pixels on 0..255, applied here and recorded in `model_meta.json` (DESIGN.md:
preprocessing must agree in training, the representative dataset and the app).
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import tensorflow as tf

from pipeline.config import DIGITS, TFDS_PREFIX

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
VALIDATION_FOLDER_NAMES = ("val", "validation", "test")
AUTOTUNE = tf.data.AUTOTUNE


class DataError(ValueError):
    """A dataset the pipeline cannot use; the message says what is wrong and how to fix it, in one line."""


@dataclasses.dataclass(frozen=True)
class Normalization:
    """model input = (pixel - mean) / std, pixels on 0..255 (so inputs lie in [-1, 1])."""

    mean: float = 127.5
    std: float = 127.5

    def apply(self, images: tf.Tensor | np.ndarray):
        if isinstance(images, np.ndarray):
            return (images.astype(np.float32) - self.mean) / self.std
        return (tf.cast(images, tf.float32) - self.mean) / self.std

    def to_dict(self) -> dict:
        return {"mean": [self.mean] * 3, "std": [self.std] * 3, "pixel_range": [0, 255]}


@dataclasses.dataclass
class DataSplits:
    """A dataset ready for training and evaluation.

    `train` yields the first epoch's augmented, shuffled batches (`training_epochs` any run of epochs; its tf.data
    options, such as the distribution shard policy, carry over) and `val` fixed-order batches of (float32 images
    normalized to [-1, 1] with shape [batch, image_size, image_size, 3], int32 labels). The raw uint8 images stay available for
    evaluation outside Keras (the LiteRT interpreter) and for the converter's representative dataset.
    """

    train: tf.data.Dataset
    val: tf.data.Dataset
    class_names: list[str]
    image_size: int
    batch_size: int
    train_images: np.ndarray  # uint8 [N, H, W, 3]
    train_labels: np.ndarray  # int32 [N]
    val_images: np.ndarray
    val_labels: np.ndarray
    normalization: Normalization
    source: str
    skipped_files: list[str] = dataclasses.field(default_factory=list)
    load_seconds: float = 0.0
    flip: bool = False
    seed: int = 0

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def num_train(self) -> int:
        return len(self.train_labels)

    @property
    def num_val(self) -> int:
        return len(self.val_labels)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.image_size, self.image_size, 3)

    @property
    def steps_per_epoch(self) -> int:
        return -(-self.num_train // self.batch_size)

    def training_epochs(self, first_epoch: int, end_epoch: int) -> tf.data.Dataset:
        """The augmented, shuffled batches of epochs `first_epoch` .. `end_epoch - 1` (`steps_per_epoch` each),
        with `train`'s tf.data options; each epoch's order and augmentation depend on (seed, epoch) only."""
        epochs = _train_pipeline(self.train_images, self.train_labels, self.image_size, self.batch_size, self.flip,
                                 self.seed, self.normalization, first_epoch, end_epoch)
        return epochs.with_options(self.train.options())

    def val_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """The held-out split as (normalized float32 images, int32 labels)."""
        return self.normalization.apply(self.val_images), self.val_labels

    def representative_dataset(self, num_samples: int = 100, seed: int = 0) -> Callable[[], Iterator[list[np.ndarray]]]:
        """The converter's calibration data: `num_samples` un-augmented training images, one per step, normalized."""
        rng = np.random.default_rng(seed)
        indices = rng.permutation(self.num_train)[:num_samples]

        def generate() -> Iterator[list[np.ndarray]]:
            for index in indices:
                yield [self.normalization.apply(self.train_images[index : index + 1])]

        return generate

    def fingerprint(self) -> str:
        """A hash of the images, labels and class names: equal fingerprints mean the same data."""
        digest = hashlib.sha256()
        digest.update("\n".join(self.class_names).encode())
        for array in (self.train_images, self.train_labels, self.val_images, self.val_labels):
            digest.update(np.ascontiguousarray(array).tobytes())
        return digest.hexdigest()[:16]

    def describe(self) -> str:
        skipped = f", skipped {len(self.skipped_files)} unreadable file(s)" if self.skipped_files else ""
        return (
            f"{self.source}: {self.num_classes} classes, {self.num_train} train / {self.num_val} held-out images "
            f"at {self.image_size}x{self.image_size}{skipped}"
        )


def load_data(
    dataset: str,
    image_size: int,
    batch_size: int,
    val_split: float = 0.2,
    seed: int = 0,
    flip: bool | None = None,
) -> DataSplits:
    """Load `digits`, `tfds:NAME` or a folder of class sub-folders (with `train/` and `val/` if present).

    `flip=None` means: on for photos, off for digits (a mirrored 2 is not a 2).
    """
    start = time.monotonic()
    if dataset == DIGITS:
        arrays, class_names, skipped = _load_digits(image_size, val_split, seed), [str(d) for d in range(10)], []
    elif dataset.startswith(TFDS_PREFIX):
        arrays, class_names = _load_tfds(dataset[len(TFDS_PREFIX):], image_size, val_split, seed)
        skipped = []
    else:
        arrays, class_names, skipped = _load_folder(Path(dataset), image_size, val_split, seed)
    flip = dataset != DIGITS if flip is None else flip
    train_images, train_labels, val_images, val_labels = arrays
    normalization = Normalization()
    splits = DataSplits(
        train=_train_pipeline(train_images, train_labels, image_size, batch_size, flip, seed, normalization),
        val=_eval_pipeline(val_images, val_labels, batch_size, normalization),
        class_names=class_names,
        image_size=image_size,
        batch_size=batch_size,
        train_images=train_images,
        train_labels=train_labels,
        val_images=val_images,
        val_labels=val_labels,
        normalization=normalization,
        source=dataset,
        skipped_files=skipped,
        load_seconds=time.monotonic() - start,
        flip=flip,
        seed=seed,
    )
    for path in skipped[:5]:
        log.warning("skipped unreadable image %s", path)
    if len(skipped) > 5:
        log.warning("... and %d more unreadable images", len(skipped) - 5)
    return splits


# --- tf.data pipelines ---------------------------------------------------------------------------------------
def _train_pipeline(images, labels, image_size, batch_size, flip, seed, normalization, first_epoch: int = 0,
                    end_epoch: int = 1) -> tf.data.Dataset:
    """The batches of epochs `first_epoch` .. `end_epoch - 1`, one epoch after the other.

    Each epoch's order and augmentation come from stateless random ops keyed on (seed, epoch) alone, never on how
    many epochs this process iterated before: a fit resumed at epoch k sees what an uninterrupted fit saw there.
    Every epoch is batched on its own (its last batch may be short), so it holds `steps_per_epoch` batches.
    """
    pad = max(2, image_size // 8)
    count = len(labels)
    images, labels = tf.constant(images), tf.constant(labels)
    run_key = tf.constant([seed, 0], tf.int64)

    def epoch_batches(epoch):
        """(augmentation seeds, image indices) of the epoch's batches, in the epoch's order."""
        order_seed, augment_seed = tf.unstack(
            tf.random.experimental.stateless_split(tf.random.experimental.stateless_fold_in(run_key, epoch), 2))
        # A stable argsort of random 64-bit keys: a permutation, the same on every platform.
        keys = tf.random.stateless_uniform([count], seed=order_seed, dtype=tf.int64, minval=None, maxval=None)
        order = tf.argsort(keys, stable=True)
        example_seeds = tf.random.experimental.stateless_split(augment_seed, count)
        return tf.data.Dataset.from_tensor_slices((example_seeds, order)).batch(batch_size)

    def augment_one(example):
        image, example_seed = example
        crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(example_seed, 2))
        image = tf.image.resize_with_crop_or_pad(image, image_size + 2 * pad, image_size + 2 * pad)
        image = tf.image.stateless_random_crop(image, [image_size, image_size, 3], seed=crop_seed)
        if flip:
            image = tf.image.stateless_random_flip_left_right(image, seed=flip_seed)
        return image

    def augment(example_seeds, indices):
        batch = tf.map_fn(augment_one, (tf.gather(images, indices), example_seeds),
                          fn_output_signature=tf.TensorSpec([image_size, image_size, 3], tf.uint8))
        return normalization.apply(batch), tf.gather(labels, indices)

    # Each epoch is batched on its own (index batches), then one parallel map loads and augments every batch.
    return (
        tf.data.Dataset.range(first_epoch, end_epoch)
        .flat_map(epoch_batches)
        .map(augment, num_parallel_calls=AUTOTUNE)
        .prefetch(AUTOTUNE)
    )


def _eval_pipeline(images, labels, batch_size, normalization) -> tf.data.Dataset:
    return (
        tf.data.Dataset.from_tensor_slices((images, labels))
        .cache()
        .batch(batch_size)
        .map(lambda image, label: (normalization.apply(image), label), num_parallel_calls=AUTOTUNE)
        .prefetch(AUTOTUNE)
    )


# --- sources -------------------------------------------------------------------------------------------------
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


def _load_digits(image_size: int, val_split: float, seed: int) -> Arrays:
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


def _load_folder(root: Path, image_size: int, val_split: float, seed: int) -> tuple[Arrays, list[str], list[str]]:
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


def _load_tfds(name: str, image_size: int, val_split: float, seed: int) -> tuple[Arrays, list[str]]:
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
