"""The prune stage: TF-MOT magnitude pruning of a trained model, fine-tuned, stripped, and measured.

Three methods (docs/design.md, "Sparsity and slimming"):
- `"2:4"`: `sparsity_m_by_n=(2, 4)`, two zeros in every four consecutive weights along the input channels
  (the innermost dimension of TFLite's [out, h, w, in] weights). It shrinks the stored float32 file, not CPU
  latency. Only convolutions and dense layers whose input depth (per group) is a multiple of 4 can hold the
  pattern in every block, so the 3-channel stem is left dense.
- `"xnnpack"`: TF-MOT's `PruneForLatencyOnXNNPack` policy, which prunes the 1x1 convolutions between a
  symmetric-padded 3x3 stride-2 stem and a keepdims global pool, the graph XNNPACK's sparse fp32 kernels run
  (they engage at >= 2/3 zeros). Only networks built from 1x1/depthwise convolutions, BatchNorm, ReLU and Add
  qualify: MobileNet V1 and V2 built with `padding="symmetric"`.
- `"magnitude"`: unstructured, every convolution and dense kernel, sparsity raised polynomially to the target.
Depthwise kernels are never pruned (TF-MOT has no prunable weights for them; they hold few parameters anyway).

The sparsity ramps up over the first two thirds of fine-tuning and stays at the target for the last third, so
the network recovers at its final sparsity. The input model is not modified. Recovery needs a real learning
rate: MobileNetV2 1.0 on digits (98.6% held-out), 5 fine-tune epochs with Adam, cosine-decayed from 2e-3 / 2e-4:
2:4 96.1% / 92.8%, XNNPACK policy at 75% 93.6% / 67.4%.
"""
from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path

import numpy as np
import tf_keras as keras

from pipeline.config import SPARSIFY_METHODS
from pipeline.data import DataSplits
from pipeline.train import SparseCategoricalCrossentropyWithSmoothing, TrainSettings, accuracy_metric, fit, make_optimizer

log = logging.getLogger(__name__)

PRUNE_METHODS = SPARSIFY_METHODS
# The networks whose graph TF-MOT's XNNPACK policy accepts (checked on every network in models/): the others
# contain layers outside XNNPACK's sparse subgraph (hard-swish and SE hard-sigmoid in V3, max/average pooling,
# concatenation and channel shuffle in the ShuffleNets).
XNNPACK_SPARSE_NETWORKS = ("mobilenet_v1", "mobilenet_v2")
# XNNPACK's sparse kernels run a 1x1 convolution sparse only when at least 2/3 of its weights are zero.
XNNPACK_MIN_SPARSITY = 2 / 3
M_BY_N = (2, 4)
# Fraction of fine-tuning steps over which the sparsity ramps up; the rest recovers at the final sparsity.
RAMP_FRACTION = 2 / 3
# How many times the masks are recomputed during the ramp (TF-MOT's `frequency` follows from it).
MASK_UPDATES = 10


class PruningError(ValueError):
    """Pruning cannot run with these arguments or on this model; the message says how to fix it."""


@dataclasses.dataclass
class PruneResult:
    """The stripped, fine-tuned model and its achieved sparsity (fraction of exactly-zero kernel weights).

    `per_layer_sparsity` covers the layers that were pruned; `overall_sparsity` is zeros / weights over them.
    """

    model: keras.Model
    per_layer_sparsity: dict[str, float]
    overall_sparsity: float


def prune_and_finetune(
    model: keras.Model,
    data: DataSplits,
    method: str,
    sparsity: float,
    epochs: int,
    learning_rate: float,
    run_dir: Path,
    seed: int = 0,
) -> PruneResult:
    """Prune `model` with `method` (`2:4`, `xnnpack`, `magnitude`) to `sparsity` while fine-tuning on `data`.

    `seed` seeds the fine-tune (as `pipeline.train.train` does), so the stage's numbers do not depend on what ran
    before it in the process.
    """
    import tensorflow_model_optimization as tfmot
    # The wrapper class is not in TF-MOT's public API; its module path is stable in the pinned 0.8.1.
    from tensorflow_model_optimization.python.core.sparsity.keras.pruning_wrapper import PruneLowMagnitude

    _check_arguments(method, sparsity, epochs, learning_rate)
    if method == "2:4" and not math.isclose(sparsity, 0.5):
        log.warning("2:4 pruning is 50%% sparse by construction; sparsity=%g is ignored", sparsity)
    if method == "xnnpack" and sparsity < XNNPACK_MIN_SPARSITY:
        log.warning(
            "XNNPACK runs a 1x1 convolution sparse only with >= 2/3 zero weights; at sparsity=%g it will run "
            "dense (use --prune_sparsity=0.75 or more for sparse inference)", sparsity,
        )
    work_dir = Path(run_dir) / "prune"
    total_steps = epochs * data.steps_per_epoch
    schedule = _schedule(method, sparsity, total_steps)
    pruned = _wrap(_copy(model), method, schedule)
    wrapped_names = [layer.layer.name for layer in pruned.layers if isinstance(layer, PruneLowMagnitude)]
    if not wrapped_names:
        raise PruningError(f"{model.name} has no layer that {method} pruning can prune (Conv2D or Dense).")
    log.info("pruning %d layers with %s to sparsity %g over %d steps", len(wrapped_names), method,
             0.5 if method == "2:4" else sparsity, total_steps)

    settings = TrainSettings(epochs=epochs, learning_rate=learning_rate, seed=seed)
    keras.utils.set_random_seed(seed)
    pruned.compile(
        optimizer=make_optimizer(settings, total_steps),
        loss=SparseCategoricalCrossentropyWithSmoothing(),
        metrics=[accuracy_metric()],
    )
    fit(pruned, data, settings, work_dir, callbacks=[
        tfmot.sparsity.keras.UpdatePruningStep(),
        tfmot.sparsity.keras.PruningSummaries(log_dir=str(work_dir / "logs" / "pruning")),
    ])
    stripped = tfmot.sparsity.keras.strip_pruning(pruned)
    per_layer, overall = kernel_sparsity(stripped, wrapped_names)
    log.info("achieved sparsity %.3f over %d pruned layers (min %.3f, max %.3f)", overall, len(per_layer),
             min(per_layer.values()), max(per_layer.values()))
    return PruneResult(model=stripped, per_layer_sparsity=per_layer, overall_sparsity=overall)


