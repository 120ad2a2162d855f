"""One run's configuration, declared once: every setting is a `RunConfig` field that carries its section, its
help text, its allowed values and whether it changes the run's numbers. `pipeline.run` generates its flags from
these declarations; each stage's resume fingerprint covers the sections it declares (docs/design.md, "Stages").

This module does not import TensorFlow, so a bad flag is reported in about a second.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

from export.choices import IO_DTYPES, QUANTIZATIONS, REMEDY_MODES, SCORES
from models.choices import PRUNE_CRITERIA

DIGITS = "digits"
TFDS_PREFIX = "tfds:"
OPTIMIZERS = ("adam", "sgd")
SPARSIFY_METHODS = ("2:4", "xnnpack", "magnitude")  # TF-MOT: zeros weights, stored sparse
SLIM_METHOD = "channels"  # Network Slimming: removes channels, so the model is dense and smaller
PRUNE_METHODS = ("none", *SPARSIFY_METHODS, SLIM_METHOD)
DEVICES = ("host", "adb", "none")
STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")  # tf.distribute; see pipeline/distribute.py
WEIGHTS = ("imagenet",)
SECTIONS = ("data", "train", "distill", "sparsify", "slim", "qat", "convert", "benchmark", "package", "runtime")

# Networks have a total stride of 32; the registry refuses anything smaller. Above 1024 px a batch of training
# images no longer fits in memory on a laptop, and no mobile classifier runs at that size.
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 32, 1024


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


# Digits at 32 px (the smallest input the networks take) keeps the default command inside its 5-minute budget;
# photos default to imagenette-96's size and the 12-epoch recipe (docs/design.md, "Training defaults").
DIGITS_DEFAULTS = DatasetDefaults(image_size=32, epochs=20, batch_size=64, width_multiplier=1.0, flip=False)
PHOTO_DEFAULTS = DatasetDefaults(image_size=96, epochs=12, batch_size=64, width_multiplier=1.0, flip=True)

DEFAULT_LEARNING_RATE = {"adam": 2e-3, "sgd": 0.1}
# Decoupled weight decay on kernels only; Keras scales it by the learning rate (docs/design.md, "Training defaults").
DEFAULT_WEIGHT_DECAY = {"adam": 2e-2, "sgd": 5e-4}
# Network Slimming's lambda for short Adam runs (docs/design.md, "Channel slimming").
DEFAULT_PRUNE_L1 = 3e-3


def setting(default: Any, section: str, help: str, *, choices: tuple[str, ...] | None = None,
            reproducible: bool = True) -> Any:
    """Declare one setting: its flag (same name), section, help text, allowed values, and whether it changes the
    numbers a run produces (a run directory can be resumed with other values of the settings that do not)."""
    assert section in SECTIONS, section
    return dataclasses.field(default=default, metadata={
        "section": section, "help": help, "choices": choices, "reproducible": reproducible})


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Everything that decides what a run computes. `None` means "the dataset's default" until `resolved()`."""

    # --- data
    dataset: str = setting(DIGITS, "data", "'digits' (built in, offline), a folder of class sub-folders (with train/ "
                           "and val/ if present), or tfds:NAME (needs tensorflow-datasets).")
    val_split: float = setting(0.2, "data", "Held-out fraction where the dataset has no validation split.")
    image_size: int | None = setting(None, "data", "Input size in pixels, 32..1024 (default: 32 for digits, 96 "
                                     "for photos).")
    # --- train
    model: str = setting("mobilenet_v3_small", "train", "Network from the zoo (models.available()).")
    width_multiplier: float | None = setting(None, "train", "Width multiplier alpha (default: the dataset's, 1.0).")
    epochs: int | None = setting(None, "train", "Training epochs (default: 20 for digits, 12 for photos).")
    batch_size: int | None = setting(None, "train", "Batch size per replica (default 64).")
    learning_rate: float | None = setting(None, "train", "Peak learning rate, cosine-decayed (default: adam 2e-3, "
                                          "sgd 0.1).")
    optimizer: str = setting("adam", "train", "adam (AdamW) or sgd (Nesterov momentum 0.9).", choices=OPTIMIZERS)
    weight_decay: float | None = setting(None, "train", "Decoupled weight decay on kernels (default: adam 2e-2, "
                                         "sgd 5e-4).")
    label_smoothing: float = setting(0.1, "train", "Label smoothing of the cross-entropy.")
    bn_momentum: float | None = setting(None, "train", "BatchNorm momentum (default: chosen from the number of "
                                        "training steps).")
    seed: int = setting(0, "train", "Random seed: the same seed gives the same numbers.")
    weights: str | None = setting(None, "train", "'imagenet' to start from keras.applications' ImageNet weights.",
                                  choices=WEIGHTS)
    # --- distill
    teacher: str | None = setting(None, "distill", "Train this network as a teacher first, then distill it into "
                                  "--model.")
    teacher_width_multiplier: float = setting(1.0, "distill", "Width multiplier of the --teacher network.")
    teacher_checkpoint: str | None = setting(None, "distill", "Distill from this trained teacher (.keras file or "
                                             "run directory).")
    distill_temperature: float = setting(4.0, "distill", "Distillation temperature T > 0.")
    distill_alpha: float = setting(0.5, "distill", "Weight of the hard-label loss; 1 - alpha weighs the soft "
                                   "targets.")
    distill_compare: bool = setting(False, "distill", "Also train the student alone for the same epochs; report "
                                    "both.")
    # --- sparsify (TF-MOT) and slim (channel removal) share the --prune choice
    prune: str = setting("none", "sparsify", "none | 2:4 | xnnpack | magnitude (TF-MOT sparsity: zeros weights) | "
                         "channels (Network Slimming: removes channels, so the model gets faster).",
                         choices=PRUNE_METHODS)
    prune_sparsity: float = setting(0.5, "sparsify", "Target sparsity in (0, 1) for xnnpack and magnitude pruning.")
    prune_epochs: int | None = setting(None, "sparsify", "Fine-tuning epochs while pruning (default: epochs / 4).")
    prune_ratio: float | None = setting(None, "slim", "--prune=channels: fraction of prunable channels to remove, "
                                        "in (0, 1).")
    target_macs: int | None = setting(None, "slim", "--prune=channels: prune until the model has at most this "
                                      "many MACs.")
    prune_iterations: int = setting(1, "slim", "--prune=channels: rounds of pruning and fine-tuning (each "
                                    "--prune_epochs) after the sparsity training.")
    prune_l1: float = setting(DEFAULT_PRUNE_L1, "slim", "--prune=channels: L1 weight on the gamma of "
                              "channel-ranking BatchNorms during training (Network Slimming's lambda).")
    prune_criterion: str = setting("gamma", "slim", "--prune=channels: how channels are ranked: gamma (|gamma|) or "
                                   "gamma_per_mac (|gamma| per multiply-add the channel costs).",
                                   choices=PRUNE_CRITERIA)
    # --- qat
    qat: bool = setting(False, "qat", "Quantization-aware fine-tuning (TF-MOT) before int8 conversion.")
    qat_epochs: int | None = setting(None, "qat", "Quantization-aware fine-tuning epochs (default: epochs / 4).")
    # --- convert
    quantize: str = setting("int8", "convert", "int8 (full-integer post-training) | float16 | dynamic | none.",
                            choices=QUANTIZATIONS)
    io_dtype: str = setting("float32", "convert", "Input/output type of an int8 model: float32 (one QUANTIZE / "
                            "DEQUANTIZE at the edges: what MediaPipe and the Support Library load as they are), uint8, "
                            "or int8 (raw; MediaPipe refuses it).", choices=IO_DTYPES)
    scores: str = setting("probabilities", "convert", "What the deployed models output: probabilities (a final "
                          "softmax, so clients show scores in [0, 1]) or logits.", choices=SCORES)
    int8_remedies: str = setting("auto", "convert", "Post-training int8 remedies (per-tensor MSE ranges, bias correction): "
                                 "auto tries them when int8 agrees with float on fewer than --int8_min_agreement of "
                                 "held-back training images and keeps one only if it is significantly better; always; "
                                 "never.", choices=REMEDY_MODES)
    int8_min_agreement: float = setting(0.97, "convert", "The int8 model's top-1 agreement with float below which "
                                        "--int8_remedies=auto tries the remedies.")
    # --- benchmark
    device: str = setting("host", "benchmark", "Where to benchmark: host (LiteRT here) | adb (a phone) | none.",
                          choices=DEVICES, reproducible=False)
    serial: str | None = setting(None, "benchmark", "--device=adb: the phone's serial when several are attached "
                                 "(default: $ANDROID_SERIAL).", reproducible=False)
    benchmark_binary: str | None = setting(None, "benchmark", "--device=adb: the benchmark_model binary for the "
                                           "phone's ABI (default: $BENCHMARK_MODEL_BINARY).", reproducible=False)
    num_threads: int = setting(1, "benchmark", "Benchmark threads.", reproducible=False)
    # --- package
    model_author: str = setting("", "package", "Author written into the models' metadata (default: the product's "
                                "name).")
    model_license: str = setting("", "package", "License written into the models' metadata (default: "
                                 "'unspecified').")
    client_check: bool = setting(True, "package", "Classify the held-out images with MediaPipe Tasks' "
                                 "ImageClassifier, from its own environment (.venv-client, README \"Using the model in "
                                 "an app\"); skipped, saying so, where that environment is absent.", reproducible=False)
    package_app: str | None = setting(None, "package", "Package the model into this Android app directory (e.g. "
                                      "android_demo).", reproducible=False)
    # --- runtime
    output_dir: str | None = setting(None, "runtime", "Run directory (default: a new runs/<model>-<timestamp>/, or "
                                     "the newest unfinished run of the same configuration).", reproducible=False)
    strategy: str = setting("default", "runtime", "tf.distribute strategy: default | mirrored (all local GPUs) | "
                            "multi_worker (cluster from TF_CONFIG) | tpu (--tpu).", choices=STRATEGIES)
    tpu: str | None = setting(None, "runtime", "With --strategy=tpu: the TPU's name or grpc:// address, or 'local' on "
                              "a TPU VM.", reproducible=False)

    # --- derived facts -------------------------------------------------------------------------------------
    @property
    def dataset_kind(self) -> str:
        """`digits`, `tfds` or `folder`."""
        if self.dataset == DIGITS:
            return "digits"
        return "tfds" if self.dataset.startswith(TFDS_PREFIX) else "folder"

    @property
    def defaults(self) -> DatasetDefaults:
        return DIGITS_DEFAULTS if self.dataset_kind == "digits" else PHOTO_DEFAULTS

    @property
    def distill(self) -> bool:
        return bool(self.teacher or self.teacher_checkpoint)

    @property
    def sparsify(self) -> bool:
        return self.prune in SPARSIFY_METHODS

    @property
    def slim(self) -> bool:
        return self.prune == SLIM_METHOD

    @property
    def stem_padding(self) -> str:
        """`symmetric` where TF-MOT's XNNPACK sparsity policy needs it; otherwise keras.applications' `same`."""
        return "symmetric" if self.prune == "xnnpack" else "same"

    def resolved(self) -> "RunConfig":
        """A copy with every `None` default filled in for this dataset and optimizer (what config.json records)."""
        defaults = self.defaults
        epochs = self.epochs if self.epochs is not None else defaults.epochs
        fine_tune_epochs = max(1, round(epochs / 4))

        def chosen(value, default):
            return value if value is not None else default

        return dataclasses.replace(
            self,
            width_multiplier=chosen(self.width_multiplier, defaults.width_multiplier),
            image_size=chosen(self.image_size, defaults.image_size),
            epochs=epochs,
            batch_size=chosen(self.batch_size, defaults.batch_size),
            learning_rate=chosen(self.learning_rate, DEFAULT_LEARNING_RATE.get(self.optimizer)),
            weight_decay=chosen(self.weight_decay, DEFAULT_WEIGHT_DECAY.get(self.optimizer)),
            prune_epochs=chosen(self.prune_epochs, fine_tune_epochs),
            qat_epochs=chosen(self.qat_epochs, fine_tune_epochs),
            teacher_checkpoint=str(Path(self.teacher_checkpoint).resolve()) if self.teacher_checkpoint else None,
        )

    def validate(self, available_models: list[str] | None = None) -> None:
        """Raise `ConfigError` (one line: what is wrong, how to fix it) for the first bad setting."""
        from pipeline.validation import validate

        validate(self, available_models)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "RunConfig":
        return from_known_fields(cls, values)

    def section(self, name: str) -> dict[str, Any]:
        """The reproducible settings of one section: what a stage declaring it has in its fingerprint."""
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)
                if field.metadata["section"] == name and field.metadata["reproducible"]}

    def reproducibility_dict(self) -> dict[str, Any]:
        """The settings that decide the run's numbers (everything but where it writes and benchmarks)."""
        return {name: value for section in SECTIONS for name, value in self.section(section).items()}

    def fingerprint(self) -> str:
        """A short hash of `reproducibility_dict()`; equal fingerprints mean the same computation."""
        return hashlib.sha256(json.dumps(self.reproducibility_dict(), sort_keys=True).encode()).hexdigest()[:16]

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


def from_known_fields(cls: type, values: dict[str, Any]) -> Any:
    """A `cls` dataclass from `values`, ignoring keys it has no field for (a record written by another version)."""
    names = {field.name for field in dataclasses.fields(cls)}
    return cls(**{key: value for key, value in values.items() if key in names})


def declarations() -> list[dataclasses.Field]:
    """Every setting's declaration, in flag order (pipeline.run defines one flag per entry)."""
    return list(dataclasses.fields(RunConfig))


NON_REPRODUCIBILITY_FIELDS = tuple(field.name for field in declarations() if not field.metadata["reproducible"])
