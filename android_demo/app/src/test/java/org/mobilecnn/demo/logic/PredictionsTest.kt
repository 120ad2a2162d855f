package org.mobilecnn.demo.logic

import org.junit.Assert.assertEquals
import org.junit.Test

class PredictionsTest {
    private val predictions = listOf(
        Prediction(0, "tench", "", 0.05f),
        Prediction(1, "church", "Kirche", 0.70f),
        Prediction(2, "golf ball", "", 0.20f),
        Prediction(3, "", "", 0.05f)
    )

    @Test
    fun topThreeBestFirstAsPercentages() {
        assertEquals(listOf("1. Kirche  70.0%", "2. golf ball  20.0%", "3. tench  5.0%"),
            ResultText.categories(predictions, 3))
    }

    @Test
    fun tiesKeepTheLowerIndexFirstAndMissingLabelsShowTheIndex() {
        val lines = ResultText.categories(predictions.reversed(), 4)
        assertEquals("3. tench  5.0%", lines[2])
        assertEquals("4. class 3  5.0%", lines[3])
    }

    @Test
    fun scoresOutsideZeroToOneAreShownAsNumbers() {
        val logits = listOf(Prediction(0, "a", "", 3.25f), Prediction(1, "b", "", -1.5f))
        assertEquals(listOf("1. a  3.250", "2. b  -1.500"), ResultText.categories(logits, 3))
    }

    @Test
    fun overlayEndsWithTheInferenceTime() {
        assertEquals("1. Kirche  70.0%\n12.3 ms per frame (average of last 30)",
            ResultText.overlay(predictions, 1, 12.34, 30))
        assertEquals("(no category)\n0.0 ms per frame (average of last 0)", ResultText.overlay(emptyList(), 3, 0.0, 0))
    }

    @Test(expected = IllegalArgumentException::class)
    fun kMustBePositive() {
        ResultText.categories(predictions, 0)
    }

    @Test
    fun movingAverageKeepsTheLastWindow() {
        val average = MovingAverage(3)
        assertEquals(0.0, average.average, 0.0)
        assertEquals(10.0, average.add(10.0), 1e-9)
        assertEquals(15.0, average.add(20.0), 1e-9)
        assertEquals(20.0, average.add(30.0), 1e-9)
        assertEquals(30.0, average.add(40.0), 1e-9)  // 10 dropped
        assertEquals(3, average.count)
        average.reset()
        assertEquals(5.0, average.add(5.0), 1e-9)
        assertEquals(1, average.count)
    }
}
