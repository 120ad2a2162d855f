"""pipeline.channel_prune: sparsity training with L1 on gamma, channel removal, fine-tune, iterate."""
import numpy as np
import pytest
import tf_keras as keras

from models.channel_pruning import channel_counts
from tiny_networks import tiny_network


def test_l1_on_gamma_is_a_regularizer_on_a_clone(tiny_data):
    from pipeline.channel_prune import with_gamma_l1

    model = tiny_network(tiny_data)
    sparse = with_gamma_l1(model, 1e-3)
    assert not model.losses
    assert len(sparse.losses) == 14  # the stem and the 13 pointwise convolutions rank channels
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), sparse.get_weights()))


def test_two_iterations_shrink_the_network_and_report_costs(tiny_data, tmp_path):
    from pipeline.channel_prune import channel_prune_and_finetune

    model = tiny_network(tiny_data)
    result = channel_prune_and_finetune(
        model, tiny_data, tmp_path, prune_ratio=0.5, iterations=2
    )
    metrics = result.metrics()
    assert metrics["macs"] < 0.8 * metrics["macs_before_pruning"]
    assert metrics["params"] < metrics["params_before_pruning"]
    assert [r["macs"] for r in result.iterations] == sorted((r["macs"] for r in result.iterations), reverse=True)
    assert not result.model.losses  # the L1 penalty ends with pruning: an ordinary model
    assert result.model.get_layer("conv_pw_13").filters == result.channels["conv_pw_13"]
    unpruned = channel_counts(model)
    assert metrics["channels"] == result.channels and any(result.channels[c] < unpruned[c] for c in unpruned)
    assert 0.0 <= result.val_accuracy <= 1.0
    assert all(0.0 <= r["val_accuracy_before_finetune"] <= 1.0 for r in result.iterations)
    images = next(iter(tiny_data.val))[0]
    assert result.model(images, training=False).shape == (images.shape[0], tiny_data.num_classes)


@pytest.mark.parametrize("arguments, message", [
    ({"prune_ratio": 1.0}, "strictly between 0 and 1"),
    ({"prune_ratio": 0.3, "target_macs": 1000}, "exactly one"),
    ({"target_macs": 10**12}, "below the model's"),
    ({"prune_ratio": 0.3, "iterations": 0}, "iterations must be a positive int"),
    ({"prune_ratio": 0.3, "criterion": "taylor"}, "criterion must be one of gamma, gamma_per_mac"),
])
def test_bad_arguments_are_clear_errors(tiny_data, tmp_path, arguments, message):
    from pipeline.channel_prune import channel_prune_and_finetune

    with pytest.raises(ValueError, match=message):
        channel_prune_and_finetune(tiny_network(tiny_data), tiny_data, tmp_path, **arguments)


def test_fine_tuning_follows_the_given_recipe(tiny_data, tmp_path, monkeypatch):
    import pipeline.channel_prune as channel_prune
    from pipeline.train import TrainSettings

    # The fine-tune continues the run's training: its optimizer settings, label smoothing and seed, not defaults.
    seen = []
    real_fit = channel_prune.fit

    def recording_fit(model, data, settings, work_dir, callbacks=()):
        seen.append((settings, model.loss.label_smoothing))
        return real_fit(model, data, settings, work_dir, callbacks)

    monkeypatch.setattr(channel_prune, "fit", recording_fit)
    recipe = TrainSettings(epochs=1, learning_rate=5e-4, weight_decay=0.01, label_smoothing=0.1, seed=3)
    channel_prune.channel_prune_and_finetune(tiny_network(tiny_data), tiny_data, tmp_path, prune_ratio=0.3,
                                             finetune=recipe)
    assert seen == [(recipe, 0.1)]
