package org.mobilecnn.demo.logic

import org.junit.Assert.assertArrayEquals
import org.junit.Assert.assertEquals
import org.junit.Test

class ScoresTest {
    @Test
    fun softmaxSumsToOneAndIsShiftInvariant() {
        val p = Scores.softmax(floatArrayOf(1f, 2f, 3f))
        assertEquals(1f, p.sum(), 1e-6f)
        assertArrayEquals(floatArrayOf(0.09003057f, 0.24472847f, 0.66524096f), p, 1e-6f)
        assertArrayEquals(p, Scores.softmax(floatArrayOf(1001f, 1002f, 1003f)), 1e-6f)
    }

    @Test
    fun softmaxOfHugeLogitsDoesNotOverflow() {
        val p = Scores.softmax(floatArrayOf(1e30f, 0f))
        assertArrayEquals(floatArrayOf(1f, 0f), p, 0f)
    }

    @Test
    fun topKIsSortedAndBreaksTiesByIndex() {
        val labels = listOf("a", "b", "c", "d")
        val top = Scores.topK(floatArrayOf(0.1f, 0.4f, 0.4f, 0.1f), labels, 3)
        assertEquals(listOf(1, 2, 0), top.map { it.index })
        assertEquals(listOf("b", "c", "a"), top.map { it.label })
        assertEquals(2, Scores.topK(floatArrayOf(1f, 2f), listOf("x", "y"), 3).size)
    }

    @Test(expected = IllegalArgumentException::class)
    fun topKNeedsOneLabelPerScore() {
        Scores.topK(floatArrayOf(1f, 2f), listOf("only one"), 1)
    }

    @Test
    fun movingAverageKeepsTheLastWindow() {
        val average = MovingAverage(3)
        assertEquals(0.0, average.average, 0.0)
        assertEquals(10.0, average.add(10.0), 1e-9)
        assertEquals(15.0, average.add(20.0), 1e-9)
        assertEquals(20.0, average.add(30.0), 1e-9)
        assertEquals(30.0, average.add(40.0), 1e-9)  // 10 dropped
        average.reset()
        assertEquals(5.0, average.add(5.0), 1e-9)
    }

    @Test
    fun labelsOnePerLineIgnoringTrailingBlankLines() {
        assertEquals(listOf("tench", "church", "golf ball"), Labels.parse("tench\r\nchurch\ngolf ball\n\n"))
    }

    @Test(expected = IllegalArgumentException::class)
    fun emptyLabelsAreRejected() {
        Labels.parse("\n\n")
    }
}
