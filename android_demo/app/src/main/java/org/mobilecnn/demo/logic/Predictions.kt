package org.mobilecnn.demo.logic

import java.util.Locale

/** One category as MediaPipe returns it (Category: index, categoryName, displayName, score), free of Android. */
data class Prediction(val index: Int, val categoryName: String, val displayName: String, val score: Float) {
    /** The name to show: the metadata's display name, else its label, else the class index (a model without labels). */
    val label: String
        get() = when {
            displayName.isNotBlank() -> displayName
            categoryName.isNotBlank() -> categoryName
            else -> "class $index"
        }
}

/** The text over the camera preview: the top-k categories with their scores, and the inference time. */
object ResultText {
    /**
     * One line per category, best first. Scores in [0, 1] (a model whose metadata says it outputs probabilities)
     * are shown as percentages; anything else (logits) as plain numbers, so a model without a softmax is visible.
     */
    fun categories(predictions: List<Prediction>, k: Int): List<String> {
        require(k > 0) { "k must be positive, got $k" }
        val top = predictions.sortedWith(compareByDescending<Prediction> { it.score }.thenBy { it.index }).take(k)
        val probabilities = top.all { it.score in 0f..1f }
        return top.mapIndexed { rank, prediction ->
            val score = if (probabilities) String.format(Locale.US, "%.1f%%", 100f * prediction.score)
            else String.format(Locale.US, "%.3f", prediction.score)
            "${rank + 1}. ${prediction.label}  $score"
        }
    }

    /** The inference-time line: the average over the last frames, and how many. */
    fun latency(averageMillis: Double, frames: Int): String =
        String.format(Locale.US, "%.1f ms per frame (average of last %d)", averageMillis, frames)

    /** The whole overlay text. */
    fun overlay(predictions: List<Prediction>, k: Int, averageMillis: Double, frames: Int): String =
        (categories(predictions, k).ifEmpty { listOf("(no category)") } + latency(averageMillis, frames))
            .joinToString("\n")
}

/** The mean of the last `window` values: the inference time shown on screen, steady enough to read. */
class MovingAverage(private val window: Int) {
    private val values = DoubleArray(window)
    private var next = 0

    /** How many values the average is over (at most `window`). */
    var count = 0
        private set
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
