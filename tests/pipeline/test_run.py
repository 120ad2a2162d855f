"""`python -m pipeline.run`: bad inputs (exit 2, one line, nothing touched), an end-to-end run on a tiny folder,
resume after an interruption, a rerun that skips everything, and distillation with --distill_compare."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import tf_keras as keras

from export.client_check import client_python

from pipeline import run as run_module
from pipeline.config import RunConfig
from pipeline.run_dir import write_config
from pipeline.train import build_network, load_model, save_model
from tests.pipeline.conftest import TINY_MODEL, TINY_WIDTH

REPO = Path(__file__).resolve().parents[2]
METRICS_KEYS = {"model", "dataset", "params", "macs", "accuracy", "agreement_quantized_vs_float", "size_bytes",
                "sparsity", "stages", "latency"}


def tiny_flags(dataset: Path, output_dir: Path, *extra: str) -> list[str]:
    # MediaPipe runs in the end-to-end test that checks it; the others leave its subprocess out (suite time).
    client = () if any(flag.startswith("--client_check") for flag in extra) else ("--noclient_check",)
    return ["pipeline.run", f"--dataset={dataset}", f"--model={TINY_MODEL}", f"--width_multiplier={TINY_WIDTH}",
            "--image_size=32", "--epochs=1", "--batch_size=8", f"--output_dir={output_dir}", *client, *extra]


def stage_records(run_dir: Path) -> dict:
    return json.loads((run_dir / "stages.json").read_text())["stages"]


@pytest.mark.parametrize(
    "flags, fragment",
    [
        (["--model=resnet50"], "--model=resnet50 is not a known model"),
        (["--epochs=0"], "--epochs=0 must be a positive integer"),
        (["--prune=magnitude", "--prune_sparsity=0"], "--prune_sparsity=0.0 must be strictly between 0 and 1"),
        (["--prune=magnitude", "--prune_sparsity=1.5"], "--prune_sparsity=1.5 must be strictly between 0 and 1"),
        (["--teacher=mobilenet_v2", "--distill_temperature=0"], "--distill_temperature=0.0 must be > 0"),
        (["--image_size=16"], "--image_size=16 is too small"),
        (["--dataset=/no/such/dataset"], "--dataset=/no/such/dataset does not exist"),
        (["--prune=xnnpack", "--prune_sparsity=0.75"], "--prune=xnnpack works only for"),
        (["--epochs=many"], "flag --epochs=many"),
        (["--no_such_flag=1"], "Unknown command line flag 'no_such_flag'"),
    ],
)
def test_bad_flags_exit_2_with_one_line(flags, fragment, capsys, tmp_path):
    assert run_module.main(["pipeline.run", f"--output_dir={tmp_path / 'run'}", *flags]) == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and fragment in captured.err
    assert captured.err.startswith("pipeline.run: error: ")
    assert not (tmp_path / "run").exists()


def test_empty_dataset_folder_exits_2(capsys, tmp_path):
    (tmp_path / "data").mkdir()
    assert run_module.main(tiny_flags(tmp_path / "data", tmp_path / "run")) == 2
    assert "no class sub-folders" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_run_dir_of_another_configuration_is_refused_and_left_alone(capsys, tmp_path, image_folder):
    run_dir = tmp_path / "run"
    write_config(run_dir, RunConfig(model="mobilenet_v2", epochs=7).resolved())
    (run_dir / "model.keras").write_bytes(b"precious")
    before = {path.name: path.read_bytes() for path in run_dir.iterdir()}
    assert run_module.main(tiny_flags(image_folder, run_dir)) == 2
    assert "belongs to a run with a different configuration" in capsys.readouterr().err
    assert {path.name: path.read_bytes() for path in run_dir.iterdir()} == before


def test_the_real_command_line_prints_no_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.run", "--epochs=-1", f"--output_dir={tmp_path}"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == "pipeline.run: error: --epochs=-1 must be a positive integer."
    assert "Traceback" not in result.stdout + result.stderr


def test_end_to_end_with_an_interruption_then_resume_then_nothing_to_do(monkeypatch, capsys, tmp_path, image_folder):
    run_dir = tmp_path / "run"
    flags = tiny_flags(image_folder, run_dir, "--client_check")

    # 1. Killed during conversion: training is recorded as done, nothing after it.
    import pipeline.convert_verify

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("simulated kill during conversion")

    monkeypatch.setattr(pipeline.convert_verify, "convert_and_verify", killed)
    with pytest.raises(KeyboardInterrupt):
        run_module.main(flags)
    assert set(stage_records(run_dir)) == {"train"} and (run_dir / "model.keras").is_file()
    monkeypatch.undo()
    capsys.readouterr()

    # 2. The same command resumes: training is skipped, the rest runs.
    assert run_module.main(flags) == 0
    output = capsys.readouterr().out
    assert "stage train          skipped" in output and "stage convert_verify done" in output
    for name in ("config.json", "stages.json", "model.keras", "model_float32.tflite", "model_int8.tflite",
                 "labels.txt", "model_meta.json", "metrics.json", "report.md", "report.png"):
        assert (run_dir / name).is_file(), name
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert METRICS_KEYS <= set(metrics)
    assert set(metrics["accuracy"]) == {"keras_float", "tflite_float32", "tflite_quantized", "mediapipe_float32",
                                        "mediapipe_quantized"}
    if client_python() is not None:  # .ci/run builds the MediaPipe environment; a user's machine may not have it
        for artifact in ("float32", "quantized"):
            check = metrics["client_check"]["mediapipe"][artifact]
            assert check["agreement"] >= 0.995 and 0 <= check["min_score"] <= check["max_score"] <= 1
            assert metrics["accuracy"][f"mediapipe_{artifact}"] == metrics["accuracy"][f"tflite_{artifact}"]
    assert metrics["verification"]["gpu_compatibility"]["float32"]["compatible"]  # the GPU delegate's static check
    assert "GPU delegate (static check, export.gpu_compat): float32 GPU: all ops." in (run_dir / "report.md").read_text()
    report = metrics["quantization_report"]  # where the int8 model loses its float model's answers
    assert report["num_images"] == metrics["dataset"]["num_val"] and 0 <= report["top1_agreement"] <= 1
    assert report["layers"] and report["remedies"]["remedies_ran"] is False  # too few images left to judge them
    assert "## int8 quantization report" in (run_dir / "report.md").read_text()
    verdict = "int8 keeps" if metrics["agreement_quantized_vs_float"] >= 0.97 else "int8 misses its fidelity goal"
    assert verdict in (run_dir / "report.md").read_text()
    assert (run_dir / "quantization_error.png").read_bytes().startswith(b"\x89PNG")
    assert set(metrics["size_bytes"]) == {"float32", "quantized"}
    assert metrics["size_bytes"]["quantized"] < metrics["size_bytes"]["float32"]
    assert metrics["dataset"]["skipped_files"] == 1 and metrics["params"] > 0 and metrics["macs"] > 0
    assert set(metrics["stages"]) >= {"data", "train", "convert_verify", "benchmark"}
    assert metrics["latency"]["quantized_ms"] > 0 and metrics["latency"]["float32_ms"] > 0
    assert (run_dir / "labels.txt").read_text().split() == ["blue", "green", "red"]
    assert "held-out top-1" in output and f"run directory: {run_dir.resolve()}" in output
    records = stage_records(run_dir)

    # 3. Once more: every stage is skipped and nothing is rewritten.
    assert run_module.main(flags) == 0
    assert stage_records(run_dir) == records
    assert "started" not in capsys.readouterr().out

    # 4. A finished stage's output truncated behind the ledger's back: that stage (and what reads it) runs again.
    int8 = (run_dir / "model_int8.tflite").read_bytes()
    (run_dir / "model_int8.tflite").write_bytes(int8[:100])
    assert run_module.main(flags) == 0
    output = capsys.readouterr().out
    assert "stage metadata       runs again: model_int8.tflite changed since the stage wrote it" in output
    assert "stage convert_verify skipped" in output and (run_dir / "model_int8.tflite").read_bytes() == int8


def test_a_run_directory_in_use_is_refused(capsys, tmp_path, image_folder):
    from pipeline.run_dir import RunLock, write_config

    run_dir = tmp_path / "run"
    run_module._parse(tiny_flags(image_folder, run_dir))
    config = run_module.config_from_flags().resolved()
    write_config(run_dir, config)
    lock = RunLock(run_dir).acquire()  # another pipeline.run working in it now
    try:
        assert run_module.main(tiny_flags(image_folder, run_dir)) == 2
        assert "is in use by another pipeline.run" in capsys.readouterr().err
    finally:
        lock.release()


def test_an_output_dir_that_cannot_be_written_is_refused_before_the_data_loads(capsys, tmp_path, image_folder):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    assert run_module.main(tiny_flags(image_folder, blocker / "run")) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "cannot be written" in error


def test_an_error_after_tensorflow_loads_is_still_one_line_on_stderr(tmp_path):
    """TensorFlow's start-up log (CUDA probing, CPU feature lines) stays off stderr unless -v asks for it."""
    (tmp_path / "data" / "only_class").mkdir(parents=True)
    result = subprocess.run([sys.executable, "-m", "pipeline.run", f"--dataset={tmp_path / 'data'}",
                             f"--output_dir={tmp_path / 'run'}"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("pipeline.run: error: "), result.stderr
    assert "has one class sub-folder" in result.stderr


def test_a_run_directory_of_an_older_layout_is_refused_in_one_line(capsys, tmp_path, image_folder):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text(json.dumps({"fingerprint": "0", "config": {}}))
    assert run_module.main(tiny_flags(image_folder, run_dir)) == 2
    assert "written by an older version of the pipeline" in capsys.readouterr().err


def test_distillation_from_a_checkpoint_with_a_comparison(capsys, tmp_path, image_folder, tiny_data):
    teacher_dir = tmp_path / "teacher"  # an (untrained) network saved like a run directory's model.keras
    save_model(build_network(TINY_MODEL, tiny_data, 0.5, bn_momentum=0.9), teacher_dir / "model.keras")
    run_dir = tmp_path / "student"
    flags = tiny_flags(image_folder, run_dir, f"--teacher_checkpoint={teacher_dir}", "--distill_compare",
                       "--distill_temperature=2", "--distill_alpha=0.3", "--quantize=none", "--device=none")
    assert run_module.main(flags) == 0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    distillation = metrics["distillation"]
    assert distillation["temperature"] == 2.0 and distillation["alpha"] == 0.3
    assert 0 <= distillation["student_distilled_val_accuracy"] <= 1
    assert 0 <= distillation["student_alone_val_accuracy"] <= 1
    assert 0 <= distillation["teacher_val_accuracy"] <= 1  # the checkpoint is evaluated on the held-out split
    assert metrics["accuracy"]["tflite_quantized"] is None and metrics["latency"] is None
    assert {"train", "student_alone"} <= set(stage_records(run_dir))
    assert "trained alone" in capsys.readouterr().out


def test_qat_run_reports_post_training_int8_of_the_same_float_model(capsys, tmp_path, image_folder):
    run_dir = tmp_path / "run"
    assert run_module.main(tiny_flags(image_folder, run_dir, "--qat", "--qat_epochs=1", "--device=none")) == 0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    comparison = metrics["qat_comparison"]
    assert set(comparison) == {"float_before_qat", "int8_ptq", "int8_qat"}
    assert all(0 <= value <= 1 for value in comparison.values())
    assert comparison["int8_qat"] == metrics["accuracy"]["tflite_quantized"]
    # The baseline is the model QAT started from: the train stage's network, quantized after training.
    assert comparison["float_before_qat"] == pytest.approx(stage_records(run_dir)["train"]["summary"]["val_accuracy"])
    assert (run_dir / "ptq_baseline" / "model_int8.tflite").is_file()
    assert "after quantization-aware training" in capsys.readouterr().out


def test_channel_pruning_run_trains_sparse_then_records_a_rebuildable_network(tmp_path, image_folder, monkeypatch):
    import models
    from models import channel_pruning
    from models.complexity import analyze

    criteria = []
    real_select = channel_pruning.select_channels

    def recording_select(*args, criterion, **kwargs):
        criteria.append(criterion)
        return real_select(*args, criterion=criterion, **kwargs)

    monkeypatch.setattr(channel_pruning, "select_channels", recording_select)
    run_dir = tmp_path / "run"
    assert run_module.main(tiny_flags(image_folder, run_dir, "--prune=channels", "--prune_ratio=0.5",
                                      "--prune_l1=0.002", "--prune_criterion=gamma_per_mac", "--prune_epochs=1",
                                      "--quantize=none", "--device=none")) == 0
    assert criteria == ["gamma_per_mac"]
    # The sparsity training is the train stage: its model carries --prune_l1's penalty on the ranking gammas.
    trained = load_model(run_dir / "model.keras")
    penalties = {float(layer.gamma_regularizer.l1) for layer in trained.layers
                 if isinstance(layer, keras.layers.BatchNormalization) and layer.gamma_regularizer is not None}
    assert penalties and all(value == pytest.approx(0.002) for value in penalties)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["macs"] < metrics["macs_before_pruning"] and metrics["params"] < metrics["params_before_pruning"]
    slim = metrics["channel_pruning"]
    assert 0 <= slim["val_accuracy_after_cut"] <= 1 and slim["val_accuracy_after_finetune"] == metrics["accuracy"][
        "keras_float"]
    assert slim["val_accuracy_before_pruning"] == pytest.approx(stage_records(run_dir)["train"]["summary"]["val_accuracy"])
    report = (run_dir / "report.md").read_text()
    assert "## Channel slimming" in report and f"{metrics['macs_before_pruning']:,} | {metrics['macs']:,}" in report
    assert f"{metrics['params_before_pruning']:,} | {metrics['params']:,}" in report
    assert "right after it" in report and "overall sparsity" not in report
    pruned = load_model(run_dir / "model_slim.keras")
    rebuilt = models.build(TINY_MODEL, input_shape=(32, 32, 3), num_classes=metrics["dataset"]["num_classes"],
                           width_multiplier=TINY_WIDTH, channels=metrics["channels"])
    assert analyze(rebuilt).macs == metrics["macs"] == analyze(pruned).macs


def test_a_teacher_trained_in_the_run_learns_without_label_smoothing(tmp_path, image_folder, monkeypatch):
    import pipeline.distill
    from pipeline.stages import train as train_stages

    # Label smoothing makes a worse teacher (its soft targets lose the class similarities): the teacher stage trains
    # on hard labels, while the student keeps --label_smoothing for its hard-label term.
    smoothing = {}
    real_train, real_distill = train_stages.train, pipeline.distill.distill

    def recording_train(model, data, settings, *args, **kwargs):
        smoothing["teacher"] = settings.label_smoothing
        return real_train(model, data, settings, *args, **kwargs)

    def recording_distill(student, teacher, data, settings, *args, **kwargs):
        smoothing["student"] = settings.label_smoothing
        return real_distill(student, teacher, data, settings, *args, **kwargs)

    monkeypatch.setattr(train_stages, "train", recording_train)  # the teacher trains a fresh network on labels
    monkeypatch.setattr(pipeline.distill, "distill", recording_distill)
    flags = tiny_flags(image_folder, tmp_path / "run", f"--teacher={TINY_MODEL}",
                       f"--teacher_width_multiplier={TINY_WIDTH}", "--label_smoothing=0.2", "--quantize=none",
                       "--device=none")
    assert run_module.main(flags) == 0
    assert smoothing == {"teacher": 0.0, "student": 0.2}
