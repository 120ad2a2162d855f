"""TFLite Model Metadata: what an image-classifier .tflite says about itself, inside the file.

MediaPipe Tasks' ImageClassifier (Android `tasks-vision`, the `mediapipe` Python package), the LiteRT Support
Library and Android Studio's ML Model Binding read a model's description from the file itself: a ModelMetadata
flatbuffer (identifier "M001") in the buffer that the model's `metadata` entry "TFLITE_METADATA" points to, and
the files it names (here `labels.txt`) from a zip archive appended to the .tflite file. Both stay readable: a
flatbuffer is read from its front, a zip from its central directory at its end.

What is written, from the public schema (`export/metadata_schema.fbs`, generated code in
`export/metadata_schema_generated.py`):
- the model's name, description, version, author and license;
- input: ImageProperties (RGB, the model's size), NormalizationOptions (mean/std: model input = (pixel - mean) /
  std) and stats (the input's value range: 0..255 for a uint8 input, the normalized range for a float one);
- output: the class names as the associated file `labels.txt` (TENSOR_AXIS_LABELS, one name per line in output
  order), and whether the scores are probabilities: stats [0, 1] and a description that says so, or logits with no
  stats. That is read off the graph (a final SOFTMAX), never taken on trust.

What MediaPipe does with it (docs/design.md, "Outside clients"): a float32 input is fed (pixel - mean) / std, a
uint8 input the raw pixels, so a uint8 input's quantization must itself be the normalization
(`check_classifier_metadata` checks it); the labels become category names and the output's name the head name.
MediaPipe never applies a softmax: it shows the output as it is, hence the explicit probabilities-or-logits.
"""
from __future__ import annotations

import io
import math
import zipfile
from typing import Any, Sequence

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as tflite_schema

from export import metadata_schema_generated as schema

METADATA_BUFFER_NAME = "TFLITE_METADATA"
LABELS_FILE = "labels.txt"
# Every field written here exists since schema 1.0.0; a parser at least that new reads all of it.
MIN_PARSER_VERSION = "1.0.0"
# What the metadata says where the user named no author or license.
DEFAULT_AUTHOR = "Mobile CNN pipeline"
DEFAULT_LICENSE = "unspecified"
_MODEL_IDENTIFIER = b"TFL3"
_METADATA_IDENTIFIER = b"M001"
# TFLite's schema declares `Buffer.data (force_align: 16)`; the Python generated code ignores force_align, so
# buffers are re-packed with the converter's alignment by hand (weights read in place stay 16-byte aligned).
_BUFFER_ALIGNMENT = 16
_TENSOR_TYPES = {code: name.lower() for name, code in vars(tflite_schema.TensorType).items() if not name.startswith("_")}
_OP_NAMES = {code: name for name, code in vars(tflite_schema.BuiltinOperator).items() if not name.startswith("_")}
CLIENT_INPUT_TYPES = ("uint8", "float32")  # MediaPipe refuses an int8 input ...
CLIENT_OUTPUT_TYPES = ("uint8", "float32")  # ... and an int8 output


class ModelMetadataError(ValueError):
    """A .tflite model's metadata is missing, malformed, or disagrees with the model."""


class MissingMetadataError(ModelMetadataError):
    """The .tflite model carries no TFLite Model Metadata."""


def write_classifier_metadata(
    tflite: bytes,
    *,
    name: str,
    labels: Sequence[str],
    mean: float | Sequence[float],
    std: float | Sequence[float],
    description: str = "",
    version: str = "",
    author: str = "",
    license: str = "",
) -> bytes:
    """The model with image-classifier metadata and `labels.txt` packed in (any metadata it had is replaced)."""
    model = _unpack_model(tflite)
    subgraph = _single_subgraph(model)
    image = subgraph.tensors[subgraph.inputs[0]]
    output = subgraph.tensors[subgraph.outputs[0]]
    labels = _checked_labels(labels, _num_classes(output))
    means, stds = _per_channel(mean, "mean"), _per_channel(std, "std")
    probabilities = _ends_in_softmax(model, subgraph)

    metadata = schema.ModelMetadataT()
    metadata.name, metadata.description, metadata.version = name, description or None, version or None
    metadata.author, metadata.license = author or None, license or None
    metadata.minParserVersion = MIN_PARSER_VERSION
    graph = schema.SubGraphMetadataT()
    graph.inputTensorMetadata = [_image_metadata(image, means, stds)]
    graph.outputTensorMetadata = [_scores_metadata(len(labels), probabilities)]
    metadata.subgraphMetadata = [graph]
    builder = flatbuffers.Builder(1024)
    builder.Finish(metadata.Pack(builder), file_identifier=_METADATA_IDENTIFIER)
    _set_metadata_buffer(model, bytes(builder.Output()))
    return _with_associated_files(_pack_model(model), {LABELS_FILE: "".join(f"{label}\n" for label in labels)})


