package org.mobilecnn.demo.logic

import java.nio.ByteBuffer
import java.nio.ByteOrder

/** The element types our models' input and output tensors use (model_meta.json's dtype names). */
enum class TensorType(val jsonName: String, val bytesPerElement: Int, val minValue: Int, val maxValue: Int) {
    FLOAT32("float32", 4, 0, 0),
    INT8("int8", 1, -128, 127),
    UINT8("uint8", 1, 0, 255);

    val isQuantized: Boolean get() = this != FLOAT32

    companion object {
        fun fromJsonName(name: String): TensorType =
            values().firstOrNull { it.jsonName == name }
                ?: throw IllegalArgumentException("Unsupported tensor dtype '$name'; the app takes float32, int8 or uint8")
    }
}

/** Affine quantization of a tensor: real = scale * (quantized - zeroPoint). */
data class Quantization(val scale: Float, val zeroPoint: Int) {
    init {
        require(scale > 0f && !scale.isNaN() && !scale.isInfinite()) { "Quantization scale must be positive, got $scale" }
    }
}

/** Per-channel input normalization on 0..255 RGB values: normalized = (value - mean) / std. */
class Normalization(val mean: FloatArray, val std: FloatArray) {
    init {
        require(mean.size == 3 && std.size == 3) { "Normalization needs 3 means and 3 stds (RGB)" }
        require(std.all { it > 0f }) { "Normalization std must be positive, got ${std.toList()}" }
    }

    override fun toString(): String = "Normalization(mean=${mean.toList()}, std=${std.toList()})"
}

/** Writes an RGB image into a model input buffer (NHWC, batch 1, RGB order) and reads model outputs back. */
object TensorCodec {
    /** Round half away from zero, as TFLite's reference quantize kernel does (std::round). */
    fun roundHalfAwayFromZero(value: Float): Int =
        if (value >= 0f) Math.floor(value + 0.5).toInt() else -Math.floor(-value + 0.5).toInt()

    /** Quantize one real value to `type`'s integer range. */
    fun quantize(value: Float, quantization: Quantization, type: TensorType): Int {
        require(type.isQuantized) { "quantize() needs an integer type, got $type" }
        val q = roundHalfAwayFromZero(value / quantization.scale) + quantization.zeroPoint
        return q.coerceIn(type.minValue, type.maxValue)
    }

    /** A direct, native-order buffer sized for `elements` values of `type` (what the LiteRT Interpreter takes). */
    fun allocate(type: TensorType, elements: Int): ByteBuffer =
        ByteBuffer.allocateDirect(elements * type.bytesPerElement).order(ByteOrder.nativeOrder())

    /**
     * Normalize `image` and write it into `buffer` as `type` (quantized with `quantization` for int8/uint8).
     * The image must already be at the model's input size.
     */
    fun encodeImage(
        image: RgbImage,
        normalization: Normalization,
        type: TensorType,
        quantization: Quantization?,
        buffer: ByteBuffer
    ) {
        require(!type.isQuantized || quantization != null) { "A $type input needs quantization parameters" }
        val needed = image.width * image.height * 3 * type.bytesPerElement
        require(buffer.capacity() == needed) { "Input buffer holds ${buffer.capacity()} bytes, the image needs $needed" }
        buffer.rewind()
        val mean = normalization.mean
        val std = normalization.std
        for (pixel in image.argb) {
            val channels = intArrayOf(RgbImage.red(pixel), RgbImage.green(pixel), RgbImage.blue(pixel))
            for (c in 0 until 3) {
                val normalized = (channels[c] - mean[c]) / std[c]
                when (type) {
                    TensorType.FLOAT32 -> buffer.putFloat(normalized)
                    TensorType.INT8, TensorType.UINT8 ->
                        buffer.put(quantize(normalized, quantization!!, type).toByte())
                }
            }
        }
        buffer.rewind()
    }

    /** Read `elements` values of `type` from `buffer` as real numbers (dequantized for int8/uint8). */
    fun decode(buffer: ByteBuffer, type: TensorType, quantization: Quantization?, elements: Int): FloatArray {
        require(!type.isQuantized || quantization != null) { "A $type output needs quantization parameters" }
        val needed = elements * type.bytesPerElement
        require(buffer.capacity() >= needed) { "Output buffer holds ${buffer.capacity()} bytes, $needed needed" }
        buffer.rewind()
        val out = FloatArray(elements)
        for (i in 0 until elements) {
            out[i] = when (type) {
                TensorType.FLOAT32 -> buffer.getFloat()
                TensorType.INT8 -> quantization!!.scale * (buffer.get().toInt() - quantization.zeroPoint)
                TensorType.UINT8 -> quantization!!.scale * ((buffer.get().toInt() and 0xFF) - quantization.zeroPoint)
            }
        }
        buffer.rewind()
        return out
    }
}
