"""TFLite conversion, verification, benchmarking, adb and Android app packaging.

export/ uses tf_keras and tf.lite directly, never `tf.keras` or TF-MOT, so it needs no legacy-Keras switch of its
own; the switch is set in one place, `models/__init__.py`.
"""
