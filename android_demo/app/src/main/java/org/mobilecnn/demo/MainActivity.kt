package org.mobilecnn.demo

import android.Manifest
import android.content.pm.PackageManager
import android.os.Build
import android.os.Bundle
import android.view.Surface
import android.widget.RadioButton
import android.widget.RadioGroup
import android.widget.SeekBar
import android.widget.TextView
import androidx.activity.ComponentActivity
import androidx.activity.result.contract.ActivityResultContracts
import androidx.camera.core.CameraSelector
import androidx.camera.core.ImageAnalysis
import androidx.camera.core.ImageProxy
import androidx.camera.core.Preview
import androidx.camera.lifecycle.ProcessCameraProvider
import androidx.camera.view.PreviewView
import androidx.core.content.ContextCompat
import org.mobilecnn.demo.logic.Accelerator
import org.mobilecnn.demo.logic.ClassificationResult
import org.mobilecnn.demo.logic.Classifier
import org.mobilecnn.demo.logic.MovingAverage
import org.mobilecnn.demo.logic.RgbImage
import java.util.Locale
import java.util.concurrent.ExecutorService
import java.util.concurrent.Executors

/**
 * Camera preview with the packaged model's top-3 labels and its inference time over it. The UI thread only
 * draws; loading the model, building the interpreter and every inference run on one analysis thread.
 */
class MainActivity : ComponentActivity() {
    private lateinit var previewView: PreviewView
    private lateinit var resultsView: TextView
    private lateinit var statusView: TextView
    private lateinit var acceleratorGroup: RadioGroup
    private lateinit var threadsBar: SeekBar
    private lateinit var threadsLabel: TextView

    // LiteRT interpreters are not thread-safe: everything below this line is touched on analysisExecutor only.
    private val analysisExecutor: ExecutorService = Executors.newSingleThreadExecutor()
    private var modelAssets: ModelAssets? = null
    private var engine: LiteRtEngine? = null
    private var classifier: Classifier? = null
    private var pixels = IntArray(0)
    private val latency = MovingAverage(LATENCY_WINDOW)

    @Volatile
    private var accelerator = Accelerator.CPU

    @Volatile
    private var threads = DEFAULT_THREADS

    private val requestCameraPermission =
        registerForActivityResult(ActivityResultContracts.RequestPermission()) { granted ->
            if (granted) startCamera() else showStatus(getString(R.string.camera_permission_denied))
        }

    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        setContentView(R.layout.activity_main)
        previewView = findViewById(R.id.preview)
        resultsView = findViewById(R.id.results)
        statusView = findViewById(R.id.status)
        acceleratorGroup = findViewById(R.id.accelerators)
        threadsBar = findViewById(R.id.threads)
        threadsLabel = findViewById(R.id.threads_label)

        savedInstanceState?.let {
            accelerator = Accelerator.values()[it.getInt(KEY_ACCELERATOR, Accelerator.CPU.ordinal)]
            threads = it.getInt(KEY_THREADS, DEFAULT_THREADS)
        }
        setUpControls()
        analysisExecutor.execute { loadModel() }

