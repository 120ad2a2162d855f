"""The pipeline's stages and the `python -m pipeline.run` entry point.

Importing `models` first sets TF-MOT's legacy-Keras switch before anything here imports TensorFlow (the
`models` package does that, and loads TensorFlow only when a network is built).
"""
import models  # noqa: F401
