"""`RunConfig.validate`: the first bad setting as one `ConfigError` line that names its flag and how to fix it.

Allowed values come from each setting's declaration (pipeline.config); the checks here are the ones a
declaration cannot say: ranges, combinations, paths. No TensorFlow is imported.
"""
from __future__ import annotations

import math
from pathlib import Path

from pipeline.config import (
    DEFAULT_PRUNE_L1,
    MAX_IMAGE_SIZE,
    MIN_IMAGE_SIZE,
    TFDS_PREFIX,
    ConfigError,
    RunConfig,
    declarations,
)
from models.choices import NETWORKS


def require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def validate(config: RunConfig, available_models: list[str] | None = None) -> None:
    """Raise `ConfigError` for the first bad setting of `config`."""
    models = available_models or list(NETWORKS)
    for flag, name in (("--model", config.model), ("--teacher", config.teacher)):
        require(name is None or name in models,
                f"{flag}={name} is not a known model; choose one of: {', '.join(models)}.")
    _check_declared(config)
    _check_ranges(config)
    _check_dataset(config)
    _check_distillation(config)
    _check_pruning(config)
    _check_runtime(config)


def _check_declared(config: RunConfig) -> None:
    """Every declared choice list, and no NaN or infinity in any number."""
    for field in declarations():
        value = getattr(config, field.name)
        choices = field.metadata["choices"]
        if choices is not None and value is not None:
            require(value in choices, f"--{field.name}={value} is not supported; choose one of: {', '.join(choices)}.")
        if isinstance(value, float):
            require(math.isfinite(value), f"--{field.name}={value} must be a finite number.")


def _check_ranges(config: RunConfig) -> None:
    require(config.width_multiplier is None or 0 < config.width_multiplier <= 4,
            f"--width_multiplier={config.width_multiplier} must be in (0, 4] (e.g. 0.5, 0.75, 1.0).")
    require(0 < config.teacher_width_multiplier <= 4,
            f"--teacher_width_multiplier={config.teacher_width_multiplier} must be in (0, 4].")
    require(config.image_size is None or config.image_size >= MIN_IMAGE_SIZE,
            f"--image_size={config.image_size} is too small: the networks downsample by 32, so use at least "
            f"{MIN_IMAGE_SIZE}.")
    require(config.image_size is None or config.image_size <= MAX_IMAGE_SIZE,
            f"--image_size={config.image_size} is too large: use at most {MAX_IMAGE_SIZE} (mobile classifiers run at "
            f"96-320).")
    for flag, value in (("--epochs", config.epochs), ("--prune_epochs", config.prune_epochs),
                        ("--qat_epochs", config.qat_epochs), ("--batch_size", config.batch_size),
                        ("--num_threads", config.num_threads)):
        require(value is None or value > 0, f"{flag}={value} must be a positive integer.")
    require(config.learning_rate is None or config.learning_rate > 0,
            f"--learning_rate={config.learning_rate} must be > 0.")
    require(config.weight_decay is None or config.weight_decay >= 0,
            f"--weight_decay={config.weight_decay} must be >= 0.")
    require(0 <= config.label_smoothing < 1, f"--label_smoothing={config.label_smoothing} must be in [0, 1).")
    require(config.bn_momentum is None or 0 < config.bn_momentum < 1,
            f"--bn_momentum={config.bn_momentum} must be in (0, 1), e.g. 0.9 for short runs.")
    require(0 < config.val_split < 1, f"--val_split={config.val_split} must be in (0, 1), e.g. 0.2.")
    require(0 < config.int8_min_agreement <= 1,
            f"--int8_min_agreement={config.int8_min_agreement} must be in (0, 1], e.g. 0.97.")
    require(config.seed >= 0, f"--seed={config.seed} must be >= 0.")
    require(not config.qat or config.quantize == "int8",
            f"--qat trains for int8 inference; use it with --quantize=int8, not --quantize={config.quantize}.")


def _check_dataset(config: RunConfig) -> None:
    kind = config.dataset_kind
    if kind == "tfds":
        require(len(config.dataset) > len(TFDS_PREFIX),
                f"--dataset={config.dataset} names no dataset; use e.g. --dataset=tfds:imagenette/160px-v2.")
    elif kind == "folder":
        path = Path(config.dataset)
        require(path.exists(), f"--dataset={config.dataset} does not exist; give 'digits', 'tfds:NAME' or a folder of "
                f"class sub-folders.")
        require(path.is_dir(), f"--dataset={config.dataset} is not a folder; give a folder with one sub-folder of "
                f"images per class.")


def _check_distillation(config: RunConfig) -> None:
    require(not (config.teacher and config.teacher_checkpoint),
            "--teacher and --teacher_checkpoint both given; use --teacher to train one in this run, or "
            "--teacher_checkpoint to load a trained one, not both.")
    if config.teacher_checkpoint:
        require(Path(config.teacher_checkpoint).exists(),
                f"--teacher_checkpoint={config.teacher_checkpoint} does not exist; give a .keras file or a run "
                f"directory that holds model.keras.")
    require(config.distill_temperature > 0,
            f"--distill_temperature={config.distill_temperature} must be > 0 (typically 2-8).")
    require(0 <= config.distill_alpha <= 1,
            f"--distill_alpha={config.distill_alpha} must be in [0, 1] (the weight of the hard-label loss).")
    require(not config.distill_compare or config.distill,
            "--distill_compare needs a teacher; add --teacher=NAME or --teacher_checkpoint=PATH.")


def _check_pruning(config: RunConfig) -> None:
    require(0 < config.prune_sparsity < 1,
            f"--prune_sparsity={config.prune_sparsity} must be strictly between 0 and 1, e.g. 0.5.")
    if not config.slim:
        require(config.prune_ratio is None and config.target_macs is None,
                "--prune_ratio and --target_macs apply only to --prune=channels.")
        return
    require((config.prune_ratio is None) != (config.target_macs is None),
            "--prune=channels needs exactly one of --prune_ratio (e.g. 0.3) or --target_macs (e.g. 200000000).")
    require(config.prune_ratio is None or 0 < config.prune_ratio < 1,
            f"--prune_ratio={config.prune_ratio} must be strictly between 0 and 1, e.g. 0.3.")
    require(config.target_macs is None or config.target_macs > 0,
            f"--target_macs={config.target_macs} must be a positive number of multiply-adds.")
    require(config.prune_iterations >= 1, f"--prune_iterations={config.prune_iterations} must be >= 1.")
    require(config.prune_l1 >= 0, f"--prune_l1={config.prune_l1} must be >= 0 (e.g. {DEFAULT_PRUNE_L1:g}).")


def _check_runtime(config: RunConfig) -> None:
    require(config.strategy != "tpu" or bool(config.tpu),
            "--strategy=tpu needs --tpu=ADDRESS (the TPU's name or grpc:// address, or 'local' on a TPU VM).")
    require(not config.tpu or config.strategy == "tpu",
            f"--tpu={config.tpu} is only used with --strategy=tpu; add --strategy=tpu or drop --tpu.")
    require(config.strategy != "multi_worker" or bool(config.output_dir),
            "--strategy=multi_worker needs --output_dir: every worker must name the same run directory, on "
            "storage all of them see (a shared file system or gs://).")
    if config.package_app:
        require(Path(config.package_app).is_dir(),
                f"--package_app={config.package_app} is not a directory; point it at the Android app "
                f"(e.g. android_demo).")
    if config.output_dir:
        output = Path(config.output_dir)
        require(not output.exists() or output.is_dir(),
                f"--output_dir={config.output_dir} exists and is not a directory; choose another path.")
