"""`python -m pipeline.accuracy_bench --dataset ../shared/datasets/imagenette-96`: the pipeline's accuracy targets.

Each experiment is one ordinary `python -m pipeline.run` command (a subprocess, its output in `<name>.log`) in
its own run directory under `--output_dir`, so what is measured is exactly what a user gets, and a rerun of this
script resumes: finished runs are read back, an interrupted one resumes at its last checkpoint. The targets:

- quantization (every network, one `--qat` run per seed of `--seeds`): int8 post-training quantization within 1.0
  point of the float model and agreeing with it on >= 95% of the held-out images (>= 97% where the float model
  is above 65%), int8 after quantization-aware training within 0.5 point (all of the same trained float model);
- distillation: mobilenet_v2 1.0 (its own run, trained on hard labels) into shufflenet_v2 0.5x and
  mobilenet_v3_small 0.75 beats the same student trained alone for the same epochs (`--distill_compare`), for
  every student seed of `--student_seeds` (a gain of a few images is within what a seed moves: the target counts
  only where every seed gains);
- prune_2_4: 2:4 sparsity (50%) loses at most 1.5 points after fine-tuning;
- channels: Network Slimming removes >= 30% of MobileNetV2 1.0's MACs, loses at most 1 point against the
  unpruned network trained for the same total epochs, and cuts its int8 latency by >= 20% (both int8 models
  timed interleaved in this process: a ratio from one measurement, not two).

Writes `accuracy_bench.json` (every number, the commands) and `accuracy_bench.md` (the tables), and prints them.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from absl import app, flags

from export import layout
from export.files import write_json_atomic, write_text_atomic
from pipeline.accuracy_report import (channels_row, distillation_row, markdown_report, prune_2_4_row,
                                      quantization_row)

SUITES = ("quantization", "distillation", "prune_2_4", "channels")
QUANTIZATION_NETWORKS = (  # (network, width): widths chosen to keep the suite within a CPU budget
    ("mobilenet_v3_small", 1.0), ("shufflenet_v2", 1.0), ("mobilenet_v2", 1.0), ("mobilenet_v1", 0.5),
    ("mobilenet_v3_large", 1.0), ("shufflenet_v1", 0.5),
)
TEACHER = ("mobilenet_v2", 1.0)
DISTILLATION_STUDENTS = (("shufflenet_v2", 0.5), ("mobilenet_v3_small", 0.75))
PRUNE_2_4_NETWORKS = (("mobilenet_v3_small", 1.0),)
CHANNEL_PRUNING_NETWORK = ("mobilenet_v2", 1.0)
# run-name prefix -> (how much to cut, how channels are ranked): a fraction of the prunable channels (--prune_ratio),
# or the fraction of the unpruned network's MACs to keep (--target_macs): the ratio removes fewer MACs than channels
# (small-|gamma| channels sit more often in layers on small feature maps), so a MAC goal such as -30% needs the MAC
# target. Ranked by |gamma| those MACs come off the small late feature maps, which at 224 px are not where the time
# goes; |gamma| per MAC (--prune_criterion) is meant to take them from the large maps first (measured: after L1
# training it picks nearly the same channels, README). A deeper cut (60%) shows what a latency goal at 224 px costs.
CHANNEL_PRUNING_CUTS = {"channels": ("--prune_ratio", 0.3, "gamma"), "channels_macs70": ("--target_macs", 0.7, "gamma"),
                        "channels_macs70_per_mac": ("--target_macs", 0.7, "gamma_per_mac"),
                        "channels_macs60": ("--target_macs", 0.6, "gamma")}

PTQ_AGREEMENT_FILE = "ptq_agreement.json"  # written into a quantization run's directory by this bench
DEFAULT_VAL_SPLIT = 0.2  # pipeline.run's default
EXIT_BAD_INPUT = 2


@dataclasses.dataclass(frozen=True)
class Experiment:
    name: str
    suite: str
    model: str
    width: float
    flags: tuple[str, ...] = ()
    epochs: int | None = None  # None: the bench's --epochs
    after: str | None = None  # an experiment whose run directory this one reads (the teacher)
    seed: int | None = None  # None: the bench's --seed


@dataclasses.dataclass(frozen=True)
class BenchSettings:
    dataset: str
    output_dir: Path
    image_size: int
    epochs: int
    fine_tune_epochs: int
    batch_size: int
    seed: int
    latency_repeats: int = 5  # interleaved timing rounds per channel-pruning pair
    student_seeds: tuple[int, ...] = ()  # seeds of each distillation student (and its alone twin); () = (seed,)
    seeds: tuple[int, ...] = ()  # seeds of each quantization network; () = (seed,)
    val_split: float = DEFAULT_VAL_SPLIT  # held-out fraction of a dataset without a val/ folder
    qat: bool = True  # False: the quantization suite measures post-training int8 alone (about half the time)
    networks: tuple[str, ...] = ()  # the quantization suite's networks; () = all of QUANTIZATION_NETWORKS


def experiments(settings: BenchSettings, suites: Sequence[str]) -> list[Experiment]:
    """Every run the chosen suites need, in the order they run (a teacher before its students)."""
    fine_tune = (f"--prune_epochs={settings.fine_tune_epochs}",)
    planned: list[Experiment] = []
    if "quantization" in suites:
        qat = ("--qat", f"--qat_epochs={settings.fine_tune_epochs}") if settings.qat else ()
        prefix = "quantization" if settings.qat else "ptq"  # another configuration: another run directory
        planned += [Experiment(seeded_run_name(f"{prefix}-{model}-{width:g}", seed, settings), "quantization",
                               model, width, qat, seed=seed)
                    for model, width in QUANTIZATION_NETWORKS if model in (settings.networks or (model,))
                    for seed in settings.seeds or (settings.seed,)]
    if "distillation" in suites:
        teacher_run = f"teacher-{TEACHER[0]}-{TEACHER[1]:g}"
        # Trained as `pipeline.run --teacher` trains one: on hard labels (no label smoothing).
        planned.append(Experiment(teacher_run, "teacher", *TEACHER, ("--label_smoothing=0", "--quantize=none")))
        # One teacher for every student seed: the seeds measure the comparison's noise, not the teacher's.
        planned += [Experiment(distillation_run_name(model, width, seed, settings), "distillation", model, width,
                               (f"--teacher_checkpoint={settings.output_dir / teacher_run}", "--distill_compare"),
                               after=teacher_run, seed=seed)
                    for model, width in DISTILLATION_STUDENTS for seed in settings.student_seeds or (settings.seed,)]
    if "prune_2_4" in suites:
        planned += [Experiment(f"prune_2_4-{model}-{width:g}", "prune_2_4", model, width, ("--prune=2:4", *fine_tune))
                    for model, width in PRUNE_2_4_NETWORKS]
    if "channels" in suites:
        model, width = CHANNEL_PRUNING_NETWORK
        # Sparsity training is the training itself (L1 on gamma); one pruning iteration adds fine_tune_epochs.
        total_epochs = settings.epochs + settings.fine_tune_epochs
        planned.append(Experiment(f"channels_baseline-{model}-{width:g}", "channels", model, width,
                                  epochs=total_epochs))
        for prefix, (flag, value, criterion) in CHANNEL_PRUNING_CUTS.items():
            if flag == "--target_macs":
                value = int(value * unpruned_macs(settings, model, width))
            ranking = () if criterion == "gamma" else (f"--prune_criterion={criterion}",)  # the default: same runs
            planned.append(Experiment(f"{prefix}-{model}-{width:g}", "channels", model, width,
                                      ("--prune=channels", f"{flag}={value}", *ranking, *fine_tune)))
    return planned


def distillation_run_name(model: str, width: float, seed: int, settings: BenchSettings) -> str:
    """The run directory name of one distillation student; seeds other than the bench's own are suffixed."""
    return seeded_run_name(f"distillation-{model}-{width:g}", seed, settings)


