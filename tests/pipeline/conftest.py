"""Tiny datasets for the pipeline tests: a few dozen images written into a temp folder, one of them corrupt."""
from __future__ import annotations

import pathlib

import numpy as np
import pytest

import pipeline  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow is imported)

CLASSES = ("red", "green", "blue")
IMAGES_PER_CLASS = 10
TINY_MODEL = "mobilenet_v1"  # the shortest graph in the zoo: the fastest to trace
TINY_WIDTH = 0.25


def write_class_folder(root: pathlib.Path, images_per_class: int = IMAGES_PER_CLASS, seed: int = 0,
                       corrupt: bool = True) -> pathlib.Path:
    """`root/<color>/*.png|jpg`: noisy images dominated by their class's color channel, and one corrupt file."""
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    for channel, name in enumerate(CLASSES):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(images_per_class):
            size = int(rng.integers(24, 48))
            image = rng.integers(0, 90, size=(size, size, 3)).astype(np.uint8)
            image[..., channel] = rng.integers(160, 256, size=(size, size)).astype(np.uint8)
            if index % 2:
                (folder / f"{index}.png").write_bytes(tf.io.encode_png(image).numpy())
            else:
                (folder / f"{index}.jpg").write_bytes(tf.io.encode_jpeg(image).numpy())
    if corrupt:
        (root / CLASSES[0] / "corrupt.jpg").write_bytes(b"\xff\xd8 this is not a JPEG")
    return root


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory) -> pathlib.Path:
    """3 classes x 10 images (PNG and JPEG, 24-47 px) plus one corrupt JPEG."""
    return write_class_folder(tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="session")
def tiny_data(image_folder):
    """The image folder as 32 px DataSplits with batches of 8."""
    from pipeline.data import load_data

    return load_data(str(image_folder), image_size=32, batch_size=8, val_split=0.2, seed=0)
