"""pipeline.convert_verify: every artifact is written, and its metrics agree with the files."""
import json

import numpy as np
import pytest

from tiny_networks import tiny_network


@pytest.fixture(scope="module")
def float_network(tiny_data):
    return tiny_network(tiny_data)


def test_int8_run_writes_every_artifact_with_consistent_metrics(float_network, tiny_data, tmp_path):
    from export.meta import check_meta_matches_tflite, read_meta
    from pipeline.convert_verify import convert_and_verify

    result = convert_and_verify(float_network, tiny_data, tmp_path, quantization="int8", io_dtype="uint8",
                                sparse=False, model_name="mobilenet_v1").to_dict()

    # The models as converted go into converted/ (the metadata stage writes the deployable ones beside them).
    assert sorted(path.name for path in tmp_path.iterdir()) == ["converted", "labels.txt", "model_meta.json"]
    assert sorted(path.name for path in (tmp_path / "converted").iterdir()) == [
        "model_calibrated_float32.tflite", "model_float32.tflite", "model_int8.tflite"]
    meta = read_meta(tmp_path / "model_meta.json")
    assert meta["model_file"] == result["paths"]["app_model"] == "model_int8.tflite"
    check_meta_matches_tflite(meta, tmp_path / "converted" / meta["model_file"])
    assert meta["input"]["dtype"] == "uint8" and meta["labels"] == tiny_data.class_names
    assert (tmp_path / "labels.txt").read_text().splitlines() == tiny_data.class_names

    assert all(0.0 <= value <= 1.0 for value in result["accuracy"].values())
    assert 0.0 <= result["agreement_quantized_vs_float"] <= 1.0
    assert result["size_bytes"] == {"float32": (tmp_path / "converted" / "model_float32.tflite").stat().st_size,
                                    "quantized": (tmp_path / "converted" / "model_int8.tflite").stat().st_size}
    assert result["size_bytes"]["quantized"] < result["size_bytes"]["float32"] / 2
    assert result["checks"] == {"meta_matches_tflite": True, "integer_only": True} and result["passed"]
    assert result["op_histogram"]["float32"]["CONV_2D"] == result["op_histogram"]["quantized"]["CONV_2D"] == 15
    # One XNNPACK partition; uint8 io adds a uint8<->int8 QUANTIZE at each end that runs outside it.
    assert result["xnnpack_partitions"]["quantized"]["partitions"] == 1
    assert result["xnnpack_partitions"]["quantized"]["undelegated_ops"] == {"QUANTIZE": 2}
    assert result["num_examples"] == tiny_data.num_val
    assert set(result["gpu_compatibility"]) == {"float32"} and result["gpu_compatibility"]["float32"]["compatible"]
    json.dumps(result, allow_nan=False)  # the stage summary goes into stages.json and metrics.json


def test_tflite_float32_reproduces_the_keras_model(float_network, tiny_data, tmp_path):
    from export.evaluate import TFLiteClassifier
    from pipeline.convert_verify import convert_and_verify

    result = convert_and_verify(float_network, tiny_data, tmp_path, quantization="none", io_dtype="int8",
                                sparse=False, model_name="mobilenet_v1")

    images, _ = tiny_data.val_arrays()
    np.testing.assert_allclose(TFLiteClassifier(tmp_path / "converted" / "model_float32.tflite").logits(images),
                               float_network.predict(images, verbose=0), atol=1e-4)
    assert result.accuracy_tflite_float32 == result.accuracy_keras
    assert result.accuracy_tflite_quantized is None and result.size_bytes_quantized is None
    assert result.paths["app_model"] == "model_float32.tflite"
    assert not (tmp_path / "converted" / "model_int8.tflite").exists()


def test_xnnpack_pruned_model_is_stored_sparse(tiny_data, tmp_path):
    from pipeline.convert_verify import convert_and_verify
    from pipeline.prune import prune_and_finetune

    pruned = prune_and_finetune(tiny_network(tiny_data, padding="symmetric"), tiny_data, "xnnpack", 0.75, epochs=1,
                                learning_rate=1e-3, run_dir=tmp_path)
    # The XNNPACK policy prunes the 1x1 convolutions between the symmetric stem and the global pool.
    assert set(pruned.per_layer_sparsity) == {f"conv_pw_{index}" for index in range(1, 14)} | {"conv_preds"}
    assert pruned.overall_sparsity == pytest.approx(0.75, abs=0.01)

    result = convert_and_verify(pruned.model, tiny_data, tmp_path, quantization="none", io_dtype="int8",
                                sparse=True, model_name="mobilenet_v1")
    assert result.checks["sparse_weights_stored"]
    assert result.sparse_tensors["float32"] >= 13
    assert result.op_histogram["float32"]["DENSIFY"] == result.sparse_tensors["float32"]
    # 75% of the pointwise weights gone: the float file shrinks to well under two thirds of the dense size.
    dense_bytes = 4 * pruned.model.count_params()
    assert result.size_bytes_float32 < 0.6 * dense_bytes


def test_unknown_quantization_is_refused(float_network, tiny_data, tmp_path):
    from pipeline.convert_verify import convert_and_verify

    with pytest.raises(ValueError, match="choose one of: int8, float16, dynamic, none"):
        convert_and_verify(float_network, tiny_data, tmp_path, quantization="int4", io_dtype="int8", sparse=False,
                           model_name="mobilenet_v1")
    assert not list(tmp_path.iterdir())
