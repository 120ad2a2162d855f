package org.mobilecnn.demo.logic

import org.junit.Assert.assertArrayEquals
import org.junit.Assert.assertEquals
import org.junit.Assert.assertNull
import org.junit.Assert.assertTrue
import org.junit.Assume.assumeTrue
import org.junit.Test
import java.io.File
import java.nio.ByteBuffer
import javax.imageio.ImageIO

/** Plays back the output tensor the host interpreter produced, and records the input tensor the app built. */
class PlaybackEngine(private val hostOutput: ByteArray) : InferenceEngine {
    var input: ByteArray? = null

    override fun run(input: ByteBuffer, output: ByteBuffer) {
        input.rewind()
        val bytes = ByteArray(input.remaining())
        input.get(bytes)
        this.input = bytes
        output.rewind()
        output.put(hostOutput)
        output.rewind()
    }
}

/**
 * The app's preprocessing and postprocessing against the Python pipeline on real files: a model_meta.json written by
 * export/meta.py, labels.txt, and the sample image + sample_expected.json written by export/android.py, plus the
 * host interpreter's raw input and output tensors for that image (input_tensor.bin, output_tensor.bin).
 * tests/android/test_kotlin_unit_tests.py generates them and passes -Dmobilecnn.hostFixtures=DIR (one
 * subdirectory per model); without the property (e.g. under Gradle) the test is skipped.
 */
class HostParityTest {
    @Test
    fun appTensorsMatchTheHostInterpreterOnPipelineFiles() {
        val root = System.getProperty("mobilecnn.hostFixtures")
        assumeTrue("no -Dmobilecnn.hostFixtures: run through tests/android/test_kotlin_unit_tests.py", root != null)
        val cases = File(root!!).listFiles { file -> file.isDirectory }!!.sortedBy { it.name }
        assertTrue("no fixture directories in $root", cases.isNotEmpty())
        for (case in cases) check(case)
    }

    private fun check(dir: File) {
        val meta = ModelMeta.parse(File(dir, "model_meta.json").readText())
        val labels = Labels.parse(File(dir, "labels.txt").readText())
        meta.checkLabels(labels)
        val expected = ExpectedPrediction.parse(File(dir, "sample_expected.json").readText())
        val png = ImageIO.read(File(dir, expected.image))
        val image = RgbImage(png.width, png.height, png.getRGB(0, 0, png.width, png.height, null, 0, png.width))

        val engine = PlaybackEngine(File(dir, "output_tensor.bin").readBytes())
        val result = Classifier(meta, engine).classifyModelInput(image, k = 3)

        assertArrayEquals("${dir.name}: the app's input tensor differs from the host's",
            File(dir, "input_tensor.bin").readBytes(), engine.input)
        assertNull("${dir.name}", expected.mismatch(result.logits, labels))
        assertArrayEquals(expected.logits, result.logits, 1e-6f)
        assertEquals(expected.top1Label, result.top[0].label)
        assertEquals(1f, Scores.softmax(result.logits).sum(), 1e-5f)
    }
}
