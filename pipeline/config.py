"""One run's configuration: the `RunConfig` dataclass, its per-dataset defaults, validation, and `config.json`.

A run directory belongs to exactly one configuration. `config.json` records it (everything needed to reproduce
the run); a later command pointed at the same directory must resolve to the same settings, or it is refused
before anything in the directory is touched.

This module does not import TensorFlow, so a bad flag is reported in about a second.
"""
from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
from pathlib import Path
from typing import Any

from export.files import write_json_atomic

DIGITS = "digits"
TFDS_PREFIX = "tfds:"
OPTIMIZERS = ("adam", "sgd")
PRUNE_METHODS = ("none", "2:4", "xnnpack", "magnitude", "channels")
# TF-MOT methods zero weights (stored sparse); "channels" removes them, so its model is dense and smaller.
SPARSE_PRUNE_METHODS = ("2:4", "xnnpack", "magnitude")
QUANTIZATIONS = ("int8", "float16", "dynamic", "none")
IO_DTYPES = ("int8", "uint8")  # export.convert.IO_DTYPES (not imported: it loads TensorFlow)
PRUNE_CRITERIA = ("gamma", "gamma_per_mac")  # models.channel_pruning.CRITERIA (likewise)
DEVICES = ("host", "adb", "none")
STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")  # tf.distribute; see pipeline/distribute.py
# Non-chief workers of a multi-worker run train in OUTPUT_DIR/workers/<task>-<index>/ (pipeline/distribute.py).
WORKERS_DIR = "workers"
WEIGHTS = ("imagenet",)
CONFIG_FILE = "config.json"

# Fields that do not change any number the run produces: where it is written, where it is benchmarked, whether
# the Android app is packaged. A run directory can be resumed with different values of these.
NON_REPRODUCIBILITY_FIELDS = ("output_dir", "device", "benchmark_binary", "package_app", "num_threads", "tpu")

# Networks have a total stride of 32; the registry refuses anything smaller (models.registry.MIN_INPUT_SIZE).
MIN_IMAGE_SIZE = 32


class ConfigError(ValueError):
    """A setting the run cannot work with; the message says what is wrong and how to fix it, in one line."""


@dataclasses.dataclass(frozen=True)
class DatasetDefaults:
    """What a short run on one kind of dataset needs to converge; printed at the start of every run."""

    image_size: int
    epochs: int
    batch_size: int
    width_multiplier: float
    flip: bool  # digits are not mirror-symmetric: a flipped 2 is not a 2


# Digits: 1,437 training images of 8x8 pixels, upsampled. 32 px is the smallest input the networks take and
# keeps the default command inside its 5-minute budget on 2 cores; DESIGN.md measured 98% held-out for
# MobileNetV3-Small in 30 epochs at this size once BatchNorm momentum suits the step count.
DIGITS_DEFAULTS = DatasetDefaults(image_size=32, epochs=20, batch_size=64, width_multiplier=1.0, flip=False)
# Photos (a folder or TFDS): imagenette-96's size, and DESIGN.md's 12-epoch from-scratch recipe.
PHOTO_DEFAULTS = DatasetDefaults(image_size=96, epochs=12, batch_size=64, width_multiplier=1.0, flip=True)

