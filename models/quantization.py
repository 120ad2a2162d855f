"""Quantization-aware training (TF-MOT) for our networks: QuantizeConfigs for the layers TF-MOT does not know.

TF-MOT's default 8-bit registry has no entry for our `HardSwish` / `HardSigmoid`, for `keras.layers.Multiply`
(the squeeze-and-excite scale) or for the ShuffleNets' `ChannelShuffle` / `ChannelSplit`, and
`tfmot.quantization.keras.quantize_model` rejects a model holding any of them. `quantize_model` below annotates
those layers with the configs here and applies TF-MOT's default scheme to everything else. Save a QAT model as
HDF5 and load it inside `quantize_scope()` (TF-MOT's `QuantizeLayer` does not reload from `.keras`: "expected 5
variables, but received 3").

Every int8 tensor of hard-swish and hard-sigmoid gets a fake-quant range (see `layers._HardActivation`), so a QAT
MobileNetV3 converts to integer-only int8 without calibration data. Known limit: in a QAT ShuffleNetV2 the split
half and the branch reach each concat with ranges of their own, and the converter adds int8 -> int8 QUANTIZE ops
there (XNNPACK runs them, in one partition); TF-MOT cannot share one range between layers.
"""
from __future__ import annotations

import contextlib

import tensorflow_model_optimization as tfmot
import tf_keras as keras

from models import layers

_QuantizeConfig = tfmot.quantization.keras.QuantizeConfig
_quantizers = tfmot.quantization.keras.quantizers


def _moving_average():
    return _quantizers.MovingAverageQuantizer(num_bits=8, per_axis=False, symmetric=False, narrow_range=False)


class OutputQuantizeConfig(_QuantizeConfig):
    """No weights; the output gets a learned (moving min/max) asymmetric 8-bit range, as TFLite quantizes it.

    For element-wise layers whose output range depends on the data, like the SE `Multiply`.
    """

    def get_weights_and_quantizers(self, layer):
        return []

    def get_activations_and_quantizers(self, layer):
        return []

    def set_quantize_weights(self, layer, quantize_weights):
        pass

    def set_quantize_activations(self, layer, quantize_activations):
        pass

    def get_output_quantizers(self, layer):
        return [_moving_average()]

    def get_config(self):
        return {}


def _fixed_range(low: float, high: float):
    return _quantizers.FixedQuantizer(num_bits=8, init_min=low, init_max=high, narrow_range=False)


class HardSwishQuantizeConfig(OutputQuantizeConfig):
    """Hard-swish is (x / 6) * relu6(x + 3) in TFLite: x / 6 gets a learned range, relu6(x + 3) its exact [0, 6]."""

    def get_activations_and_quantizers(self, layer):
        return [(layer.scaled_input_activation, _moving_average()), (layer.gate_activation, _fixed_range(0.0, 6.0))]

    def set_quantize_activations(self, layer, quantize_activations):
        layer.scaled_input_activation, layer.gate_activation = quantize_activations


class HardSigmoidQuantizeConfig(OutputQuantizeConfig):
    """relu6(x + 3) gets its exact range [0, 6] and the gate its exact [0, 1]: SE gates need no learned range."""

    def get_activations_and_quantizers(self, layer):
        return [(layer.gate_activation, _fixed_range(0.0, 6.0))]

    def set_quantize_activations(self, layer, quantize_activations):
        (layer.gate_activation,) = quantize_activations

    def get_output_quantizers(self, layer):
        return [_fixed_range(0.0, 1.0)]


class PassThroughQuantizeConfig(OutputQuantizeConfig):
    """Shape-only layers (channel shuffle, channel split): no weights, and the output keeps the input's range."""

    def get_output_quantizers(self, layer):
        return []


def _quantize_configs() -> dict[type, type[_QuantizeConfig]]:
    return {
        layers.HardSwish: HardSwishQuantizeConfig,
        layers.HardSigmoid: HardSigmoidQuantizeConfig,
        keras.layers.Multiply: OutputQuantizeConfig,
        layers.ChannelShuffle: PassThroughQuantizeConfig,
        layers.ChannelSplit: PassThroughQuantizeConfig,
    }


def quantize_scope() -> contextlib.AbstractContextManager:
    """TF-MOT's `quantize_scope` plus our configs: wrap `keras.models.load_model` of a QAT model in it."""
    configs = {
        cls.__name__: cls
        for cls in (OutputQuantizeConfig, HardSwishQuantizeConfig, HardSigmoidQuantizeConfig, PassThroughQuantizeConfig)
    }
    return tfmot.quantization.keras.quantize_scope({**configs, **layers.custom_objects()})


def quantize_model(model: keras.Model, scheme: tfmot.quantization.keras.QuantizeScheme | None = None) -> keras.Model:
    """A quantization-aware copy of `model` (its weights kept), ready to fine-tune and convert to int8.

    `scheme`: a TF-MOT QuantizeScheme (default: its 8-bit scheme), e.g. the prune-preserving one for a pruned model.
    """
    configs = _quantize_configs()

    def annotate(layer: keras.layers.Layer) -> keras.layers.Layer:
        # One clone annotating every layer (what `quantize_annotate_model` would do in a second clone); no config
        # means TF-MOT's own for that layer type.
        config = configs.get(type(layer))
        return tfmot.quantization.keras.quantize_annotate_layer(layer, quantize_config=config and config())

    with quantize_scope():
        annotated = keras.models.clone_model(model, clone_function=annotate)
        if scheme is None:
            return tfmot.quantization.keras.quantize_apply(annotated)
        return tfmot.quantization.keras.quantize_apply(annotated, scheme)