        if (ContextCompat.checkSelfPermission(this, Manifest.permission.CAMERA) == PackageManager.PERMISSION_GRANTED) {
            startCamera()
        } else {
            requestCameraPermission.launch(Manifest.permission.CAMERA)
        }
    }

    override fun onSaveInstanceState(outState: Bundle) {
        super.onSaveInstanceState(outState)
        outState.putInt(KEY_ACCELERATOR, accelerator.ordinal)
        outState.putInt(KEY_THREADS, threads)
    }

    override fun onDestroy() {
        super.onDestroy()
        analysisExecutor.execute {
            engine?.close()
            engine = null
            classifier = null
        }
        analysisExecutor.shutdown()
    }

    private fun setUpControls() {
        for (choice in Accelerator.values()) {
            val button = RadioButton(this)
            button.id = BUTTON_ID_BASE + choice.ordinal
            button.text = choice.title
            button.setTextColor(getColor(R.color.overlay_text))
            // NNAPI needs Android 8.1; it is deprecated from Android 15 (its title says so) but still selectable.
            button.isEnabled = choice != Accelerator.NNAPI || Build.VERSION.SDK_INT >= Build.VERSION_CODES.O_MR1
            acceleratorGroup.addView(button)
        }
        acceleratorGroup.check(BUTTON_ID_BASE + accelerator.ordinal)
        acceleratorGroup.setOnCheckedChangeListener { _, checkedId ->
            accelerator = Accelerator.values()[checkedId - BUTTON_ID_BASE]
            analysisExecutor.execute { rebuildEngine() }
        }

        val maxThreads = Runtime.getRuntime().availableProcessors().coerceIn(1, MAX_THREADS)
        threads = threads.coerceIn(1, maxThreads)
        threadsBar.max = maxThreads - 1
        threadsBar.progress = threads - 1
        threadsLabel.text = getString(R.string.threads, threads)
        threadsBar.setOnSeekBarChangeListener(object : SeekBar.OnSeekBarChangeListener {
            override fun onProgressChanged(bar: SeekBar, progress: Int, fromUser: Boolean) {
                threadsLabel.text = getString(R.string.threads, progress + 1)
            }

            override fun onStartTrackingTouch(bar: SeekBar) = Unit

            override fun onStopTrackingTouch(bar: SeekBar) {
                threads = bar.progress + 1
                analysisExecutor.execute { rebuildEngine() }
            }
        })
    }

    /** Analysis thread: read model.tflite, labels.txt and model_meta.json from the assets. */
    private fun loadModel() {
        try {
            modelAssets = ModelAssets.load(assets)
            rebuildEngine()
        } catch (error: Exception) {
            showStatus(error.message ?: error.toString())
        }
    }

    /** Analysis thread: a new interpreter for the chosen accelerator and thread count. */
    private fun rebuildEngine() {
        val loaded = modelAssets ?: return
        engine?.close()
        engine = null
        classifier = null
        latency.reset()
        val chosen = accelerator
        val threadCount = threads
        try {
            val newEngine = LiteRtEngine(loaded.model, loaded.meta, chosen, threadCount)
            engine = newEngine
            classifier = Classifier(loaded.meta, newEngine)
            val name = loaded.meta.modelName ?: ModelAssets.MODEL
            showStatus(getString(R.string.running, name, chosen.title, threadCount))
        } catch (error: AcceleratorUnavailableException) {
            showStatus(getString(R.string.accelerator_unavailable, error.message))
        } catch (error: Exception) {
            showStatus(error.message ?: error.toString())
        }
    }

    private fun startCamera() {
        val providerFuture = ProcessCameraProvider.getInstance(this)
        providerFuture.addListener({
            val provider = providerFuture.get()
            // The activity is recreated on rotation, so the display's rotation now is the one to target; each
            // frame's rotationDegrees then says how to turn it upright before it is classified.
            val rotation = previewView.display?.rotation ?: Surface.ROTATION_0
            val preview = Preview.Builder().setTargetRotation(rotation).build()
            preview.setSurfaceProvider(previewView.surfaceProvider)
            val analysis = ImageAnalysis.Builder()
                .setTargetRotation(rotation)
                .setBackpressureStrategy(ImageAnalysis.STRATEGY_KEEP_ONLY_LATEST)
                .setOutputImageFormat(ImageAnalysis.OUTPUT_IMAGE_FORMAT_RGBA_8888)
                .build()
            analysis.setAnalyzer(analysisExecutor) { image -> analyze(image) }
            provider.unbindAll()
            provider.bindToLifecycle(this, CameraSelector.DEFAULT_BACK_CAMERA, preview, analysis)
        }, ContextCompat.getMainExecutor(this))
    }

    /** Analysis thread: one camera frame through the classifier; the UI gets the text to show. */
    private fun analyze(image: ImageProxy) {
        image.use {
            val current = classifier ?: return
            val bitmap = it.toBitmap()
            val size = bitmap.width * bitmap.height
            if (pixels.size != size) pixels = IntArray(size)
            bitmap.getPixels(pixels, 0, bitmap.width, 0, 0, bitmap.width, bitmap.height)
            val frame = RgbImage(bitmap.width, bitmap.height, pixels)
            bitmap.recycle()
            val result = current.classify(frame, it.imageInfo.rotationDegrees, TOP_K)
            val text = describe(result, latency.add(result.inferenceMillis))
            runOnUiThread { resultsView.text = text }
        }
    }

    private fun describe(result: ClassificationResult, averageMillis: Double): String {
        val lines = result.top.mapIndexed { rank, recognition ->
            String.format(Locale.US, "%d. %s  %.1f%%", rank + 1, recognition.label, 100f * recognition.score)
        }
        val timing = String.format(Locale.US, "%.1f ms (average of last %d)", averageMillis, LATENCY_WINDOW)
        return (lines + timing).joinToString("\n")
    }

    private fun showStatus(message: String) {
        runOnUiThread { statusView.text = message }
    }

    private companion object {
        const val TOP_K = 3
        const val LATENCY_WINDOW = 30
        const val DEFAULT_THREADS = 4
        const val MAX_THREADS = 8
        const val BUTTON_ID_BASE = 1000
        const val KEY_ACCELERATOR = "accelerator"
        const val KEY_THREADS = "threads"
    }
}
