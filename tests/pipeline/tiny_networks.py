"""The smallest zoo network, sized for a tiny DataSplits: what the prune, QAT and convert tests train."""
import pipeline  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow is imported)

TINY_MODEL = "mobilenet_v1"  # the shortest graph in the zoo: the fastest to trace
TINY_WIDTH = 0.25


def tiny_network(data, name: str = TINY_MODEL, padding: str = "same"):
    """`name` at width 0.25 for `data`'s input shape and classes."""
    import models

    return models.build(name, input_shape=data.input_shape, num_classes=data.num_classes,
                        width_multiplier=TINY_WIDTH, padding=padding)