def read_metadata(tflite: bytes) -> dict[str, Any]:
    """Every metadata field of a classifier .tflite, its associated files and the labels; raises
    `MissingMetadataError` for a model without metadata."""
    buffer = _metadata_buffer(_unpack_model(tflite))
    if not schema.ModelMetadata.ModelMetadataBufferHasIdentifier(buffer, 0):
        raise ModelMetadataError(
            f"The {METADATA_BUFFER_NAME} buffer is not a ModelMetadata flatbuffer (identifier "
            f"{bytes(buffer[4:8])!r}, expected {_METADATA_IDENTIFIER!r}); rewrite it with write_classifier_metadata."
        )
    metadata = schema.ModelMetadataT.InitFromObj(schema.ModelMetadata.GetRootAs(buffer, 0))
    files = _associated_files(tflite)
    graphs = metadata.subgraphMetadata or []
    result = {
        "name": _text(metadata.name),
        "description": _text(metadata.description),
        "version": _text(metadata.version),
        "author": _text(metadata.author),
        "license": _text(metadata.license),
        "min_parser_version": _text(metadata.minParserVersion),
        "inputs": [_tensor_fields(tensor) for tensor in (graphs[0].inputTensorMetadata or [])] if graphs else [],
        "outputs": [_tensor_fields(tensor) for tensor in (graphs[0].outputTensorMetadata or [])] if graphs else [],
        "associated_files": files,
    }
    labels_file = next((f["name"] for output in result["outputs"] for f in output["associated_files"]
                        if f["type"] == "TENSOR_AXIS_LABELS"), None)
    result["labels"] = files[labels_file].decode("utf-8").splitlines() if labels_file in files else None
    result["scores"] = _scores_kind(result["outputs"][0]) if result["outputs"] else None
    return result


def check_classifier_metadata(tflite: bytes, num_classes: int) -> dict[str, Any]:
    """Raise `ModelMetadataError` (one line, every problem) unless the model is an image classifier that MediaPipe's
    ImageClassifier loads as it is: metadata with `num_classes` labels, normalization, client-readable I/O types,
    and scores described as what the graph outputs. Returns the metadata (read_metadata) when it passes."""
    try:
        metadata = read_metadata(tflite)
    except MissingMetadataError as error:
        raise MissingMetadataError(f"{error} An app's image classifier cannot load it.") from None
    model = _unpack_model(tflite)
    subgraph = _single_subgraph(model)
    image, output = subgraph.tensors[subgraph.inputs[0]], subgraph.tensors[subgraph.outputs[0]]
    problems = []
    if len(metadata["inputs"]) != 1 or len(metadata["outputs"]) != 1:
        problems.append(f"metadata describes {len(metadata['inputs'])} input(s) and {len(metadata['outputs'])} "
                        "output(s), the model has 1 and 1")
    labels = metadata["labels"]
    if labels is None:
        problems.append(f"no {LABELS_FILE} (TENSOR_AXIS_LABELS) packed in the model")
    elif len(labels) != num_classes or len(labels) != _num_classes(output):
        problems.append(f"{len(labels)} labels in the model's label file, expected {num_classes} "
                        f"(the output has {_num_classes(output)} classes)")
    input_type, output_type = _TENSOR_TYPES.get(image.type), _TENSOR_TYPES.get(output.type)
    if input_type not in CLIENT_INPUT_TYPES:
        problems.append(f"input is {input_type}; MediaPipe takes {'/'.join(CLIENT_INPUT_TYPES)} "
                        "(convert with io_dtype='float32')")
    if output_type not in CLIENT_OUTPUT_TYPES:
        problems.append(f"output is {output_type}; MediaPipe takes {'/'.join(CLIENT_OUTPUT_TYPES)} "
                        "(convert with io_dtype='float32')")
    if metadata["inputs"]:
        problems.extend(_input_problems(metadata["inputs"][0], image, input_type))
    graph_scores = "probabilities" if _ends_in_softmax(model, subgraph) else "logits"
    if metadata["scores"] != graph_scores:
        problems.append(f"metadata says the scores are {metadata['scores']}, the graph outputs {graph_scores}")
    if problems:
        raise ModelMetadataError("The model is not ready for an app's image classifier: " + "; ".join(problems)
                                 + ". Rewrite its metadata with export.metadata.write_classifier_metadata.")
    return metadata


