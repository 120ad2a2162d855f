package org.mobilecnn.demo.logic

import org.junit.Assert.assertArrayEquals
import org.junit.Assert.assertEquals
import org.junit.Test

class ImageOpsTest {
    /** A w x h image whose pixel (x, y) has red = x, green = y, blue = 7. */
    private fun coordinates(w: Int, h: Int): RgbImage {
        val pixels = IntArray(w * h)
        for (y in 0 until h) for (x in 0 until w) pixels[y * w + x] = RgbImage.rgb(x, y, 7)
        return RgbImage(w, h, pixels)
    }

    private fun where(image: RgbImage, x: Int, y: Int): Pair<Int, Int> {
        val p = image.pixel(x, y)
        return Pair(RgbImage.red(p), RgbImage.green(p))
    }

    @Test
    fun rotate90ClockwiseMovesTopLeftToTopRight() {
        val image = coordinates(4, 3)
        val rotated = ImageOps.rotate(image, 90)
        assertEquals(3, rotated.width)
        assertEquals(4, rotated.height)
        assertEquals(Pair(0, 0), where(rotated, 2, 0))  // old top-left is now top-right
        assertEquals(Pair(0, 2), where(rotated, 0, 0))  // old bottom-left is now top-left
        assertEquals(Pair(3, 2), where(rotated, 0, 3))  // old bottom-right is now bottom-left
    }

    @Test
    fun rotationsComposeToIdentity() {
        val image = coordinates(5, 3)
        assertArrayEquals(image.argb, ImageOps.rotate(ImageOps.rotate(image, 90), 270).argb)
        assertArrayEquals(image.argb, ImageOps.rotate(ImageOps.rotate(image, 180), 180).argb)
        assertArrayEquals(ImageOps.rotate(image, 270).argb,
            ImageOps.rotate(ImageOps.rotate(ImageOps.rotate(image, 90), 90), 90).argb)
        assertEquals(Pair(4, 2), where(ImageOps.rotate(image, 180), 0, 0))
        assertEquals(Pair(4, 0), where(ImageOps.rotate(image, 270), 0, 0))
    }

    @Test(expected = IllegalArgumentException::class)
    fun rejectsOddRotation() {
        ImageOps.rotate(coordinates(2, 2), 45)
    }

    @Test
    fun centerCropKeepsTheModelAspectRatio() {
        assertEquals(CropRect(80, 0, 480, 480), ImageOps.centerCrop(640, 480, 1, 1))
        assertEquals(CropRect(0, 80, 480, 480), ImageOps.centerCrop(480, 640, 224, 224))
        assertEquals(CropRect(0, 0, 100, 100), ImageOps.centerCrop(100, 100, 1, 1))
        assertEquals(CropRect(0, 15, 100, 50), ImageOps.centerCrop(100, 80, 2, 1))
    }

    @Test
    fun resizeAtTheSameSizeIsACopy() {
        val image = coordinates(6, 4)
        val same = ImageOps.cropAndResize(image, CropRect(0, 0, 6, 4), 6, 4)
        assertArrayEquals(image.argb, same.argb)
    }

    @Test
    fun cropWithoutScalingCutsTheRightWindow() {
        val image = coordinates(8, 6)
        val cropped = ImageOps.cropAndResize(image, CropRect(2, 1, 4, 3), 4, 3)
        assertEquals(Pair(2, 1), where(cropped, 0, 0))
        assertEquals(Pair(5, 3), where(cropped, 3, 2))
    }

    @Test
    fun halvingAveragesPixelPairs() {
        // Pixel centers: output x=0 samples input x=0.5, the mean of columns 0 and 1 (tf.image.resize bilinear).
        val pixels = intArrayOf(RgbImage.rgb(0, 0, 0), RgbImage.rgb(100, 0, 0), RgbImage.rgb(200, 0, 0), RgbImage.rgb(250, 0, 0))
        val image = RgbImage(4, 1, pixels)
        val half = ImageOps.cropAndResize(image, CropRect(0, 0, 4, 1), 2, 1)
        assertEquals(50, RgbImage.red(half.pixel(0, 0)))
        assertEquals(225, RgbImage.red(half.pixel(1, 0)))
    }

    @Test
    fun upscalingInterpolatesAndClampsAtEdges() {
        val image = RgbImage(2, 1, intArrayOf(RgbImage.rgb(0, 0, 0), RgbImage.rgb(200, 0, 0)))
        val wide = ImageOps.cropAndResize(image, CropRect(0, 0, 2, 1), 4, 1)
        // centers map to -0.25 (clamped to 0), 0.25, 0.75, 1.25 (clamped to 1)
        assertEquals(listOf(0, 50, 150, 200), (0 until 4).map { RgbImage.red(wide.pixel(it, 0)) })
    }
}
