"""`pipeline.accuracy_bench`: which runs each suite plans, and how the targets are judged from run results.

The runs themselves are ordinary `pipeline.run` commands (tested end to end in test_run.py); training them on
imagenette is the benchmark's job, not the tests'.
"""
from pathlib import Path

import pytest

from pipeline import accuracy_bench as ab
from pipeline import accuracy_report as ar

SETTINGS = ab.BenchSettings(dataset="/data", output_dir=Path("/out"), image_size=64, epochs=8, fine_tune_epochs=2,
                            batch_size=64, seed=0)


def test_distillation_trains_its_teacher_first_and_reads_it_from_the_teacher_run():
    planned = ab.experiments(SETTINGS, ["distillation"])
    teacher = planned[0]
    assert (teacher.model, teacher.width, teacher.suite) == ("mobilenet_v2", 1.0, "teacher")
    assert "--label_smoothing=0" in teacher.flags  # as pipeline.run --teacher trains its teacher
    students = planned[1:]
    assert [(e.model, e.width) for e in students] == [("shufflenet_v2", 0.5), ("mobilenet_v3_small", 0.75)]
    for student in students:
        assert student.after == teacher.name
        assert f"--teacher_checkpoint=/out/{teacher.name}" in student.flags and "--distill_compare" in student.flags


def test_each_student_seed_is_a_run_of_its_own_with_the_same_teacher():
    settings = ab.BenchSettings(**{**SETTINGS.__dict__, "student_seeds": (0, 3)})
    teacher, *students = ab.experiments(settings, ["distillation"])
    assert [e.name for e in students] == [
        "distillation-shufflenet_v2-0.5", "distillation-shufflenet_v2-0.5-seed3",
        "distillation-mobilenet_v3_small-0.75", "distillation-mobilenet_v3_small-0.75-seed3"]
    assert "--seed=0" in ab.command(teacher, settings)
    assert "--seed=3" in ab.command(students[1], settings) and "--seed=0" in ab.command(students[0], settings)
    assert len({flag for e in students for flag in e.flags if flag.startswith("--teacher_checkpoint")}) == 1


def _distillation_result(seed, distilled, alone):
    return {"metrics": {"training": {"seed": seed}, "distillation": {
        "teacher_val_accuracy": 0.65, "student_distilled_val_accuracy": distilled, "student_alone_val_accuracy": alone}}}


def test_distillation_beats_alone_only_if_every_seed_gains():
    row = ar.distillation_row([_distillation_result(0, 0.50, 0.49), _distillation_result(1, 0.52, 0.50)])
    assert row["target_met"] and row["seeds"] == [0, 1]
    assert row["gains"] == pytest.approx([0.01, 0.02]) and row["gain"] == pytest.approx(0.015)
    assert row["distilled"] == pytest.approx(0.51) and row["alone"] == pytest.approx(0.495)
    # A mean gain carried by one lucky seed does not count.
    assert not ar.distillation_row([_distillation_result(0, 0.55, 0.49), _distillation_result(1, 0.49, 0.50)])[
        "target_met"]


def test_channel_pruning_is_compared_with_the_unpruned_network_trained_for_the_same_total_epochs(monkeypatch):
    monkeypatch.setattr(ab, "unpruned_macs", lambda settings, model, width: 24_500_000)
    baseline, by_ratio, by_macs, by_macs_per_mac, by_macs_60 = ab.experiments(SETTINGS, ["channels"])
    assert baseline.epochs == 8 + 2 and not baseline.flags  # training (with L1 on gamma) + 2 fine-tuning epochs
    command = ab.command(baseline, SETTINGS)
    assert "--epochs=10" in command and "--output_dir=/out/channels_baseline-mobilenet_v2-1" in command
    assert {"--prune=channels", "--prune_ratio=0.3", "--prune_epochs=2"} <= set(by_ratio.flags)
    assert {"--prune=channels", "--target_macs=17150000", "--prune_epochs=2"} <= set(by_macs.flags)
    assert not any(flag.startswith("--prune_criterion") for flag in by_ratio.flags + by_macs.flags)
    assert set(by_macs_per_mac.flags) == set(by_macs.flags) | {"--prune_criterion=gamma_per_mac"}
    assert "--target_macs=14700000" in by_macs_60.flags


def test_the_mac_target_is_a_fraction_of_the_unpruned_network_at_the_bench_size(tmp_path):
    import models
    from models.complexity import analyze

    for name in ("a", "b", "c"):
        (tmp_path / "train" / name).mkdir(parents=True)
    settings = ab.BenchSettings(**{**SETTINGS.__dict__, "dataset": str(tmp_path), "image_size": 32})
    expected = analyze(models.build("mobilenet_v2", input_shape=(32, 32, 3), num_classes=3)).macs
    assert ab.unpruned_macs(settings, "mobilenet_v2", 1.0) == expected