def output_scores(tflite: bytes) -> str:
    """"probabilities" when the model's output comes from a SOFTMAX (through edge (DE)QUANTIZE ops), else "logits"."""
    model = _unpack_model(tflite)
    return "probabilities" if _ends_in_softmax(model, _single_subgraph(model)) else "logits"


# ------------------------------------------------------------------------------------------------ writing


def _image_metadata(image: tflite_schema.TensorT, means: list[float], stds: list[float]) -> schema.TensorMetadataT:
    height, width = (int(dim) for dim in image.shape[1:3])
    properties = schema.ImagePropertiesT()
    properties.colorSpace = schema.ColorSpaceType.RGB
    properties.defaultSize = schema.ImageSizeT()
    properties.defaultSize.width, properties.defaultSize.height = width, height
    content = schema.ContentT()
    content.contentPropertiesType = schema.ContentProperties.ImageProperties
    content.contentProperties = properties
    normalization = schema.NormalizationOptionsT()
    normalization.mean, normalization.std = means, stds
    unit = schema.ProcessUnitT()
    unit.optionsType = schema.ProcessUnitOptions.NormalizationOptions
    unit.options = normalization
    stats = schema.StatsT()
    if _TENSOR_TYPES.get(image.type) == "uint8":  # the client feeds raw pixels
        stats.min, stats.max = [0.0] * len(means), [255.0] * len(means)
    else:
        stats.min = [(0.0 - m) / s for m, s in zip(means, stds)]
        stats.max = [(255.0 - m) / s for m, s in zip(means, stds)]
    tensor = schema.TensorMetadataT()
    tensor.name = "image"
    tensor.description = (f"RGB image, {width}x{height}; the model takes (pixel - mean) / std per channel "
                          f"(NormalizationOptions), pixels 0..255.")
    tensor.content, tensor.processUnits, tensor.stats = content, [unit], stats
    return tensor


def _scores_metadata(num_classes: int, probabilities: bool) -> schema.TensorMetadataT:
    content = schema.ContentT()
    content.contentPropertiesType = schema.ContentProperties.FeatureProperties
    content.contentProperties = schema.FeaturePropertiesT()
    labels = schema.AssociatedFileT()
    labels.name, labels.type = LABELS_FILE, schema.AssociatedFileType.TENSOR_AXIS_LABELS
    labels.description = "Class names, one per line, in the order of the output's scores."
    tensor = schema.TensorMetadataT()
    tensor.content, tensor.associatedFiles = content, [labels]
    if probabilities:
        tensor.name = "probabilities"
        tensor.description = f"Probabilities of the {num_classes} classes (softmax: each in [0, 1], summing to 1)."
        tensor.stats = schema.StatsT()
        tensor.stats.min, tensor.stats.max = [0.0], [1.0]
    else:
        tensor.name = "logits"
        tensor.description = (f"Logits of the {num_classes} classes: unnormalized scores, not probabilities "
                              "(apply a softmax for probabilities).")
    return tensor


def _set_metadata_buffer(model: tflite_schema.ModelT, data: bytes) -> None:
    buffer = tflite_schema.BufferT()
    buffer.data = np.frombuffer(data, dtype=np.uint8)
    for entry in model.metadata or []:
        if _text(entry.name) == METADATA_BUFFER_NAME:
            model.buffers[entry.buffer] = buffer
            return
    entry = tflite_schema.MetadataT()
    entry.name, entry.buffer = METADATA_BUFFER_NAME, len(model.buffers)
    model.buffers.append(buffer)
    model.metadata = [*(model.metadata or []), entry]


def _pack_model(model: tflite_schema.ModelT) -> bytes:
    if any(buffer.offset > 1 for buffer in model.buffers):  # the schema: an offset > 1 points past the flatbuffer
        raise ModelMetadataError("The model keeps its weights outside the flatbuffer (a model over 2 GB); "
                                 "re-packing it for metadata is not supported.")
    model.buffers = [_AlignedBufferT.of(buffer) for buffer in model.buffers]
    builder = flatbuffers.Builder(1024 * 1024)
    builder.Finish(model.Pack(builder), file_identifier=_MODEL_IDENTIFIER)
    return bytes(builder.Output())


