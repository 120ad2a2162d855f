"""export.meta: model_meta.json is read from the .tflite file, round-trips, and every disagreement is named."""
import copy
import json

import pytest

import tiny_tflite_models as tiny
from export.meta import (
    MetaError,
    MetaMismatchError,
    check_meta_matches_tflite,
    meta_for_tflite,
    read_meta,
    tensor_spec,
    write_meta,
)

LABELS = ["zero", "one", "two", "three"]
NORMALIZATION = {"mean": [127.5] * 3, "std": [127.5] * 3, "pixel_range": [0, 255]}


class PipelineStyleNormalization:
    """Like pipeline.data.Normalization: an object with to_dict()."""

    def to_dict(self):
        return {"mean": 127.5, "std": 127.5}


@pytest.fixture
def int8_model(tmp_path):
    path = tmp_path / "model.tflite"
    path.write_bytes(tiny.converted("plain", "int8"))
    return path


def test_int8_meta_reads_the_model_and_round_trips(int8_model, tmp_path):
    meta = meta_for_tflite(int8_model, LABELS, NORMALIZATION, model_name="tiny")
    assert meta["schema_version"] == 1 and meta["created_by"] and meta["model_name"] == "tiny"
    assert meta["input"]["shape"] == [1, 32, 32, 3] and meta["input"]["dtype"] == "int8"
    assert meta["output"]["shape"] == [1, 4] and meta["output"]["kind"] == "logits"
    quantization = meta["input"]["quantization"]
    assert quantization["scale"] > 0 and isinstance(quantization["zero_point"], int)
    assert meta["labels"] == LABELS and meta["normalization"] == NORMALIZATION

    path = tmp_path / "model_meta.json"
    write_meta(path, meta)
    assert read_meta(path) == meta
    check_meta_matches_tflite(read_meta(path), int8_model)


def test_float_meta_has_no_quantization_and_takes_pipeline_normalization():
    meta = meta_for_tflite(tiny.converted("plain", "none"), LABELS, PipelineStyleNormalization())
    assert meta["input"]["dtype"] == "float32" and meta["input"]["quantization"] is None
    assert meta["output"]["quantization"] is None
    assert meta["normalization"] == NORMALIZATION
    json.dumps(meta)  # plain JSON types only


def test_uint8_io_is_recorded():
    meta = meta_for_tflite(tiny.converted("plain", "int8", "uint8"), LABELS, NORMALIZATION)
    assert meta["input"]["dtype"] == meta["output"]["dtype"] == "uint8"


def edit(meta, role, key, value):
    changed = copy.deepcopy(meta)
    changed[role][key] = value
    return changed


@pytest.mark.parametrize(
    "change, named",
    [
        (lambda m: edit(m, "input", "shape", [1, 64, 64, 3]), "input shape"),
        (lambda m: edit(m, "output", "dtype", "uint8"), "output dtype"),
        (lambda m: edit(m, "input", "quantization", {**m["input"]["quantization"], "scale": 0.5}), "input quantization scale"),
        (lambda m: edit(m, "output", "quantization", {**m["output"]["quantization"], "zero_point": 99}), "output quantization zero_point"),
        (lambda m: {**m, "labels": LABELS[:3]}, "labels: meta has 3, the model outputs 4"),
    ],
)
def test_each_mismatch_is_named(int8_model, change, named):
    meta = meta_for_tflite(int8_model, LABELS, NORMALIZATION)
    with pytest.raises(MetaMismatchError, match=named) as raised:
        check_meta_matches_tflite(change(meta), int8_model)
    assert len(raised.value.mismatches) == 1


def test_float_meta_against_an_int8_model_lists_every_disagreement(int8_model):
    float_meta = meta_for_tflite(tiny.converted("plain", "none"), LABELS, NORMALIZATION)
    with pytest.raises(MetaMismatchError) as raised:
        check_meta_matches_tflite(float_meta, int8_model)
    assert len(raised.value.mismatches) == 4  # dtype and quantization, of input and of output
    assert "Regenerate" in str(raised.value)


def test_wrong_number_of_labels_is_refused(int8_model):
    with pytest.raises(MetaMismatchError, match="3 given, the model outputs 4"):
        meta_for_tflite(int8_model, LABELS[:3], NORMALIZATION)


def test_computed_fields_cannot_be_overridden(int8_model):
    with pytest.raises(MetaError, match="'input' is computed from the model"):
        meta_for_tflite(int8_model, LABELS, NORMALIZATION, input={"shape": [1, 8, 8, 3]})


def test_read_meta_explains_missing_files_bad_json_and_missing_keys(int8_model, tmp_path):
    with pytest.raises(MetaError, match="does not exist"):
        read_meta(tmp_path / "absent.json")
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(MetaError, match="not valid JSON"):
        read_meta(broken)
    meta = meta_for_tflite(int8_model, LABELS, NORMALIZATION)
    del meta["labels"], meta["normalization"]
    incomplete = tmp_path / "incomplete.json"
    incomplete.write_text(json.dumps(meta))
    with pytest.raises(MetaError, match=r"missing keys \['normalization', 'labels'\]"):
        read_meta(incomplete)


def test_write_meta_refuses_an_invalid_meta(int8_model, tmp_path):
    meta = meta_for_tflite(int8_model, LABELS, NORMALIZATION)
    meta["input"]["quantization"] = None  # an int8 input the app could not feed
    with pytest.raises(MetaError, match="input is int8 but quantization"):
        write_meta(tmp_path / "model_meta.json", meta)
    assert not (tmp_path / "model_meta.json").exists()


def test_kind_says_probabilities_for_a_model_that_ends_in_a_softmax():
    model = tiny.converted("plain", "int8", "float32", "probabilities")
    assert tensor_spec(model)["output"]["kind"] == "probabilities"
