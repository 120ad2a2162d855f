"""Analytic complexity of a Keras model: parameters, multiply-adds, element-wise ops and memory access cost.

Counted from layer types and static tensor shapes, never with `tf.compat.v1.profiler`: in tf_keras the profiler
silently skips grouped convolutions (it read a ShuffleNetV1 as 18.9M MACs instead of 137.5M, see docs/design.md, "Why each non-obvious lowering exists").
All counts are for one sample (batch 1, the batch dimension is ignored).

Conventions (one for every network, so that networks compare fairly):

- `params` counts every weight, BatchNorm moving statistics included, like `model.count_params()`;
  `trainable_params` counts trainable weights only (what the papers' parameter columns and PyTorch count).
- `macs` are multiply-adds of convolutions and fully connected layers only, as the MobileNet and ShuffleNet papers
  count them: Conv `kh*kw*(cin/groups)*cout*H_out*W_out` (grouped and depthwise included), transposed Conv
  `kh*kw*cin*cout*H_in*W_in`, Dense `cin*cout` per position. Bias additions, BatchNorm, activations, pooling and
  element-wise merges are not multiply-adds; they go to `elementwise_ops`.
- `elementwise_ops` is the work the papers leave out (ShuffleNetV2's guideline G4: element-wise ops are not free):
  one op per output element for an activation (a separate layer or a Conv/Dense `activation=`), a bias addition,
  or any layer this module does not know; one per output element per extra input for Add/Multiply/Subtract/
  Average/Maximum/Minimum; one per input element for pooling; two per element (scale, shift) for a BatchNorm the
  converter cannot fold (a folded one costs nothing at inference). Data movement (Concatenate, padding, cropping,
  channel shuffle and split, permutes) costs none.
- `memory_access_cost` is the ShuffleNetV2 paper's MAC, in **elements** (not bytes; multiply by the bytes per
  element of the deployed precision): for each layer that runs in the converted graph, the element counts of its
  input feature maps + its output feature maps + its weights (the wrapped layer's own weights, without pruning
  masks or quantization ranges), summed over layers. A 1x1 convolution thus costs `h*w*(c1 + c2) + c1*c2`, the
  paper's formula. Layers that do not touch memory of their own in the TFLite graph cost nothing: `InputLayer`,
  dropout and noise layers, `Flatten`/`Reshape` (a view on static shapes), linear activations, a BatchNormalization
  right after a convolution or Dense layer (the converter folds it into the weights), and a ReLU / ReLU6 / tanh
  right after a convolution, Dense, Add, Subtract or Multiply, possibly through such a folded BatchNormalization
  (the converter fuses it as the op's fused activation). "Right after" means the producer's output has no other
  consumer. Any other element-wise layer is its own pass over memory, as in ShuffleNetV2's guideline G4: a ReLU
  standing alone after a Concatenate, an Add of a residual, hard-swish, a BatchNormalization that cannot be folded.
  Fused layers still count their `elementwise_ops`.

Works on any built functional or Sequential tf_keras model with static input shapes. Nested models are walked
layer by layer (rows named `outer/inner`); wrappers such as TF-MOT's `PruneLowMagnitude` and `QuantizeWrapper`
are unwrapped for MACs and memory access, while their rows keep the wrapper's full parameter count so the totals
still equal `model.count_params()`. A layer called more than once is counted once per call, its weights once.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Iterator

import tensorflow as tf
import tf_keras as keras

from models.layers import ChannelShuffle, ChannelSplit

Shape = tuple[int, ...]

# Identity (or a free view) in the converted inference graph.
_FREE_LAYERS = (
    keras.layers.InputLayer,
    keras.layers.Dropout,  # SpatialDropout1D/2D/3D subclass it
    keras.layers.GaussianNoise,
    keras.layers.GaussianDropout,
    keras.layers.AlphaDropout,
    keras.layers.ActivityRegularization,
    keras.layers.Flatten,
    keras.layers.Reshape,
)
# Folded into the preceding convolution by the TFLite converter.
_FOLDED_LAYERS = (keras.layers.BatchNormalization,)
_DATA_MOVEMENT_LAYERS = (
    keras.layers.Concatenate,
    keras.layers.ZeroPadding1D,
    keras.layers.ZeroPadding2D,
    keras.layers.ZeroPadding3D,
    keras.layers.Cropping1D,
    keras.layers.Cropping2D,
    keras.layers.Cropping3D,
    keras.layers.Permute,
    keras.layers.UpSampling1D,
    keras.layers.UpSampling2D,
    keras.layers.UpSampling3D,
    keras.layers.RepeatVector,
    ChannelShuffle,
    ChannelSplit,
)
_MERGE_LAYERS = (
    keras.layers.Add,
    keras.layers.Subtract,
    keras.layers.Multiply,
    keras.layers.Average,
    keras.layers.Maximum,
    keras.layers.Minimum,
)
_POOLING_LAYERS = (
    keras.layers.AveragePooling1D,
    keras.layers.AveragePooling2D,
    keras.layers.AveragePooling3D,
    keras.layers.MaxPooling1D,
    keras.layers.MaxPooling2D,
    keras.layers.MaxPooling3D,
    keras.layers.GlobalAveragePooling1D,
    keras.layers.GlobalAveragePooling2D,
    keras.layers.GlobalAveragePooling3D,
    keras.layers.GlobalMaxPooling1D,
    keras.layers.GlobalMaxPooling2D,
    keras.layers.GlobalMaxPooling3D,
)
_TRANSPOSED_CONVS = (keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose, keras.layers.Conv3DTranspose)
_SEPARABLE_CONVS = (keras.layers.SeparableConv1D, keras.layers.SeparableConv2D)
_DEPTHWISE_CONVS = (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)
_CONVS = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)  # transposed convs subclass these


@dataclasses.dataclass(frozen=True)
class LayerComplexity:
    """One call of one layer: its output shape (batch dimension dropped) and its costs for one sample."""

    name: str
    type: str
    output_shape: Shape | tuple[Shape, ...]
    params: int
    trainable_params: int
    macs: int
    elementwise_ops: int
    memory_access_cost: int


@dataclasses.dataclass(frozen=True)
class ModelComplexity:
    """Totals over all layers; see the module docstring for what each count includes and its unit."""

    name: str
    params: int
    trainable_params: int
    macs: int
    elementwise_ops: int
    memory_access_cost: int
    layers: tuple[LayerComplexity, ...]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict: the totals and a `layers` list of per-layer dicts."""
        return dataclasses.asdict(self, dict_factory=lambda items: {k: _jsonable(v) for k, v in items})


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    return value


