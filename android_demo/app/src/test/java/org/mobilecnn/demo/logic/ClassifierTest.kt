package org.mobilecnn.demo.logic

import org.junit.Assert.assertArrayEquals
import org.junit.Assert.assertEquals
import org.junit.Assert.assertNotNull
import org.junit.Assert.assertNull
import org.junit.Assert.assertTrue
import org.junit.Test
import java.nio.ByteBuffer

/**
 * A stand-in for the LiteRT Interpreter on the meta of ModelMetaTest (input [1, 4, 2, 3] int8, output 3 int8
 * logits): logit c = mean of input channel c, so the reddest image wins class 0, the greenest class 1, the
 * bluest class 2. It works on the quantized bytes, as a real int8 model does.
 */
class ChannelMeanEngine(private val meta: ModelMeta) : InferenceEngine {
    var lastInput: ByteArray? = null

    override fun run(input: ByteBuffer, output: ByteBuffer) {
        input.rewind()
        val bytes = ByteArray(input.remaining())
        input.get(bytes)
        lastInput = bytes
        val inQ = meta.input.quantization!!
        val sums = DoubleArray(3)
        for (i in bytes.indices) sums[i % 3] += (inQ.scale * (bytes[i] - inQ.zeroPoint)).toDouble()
        val pixels = bytes.size / 3
        output.rewind()
        for (c in 0 until 3) output.put(TensorCodec.quantize((sums[c] / pixels).toFloat(), meta.output.quantization!!, TensorType.INT8).toByte())
        output.rewind()
    }
}

class ClassifierTest {
    private val meta = ModelMeta.parse(metaJson())

    private fun solid(w: Int, h: Int, pixel: Int) = RgbImage(w, h, IntArray(w * h) { pixel })

    @Test
    fun classifiesByColourThroughTheWholePipeline() {
        val classifier = Classifier(meta, ChannelMeanEngine(meta))
        val red = classifier.classify(solid(640, 480, RgbImage.rgb(250, 10, 10)), 90)
        assertEquals(listOf("tench", "church", "golf_ball"), red.top.map { it.label })
        assertEquals(1f, red.top.map { it.score }.sum(), 1e-5f)
        assertTrue(red.top[0].score > red.top[1].score)
        assertEquals("golf_ball", classifier.classify(solid(33, 17, RgbImage.rgb(0, 0, 255)), 0).top[0].label)
        assertEquals("church", classifier.classify(solid(2, 4, RgbImage.rgb(0, 200, 0)), 270, k = 1).top.single().label)
    }

    @Test
    fun theFrameIsRotatedUprightThenCenterCropped() {
        // A 4x8 model input window (portrait 1:2). A landscape frame 8 wide x 4 tall, rotated 90 degrees clockwise,
        // becomes 4 wide x 8 tall: exactly the model's grid, so every pixel is kept, in rotated order.
        val frame = RgbImage(8, 4, IntArray(32) { RgbImage.rgb(it, 0, 0) })
        val classifier = Classifier(meta, ChannelMeanEngine(meta))
        val input = classifier.toModelInput(frame, 90)
        assertEquals(2, input.width)
        assertEquals(4, input.height)
        // Rotated image is 4 wide x 8 tall; the 1:2 center crop keeps all of it; resize halves each side.
        val rotated = ImageOps.rotate(frame, 90)
        assertArrayEquals(ImageOps.cropAndResize(rotated, CropRect(0, 0, 4, 8), 2, 4).argb, input.argb)
    }

    @Test
    fun inputBytesAreTheQuantizedNormalizedPixels() {
        val engine = ChannelMeanEngine(meta)
        val classifier = Classifier(meta, engine)
        classifier.classifyModelInput(solid(2, 4, RgbImage.rgb(0, 255, 128)))
        // (0 - 127.5) / 127.5 = -1 -> -128 - 1 clamps to -128; 1 -> 128 - 1 = 127; 0.5/127.5/(1/128) = 0.502 -> 1 - 1 = 0
        assertArrayEquals(byteArrayOf(-128, 127, 0), engine.lastInput!!.copyOfRange(0, 3))
        assertEquals(24, engine.lastInput!!.size)
    }

    @Test
    fun logitsAreDequantizedOutputs() {
        val classifier = Classifier(meta, ChannelMeanEngine(meta))
        val result = classifier.classifyModelInput(solid(2, 4, RgbImage.rgb(255, 0, 128)))
        // Channel means 1 (input 127 -> 1.0), -0.99 (clamped -128), 0; the output quantization (0.25, 5) rounds them.
        assertArrayEquals(floatArrayOf(1f, -1f, 0f), result.logits, 0f)
        assertTrue(result.inferenceMillis >= 0.0)
    }

    @Test
    fun expectedPredictionAcceptsAgreementAndExplainsDisagreement() {
        val expected = ExpectedPrediction.parse(
            """{"image": "sample_image.png", "top1_index": 1, "top1_label": "church",
               "logits": [-1.0, 1.0, 0.0], "logit_tolerance": 0.25, "model_file": "model_int8.tflite"}"""
        )
        assertEquals("sample_image.png", expected.image)
        assertNull(expected.mismatch(floatArrayOf(-1f, 1f, 0.25f), meta.labels))
        val wrongTop = expected.mismatch(floatArrayOf(2f, 1f, 0f), meta.labels)
        assertNotNull(wrongTop)
        assertTrue(wrongTop!!.contains("'tench'"))
        val drift = expected.mismatch(floatArrayOf(-1f, 1f, 0.5f), meta.labels)
        assertTrue(drift!!.contains("golf_ball"))
        assertNotNull(expected.mismatch(floatArrayOf(-1f, 1f), meta.labels))
    }
}