class _AlignedBufferT(tflite_schema.BufferT):
    """A TFLite BufferT whose data vector is packed 16-byte aligned, as TFLite's own writer does."""

    @classmethod
    def of(cls, buffer: tflite_schema.BufferT) -> "_AlignedBufferT":
        aligned = cls()
        aligned.data, aligned.offset, aligned.size = buffer.data, buffer.offset, buffer.size
        return aligned

    def Pack(self, builder: flatbuffers.Builder) -> int:  # noqa: N802 (the generated code's name)
        data = None
        if self.data is not None:
            payload = np.asarray(self.data, dtype=np.uint8).tobytes()
            builder.StartVector(1, len(payload), _BUFFER_ALIGNMENT)
            builder.head -= len(payload)  # what Builder.CreateByteVector does, with the alignment it lacks
            builder.Bytes[builder.head:builder.head + len(payload)] = payload
            data = builder.EndVector()
        tflite_schema.BufferStart(builder)
        if data is not None:
            tflite_schema.BufferAddData(builder, data)
        tflite_schema.BufferAddOffset(builder, self.offset)
        tflite_schema.BufferAddSize(builder, self.size)
        return tflite_schema.BufferEnd(builder)


def _with_associated_files(flatbuffer: bytes, files: dict[str, str]) -> bytes:
    # Appended the way the TFLite Support metadata populator appends them: an uncompressed zip after the
    # flatbuffer (the LiteRT Support Library reads stored entries only).
    output = io.BytesIO(flatbuffer)
    output.seek(0, io.SEEK_END)
    with zipfile.ZipFile(output, "a", compression=zipfile.ZIP_STORED) as archive:
        for name, text in files.items():
            archive.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), text.encode("utf-8"))
    return output.getvalue()


# ------------------------------------------------------------------------------------------------ reading


def _unpack_model(tflite: bytes) -> tflite_schema.ModelT:
    data = bytearray(tflite)
    if len(data) < 8 or not tflite_schema.Model.ModelBufferHasIdentifier(data, 0):
        raise ModelMetadataError("Not a TFLite flatbuffer (no 'TFL3' identifier); pass the .tflite file's bytes.")
    return tflite_schema.ModelT.InitFromPackedBuf(data, 0)


def _metadata_buffer(model: tflite_schema.ModelT) -> bytearray:
    for entry in model.metadata or []:
        if _text(entry.name) == METADATA_BUFFER_NAME:
            data = model.buffers[entry.buffer].data
            if data is None or len(data) < 8:
                raise ModelMetadataError(f"The model's {METADATA_BUFFER_NAME} buffer is empty; rewrite its metadata.")
            return bytearray(np.asarray(data, dtype=np.uint8).tobytes())
    raise MissingMetadataError(
        f"The model has no TFLite Model Metadata (no {METADATA_BUFFER_NAME} buffer); write it with "
        "export.metadata.write_classifier_metadata."
    )


def _associated_files(tflite: bytes) -> dict[str, bytes]:
    try:
        with zipfile.ZipFile(io.BytesIO(tflite)) as archive:
            return {info.filename: archive.read(info) for info in archive.infolist()}
    except zipfile.BadZipFile:  # no archive appended: a model without associated files
        return {}


def _tensor_fields(tensor: schema.TensorMetadataT) -> dict[str, Any]:
    content = tensor.content
    properties = content.contentProperties if content is not None else None
    fields: dict[str, Any] = {
        "name": _text(tensor.name),
        "description": _text(tensor.description),
        "content": _enum_name(schema.ContentProperties, content.contentPropertiesType) if content else None,
        "stats": ({"min": _floats(tensor.stats.min), "max": _floats(tensor.stats.max)}
                  if tensor.stats is not None else None),
        "process_units": [],
        "associated_files": [
            {"name": _text(f.name), "description": _text(f.description),
             "type": _enum_name(schema.AssociatedFileType, f.type), "locale": _text(f.locale)}
            for f in tensor.associatedFiles or []
        ],
    }
    if isinstance(properties, schema.ImagePropertiesT):
        fields["color_space"] = _enum_name(schema.ColorSpaceType, properties.colorSpace)
        size = properties.defaultSize
        fields["default_size"] = {"width": size.width, "height": size.height} if size is not None else None
    for unit in tensor.processUnits or []:
        entry = {"type": _enum_name(schema.ProcessUnitOptions, unit.optionsType)}
        if isinstance(unit.options, schema.NormalizationOptionsT):
            entry.update(mean=_floats(unit.options.mean), std=_floats(unit.options.std))
        fields["process_units"].append(entry)
    return fields


def _scores_kind(output: dict[str, Any]) -> str:
    # The TFLite Support writers' convention for a classifier's probabilities: output stats min 0, max 1.
    stats = output.get("stats") or {}
    return "probabilities" if stats.get("min") == [0.0] and stats.get("max") == [1.0] else "logits"


