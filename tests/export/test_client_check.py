"""export.client_check: MediaPipe Tasks' ImageClassifier, in its own environment, loads our models as an app would."""
import numpy as np
import pytest

import tiny_tflite_models as tiny
from export.client_check import ClientCheckError, classify_with_mediapipe, client_python, mediapipe_agreement
from export.evaluate import TFLiteClassifier
from export.metadata import write_classifier_metadata

LABELS = ["cat", "dog", "fish", "bird"]

pytestmark = pytest.mark.skipif(
    client_python() is None,
    reason="no MediaPipe environment (.venv-client/ or $MEDIAPIPE_CLIENT_PYTHON); .ci/run builds it from "
    "requirements-client.txt",
)


def pixels(count: int, seed: int = 0) -> np.ndarray:
    """Raw RGB images at the model size, as a camera frame reaches the client."""
    return np.random.default_rng(seed).integers(0, 256, (count, *tiny.IMAGE_SHAPE), dtype=np.uint8)


def our_top1_names(flatbuffer: bytes, images: np.ndarray) -> list[str]:
    """The pipeline's own evaluation: normalized float images through the LiteRT interpreter."""
    scores = TFLiteClassifier(flatbuffer).logits((images.astype(np.float32) - 127.5) / 127.5)
    return [LABELS[index] for index in np.argmax(scores, axis=1)]


def saved(tmp_path, name: str, flatbuffer: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(flatbuffer)
    return str(path)


@pytest.mark.parametrize("quantization", ["none", "int8"])
def test_models_with_metadata_load_and_agree_with_our_top1(tmp_path, quantization):
    # The deployed I/O: float32 in, probabilities out (an int8 model quantizes inside, on XNNPACK, on the pixel range).
    flatbuffer = write_classifier_metadata(
        tiny.converted("plain", quantization, "float32", "probabilities", (-1.0, 1.0) if quantization == "int8" else None),
        name="tiny", labels=LABELS, mean=127.5, std=127.5,
    )
    images = pixels(24)
    expected = our_top1_names(flatbuffer, images)
    true_names = [LABELS[i] for i in np.random.default_rng(1).integers(0, 4, len(images))]

    check = mediapipe_agreement(saved(tmp_path, "model.tflite", flatbuffer), images, expected, true_names)

    assert check.num_images == 24 and check.agreement == 1.0 and check.passed, check.disagreements
    assert check.accuracy == pytest.approx(np.mean([a == b for a, b in zip(expected, true_names)]))
    assert 0.0 <= check.min_score <= check.max_score <= 1.0  # probabilities, as the metadata says
    assert check.mediapipe_version == "1.2.2"


def test_names_and_scores_come_from_the_model_file(tmp_path):
    flatbuffer = write_classifier_metadata(tiny.converted("plain", "none", "int8", "probabilities"),
                                           name="tiny", labels=LABELS, mean=127.5, std=127.5)
    images = pixels(3, seed=5)
    results, _ = classify_with_mediapipe(saved(tmp_path, "model.tflite", flatbuffer), images)
    probabilities = TFLiteClassifier(flatbuffer).logits((images.astype(np.float32) - 127.5) / 127.5)
    for result, row in zip(results, probabilities):
        assert result.name == LABELS[result.index] and result.index == int(np.argmax(row))
        assert result.score == pytest.approx(float(row.max()), abs=1e-4)


def test_what_the_client_refuses_is_named(tmp_path):
    images = pixels(1)
    without_metadata = saved(tmp_path, "float.tflite", tiny.converted("plain", "none", "int8", "probabilities"))
    with pytest.raises(ClientCheckError, match="NormalizationOptions"):
        classify_with_mediapipe(without_metadata, images)
    int8_input = write_classifier_metadata(tiny.converted("plain", "int8", "int8"), name="tiny", labels=LABELS,
                                           mean=127.5, std=127.5)
    with pytest.raises(ClientCheckError, match="uint8/float32, got INT8"):
        classify_with_mediapipe(saved(tmp_path, "int8.tflite", int8_input), images)


def test_a_missing_environment_says_how_to_build_it(tmp_path):
    with pytest.raises(ClientCheckError, match="requirements-client.txt"):
        classify_with_mediapipe(tmp_path / "model.tflite", pixels(1), python=tmp_path / "no-python")
    with pytest.raises(ValueError, match="uint8"):
        classify_with_mediapipe(tmp_path / "model.tflite", pixels(1).astype(np.float32))
