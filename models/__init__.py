"""The model zoo: Keras (tf_keras, Keras 2) definitions of five efficient CNNs for mobile deployment.

TF-MOT works only with Keras 2 models, so this package sets the legacy-Keras switch, before anything imports
TensorFlow; it is the one place it is set (pipeline/ imports this package first). `build` and `available` load
TensorFlow only when first used, so `models.choices` stays a TensorFlow-free import.
"""
import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__all__ = ["available", "build"]


def __getattr__(name: str):
    if name in __all__:
        from models import registry

        return getattr(registry, name)
    raise AttributeError(f"module 'models' has no attribute {name!r}")
