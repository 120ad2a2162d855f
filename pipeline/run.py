"""`python -m pipeline.run --model mobilenet_v3_small`: train, distill, prune, quantize, convert, verify, benchmark.

This module only turns absl flags into a `RunConfig` and hands it to `pipeline.workflow`. A bad flag or input
ends the command with one line on stderr saying what is wrong and how to fix it, and exit code 2, before the
run directory is touched.
"""
from __future__ import annotations

import logging
import sys
import typing
from pathlib import Path
from typing import Sequence

from absl import flags
from absl import logging as absl_logging

from export.tensorflow_logging import import_tensorflow, silence_tensorflow_logging

from pipeline import config as config_module
from pipeline import run_dir as run_dir_module
from pipeline.config import ConfigError, RunConfig

EXIT_BAD_INPUT = 2
EXIT_STAGE_FAILED = 1

FLAGS = flags.FLAGS
_DEFINE = {bool: flags.DEFINE_boolean, int: flags.DEFINE_integer, float: flags.DEFINE_float, str: flags.DEFINE_string}


def _define_flags() -> None:
    """One flag per RunConfig setting, with its declared default and help (pipeline.config declares them)."""
    hints = typing.get_type_hints(RunConfig)
    for field in config_module.declarations():
        kind = next(t for t in typing.get_args(hints[field.name]) or (hints[field.name],) if t is not type(None))
        _DEFINE[kind](field.name, field.default, field.metadata["help"])


_define_flags()
log = logging.getLogger("pipeline")


def config_from_flags() -> RunConfig:
    """The RunConfig the parsed flags describe (no validation yet)."""
    return RunConfig(**{field.name: getattr(FLAGS, field.name) for field in config_module.declarations()})


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
            select_device(config.serial)
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
    from export.client_check import ClientCheckError
    from export.convert import ConversionError
    from export.metadata import ModelMetadataError
    from pipeline.prune import PruningError
    from pipeline.quantize import QuantizationAwareTrainingError

    return (AdbError, PackagingError, ConversionError, PruningError, QuantizationAwareTrainingError,
            ModelMetadataError, ClientCheckError)


def resolve_run_dir(config: RunConfig) -> Path:
    """--output_dir, or the newest unfinished run of this configuration under runs/, or a new runs/ directory."""
    from pipeline.workflow import is_finished

    if config.output_dir:
        return Path(config.output_dir)
    unfinished = run_dir_module.find_unfinished_run(run_dir_module.DEFAULT_ROOT, config, is_finished)
    if unfinished is not None:
        log.info("resuming the unfinished run %s (same configuration)", unfinished)
        return unfinished
    return run_dir_module.default_output_dir(config.model)


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
    # TensorFlow's start-up lines would bury a one-line error; -v 1 (absl's --verbosity) shows them.
    silence_tensorflow_logging(verbose=absl_logging.get_verbosity() >= absl_logging.DEBUG)
    import_tensorflow()

    import models
    from pipeline import distribute, workflow
    from pipeline.data import DataError
    from pipeline.distill import TeacherError
    from pipeline.distribute import DistributionError

    lock = None
    try:
        config.validate(models.available())
        distribute.check_supported(config, config.strategy)  # before connecting to a TPU or a cluster
        # First TensorFlow work: a multi-worker strategy must exist before any op runs.
        strategy = distribute.create_strategy(config.strategy, config.tpu)
        config = config.resolved()
        _preflight(config)
        run_dir = resolve_run_dir(config)
        run_dir_module.check_writable(run_dir)
        resuming = run_dir_module.check_run_dir(run_dir, config)
        lock = run_dir_module.RunLock(distribute.worker_run_dir(run_dir, strategy))
        if resuming:  # refuse a directory another run is working in now, before loading anything
            lock.acquire()
        log.info("run directory %s (%s)", run_dir, "resuming" if resuming else "new")
        log.info("%s", config.describe_defaults())
        data = workflow.prepare(config, strategy)
        if lock.handle is None:  # a new directory is created only once the input is known to be good
            lock.acquire()
        return _run(config, run_dir, data, strategy)
    except (ConfigError, DataError, TeacherError, DistributionError) as error:
        return _fail(str(error))
    finally:
        if lock is not None:
            lock.release()


def _run(config: RunConfig, run_dir: Path, data, strategy) -> int:
    """Run the stages in the locked run directory and print the summary; typed failures as one line."""
    from pipeline import distribute, report, workflow
    from pipeline.model_files import ModelFileError

    try:
        metrics = workflow.run(config, run_dir, data, strategy=strategy)
    except _stage_errors() as error:
        print(f"pipeline.run: error: {str(error).strip().splitlines()[0]} (finished stages are kept in {run_dir}; "
              f"rerun the same command to resume)", file=sys.stderr)
        return EXIT_STAGE_FAILED
    except ModelFileError as error:  # a model file in the run directory that would run code when loaded
        return _fail(str(error))
    except OSError as error:  # a full disk or a directory made read-only mid-run: files written stay valid
        return _fail(f"could not write in {run_dir}: {error.strerror or error} (finished stages are kept; fix it and "
                     f"rerun the same command to resume)")
    if not metrics:  # a multi-worker cluster's non-chief worker: the chief writes and reports
        print(f"worker {distribute.task(strategy)}: training done; the chief writes the run directory {run_dir}")
        return 0
    print()
    print(report.summary_table(metrics))
    print(f"run directory: {run_dir.resolve()}")
    return 0

if __name__ == "__main__":
    sys.exit(main(sys.argv))