def analyze(model: keras.Model) -> ModelComplexity:
    """Per-layer and total parameters, MACs, element-wise ops and memory access cost (in elements) of `model`."""
    rows = tuple(_walk(model, prefix=""))
    return ModelComplexity(
        name=model.name,
        params=sum(r.params for r in rows),
        trainable_params=sum(r.trainable_params for r in rows),
        macs=sum(r.macs for r in rows),
        elementwise_ops=sum(r.elementwise_ops for r in rows),
        memory_access_cost=sum(r.memory_access_cost for r in rows),
        layers=rows,
    )


def _is_graph_model(layer: keras.layers.Layer) -> bool:
    return isinstance(layer, keras.Model) and getattr(layer, "_is_graph_network", False)


def _own_nodes(model: keras.Model, layer: keras.layers.Layer) -> list:
    """The calls of `layer` that belong to `model` (a layer shared with another model has more nodes)."""
    network_nodes = model._network_nodes  # pylint: disable=protected-access
    return [
        node
        for index, node in enumerate(layer._inbound_nodes)  # pylint: disable=protected-access
        if f"{layer.name}_ib-{index}" in network_nodes
    ]


def _walk(model: keras.Model, prefix: str) -> Iterator[LayerComplexity]:
    if not _is_graph_model(model):
        raise ValueError(
            f"analyze needs a built functional or Sequential model with a fixed input shape; {model.name!r} is a "
            f"{type(model).__name__} without a layer graph. Build it with keras.Input(shape=...) first."
        )
    calls = [(layer, _own_nodes(model, layer)) for layer in model.layers]
    consumers: dict[int, int] = {}
    for _, nodes in calls:
        for node in nodes:
            for tensor in node.keras_inputs:
                consumers[id(tensor)] = consumers.get(id(tensor), 0) + 1
    for tensor in model.outputs:
        consumers[id(tensor)] = consumers.get(id(tensor), 0) + 1
    for layer, nodes in calls:
        for call_index, node in enumerate(nodes):
            if _is_graph_model(layer):
                yield from _walk(layer, prefix=f"{prefix}{layer.name}/")
                continue
            inputs = [_static_shape(t.shape, layer) for t in node.keras_inputs]
            outputs = [_static_shape(t.shape, layer) for t in tf.nest.flatten(node.outputs)]
            yield _layer_row(
                layer,
                f"{prefix}{layer.name}",
                inputs,
                outputs,
                count_weights=call_index == 0,
                fused=_fuses_into_producer(_unwrap(layer), node, consumers),
            )


