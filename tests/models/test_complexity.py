"""models.complexity: exact counts on hand-built layers, and every network against its paper's MACs."""
from __future__ import annotations

import functools
import importlib.util
import json
from typing import NamedTuple

import pytest

import models  # noqa: F401  (sets TF_USE_LEGACY_KERAS before tf_keras is imported)
import tf_keras as keras

from models import complexity


def _single_layer(input_shape, layer):
    inputs = keras.Input(shape=input_shape)
    return keras.Model(inputs, layer(inputs))


def _row(result, layer_type):
    (row,) = [r for r in result.layers if r.type == layer_type]
    return row


# ---- exact counts, computed by hand -------------------------------------------------------------------------------


def test_conv2d_counts_kernel_times_output_positions():
    model = _single_layer((10, 12, 4), keras.layers.Conv2D(6, 3, strides=2, padding="same"))
    row = _row(complexity.analyze(model), "Conv2D")
    out_h, out_w = 5, 6  # ceil(10 / 2), ceil(12 / 2)
    assert row.output_shape == (out_h, out_w, 6)
    assert row.params == 3 * 3 * 4 * 6 + 6
    assert row.macs == 3 * 3 * 4 * 6 * out_h * out_w
    assert row.elementwise_ops == out_h * out_w * 6  # the bias additions
    assert row.memory_access_cost == 10 * 12 * 4 + out_h * out_w * 6 + (3 * 3 * 4 * 6 + 6)


