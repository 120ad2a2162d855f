package org.mobilecnn.demo

import android.content.Context
import android.graphics.RectF
import android.os.SystemClock
import androidx.camera.core.ImageProxy
import com.google.mediapipe.framework.image.BitmapImageBuilder
import com.google.mediapipe.tasks.core.BaseOptions
import com.google.mediapipe.tasks.core.Delegate
import com.google.mediapipe.tasks.vision.core.ImageProcessingOptions
import com.google.mediapipe.tasks.vision.core.RunningMode
import com.google.mediapipe.tasks.vision.imageclassifier.ImageClassifier
import com.google.mediapipe.tasks.vision.imageclassifier.ImageClassifierResult
import org.mobilecnn.demo.logic.Accelerator
import org.mobilecnn.demo.logic.CenterSquare
import org.mobilecnn.demo.logic.FrameClock
import org.mobilecnn.demo.logic.Prediction

/**
 * MediaPipe Tasks' ImageClassifier in LIVE_STREAM mode on one packaged model. MediaPipe reads the model's TFLite
 * Model Metadata (input size, normalization, labels) and does the resizing, normalization, (de)quantization and
 * top-k itself; this class only hands it camera frames and turns its result into platform-free Predictions.
 * Create, use and close it on one thread: the GPU delegate must run on the thread that created it.
 */
class LiveClassifier private constructor(
    private val classifier: ImageClassifier,
    val model: String,
    val accelerator: Accelerator
) : AutoCloseable {
    private val clock = FrameClock()

    /** Send one camera frame; the result arrives on the listener given to `open`, on a MediaPipe thread. */
    fun classify(frame: ImageProxy) {
        val timestamp = clock.stamp(SystemClock.uptimeMillis())
        val rotation = frame.imageInfo.rotationDegrees
        val bitmap = frame.use { it.toBitmap() }  // CameraX hands RGBA_8888 frames: an ARGB_8888 Bitmap
        val square = CenterSquare.of(bitmap.width, bitmap.height)
        val options = ImageProcessingOptions.builder()
            // The region is in the un-rotated frame; MediaPipe crops it first, then rotates it upright.
            .setRegionOfInterest(RectF(square.left, square.top, square.right, square.bottom))
            .setRotationDegrees(rotation)
            .build()
        classifier.classifyAsync(BitmapImageBuilder(bitmap).build(), options, timestamp)
    }

    override fun close() = classifier.close()

    companion object {
        const val MAX_RESULTS = 3

        /**
         * Open `model` (an asset file name) on `accelerator`. Throws (IllegalStateException, MediaPipeException) when
         * the model has no usable metadata or the delegate cannot run it; AcceleratorFallback decides what next.
         */
        fun open(
            context: Context,
            model: String,
            accelerator: Accelerator,
            onResult: (predictions: List<Prediction>, latencyMillis: Long) -> Unit,
            onError: (RuntimeException) -> Unit
        ): LiveClassifier {
            val base = BaseOptions.builder()
                .setModelAssetPath(model)
                .setDelegate(if (accelerator == Accelerator.GPU) Delegate.GPU else Delegate.CPU)
                .build()
            val options = ImageClassifier.ImageClassifierOptions.builder()
                .setBaseOptions(base)
                .setRunningMode(RunningMode.LIVE_STREAM)
                .setMaxResults(MAX_RESULTS)
                .setResultListener { result: ImageClassifierResult, _ ->
                    // From the frame's timestamp to its result: MediaPipe's preprocessing and the model itself.
                    val latency = SystemClock.uptimeMillis() - result.timestampMs()
                    onResult(predictions(result), latency)
                }
                .setErrorListener { error -> onError(error) }
                .build()
            return LiveClassifier(ImageClassifier.createFromOptions(context, options), model, accelerator)
        }

        /** The first (only) classification head's categories, as MediaPipe ranked them. */
        fun predictions(result: ImageClassifierResult): List<Prediction> {
            val heads = result.classificationResult().classifications()
            if (heads.isEmpty()) return emptyList()
            return heads[0].categories().map {
                Prediction(it.index(), it.categoryName() ?: "", it.displayName() ?: "", it.score())
            }
        }
    }
}