DEFAULT_LEARNING_RATE = {"adam": 2e-3, "sgd": 0.1}
# Decoupled weight decay (AdamW, and SGD's `weight_decay`), applied to conv and dense kernels only. Keras scales
# it by the learning rate, so AdamW's usual 1e-2..5e-2 and SGD's paper-style 4e-5..5e-4 are the ranges.
DEFAULT_WEIGHT_DECAY = {"adam": 2e-2, "sgd": 5e-4}
# --prune=channels: the sparsity training's L1 weight on gamma (Network Slimming's lambda). The paper's 1e-5..1e-4
# suit its 160-epoch SGD schedules; in 8 Adam epochs 1e-4 left every gamma of MobileNetV2 above 0.1 and the cut cost
# 42 points before fine-tuning, while 3e-3 drove 63% of them below 0.01 and the cut cost 1 (README, channel pruning).
DEFAULT_PRUNE_L1 = 3e-3


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Everything that decides what a run computes. `None` means "the dataset's default" until `resolved()`."""

    model: str = "mobilenet_v3_small"
    width_multiplier: float | None = None
    image_size: int | None = None
    dataset: str = DIGITS
    val_split: float = 0.2
    epochs: int | None = None
    batch_size: int | None = None
    learning_rate: float | None = None
    optimizer: str = "adam"
    weight_decay: float | None = None
    label_smoothing: float = 0.1
    bn_momentum: float | None = None  # None: chosen from the number of training steps (see train.py)
    seed: int = 0
    weights: str | None = None
    output_dir: str | None = None
    teacher: str | None = None
    teacher_width_multiplier: float = 1.0
    teacher_checkpoint: str | None = None
    distill_temperature: float = 4.0
    distill_alpha: float = 0.5
    distill_compare: bool = False
    prune: str = "none"
    prune_sparsity: float = 0.5
    prune_epochs: int | None = None
    prune_ratio: float | None = None  # --prune=channels: fraction of prunable channels removed
    target_macs: int | None = None  # --prune=channels: or prune until the model has at most this many MACs
    prune_iterations: int = 1  # --prune=channels: prune and fine-tune this many times after sparsity training
    prune_l1: float = DEFAULT_PRUNE_L1  # --prune=channels: the sparsity training's L1 weight on BatchNorm gamma
    prune_criterion: str = "gamma"  # --prune=channels: how channels are ranked for removal (PRUNE_CRITERIA)
    qat: bool = False
    qat_epochs: int | None = None
    quantize: str = "int8"
    io_dtype: str = "int8"
    device: str = "host"
    benchmark_binary: str | None = None  # --device=adb: benchmark_model to push (else $BENCHMARK_MODEL_BINARY)
    num_threads: int = 1
    package_app: str | None = None
    strategy: str = "default"  # --batch_size is per replica: the global batch is batch_size x replicas
    tpu: str | None = None

    # --- derived facts -------------------------------------------------------------------------------------
    @property
    def dataset_kind(self) -> str:
        """`digits`, `tfds` or `folder`."""
        if self.dataset == DIGITS:
            return "digits"
        if self.dataset.startswith(TFDS_PREFIX):
            return "tfds"
        return "folder"

    @property
    def defaults(self) -> DatasetDefaults:
        return DIGITS_DEFAULTS if self.dataset_kind == "digits" else PHOTO_DEFAULTS

    @property
    def distill(self) -> bool:
        return bool(self.teacher or self.teacher_checkpoint)

    @property
    def stem_padding(self) -> str:
        """`symmetric` where TF-MOT's XNNPACK sparsity policy needs it; otherwise keras.applications' `same`."""
        return "symmetric" if self.prune == "xnnpack" else "same"

    def resolved(self) -> "RunConfig":
        """A copy with every `None` default filled in for this dataset and optimizer (what config.json records)."""
        defaults = self.defaults
        epochs = self.epochs if self.epochs is not None else defaults.epochs
        fine_tune_epochs = max(1, round(epochs / 4))
        return dataclasses.replace(
            self,
            width_multiplier=self.width_multiplier if self.width_multiplier is not None else defaults.width_multiplier,
            image_size=self.image_size if self.image_size is not None else defaults.image_size,
            epochs=epochs,
            batch_size=self.batch_size if self.batch_size is not None else defaults.batch_size,
            learning_rate=(
                self.learning_rate if self.learning_rate is not None else DEFAULT_LEARNING_RATE.get(self.optimizer)
            ),
            weight_decay=(
                self.weight_decay if self.weight_decay is not None else DEFAULT_WEIGHT_DECAY.get(self.optimizer)
            ),
            prune_epochs=self.prune_epochs if self.prune_epochs is not None else fine_tune_epochs,
            qat_epochs=self.qat_epochs if self.qat_epochs is not None else fine_tune_epochs,
            teacher_checkpoint=str(Path(self.teacher_checkpoint).resolve()) if self.teacher_checkpoint else None,
        )

    def validate(self, available_models: list[str] | None = None) -> None:
        """Raise `ConfigError` (one line: what is wrong, how to fix it) for the first bad setting."""
        _validate(self, available_models)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "RunConfig":
        known = {field.name for field in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in values.items() if key in known})

    def reproducibility_dict(self) -> dict[str, Any]:
        """The settings that decide the run's numbers (everything but where it writes and benchmarks)."""
        return {key: value for key, value in self.to_dict().items() if key not in NON_REPRODUCIBILITY_FIELDS}

    def fingerprint(self) -> str:
        """A short hash of `reproducibility_dict()`; equal fingerprints mean the same computation."""
        text = json.dumps(self.reproducibility_dict(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def describe_defaults(self) -> str:
        """One log line with the settings chosen for this dataset, so nobody has to guess them."""
        return (
            f"dataset {self.dataset} ({self.dataset_kind}): image_size={self.image_size} epochs={self.epochs} "
            f"batch_size={self.batch_size} width_multiplier={self.width_multiplier:g} optimizer={self.optimizer} "
            f"learning_rate={self.learning_rate:g} (cosine decay) weight_decay={self.weight_decay:g} "
            f"({'AdamW' if self.optimizer == 'adam' else 'SGD'} decoupled, kernels only) "
            f"label_smoothing={self.label_smoothing:g} flip={'on' if self.defaults.flip else 'off'} "
            f"bn_momentum={'auto' if self.bn_momentum is None else self.bn_momentum} seed={self.seed}"
        )


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def _validate(config: RunConfig, available_models: list[str] | None) -> None:
    if available_models is not None:
        for flag, name in (("--model", config.model), ("--teacher", config.teacher)):
            _require(
                name is None or name in available_models,
                f"{flag}={name} is not a known model; choose one of: {', '.join(available_models)}.",
            )
    _require(config.width_multiplier is None or config.width_multiplier > 0,
             f"--width_multiplier={config.width_multiplier} must be > 0 (e.g. 0.5, 0.75, 1.0).")
    _require(config.teacher_width_multiplier > 0,
             f"--teacher_width_multiplier={config.teacher_width_multiplier} must be > 0.")
    _require(config.image_size is None or config.image_size >= MIN_IMAGE_SIZE,
             f"--image_size={config.image_size} is too small: the networks downsample by 32, so use at least "
             f"{MIN_IMAGE_SIZE}.")
    _require(config.epochs is None or config.epochs > 0, f"--epochs={config.epochs} must be a positive integer.")
    for flag, value in (("--prune_epochs", config.prune_epochs), ("--qat_epochs", config.qat_epochs)):
        _require(value is None or value > 0, f"{flag}={value} must be a positive integer.")
    _require(config.batch_size is None or config.batch_size > 0,
             f"--batch_size={config.batch_size} must be a positive integer.")
    _require(config.learning_rate is None or config.learning_rate > 0,
             f"--learning_rate={config.learning_rate} must be > 0.")
    _require(config.weight_decay is None or config.weight_decay >= 0,
             f"--weight_decay={config.weight_decay} must be >= 0.")
    _require(0 <= config.label_smoothing < 1, f"--label_smoothing={config.label_smoothing} must be in [0, 1).")
    _require(config.bn_momentum is None or 0 < config.bn_momentum < 1,
             f"--bn_momentum={config.bn_momentum} must be in (0, 1), e.g. 0.9 for short runs.")
    _require(0 < config.val_split < 1, f"--val_split={config.val_split} must be in (0, 1), e.g. 0.2.")
    _require(config.optimizer in OPTIMIZERS,
             f"--optimizer={config.optimizer} is not supported; choose one of: {', '.join(OPTIMIZERS)}.")
    _require(config.seed >= 0, f"--seed={config.seed} must be >= 0.")
    _require(config.weights is None or config.weights in WEIGHTS,
             f"--weights={config.weights} is not supported; leave it empty or use: {', '.join(WEIGHTS)}.")
    _validate_dataset(config)
    _validate_distillation(config)
    _require(config.prune in PRUNE_METHODS,
             f"--prune={config.prune} is not supported; choose one of: {', '.join(PRUNE_METHODS)}.")
    _require(0 < config.prune_sparsity < 1,
             f"--prune_sparsity={config.prune_sparsity} must be strictly between 0 and 1, e.g. 0.5.")
    if config.prune == "channels":
        _require((config.prune_ratio is None) != (config.target_macs is None),
                 "--prune=channels needs exactly one of --prune_ratio (e.g. 0.3) or --target_macs (e.g. 200000000).")
        _require(config.prune_ratio is None or 0 < config.prune_ratio < 1,
                 f"--prune_ratio={config.prune_ratio} must be strictly between 0 and 1, e.g. 0.3.")
        _require(config.target_macs is None or config.target_macs > 0,
                 f"--target_macs={config.target_macs} must be a positive number of multiply-adds.")
        _require(config.prune_iterations >= 1, f"--prune_iterations={config.prune_iterations} must be >= 1.")
        _require(config.prune_l1 >= 0, f"--prune_l1={config.prune_l1} must be >= 0 (e.g. {DEFAULT_PRUNE_L1:g}).")
        _require(config.prune_criterion in PRUNE_CRITERIA, f"--prune_criterion={config.prune_criterion} is not "
                 f"supported; choose one of: {', '.join(PRUNE_CRITERIA)}.")
    else:
        _require(config.prune_ratio is None and config.target_macs is None,
                 "--prune_ratio and --target_macs apply only to --prune=channels.")
    _require(config.quantize in QUANTIZATIONS,
             f"--quantize={config.quantize} is not supported; choose one of: {', '.join(QUANTIZATIONS)}.")
    _require(config.io_dtype in IO_DTYPES,
             f"--io_dtype={config.io_dtype} is not supported; choose one of: {', '.join(IO_DTYPES)}.")
    _require(not config.qat or config.quantize == "int8",
             f"--qat trains for int8 inference; use it with --quantize=int8, not --quantize={config.quantize}.")
    _require(config.device in DEVICES,
             f"--device={config.device} is not supported; choose one of: {', '.join(DEVICES)}.")
    _require(config.num_threads > 0, f"--num_threads={config.num_threads} must be a positive integer.")
    _require(config.strategy in STRATEGIES,
             f"--strategy={config.strategy} is not supported; choose one of: {', '.join(STRATEGIES)}.")
    _require(config.strategy != "tpu" or bool(config.tpu),
             "--strategy=tpu needs --tpu=ADDRESS (the TPU's name or grpc:// address, or 'local' on a TPU VM).")
    _require(not config.tpu or config.strategy == "tpu",
             f"--tpu={config.tpu} is only used with --strategy=tpu; add --strategy=tpu or drop --tpu.")
    _require(config.strategy != "multi_worker" or bool(config.output_dir),
             "--strategy=multi_worker needs --output_dir: every worker must name the same run directory, on "
             "storage all of them see (a shared file system or gs://).")
    if config.package_app:
        _require(Path(config.package_app).is_dir(),
                 f"--package_app={config.package_app} is not a directory; point it at the Android app "
                 f"(e.g. android_demo).")
    if config.output_dir:
        output = Path(config.output_dir)
        _require(not output.exists() or output.is_dir(),
                 f"--output_dir={config.output_dir} exists and is not a directory; choose another path.")


def _validate_dataset(config: RunConfig) -> None:
    kind = config.dataset_kind
    if kind == "tfds":
        _require(len(config.dataset) > len(TFDS_PREFIX),
                 f"--dataset={config.dataset} names no dataset; use e.g. --dataset=tfds:imagenette/160px-v2.")
    elif kind == "folder":
        path = Path(config.dataset)
        _require(path.exists(),
                 f"--dataset={config.dataset} does not exist; give 'digits', 'tfds:NAME' or a folder of class "
                 f"sub-folders.")
        _require(path.is_dir(),
                 f"--dataset={config.dataset} is not a folder; give a folder with one sub-folder of images per "
                 f"class.")


def _validate_distillation(config: RunConfig) -> None:
    _require(not (config.teacher and config.teacher_checkpoint),
             "--teacher and --teacher_checkpoint both given; use --teacher to train one in this run, or "
             "--teacher_checkpoint to load a trained one, not both.")
    if config.teacher_checkpoint:
        _require(Path(config.teacher_checkpoint).exists(),
                 f"--teacher_checkpoint={config.teacher_checkpoint} does not exist; give a .keras file or a run "
                 f"directory that holds model.keras.")
    _require(config.distill_temperature > 0,
             f"--distill_temperature={config.distill_temperature} must be > 0 (typically 2-8).")
    _require(0 <= config.distill_alpha <= 1,
             f"--distill_alpha={config.distill_alpha} must be in [0, 1] (the weight of the hard-label loss).")
    _require(not config.distill_compare or config.distill,
             "--distill_compare needs a teacher; add --teacher=NAME or --teacher_checkpoint=PATH.")


# --- the run directory ---------------------------------------------------------------------------------------
def default_output_dir(model: str, root: Path = Path("runs"), now: datetime.datetime | None = None) -> Path:
    """`runs/<model>-<timestamp>/`, a new directory per run."""
    stamp = (now or datetime.datetime.now()).strftime("%Y%m%d-%H%M%S")
    return root / f"{model}-{stamp}"


def read_config(run_dir: Path) -> dict[str, Any] | None:
    """The configuration recorded in `run_dir/config.json`, or None where the directory has none."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ConfigError(
            f"{path} is unreadable ({error}); this run directory is damaged: choose another --output_dir."
        ) from error


def check_run_dir(run_dir: Path, config: RunConfig) -> bool:
    """Refuse a run directory that holds another configuration's run; True where it holds this one's.

    Reads only: a refused directory is left exactly as it was.
    """
    run_dir = Path(run_dir)
    recorded = read_config(run_dir)
    if recorded is None:
        # A worker may create workers/ before the chief writes config.json: that alone is still an empty run.
        if run_dir.is_dir() and any(path.name != WORKERS_DIR for path in run_dir.iterdir()):
            raise ConfigError(
                f"--output_dir={run_dir} is not empty and holds no {CONFIG_FILE}, so it is not a run directory; "
                f"choose a new or empty directory."
            )
        return False
    mine = config.reproducibility_dict()
    # A setting added after that run was recorded has its default there: a new field's default keeps the old behaviour.
    added = {field.name: field.default for field in dataclasses.fields(RunConfig)
             if field.default is not dataclasses.MISSING and field.name not in recorded.get("config", {})}
    theirs = {key: value for key, value in {**added, **recorded.get("config", {})}.items()
              if key not in NON_REPRODUCIBILITY_FIELDS}
    differences = sorted(key for key in set(mine) | set(theirs) if mine.get(key) != theirs.get(key))
    if differences:
        shown = ", ".join(f"{key}: {theirs.get(key)!r} there vs {mine.get(key)!r} now" for key in differences[:3])
        more = f" and {len(differences) - 3} more" if len(differences) > 3 else ""
        raise ConfigError(
            f"--output_dir={run_dir} belongs to a run with a different configuration ({shown}{more}); "
            f"rerun with the same flags to resume it, or choose a new --output_dir."
        )
    return True


def write_config(run_dir: Path, config: RunConfig) -> None:
    """Record the configuration (and its fingerprint) in `run_dir/config.json`, atomically."""
    payload = {"fingerprint": config.fingerprint(), "config": config.to_dict()}
    write_json_atomic(Path(run_dir) / CONFIG_FILE, payload)


def find_unfinished_run(root: Path, config: RunConfig, is_finished) -> Path | None:
    """The newest run directory under `root` with this configuration whose run did not finish, if any."""
    if not root.is_dir():
        return None
    candidates = sorted(
        (path for path in root.iterdir() if path.is_dir() and path.name.startswith(f"{config.model}-")),
        reverse=True,
    )
    for path in candidates:
        recorded = read_config_quietly(path)
        if recorded and recorded.get("fingerprint") == config.fingerprint() and not is_finished(path):
            return path
    return None


def read_config_quietly(run_dir: Path) -> dict[str, Any] | None:
    try:
        return read_config(run_dir)
    except ConfigError:
        return None
