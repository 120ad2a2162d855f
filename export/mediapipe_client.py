"""Classify images with MediaPipe Tasks' ImageClassifier, the client most Android apps use, as an app would.

Runs inside the client environment (`requirements-client.txt`: `mediapipe`, no TensorFlow; the two cannot share
one environment, see README "Using the model in an app"), as a file:

    .venv-client/bin/python export/mediapipe_client.py --model model.tflite --images images.npy --output out.json

`images.npy` holds raw RGB pixels, uint8, [N, H, W, 3], already at the model's input size (MediaPipe would
otherwise resize them). The model is loaded from its file alone: MediaPipe reads normalization and labels from
its metadata. The output JSON has one entry per image: the top-1 category's index, name and score, in order.
Imports nothing of this project, so it runs from any checkout or copy.
"""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np


def classify(model_path: str, images: np.ndarray) -> list[dict]:
    """Top-1 {index, name, score} per image, from MediaPipe's ImageClassifier in IMAGE mode."""
    import mediapipe as mp
    from mediapipe.tasks.python import BaseOptions
    from mediapipe.tasks.python.vision import ImageClassifier, ImageClassifierOptions, RunningMode

    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise SystemExit(f"images must be uint8 [N, H, W, 3] RGB pixels; got {images.dtype} {list(images.shape)}.")
    options = ImageClassifierOptions(
        base_options=BaseOptions(model_asset_path=model_path), running_mode=RunningMode.IMAGE, max_results=1
    )
    results = []
    # The context manager closes the classifier: without it mediapipe 1.2.2 raises a TypeError at exit.
    with ImageClassifier.create_from_options(options) as classifier:
        for image in images:
            frame = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(image))
            (head,) = classifier.classify(frame).classifications
            top = head.categories[0]
            results.append({"index": int(top.index), "name": top.category_name, "score": float(top.score)})
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="the .tflite file (with TFLite Model Metadata)")
    parser.add_argument("--images", required=True, help=".npy of uint8 RGB images [N, H, W, 3] at the model size")
    parser.add_argument("--output", required=True, help="where to write the JSON results")
    args = parser.parse_args(argv)
    try:
        results = classify(args.model, np.load(args.images))
    except (ValueError, RuntimeError) as error:  # MediaPipe's refusals: type mismatch, missing metadata, ...
        print(f"mediapipe could not classify with {args.model}: {error}", file=sys.stderr)
        return 3
    import mediapipe

    with open(args.output, "w", encoding="utf-8") as handle:
        json.dump({"mediapipe_version": mediapipe.__version__, "results": results}, handle)
    return 0


if __name__ == "__main__":
    sys.exit(main())
