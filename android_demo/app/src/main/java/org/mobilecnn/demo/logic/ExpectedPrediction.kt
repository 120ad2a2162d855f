package org.mobilecnn.demo.logic

/**
 * What the pipeline's host LiteRT evaluation gave for the bundled test image (sample_expected.json, written by
 * `python -m export.android`); the instrumented test checks the device against it.
 */
class ExpectedPrediction(
    val image: String,
    val top1Index: Int,
    val top1Label: String,
    val logits: FloatArray,
    /** How far a device logit may stray from the host's: one output quantization step for int8, more for float. */
    val logitTolerance: Float
) {
    /** Null when `logits` (from the device) agree with the host; otherwise what differs. */
    fun mismatch(logits: FloatArray, labels: List<String>): String? {
        if (logits.size != this.logits.size) return "the device gave ${logits.size} logits, the host ${this.logits.size}"
        val top1 = Scores.topK(logits, labels, 1)[0]
        if (top1.index != top1Index) {
            return "top-1 on the device is '${top1.label}' (index ${top1.index}), the pipeline's host evaluation " +
                "gave '$top1Label' (index $top1Index)"
        }
        var worst = 0f
        var worstIndex = 0
        for (i in logits.indices) {
            val difference = Math.abs(logits[i] - this.logits[i])
            if (difference > worst) {
                worst = difference
                worstIndex = i
            }
        }
        if (worst > logitTolerance) {
            return "logit $worstIndex ('${labels[worstIndex]}') is ${logits[worstIndex]} on the device, " +
                "${this.logits[worstIndex]} on the host (tolerance $logitTolerance)"
        }
        return null
    }

    companion object {
        fun parse(text: String): ExpectedPrediction {
            val root = Json.parse(text) as? Map<*, *> ?: throw IllegalArgumentException("sample_expected.json must be an object")
            fun field(name: String): Any = root[name] ?: throw IllegalArgumentException("sample_expected.json has no '$name'")
            val logits = (field("logits") as List<*>).map { (it as Double).toFloat() }.toFloatArray()
            return ExpectedPrediction(
                image = field("image") as String,
                top1Index = (field("top1_index") as Double).toInt(),
                top1Label = field("top1_label") as String,
                logits = logits,
                logitTolerance = (field("logit_tolerance") as Double).toFloat()
            )
        }
    }
}
