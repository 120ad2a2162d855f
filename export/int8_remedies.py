"""Post-training int8 with a fidelity goal: when the int8 model changes too many of the float model's answers, try
the remedies and keep the model that agrees best.

The goal is top-1 agreement with the calibrated float model on `check_images`: images the caller holds back from
calibration and from the held-out scoring (agreement needs no labels, so training images not used to calibrate
do). The remedies: per-tensor squared-error activation ranges (export.calibration, range_method="mse"), more
calibration images (where the caller has them to give), and empirical bias correction (export.bias_correction)
on top of each.

A remedy replaces the baseline only when it agrees with the float model significantly more often on the check
images (a one-sided sign test on the images where exactly one of the two agrees, at SIGNIFICANCE): measured on
trained networks, candidates a few images apart on a few hundred check images were as often worse as better on
the held-out set, so a small gain on the check images is noise, not a reason to ship a different model. Every remedy keeps the graph as it was: integer-only, one XNNPACK partition.
"""
from __future__ import annotations

import math
from typing import Iterable

import numpy as np

from export.bias_correction import correct_biases
from export.choices import REMEDY_MODES
from export.convert import to_int8_with_float_reference
from export.evaluate import TFLiteClassifier, agreement, iterate_images
from export.quantization_report import mean_kl_divergence

DEFAULT_MIN_AGREEMENT = 0.97
BIAS_CORRECTION_IMAGES = 64  # the first calibration images; all 200 did no better where measured
BASELINE = "percentile"
MORE_IMAGES = "percentile_more_images"
BIAS_CORRECTION = "+bias_correction"
SIGNIFICANCE = 0.05


def quantize_with_remedies(
    model,
    calibration_images: Iterable[np.ndarray] | np.ndarray,
    check_images: Iterable[np.ndarray] | np.ndarray,
    io_dtype: str = "int8",
    mode: str = "auto",
    min_agreement: float = DEFAULT_MIN_AGREEMENT,
    extra_calibration_images: Iterable[np.ndarray] | np.ndarray | None = None,
    **conversion,
) -> tuple[bytes, bytes, dict]:
    """(int8 model, the calibrated float model it came from, a JSON-ready record of what was tried and chosen).

    The baseline is the percentile-range conversion `to_tflite` makes from `calibration_images`; with mode "auto"
    the remedies run only when its agreement on `check_images` is below `min_agreement`; the candidate with the best
    agreement (then the lower KL divergence) wins if it beats the baseline significantly (module docstring).
    `extra_calibration_images` (none of them in `check_images`) are only used by the "more images" remedy;
    `conversion` (scores, pixel_range) goes to every conversion."""
    if mode not in REMEDY_MODES:
        raise ValueError(f"Unknown int8 remedy mode {mode!r}; choose one of {', '.join(REMEDY_MODES)}.")
    calibration, check = _stack(calibration_images), _stack(check_images)
    if not len(check):
        raise ValueError("quantize_with_remedies needs check_images (a few hundred images not used to calibrate).")
    extra = _stack(extra_calibration_images) if extra_calibration_images is not None else calibration[:0]
    converted = {BASELINE: to_int8_with_float_reference(model, calibration, io_dtype, BASELINE, **conversion)}
    reference_logits = {BASELINE: TFLiteClassifier(converted[BASELINE][1]).logits(check)}
    hits = {}  # name -> per check image: does the int8 model's top-1 match the float model's
    scores = {BASELINE: _score(converted[BASELINE][0], reference_logits[BASELINE], check, hits, BASELINE)}
    run = mode == "always" or (mode == "auto" and scores[BASELINE]["agreement"] < min_agreement)
    if run:
        converted["mse"] = to_int8_with_float_reference(model, calibration, io_dtype, "mse", **conversion)
        if len(extra):
            converted[MORE_IMAGES] = to_int8_with_float_reference(
                model, np.concatenate([calibration, extra]), io_dtype, BASELINE, **conversion)
        for ranges in list(converted):
            int8_model, reference = converted[ranges]
            converted[ranges + BIAS_CORRECTION] = (
                correct_biases(int8_model, reference, calibration[:BIAS_CORRECTION_IMAGES]), reference)
        # Every candidate is judged against the same float model (the calibrated graphs differ only in ranges).
        for name in converted:
            if name not in scores:
                scores[name] = _score(converted[name][0], reference_logits[BASELINE], check, hits, name)
                scores[name]["sign_test_p"] = sign_test_p(hits[name], hits[BASELINE])
    best = max(scores, key=lambda name: (scores[name]["agreement"], -scores[name]["kl_divergence"]))
    chosen = best if best == BASELINE or scores[best]["sign_test_p"] < SIGNIFICANCE else BASELINE
    record = {"mode": mode, "min_agreement": min_agreement, "num_check_images": len(check),
              "remedies_ran": run, "best": best, "chosen": chosen, "candidates": scores}
    return converted[chosen][0], converted[chosen][1], record


def _stack(images) -> np.ndarray:
    return np.asarray([np.asarray(image, np.float32) for image in iterate_images(images)], np.float32)


def sign_test_p(candidate_hits: np.ndarray, baseline_hits: np.ndarray) -> float:
    """One-sided sign test: the chance of the candidate winning at least as many of the images where the two
    disagree if each such image were a coin flip."""
    wins = int(np.sum(candidate_hits & ~baseline_hits))
    trials = wins + int(np.sum(~candidate_hits & baseline_hits))
    return sum(math.comb(trials, k) for k in range(wins, trials + 1)) / 2**trials


def _score(int8_model: bytes, reference_logits: np.ndarray, images: np.ndarray, hits: dict, name: str) -> dict:
    logits = TFLiteClassifier(int8_model).logits(images)
    hits[name] = np.argmax(logits, axis=-1) == np.argmax(reference_logits, axis=-1)
    return {"agreement": agreement(logits, reference_logits),
            "kl_divergence": mean_kl_divergence(reference_logits, logits)}
