package org.mobilecnn.demo.logic

/** model_meta.json is missing something the app needs, or disagrees with labels.txt; the message says how to fix it. */
class ModelMetaException(message: String) : IllegalArgumentException(message)

/** One tensor as model_meta.json describes it: shape, element type, affine quantization (null for float32). */
class TensorMeta(val shape: List<Int>, val type: TensorType, val quantization: Quantization?) {
    val elementCount: Int get() = shape.fold(1) { product, dim -> product * dim }
}

/**
 * What the app knows about the packaged model, read from model_meta.json (schema version 1, defined once in the
 * Python package as export/meta.py). Everything the app does to a camera frame comes from here, so a new model
 * needs no code change.
 */
class ModelMeta(
    val input: TensorMeta,
    val output: TensorMeta,
    /** True when the model outputs logits (ours always do): the app applies softmax to show probabilities. */
    val outputIsLogits: Boolean,
    val normalization: Normalization,
    val labels: List<String>,
    val modelName: String?
) {
    val inputHeight: Int get() = input.shape[1]
    val inputWidth: Int get() = input.shape[2]
    val numClasses: Int get() = output.elementCount / output.shape[0]

    /** labels.txt must list exactly the labels of model_meta.json, in the same order. */
    fun checkLabels(labelsTxt: List<String>) {
        if (labelsTxt != labels) {
            val firstDifference = labelsTxt.indices.firstOrNull { it >= labels.size || labelsTxt[it] != labels[it] }
                ?: minOf(labelsTxt.size, labels.size)
            throw ModelMetaException(
                "labels.txt (${labelsTxt.size} labels) disagrees with model_meta.json (${labels.size}) at line " +
                    "${firstDifference + 1}; package the app again with python -m export.android --run_dir RUN"
            )
        }
    }

    companion object {
        const val SCHEMA_VERSION = 1

        /** Parse and check model_meta.json text. */
        fun parse(text: String): ModelMeta {
            val root = try {
                Json.parse(text)
            } catch (error: JsonException) {
                throw ModelMetaException("model_meta.json is not valid JSON: ${error.message}")
            }
            val meta = asObject(root, "model_meta.json")
            val version = number(meta, "schema_version", "model_meta.json")
            if (version != SCHEMA_VERSION.toDouble()) {
                throw ModelMetaException(
                    "model_meta.json has schema_version ${formatNumber(version)}; this app reads version $SCHEMA_VERSION"
                )
            }
            val input = tensor(meta, "input")
            val output = tensor(meta, "output")
            if (input.shape.size != 4 || input.shape[0] != 1 || input.shape[3] != 3 || input.shape[1] < 1 || input.shape[2] < 1) {
                throw ModelMetaException("input shape must be [1, height, width, 3] (NHWC RGB, batch 1), got ${input.shape}")
            }
            if (output.shape.isEmpty() || output.shape[0] != 1 || output.shape.any { it < 1 }) {
                throw ModelMetaException("output shape must be [1, classes], got ${output.shape}")
            }
            val outputObject = asObject(meta["output"], "output")
            val kind = outputObject["kind"]
            val outputIsLogits = when (kind) {
                null, "logits" -> true
                "probabilities" -> false
                else -> throw ModelMetaException("output kind must be \"logits\" or \"probabilities\", got $kind")
            }
            val normalization = normalization(meta)
            val labels = asList(meta["labels"], "labels").mapIndexed { index, label ->
                label as? String ?: throw ModelMetaException("labels[$index] must be a string, got $label")
            }
            val parsed = ModelMeta(input, output, outputIsLogits, normalization, labels, meta["model_name"] as? String)
            if (labels.size != parsed.numClasses) {
                throw ModelMetaException(
                    "model_meta.json lists ${labels.size} labels but the model outputs ${parsed.numClasses} classes"
                )
            }
            return parsed
        }

        private fun tensor(meta: Map<String, Any?>, role: String): TensorMeta {
            val tensor = asObject(meta[role], role)
            val shape = asList(tensor["shape"], "$role.shape").mapIndexed { index, dim ->
                val value = dim as? Double ?: throw ModelMetaException("$role.shape[$index] must be a number, got $dim")
                if (value != Math.floor(value)) throw ModelMetaException("$role.shape[$index] must be an integer, got $value")
                value.toInt()
            }
            val dtypeName = tensor["dtype"] as? String ?: throw ModelMetaException("$role.dtype must be a string")
            val type = try {
                TensorType.fromJsonName(dtypeName)
            } catch (error: IllegalArgumentException) {
                throw ModelMetaException("$role: ${error.message}")
            }
            val quantizationValue = tensor["quantization"]
            val quantization = if (quantizationValue == null) null else {
                val q = asObject(quantizationValue, "$role.quantization")
                val scale = number(q, "scale", "$role.quantization")
                val zeroPoint = number(q, "zero_point", "$role.quantization")
                if (!(scale > 0.0) || scale.isInfinite()) throw ModelMetaException("$role.quantization.scale must be > 0, got $scale")
                if (zeroPoint != Math.floor(zeroPoint)) throw ModelMetaException("$role.quantization.zero_point must be an integer")
                Quantization(scale.toFloat(), zeroPoint.toInt())
            }
            if (type.isQuantized && quantization == null) {
                throw ModelMetaException("$role is $dtypeName but has no quantization {scale, zero_point}")
            }
            if (!type.isQuantized && quantization != null) {
                throw ModelMetaException("$role is float32 but has quantization parameters")
            }
            return TensorMeta(shape, type, quantization)
        }

        private fun normalization(meta: Map<String, Any?>): Normalization {
            val normalization = asObject(meta["normalization"], "normalization")
            val mean = floats(normalization["mean"], "normalization.mean")
            val std = floats(normalization["std"], "normalization.std")
            if (mean.size != 3 || std.size != 3 || std.any { !(it > 0f) }) {
                throw ModelMetaException("normalization needs 3 means and 3 positive stds (RGB), got mean=${mean.toList()} std=${std.toList()}")
            }
            val range = normalization["pixel_range"]
            if (range != null) {
                val bounds = floats(range, "normalization.pixel_range")
                if (bounds.toList() != listOf(0f, 255f)) {
                    throw ModelMetaException("normalization.pixel_range must be [0, 255] (camera pixels), got ${bounds.toList()}")
                }
            }
            return Normalization(mean, std)
        }

        private fun floats(value: Any?, where: String): FloatArray {
            if (value is Double) return floatArrayOf(value.toFloat(), value.toFloat(), value.toFloat())
            val list = asList(value, where)
            return FloatArray(list.size) { index ->
                (list[index] as? Double ?: throw ModelMetaException("$where[$index] must be a number, got ${list[index]}")).toFloat()
            }
        }

        private fun number(obj: Map<String, Any?>, key: String, where: String): Double =
            obj[key] as? Double ?: throw ModelMetaException(
                if (obj.containsKey(key)) "$where.$key must be a number, got ${obj[key]}" else "$where has no '$key'"
            )

        @Suppress("UNCHECKED_CAST")
        private fun asObject(value: Any?, where: String): Map<String, Any?> =
            value as? Map<String, Any?> ?: throw ModelMetaException("$where must be a JSON object, got ${describe(value)}")

        private fun asList(value: Any?, where: String): List<Any?> =
            value as? List<Any?> ?: throw ModelMetaException("$where must be a JSON array, got ${describe(value)}")

        private fun describe(value: Any?): String = if (value == null) "nothing" else value.toString()

        private fun formatNumber(value: Double): String =
            if (value == Math.floor(value) && !value.isInfinite()) value.toLong().toString() else value.toString()
    }
}
