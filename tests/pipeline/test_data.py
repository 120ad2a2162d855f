"""The data stage: digits, class folders (with a corrupt file), train/val folders, tfds errors, augmentation."""
from __future__ import annotations

import shutil
import sys

import numpy as np
import pytest

from pipeline.data import DataError, load_data, stratified_split
from tests.pipeline.conftest import CLASSES, IMAGES_PER_CLASS, write_class_folder


def test_folder_skips_and_counts_the_corrupt_image(tiny_data):
    assert tiny_data.class_names == sorted(CLASSES)  # labels follow the sorted folder names
    assert len(tiny_data.skipped_files) == 1 and tiny_data.skipped_files[0].endswith("corrupt.jpg")
    assert tiny_data.num_train + tiny_data.num_val == len(CLASSES) * IMAGES_PER_CLASS
    assert set(tiny_data.val_labels.tolist()) == {0, 1, 2}  # stratified: every class held out
    assert tiny_data.train_images.shape[1:] == (32, 32, 3) and tiny_data.train_images.dtype == np.uint8
    assert "skipped 1 unreadable" in tiny_data.describe()


def test_batches_are_normalized_to_minus_one_one(tiny_data):
    for dataset in (tiny_data.train, tiny_data.val):
        images, labels = next(iter(dataset))
        assert images.shape[1:] == (32, 32, 3) and images.dtype.name == "float32"
        assert -1.0 <= float(np.min(images)) and float(np.max(images)) <= 1.0
        assert labels.dtype.name == "int32"
    images, labels = tiny_data.val_arrays()
    np.testing.assert_allclose(images, (tiny_data.val_images.astype(np.float32) - 127.5) / 127.5)
    sample = next(tiny_data.representative_dataset(num_samples=5)())
    assert sample[0].shape == (1, 32, 32, 3) and len(list(tiny_data.representative_dataset(5)())) == 5
    # The color classes survive decoding: the class's channel dominates.
    for image, label in zip(tiny_data.val_images, tiny_data.val_labels):
        assert np.argmax(image.reshape(-1, 3).mean(axis=0)) == CLASSES.index(tiny_data.class_names[label])


def test_same_seed_same_augmented_batches(image_folder):
    first = load_data(str(image_folder), 32, 8, seed=3)
    second = load_data(str(image_folder), 32, 8, seed=3)
    a, b = next(iter(first.train)), next(iter(second.train))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert first.fingerprint() == second.fingerprint()


def test_each_epoch_depends_on_the_seed_and_its_number_only(tiny_data):
    """A fit resumed at epoch k must see what an uninterrupted fit saw there (not the first epoch again)."""
    def batches(dataset):
        return [(images.numpy(), labels.numpy()) for images, labels in dataset]

    three_epochs = batches(tiny_data.training_epochs(0, 3))
    steps = tiny_data.steps_per_epoch
    assert len(three_epochs) == 3 * steps
    assert sum(len(labels) for _, labels in three_epochs[:steps]) == tiny_data.num_train  # an epoch is batched alone
    for epoch in range(3):
        resumed = batches(tiny_data.training_epochs(epoch, epoch + 1))
        for (images, labels), (expected_images, expected_labels) in zip(resumed, three_epochs[epoch * steps:]):
            np.testing.assert_array_equal(images, expected_images)
            np.testing.assert_array_equal(labels, expected_labels)
    np.testing.assert_array_equal(batches(tiny_data.train)[0][0], three_epochs[0][0])
    # Reshuffled and re-augmented every epoch: every image once per epoch, in another order.
    first, second = (np.concatenate([labels for _, labels in three_epochs[e * steps:(e + 1) * steps]]) for e in (0, 1))
    assert sorted(first) == sorted(second) == sorted(tiny_data.train_labels) and not np.array_equal(first, second)
    assert not np.array_equal(three_epochs[0][0], three_epochs[steps][0])


def test_train_and_val_subfolders_are_used_as_given(tmp_path):
    write_class_folder(tmp_path / "train", images_per_class=4, corrupt=False)
    write_class_folder(tmp_path / "val", images_per_class=2, corrupt=True, seed=1)
    data = load_data(str(tmp_path), 32, 4)
    assert (data.num_train, data.num_val, len(data.skipped_files)) == (12, 6, 1)


def test_digits_are_scaled_upsampled_and_three_channel():
    data = load_data("digits", 32, 64, val_split=0.2, seed=0)
    assert data.num_train + data.num_val == 1797 and data.num_classes == 10
    assert abs(data.num_val - 360) < 10
    assert data.train_images.shape[1:] == (32, 32, 3) and data.train_images.max() > 240
    assert np.array_equal(data.train_images[..., 0], data.train_images[..., 2])


def test_empty_folder_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="no class sub-folders"):
        load_data(str(tmp_path), 32, 8)


def test_class_without_images_is_a_clear_error(tmp_path):
    write_class_folder(tmp_path, images_per_class=2, corrupt=False)
    (tmp_path / "empty_class").mkdir()
    with pytest.raises(DataError, match="empty_class holds no images"):
        load_data(str(tmp_path), 32, 8)


def test_one_class_is_a_clear_error(tmp_path):
    write_class_folder(tmp_path, images_per_class=2, corrupt=False)
    for name in CLASSES[1:]:
        shutil.rmtree(tmp_path / name)
    with pytest.raises(DataError) as error:
        load_data(str(tmp_path), 32, 8)
    message = str(error.value)
    assert f"{tmp_path} has one class sub-folder ('{CLASSES[0]}')" in message and "at least two classes" in message
    assert "\n" not in message


@pytest.mark.parametrize("name", ["two\nlines", "tab\there", "bell\a", "delete\x7f"])
def test_a_class_name_that_is_not_one_printable_line_is_a_clear_error(tmp_path, name):
    write_class_folder(tmp_path, images_per_class=2, corrupt=False)
    shutil.copytree(tmp_path / CLASSES[0], tmp_path / name)
    with pytest.raises(DataError) as error:
        load_data(str(tmp_path), 32, 8)
    message = str(error.value)
    assert f"class folder {str(tmp_path / name)!r} has a newline or another non-printable character" in message
    assert "\n" not in message


def test_a_class_name_with_spaces_and_accents_is_fine(tmp_path):
    write_class_folder(tmp_path, images_per_class=2, corrupt=False)
    (tmp_path / CLASSES[0]).rename(tmp_path / "crème brûlée")
    assert "crème brûlée" in load_data(str(tmp_path), 32, 8).class_names


def test_class_whose_only_images_are_corrupt_is_a_clear_error(tmp_path):
    write_class_folder(tmp_path, images_per_class=2, corrupt=False)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "a.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="no readable training images for class.*broken"):
        load_data(str(tmp_path), 32, 8)


def test_tfds_without_the_package_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # import now raises ImportError
    with pytest.raises(DataError, match="pip install tensorflow-datasets"):
        load_data("tfds:mnist", 32, 8)


def test_stratified_split_holds_out_every_class():
    labels = np.array([0] * 10 + [1] * 5 + [2] * 2)
    train, val = stratified_split(labels, 0.2, seed=0)
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(len(labels)))
    assert set(labels[val].tolist()) == {0, 1, 2} and set(labels[train].tolist()) == {0, 1, 2}
