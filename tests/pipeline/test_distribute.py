"""pipeline.distribute on this machine: MirroredStrategy over two logical CPUs, two MultiWorkerMirroredStrategy
workers on 127.0.0.1, and a training process killed with SIGKILL that resumes from BackupAndRestore.

The training runs happen in subprocesses (this file run as a script): logical devices must be configured before
TensorFlow initializes its devices, and a MultiWorkerMirroredStrategy must be created before any op runs. Every
subprocess has a timeout and is killed in a `finally`.

The model is a convolution, global average pooling and a dense layer, without BatchNorm: under a mirrored strategy
BatchNorm normalizes each replica's half-batch with its own statistics (not synchronized), so a network with it
does not give a single device's losses.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import pipeline  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow is imported)

REPO = Path(__file__).resolve().parents[2]
SUBPROCESS_TIMEOUT_S = 120
PER_REPLICA_BATCH = 8
STEPS_PER_EPOCH = 4
EPOCHS = 3


# --- the tests -----------------------------------------------------------------------------------------------
def test_config_errors_say_how_to_fix_them():
    from pipeline.config import RunConfig
    from pipeline.distribute import DistributionError, check_supported, create_strategy, read_tf_config

    with pytest.raises(DistributionError, match="TF_CONFIG"):
        read_tf_config({})
    with pytest.raises(DistributionError, match="not valid JSON"):
        read_tf_config({"TF_CONFIG": "{cluster"})
    with pytest.raises(DistributionError, match="index 2 is outside"):
        read_tf_config({"TF_CONFIG": json.dumps({"cluster": {"worker": ["a:1", "b:2"]},
                                                 "task": {"type": "worker", "index": 2}})})
    with pytest.raises(DistributionError, match="choose one of"):
        create_strategy("horovod")
    with pytest.raises(DistributionError, match="needs --tpu"):
        create_strategy("tpu")
    with pytest.raises(DistributionError, match="only used with --strategy=tpu"):
        create_strategy("mirrored", tpu="local")
    # TF-MOT ran here under mirrored (see test_mirrored_...), never on a TPU: refused before training starts.
    check_supported(RunConfig(prune="2:4", qat=True), "mirrored")
    check_supported(RunConfig(), "tpu")
    with pytest.raises(DistributionError, match="--prune=magnitude and --qat cannot run under --strategy=tpu"):
        check_supported(RunConfig(prune="magnitude", qat=True), "tpu")


@pytest.mark.parametrize("flags, fragment", [
    (["--strategy=horovod"], "--strategy=horovod is not supported"),
    (["--strategy=tpu"], "--strategy=tpu needs --tpu=ADDRESS"),
    (["--tpu=local"], "only used with --strategy=tpu"),
    (["--strategy=tpu", "--tpu=local", "--prune=magnitude"], "--prune=magnitude cannot run under --strategy=tpu"),
])
def test_bad_strategy_flags_exit_2_before_anything_runs(flags, fragment, capsys, tmp_path):
    from pipeline import run as run_module

    assert run_module.main(["pipeline.run", f"--output_dir={tmp_path / 'run'}", *flags]) == 2
    assert fragment in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_multi_worker_needs_one_shared_output_dir():
    from pipeline.config import ConfigError, RunConfig

    with pytest.raises(ConfigError, match="every worker must name the same run directory"):
        RunConfig(strategy="multi_worker").validate()


def test_mirrored_run_end_to_end(capsys, tmp_path, image_folder):
    """`--strategy=mirrored` through pipeline.run: training under the scope, conversion outside it (one CPU here,
    so one replica). Pruning and QAT under the strategy are checked in the two-CPU subprocess below (with
    --prune=2:4 --qat this run passed too, but took 5 minutes on the loaded 2-core machine)."""
    from pipeline import run as run_module

    run_dir = tmp_path / "run"
    assert run_module.main(["pipeline.run", f"--dataset={image_folder}", "--model=mobilenet_v1",
                            "--width_multiplier=0.25", "--image_size=32", "--epochs=1", "--batch_size=8",
                            "--quantize=none", "--device=none", "--strategy=mirrored", "--noclient_check",
                            f"--output_dir={run_dir}"]) == 0
    output = capsys.readouterr().out
    assert "global batch 8 = --batch_size 8 per replica x 1 replica(s) (MirroredStrategy)" in output
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["accuracy"]["tflite_float32"] is not None and (run_dir / "model_float32.tflite").is_file()
    assert json.loads((run_dir / "config.json").read_text())["config"]["strategy"] == "mirrored"


def test_default_strategy_is_chief_with_one_replica_and_explicit_shard_policy():
    import tensorflow as tf

    from pipeline import distribute

    strategy = distribute.create_strategy("default")
    assert distribute.is_chief(strategy) and distribute.strategy_name(strategy) == "default"
    assert distribute.global_batch_size(PER_REPLICA_BATCH, strategy) == PER_REPLICA_BATCH
    policy = tf.data.experimental.AutoShardPolicy
    assert distribute.shard_policy(reads_files=False) == policy.DATA
    assert distribute.shard_policy(reads_files=True) == policy.FILE
    sharded = distribute.shard(tf.data.Dataset.range(4))
    assert sharded.options().experimental_distribute.auto_shard_policy == policy.DATA


def test_mirrored_on_two_cpus_matches_one_device_also_distilling_and_runs_tfmot(tmp_path):
    result = _run_worker(["mirrored", str(tmp_path / "result.json")], tmp_path / "result.json")
    assert result["replicas"] == 2 and result["global_batch"] == 2 * PER_REPLICA_BATCH
    np.testing.assert_allclose(result["mirrored_losses"], result["single_losses"], rtol=1e-5, atol=1e-6)
    assert result["max_weight_difference"] < 1e-5
    # The Distiller's own train_step, too (before its loss was divided by the replicas it stepped ~2x as far).
    np.testing.assert_allclose(*result["distill_losses"], rtol=1e-5)
    assert result["distill_weight_difference"] < 1e-5
    # TF-MOT's wrappers train under MirroredStrategy: pruning reaches its sparsity, QAT runs.
    assert result["pruned_sparsity"] == pytest.approx(0.5, abs=0.02)
    assert np.all(np.isfinite(result["qat_losses"]))


def test_two_multi_worker_processes_end_with_identical_weights(tmp_path):
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    processes = []
    try:
        for index in range(2):
            env = {**os.environ, "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker",
                                                                                      "index": index}})}
            processes.append(_start(["multi_worker", str(tmp_path / f"worker{index}.npz")], env,
                                    tmp_path / f"worker{index}.log"))
        _wait_all(processes, SUBPROCESS_TIMEOUT_S, tmp_path)
    finally:
        _kill(processes)
    weights = [np.load(tmp_path / f"worker{index}.npz") for index in range(2)]
    assert [bool(w["is_chief"]) for w in weights] == [True, False]  # worker 0 is the chief: no "chief" task
    assert int(weights[0]["replicas"]) == 2
    assert list(weights[0]["paths"]) == ["/runs/r", "/runs/r/train/backup"]
    assert list(weights[1]["paths"]) == ["/runs/r/workers/worker-1", "/runs/r/train/backup"]
    names = [name for name in weights[0].files if name.startswith("weight")]
    assert names
    for name in names:
        np.testing.assert_array_equal(weights[0][name], weights[1][name])
    assert not np.allclose(weights[0]["weight0"], weights[0]["initial0"])  # it did train


def test_killed_training_resumes_from_backup_and_restore(tmp_path):
    work_dir = tmp_path / "train"
    log_path = tmp_path / "first.log"
    process = _start(["resume", str(work_dir), "sleep_after_epoch_1"], dict(os.environ), log_path)
    try:
        deadline = time.monotonic() + SUBPROCESS_TIMEOUT_S
        while "EPOCH_END 1" not in log_path.read_text():  # epoch 1 (0-based) finished and backed up
            assert process.poll() is None, log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, "the first training run never finished epoch 1"
            time.sleep(0.2)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
    finally:
        _kill([process])
    assert list((work_dir / "backup").iterdir()), "BackupAndRestore wrote no backup before the kill"
    second = _start(["resume", str(work_dir)], dict(os.environ), tmp_path / "second.log")
    try:
        _wait_all([second], SUBPROCESS_TIMEOUT_S, tmp_path)
    finally:
        _kill([second])
    begins = [int(line.split()[1]) for line in (tmp_path / "second.log").read_text().splitlines()
              if line.startswith("EPOCH_BEGIN")]
    assert begins == [2], begins  # epochs 0 and 1 were restored, not retrained
    history = json.loads((tmp_path / "second.log").read_text().split("HISTORY ", 1)[1].splitlines()[0])
    assert len(history["loss"]) == EPOCHS  # pipeline.train.fit's CSV history holds all epochs of both attempts


# --- subprocess plumbing -------------------------------------------------------------------------------------
def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _start(arguments: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen:
    env = {**env, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1", "CUDA_VISIBLE_DEVICES": "",
           "TF_CPP_MIN_LOG_LEVEL": "2", "OMP_NUM_THREADS": "1"}
    with open(log_path, "w") as log_file:
        return subprocess.Popen([sys.executable, __file__, *arguments], cwd=REPO, env=env, stdout=log_file,
                                stderr=subprocess.STDOUT, start_new_session=True)


def _wait_all(processes: list[subprocess.Popen], timeout_s: float, log_dir: Path) -> None:
    deadline = time.monotonic() + timeout_s
    for process in processes:
        try:
            code = process.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pytest.fail(f"a training subprocess ran over {timeout_s} s; logs: {_logs(log_dir)}")
        assert code == 0, f"a training subprocess failed (exit {code}); logs: {_logs(log_dir)}"


def _kill(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)  # its own session: the process and anything it started
            process.wait(timeout=10)


def _logs(log_dir: Path) -> str:
    return "\n".join(f"--- {path.name}\n{path.read_text()[-2000:]}" for path in sorted(log_dir.glob("*.log")))


def _run_worker(arguments: list[str], result_path: Path) -> dict:
    process = _start(arguments, dict(os.environ), result_path.with_suffix(".log"))
    try:
        _wait_all([process], SUBPROCESS_TIMEOUT_S, result_path.parent)
    finally:
        _kill([process])
    return json.loads(result_path.read_text())


# --- what the subprocesses run -------------------------------------------------------------------------------
def _tiny_model(keras, seed: int = 0):
    """Conv -> global average pooling -> dense logits: no BatchNorm, no dropout (see the module docstring)."""
    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input((8, 8, 3)),
        keras.layers.Conv2D(8, 3, activation="relu", name="conv"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(4, name="logits"),
    ])


def _tiny_arrays(count: int):
    rng = np.random.default_rng(0)
    return rng.normal(size=(count, 8, 8, 3)).astype(np.float32), rng.integers(0, 4, size=count).astype(np.int32)


def _compile(keras, model):
    model.compile(optimizer=keras.optimizers.SGD(0.1),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))


def _worker_mirrored(result_path: str) -> None:
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import tensorflow_model_optimization as tfmot
    import tf_keras as keras

    from pipeline import distribute

    class StepLosses(keras.callbacks.Callback):
        """Per-step loss from the running epoch mean Keras logs (first step of an epoch: that step's loss)."""

        def __init__(self):
            super().__init__()
            self.losses = []

        def on_train_batch_end(self, batch, logs=None):
            self.losses.append(float(logs["loss"]))

    strategy = distribute.create_strategy("mirrored", devices=["/cpu:0", "/cpu:1"])
    batch = distribute.global_batch_size(PER_REPLICA_BATCH, strategy)
    images, labels = _tiny_arrays(batch * STEPS_PER_EPOCH)
    dataset = distribute.shard(tf.data.Dataset.from_tensor_slices((images, labels)).batch(batch))
    initial = _tiny_model(keras).get_weights()

    def fit(scope_strategy):
        with scope_strategy.scope():
            model = _tiny_model(keras)
            model.set_weights(initial)
            _compile(keras, model)
        losses = StepLosses()
        model.fit(dataset, epochs=EPOCHS, verbose=0, shuffle=False, callbacks=[losses])
        return model, losses.losses

    with tf.device("/cpu:0"):
        single, single_losses = fit(tf.distribute.get_strategy())
    mirrored, mirrored_losses = fit(strategy)
    difference = max(float(np.max(np.abs(a - b))) for a, b in zip(single.get_weights(), mirrored.get_weights()))

    from pipeline.distill import Distiller

    def distill(scope_strategy):  # a custom train_step: its loss must be scaled for the summed gradients
        with scope_strategy.scope():
            student, teacher = _tiny_model(keras), _tiny_model(keras, seed=1)
            student.set_weights(initial)
            distiller = Distiller(student, teacher, temperature=4.0, alpha=0.5)
            distiller.compile(optimizer=keras.optimizers.SGD(0.1))
        losses = distiller.fit(dataset, epochs=1, verbose=0).history["loss"]
        return losses, student.get_weights()

    with tf.device("/cpu:0"):
        single_distill = distill(tf.distribute.get_strategy())
    mirrored_distill = distill(strategy)
    distill_difference = max(float(np.max(np.abs(a - b))) for a, b in zip(single_distill[1], mirrored_distill[1]))

    with strategy.scope():  # TF-MOT under the strategy: wrappers, optimizer and metrics inside the scope
        pruned = tfmot.sparsity.keras.prune_low_magnitude(
            _tiny_model(keras), pruning_schedule=tfmot.sparsity.keras.ConstantSparsity(0.5, 0, frequency=1))
        _compile(keras, pruned)
    pruned.fit(dataset, epochs=1, verbose=0, callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
    kernel = [w.numpy() for w in pruned.weights if w.name.endswith("conv/kernel:0")][0]
    with strategy.scope():
        quantized = tfmot.quantization.keras.quantize_model(_tiny_model(keras))
        _compile(keras, quantized)
    qat_losses = quantized.fit(dataset, epochs=1, verbose=0).history["loss"]

    Path(result_path).write_text(json.dumps({
        "replicas": distribute.num_replicas(strategy), "global_batch": batch, "single_losses": single_losses,
        "mirrored_losses": mirrored_losses, "max_weight_difference": difference,
        "distill_losses": [single_distill[0], mirrored_distill[0]], "distill_weight_difference": distill_difference,
        "pruned_sparsity": float(np.mean(kernel == 0)), "qat_losses": qat_losses,
    }))


def _worker_multi_worker(weights_path: str) -> None:
    from pipeline import distribute

    strategy = distribute.create_strategy("multi_worker")  # before any other TensorFlow op
    import tensorflow as tf
    import tf_keras as keras

    batch = distribute.global_batch_size(PER_REPLICA_BATCH, strategy)
    images, labels = _tiny_arrays(batch * STEPS_PER_EPOCH)
    dataset = distribute.shard(tf.data.Dataset.from_tensor_slices((images, labels)).batch(batch))
    with strategy.scope():
        model = _tiny_model(keras, seed=distribute.task(strategy)[1])  # different seeds: the strategy syncs them
        _compile(keras, model)
    initial = [w.copy() for w in model.get_weights()]
    model.fit(dataset, epochs=2, verbose=0)
    arrays = {f"weight{i}": w for i, w in enumerate(model.get_weights())}
    arrays.update({f"initial{i}": w for i, w in enumerate(initial)})
    # Worker 1 writes into its own run directory but restores the chief's backup.
    own = distribute.worker_run_dir(Path("/runs/r"), strategy)
    paths = [str(own), str(distribute.chief_path(own / "train" / "backup", strategy))]
    np.savez(weights_path, is_chief=distribute.is_chief(strategy), replicas=distribute.num_replicas(strategy),
             paths=np.array(paths), **arrays)


def _worker_resume(work_dir: str, mode: str = "") -> None:
    import tensorflow as tf
    import tf_keras as keras

    from pipeline import distribute
    from pipeline.data import DataSplits, Normalization
    from pipeline.train import TrainSettings, fit

    class Marker(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            print("EPOCH_BEGIN", epoch, flush=True)

        def on_epoch_end(self, epoch, logs=None):
            # After BackupAndRestore's on_epoch_end (fit puts it first): the backup of this epoch is on disk.
            print("EPOCH_END", epoch, flush=True)
            if mode == "sleep_after_epoch_1" and epoch == 1:
                time.sleep(SUBPROCESS_TIMEOUT_S)  # the test kills us here

    strategy = distribute.create_strategy("default")
    _, labels = _tiny_arrays(PER_REPLICA_BATCH * STEPS_PER_EPOCH)
    images = np.random.default_rng(0).integers(0, 256, size=(len(labels), 8, 8, 3)).astype(np.uint8)
    dataset = distribute.shard(tf.data.Dataset.from_tensor_slices((images, labels)).batch(PER_REPLICA_BATCH))
    # fit() rebuilds `train` from the arrays (pipeline.data's seeded augmentation), keeping the shard option.
    data = DataSplits(train=dataset, val=dataset.map(lambda x, y: (tf.cast(x, tf.float32) / 127.5 - 1.0, y)),
                      class_names=list("abcd"), image_size=8, batch_size=PER_REPLICA_BATCH, train_images=images,
                      train_labels=labels, val_images=images, val_labels=labels, normalization=Normalization(),
                      source="tiny")
    with strategy.scope():
        model = _tiny_model(keras)
        _compile(keras, model)
    history = fit(model, data, TrainSettings(epochs=EPOCHS, learning_rate=0.1, verbose=0), Path(work_dir),
                  callbacks=[Marker()])
    print("HISTORY", json.dumps(history), flush=True)


if __name__ == "__main__":
    workers = {"mirrored": _worker_mirrored, "multi_worker": _worker_multi_worker, "resume": _worker_resume}
    workers[sys.argv[1]](*sys.argv[2:])