def _static_shape(shape: tf.TensorShape, layer: keras.layers.Layer) -> Shape:
    dims = tuple(shape.as_list()[1:])
    if any(d is None for d in dims):
        raise ValueError(
            f"Layer {layer.name!r} has a dynamic shape {tuple(shape.as_list())}; analyze needs static shapes. "
            "Build the model with a fixed input_shape (height, width, channels)."
        )
    return dims


def _unwrap(layer: keras.layers.Layer) -> keras.layers.Layer:
    """The layer doing the work inside wrappers (TF-MOT's PruneLowMagnitude and QuantizeWrapper, TimeDistributed)."""
    while isinstance(layer, keras.layers.Wrapper):
        layer = layer.layer
    return layer


# TFLite's fused activation functions (NONE, RELU, RELU_N1_TO_1, RELU6, TANH) that Keras layers map onto.
_FUSABLE_ACTIVATIONS = ("relu", "relu6", "tanh")
_LINEAR_PRODUCERS = _CONVS + _DEPTHWISE_CONVS + _SEPARABLE_CONVS + (keras.layers.Dense,)
_ACTIVATION_PRODUCERS = _LINEAR_PRODUCERS + (keras.layers.Add, keras.layers.Subtract, keras.layers.Multiply)


def _is_fusable_activation(layer: keras.layers.Layer) -> bool:
    if isinstance(layer, keras.layers.ReLU):
        return (
            not float(layer.negative_slope)
            and not float(layer.threshold)
            and (layer.max_value is None or float(layer.max_value) == 6.0)
        )
    if isinstance(layer, keras.layers.Activation):
        return getattr(layer.activation, "__name__", "") in _FUSABLE_ACTIVATIONS
    return False


def _fuses_into_producer(layer: keras.layers.Layer, node, consumers: dict[int, int]) -> bool:
    """Whether the converter folds this BatchNorm, or fuses this activation, into the op that produced its input."""
    if not (isinstance(layer, _FOLDED_LAYERS) or _is_fusable_activation(layer)) or len(node.keras_inputs) != 1:
        return False
    tensor = node.keras_inputs[0]
    if consumers.get(id(tensor), 0) != 1:
        return False
    history = tensor._keras_history  # pylint: disable=protected-access
    producer = _unwrap(history.layer)
    if isinstance(layer, _FOLDED_LAYERS):
        return isinstance(producer, _LINEAR_PRODUCERS)
    if isinstance(producer, _ACTIVATION_PRODUCERS):
        return not isinstance(producer, _LINEAR_PRODUCERS) or not _has_activation(producer)
    if isinstance(producer, _FOLDED_LAYERS):
        producer_node = history.layer._inbound_nodes[history.node_index]  # pylint: disable=protected-access
        return _fuses_into_producer(producer, producer_node, consumers)
    return False


def _count(weights: list[tf.Variable]) -> int:
    return sum(math.prod(w.shape) for w in weights)


def _layer_row(
    layer: keras.layers.Layer,
    name: str,
    inputs: list[Shape],
    outputs: list[Shape],
    count_weights: bool,
    fused: bool,
) -> LayerComplexity:
    inner = _unwrap(layer)
    input_elements = sum(math.prod(s) for s in inputs)
    output_elements = sum(math.prod(s) for s in outputs)
    macs, elementwise_ops, runs = _compute(inner, inputs, outputs, input_elements, output_elements, fused)
    memory_access_cost = input_elements + output_elements + _weight_elements(inner) if runs and not fused else 0
    return LayerComplexity(
        name=name,
        type=type(inner).__name__ if inner is layer else f"{type(layer).__name__}({type(inner).__name__})",
        output_shape=outputs[0] if len(outputs) == 1 else tuple(outputs),
        params=layer.count_params() if count_weights else 0,
        trainable_params=_count(layer.trainable_weights) if count_weights else 0,
        macs=macs,
        elementwise_ops=elementwise_ops,
        memory_access_cost=memory_access_cost,
    )


