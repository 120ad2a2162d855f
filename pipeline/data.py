"""The data stage: `load_data(...) -> DataSplits` for `digits`, a folder of class sub-folders, or `tfds:NAME`.

Every source ends as uint8 RGB images of `image_size` x `image_size` held in memory (decoded once, with corrupt
files skipped and counted), then `tf.data` pipelines with augmentation (random crop by pad + crop, and a horizontal
flip where the data allows it) and prefetch; each training epoch's order and augmentation depend only on the seed
and the epoch's number, so a resumed fit sees what an uninterrupted one would have. Models take one input range,
`(pixel - 127.5) / 127.5` for pixels on 0..255, applied here and recorded in `model_meta.json` (preprocessing
must agree in training, the representative dataset, the metadata and the app).
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
from pipeline.data_sources import DataError, load_digits, load_folder, load_tfds, stratified_split  # noqa: F401

log = logging.getLogger(__name__)

AUTOTUNE = tf.data.AUTOTUNE


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
        arrays, class_names, skipped = load_digits(image_size, val_split, seed), [str(d) for d in range(10)], []
    elif dataset.startswith(TFDS_PREFIX):
        arrays, class_names = load_tfds(dataset[len(TFDS_PREFIX):], image_size, val_split, seed)
        skipped = []
    else:
        arrays, class_names, skipped = load_folder(Path(dataset), image_size, val_split, seed)
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
