"""The QAT stage: TF-MOT quantization-aware fine-tuning of a trained (optionally pruned) float model.

The result keeps its fake-quant ops: `export.convert.to_tflite(model, "int8")` reads the ranges from them, no
calibration. It is fine-tuned briefly at a low learning rate, since it starts from a converged float model
(distill first, then QAT: the fake-quant rounding is learned last).

A pruned model is quantized with TF-MOT's prune-preserving scheme (PQAT,
`Default8BitPrunePreserveQuantizeScheme`): plain QAT would let the zeroed weights grow back during fine-tuning
and the int8 model would lose the sparsity the prune stage paid for.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import tf_keras as keras

from pipeline.data import DataSplits
from pipeline.train import SparseCategoricalCrossentropyWithSmoothing, TrainSettings, accuracy_metric, fit, make_optimizer

log = logging.getLogger(__name__)

# A trained dense network has essentially no exactly-zero conv/dense weights; a pruned one has >= 25% (a 2:4
# model whose stem and dense layers stay dense still has ~45%).
PRUNED_ZERO_FRACTION = 0.2


class QuantizationAwareTrainingError(ValueError):
    """Quantization-aware training cannot run with these arguments or on this model."""


def quantization_aware_finetune(
    model: keras.Model,
    data: DataSplits,
    epochs: int,
    learning_rate: float,
    run_dir: Path,
    preserve_sparsity: bool | None = None,
    seed: int = 0,
) -> keras.Model:
    """Wrap `model` for int8 quantization-aware training and fine-tune it on `data`; returns the QAT model.

    `preserve_sparsity=None` preserves the zero weights of a pruned model (detected by its share of zero
    weights) and trains a dense one with plain QAT. `seed` seeds the fine-tune, as `pipeline.train.train` does.
    """
    if not isinstance(epochs, int) or epochs < 1:
        raise QuantizationAwareTrainingError(f"QAT needs at least one fine-tuning epoch, got epochs={epochs!r}.")
    if not learning_rate > 0:
        raise QuantizationAwareTrainingError(f"learning_rate must be positive, got {learning_rate!r}.")
    zero_fraction = weight_zero_fraction(model)
    if preserve_sparsity is None:
        preserve_sparsity = zero_fraction >= PRUNED_ZERO_FRACTION
    log.info("quantization-aware training%s (%.1f%% of conv/dense weights are zero)",
             " preserving sparsity (PQAT)" if preserve_sparsity else "", 100 * zero_fraction)
    quantized = quantize_for_training(model, preserve_sparsity)
    settings = TrainSettings(epochs=epochs, learning_rate=learning_rate, seed=seed)
    keras.utils.set_random_seed(seed)
    quantized.compile(
        optimizer=make_optimizer(settings, epochs * data.steps_per_epoch),
        loss=SparseCategoricalCrossentropyWithSmoothing(),
        metrics=[accuracy_metric()],
    )
    fit(quantized, data, settings, Path(run_dir) / "qat")
    if preserve_sparsity:
        log.info("after PQAT %.1f%% of conv/dense weights are zero", 100 * weight_zero_fraction(quantized))
    return quantized


def quantize_for_training(model: keras.Model, preserve_sparsity: bool = False) -> keras.Model:
    """`model` with TF-MOT fake-quant wrappers (the zoo's custom layers get models.quantization's configs)."""
    import tensorflow_model_optimization as tfmot

    from models import quantization as zoo_quantization

    try:
        if not preserve_sparsity:
            return zoo_quantization.quantize_model(model)
        # models.quantization.quantize_model applies TF-MOT's default scheme only; until it takes a scheme, annotate
        # the zoo's custom layers the same way here and apply the prune-preserving one.
        configs = zoo_quantization._quantize_configs()  # noqa: SLF001

        def annotate(layer: keras.layers.Layer) -> keras.layers.Layer:
            config = configs.get(type(layer))
            if config is None:
                return layer
            return tfmot.quantization.keras.quantize_annotate_layer(layer, quantize_config=config())

        with zoo_quantization.quantize_scope():
            annotated = tfmot.quantization.keras.quantize_annotate_model(
                keras.models.clone_model(model, clone_function=annotate)
            )
            return tfmot.quantization.keras.quantize_apply(
                annotated, scheme=tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme()
            )
    except (RuntimeError, ValueError) as error:
        raise QuantizationAwareTrainingError(
            f"TF-MOT cannot make {model.name} quantization-aware: {error}. Every layer needs a TF-MOT "
            f"QuantizeConfig (the zoo's custom layers get theirs in models/quantization.py); or skip --qat and "
            f"use post-training int8 quantization."
        ) from error


def float_model_from_quantization_aware(model: keras.Model) -> keras.Model:
    """The float model inside a QAT model: the same (fine-tuned) weights without the fake-quant wrappers."""
    from tensorflow_model_optimization.python.core.quantization.keras.quantize_layer import QuantizeLayer
    from tensorflow_model_optimization.python.core.quantization.keras.quantize_wrapper import QuantizeWrapper

    def inner(layer: keras.layers.Layer) -> keras.layers.Layer:
        return layer.layer if isinstance(layer, QuantizeWrapper) else layer  # QuantizeWrapperV2 too

    def fresh(layer: keras.layers.Layer) -> keras.layers.Layer:
        if isinstance(layer, QuantizeLayer):  # fake-quantizes the model input: identity in float
            return keras.layers.Activation("linear", name=layer.name)
        # New layers, not the wrapped ones: a QuantizeWrapper swaps its layer's `kernel` attribute for the
        # fake-quantized tensor of its last trace, so the wrapped layer cannot be called on its own.
        layer = inner(layer)
        return layer.__class__.from_config(layer.get_config())

    with _quantize_scope():
        float_model = keras.models.clone_model(model, clone_function=fresh)
    # The wrapper holds its layer's variables (named `conv1/kernel`, or `quant_conv1/kernel` once reloaded) beside
    # its quantizers' (`kernel_min`, `optimizer_step`, ...): match them by their last name component.
    sources = {inner(layer).name: layer for layer in model.layers}
    for layer in float_model.layers:
        if layer.weights:
            values = {_short_name(weight): weight for weight in sources[layer.name].weights}
            layer.set_weights([values[_short_name(weight)].numpy() for weight in layer.weights])
    return float_model


def _short_name(weight) -> str:
    return weight.name.rsplit("/", 1)[-1]


def save_quantization_aware_model(model: keras.Model, path: Path) -> None:
    """Save a QAT model as HDF5 (atomically).

    The `.keras` format cannot reload TF-MOT models: loading builds `QuantizeLayer` twice and fails with "expected
    5 variables, but received 3". HDF5 round-trips them exactly (checked: identical outputs).
    """
    path = Path(path)
    if path.suffix != ".h5":
        raise ValueError(f"Save quantization-aware models as .h5 (the .keras format cannot reload them): {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.tmp.h5")
    try:
        model.save(str(temp), save_format="h5", include_optimizer=False)
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


def load_quantization_aware_model(path: Path) -> keras.Model:
    """Load a QAT model saved by `save_quantization_aware_model` (a PQAT model loads as a plain QAT model with
    the same, still sparse, weights: only training used the sparsity masks); refuses a file that would run code."""
    from pipeline.model_files import load_model_file

    return load_model_file(path)


def weight_zero_fraction(model: keras.Model) -> float:
    """Fraction of exactly-zero weights over the model's conv and dense kernels (depthwise excluded)."""
    zeros = total = 0
    for weight in model.weights:
        name = weight.name.rsplit("/", 1)[-1]
        if name.startswith("kernel") and len(weight.shape) in (2, 4):
            values = weight.numpy()
            zeros += int(np.count_nonzero(values == 0))
            total += values.size
    return zeros / total if total else 0.0


def _quantize_scope():
    from models.quantization import quantize_scope

    return quantize_scope()
