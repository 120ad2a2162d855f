package org.mobilecnn.demo

import android.os.Build
import org.mobilecnn.demo.logic.Accelerator
import org.mobilecnn.demo.logic.InferenceEngine
import org.mobilecnn.demo.logic.ModelMeta
import org.mobilecnn.demo.logic.Quantization
import org.mobilecnn.demo.logic.TensorMeta
import org.mobilecnn.demo.logic.TensorType
import org.tensorflow.lite.DataType
import org.tensorflow.lite.Delegate
import org.tensorflow.lite.Interpreter
import org.tensorflow.lite.Tensor
import org.tensorflow.lite.gpu.CompatibilityList
import org.tensorflow.lite.gpu.GpuDelegate
import org.tensorflow.lite.nnapi.NnApiDelegate
import java.nio.ByteBuffer

/** The chosen accelerator cannot run on this device (no supported GPU, NNAPI below Android 8.1, ...). */
class AcceleratorUnavailableException(message: String) : RuntimeException(message)

/**
 * The LiteRT Interpreter behind the app's pure-Kotlin Classifier. CPU runs XNNPACK with `threads` threads (the
 * setting pipeline.bench measures); GPU and NNAPI add a delegate. Create, use and close it on one thread.
 */
class LiteRtEngine(model: ByteBuffer, meta: ModelMeta, val accelerator: Accelerator, val threads: Int) :
    InferenceEngine, AutoCloseable {

    private val delegate: Delegate?
    private val interpreter: Interpreter

    init {
        // XNNPACK stays on for every choice: with a GPU or NNAPI delegate it runs the ops the delegate rejects.
        val options = Interpreter.Options().setNumThreads(threads).setUseXNNPACK(true)
        delegate = when (accelerator) {
            Accelerator.CPU -> null
            Accelerator.GPU -> {
                val compatibility = CompatibilityList()
                try {
                    if (!compatibility.isDelegateSupportedOnThisDevice) {
                        throw AcceleratorUnavailableException("The LiteRT GPU delegate does not support this device's GPU")
                    }
                    GpuDelegate(compatibility.bestOptionsForThisDevice)
                } finally {
                    compatibility.close()
                }
            }
            Accelerator.NNAPI -> {
                if (Build.VERSION.SDK_INT < Build.VERSION_CODES.O_MR1) {
                    throw AcceleratorUnavailableException("NNAPI needs Android 8.1 (API 27) or later")
                }
                @Suppress("DEPRECATION")
                NnApiDelegate()
            }
        }
        delegate?.let { options.addDelegate(it) }
        interpreter = try {
            Interpreter(model, options)
        } catch (error: RuntimeException) {
            (delegate as? AutoCloseable)?.close()
            throw AcceleratorUnavailableException("${accelerator.title} could not load the model: ${error.message}")
        }
        val problems = mismatches("input", interpreter.getInputTensor(0), meta.input) +
            mismatches("output", interpreter.getOutputTensor(0), meta.output)
        if (problems.isNotEmpty()) {
            close()
            throw IllegalStateException(
                "model.tflite disagrees with model_meta.json: ${problems.joinToString("; ")}. " +
                    "Package the app again with python -m export.android --run_dir RUN"
            )
        }
    }

    override fun run(input: ByteBuffer, output: ByteBuffer) {
        interpreter.run(input, output)
    }

    override fun close() {
        interpreter.close()
        (delegate as? AutoCloseable)?.close()
    }

    private fun mismatches(role: String, tensor: Tensor, expected: TensorMeta): List<String> {
        val problems = ArrayList<String>()
        val shape = tensor.shape().toList()
        if (shape != expected.shape) problems.add("$role shape ${expected.shape} in the meta, $shape in the model")
        val type = when (tensor.dataType()) {
            DataType.FLOAT32 -> TensorType.FLOAT32
            DataType.INT8 -> TensorType.INT8
            DataType.UINT8 -> TensorType.UINT8
            else -> null
        }
        if (type != expected.type) problems.add("$role dtype ${expected.type} in the meta, ${tensor.dataType()} in the model")
        if (type != null && type.isQuantized) {
            val params = tensor.quantizationParams()
            val actual = Quantization(params.scale, params.zeroPoint)
            val claimed = expected.quantization
            if (claimed == null || Math.abs(claimed.scale - actual.scale) > 1e-6f * actual.scale || claimed.zeroPoint != actual.zeroPoint) {
                problems.add("$role quantization $claimed in the meta, $actual in the model")
            }
        }
        return problems
    }
}
