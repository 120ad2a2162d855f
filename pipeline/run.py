"""`python -m pipeline.run --model mobilenet_v3_small`: train, distill, prune, quantize, convert, verify, benchmark.

This module only turns absl flags into a `RunConfig` and hands it to `pipeline.workflow`. A bad flag or input
ends the command with one line on stderr saying what is wrong and how to fix it, and exit code 2, before the
run directory is touched.
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Sequence

from absl import flags

from pipeline import config as config_module
from pipeline.config import DEFAULT_PRUNE_L1, ConfigError, RunConfig

EXIT_BAD_INPUT = 2
EXIT_STAGE_FAILED = 1

FLAGS = flags.FLAGS
flags.DEFINE_string("model", "mobilenet_v3_small", "Network from the zoo (models.available()).")
flags.DEFINE_float("width_multiplier", None, "Width multiplier alpha (default: the dataset's, 1.0).")
flags.DEFINE_integer("image_size", None, "Input size in pixels, >= 32 (default: 32 for digits, 96 for photos).")
flags.DEFINE_string("dataset", "digits", "'digits' (built in, offline), a folder of class sub-folders (with "
                    "train/ and val/ if present), or tfds:NAME (needs tensorflow-datasets).")
flags.DEFINE_float("val_split", 0.2, "Held-out fraction where the dataset has no validation split.")
flags.DEFINE_integer("epochs", None, "Training epochs (default: 20 for digits, 12 for photos).")
flags.DEFINE_integer("batch_size", None, "Batch size (default 64).")
flags.DEFINE_float("learning_rate", None, "Peak learning rate, cosine-decayed (default: adam 2e-3, sgd 0.1).")
flags.DEFINE_string("optimizer", "adam", "adam (AdamW) or sgd (Nesterov momentum 0.9).")
flags.DEFINE_float("weight_decay", None, "Decoupled weight decay on kernels (default: adam 2e-2, sgd 5e-4).")
flags.DEFINE_float("label_smoothing", 0.1, "Label smoothing of the cross-entropy.")
flags.DEFINE_float("bn_momentum", None, "BatchNorm momentum (default: chosen from the number of training steps).")
flags.DEFINE_integer("seed", 0, "Random seed: the same seed gives the same numbers.")
flags.DEFINE_string("weights", None, "'imagenet' to start from keras.applications' ImageNet weights.")
flags.DEFINE_string("output_dir", None, "Run directory (default: a new runs/<model>-<timestamp>/, or the newest "
                    "unfinished run of the same configuration, which is resumed).")
flags.DEFINE_string("teacher", None, "Train this network as a teacher first, then distill it into --model.")
flags.DEFINE_float("teacher_width_multiplier", 1.0, "Width multiplier of the --teacher network.")
flags.DEFINE_string("teacher_checkpoint", None, "Distill from this trained teacher (.keras file or run directory).")
flags.DEFINE_float("distill_temperature", 4.0, "Distillation temperature T > 0.")
flags.DEFINE_float("distill_alpha", 0.5, "Weight of the hard-label loss; 1 - alpha weighs the soft targets.")
flags.DEFINE_boolean("distill_compare", False, "Also train the student alone for the same epochs; report both.")
flags.DEFINE_string("prune", "none", "none | 2:4 | xnnpack | magnitude (TF-MOT, zeros weights) | channels (Network "
                    "Slimming: removes channels, so the model gets faster).")
flags.DEFINE_float("prune_ratio", None, "--prune=channels: fraction of prunable channels to remove, in (0, 1).")
flags.DEFINE_integer("target_macs", None, "--prune=channels: prune until the model has at most this many MACs.")
flags.DEFINE_integer("prune_iterations", 1, "--prune=channels: rounds of pruning and fine-tuning (each --prune_epochs) after "
                     "the sparsity training (training with L1 on BatchNorm gamma).")
flags.DEFINE_float("prune_l1", DEFAULT_PRUNE_L1, "--prune=channels: L1 weight on the gamma of channel-ranking "
                   "BatchNorms during the sparsity training (Network Slimming's lambda).")
flags.DEFINE_string("prune_criterion", "gamma", "--prune=channels: how channels are ranked for removal: gamma "
                    "(|gamma|, Network Slimming) or gamma_per_mac (|gamma| per multiply-add a channel costs: a MAC "
                    "budget is met removing less |gamma|, channels on large feature maps first).")
flags.DEFINE_float("prune_sparsity", 0.5, "Target sparsity in (0, 1) for xnnpack and magnitude pruning.")
flags.DEFINE_integer("prune_epochs", None, "Fine-tuning epochs while pruning (default: epochs / 4).")
flags.DEFINE_boolean("qat", False, "Quantization-aware fine-tuning (TF-MOT) before int8 conversion.")
flags.DEFINE_integer("qat_epochs", None, "Quantization-aware fine-tuning epochs (default: epochs / 4).")
flags.DEFINE_string("quantize", "int8", "int8 (full-integer post-training) | float16 | dynamic | none.")
flags.DEFINE_string("io_dtype", "int8", "Input/output type of an int8 model: int8 or uint8.")
flags.DEFINE_string("device", "host", "Where to benchmark: host (LiteRT here) | adb (a phone) | none.")
flags.DEFINE_string("benchmark_binary", None, "--device=adb: the benchmark_model binary for the phone's ABI "
                    "(default: $BENCHMARK_MODEL_BINARY; BUILD.md says where to get it).")
flags.DEFINE_integer("num_threads", 1, "Benchmark threads.")
flags.DEFINE_string("package_app", None, "Package the model into this Android app directory (e.g. android_demo).")
flags.DEFINE_string("strategy", "default", "tf.distribute strategy: default | mirrored (all local GPUs) | "
                    "multi_worker (cluster from TF_CONFIG) | tpu (--tpu). --batch_size is per replica.")
flags.DEFINE_string("tpu", None, "With --strategy=tpu: the TPU's name or grpc:// address, or 'local' on a TPU VM.")

_CONFIG_FIELDS = [name for name in RunConfig.__dataclass_fields__]
log = logging.getLogger("pipeline")


def config_from_flags() -> RunConfig:
    """The RunConfig the parsed flags describe (no validation yet)."""
    return RunConfig(**{name: getattr(FLAGS, name) for name in _CONFIG_FIELDS})


def _fail(message: str) -> int:
    print(f"pipeline.run: error: {message}", file=sys.stderr)
    return EXIT_BAD_INPUT


def _parse(argv: Sequence[str]) -> None:
    FLAGS.unparse_flags()  # main() may run more than once in one process (tests)
    FLAGS(list(argv))


class _StdoutHandler(logging.StreamHandler):
    """Logs to whatever sys.stdout is now (so progress lines interleave with Keras' progress bars)."""

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, value):
        pass