def test_every_network_gets_a_qat_run_with_its_post_training_baseline():
    planned = ab.experiments(SETTINGS, ["quantization"])
    assert len(planned) == len(ab.QUANTIZATION_NETWORKS)
    assert all("--qat" in e.flags and "--qat_epochs=2" in e.flags for e in planned)


def test_each_quantization_seed_is_a_run_of_its_own_and_val_split_reaches_the_runs():
    settings = ab.BenchSettings(**{**SETTINGS.__dict__, "seeds": (0, 2), "val_split": 0.25})
    planned = ab.experiments(settings, ["quantization"])
    assert len(planned) == 2 * len(ab.QUANTIZATION_NETWORKS)
    assert [e.name for e in planned[:2]] == ["quantization-mobilenet_v3_small-1",
                                             "quantization-mobilenet_v3_small-1-seed2"]
    assert "--seed=2" in ab.command(planned[1], settings) and "--val_split=0.25" in ab.command(planned[1], settings)
    assert not any(flag.startswith("--val_split") for flag in ab.command(planned[0], SETTINGS))  # the default


def test_without_qat_the_quantization_runs_are_plain_runs_of_their_own_and_networks_can_be_chosen():
    settings = ab.BenchSettings(**{**SETTINGS.__dict__, "qat": False, "networks": ("mobilenet_v3_large",)})
    [planned] = ab.experiments(settings, ["quantization"])
    assert planned.name == "ptq-mobilenet_v3_large-1" and planned.flags == ()  # never a QAT run's directory
    result = {"metrics": {"training": {"seed": 0}, "accuracy": {"keras_float": 0.70, "tflite_quantized": 0.695}}}
    row = ar.quantization_row(result, ptq_agreement=0.975)
    assert row["int8_ptq"] == 0.695 and row["ptq_loss"] == pytest.approx(0.005) and row["ptq_target_met"]
    assert row["int8_qat"] is None and row["qat_target_met"] is None
    assert "| mobilenet_v3_large 1 | 0 | 70.0 | 69.5 | +0.5 | yes | 97.50 | yes | — | — | — |" in ar.markdown_report(
        {"settings": {**SETTINGS.__dict__, "output_dir": "/out"}, "created": "now", "seconds": 1,
         "rows": {"quantization": [{"model": "mobilenet_v3_large", "width": 1.0, **row}]}})


def _quantization_result(float_accuracy, ptq, qat, seed=0):
    return {"metrics": {"training": {"seed": seed},
                        "qat_comparison": {"float_before_qat": float_accuracy, "int8_ptq": ptq, "int8_qat": qat}}}


@pytest.mark.parametrize("ptq, qat, ptq_met, qat_met", [(0.795, 0.797, True, True), (0.785, 0.794, False, False)])
def test_quantization_targets(ptq, qat, ptq_met, qat_met):
    row = ar.quantization_row(_quantization_result(0.80, ptq, qat), ptq_agreement=0.98)
    assert (row["ptq_target_met"], row["qat_target_met"]) == (ptq_met, qat_met)
    assert row["ptq_loss"] == pytest.approx(0.80 - ptq)


@pytest.mark.parametrize("float_accuracy, agreement, met", [(0.80, 0.965, False), (0.80, 0.97, True),
                                                            (0.60, 0.955, True), (0.60, 0.94, False)])
def test_the_agreement_goal_is_stricter_for_a_stronger_float_model(float_accuracy, agreement, met):
    row = ar.quantization_row(_quantization_result(float_accuracy, float_accuracy, float_accuracy), agreement)
    assert row["ptq_agreement_met"] is met and row["ptq_agreement"] == agreement


def test_ptq_agreement_is_read_back_from_the_run_directory(tmp_path):
    (tmp_path / ab.PTQ_AGREEMENT_FILE).write_text('{"agreement": 0.9625, "num_images": 400}')
    assert ab.ptq_agreement(tmp_path, SETTINGS, seed=0) == 0.9625  # no data or model loaded


