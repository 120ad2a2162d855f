package org.mobilecnn.demo

import android.graphics.Bitmap
import android.graphics.BitmapFactory
import androidx.test.ext.junit.runners.AndroidJUnit4
import androidx.test.platform.app.InstrumentationRegistry
import org.junit.Assert.assertNull
import org.junit.Assert.fail
import org.junit.Test
import org.junit.runner.RunWith
import org.mobilecnn.demo.logic.Accelerator
import org.mobilecnn.demo.logic.Classifier
import org.mobilecnn.demo.logic.ExpectedPrediction
import org.mobilecnn.demo.logic.RgbImage
import java.io.FileNotFoundException

/**
 * On a device: the packaged model, run by LiteRT exactly as the app runs it, must give the bundled test image the
 * top label (and, within one quantization step, the logits) that the pipeline's host LiteRT evaluation gave.
 * `python -m export.android` writes the image and sample_expected.json into app/src/androidTest/assets/.
 * Run with `./gradlew connectedDebugAndroidTest` (BUILD.md); the comparison itself is unit-tested on the JVM.
 */
@RunWith(AndroidJUnit4::class)
class BundledImageClassificationTest {
    @Test
    fun bundledImageGetsThePipelinesTopLabel() {
        val instrumentation = InstrumentationRegistry.getInstrumentation()
        val testAssets = instrumentation.context.assets
        val packaged = ModelAssets.load(instrumentation.targetContext.assets)
        val expected = try {
            ExpectedPrediction.parse(testAssets.open(EXPECTED).use { it.readBytes().toString(Charsets.UTF_8) })
        } catch (missing: FileNotFoundException) {
            fail("androidTest assets have no $EXPECTED: package a model with python -m export.android --run_dir RUN")
            return
        }
        val options = BitmapFactory.Options().apply {
            inPreferredConfig = Bitmap.Config.ARGB_8888
            inPremultiplied = false
            inScaled = false
        }
        val bitmap = testAssets.open(expected.image).use { BitmapFactory.decodeStream(it, null, options) }
            ?: throw AssertionError("${expected.image} is not a decodable image")
        val pixels = IntArray(bitmap.width * bitmap.height)
        bitmap.getPixels(pixels, 0, bitmap.width, 0, 0, bitmap.width, bitmap.height)

        // CPU/XNNPACK, one thread: the configuration the host evaluation used.
        LiteRtEngine(packaged.model, packaged.meta, Accelerator.CPU, 1).use { engine ->
            val result = Classifier(packaged.meta, engine).classifyModelInput(RgbImage(bitmap.width, bitmap.height, pixels))
            val problem = expected.mismatch(result.logits, packaged.labels)
            assertNull(problem, problem)
        }
    }

    private companion object {
        const val EXPECTED = "sample_expected.json"
    }
}
