"""Training on several devices or machines with TensorFlow's own `tf.distribute` strategies.

`--strategy` picks one: `default` (one device), `mirrored` (every local GPU, or the CPU), `multi_worker`
(`MultiWorkerMirroredStrategy`, the cluster described by the `TF_CONFIG` environment variable) or `tpu`
(`TPUStrategy`, `--tpu ADDRESS`, `local` on a TPU VM). `--batch_size` is per replica; Keras splits each global
batch (per-replica batch x replicas) across the replicas. Everything that owns variables (model, optimizer,
metrics, the distillation teacher and student, TF-MOT's pruning and fake-quant wrappers) must be created inside
`strategy.scope()`.

BatchNorm under a mirrored strategy normalizes each replica's slice of the batch with that slice's statistics
(Keras' `BatchNormalization(synchronized=False)`), so losses match a single device only for networks without
BatchNorm; the moving statistics are averaged across replicas as they are updated.

TF-MOT under `MirroredStrategy` was measured here (TF 2.21, tf_keras 2.21, TF-MOT 0.8.1, two logical CPU
devices, `tests/pipeline/test_distribute.py` keeps the check): `prune_low_magnitude` (polynomial decay and 2:4)
trains and reaches its target sparsity, and `quantize_model` and prune-preserving QAT train. On a TPU neither was
tried, so `check_supported` refuses them there before any training starts.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import tensorflow as tf

from export.layout import WORKERS as WORKERS_DIR
from pipeline.config import STRATEGIES

log = logging.getLogger(__name__)

TF_CONFIG = "TF_CONFIG"
# Strategies under which TF-MOT training (pruning wrappers, QAT fake-quant wrappers) has run here or is the same
# code path: MultiWorkerMirroredStrategy uses MirroredStrategy's replica/merge_call machinery with collective ops.
TFMOT_STRATEGIES = ("default", "mirrored", "multi_worker")


class DistributionError(ValueError):
    """A strategy that cannot be created or cannot run this configuration; the message says how to fix it."""


def create_strategy(name: str, tpu: str | None = None, devices: list[str] | None = None) -> tf.distribute.Strategy:
    """The `tf.distribute` strategy called `name` (one of STRATEGIES).

    `multi_worker` must be created before TensorFlow runs any op (it starts this process's collective-ops
    server), so call this first thing in a worker process.
    """
    if name not in STRATEGIES:
        raise DistributionError(f"--strategy={name} is not supported; choose one of: {', '.join(STRATEGIES)}.")
    if tpu and name != "tpu":
        raise DistributionError(f"--tpu={tpu} is only used with --strategy=tpu, not --strategy={name}.")
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy(devices=devices)
    if name == "multi_worker":
        cluster = read_tf_config()
        log.info("multi-worker cluster from %s: %s, this task %s", TF_CONFIG, cluster["cluster"], cluster["task"])
        return tf.distribute.MultiWorkerMirroredStrategy()
    return _tpu_strategy(tpu)


def _tpu_strategy(address: str | None) -> tf.distribute.Strategy:
    if not address:
        raise DistributionError("--strategy=tpu needs --tpu=ADDRESS: the TPU's name or grpc:// address, or 'local' "
                                "on a TPU VM.")
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=address)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, RuntimeError, tf.errors.OpError) as error:
        first_line = (str(error).splitlines() or [type(error).__name__])[0][:200]
        raise DistributionError(f"--tpu={address}: cannot reach the TPU ({first_line}); check the address (use "
                                f"'local' on a TPU VM) and that this machine may use it.") from error
    return tf.distribute.TPUStrategy(resolver)


def read_tf_config(environ: dict[str, str] | None = None) -> dict[str, Any]:
    """The parsed, checked `TF_CONFIG` (`cluster` with at least one `worker`, and this process's `task`)."""
    text = (os.environ if environ is None else environ).get(TF_CONFIG)
    example = ('TF_CONFIG=\'{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
               '"task": {"type": "worker", "index": 0}}\'')
    if not text:
        raise DistributionError(f"--strategy=multi_worker needs the {TF_CONFIG} environment variable describing the "
                                f"cluster, e.g. {example}.")
    try:
        config = json.loads(text)
    except json.JSONDecodeError as error:
        raise DistributionError(f"{TF_CONFIG} is not valid JSON ({error}); e.g. {example}.") from error
    cluster, task = config.get("cluster"), config.get("task")
    if not isinstance(cluster, dict) or not (cluster.get("worker") or cluster.get("chief")):
        raise DistributionError(f"{TF_CONFIG} has no cluster.worker list of host:port addresses; e.g. {example}.")
    if not isinstance(task, dict) or task.get("type") not in cluster or not isinstance(task.get("index"), int):
        raise DistributionError(f"{TF_CONFIG}'s task must name this process's role in the cluster "
                                f"(type one of {sorted(cluster)}, integer index); e.g. {example}.")
    if not 0 <= task["index"] < len(cluster[task["type"]]):
        raise DistributionError(f"{TF_CONFIG}'s task index {task['index']} is outside cluster.{task['type']} "
                                f"({len(cluster[task['type']])} addresses).")
    return config


def num_replicas(strategy: tf.distribute.Strategy) -> int:
    """Replicas taking part in each step, over all workers."""
    return int(strategy.num_replicas_in_sync)


def global_batch_size(per_replica_batch_size: int, strategy: tf.distribute.Strategy) -> int:
    """`--batch_size` x replicas: the batch each step consumes (logged, so nobody has to guess)."""
    replicas = num_replicas(strategy)
    batch = per_replica_batch_size * replicas
    log.info("global batch %d = --batch_size %d per replica x %d replica(s) (%s)", batch, per_replica_batch_size,
             replicas, type(strategy).__name__)
    return batch


def shard_policy(reads_files: bool) -> tf.data.experimental.AutoShardPolicy:
    """FILE where the input pipeline reads several files (each worker reads its own files, nothing is read
    twice); DATA for in-memory sources such as digits (every worker reads everything and keeps its share)."""
    policy = tf.data.experimental.AutoShardPolicy
    return policy.FILE if reads_files else policy.DATA


def shard(dataset: tf.data.Dataset, reads_files: bool = False) -> tf.data.Dataset:
    """`dataset` with an explicit auto-shard policy (never TF's AUTO guess, which warns and falls back)."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = shard_policy(reads_files)
    return dataset.with_options(options)


def task(strategy: tf.distribute.Strategy) -> tuple[str | None, int | None]:
    """This process's (task type, task index) in a multi-worker cluster; (None, None) on one machine."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) or resolver is None:
        return None, None
    return resolver.task_type, resolver.task_id


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """True where this process writes the run's final artifacts: always on one machine; in a cluster, the
    `chief` task, or worker 0 where the cluster has no chief (TF's own convention)."""
    task_type, task_id = task(strategy)
    if task_type is None:
        return True
    if task_type == "chief":
        return True
    has_chief = "chief" in strategy.cluster_resolver.cluster_spec().as_dict()
    return task_type == "worker" and task_id == 0 and not has_chief


def worker_run_dir(run_dir: Path, strategy: tf.distribute.Strategy) -> Path:
    """Where this process writes: the run directory on the chief, `run_dir/workers/<task>-<index>/` elsewhere
    (a worker's own copies of models, ledger and logs, so only the chief writes the final artifacts)."""
    if is_chief(strategy):
        return Path(run_dir)
    task_type, task_id = task(strategy)
    return Path(run_dir) / WORKERS_DIR / f"{task_type}-{task_id}"


def chief_path(path: Path, strategy: tf.distribute.Strategy) -> Path:
    """The chief's counterpart of `path` inside this worker's `worker_run_dir` (`path` itself on the chief).

    BackupAndRestore must read the chief's backup on every worker (Keras writes the other workers' backups to
    temporary directories only), so a restarted cluster resumes all workers at the same epoch.
    """
    task_type, task_id = task(strategy)
    parts = Path(path).parts
    marker = (WORKERS_DIR, f"{task_type}-{task_id}")
    for index in range(len(parts) - 1):
        if parts[index:index + 2] == marker:
            return Path(*parts[:index], *parts[index + 2:])
    return Path(path)


def strategy_name(strategy: tf.distribute.Strategy) -> str:
    """The `--strategy` name of a strategy object (`default` for anything else, such as OneDeviceStrategy)."""
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return "multi_worker"
    if isinstance(strategy, tf.distribute.MirroredStrategy):
        return "mirrored"
    if isinstance(strategy, tf.distribute.TPUStrategy):
        return "tpu"
    return "default"


def check_supported(config: Any, strategy: tf.distribute.Strategy | str) -> None:
    """Refuse, before any training, what TF-MOT cannot run (or was never run) under `strategy`.

    `config` is a RunConfig (only `prune` and `qat` are read); `strategy` a strategy or its `--strategy` name,
    so a TPU run can be refused before connecting to the TPU.
    """
    name = strategy if isinstance(strategy, str) else strategy_name(strategy)
    wants = [flag for flag, on in (("--prune=" + str(config.prune), config.prune != "none"),
                                   ("--qat", bool(config.qat))) if on]
    if wants and name not in TFMOT_STRATEGIES:
        raise DistributionError(
            f"{' and '.join(wants)} cannot run under --strategy={name}: TF-MOT's pruning and "
            f"quantization-aware wrappers were run here under {', '.join(TFMOT_STRATEGIES)} only. Train on the "
            f"TPU without them, then prune / fine-tune with --strategy=mirrored (or default) from that run's "
            f"model.keras."
        )
