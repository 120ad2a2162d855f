package org.mobilecnn.demo.logic

import org.junit.Assert.assertEquals
import org.junit.Assert.assertTrue
import org.junit.Test

class FrameClockTest {
    @Test
    fun timestampsStrictlyIncrease() {
        val clock = FrameClock()
        assertEquals(100L, clock.stamp(100))
        assertEquals(101L, clock.stamp(100))  // same millisecond
        assertEquals(102L, clock.stamp(99))   // a clock that stepped back
        assertEquals(200L, clock.stamp(200))
    }

    @Test
    fun centerSquareOfLandscapeAndPortraitFrames() {
        assertEquals(NormalizedRect(0.125f, 0f, 0.875f, 1f), CenterSquare.of(640, 480))
        assertEquals(NormalizedRect(0f, 0.125f, 1f, 0.875f), CenterSquare.of(480, 640))
        assertEquals(NormalizedRect(0f, 0f, 1f, 1f), CenterSquare.of(224, 224))
    }

    @Test
    fun centerSquareStaysInsideTheImage() {
        for (width in 1..50) for (height in 1..50) {
            val rect = CenterSquare.of(width, height)
            assertTrue("$width x $height: $rect", rect.left >= 0f && rect.top >= 0f && rect.right <= 1f &&
                rect.bottom <= 1f && rect.left < rect.right && rect.top < rect.bottom)
            // Square in pixels.
            assertEquals((rect.right - rect.left) * width, (rect.bottom - rect.top) * height, 1e-3f)
        }
    }

    @Test(expected = IllegalArgumentException::class)
    fun emptyFramesAreRejected() {
        CenterSquare.of(0, 10)
    }
}
