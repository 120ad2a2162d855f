"""The train stage on a tiny network: fit, checkpoints and logs, resume after an interruption, determinism.

The exact-resume test trains in subprocesses (this file run as a script), one of them killed with SIGKILL in the
middle of an epoch: a kill inside the pytest process would end the tests.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from pipeline import train as train_module
from pipeline.train import (
    TrainSettings,
    batch_norm_momentum_for,
    build_network,
    load_model,
    make_optimizer,
    read_history,
    resumed_epoch,
    save_model,
    sparse_crossentropy,
    train,
)
from pipeline.workflow import seed_everything
from tests.pipeline.conftest import TINY_MODEL, TINY_WIDTH, write_class_folder

REPO = Path(__file__).resolve().parents[2]
SUBPROCESS_TIMEOUT_S = 300
RESUME_EPOCHS = 4
KILLED_IN_EPOCH = 2  # 0-based: after two batches of the third epoch, with epochs 0 and 1 backed up

SETTINGS = TrainSettings(epochs=1, learning_rate=2e-3, optimizer="adam", weight_decay=1e-2, label_smoothing=0.1,
                         seed=0, verbose=0)


def tiny_network(data, seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    return build_network(TINY_MODEL, data, TINY_WIDTH, bn_momentum=0.9)


class StopAfterEpoch(keras.callbacks.Callback):
    """Simulates a kill: raises at the end of epoch `epoch` (0-based), after the backup was written."""

    def __init__(self, epoch: int):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            raise KeyboardInterrupt("simulated kill")


class RecordEpochs(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.epochs = []

    def on_epoch_begin(self, epoch, logs=None):
        self.epochs.append(epoch)


def test_batch_norm_momentum_follows_the_number_of_steps():
    assert batch_norm_momentum_for(100) == 0.9  # docs/design.md, "Training defaults": short runs need a short window
    assert batch_norm_momentum_for(690) == pytest.approx(1 - 1 / 23, abs=1e-4)
    assert batch_norm_momentum_for(10**6) == 0.99


def test_label_smoothing_loss_matches_keras_categorical_crossentropy():
    logits = tf.constant([[2.0, -1.0, 0.5], [0.1, 0.2, 3.0]])
    labels = tf.constant([0, 2])
    expected = keras.losses.categorical_crossentropy(tf.one_hot(labels, 3), logits, from_logits=True,
                                                     label_smoothing=0.2)
    np.testing.assert_allclose(sparse_crossentropy(labels, logits, 0.2), expected, rtol=1e-6)


def test_weight_decay_skips_batch_norm_biases_and_depthwise_kernels():
    optimizer = make_optimizer(SETTINGS, total_steps=10)
    assert isinstance(optimizer, keras.optimizers.AdamW) and optimizer.weight_decay == pytest.approx(1e-2)
    variables = [tf.Variable(1.0, name=name) for name in ("conv/kernel", "bn/gamma", "dw/depthwise_kernel", "d/bias")]
    optimizer.build(variables)
    assert [optimizer._use_weight_decay(variable) for variable in variables] == [True, False, False, False]
    sgd = make_optimizer(TrainSettings(epochs=1, learning_rate=0.1, optimizer="sgd"), total_steps=10)
    assert isinstance(sgd, keras.optimizers.SGD) and sgd.nesterov


def test_train_writes_checkpoint_logs_history_and_resumes_after_a_kill(tiny_data, tmp_path):
    seed_everything(0)
    settings = TrainSettings(**{**SETTINGS.__dict__, "epochs": 3})
    with pytest.raises(KeyboardInterrupt):
        train(tiny_network(tiny_data), tiny_data, settings, tmp_path, callbacks=[StopAfterEpoch(0)])
    assert any((tmp_path / "backup").iterdir())  # BackupAndRestore kept the interrupted state
    assert resumed_epoch(tmp_path / "backup") == 1
    recorder = RecordEpochs()
    result = train(tiny_network(tiny_data), tiny_data, settings, tmp_path, callbacks=[recorder])
    assert recorder.epochs == [1, 2]  # resumed after the finished epoch, not from scratch
    # Dropout had a step-keyed random source during the fit only: the saved configuration is Keras' own.
    assert "rng_type" not in result.model.get_layer("dropout").get_config()
    assert len(result.history["loss"]) == 3 and len(result.history["val_accuracy"]) == 3
    assert 0.0 <= result.val_accuracy <= 1.0
    assert not (tmp_path / "backup").exists() or not any((tmp_path / "backup").iterdir())
    assert (tmp_path / "checkpoints" / "last_epoch.index").is_file()
    assert list((tmp_path / "logs").rglob("events.out.tfevents.*"))
    assert read_history(tmp_path / "history.csv") == result.history

    save_model(result.model, tmp_path / "model.keras")
    restored = load_model(tmp_path / "model.keras")
    images, _ = tiny_data.val_arrays()
    np.testing.assert_allclose(restored.predict(images, verbose=0), result.model.predict(images, verbose=0),
                               atol=1e-5)
    assert not list(tmp_path.glob(".tmp-*"))  # the atomic save left no temp file


def test_same_seed_gives_the_same_numbers(tiny_data, tmp_path):
    seed_everything(0)
    first = train(tiny_network(tiny_data), tiny_data, SETTINGS, tmp_path / "a")
    second = train(tiny_network(tiny_data), tiny_data, SETTINGS, tmp_path / "b")
    assert first.history == second.history
    for a, b in zip(first.model.get_weights(), second.model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_verbosity_defaults_to_one_line_per_epoch_off_a_terminal(monkeypatch):
    monkeypatch.setattr(train_module.sys.stdout, "isatty", lambda: False, raising=False)
    assert train_module._verbosity(None) == 2
    assert train_module._verbosity(0) == 0


def test_saved_models_get_the_mode_the_umask_gives(tmp_path):
    import os

    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    previous = os.umask(0o022)
    try:
        save_model(model, tmp_path / "model.keras")
    finally:
        os.umask(previous)
    assert (tmp_path / "model.keras").stat().st_mode & 0o777 == 0o644


def test_a_fit_killed_mid_epoch_resumes_to_the_uninterrupted_weights_bit_for_bit(tmp_path):
    images = write_class_folder(tmp_path / "images")
    started: list[subprocess.Popen] = []
    try:
        # The uninterrupted fit and the one to be killed run side by side; the resumed one after the kill.
        started += [_start_fit(images, tmp_path / "uninterrupted", tmp_path / "uninterrupted.log"),
                    _start_fit(images, tmp_path / "resumed", tmp_path / "killed.log", kill=True)]
        code, output = _finish(started[0], tmp_path / "uninterrupted.log")
        assert code == 0, output[-3000:]
        code, output = _finish(started[1], tmp_path / "killed.log")
        assert code == -signal.SIGKILL and f"KILLING in epoch {KILLED_IN_EPOCH}" in output, output[-3000:]
        assert len(read_history(tmp_path / "resumed" / "history.csv")["loss"]) == KILLED_IN_EPOCH
        started.append(_start_fit(images, tmp_path / "resumed", tmp_path / "resumed.log"))
        code, output = _finish(started[2], tmp_path / "resumed.log")
        assert code == 0, output[-3000:]
        assert f"EPOCH_BEGIN {KILLED_IN_EPOCH}" in output and "EPOCH_BEGIN 0" not in output
    finally:
        for process in started:
            if process.poll() is None:
                process.kill()
                process.wait()

    expected, actual = (np.load(tmp_path / name / "weights.npz") for name in ("uninterrupted", "resumed"))
    assert expected.files == actual.files and len(expected.files) > 10
    for name in expected.files:
        np.testing.assert_array_equal(actual[name], expected[name], err_msg=name)
    # Every epoch's numbers, the killed attempt's and the resumed one's alike.
    assert read_history(tmp_path / "resumed" / "history.csv") == read_history(
        tmp_path / "uninterrupted" / "history.csv")


def _start_fit(images: Path, work_dir: Path, log_path: Path, kill: bool = False) -> subprocess.Popen:
    """This file as a script (`_fit_child`), its output in `log_path`."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1", "CUDA_VISIBLE_DEVICES": "",
           "TF_CPP_MIN_LOG_LEVEL": "2", "OMP_NUM_THREADS": "1"}
    arguments = [sys.executable, __file__, "fit", str(images), str(work_dir), *(["kill"] if kill else [])]
    with open(log_path, "w") as log_file:
        return subprocess.Popen(arguments, cwd=REPO, env=env, stdout=log_file, stderr=subprocess.STDOUT)