def _weight_elements(layer: keras.layers.Layer) -> int:
    """Elements of the weights the layer reads at inference.

    For convolutions and Dense layers these are read from the kernel and bias attributes: TF-MOT's QuantizeWrapper
    takes the weights over from the layer it wraps, which then reports none of its own.
    """
    if isinstance(layer, _LINEAR_PRODUCERS):
        names = ("kernel", "depthwise_kernel", "pointwise_kernel", "bias")
        return sum(math.prod(w.shape) for w in (getattr(layer, n, None) for n in names) if w is not None)
    return layer.count_params()


def _has_activation(layer: keras.layers.Layer) -> bool:
    """Whether a Conv/Dense layer applies an activation of its own (seen through TF-MOT's QuantizeAwareActivation)."""
    activation = getattr(layer, "activation", None)
    while hasattr(activation, "activation"):  # QAT's QuantizeAwareActivation holds the layer's own activation
        activation = activation.activation
    # TF-MOT's NoOpActivation stands for a linear activation it moved to a following layer's quantizer.
    return activation not in (None, keras.activations.linear) and type(activation).__name__ != "NoOpActivation"


def _spatial_elements(shape: Shape, data_format: str) -> int:
    return math.prod(shape[1:-1] if data_format == "channels_first" else shape[:-1])


def _compute(
    layer: keras.layers.Layer,
    inputs: list[Shape],
    outputs: list[Shape],
    input_elements: int,
    output_elements: int,
    fused: bool,
) -> tuple[int, int, bool]:
    """(multiply-adds, element-wise ops, whether the layer runs at inference) for one call."""
    if isinstance(layer, _FREE_LAYERS) or (
        isinstance(layer, keras.layers.Activation) and layer.activation is keras.activations.linear
    ):
        return 0, 0, False
    if isinstance(layer, _FOLDED_LAYERS):
        return (0, 0, False) if fused else (0, 2 * output_elements, True)
    if isinstance(layer, _LINEAR_PRODUCERS):
        extra = output_elements if getattr(layer, "use_bias", False) else 0
        if _has_activation(layer):
            extra += output_elements
        return _linear_macs(layer, inputs, outputs), extra, True
    if isinstance(layer, _DATA_MOVEMENT_LAYERS):
        return 0, 0, True
    if isinstance(layer, _MERGE_LAYERS):
        return 0, output_elements * (len(inputs) - 1), True
    if isinstance(layer, _POOLING_LAYERS):
        return 0, input_elements, True
    # Activations, our HardSwish / HardSigmoid, and anything unknown: one op per output element.
    return 0, output_elements, True


def _linear_macs(layer: keras.layers.Layer, inputs: list[Shape], outputs: list[Shape]) -> int:
    """Multiply-adds of a convolution or Dense layer, from its kernel shape and its output positions."""
    if isinstance(layer, keras.layers.Dense):
        return math.prod(layer.kernel.shape) * math.prod(outputs[0][:-1])
    if isinstance(layer, _SEPARABLE_CONVS):
        kernel_elements = math.prod(layer.depthwise_kernel.shape) + math.prod(layer.pointwise_kernel.shape)
        return kernel_elements * _spatial_elements(outputs[0], layer.data_format)
    if isinstance(layer, _DEPTHWISE_CONVS):
        return math.prod(layer.depthwise_kernel.shape) * _spatial_elements(outputs[0], layer.data_format)
    if isinstance(layer, _TRANSPOSED_CONVS):
        # Every input position scatters a full kh*kw*cout window.
        return math.prod(layer.kernel.shape) * _spatial_elements(inputs[0], layer.data_format)
    # The kernel is (kh, kw, cin / groups, cout): a grouped convolution is counted by its real, smaller kernel.
    return math.prod(layer.kernel.shape) * _spatial_elements(outputs[0], layer.data_format)
