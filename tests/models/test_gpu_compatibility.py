"""Every zoo network converts to a float16 model with no op the TFLite GPU delegate is known to reject
(export/gpu_compat.py).

Float16 models are the float32 graph plus DEQUANTIZE ops on the weights, so this covers float32 too. At 64 px and
a narrow width; the op set does not depend on either (at 224 px, width 1.0 the verdicts are the same).
The channel shuffle is the case to watch: it must stay at most 4-D (`[N, H*W, g, C/g]`, models/layers.py).
"""
import pytest

import models  # first: it selects Keras 2 (tf_keras) before TensorFlow loads
from export.convert import to_tflite
from export.gpu_compat import check_gpu_compatibility

SIZE = 64
# The narrowest width each network's table allows (ShuffleNetV2 has four fixed widths).
WIDTHS = {"mobilenet_v2": 0.35, "shufflenet_v2": 0.5}


@pytest.mark.parametrize("name", models.available())
def test_float16_model_has_no_op_the_gpu_delegate_rejects(name):
    model = models.build(name, input_shape=(SIZE, SIZE, 3), num_classes=10, width_multiplier=WIDTHS.get(name, 0.25))
    result = check_gpu_compatibility(to_tflite(model, "float16"))
    assert result.compatible, result.summary() + ": " + "; ".join(
        f"op {r.index} {r.op}: {r.message}" for r in result.rejected
    )

