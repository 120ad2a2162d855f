package org.mobilecnn.demo.logic

/**
 * Timestamps for MediaPipe's LIVE_STREAM mode, which rejects a frame whose timestamp is not strictly greater than
 * the previous one's; two camera frames can arrive within the same millisecond, so a tie is moved one ms on.
 */
class FrameClock {
    private var last = Long.MIN_VALUE

    /** A strictly increasing timestamp in ms, equal to `nowMillis` unless that would not increase. */
    fun stamp(nowMillis: Long): Long {
        last = if (last == Long.MIN_VALUE || nowMillis > last) nowMillis else last + 1
        return last
    }
}

/** A region of interest in normalized image coordinates (MediaPipe's ImageProcessingOptions takes a RectF of these). */
data class NormalizedRect(val left: Float, val top: Float, val right: Float, val bottom: Float)

/**
 * MediaPipe's ImageClassifier stretches the region of interest to the model's input size without keeping the
 * aspect ratio, and the pipeline's models take square inputs: the app asks for the centered square of each
 * frame, so the model sees the middle of the preview undistorted. Rotation does not change which square that is.
 * The far edge is clamped to 1: MediaPipe refuses a region that float rounding put past the image.
 */
object CenterSquare {
    fun of(width: Int, height: Int): NormalizedRect {
        require(width > 0 && height > 0) { "Frame size must be positive, got ${width}x$height" }
        return if (width >= height) {
            val side = height.toFloat() / width
            val left = (1f - side) / 2f
            NormalizedRect(left, 0f, minOf(1f, left + side), 1f)
        } else {
            val side = width.toFloat() / height
            val top = (1f - side) / 2f
            NormalizedRect(0f, top, 1f, minOf(1f, top + side))
        }
    }
}