def seeded_run_name(name: str, seed: int, settings: BenchSettings) -> str:
    """`name` for the bench's own seed, `name-seedN` for another (the runs of earlier benches keep their names)."""
    return name if seed == settings.seed else f"{name}-seed{seed}"


def unpruned_macs(settings: BenchSettings, model: str, width: float) -> int:
    """MACs of the unpruned network at the bench's image size and the dataset's number of classes."""
    import models
    from models.complexity import analyze

    root = Path(settings.dataset)
    classes = [path for path in ((root / "train") if (root / "train").is_dir() else root).iterdir() if path.is_dir()]
    network = models.build(model, input_shape=(settings.image_size, settings.image_size, 3),
                           num_classes=max(len(classes), 2), width_multiplier=width)
    return int(analyze(network).macs)


def command(experiment: Experiment, settings: BenchSettings) -> list[str]:
    seed = settings.seed if experiment.seed is None else experiment.seed
    return [
        sys.executable, "-m", "pipeline.run", f"--model={experiment.model}",
        f"--width_multiplier={experiment.width:g}", f"--dataset={settings.dataset}",
        f"--image_size={settings.image_size}", f"--epochs={experiment.epochs or settings.epochs}",
        f"--batch_size={settings.batch_size}", f"--seed={seed}", "--device=none",
        f"--output_dir={settings.output_dir / experiment.name}", *experiment.flags,
        *([f"--val_split={settings.val_split:g}"] if settings.val_split != DEFAULT_VAL_SPLIT else []),
    ]