def test_grouped_conv2d_counts_one_group_of_input_channels_per_output():
    groups, cin, cout = 3, 6, 9
    model = _single_layer((8, 8, cin), keras.layers.Conv2D(cout, 1, groups=groups, use_bias=False))
    row = _row(complexity.analyze(model), "Conv2D")
    assert row.params == cin // groups * cout
    assert row.macs == 1 * 1 * (cin // groups) * cout * 8 * 8  # a third of the ungrouped 3456
    assert row.macs == 1152
    assert row.elementwise_ops == 0
    assert row.memory_access_cost == 8 * 8 * cin + 8 * 8 * cout + cin // groups * cout


def test_depthwise_conv2d_counts_one_filter_per_channel():
    model = _single_layer(
        (8, 8, 5), keras.layers.DepthwiseConv2D(3, padding="valid", depth_multiplier=2, use_bias=False)
    )
    row = _row(complexity.analyze(model), "DepthwiseConv2D")
    assert row.output_shape == (6, 6, 10)
    assert row.params == 3 * 3 * 5 * 2
    assert row.macs == 3 * 3 * 5 * 2 * 6 * 6
    assert row.memory_access_cost == 8 * 8 * 5 + 6 * 6 * 10 + 3 * 3 * 5 * 2


def test_dense_counts_inputs_times_outputs():
    model = _single_layer((7,), keras.layers.Dense(3))
    result = complexity.analyze(model)
    row = _row(result, "Dense")
    assert (row.params, row.macs, row.elementwise_ops, row.memory_access_cost) == (7 * 3 + 3, 7 * 3, 3, 7 + 3 + 24)
    assert result.macs == 21 and result.params == 24 == model.count_params()


def test_1x1_conv_memory_access_is_the_shufflenet_v2_formula():
    h, w, c1, c2 = 14, 14, 32, 48
    model = _single_layer((h, w, c1), keras.layers.Conv2D(c2, 1, use_bias=False))
    assert complexity.analyze(model).memory_access_cost == h * w * (c1 + c2) + c1 * c2


def test_batch_norm_folds_and_relu_fuses_into_the_convolution():
    inputs = keras.Input(shape=(6, 6, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", use_bias=False, name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.ReLU(6.0, name="relu6")(x)
    result = complexity.analyze(keras.Model(inputs, x))
    rows = {r.name: r for r in result.layers}
    assert rows["bn"].memory_access_cost == rows["bn"].elementwise_ops == rows["bn"].macs == 0
    assert rows["bn"].params == 4 * 4  # gamma, beta, moving mean and variance
    assert rows["bn"].trainable_params == 2 * 4
    assert rows["relu6"].memory_access_cost == 0
    assert rows["relu6"].elementwise_ops == 6 * 6 * 4
    assert result.memory_access_cost == rows["conv"].memory_access_cost == 6 * 6 * 3 + 6 * 6 * 4 + 3 * 3 * 3 * 4


def test_element_wise_layers_that_cannot_fuse_cost_memory_access():
    inputs = keras.Input(shape=(5, 5, 4))
    a = keras.layers.Conv2D(4, 1, use_bias=False, name="conv")(inputs)
    # The conv output has two consumers, so the BatchNorm cannot be folded into it.
    b = keras.layers.BatchNormalization(name="bn")(a)
    x = keras.layers.Concatenate(name="concat")([a, b])
    x = keras.layers.ReLU(name="relu_after_concat")(x)
    y = keras.layers.Add(name="add")([inputs, inputs])
    y = keras.layers.AveragePooling2D(name="pool")(y)
    result = complexity.analyze(keras.Model(inputs, [x, y]))
    rows = {r.name: r for r in result.layers}
    elements = 5 * 5 * 4
    assert rows["bn"].elementwise_ops == 2 * elements
    assert rows["bn"].memory_access_cost == 2 * elements + 4 * 4
    assert rows["concat"].elementwise_ops == 0
    assert rows["concat"].memory_access_cost == 2 * elements + 2 * elements
    assert rows["relu_after_concat"].memory_access_cost == 2 * (2 * elements)  # G4: a separate pass over memory
    assert rows["add"].elementwise_ops == elements
    assert rows["add"].memory_access_cost == 3 * elements
    assert rows["pool"].output_shape == (2, 2, 4)
    assert rows["pool"].elementwise_ops == elements
    assert result.macs == rows["conv"].macs == 4 * 4 * elements // 4


def test_a_shared_layer_counts_its_weights_once_and_its_work_per_call():
    dense = keras.layers.Dense(5, use_bias=False, name="shared")
    inputs = keras.Input(shape=(3,))
    model = keras.Model(inputs, keras.layers.Add()([dense(inputs), dense(inputs)]))
    result = complexity.analyze(model)
    assert result.params == model.count_params() == 15
    assert result.macs == 2 * 15


def test_nested_models_are_walked_layer_by_layer():
    inner_inputs = keras.Input(shape=(8, 8, 3))
    inner = keras.Model(inner_inputs, keras.layers.Conv2D(4, 3, name="conv")(inner_inputs), name="backbone")
    inputs = keras.Input(shape=(8, 8, 3))
    x = keras.layers.GlobalAveragePooling2D()(inner(inputs))
    model = keras.Model(inputs, keras.layers.Dense(2, name="head")(x))
    result = complexity.analyze(model)
    assert "backbone/conv" in [r.name for r in result.layers]
    assert result.params == model.count_params()
    assert result.macs == 3 * 3 * 3 * 4 * 6 * 6 + 4 * 2


def test_pruning_wrappers_are_unwrapped():
    tfmot = pytest.importorskip("tensorflow_model_optimization")
    inputs = keras.Input(shape=(8, 8, 4))
    x = keras.layers.Conv2D(8, 3, use_bias=False)(inputs)
    x = keras.layers.DepthwiseConv2D(3, use_bias=False)(x)
    x = keras.layers.Flatten()(x)
    model = keras.Model(inputs, keras.layers.Dense(2)(x))
    pruned = tfmot.sparsity.keras.prune_low_magnitude(model)
    plain, wrapped = complexity.analyze(model), complexity.analyze(pruned)
    assert wrapped.macs == plain.macs
    assert wrapped.memory_access_cost == plain.memory_access_cost
    assert wrapped.params == pruned.count_params() > plain.params  # masks and thresholds are weights too
    assert any(r.type == "PruneLowMagnitude(Conv2D)" for r in wrapped.layers)


def test_quantization_aware_wrappers_are_unwrapped():
    tfmot = pytest.importorskip("tensorflow_model_optimization")
    inputs = keras.Input(shape=(8, 8, 3))
    x = keras.layers.Conv2D(8, 3, use_bias=False)(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU(6.0)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(2)(x))
    quantized = tfmot.quantization.keras.quantize_model(model)
    plain, wrapped = complexity.analyze(model), complexity.analyze(quantized)
    (quantize_input,) = [r for r in wrapped.layers if r.type == "QuantizeLayer"]  # the input's fake-quant
    assert wrapped.macs == plain.macs
    assert wrapped.elementwise_ops - quantize_input.elementwise_ops == plain.elementwise_ops
    assert wrapped.memory_access_cost - quantize_input.memory_access_cost == plain.memory_access_cost
    assert wrapped.params == quantized.count_params()


def test_dynamic_shapes_and_subclassed_models_are_refused_with_a_fix():
    inputs = keras.Input(shape=(None, None, 3))
    dynamic = keras.Model(inputs, keras.layers.Conv2D(2, 3)(inputs))
    with pytest.raises(ValueError, match="fixed input_shape"):
        complexity.analyze(dynamic)

    class Subclassed(keras.Model):
        def call(self, inputs):
            return inputs

    with pytest.raises(ValueError, match="functional or Sequential"):
        complexity.analyze(Subclassed())


def test_to_dict_is_json_ready():
    model = _single_layer((4, 4, 2), keras.layers.Conv2D(3, 1))
    data = json.loads(json.dumps(complexity.analyze(model).to_dict()))
    assert {"params", "trainable_params", "macs", "memory_access_cost", "elementwise_ops", "layers"} <= set(data)
    assert data["layers"][-1]["output_shape"] == [4, 4, 3]


# ---- real networks against the papers (the papers' table, docs/design.md) -----------------------------------------------


class PaperRow(NamedTuple):
    network: str
    width_multiplier: float
    macs_millions: float
    params_millions: float | None = None  # checked only where the brief asks (ShuffleNetV2)
    groups: int | None = None

    @property
    def id(self) -> str:
        return f"{self.network}-{self.width_multiplier:g}" + (f"-g{self.groups}" if self.groups else "")


PAPER_TABLE = (
    PaperRow("mobilenet_v1", 1.0, 569),
    PaperRow("mobilenet_v1", 0.75, 325),
    PaperRow("mobilenet_v1", 0.5, 149),
    PaperRow("mobilenet_v1", 0.25, 41),
    PaperRow("mobilenet_v2", 1.0, 300),
    PaperRow("mobilenet_v2", 1.4, 585),
    PaperRow("mobilenet_v3_large", 1.0, 219),
    PaperRow("mobilenet_v3_large", 0.75, 155),
    PaperRow("mobilenet_v3_small", 1.0, 56),
    PaperRow("mobilenet_v3_small", 0.75, 44),
    PaperRow("shufflenet_v1", 1.0, 140, groups=3),
    PaperRow("shufflenet_v1", 1.0, 137, groups=8),
    PaperRow("shufflenet_v2", 0.5, 41, 1.4),
    PaperRow("shufflenet_v2", 1.0, 146, 2.3),
    PaperRow("shufflenet_v2", 1.5, 299, 3.5),
    PaperRow("shufflenet_v2", 2.0, 591, 7.4),
)
TOLERANCE = 0.03


class Measured(NamedTuple):
    complexity: complexity.ModelComplexity
    keras_params: int
    keras_trainable_params: int


@functools.lru_cache(maxsize=None)  # each network is built once per test session
def _measure(network: str, width_multiplier: float, groups: int | None) -> Measured:
    options = {"groups": groups} if groups else {}
    model = models.build(network, width_multiplier=width_multiplier, **options)
    measured = Measured(
        complexity.analyze(model),
        model.count_params(),
        sum(w.shape.num_elements() for w in model.trainable_weights),
    )
    keras.backend.clear_session()
    return measured


def _measure_row(row: PaperRow) -> Measured:
    module = models.registry._NETWORKS[row.network].module  # pylint: disable=protected-access
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not written yet")
    return _measure(row.network, row.width_multiplier, row.groups)


def _relative_error(measured: int, paper_millions: float) -> float:
    return measured / (paper_millions * 1e6) - 1.0


@pytest.mark.parametrize("row", PAPER_TABLE, ids=lambda row: row.id)
def test_macs_within_3_percent_of_the_paper(row):
    macs = _measure_row(row).complexity.macs
    error = _relative_error(macs, row.macs_millions)
    assert abs(error) <= TOLERANCE, f"{row.id}: {macs / 1e6:.1f}M MACs vs the paper's {row.macs_millions}M ({error:+.1%})"


@pytest.mark.parametrize("row", [r for r in PAPER_TABLE if r.params_millions], ids=lambda row: row.id)
def test_trainable_params_within_3_percent_of_the_paper(row):
    params = _measure_row(row).complexity.trainable_params
    error = _relative_error(params, row.params_millions)
    assert abs(error) <= TOLERANCE, f"{row.id}: {params / 1e6:.2f}M params vs the paper's {row.params_millions}M"


@pytest.mark.parametrize("row", PAPER_TABLE, ids=lambda row: row.id)
def test_totals_agree_with_keras(row):
    measured = _measure_row(row)
    assert measured.complexity.params == measured.keras_params
    assert measured.complexity.trainable_params == measured.keras_trainable_params
    assert measured.complexity.macs == sum(r.macs for r in measured.complexity.layers)
