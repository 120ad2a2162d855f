"""export.metadata: TFLite Model Metadata written into real conversions, read back field by field."""
import io
import zipfile

import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter

import tiny_tflite_models as tiny
from export.graph import op_histogram
from export.metadata import (
    LABELS_FILE,
    METADATA_BUFFER_NAME,
    MissingMetadataError,
    ModelMetadataError,
    check_classifier_metadata,
    read_metadata,
    write_classifier_metadata,
)

LABELS = ["cat", "dog", "fish", "bird"]
INFO = dict(name="tiny_plain", description="A tiny test classifier.", version="7", author="mobile-cnn tests",
            license="Apache-2.0")


def with_metadata(flatbuffer: bytes, labels=LABELS) -> bytes:
    return write_classifier_metadata(flatbuffer, labels=labels, mean=127.5, std=127.5, **INFO)


def outputs(flatbuffer: bytes, image: np.ndarray) -> np.ndarray:
    interpreter = Interpreter(model_content=flatbuffer)
    interpreter.allocate_tensors()
    detail = interpreter.get_input_details()[0]
    if detail["dtype"] != np.float32:
        scale, zero_point = detail["quantization"]
        image = np.clip(np.round(image / scale) + zero_point, -128, 255).astype(detail["dtype"])
    interpreter.set_tensor(detail["index"], image[np.newaxis])
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


@pytest.mark.parametrize(
    "quantization, io_dtype, scores, input_stats",
    [("none", "int8", "probabilities", (-1.0, 1.0)), ("float16", "int8", "logits", (-1.0, 1.0)),
     ("dynamic", "int8", "probabilities", (-1.0, 1.0)), ("int8", "float32", "probabilities", (-1.0, 1.0)),
     ("int8", "uint8", "logits", (0.0, 255.0))],
)
def test_every_field_and_the_labels_file_read_back(quantization, io_dtype, scores, input_stats):
    plain = tiny.converted("plain", quantization, io_dtype, scores)
    model = with_metadata(plain)
    metadata = read_metadata(model)

    assert {key: metadata[key] for key in INFO} == INFO
    assert metadata["min_parser_version"] == "1.0.0"
    (image,) = metadata["inputs"]
    assert image["name"] == "image" and image["content"] == "ImageProperties" and image["color_space"] == "RGB"
    assert image["default_size"] == {"width": 32, "height": 32}
    assert image["process_units"] == [{"type": "NormalizationOptions", "mean": [127.5] * 3, "std": [127.5] * 3}]
    low, high = input_stats
    assert image["stats"] == {"min": [low] * 3, "max": [high] * 3}
    (output,) = metadata["outputs"]
    assert output["name"] == scores and output["content"] == "FeatureProperties"
    assert output["associated_files"] == [{
        "name": LABELS_FILE, "type": "TENSOR_AXIS_LABELS", "locale": None,
        "description": "Class names, one per line, in the order of the output's scores.",
    }]
    assert output["stats"] == ({"min": [0.0], "max": [1.0]} if scores == "probabilities" else None)
    assert ("Probabilities" in output["description"]) == (scores == "probabilities")
    assert metadata["scores"] == scores
    assert metadata["associated_files"] == {LABELS_FILE: b"cat\ndog\nfish\nbird\n"}
    assert metadata["labels"] == LABELS

    # The model itself is untouched: same ops, bit-identical outputs.
    assert op_histogram(model) == op_histogram(plain)
    image_in = tiny.images(1, seed=9)[0]
    np.testing.assert_array_equal(outputs(model, image_in), outputs(plain, image_in))
    if io_dtype != "int8":  # int8 I/O is refused by clients (test below)
        check_classifier_metadata(model, num_classes=4)


