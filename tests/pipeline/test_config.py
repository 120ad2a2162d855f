"""RunConfig: per-dataset defaults, validation messages, fingerprints, and the run directory's config.json."""
from __future__ import annotations

import dataclasses
import json

import pytest

from pipeline.config import (
    DIGITS_DEFAULTS,
    PHOTO_DEFAULTS,
    ConfigError,
    RunConfig,
)
from pipeline.run_dir import check_run_dir, find_unfinished_run, read_config, write_config

MODELS = ["mobilenet_v2", "mobilenet_v3_small"]


def test_digits_defaults_fill_every_none():
    config = RunConfig().resolved()
    assert config.image_size == DIGITS_DEFAULTS.image_size == 32
    assert config.epochs == DIGITS_DEFAULTS.epochs
    assert config.width_multiplier == 1.0 and config.batch_size == 64
    assert config.learning_rate == 2e-3 and config.weight_decay > 0
    assert config.prune_epochs >= 1 and config.qat_epochs >= 1
    assert not config.defaults.flip  # a mirrored digit is another glyph


def test_folder_defaults_and_explicit_values_win(tmp_path):
    config = RunConfig(dataset=str(tmp_path), optimizer="sgd", epochs=3, image_size=48).resolved()
    assert config.dataset_kind == "folder" and config.defaults is PHOTO_DEFAULTS and config.defaults.flip
    assert (config.epochs, config.image_size, config.learning_rate) == (3, 48, 0.1)
    assert RunConfig(dataset="tfds:mnist").dataset_kind == "tfds"


def test_stem_padding_follows_the_xnnpack_policy():
    assert RunConfig(prune="xnnpack").stem_padding == "symmetric"
    assert RunConfig(prune="2:4").stem_padding == "same"


@pytest.mark.parametrize(
    "overrides, flag",
    [
        ({"model": "resnet50"}, "--model"),
        ({"teacher": "vgg"}, "--teacher"),
        ({"epochs": 0}, "--epochs"),
        ({"epochs": -3}, "--epochs"),
        ({"prune_sparsity": 1.0}, "--prune_sparsity"),
        ({"prune_sparsity": 0.0}, "--prune_sparsity"),
        ({"prune_sparsity": 1.5}, "--prune_sparsity"),
        ({"distill_temperature": 0.0}, "--distill_temperature"),
        ({"distill_temperature": -1.0}, "--distill_temperature"),
        ({"distill_alpha": 1.5}, "--distill_alpha"),
        ({"image_size": 16}, "--image_size"),
        ({"dataset": "/no/such/folder"}, "--dataset"),
        ({"dataset": "tfds:"}, "--dataset"),
        ({"batch_size": 0}, "--batch_size"),
        ({"learning_rate": 0.0}, "--learning_rate"),
        ({"val_split": 1.0}, "--val_split"),
        ({"optimizer": "rmsprop"}, "--optimizer"),
        ({"prune": "channels"}, "--prune"),
        ({"prune": "channels", "prune_ratio": 0.3, "target_macs": 10**6}, "--prune"),
        ({"prune": "channels", "prune_ratio": 1.5}, "--prune_ratio"),
        ({"prune": "channels", "target_macs": 0}, "--target_macs"),
        ({"prune": "channels", "prune_ratio": 0.3, "prune_iterations": 0}, "--prune_iterations"),
        ({"prune": "channels", "prune_ratio": 0.3, "prune_l1": -1e-4}, "--prune_l1"),
        ({"prune": "channels", "prune_ratio": 0.3, "prune_criterion": "taylor"}, "--prune_criterion"),
        ({"prune_ratio": 0.3}, "--prune_ratio"),
        ({"quantize": "int4"}, "--quantize"),
        ({"io_dtype": "float64"}, "--io_dtype"),
        ({"scores": "logprobs"}, "--scores"),
        ({"int8_remedies": "sometimes"}, "--int8_remedies"),
        ({"int8_min_agreement": 1.5}, "--int8_min_agreement"),
        ({"width_multiplier": float("inf")}, "--width_multiplier"),
        ({"image_size": 100000}, "--image_size"),
        ({"device": "tpu"}, "--device"),
        ({"qat": True, "quantize": "float16"}, "--qat"),
        ({"teacher": "mobilenet_v2", "teacher_checkpoint": "x.keras"}, "--teacher"),
        ({"teacher_checkpoint": "/no/teacher.keras"}, "--teacher_checkpoint"),
        ({"distill_compare": True}, "--distill_compare"),
        ({"weights": "cifar"}, "--weights"),
    ],
)
def test_each_bad_setting_is_one_line_naming_its_flag(overrides, flag):
    with pytest.raises(ConfigError) as error:
        RunConfig(**overrides).validate(MODELS)
    message = str(error.value)
    assert message.startswith(flag) or flag in message
    assert "\n" not in message