def _input_problems(fields: dict[str, Any], image: tflite_schema.TensorT, input_type: str | None) -> list[str]:
    problems = []
    if fields.get("color_space") != "RGB":
        problems.append(f"input ImageProperties color space is {fields.get('color_space')}, expected RGB")
    normalization = [unit for unit in fields["process_units"] if unit["type"] == "NormalizationOptions"]
    if len(normalization) != 1:
        problems.append(f"input has {len(normalization)} NormalizationOptions, expected 1")
        return problems
    mean, std = normalization[0]["mean"], normalization[0]["std"]
    if len(mean) != len(std) or len(mean) not in (1, 3) or len(set(mean)) > 1 or len(set(std)) > 1 or std[0] <= 0:
        problems.append(f"NormalizationOptions mean {mean} / std {std}: MediaPipe takes one value for all channels "
                        "(1 or 3 equal values), std > 0")
        return problems
    if input_type == "uint8":
        # MediaPipe feeds a uint8 input the raw pixels: its quantization must be the normalization itself,
        # real = scale * (pixel - zero_point) = (pixel - mean) / std, to within half a step.
        quantization = image.quantization
        scale = float(quantization.scale[0]) if quantization is not None and quantization.scale is not None else 0.0
        zero_point = int(quantization.zeroPoint[0]) if scale else 0
        if not (math.isclose(scale, 1.0 / std[0], rel_tol=1e-3) and abs(zero_point - mean[0]) <= 0.5):
            problems.append(f"uint8 input quantization (scale {scale:.6g}, zero point {zero_point}) is not the "
                            f"normalization (1/std = {1.0 / std[0]:.6g}, mean = {mean[0]:g}): a client feeding raw "
                            "pixels would compute on wrong inputs (convert with io_dtype='float32')")
    return problems


# ------------------------------------------------------------------------------------------------ helpers


def _single_subgraph(model: tflite_schema.ModelT) -> tflite_schema.SubGraphT:
    subgraphs = model.subgraphs or []
    if len(subgraphs) != 1 or len(subgraphs[0].inputs) != 1 or len(subgraphs[0].outputs) != 1:
        raise ModelMetadataError(
            "An image classifier has one subgraph with one input and one output; this model has "
            f"{len(subgraphs)} subgraph(s)" + (f" and {len(subgraphs[0].inputs)} input(s), "
                                               f"{len(subgraphs[0].outputs)} output(s)." if subgraphs else ".")
        )
    return subgraphs[0]


def _ends_in_softmax(model: tflite_schema.ModelT, subgraph: tflite_schema.SubGraphT) -> bool:
    """True when the output comes from a SOFTMAX, possibly through the (DE)QUANTIZE ops at the model's edge."""
    producers = {int(tensor): op for op in subgraph.operators or [] for tensor in op.outputs}
    tensor = int(subgraph.outputs[0])
    while tensor in producers:
        op = producers[tensor]
        code = model.operatorCodes[op.opcodeIndex]
        name = _OP_NAMES.get(max(code.builtinCode, code.deprecatedBuiltinCode))
        if name == "SOFTMAX":
            return True
        if name not in ("QUANTIZE", "DEQUANTIZE"):
            return False
        tensor = int(op.inputs[0])
    return False


def _num_classes(output: tflite_schema.TensorT) -> int:
    return int(np.prod(output.shape[1:]))


def _checked_labels(labels: Sequence[str], num_classes: int) -> list[str]:
    labels = [str(label) for label in labels]
    if len(labels) != num_classes:
        raise ModelMetadataError(f"{len(labels)} labels given, the model outputs {num_classes} classes; pass one "
                                 "label per output class, in output order.")
    bad = [label for label in labels if not label.strip() or "\n" in label or "\r" in label]
    if bad:
        raise ModelMetadataError(f"Labels must be non-empty single lines (labels.txt has one per line); got {bad[:3]!r}.")
    return labels


def _per_channel(value: float | Sequence[float], what: str) -> list[float]:
    values = [float(value)] * 3 if np.isscalar(value) else [float(v) for v in value]
    if len(values) not in (1, 3) or (what == "std" and any(v <= 0 for v in values)):
        raise ModelMetadataError(f"{what} must be one number or three (RGB){', each > 0' if what == 'std' else ''}; "
                                 f"got {value!r}.")
    return values


def _text(value: bytes | str | None) -> str | None:
    return value.decode("utf-8") if isinstance(value, bytes) else value


def _floats(values) -> list[float] | None:
    return None if values is None else [float(v) for v in values]


def _enum_name(enum: type, code: int) -> str:
    return next((name for name, value in vars(enum).items() if not name.startswith("_") and value == code), str(code))