def _setup_logging() -> None:
    logger = logging.getLogger("pipeline")
    if not any(isinstance(handler, _StdoutHandler) for handler in logger.handlers):
        handler = _StdoutHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


def _preflight(config: RunConfig) -> None:
    """Fail now, not after training, on what a later stage would refuse: the pruning method for this network,
    a missing phone or Android app."""
    from pipeline.prune import XNNPACK_SPARSE_NETWORKS

    if config.prune == "xnnpack" and config.model not in XNNPACK_SPARSE_NETWORKS:
        raise ConfigError(f"--prune=xnnpack works only for {', '.join(XNNPACK_SPARSE_NETWORKS)} (TF-MOT's XNNPACK "
                          f"sparsity policy rejects {config.model}'s layers); use --prune=2:4 or --prune=magnitude.")
    if config.weights:
        import models
        from models.imagenet_weights import WeightsDownloadError

        try:  # downloads (or reads Keras' cache) now, not after the data stage
            models.build(config.model, input_shape=(config.image_size, config.image_size, 3),
                         width_multiplier=config.width_multiplier, weights=config.weights, padding=config.stem_padding)
        except (ValueError, WeightsDownloadError) as error:
            raise ConfigError(f"--weights={config.weights}: {str(error).strip().splitlines()[0]}") from error
    if config.device == "adb":
        from export.adb import AdbError, resolve_benchmark_binary, select_device

        try:
            select_device()
            resolve_benchmark_binary(config.benchmark_binary)
        except AdbError as error:
            raise ConfigError(f"--device=adb: {str(error).splitlines()[0]} (or use --device=host)") from error
    if config.package_app:
        from export.android import MANIFEST

        if not (Path(config.package_app) / MANIFEST).is_file():
            raise ConfigError(f"--package_app={config.package_app} is not the Android demo project (no {MANIFEST}); "
                              f"point it at android_demo.")