def test_channel_targets_need_all_three_cuts():
    def result(macs, before, accuracy):
        return {"metrics": {"macs": macs, "macs_before_pruning": before, "params": 2, "params_before_pruning": 3,
                            "accuracy": {"keras_float": accuracy, "tflite_quantized": accuracy}}}

    baseline = result(100, 100, 0.80)
    met = ar.channels_row(result(65, 100, 0.795), baseline, {"pruned": 7.0, "baseline": 10.0})
    assert met["target_met"] and met["mac_cut"] == pytest.approx(0.35)
    slow = ar.channels_row(result(65, 100, 0.795), baseline, {"pruned": 9.0, "baseline": 10.0})
    assert not slow["target_met"] and slow["latency_cut"] == pytest.approx(0.1)
    worse = ar.channels_row(result(65, 100, 0.78), baseline, {"pruned": 7.0, "baseline": 10.0})
    assert not worse["target_met"]
    # The inference thread's CPU time is reported beside the wall-clock latency (a shared machine moves the latter).
    timed = ar.channels_row(result(65, 100, 0.795), baseline, {"pruned": 7.0, "baseline": 10.0},
                            cpu_time={"pruned": 6.0, "baseline": 8.0})
    assert timed["cpu_time_cut"] == pytest.approx(0.25) and met["cpu_time_cut"] is None
    report = {"settings": {**SETTINGS.__dict__, "output_dir": "/out"}, "created": "now", "seconds": 1.0,
              "rows": {"channels": [{"model": "mobilenet_v2", "width": 1.0, "cut": "ratio 0.3", **timed}]}}
    assert "| 10.000 → 7.000 (−30.0%; CPU time −25.0%) | — | yes |" in ar.markdown_report(report)


def test_report_has_a_table_per_suite_that_ran():
    report = {"settings": {**SETTINGS.__dict__, "output_dir": "/out"}, "created": "now", "seconds": 1.0,
              "rows": {"quantization": [{"model": "mobilenet_v2", "width": 1.0,
                                         **ar.quantization_row(_quantization_result(0.8, 0.792, 0.8), 0.96)}]}}
    text = ar.markdown_report(report)
    assert "| mobilenet_v2 1 | 0 | 80.0 | 79.2 | +0.8 | yes | 96.00 | **no** | 80.0 | +0.0 | yes |" in text
    assert "Distillation" not in text
    report["rows"] = {"distillation": [{"model": "shufflenet_v2", "width": 0.5, **ar.distillation_row(
        [_distillation_result(0, 0.50, 0.49), _distillation_result(1, 0.49, 0.50)])}]}
    assert "| shufflenet_v2 0.5 | 0, 1 | 65.0 | 49.5 | 49.5 | +1.0 / -1.0 | **no** |" in ar.markdown_report(report)


def test_a_trained_network_is_timed_at_another_resolution_with_its_weights(tmp_path):
    import numpy as np

    import models
    from export.evaluate import TFLiteClassifier
    from export.graph import integer_only_problems
    from pipeline.train import save_model

    model = models.build("mobilenet_v2", input_shape=(32, 32, 3), num_classes=3, width_multiplier=0.35)
    images = np.random.default_rng(0).uniform(-1, 1, (2, 64, 64, 3)).astype(np.float32)
    built_at_64 = models.build("mobilenet_v2", input_shape=(64, 64, 3), num_classes=3, width_multiplier=0.35)
    built_at_64.set_weights(model.get_weights())
    np.testing.assert_allclose(ab.at_resolution(model, 64).predict(images, verbose=0),
                               built_at_64.predict(images, verbose=0), rtol=1e-5, atol=1e-5)

    save_model(model, tmp_path / "model.keras")
    flatbuffer = ab.int8_at_resolution(tmp_path / "model.keras", 64, tmp_path / "model_int8_64.tflite").read_bytes()
    assert integer_only_problems(flatbuffer) == []
    assert TFLiteClassifier(flatbuffer).logits(images).shape == (2, 3)


def test_ptq_agreement_is_measured_on_the_runs_held_out_split(tmp_path, image_folder, tiny_data):
    from export.convert import to_tflite
    from export.evaluate import TFLiteClassifier, agreement
    from export.files import write_bytes_atomic
    from export.layout import PTQ_BASELINE_TFLITE
    from pipeline.train import save_model
    from tiny_networks import tiny_network

    model = tiny_network(tiny_data)
    save_model(model, tmp_path / "model.keras")
    images, _ = tiny_data.val_arrays()
    int8_model = to_tflite(model, "int8", representative_images=images)
    write_bytes_atomic(tmp_path / PTQ_BASELINE_TFLITE, int8_model)
    settings = ab.BenchSettings(**{**SETTINGS.__dict__, "dataset": str(image_folder), "image_size": 32,
                                   "batch_size": 8})
    expected = agreement(TFLiteClassifier(int8_model).logits(images), model.predict(images, verbose=0))
    assert ab.ptq_agreement(tmp_path, settings, seed=0) == pytest.approx(expected)
    assert (tmp_path / ab.PTQ_AGREEMENT_FILE).is_file()
