package org.mobilecnn.demo.logic

/**
 * An image as packed 0xAARRGGBB pixels, row-major: the layout of android.graphics.Bitmap.getPixels, kept in a
 * plain class so the preprocessing is testable on a JVM.
 */
class RgbImage(val width: Int, val height: Int, val argb: IntArray) {
    init {
        require(width > 0 && height > 0) { "Image size must be positive, got ${width}x$height" }
        require(argb.size == width * height) { "Expected ${width * height} pixels for ${width}x$height, got ${argb.size}" }
    }

    fun pixel(x: Int, y: Int): Int = argb[y * width + x]

    companion object {
        /** Pack 8-bit red, green and blue into one opaque ARGB pixel. */
        fun rgb(red: Int, green: Int, blue: Int): Int =
            (0xFF shl 24) or ((red and 0xFF) shl 16) or ((green and 0xFF) shl 8) or (blue and 0xFF)

        fun red(pixel: Int): Int = (pixel shr 16) and 0xFF
        fun green(pixel: Int): Int = (pixel shr 8) and 0xFF
        fun blue(pixel: Int): Int = pixel and 0xFF
    }
}

/** A rectangle inside an image, in pixels. */
data class CropRect(val left: Int, val top: Int, val width: Int, val height: Int)

/** Geometric steps from a camera frame to the model's input grid: rotate upright, center crop, resize. */
object ImageOps {
    /**
     * Rotate clockwise by `degrees` (0, 90, 180, 270): CameraX's ImageInfo.rotationDegrees is the clockwise
     * rotation that makes the frame upright, so passing it here gives the image the user sees.
     */
    fun rotate(image: RgbImage, degrees: Int): RgbImage {
        val w = image.width
        val h = image.height
        val src = image.argb
        return when (((degrees % 360) + 360) % 360) {
            0 -> image
            90 -> {
                val out = IntArray(w * h)
                // new (x, y) = old (y, h - 1 - x); the new image is h wide and w tall.
                for (y in 0 until w) for (x in 0 until h) out[y * h + x] = src[(h - 1 - x) * w + y]
                RgbImage(h, w, out)
            }
            180 -> {
                val out = IntArray(w * h)
                for (i in 0 until w * h) out[i] = src[w * h - 1 - i]
                RgbImage(w, h, out)
            }
            270 -> {
                val out = IntArray(w * h)
                // new (x, y) = old (w - 1 - y, x)
                for (y in 0 until w) for (x in 0 until h) out[y * h + x] = src[x * w + (w - 1 - y)]
                RgbImage(h, w, out)
            }
            else -> throw IllegalArgumentException("Rotation must be a multiple of 90 degrees, got $degrees")
        }
    }

    /** The largest centered rectangle with the aspect ratio `aspectWidth:aspectHeight` (the model's input). */
    fun centerCrop(width: Int, height: Int, aspectWidth: Int, aspectHeight: Int): CropRect {
        require(aspectWidth > 0 && aspectHeight > 0) { "Aspect ratio must be positive" }
        // Compare width/height with aspectWidth/aspectHeight without rounding: cross-multiply in Long.
        return if (width.toLong() * aspectHeight > height.toLong() * aspectWidth) {
            val cropWidth = maxOf(1, (height.toLong() * aspectWidth / aspectHeight).toInt())
            CropRect((width - cropWidth) / 2, 0, cropWidth, height)
        } else {
            val cropHeight = maxOf(1, (width.toLong() * aspectHeight / aspectWidth).toInt())
            CropRect(0, (height - cropHeight) / 2, width, cropHeight)
        }
    }

    /**
     * Bilinear resize of `crop` to `outWidth` x `outHeight`, sampling at pixel centers (the convention of
     * tf.image.resize(method="bilinear") without antialiasing), so a crop already at the output size is copied
     * unchanged.
     */
    fun cropAndResize(image: RgbImage, crop: CropRect, outWidth: Int, outHeight: Int): RgbImage {
        require(crop.left >= 0 && crop.top >= 0 && crop.width > 0 && crop.height > 0 &&
            crop.left + crop.width <= image.width && crop.top + crop.height <= image.height) {
            "Crop $crop lies outside the ${image.width}x${image.height} image"
        }
        require(outWidth > 0 && outHeight > 0) { "Output size must be positive" }
        val out = IntArray(outWidth * outHeight)
        val scaleX = crop.width.toFloat() / outWidth
        val scaleY = crop.height.toFloat() / outHeight
        for (oy in 0 until outHeight) {
            val sy = clamp((oy + 0.5f) * scaleY - 0.5f, 0f, (crop.height - 1).toFloat())
            val y0 = sy.toInt()
            val y1 = minOf(y0 + 1, crop.height - 1)
            val fy = sy - y0
            for (ox in 0 until outWidth) {
                val sx = clamp((ox + 0.5f) * scaleX - 0.5f, 0f, (crop.width - 1).toFloat())
                val x0 = sx.toInt()
                val x1 = minOf(x0 + 1, crop.width - 1)
                val fx = sx - x0
                val p00 = image.pixel(crop.left + x0, crop.top + y0)
                val p01 = image.pixel(crop.left + x1, crop.top + y0)
                val p10 = image.pixel(crop.left + x0, crop.top + y1)
                val p11 = image.pixel(crop.left + x1, crop.top + y1)
                out[oy * outWidth + ox] = RgbImage.rgb(
                    blend(RgbImage.red(p00), RgbImage.red(p01), RgbImage.red(p10), RgbImage.red(p11), fx, fy),
                    blend(RgbImage.green(p00), RgbImage.green(p01), RgbImage.green(p10), RgbImage.green(p11), fx, fy),
                    blend(RgbImage.blue(p00), RgbImage.blue(p01), RgbImage.blue(p10), RgbImage.blue(p11), fx, fy)
                )
            }
        }
        return RgbImage(outWidth, outHeight, out)
    }

    private fun blend(c00: Int, c01: Int, c10: Int, c11: Int, fx: Float, fy: Float): Int {
        val top = c00 + (c01 - c00) * fx
        val bottom = c10 + (c11 - c10) * fx
        return Math.round(top + (bottom - top) * fy).coerceIn(0, 255)
    }

    private fun clamp(value: Float, low: Float, high: Float): Float = if (value < low) low else if (value > high) high else value
}