def _finish(process: subprocess.Popen, log_path: Path) -> tuple[int, str]:
    """`process`'s exit code and output, killing it after SUBPROCESS_TIMEOUT_S."""
    try:
        code = process.wait(timeout=SUBPROCESS_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        pytest.fail(f"a training subprocess ran over {SUBPROCESS_TIMEOUT_S} s: {log_path.read_text()[-3000:]}")
    return code, log_path.read_text()


def _fit_child(images: str, work_dir: str, mode: str = "") -> None:
    """Fit the tiny network with dropout on `images` into `work_dir`, save its weights; `kill`: SIGKILL itself."""
    import models
    from pipeline.data import load_data

    class Marker(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch
            print("EPOCH_BEGIN", epoch, flush=True)

        def on_train_batch_end(self, batch, logs=None):
            if mode == "kill" and self.epoch == KILLED_IN_EPOCH and batch == 1:
                print("KILLING in epoch", self.epoch, flush=True)
                os.kill(os.getpid(), signal.SIGKILL)

    seed_everything(0)
    data = load_data(images, image_size=32, batch_size=8, seed=0)
    model = models.build(TINY_MODEL, input_shape=data.input_shape, num_classes=data.num_classes,
                         width_multiplier=TINY_WIDTH, dropout=0.5, bn_momentum=0.9)
    settings = TrainSettings(**{**SETTINGS.__dict__, "epochs": RESUME_EPOCHS})
    result = train(model, data, settings, Path(work_dir), callbacks=[Marker()])
    np.savez(Path(work_dir) / "weights.npz", **{f"{index:03d} {weight.name}": weight.numpy() for index, weight in enumerate(result.model.weights)})
    print("HISTORY", json.dumps(result.history), flush=True)


if __name__ == "__main__":
    {"fit": _fit_child}[sys.argv[1]](*sys.argv[2:])
