"""Channel pruning (Network Slimming): lossless where it should be, each architecture's coupling, clear errors."""
from __future__ import annotations

import numpy as np
import pytest
import tf_keras as keras

from models import channel_pruning, complexity, registry

INPUT_SHAPE = (32, 32, 3)


def _build(name: str, width: float, **options) -> keras.Model:
    model = registry.build(name, input_shape=INPUT_SHAPE, num_classes=5, width_multiplier=width, **options)
    rng = np.random.default_rng(0)
    for layer in model.layers:  # trained-looking BatchNorms, so a wrong slice shows in the outputs
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, variance = layer.get_weights()
            layer.set_weights([
                rng.uniform(0.2, 1.5, gamma.shape).astype("float32"),
                rng.normal(0, 0.2, beta.shape).astype("float32"),
                rng.normal(0, 0.2, mean.shape).astype("float32"),
                rng.uniform(0.5, 1.5, variance.shape).astype("float32"),
            ])
    return model


# (name, width, options, groups that must be prunable, layer-name parts that must never be pruned,
#  convs that must be one group because residual adds tie them)
CASES = {
    "mobilenet_v1": ("mobilenet_v1", 0.25, {}, ["conv1", "conv_pw_1", "conv_pw_13"], [], []),
    # Residual adds tie a stage's projections into one group; expansions are groups of their own.
    "mobilenet_v2": ("mobilenet_v2", 0.25, {}, ["expanded_conv_1/expand", "expanded_conv_16/expand", "Conv_1"], [],
                     ["expanded_conv_3/project", "expanded_conv_4/project", "expanded_conv_5/project"]),
    # SE: the excite conv's outputs follow the expansion they gate. At width 0.25 the 40- and 48-channel rows
    # both round to 16, so the adds tie five projections.
    "mobilenet_v3_small": ("mobilenet_v3_small", 0.25, {}, ["expanded_conv_3/expand", "Conv_1"], [],
                           [f"expanded_conv_{block}/project" for block in range(3, 8)]),
    # V3-Large's first bneck adds to the stem (from width 0.75, where both have 16 channels).
    "mobilenet_v3_large": ("mobilenet_v3_large", 0.75, {}, ["expanded_conv_1/expand"], [],
                           ["Conv", "expanded_conv/project"]),
    # Groups: the bottleneck (gconv1) pruned equally per group; gconv2 feeds the add/concat and stays.
    "shufflenet_v1": ("shufflenet_v1", 0.25, {"groups": 3}, ["stage2/unit1/gconv1", "stage3/unit2/gconv1"],
                      ["gconv2"], []),
    # Split/concat: only each branch's inside (1x1 expand + depthwise) and the stem/conv5.
    "shufflenet_v2": ("shufflenet_v2", 0.5, {}, ["conv1", "stage2/unit2/branch2/expand", "conv5"],
                      ["branch2/project", "branch1/project"], []),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_rebuilt_network_equals_original_with_silenced_channels(case):
    name, width, options, prunable, never, tied = CASES[case]
    model = _build(name, width, **options)
    groups = {g.conv: g for g in channel_pruning.prunable_groups(model)}
    assert set(prunable) <= set(groups), sorted(groups)
    producers = [conv for g in groups.values() for conv in g.convs]
    assert not [conv for conv in producers if any(part in conv for part in never)]
    if tied:
        assert [g.convs for g in groups.values() if tied[0] in g.convs] == [tuple(tied)]

    keep = channel_pruning.select_channels(model, prune_ratio=0.5)
    if tied:  # summed |gamma| ranks a tied group high; cut it by hand too (every other channel, one mask)
        keep[tied[0]] = np.arange(0, groups[tied[0]].channels, 2)
    channel_pruning.silence_removed_channels(model, keep)
    pruned = channel_pruning.prune_channels(model, keep)

    images = np.random.default_rng(1).normal(size=(2, *INPUT_SHAPE)).astype("float32")
    np.testing.assert_allclose(pruned(images, training=False), model(images, training=False), atol=1e-4, rtol=1e-4)
    assert complexity.analyze(pruned).macs < 0.85 * complexity.analyze(model).macs
    assert channel_pruning.macs_after(model, keep) == complexity.analyze(pruned).macs  # the target search's count
    assert complexity.analyze(pruned).params < complexity.analyze(model).params
    # An ordinary network again: same layer names, prunable once more, with the kept counts.
    assert [layer.name for layer in pruned.layers] == [layer.name for layer in model.layers]
    counts = channel_pruning.channel_counts(pruned)
    assert counts == {conv: len(keep[g.conv]) for g in groups.values() for conv in g.convs}
    assert any(len(keep[conv]) < g.channels for conv, g in groups.items())
    if tied:  # the tied group was cut too (every projection of the stage, with one mask)
        assert len({counts[conv] for conv in tied}) == 1 and counts[tied[0]] < groups[tied[0]].channels
    # The same network from the builder with these per-layer counts: same layers, shapes and configurations.
    rebuilt = registry.build(name, input_shape=INPUT_SHAPE, num_classes=5, width_multiplier=width,
                             channels=counts, **options)
    assert [(layer.name, layer.output_shape) for layer in rebuilt.layers] == \
        [(layer.name, layer.output_shape) for layer in pruned.layers]
    rebuilt.set_weights(pruned.get_weights())
    np.testing.assert_allclose(rebuilt(images, training=False), pruned(images, training=False), atol=1e-5)
    if case == "shufflenet_v1":
        assert all(count % 3 == 0 for count in counts.values())
    if case == "mobilenet_v3_small":
        excite = [s.layer for s in groups["expanded_conv_3/expand"].sites if s.role == "output"]
        assert "expanded_conv_3/squeeze_excite/Conv_1" in excite
        assert pruned.get_layer("expanded_conv_3/squeeze_excite/Conv_1").filters == counts["expanded_conv_3/expand"]


@pytest.fixture(scope="module")
def small_network():
    """MobileNetV1 0.25: the shortest graph, so the target search (a rebuild per step) and conversion are quick."""
    return _build("mobilenet_v1", 0.25)


@pytest.mark.parametrize("ratio", [0, 1, -0.2, 1.5, True])
def test_bad_ratio_is_a_clear_error(small_network, ratio):
    with pytest.raises(ValueError, match="prune_ratio must be a fraction strictly between 0 and 1"):
        channel_pruning.select_channels(small_network, prune_ratio=ratio)


def test_target_macs(small_network):
    macs = complexity.analyze(small_network).macs
    with pytest.raises(ValueError, match="unreachable"):
        channel_pruning.select_channels(small_network, target_macs=1000)
    with pytest.raises(ValueError, match="below the model's"):
        channel_pruning.select_channels(small_network, target_macs=macs)
    with pytest.raises(ValueError, match="exactly one"):
        channel_pruning.select_channels(small_network, prune_ratio=0.3, target_macs=macs // 2)
    target = int(0.7 * macs)
    pruned = channel_pruning.slim(small_network, target_macs=target)
    assert 0.5 * macs < complexity.analyze(pruned).macs <= target


def test_floor_never_empties_a_layer(small_network):
    keep = channel_pruning.select_channels(small_network, prune_ratio=0.99)
    for group in channel_pruning.prunable_groups(small_network):
        assert len(keep[group.conv]) >= max(1, np.ceil(0.1 * group.channels))


def test_bad_keep_is_a_clear_error(small_network):
    with pytest.raises(ValueError, match="Not prunable"):
        channel_pruning.prune_channels(small_network, {"conv_dw_2": np.arange(4)})
    with pytest.raises(ValueError, match="distinct channel indices"):
        channel_pruning.prune_channels(small_network, {"conv_pw_2": np.array([0, 0])})


def test_bad_channel_counts_are_a_clear_error():
    options = dict(input_shape=INPUT_SHAPE, num_classes=5, width_multiplier=0.25)
    with pytest.raises(ValueError, match="Not prunable"):
        registry.build("mobilenet_v1", channels={"conv_dw_2": 8}, **options)
    with pytest.raises(ValueError, match="positive multiple of 1 up to 32, got 33"):
        registry.build("mobilenet_v1", channels={"conv_pw_2": 33}, **options)
    with pytest.raises(ValueError, match="tied by residual adds"):
        registry.build("mobilenet_v2", channels={"expanded_conv_1/project": 8, "expanded_conv_2/project": 16}, **options)
    with pytest.raises(ValueError, match="cannot be combined"):
        registry.build("mobilenet_v2", channels={"Conv_1": 8}, weights="imagenet", **options)


def test_pruned_network_is_pruned_again_quantization_aware_trained_and_converted(small_network):
    from export.convert import to_tflite
    from export.graph import integer_only_problems
    from models.quantization import quantize_model

    pruned = channel_pruning.slim(small_network, prune_ratio=0.4)
    twice = channel_pruning.slim(pruned, prune_ratio=0.4)
    assert complexity.analyze(twice).macs < complexity.analyze(pruned).macs
    images = np.random.default_rng(2).uniform(-1, 1, size=(4, *INPUT_SHAPE)).astype("float32")
    assert not integer_only_problems(to_tflite(twice, "int8", representative_images=images))
    assert not integer_only_problems(to_tflite(quantize_model(twice), "int8"))


def test_macs_per_channel_is_what_removing_one_channel_saves():
    model = _build("mobilenet_v2", 0.35)
    groups = channel_pruning.prunable_groups(model)
    layer_macs = {row.name: row.macs for row in complexity.analyze(model).layers}
    total = complexity.analyze(model).macs
    cost = channel_pruning.macs_per_channel(model, groups, layer_macs)
    for group in groups:
        one_fewer = {group.conv: np.arange(group.channels - 1)}
        assert total - channel_pruning.macs_after(model, one_fewer, groups, layer_macs) == pytest.approx(
            cost[group.conv], abs=1)
    # A channel on the 16x16 map of a 32 px input costs more than one on the 1x1 map before the head.
    assert cost["expanded_conv_1/expand"] > 10 * cost["expanded_conv_16/expand"]


def test_gamma_per_mac_ranks_by_gamma_over_cost_and_meets_a_mac_target_with_fewer_channels_removed():
    model = _build("mobilenet_v2", 0.35)
    groups = channel_pruning.prunable_groups(model)
    layer_macs = {row.name: row.macs for row in complexity.analyze(model).layers}
    cost = channel_pruning.macs_per_channel(model, groups, layer_macs)
    plain = channel_pruning.channel_scores(model, groups, "gamma", layer_macs)
    per_mac = channel_pruning.channel_scores(model, groups, "gamma_per_mac", layer_macs)
    for group in groups:
        np.testing.assert_allclose(per_mac[group.conv], plain[group.conv] / cost[group.conv], rtol=1e-6)

    target = int(0.7 * complexity.analyze(model).macs)
    by_gamma = channel_pruning.select_channels(model, target_macs=target)
    by_gamma_per_mac = channel_pruning.select_channels(model, target_macs=target, criterion="gamma_per_mac")
    for keep in (by_gamma, by_gamma_per_mac):
        assert channel_pruning.macs_after(model, keep, groups, layer_macs) <= target
    kept = {name: sum(len(channels) for channels in keep.values())
            for name, keep in (("gamma", by_gamma), ("gamma_per_mac", by_gamma_per_mac))}
    assert kept["gamma_per_mac"] > kept["gamma"]  # expensive channels first: fewer go for the same budget
    with pytest.raises(ValueError, match="criterion must be one of gamma, gamma_per_mac"):
        channel_pruning.select_channels(model, prune_ratio=0.3, criterion="taylor")
