"""The model zoo: Keras (tf_keras, Keras 2) definitions of five efficient CNNs for mobile deployment.

TF-MOT works only with Keras 2 models, so the legacy-Keras switch is set here, before anything imports
TensorFlow; users never have to set it.
"""
import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from models.registry import available, build  # noqa: E402

__all__ = ["available", "build"]