def test_the_metadata_is_where_clients_look_for_it():
    model = with_metadata(tiny.converted("plain", "none", scores="probabilities"))
    # The labels travel as a zip appended after the flatbuffer, stored uncompressed.
    with zipfile.ZipFile(io.BytesIO(model)) as archive:
        (info,) = archive.infolist()
    assert info.filename == LABELS_FILE and info.compress_type == zipfile.ZIP_STORED
    from ai_edge_litert import schema_py_generated as schema

    parsed = schema.ModelT.InitFromPackedBuf(bytearray(model), 0)
    names = [entry.name.decode() for entry in parsed.metadata]
    assert names.count(METADATA_BUFFER_NAME) == 1
    buffer = parsed.buffers[parsed.metadata[names.index(METADATA_BUFFER_NAME)].buffer].data.tobytes()
    assert buffer[4:8] == b"M001"  # the metadata flatbuffer's file identifier


def test_rewriting_replaces_the_old_metadata_and_labels():
    once = with_metadata(tiny.converted("plain", "none", scores="probabilities"))
    twice = write_classifier_metadata(once, name="renamed", labels=["a", "b", "c", "d"], mean=0.0, std=255.0)
    metadata = read_metadata(twice)
    assert metadata["name"] == "renamed" and metadata["description"] is None and metadata["labels"] == list("abcd")
    assert metadata["inputs"][0]["process_units"][0]["mean"] == [0.0] * 3
    assert list(metadata["associated_files"]) == [LABELS_FILE]
    assert len(twice) < len(once) + 200  # no second metadata buffer or archive piled on


def test_a_model_without_metadata_is_caught_with_a_clear_error():
    with pytest.raises(MissingMetadataError, match="no TFLite Model Metadata.*write_classifier_metadata"):
        read_metadata(tiny.converted("plain", "none"))
    with pytest.raises(MissingMetadataError, match="cannot load it"):
        check_classifier_metadata(tiny.converted("plain", "none"), num_classes=4)


def test_a_wrong_label_count_is_caught():
    model = with_metadata(tiny.converted("plain", "int8", "float32", "probabilities"))
    assert check_classifier_metadata(model, num_classes=4)["labels"] == LABELS
    with pytest.raises(ModelMetadataError, match="4 labels in the model's label file, expected 10") as error:
        check_classifier_metadata(model, num_classes=10)
    assert "\n" not in str(error.value)
    with pytest.raises(ModelMetadataError, match="3 labels given, the model outputs 4 classes"):
        with_metadata(tiny.converted("plain", "none"), labels=LABELS[:3])


def test_io_a_client_cannot_load_is_caught():
    with pytest.raises(ModelMetadataError, match=r"input is int8; .* output is int8"):
        check_classifier_metadata(with_metadata(tiny.converted("plain", "int8", "int8")), num_classes=4)


def test_a_uint8_input_whose_quantization_is_not_the_normalization_is_caught():
    # Calibrated on images in [-0.5, 0.5], the uint8 input's scale is half of 1/127.5: MediaPipe's raw pixels
    # would be read as twice their value.
    from export.convert import to_tflite

    narrow = to_tflite(tiny.classifier(), "int8", tiny.images(16, seed=3) * 0.5, io_dtype="uint8")
    with pytest.raises(ModelMetadataError, match="uint8 input quantization .* is not the normalization"):
        check_classifier_metadata(with_metadata(narrow), num_classes=4)


def test_scores_are_described_as_what_the_graph_outputs():
    from export import metadata as module

    logits = with_metadata(tiny.converted("plain", "none"))
    assert read_metadata(logits)["scores"] == "logits"
    check_classifier_metadata(logits, num_classes=4)  # logits, said so: loadable
    softmax_model = tiny.converted("softmax", "none")  # a Keras Softmax layer is found in the graph too
    assert read_metadata(with_metadata(softmax_model))["scores"] == "probabilities"

    # A probabilities model's metadata transplanted onto the logits model: the claim no longer holds.
    claims_probabilities = module._metadata_buffer(module._unpack_model(with_metadata(softmax_model)))
    lying = module._unpack_model(logits)
    module._set_metadata_buffer(lying, bytes(claims_probabilities))
    lying = module._with_associated_files(module._pack_model(lying), {LABELS_FILE: "a\nb\nc\nd\n"})
    with pytest.raises(ModelMetadataError, match="metadata says the scores are probabilities, the graph outputs logits"):
        check_classifier_metadata(lying, num_classes=4)
