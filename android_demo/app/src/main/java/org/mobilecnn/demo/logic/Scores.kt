package org.mobilecnn.demo.logic

/** One label with its score (a probability after softmax). */
data class Recognition(val index: Int, val label: String, val score: Float)

/** From a model's output vector to the top-k labels shown over the preview. */
object Scores {
    /**
     * Numerically stable softmax. Our models output logits, not probabilities: XNNPACK takes no int8 SOFTMAX
     * (DESIGN.md), so the softmax runs here instead of in the graph.
     */
    fun softmax(logits: FloatArray): FloatArray {
        require(logits.isNotEmpty()) { "softmax of an empty vector" }
        var max = logits[0]
        for (v in logits) if (v > max) max = v
        val out = FloatArray(logits.size)
        var sum = 0.0
        for (i in logits.indices) {
            val e = Math.exp((logits[i] - max).toDouble())
            out[i] = e.toFloat()
            sum += e
        }
        for (i in out.indices) out[i] = (out[i] / sum).toFloat()
        return out
    }

    /** The `k` highest scores, best first; ties keep the lower index first (deterministic, like numpy argsort). */
    fun topK(scores: FloatArray, labels: List<String>, k: Int): List<Recognition> {
        require(labels.size == scores.size) { "${labels.size} labels for ${scores.size} scores" }
        require(k > 0) { "k must be positive, got $k" }
        val order = scores.indices.sortedWith(Comparator { a, b ->
            val byScore = scores[b].compareTo(scores[a])
            if (byScore != 0) byScore else a.compareTo(b)
        })
        return order.take(minOf(k, scores.size)).map { Recognition(it, labels[it], scores[it]) }
    }
}

/** The mean of the last `window` values: the inference time shown on screen, steady enough to read. */
class MovingAverage(private val window: Int) {
    private val values = DoubleArray(window)
    private var count = 0
    private var next = 0
    private var sum = 0.0

    init {
        require(window > 0) { "window must be positive, got $window" }
    }

    /** Add one value and return the current average. */
    fun add(value: Double): Double {
        if (count == window) sum -= values[next] else count++
        values[next] = value
        sum += value
        next = (next + 1) % window
        return average
    }

    val average: Double get() = if (count == 0) 0.0 else sum / count

    fun reset() {
        count = 0
        next = 0
        sum = 0.0
    }
}

/** labels.txt: one label per line, line i naming output index i. */
object Labels {
    fun parse(text: String): List<String> {
        val lines = text.split("\n").map { it.trimEnd('\r') }.toMutableList()
        while (lines.isNotEmpty() && lines.last() == "") lines.removeAt(lines.size - 1)
        require(lines.isNotEmpty()) { "labels.txt is empty" }
        return lines
    }
}
