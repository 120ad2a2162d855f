"""The allowed values of export's options, in a module that imports no TensorFlow, so a command line can check a
flag in about a second (pipeline.config takes its choices from here)."""

QUANTIZATIONS = ("int8", "float16", "dynamic", "none")
IO_DTYPES = ("int8", "uint8", "float32")
SCORES = ("logits", "probabilities")
# Post-training int8 remedies (export.int8_remedies): auto runs them only when int8 misses its agreement goal.
REMEDY_MODES = ("auto", "always", "never")
