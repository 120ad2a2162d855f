"""models.summary: the CLI's JSON output, its table, and its exit code on bad input."""
from __future__ import annotations

import importlib.util
import json
import pathlib
import subprocess
import sys

import pytest

import models
from models import summary

REPO = pathlib.Path(__file__).resolve().parents[2]


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "models.summary", *args], cwd=REPO, capture_output=True, text=True, timeout=120
    )


def test_json_prints_one_object_with_the_totals():
    result = _run_cli("--model", "mobilenet_v2", "--width_multiplier", "0.5", "--image_size", "64", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)  # fails unless stdout is exactly one JSON document
    assert isinstance(data, dict)
    assert {"params", "trainable_params", "macs", "memory_access_cost", "model", "width_multiplier", "image_size"} <= set(
        data
    )
    assert (data["model"], data["width_multiplier"], data["image_size"]) == ("mobilenet_v2", 0.5, 64)
    model = models.build("mobilenet_v2", input_shape=(64, 64, 3), width_multiplier=0.5)
    assert data["params"] == model.count_params()
    assert data["macs"] == sum(layer["macs"] for layer in data["layers"]) > 0
    assert data["memory_access_cost"] == sum(layer["memory_access_cost"] for layer in data["layers"]) > 0
    assert data["layers"][-1]["output_shape"] == [1000]


@pytest.mark.parametrize(
    "args, message",
    [
        (("--model", "no_such_net"), "Available models: mobilenet_v1"),
        (("--model", "mobilenet_v2", "--width_multiplier", "-1"), "width_multiplier must be a positive number"),
    ],
    ids=["unknown-model", "bad-width"],
)
def test_bad_input_is_one_error_line_and_exit_code_2(args, message):
    result = _run_cli(*args)
    assert result.returncode == summary.EXIT_BAD_INPUT == 2
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    # TensorFlow's C++ runtime may log while it loads; our own output is the last line.
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("models.summary: error:") and message in last_line


def test_groups_is_refused_for_networks_without_groups():
    with pytest.raises(ValueError, match="only to shufflenet_v1"):
        summary.summarize("mobilenet_v2", image_size=32, groups=3)


def test_table_lists_every_layer_and_the_totals():
    data = summary.summarize("mobilenet_v2", width_multiplier=0.35, image_size=32, num_classes=10)
    text = summary.format_table(data)
    assert text.splitlines()[0] == "mobilenet_v2 width 0.35, 32x32, 10 classes"
    for layer in data["layers"]:
        assert layer["name"] in text
    assert f"{data['macs']:,}" in text and f"{data['memory_access_cost']:,}" in text
    assert "memory access cost" in text and "elements" in text


def test_groups_reaches_shufflenet_v1():
    if importlib.util.find_spec("models.shufflenet_v1") is None:
        pytest.skip("models.shufflenet_v1 is not written yet")
    data = summary.summarize("shufflenet_v1", image_size=32, num_classes=10, groups=8)
    assert data["groups"] == 8
    assert summary.format_table(data).splitlines()[0] == "shufflenet_v1 width 1, 32x32, 10 classes, groups=8"
    assert data["macs"] != summary.summarize("shufflenet_v1", image_size=32, num_classes=10, groups=3)["macs"]
