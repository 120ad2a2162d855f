package org.mobilecnn.demo.logic

import java.nio.ByteBuffer

/** Runs the model once: reads `input`, fills `output`. The app's implementation wraps the LiteRT Interpreter. */
interface InferenceEngine {
    fun run(input: ByteBuffer, output: ByteBuffer)
}

/** Where the LiteRT Interpreter runs the model; the UI offers each. */
enum class Accelerator(val title: String) {
    /** XNNPACK on the CPU cores, with a chosen thread count: what pipeline.bench measures by default. */
    CPU("CPU (XNNPACK)"),
    GPU("GPU delegate"),
    /** NNAPI is deprecated from Android 15; kept for comparison on older devices. */
    NNAPI("NNAPI (deprecated from Android 15)")
}

/** One classified frame: the top labels and how long the model itself took. */
class ClassificationResult(val top: List<Recognition>, val logits: FloatArray, val inferenceMillis: Double)

/**
 * Camera frame -> top-k labels, the same steps for every model: rotate upright, center crop to the model's aspect
 * ratio, bilinear resize, normalize, quantize (per model_meta.json), run, dequantize, softmax, top-k.
 * Not thread-safe: the app calls it from its one analysis thread.
 */
class Classifier(val meta: ModelMeta, private val engine: InferenceEngine) {
    private val inputBuffer = TensorCodec.allocate(meta.input.type, meta.input.elementCount)
    private val outputBuffer = TensorCodec.allocate(meta.output.type, meta.output.elementCount)

    /** Rotate, crop and resize a frame to the model's input grid. */
    fun toModelInput(frame: RgbImage, rotationDegrees: Int): RgbImage {
        val upright = ImageOps.rotate(frame, rotationDegrees)
        val crop = ImageOps.centerCrop(upright.width, upright.height, meta.inputWidth, meta.inputHeight)
        return ImageOps.cropAndResize(upright, crop, meta.inputWidth, meta.inputHeight)
    }

    /** Classify one camera frame (`rotationDegrees` clockwise makes it upright); returns the best `k` labels. */
    fun classify(frame: RgbImage, rotationDegrees: Int, k: Int = 3): ClassificationResult =
        classifyModelInput(toModelInput(frame, rotationDegrees), k)

    /** Classify an image already at the model's input size (no crop or resize: the instrumented test's path). */
    fun classifyModelInput(image: RgbImage, k: Int = 3): ClassificationResult {
        require(image.width == meta.inputWidth && image.height == meta.inputHeight) {
            "Expected a ${meta.inputWidth}x${meta.inputHeight} image, got ${image.width}x${image.height}"
        }
        TensorCodec.encodeImage(image, meta.normalization, meta.input.type, meta.input.quantization, inputBuffer)
        outputBuffer.rewind()
        val start = System.nanoTime()
        engine.run(inputBuffer, outputBuffer)
        val millis = (System.nanoTime() - start) / 1e6
        val logits = TensorCodec.decode(outputBuffer, meta.output.type, meta.output.quantization, meta.numClasses)
        val scores = if (meta.outputIsLogits) Scores.softmax(logits) else logits
        return ClassificationResult(Scores.topK(scores, meta.labels, k), logits, millis)
    }
}
