package org.mobilecnn.demo.logic

import org.junit.Assert.assertArrayEquals
import org.junit.Assert.assertEquals
import org.junit.Test

class TensorCodecTest {
    private val image = RgbImage(2, 1, intArrayOf(RgbImage.rgb(0, 128, 255), RgbImage.rgb(255, 255, 255)))
    private val minusOneToOne = Normalization(floatArrayOf(127.5f, 127.5f, 127.5f), floatArrayOf(127.5f, 127.5f, 127.5f))

    @Test
    fun float32InputIsNormalizedRgbInNhwcOrder() {
        val buffer = TensorCodec.allocate(TensorType.FLOAT32, 6)
        TensorCodec.encodeImage(image, minusOneToOne, TensorType.FLOAT32, null, buffer)
        val values = FloatArray(6) { buffer.getFloat() }
        assertArrayEquals(floatArrayOf(-1f, 0.5f / 127.5f, 1f, 1f, 1f, 1f), values, 1e-6f)
    }

    @Test
    fun perChannelMeanAndStd() {
        val normalization = Normalization(floatArrayOf(0f, 128f, 255f), floatArrayOf(1f, 2f, 5f))
        val buffer = TensorCodec.allocate(TensorType.FLOAT32, 6)
        TensorCodec.encodeImage(image, normalization, TensorType.FLOAT32, null, buffer)
        val values = FloatArray(6) { buffer.getFloat() }
        assertArrayEquals(floatArrayOf(0f, 0f, 0f, 255f, 63.5f, 0f), values, 1e-6f)
    }

    @Test
    fun int8InputIsQuantizedAndClamped() {
        // scale 1/128, zero point -1: -1.0 -> -129 clamps to -128; 1.0 -> 127.
        val quantization = Quantization(1f / 128f, -1)
        val buffer = TensorCodec.allocate(TensorType.INT8, 6)
        TensorCodec.encodeImage(image, minusOneToOne, TensorType.INT8, quantization, buffer)
        val values = IntArray(6) { buffer.get().toInt() }
        assertArrayEquals(intArrayOf(-128, 0, 127, 127, 127, 127), values)
    }

    @Test
    fun uint8InputOfRawPixelsRoundTrips() {
        // Normalization (x - 128) / 128 with scale 1/128 and zero point 128: q equals the raw pixel.
        val normalization = Normalization(floatArrayOf(128f, 128f, 128f), floatArrayOf(128f, 128f, 128f))
        val quantization = Quantization(1f / 128f, 128)
        val buffer = TensorCodec.allocate(TensorType.UINT8, 6)
        TensorCodec.encodeImage(image, normalization, TensorType.UINT8, quantization, buffer)
        val values = IntArray(6) { buffer.get().toInt() and 0xFF }
        assertArrayEquals(intArrayOf(0, 128, 255, 255, 255, 255), values)
    }

    @Test
    fun roundingIsHalfAwayFromZero() {
        assertEquals(1, TensorCodec.roundHalfAwayFromZero(0.5f))
        assertEquals(-1, TensorCodec.roundHalfAwayFromZero(-0.5f))
        assertEquals(2, TensorCodec.roundHalfAwayFromZero(2.4f))
        assertEquals(-3, TensorCodec.roundHalfAwayFromZero(-2.5f))
    }

    @Test
    fun decodeDequantizesInt8AndUint8() {
        val q = Quantization(0.5f, 3)
        val int8 = TensorCodec.allocate(TensorType.INT8, 3)
        int8.put((-128).toByte()).put(3.toByte()).put(127.toByte())
        assertArrayEquals(floatArrayOf(-65.5f, 0f, 62f), TensorCodec.decode(int8, TensorType.INT8, q, 3), 0f)
        val uint8 = TensorCodec.allocate(TensorType.UINT8, 2)
        uint8.put(0.toByte()).put(255.toByte())
        assertArrayEquals(floatArrayOf(-1.5f, 126f), TensorCodec.decode(uint8, TensorType.UINT8, q, 2), 0f)
    }

    @Test
    fun decodeReadsFloat32() {
        val buffer = TensorCodec.allocate(TensorType.FLOAT32, 2)
        buffer.putFloat(1.25f).putFloat(-3f)
        assertArrayEquals(floatArrayOf(1.25f, -3f), TensorCodec.decode(buffer, TensorType.FLOAT32, null, 2), 0f)
    }

    @Test(expected = IllegalArgumentException::class)
    fun quantizedInputWithoutParametersIsRejected() {
        TensorCodec.encodeImage(image, minusOneToOne, TensorType.INT8, null, TensorCodec.allocate(TensorType.INT8, 6))
    }

    @Test(expected = IllegalArgumentException::class)
    fun wrongBufferSizeIsRejected() {
        TensorCodec.encodeImage(image, minusOneToOne, TensorType.FLOAT32, null, TensorCodec.allocate(TensorType.FLOAT32, 5))
    }

    @Test
    fun dtypeNamesMatchModelMeta() {
        assertEquals(TensorType.UINT8, TensorType.fromJsonName("uint8"))
        assertEquals(TensorType.INT8, TensorType.fromJsonName("int8"))
        assertEquals(TensorType.FLOAT32, TensorType.fromJsonName("float32"))
    }
}
