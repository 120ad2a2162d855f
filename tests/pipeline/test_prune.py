"""pipeline.prune: the three TF-MOT methods reach their sparsity pattern after a short fine-tune."""
import numpy as np
import pytest

from tiny_networks import TINY_MODEL, tiny_network


def zeros_per_block_of_four_input_channels(kernel: np.ndarray) -> np.ndarray:
    """Zero count of every run of 4 consecutive input channels (Conv2D [h, w, in, out] or Dense [in, out])."""
    input_last = np.moveaxis(kernel, -2, -1)
    return np.count_nonzero(input_last.reshape(-1, 4) == 0, axis=-1)


def test_2_by_4_leaves_exactly_two_zeros_in_every_four_input_channels(tiny_data, tmp_path):
    from pipeline.prune import prune_and_finetune

    model = tiny_network(tiny_data)
    before = [weight.copy() for weight in model.get_weights()]
    result = prune_and_finetune(model, tiny_data, "2:4", 0.5, epochs=1, learning_rate=1e-3, run_dir=tmp_path)

    assert "conv1" not in result.per_layer_sparsity  # the 3-channel stem cannot hold a 2:4 pattern
    assert len(result.per_layer_sparsity) == 14  # the 13 pointwise convolutions and the 1x1 classifier
    for name in result.per_layer_sparsity:
        zeros = zeros_per_block_of_four_input_channels(result.model.get_layer(name).kernel.numpy())
        assert np.all(zeros == 2), name
        assert result.per_layer_sparsity[name] == 0.5
    assert result.overall_sparsity == 0.5
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))  # the input model is intact
    assert not any("prune_low_magnitude" in layer.name for layer in result.model.layers)  # stripped


def test_magnitude_reaches_the_target_sparsity_and_logs_it(tiny_data, tmp_path):
    from pipeline.prune import prune_and_finetune

    result = prune_and_finetune(tiny_network(tiny_data), tiny_data, "magnitude", 0.7, epochs=1,
                                learning_rate=1e-3, run_dir=tmp_path)

    assert result.overall_sparsity == pytest.approx(0.7, abs=0.01)
    for name, sparsity in result.per_layer_sparsity.items():
        kernel = result.model.get_layer(name).kernel.numpy()
        assert sparsity == pytest.approx(np.mean(kernel == 0)) == pytest.approx(0.7, abs=0.02), name
    assert {"conv1", "conv_pw_13", "conv_preds"} <= set(result.per_layer_sparsity)
    assert list((tmp_path / "prune" / "logs" / "pruning").rglob("events.out.tfevents.*"))  # PruningSummaries


@pytest.mark.parametrize("name, padding, reason", [
    (TINY_MODEL, "same", "ZeroPadding2D"),
    ("mobilenet_v3_small", "symmetric", "HardSwish"),
])
def test_xnnpack_rejects_a_model_outside_its_policy_with_a_clear_error(tiny_data, tmp_path, name, padding, reason):
    from pipeline.prune import PruningError, prune_and_finetune

    with pytest.raises(PruningError, match=rf"{reason}(.|\n)*padding='symmetric'(.|\n)*mobilenet_v1 and mobilenet_v2"):
        prune_and_finetune(tiny_network(tiny_data, name, padding), tiny_data, "xnnpack", 0.75, epochs=1,
                           learning_rate=1e-3, run_dir=tmp_path)
    assert not (tmp_path / "prune").exists()  # refused before any training


@pytest.mark.parametrize("arguments, message", [
    ({"method": "4:8"}, r"choose one of: 2:4, xnnpack, magnitude"),
    ({"sparsity": 0.0}, r"strictly between 0 and 1"),
    ({"sparsity": 1.0}, r"strictly between 0 and 1"),
    ({"epochs": 0}, r"at least one"),
    ({"learning_rate": 0.0}, r"positive"),
])
def test_invalid_arguments_name_the_allowed_values(tiny_data, tmp_path, arguments, message):
    from pipeline.prune import prune_and_finetune

    call = {"method": "magnitude", "sparsity": 0.5, "epochs": 1, "learning_rate": 1e-3, **arguments}
    with pytest.raises(ValueError, match=message):
        prune_and_finetune(None, tiny_data, run_dir=tmp_path, **call)