def run_experiment(experiment: Experiment, settings: BenchSettings) -> dict[str, Any]:
    """Run (or resume, or just read back) one experiment; its metrics.json plus the ledger's stage summaries."""
    run_dir = settings.output_dir / experiment.name
    if not (run_dir / layout.METRICS).is_file():
        log_path = settings.output_dir / f"{experiment.name}.log"
        print(f"[{time.strftime('%H:%M:%S')}] {experiment.name}: running (log: {log_path})", flush=True)
        with open(log_path, "a") as log:
            returncode = subprocess.call(command(experiment, settings), stdout=log, stderr=subprocess.STDOUT,
                                         cwd=Path(__file__).resolve().parents[1])
        if returncode != 0:
            raise RuntimeError(f"{experiment.name} failed (exit {returncode}); see {log_path}, then rerun to resume.")
    metrics = json.loads((run_dir / layout.METRICS).read_text())
    stages = json.loads((run_dir / layout.LEDGER).read_text())["stages"]
    return {"metrics": metrics, "stage_summaries": {name: record["summary"] for name, record in stages.items()},
            "command": " ".join(command(experiment, settings)[1:])}


def ptq_agreement(run_dir: Path, settings: BenchSettings, seed: int) -> float:
    """Top-1 agreement of a quantization run's int8 PTQ model (the QAT baseline, or without QAT its int8 model) with
    its trained float model on the run's held-out images (the run reloads its data with its seed), measured once and
    kept in the run directory."""
    cached = run_dir / PTQ_AGREEMENT_FILE
    if cached.is_file():
        return float(json.loads(cached.read_text())["agreement"])
    from export.evaluate import TFLiteClassifier, agreement
    from pipeline.data import load_data
    from pipeline.train import load_model

    data = load_data(settings.dataset, settings.image_size, settings.batch_size, settings.val_split, seed)
    images, _ = data.val_arrays()
    float_logits = load_model(run_dir / layout.TRAINED_MODEL).predict(images, batch_size=128, verbose=0)
    int8_path = run_dir / layout.PTQ_BASELINE_TFLITE
    if not int8_path.is_file():
        int8_path = run_dir / layout.quantized_tflite("int8")
    value = agreement(TFLiteClassifier(int8_path).logits(images), float_logits)
    write_json_atomic(cached, {"agreement": value, "num_images": len(images)})
    return value


def at_resolution(model, image_size: int):
    """The same network with the same weights, taking `image_size` inputs (every zoo layer is size-agnostic)."""
    import tf_keras as keras

    resized = keras.models.clone_model(model, input_tensors=keras.Input((image_size, image_size, 3)))
    resized.set_weights(model.get_weights())
    return resized


def int8_at_resolution(model_path: Path, image_size: int, output_path: Path) -> Path:
    """The trained network of `model_path` at `image_size`, converted to int8 and calibrated on random images:
    for timing the architecture at a phone-sized input (the accuracy of this file is not measured)."""
    from export.calibration import random_calibration_images
    from export.convert import to_tflite
    from export.files import write_bytes_atomic
    from pipeline.model_files import load_model_file

    resized = at_resolution(load_model_file(model_path), image_size)
    images = random_calibration_images(8, image_size)
    write_bytes_atomic(output_path, to_tflite(resized, "int8", representative_images=images))
    return output_path


def time_int8_pair(paths: dict[str, Path], repeats: int) -> tuple[dict[str, float], dict[str, float]]:
    """Median int8 wall-clock latency and inference-thread CPU time (ms) of each model, timed interleaved in this
    process (1 thread, XNNPACK)."""
    from export.benchmark import BenchmarkSettings
    from export.latency import measure_latency

    names = list(paths)
    results = measure_latency([paths[name] for name in names], BenchmarkSettings(num_threads=1), repeats=repeats,
                              device="host", measure_memory=False)
    return ({name: result.latency_ms for name, result in zip(names, results)},
            {name: result.cpu_time_ms for name, result in zip(names, results)})


