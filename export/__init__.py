"""TFLite conversion, verification, benchmarking, adb and Android app packaging.

TF-MOT works only with Keras 2 models, so the legacy-Keras switch is set here, before TensorFlow is imported.
"""
import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