def _stage_errors() -> tuple[type[Exception], ...]:
    """The typed errors a stage raises with a message meant for the user (no traceback needed)."""
    from export.adb import AdbError
    from export.android import PackagingError
    from export.convert import ConversionError
    from pipeline.prune import PruningError
    from pipeline.quantize import QuantizationAwareTrainingError

    return AdbError, PackagingError, ConversionError, PruningError, QuantizationAwareTrainingError


def resolve_run_dir(config: RunConfig) -> Path:
    """--output_dir, or the newest unfinished run of this configuration under runs/, or a new runs/ directory."""
    from pipeline.workflow import is_finished

    if config.output_dir:
        return Path(config.output_dir)
    root = Path("runs")
    unfinished = config_module.find_unfinished_run(root, config, is_finished)
    if unfinished is not None:
        log.info("resuming the unfinished run %s (same configuration)", unfinished)
        return unfinished
    return config_module.default_output_dir(config.model, root)


def main(argv: Sequence[str]) -> int:
    """Parse flags, validate, run the stages; 0 on success, 2 on bad input (one line on stderr)."""
    if any(arg in ("-h", "--help", "--helpshort", "--helpfull") for arg in argv[1:]):
        print(FLAGS.module_help(sys.modules[__name__]))
        return 0
    try:
        _parse(argv)
        config = config_from_flags()
        config.validate()  # everything that needs no TensorFlow: answers a typo in about a second
    except flags.Error as error:
        return _fail(f"{str(error).splitlines()[0]} (see --help)")
    except ConfigError as error:
        return _fail(str(error))
    _setup_logging()

    import models
    from pipeline import distribute, report, workflow
    from pipeline.data import DataError
    from pipeline.distill import TeacherError
    from pipeline.distribute import DistributionError

    try:
        config.validate(models.available())
        distribute.check_supported(config, config.strategy)  # before connecting to a TPU or a cluster
        # First TensorFlow work: a multi-worker strategy must exist before any op runs.
        strategy = distribute.create_strategy(config.strategy, config.tpu)
        config = config.resolved()
        _preflight(config)
        run_dir = resolve_run_dir(config)
        resuming = config_module.check_run_dir(run_dir, config)
        log.info("run directory %s (%s)", run_dir, "resuming" if resuming else "new")
        log.info("%s", config.describe_defaults())
        data = workflow.prepare(config, strategy)
    except (ConfigError, DataError, TeacherError, DistributionError) as error:
        return _fail(str(error))

    try:
        metrics = workflow.run(config, run_dir, data, strategy=strategy)
    except _stage_errors() as error:
        print(f"pipeline.run: error: {str(error).strip().splitlines()[0]} (finished stages are kept in {run_dir}; "
              f"rerun the same command to resume)", file=sys.stderr)
        return EXIT_STAGE_FAILED
    if not metrics:  # a multi-worker cluster's non-chief worker: the chief writes and reports
        print(f"worker {distribute.task(strategy)}: training done; the chief writes the run directory {run_dir}")
        return 0
    print()
    print(report.summary_table(metrics))
    print(f"run directory: {run_dir.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