def kernel_sparsity(model: keras.Model, layer_names: list[str]) -> tuple[dict[str, float], float]:
    """Per-layer fraction of exactly-zero kernel weights, and zeros / weights over all the named layers."""
    per_layer, zeros, total = {}, 0, 0
    for name in layer_names:
        kernel = model.get_layer(name).kernel.numpy()
        layer_zeros = int(np.count_nonzero(kernel == 0))
        per_layer[name] = layer_zeros / kernel.size
        zeros += layer_zeros
        total += kernel.size
    return per_layer, (zeros / total if total else 0.0)


def prunable_layer(layer: keras.layers.Layer, method: str) -> bool:
    """Whether `method` prunes this layer: conv and dense kernels, for 2:4 only with input depth divisible by 4."""
    if isinstance(layer, (keras.layers.DepthwiseConv2D, keras.layers.SeparableConv2D)):
        return False
    if not isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)):
        return False
    if method == "2:4":
        # The kernel's input-channel dimension (per group for grouped convolutions) is the one 2:4 runs along.
        return layer.kernel.shape[-2] % M_BY_N[1] == 0
    return True


def _check_arguments(method: str, sparsity: float, epochs: int, learning_rate: float) -> None:
    if method not in PRUNE_METHODS:
        raise PruningError(f"Unknown pruning method {method!r}; choose one of: {', '.join(PRUNE_METHODS)}.")
    if not isinstance(sparsity, (int, float)) or not 0 < sparsity < 1:
        raise PruningError(f"sparsity must be strictly between 0 and 1 (e.g. 0.5 or 0.75), got {sparsity!r}.")
    if not isinstance(epochs, int) or epochs < 1:
        raise PruningError(f"Pruning needs at least one fine-tuning epoch, got epochs={epochs!r}.")
    if not learning_rate > 0:
        raise PruningError(f"learning_rate must be positive, got {learning_rate!r}.")


def _schedule(method: str, sparsity: float, total_steps: int):
    """Masks updated MASK_UPDATES times over the ramp (steps 1..end), then frozen for the recovery steps."""
    import tensorflow_model_optimization as tfmot

    ramp_steps = max(1, int(total_steps * RAMP_FRACTION))
    frequency = max(1, ramp_steps // MASK_UPDATES)
    end_step = max(frequency, ramp_steps // frequency * frequency)  # a mask update lands exactly on end_step
    if method == "2:4":
        # The m-by-n mask ignores the target sparsity; the schedule only says when masks are recomputed.
        return tfmot.sparsity.keras.ConstantSparsity(0.5, begin_step=0, end_step=end_step, frequency=frequency)
    return tfmot.sparsity.keras.PolynomialDecay(
        initial_sparsity=0.0, final_sparsity=sparsity, begin_step=0, end_step=end_step, frequency=frequency
    )


def _wrap(model: keras.Model, method: str, schedule) -> keras.Model:
    import tensorflow_model_optimization as tfmot

    prune_low_magnitude = tfmot.sparsity.keras.prune_low_magnitude
    if method == "xnnpack":
        try:
            return prune_low_magnitude(
                model, pruning_schedule=schedule, pruning_policy=tfmot.sparsity.keras.PruneForLatencyOnXNNPack()
            )
        except ValueError as error:
            raise PruningError(
                f"--prune=xnnpack cannot prune {model.name}: {error}. XNNPACK sparse inference needs the graph "
                f"from a 3x3 stride-2 stem preceded by ZeroPadding2D(1) to a keepdims GlobalAveragePooling2D to "
                f"hold only 1x1 and depthwise convolutions, BatchNorm, ReLU and Add. Build the model with "
                f"padding='symmetric' (the pipeline does this for --prune=xnnpack); only "
                f"{' and '.join(XNNPACK_SPARSE_NETWORKS)} qualify (not the MobileNetV3s: hard-swish and SE; not "
                f"the ShuffleNets: pooling, concatenation, channel shuffle). For other networks use "
                f"--prune=2:4 or --prune=magnitude."
            ) from error
    options = {"pruning_schedule": schedule}
    if method == "2:4":
        options["sparsity_m_by_n"] = M_BY_N

    def wrap_prunable(layer: keras.layers.Layer) -> keras.layers.Layer:
        # Wrapping layer by layer (not the whole model) leaves the zoo's custom layers, which TF-MOT's registry
        # does not know, untouched.
        return prune_low_magnitude(layer, **options) if prunable_layer(layer, method) else layer

    return keras.models.clone_model(model, clone_function=wrap_prunable)


def _copy(model: keras.Model) -> keras.Model:
    """A copy with the same weights, so pruning (which zeroes weights in place) leaves the caller's model intact."""
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy
