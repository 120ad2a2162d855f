"""ShuffleNetV1/V2: the papers' tables, channel shuffle/split semantics, and how they lower to TFLite."""
import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras
from ai_edge_litert.interpreter import Interpreter, OpResolverType

import models
from export.graph import integer_only_problems, op_histogram, xnnpack_partitions
from models import complexity, layers, shufflenet_v1, shufflenet_v2


def _trainable_params(model: keras.Model) -> int:
    return sum(int(np.prod(weight.shape)) for weight in model.trainable_weights)


# Trainable parameters at 224x224, 1000 classes (input size does not change them, so the tests build at 32 px).
# ShuffleNetV2: torchvision's shufflenet_v2_x0_5 ... x2_0. ShuffleNetV1 g=3: Megvii's reference layout.
@pytest.mark.parametrize(
    "width, params", [(0.5, 1_366_792), (1.0, 2_278_604), (1.5, 3_503_624), (2.0, 7_393_996)]
)
def test_shufflenet_v2_trainable_params_equal_torchvision(width, params):
    model = models.build("shufflenet_v2", input_shape=(32, 32, 3), width_multiplier=width)
    assert _trainable_params(model) == params
    assert model.output_shape == (None, 1000)


@pytest.mark.parametrize(
    "groups, params, paper_macs",
    [(1, 1_531_936, 143e6), (2, 1_733_848, 140e6), (3, 1_865_728, 137e6), (4, 1_968_344, 133e6), (8, 2_434_768, 137e6)],
)
def test_shufflenet_v1_params_and_table_1_complexity(groups, params, paper_macs):
    model = models.build("shufflenet_v1", groups=groups)
    assert _trainable_params(model) == params
    # Table 1's complexity row (MFLOPs, i.e. multiply-adds), counted analytically.
    assert complexity.analyze(model).macs == pytest.approx(paper_macs, rel=0.03)


def test_shufflenet_v1_follows_table_1():
    model = models.build("shufflenet_v1", input_shape=(224, 224, 3), groups=3)
    assert model.get_layer("conv1").filters == 24
    assert model.get_layer("maxpool").output_shape[1:] == (56, 56, 24)
    for stage, (units, size, channels) in {"stage2": (4, 28, 240), "stage3": (8, 14, 480), "stage4": (4, 7, 960)}.items():
        assert model.get_layer(f"{stage}/unit{units}/relu").output_shape[1:] == (size, size, channels)
        with pytest.raises(ValueError):
            model.get_layer(f"{stage}/unit{units + 1}/relu")
        assert model.get_layer(f"{stage}/unit2/gconv1").groups == 3
        assert model.get_layer(f"{stage}/unit2/gconv1").filters == channels // 4
    # Stage2's first pointwise convolution is not grouped (section 3.3), so nothing to shuffle after it.
    assert model.get_layer("stage2/unit1/gconv1").groups == 1
    assert "stage2/unit1/shuffle" not in [layer.name for layer in model.layers]
    assert model.get_layer("stage3/unit1/gconv1").groups == 3
    # Stride-2 units: the averaged shortcut is frozen (a fixed 1/9 filter) and concatenated.
    shortcut = model.get_layer("stage3/unit1/shortcut_avgpool")
    assert not shortcut.trainable
    np.testing.assert_allclose(shortcut.get_weights()[0], 1.0 / 9.0)
    assert isinstance(model.get_layer("stage3/unit1/concat"), keras.layers.Concatenate)


@pytest.mark.parametrize("groups", shufflenet_v1.GROUPS)
@pytest.mark.parametrize("width", [0.25, 0.5, 0.75, 1.0, 1.5, 2.0])
def test_shufflenet_v1_width_keeps_channels_divisible(groups, width):
    conv1, stages = shufflenet_v1.stage_channels(groups, width)
    assert conv1 % groups == 0
    for channels in stages.values():
        assert channels % (4 * groups) == 0  # the bottleneck (a quarter) feeds a g-group convolution
        assert channels - conv1 > 0
    if width == 1.0:
        column = shufflenet_v1.GROUPS.index(groups)
        assert [stages[f"stage{i}"] for i in (2, 3, 4)] == [row.output_channels[column] for row in shufflenet_v1.TABLE_1[::2]]


@pytest.mark.parametrize(
    "name, options",
    [
        ("shufflenet_v1", {"groups": 8, "width_multiplier": 0.25}),
        ("shufflenet_v1", {"groups": 2, "width_multiplier": 1.5, "padding": "symmetric", "dropout": 0.2}),
        ("shufflenet_v2", {"width_multiplier": 0.5, "padding": "symmetric", "activation": "relu6"}),
    ],
)
def test_any_input_size_and_class_count_gives_logits(name, options):
    model = models.build(name, input_shape=(33, 47, 3), num_classes=7, **options)
    logits = model(np.random.default_rng(0).normal(size=(2, 33, 47, 3)).astype(np.float32), training=False)
    assert logits.shape == (2, 7)
    assert np.all(np.isfinite(logits))
    assert not np.allclose(np.sum(np.exp(logits), axis=-1), 1.0)  # logits, not probabilities


def test_bad_options_say_the_allowed_values():
    with pytest.raises(ValueError, match=r"\(1, 2, 3, 4, 8\)"):
        models.build("shufflenet_v1", input_shape=(32, 32, 3), groups=5)
    with pytest.raises(ValueError, match="between 0.25 and 2"):
        models.build("shufflenet_v1", input_shape=(32, 32, 3), width_multiplier=3.0)
    with pytest.raises(ValueError, match="0.5, 1, 1.5, 2"):
        models.build("shufflenet_v2", input_shape=(32, 32, 3), width_multiplier=0.75)
    with pytest.raises(ValueError, match="symmetric"):
        models.build("shufflenet_v2", input_shape=(32, 32, 3), padding="reflect")
    with pytest.raises(ValueError, match="at least 32"):
        models.build("shufflenet_v2", input_shape=(31, 64, 3))


def _reference_shuffle(x: np.ndarray, groups: int) -> np.ndarray:
    """The paper's shuffle: reshape channels to (groups, n), transpose to (n, groups), flatten."""
    channels = x.shape[-1]
    return x.reshape(*x.shape[:-1], groups, channels // groups).swapaxes(-1, -2).reshape(x.shape)


@pytest.mark.parametrize("groups, channels", [(2, 8), (3, 12), (8, 16), (4, 4)])
def test_channel_shuffle_is_the_papers_permutation(groups, channels):
    x = np.random.default_rng(groups).normal(size=(2, 3, 5, channels)).astype(np.float32)
    shuffled = layers.ChannelShuffle(groups)(x).numpy()
    np.testing.assert_array_equal(shuffled, _reference_shuffle(x, groups))
    per_group = channels // groups
    for i in range(groups):
        for j in range(per_group):
            np.testing.assert_array_equal(shuffled[..., j * groups + i], x[..., i * per_group + j])


def test_channel_split_halves_in_order():
    x = np.arange(2 * 3 * 3 * 10, dtype=np.float32).reshape(2, 3, 3, 10)
    first, second = layers.ChannelSplit()(x)
    np.testing.assert_array_equal(first.numpy(), x[..., :5])
    np.testing.assert_array_equal(second.numpy(), x[..., 5:])


def test_shuffle_and_split_layers_are_weightless_serializable_and_checked():
    for layer in (layers.ChannelShuffle(4, name="shuffle"), layers.ChannelSplit(name="split")):
        layer.build((None, 4, 4, 16))
        assert layer.weights == [] and layer.get_prunable_weights() == []
        clone = type(layer).from_config(layer.get_config())
        assert clone.get_config() == layer.get_config()
    with pytest.raises(ValueError, match="equal groups"):
        layers.ChannelShuffle(3)(np.zeros((1, 2, 2, 8), np.float32))
    with pytest.raises(ValueError, match="even"):
        layers.ChannelSplit()(np.zeros((1, 2, 2, 7), np.float32))


def _convert(model: keras.Model, int8: bool) -> bytes:
    """Fixed batch-1 conversion, as export.convert does it, but with only the variables as the trackable object.

    Handing the converter the Keras model makes it save a SavedModel that traces every layer's call (~40 s for a
    32-px ShuffleNet here); a plain module holding the weights gives the same graph in ~4 s.
    """
    size = model.input_shape[1:]
    serving = tf.function(lambda images: model(images, training=False), input_signature=[tf.TensorSpec((1, *size))])
    holder = tf.Module()
    holder.weights = list(model.weights)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([serving.get_concrete_function()], holder)
    if int8:
        images = np.random.default_rng(0).uniform(-1, 1, size=(4, 1, *size)).astype(np.float32)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([image] for image in images)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = converter.inference_output_type = tf.int8
    return converter.convert()


def _interpreter(flatbuffer: bytes) -> Interpreter:
    interpreter = Interpreter(
        model_content=flatbuffer, experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    )
    interpreter.allocate_tensors()
    return interpreter


# Every op XNNPACK takes in int8 here; anything else (RELU or AVERAGE_POOL_2D standing alone, QUANTIZE islands,
# dynamic-shape plumbing) would cut the graph into partitions.
_ALLOWED_INT8_OPS = {
    "CONV_2D", "DEPTHWISE_CONV_2D", "MAX_POOL_2D", "ADD", "CONCATENATION", "RESHAPE", "TRANSPOSE", "SPLIT",
    "PAD", "MEAN", "FULLY_CONNECTED",
}  # fmt: skip


@pytest.mark.parametrize(
    "name, options, shuffles, splits",
    [
        # V1 0.25x g=3: 15 units with a shuffle (all but stage2/unit1), no split.
        ("shufflenet_v1", {"groups": 3, "width_multiplier": 0.25}, 15, 0),
        # V2 0.5x: 16 units, each ends in a shuffle; the 13 stride-1 units start with a split.
        ("shufflenet_v2", {"width_multiplier": 0.5, "padding": "symmetric"}, 16, 13),
    ],
)
def test_converts_to_static_4d_int8_graph_in_one_xnnpack_partition(name, options, shuffles, splits):
    model = models.build(name, input_shape=(32, 32, 3), num_classes=10, **options)
    for int8 in (False, True):
        flatbuffer = _convert(model, int8)
        ops = op_histogram(flatbuffer)
        assert not {"SHAPE", "PACK", "STRIDED_SLICE", "GATHER"} & set(ops), ops
        assert ops["TRANSPOSE"] == shuffles and ops.get("SPLIT", 0) == splits, ops
        assert ops["RESHAPE"] == 2 * shuffles, ops  # Flatten folds away
        interpreter = _interpreter(flatbuffer)
        assert max(len(tensor["shape"]) for tensor in interpreter.get_tensor_details()) <= 4  # GPU delegate: <= 4-D
        report = xnnpack_partitions(flatbuffer)
        assert report.fully_delegated, report
        if not int8:  # the lowering computes the Keras model's function
            image = np.random.default_rng(1).normal(size=(1, 32, 32, 3)).astype(np.float32)
            interpreter.set_tensor(interpreter.get_input_details()[0]["index"], image)
            interpreter.invoke()
            logits = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
            np.testing.assert_allclose(logits, model(image, training=False), rtol=1e-4, atol=1e-4)
    assert set(ops) <= _ALLOWED_INT8_OPS, ops
    assert integer_only_problems(flatbuffer) == []


def test_shufflenet_v1_saves_and_loads_with_identical_outputs(tmp_path):
    model = models.build("shufflenet_v1", input_shape=(32, 32, 3), num_classes=5, groups=8, width_multiplier=0.25)
    path = tmp_path / "shufflenet_v1.keras"
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    x = np.random.default_rng(1).normal(size=(1, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(loaded(x, training=False), model(x, training=False), rtol=1e-5, atol=1e-5)
    assert _trainable_params(loaded) == _trainable_params(model)
    assert not loaded.get_layer("stage4/unit1/shortcut_avgpool").trainable


def test_shufflenets_do_not_fit_the_xnnpack_sparse_pruning_policy():
    """Documented in shufflenet_v1's docstring: the policy stops at the stem's max pool, whatever the padding."""
    import tensorflow_model_optimization as tfmot

    model = models.build("shufflenet_v2", input_shape=(32, 32, 3), width_multiplier=0.5, padding="symmetric")
    with pytest.raises(ValueError, match="MaxPooling2D is not supported"):
        tfmot.sparsity.keras.prune_low_magnitude(
            model,
            pruning_schedule=tfmot.sparsity.keras.ConstantSparsity(0.75, 0),
            pruning_policy=tfmot.sparsity.keras.PruneForLatencyOnXNNPack(),
        )
    # It does find the symmetric stem (ZeroPadding2D(1) + 3x3 stride-2 VALID conv); with TF SAME it would not.
    assert isinstance(model.get_layer("conv1/pad"), keras.layers.ZeroPadding2D)
