"""The zoo's names and options as plain data, in a module that imports no TensorFlow, so a command line can check
a flag in about a second (models.registry and models.channel_pruning use these lists)."""

NETWORKS = ("mobilenet_v1", "mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small", "shufflenet_v1",
            "shufflenet_v2")
# How channel pruning ranks channels: |gamma| (Network Slimming), or |gamma| per multiply-add the channel costs.
PRUNE_CRITERIA = ("gamma", "gamma_per_mac")
