package org.mobilecnn.demo

import android.graphics.Bitmap
import android.graphics.BitmapFactory
import androidx.test.ext.junit.runners.AndroidJUnit4
import androidx.test.platform.app.InstrumentationRegistry
import com.google.mediapipe.framework.image.BitmapImageBuilder
import com.google.mediapipe.tasks.core.BaseOptions
import com.google.mediapipe.tasks.core.Delegate
import com.google.mediapipe.tasks.vision.core.RunningMode
import com.google.mediapipe.tasks.vision.imageclassifier.ImageClassifier
import org.json.JSONObject
import org.junit.Assert.assertEquals
import org.junit.Assert.assertTrue
import org.junit.Assert.fail
import org.junit.Test
import org.junit.runner.RunWith
import java.io.FileNotFoundException

/**
 * On a device: MediaPipe's ImageClassifier, reading the packaged model's own metadata as the app does, must give
 * the bundled test image the top category (and, within `score_tolerance`, its score) that the host LiteRT
 * interpreter gave the same pixels. `python -m export.android` writes the image and sample_expected.json into
 * app/src/androidTest/assets/. Run with `./gradlew connectedDebugAndroidTest` (BUILD.md).
 */
@RunWith(AndroidJUnit4::class)
class BundledImageClassificationTest {
    @Test
    fun bundledImageGetsThePipelinesTopCategory() {
        val instrumentation = InstrumentationRegistry.getInstrumentation()
        val testAssets = instrumentation.context.assets
        val expected = try {
            JSONObject(testAssets.open(EXPECTED).use { it.readBytes().toString(Charsets.UTF_8) })
        } catch (missing: FileNotFoundException) {
            fail("androidTest assets have no $EXPECTED: package a model with python -m export.android --run_dir RUN")
            return
        }
        val options = BitmapFactory.Options().apply {
            inPreferredConfig = Bitmap.Config.ARGB_8888
            inScaled = false
        }
        val image = expected.getString("image")
        val bitmap = testAssets.open(image).use { BitmapFactory.decodeStream(it, null, options) }
            ?: throw AssertionError("$image is not a decodable image")

        // CPU: the host expectation came from the CPU interpreter. The image is at the model's input size, so
        // MediaPipe's resize is the identity and both sides see the same pixels.
        val classifierOptions = ImageClassifier.ImageClassifierOptions.builder()
            .setBaseOptions(BaseOptions.builder().setModelAssetPath(expected.getString("model_asset"))
                .setDelegate(Delegate.CPU).build())
            .setRunningMode(RunningMode.IMAGE)
            .setMaxResults(1)
            .build()
        ImageClassifier.createFromOptions(instrumentation.targetContext, classifierOptions).use { classifier ->
            val result = classifier.classify(BitmapImageBuilder(bitmap).build())
            val top = result.classificationResult().classifications()[0].categories()[0]
            assertEquals("top-1 category on the device vs the pipeline's host interpreter",
                expected.getString("top1_label"), top.categoryName())
            val hostScore = expected.getDouble("top1_score")
            val tolerance = expected.getDouble("score_tolerance")
            assertTrue("top-1 score ${top.score()} on the device, $hostScore on the host (tolerance $tolerance)",
                Math.abs(top.score() - hostScore) <= tolerance)
        }
    }

    private companion object {
        const val EXPECTED = "sample_expected.json"
    }
}