def run_benchmark(settings: BenchSettings, suites: Sequence[str]) -> dict[str, Any]:
    started = time.perf_counter()
    results: dict[str, dict[str, Any]] = {}
    rows: dict[str, list[dict[str, Any]]] = {suite: [] for suite in suites}
    students: dict[tuple[str, float], list[dict[str, Any]]] = {}  # every seed's result of one distillation student
    for experiment in experiments(settings, suites):
        results[experiment.name] = run_experiment(experiment, settings)
        describe = {"run": experiment.name, "model": experiment.model, "width": experiment.width}
        result = results[experiment.name]
        if experiment.suite == "quantization":
            run_dir = settings.output_dir / experiment.name
            agreement = ptq_agreement(run_dir, settings, settings.seed if experiment.seed is None else experiment.seed)
            rows["quantization"].append({**describe, **quantization_row(result, agreement)})
        elif experiment.suite == "distillation":
            students.setdefault((experiment.model, experiment.width), []).append(result)
        elif experiment.suite == "prune_2_4":
            rows["prune_2_4"].append({**describe, **prune_2_4_row(result)})
    for (model, width), seeds in students.items():
        rows["distillation"].append({"model": model, "width": width, **distillation_row(seeds)})
    if "channels" in suites:
        model, width = CHANNEL_PRUNING_NETWORK
        for prefix, (flag, value, criterion) in CHANNEL_PRUNING_CUTS.items():
            pruned, baseline = (results[f"{kind}-{model}-{width:g}"] for kind in (prefix, "channels_baseline"))
            run_dirs = {"pruned": settings.output_dir / f"{prefix}-{model}-{width:g}",
                        "baseline": settings.output_dir / f"channels_baseline-{model}-{width:g}"}
            latency, cpu_time = time_int8_pair(
                {kind: run_dir / layout.quantized_tflite("int8") for kind, run_dir in run_dirs.items()},
                settings.latency_repeats)
            # The same two architectures at 224 px, where a phone runs them (the runs train at --image_size).
            at_224 = {kind: int8_at_resolution(
                run_dir / (layout.SLIM_MODEL if kind == "pruned" else layout.TRAINED_MODEL), 224,
                run_dir / layout.quantized_tflite("int8", 224)) for kind, run_dir in run_dirs.items()}
            latency_224, cpu_time_224 = time_int8_pair(at_224, settings.latency_repeats)
            cut = f"ratio {value:g}" if flag == "--prune_ratio" else f"keep ≤ {100 * value:.0f}% of MACs"
            cut += "" if criterion == "gamma" else f", {criterion}"
            rows["channels"].append({"model": model, "width": width, "cut": cut,
                                     **channels_row(pruned, baseline, latency, latency_224, cpu_time=cpu_time,
                                                    cpu_time_224=cpu_time_224)})
    return {
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "settings": {**dataclasses.asdict(settings), "output_dir": str(settings.output_dir)},
        "suites": list(suites),
        "seconds": round(time.perf_counter() - started, 1),
        "rows": rows,
        "runs": {name: {"command": result["command"], "metrics": result["metrics"]} for name, result in results.items()},
    }


# ------------------------------------------------------------------------------------------------ CLI


def settings_from_flags() -> tuple[BenchSettings, tuple[str, ...]]:
    FLAGS = flags.FLAGS
    suites = tuple(suite.strip() for suite in FLAGS.suites.split(",") if suite.strip())
    if FLAGS.suites.strip() == "all":
        suites = SUITES
    unknown = [suite for suite in suites if suite not in SUITES]
    if unknown or not suites:
        raise ValueError(f"--suites={FLAGS.suites}: choose 'all' or a comma list of {', '.join(SUITES)}.")
    if not Path(FLAGS.dataset).is_dir():
        raise ValueError(f"--dataset={FLAGS.dataset} is not a folder; point it at an image folder such as "
                         f"../shared/datasets/imagenette-96 or ../shared/datasets/sign-language-digits.")
    if not 0 < FLAGS.val_split < 1:
        raise ValueError(f"--val_split={FLAGS.val_split}: give a fraction between 0 and 1, e.g. 0.2.")
    if FLAGS.epochs < 1 or FLAGS.fine_tune_epochs < 1 or FLAGS.latency_repeats < 1:
        raise ValueError("--epochs, --fine_tune_epochs and --latency_repeats must be >= 1.")
    student_seeds, seeds = _seed_list("student_seeds", FLAGS.student_seeds), _seed_list("seeds", FLAGS.seeds)
    networks = tuple(dict.fromkeys(name.strip() for name in FLAGS.networks.split(",") if name.strip()))
    known = [model for model, _ in QUANTIZATION_NETWORKS]
    if any(name not in known for name in networks):
        raise ValueError(f"--networks={FLAGS.networks}: choose a comma list of {', '.join(known)}.")
    return BenchSettings(dataset=str(Path(FLAGS.dataset).resolve()), output_dir=Path(FLAGS.output_dir).resolve(),
                         image_size=FLAGS.image_size, epochs=FLAGS.epochs, fine_tune_epochs=FLAGS.fine_tune_epochs,
                         batch_size=FLAGS.batch_size, seed=FLAGS.seed,
                         latency_repeats=FLAGS.latency_repeats, student_seeds=student_seeds, seeds=seeds,
                         val_split=FLAGS.val_split, qat=FLAGS.qat, networks=networks), suites


