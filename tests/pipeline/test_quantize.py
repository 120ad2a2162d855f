"""pipeline.quantize: QAT fine-tuning gives a model that converts to a clean int8 graph; PQAT keeps pruned zeros."""
import numpy as np
import pytest

from tiny_networks import tiny_network


def sparsified(model, fraction: float = 0.75, seed: int = 0):
    """`model` with `fraction` of every Conv2D kernel zeroed: what magnitude pruning leaves, without its fine-tune."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if type(layer).__name__ == "Conv2D":
            kernel = layer.kernel.numpy()
            kernel[rng.random(kernel.shape) < fraction] = 0.0
            layer.kernel.assign(kernel)
    return model


def test_pruned_model_keeps_its_zeros_through_qat_and_converts_to_an_integer_only_int8_graph(tiny_data, tmp_path):
    from export.convert import is_quantization_aware
    from pipeline.convert_verify import convert_and_verify
    from pipeline.quantize import (
        load_quantization_aware_model,
        quantization_aware_finetune,
        save_quantization_aware_model,
        weight_zero_fraction,
    )

    model = sparsified(tiny_network(tiny_data))
    zeros_before = weight_zero_fraction(model)
    assert zeros_before > 0.7
    quantized = quantization_aware_finetune(model, tiny_data, epochs=1, learning_rate=1e-3, run_dir=tmp_path)
    assert is_quantization_aware(quantized)
    assert weight_zero_fraction(quantized) == pytest.approx(zeros_before)  # PQAT, chosen because the model is sparse

    save_quantization_aware_model(quantized, tmp_path / "model_qat.h5")
    reloaded = load_quantization_aware_model(tmp_path / "model_qat.h5")
    images, _ = tiny_data.val_arrays()
    np.testing.assert_array_equal(reloaded(images, training=False), quantized(images, training=False))

    result = convert_and_verify(reloaded, tiny_data, tmp_path, quantization="int8", io_dtype="int8", sparse=True,
                                model_name="mobilenet_v1").to_dict()
    assert result["integer_only_problems"] == []
    assert result["checks"] == {"meta_matches_tflite": True, "integer_only": True, "sparse_weights_stored": True}
    assert set(result["op_histogram"]["quantized"]) <= {"CONV_2D", "DEPTHWISE_CONV_2D", "RESHAPE", "MEAN",
                                                        "FULLY_CONNECTED", "ADD"}
    assert result["keras_model"] == "quantization_aware"  # its "Keras float" accuracy is the QAT model's own
    assert (tmp_path / "converted" / "model_float32.tflite").is_file()  # from the same weights without fake-quant wrappers


def test_float_model_inside_a_qat_model_has_the_original_weights(tiny_data):
    from pipeline.quantize import float_model_from_quantization_aware, quantize_for_training

    model = tiny_network(tiny_data)
    unwrapped = float_model_from_quantization_aware(quantize_for_training(model))
    images, _ = tiny_data.val_arrays()
    assert [layer.name for layer in unwrapped.layers if layer.weights] == [
        layer.name for layer in model.layers if layer.weights]
    np.testing.assert_allclose(unwrapped(images, training=False), model(images, training=False), atol=1e-5)


@pytest.mark.parametrize("arguments, message", [({"epochs": 0}, "at least one"), ({"learning_rate": -1.0}, "positive")])
def test_invalid_arguments_are_refused(tiny_data, tmp_path, arguments, message):
    from pipeline.quantize import quantization_aware_finetune

    with pytest.raises(ValueError, match=message):
        quantization_aware_finetune(None, tiny_data, run_dir=tmp_path, **{"epochs": 1, "learning_rate": 1e-3,
                                                                            **arguments})