def test_a_good_config_validates():
    RunConfig().validate(MODELS)
    RunConfig(teacher="mobilenet_v2", distill_compare=True, prune="2:4", qat=True).validate(MODELS)


def test_fingerprint_ignores_where_the_run_is_written_and_benchmarked():
    base = RunConfig().resolved()
    moved = RunConfig(output_dir="elsewhere", device="adb", benchmark_binary="/tmp/benchmark_model", num_threads=4).resolved()
    assert base.fingerprint() == moved.fingerprint()
    assert base.fingerprint() != RunConfig(seed=1).resolved().fingerprint()
    assert RunConfig.from_dict(base.to_dict()) == base


def test_run_dir_of_another_configuration_is_refused_untouched(tmp_path):
    config = RunConfig(epochs=3).resolved()
    write_config(tmp_path, config)
    (tmp_path / "model.keras").write_bytes(b"weights")
    before = {path.name: path.read_bytes() for path in tmp_path.iterdir()}
    assert check_run_dir(tmp_path, config) is True
    with pytest.raises(ConfigError, match="different configuration.*epochs: 3 there vs 4 now"):
        check_run_dir(tmp_path, RunConfig(epochs=4).resolved())
    assert {path.name: path.read_bytes() for path in tmp_path.iterdir()} == before


def test_a_run_recorded_before_a_setting_existed_resumes_with_its_default(tmp_path):
    config = RunConfig(prune="channels", prune_ratio=0.3).resolved()
    write_config(tmp_path, config)
    payload = json.loads((tmp_path / "config.json").read_text())
    del payload["config"]["prune_criterion"]  # as a run directory written before --prune_criterion existed
    (tmp_path / "config.json").write_text(json.dumps(payload))
    assert check_run_dir(tmp_path, config) is True
    with pytest.raises(ConfigError, match="prune_criterion: 'gamma' there vs 'gamma_per_mac' now"):
        check_run_dir(tmp_path, dataclasses.replace(config, prune_criterion="gamma_per_mac"))


def test_new_and_foreign_directories(tmp_path):
    assert check_run_dir(tmp_path / "new", RunConfig()) is False
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not a run directory"):
        check_run_dir(tmp_path, RunConfig())


def test_config_json_round_trip_and_unfinished_run_lookup(tmp_path):
    config = RunConfig(model="mobilenet_v2").resolved()
    run_dir = tmp_path / "mobilenet_v2-20260101-000000"
    write_config(run_dir, config)
    recorded = read_config(run_dir)
    assert recorded["fingerprint"] == config.fingerprint()
    assert json.loads((run_dir / "config.json").read_text())["config"]["model"] == "mobilenet_v2"
    assert find_unfinished_run(tmp_path, config, is_finished=lambda path: False) == run_dir
    assert find_unfinished_run(tmp_path, config, is_finished=lambda path: True) is None
    assert find_unfinished_run(tmp_path, RunConfig(model="mobilenet_v2", seed=5).resolved(), lambda p: False) is None


def test_auto_resume_skips_a_run_directory_another_process_is_running_in(tmp_path):
    from pipeline.run_dir import RunLock

    config = RunConfig(model="mobilenet_v2").resolved()
    run_dir = tmp_path / "mobilenet_v2-20260101-000000"
    write_config(run_dir, config)
    assert find_unfinished_run(tmp_path, config, is_finished=lambda path: False) == run_dir
    lock = RunLock(run_dir).acquire()
    try:
        assert find_unfinished_run(tmp_path, config, is_finished=lambda path: False) is None
    finally:
        lock.release()