def _seed_list(flag: str, text: str) -> tuple[int, ...]:
    try:
        return tuple(dict.fromkeys(int(seed) for seed in text.split(",") if seed.strip()))
    except ValueError:
        raise ValueError(f"--{flag}={text}: give a comma list of integers, e.g. 0,1.") from None


def main(argv: Sequence[str]) -> None:
    from absl import logging

    from export.tensorflow_logging import import_tensorflow, silence_tensorflow_logging

    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    # Before TensorFlow loads; the pipeline.run commands it starts inherit the quiet TF_CPP_MIN_LOG_LEVEL.
    silence_tensorflow_logging(verbose=logging.get_verbosity() >= logging.DEBUG)
    try:
        settings, suites = settings_from_flags()
    except ValueError as error:
        print(f"pipeline.accuracy_bench: error: {error}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    import_tensorflow()
    settings.output_dir.mkdir(parents=True, exist_ok=True)
    try:
        report = run_benchmark(settings, suites)
    except RuntimeError as error:
        print(f"pipeline.accuracy_bench: error: {error}", file=sys.stderr)
        sys.exit(1)
    write_json_atomic(settings.output_dir / "accuracy_bench.json", report)
    text = markdown_report(report)
    write_text_atomic(settings.output_dir / "accuracy_bench.md", text)
    print(text)
    print(f"Wrote {settings.output_dir / 'accuracy_bench.json'} and {settings.output_dir / 'accuracy_bench.md'}")


def _define_flags() -> None:
    # Only when run as a program: pipeline.run defines some of the same flag names in the same absl registry.
    flags.DEFINE_string("dataset", None, "Image folder with train/ and val/ (e.g. ../shared/datasets/imagenette-96), "
                        "or of class folders, split with --val_split (e.g. ../shared/datasets/sign-language-digits).")
    flags.DEFINE_float("val_split", DEFAULT_VAL_SPLIT, "Held-out fraction (a seeded stratified split) where the "
                       "dataset has no val/ folder.")
    flags.DEFINE_string("suites", "all", f"'all' or a comma list of: {', '.join(SUITES)}.")
    flags.DEFINE_string("output_dir", "accuracy_out", "Where the run directories, logs and the report go.")
    flags.DEFINE_integer("image_size", 96, "Input size of every run.")
    flags.DEFINE_integer("epochs", 12, "Training epochs from scratch.")
    flags.DEFINE_integer("fine_tune_epochs", 3, "Epochs of QAT, of 2:4 fine-tuning, and of channel-pruning fine-tuning.")
    flags.DEFINE_integer("batch_size", 64, "Batch size of every run.")
    flags.DEFINE_integer("seed", 0, "Seed of every run.")
    flags.DEFINE_integer("latency_repeats", 5, "Interleaved timing rounds per channel-pruning pair (the median wins).")
    flags.DEFINE_string("student_seeds", "", "Comma list of seeds each distillation student (and its trained-alone "
                        "twin) runs with, one teacher for all; empty: --seed alone.")
    flags.DEFINE_string("seeds", "", "Comma list of seeds each quantization network trains with (a run per seed); "
                        "empty: --seed alone.")
    flags.DEFINE_bool("qat", True, "Whether the quantization suite also runs QAT; --noqat measures post-training "
                      "int8 alone, in about half the time.")
    flags.DEFINE_string("networks", "", "Comma list of the quantization suite's networks; empty: all six.")
    flags.mark_flag_as_required("dataset")


if __name__ == "__main__":
    _define_flags()
    app.run(main)
