package org.mobilecnn.demo

import android.Manifest
import android.content.pm.PackageManager
import android.os.Bundle
import android.view.Surface
import android.view.View
import android.widget.AdapterView
import android.widget.ArrayAdapter
import android.widget.RadioButton
import android.widget.RadioGroup
import android.widget.Spinner
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
import org.mobilecnn.demo.logic.AcceleratorFallback
import org.mobilecnn.demo.logic.ModelCatalog
import org.mobilecnn.demo.logic.MovingAverage
import org.mobilecnn.demo.logic.NoAcceleratorException
import org.mobilecnn.demo.logic.Prediction
import org.mobilecnn.demo.logic.ResultText
import java.util.concurrent.ExecutorService
import java.util.concurrent.Executors

/**
 * Camera preview with the chosen model's top-3 categories and its inference time over it, from MediaPipe's
 * ImageClassifier. The UI thread only draws; opening the classifier and sending it frames happen on one analysis
 * thread (the GPU delegate must be used on the thread that created it); results arrive on MediaPipe's thread.
 */
class MainActivity : ComponentActivity() {
    private lateinit var previewView: PreviewView
    private lateinit var resultsView: TextView
    private lateinit var statusView: TextView
    private lateinit var modelSpinner: Spinner
    private lateinit var acceleratorGroup: RadioGroup

    private val analysisExecutor: ExecutorService = Executors.newSingleThreadExecutor()
    private var models: List<String> = emptyList()

    // Touched on analysisExecutor only.
    private var classifier: LiveClassifier? = null

    // Results of a classifier that has since been replaced are dropped: each one carries the generation it came from.
    @Volatile
    private var generation = 0
    private val latency = MovingAverage(LATENCY_WINDOW)

    @Volatile
    private var model: String? = null

    @Volatile
    private var accelerator = Accelerator.CPU

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
        modelSpinner = findViewById(R.id.models)
        acceleratorGroup = findViewById(R.id.accelerators)

        models = ModelCatalog.models(assets.list("")?.toList() ?: emptyList())
        model = ModelCatalog.choose(models, savedInstanceState?.getString(KEY_MODEL))
        accelerator = Accelerator.fromName(savedInstanceState?.getString(KEY_ACCELERATOR))
        setUpControls()
        if (model == null) {
            showStatus(ModelCatalog.NO_MODEL_MESSAGE)
        } else {
            analysisExecutor.execute { reopen() }
        }

        if (ContextCompat.checkSelfPermission(this, Manifest.permission.CAMERA) == PackageManager.PERMISSION_GRANTED) {
            startCamera()
        } else {
            requestCameraPermission.launch(Manifest.permission.CAMERA)
        }
    }

    override fun onSaveInstanceState(outState: Bundle) {
        super.onSaveInstanceState(outState)
        outState.putString(KEY_MODEL, model)
        outState.putString(KEY_ACCELERATOR, accelerator.name)
    }

    override fun onDestroy() {
        super.onDestroy()
        generation++
        analysisExecutor.execute {
            classifier?.close()
            classifier = null
        }
        analysisExecutor.shutdown()
    }

    private fun setUpControls() {
        modelSpinner.adapter = ArrayAdapter(this, android.R.layout.simple_spinner_dropdown_item,
            models.map(ModelCatalog::title))
        model?.let { modelSpinner.setSelection(models.indexOf(it)) }
        modelSpinner.onItemSelectedListener = object : AdapterView.OnItemSelectedListener {
            override fun onItemSelected(parent: AdapterView<*>, view: View?, position: Int, id: Long) {
                if (models[position] == model) return
                model = models[position]
                analysisExecutor.execute { reopen() }
            }

            override fun onNothingSelected(parent: AdapterView<*>) = Unit
        }

        for (choice in Accelerator.values()) {
            val button = RadioButton(this)
            button.id = BUTTON_ID_BASE + choice.ordinal
            button.text = choice.title
            button.setTextColor(getColor(R.color.overlay_text))
            acceleratorGroup.addView(button)
        }
        acceleratorGroup.check(BUTTON_ID_BASE + accelerator.ordinal)
        acceleratorGroup.setOnCheckedChangeListener { _, checkedId ->
            accelerator = Accelerator.values()[checkedId - BUTTON_ID_BASE]
            analysisExecutor.execute { reopen() }
        }
    }

    /**
     * Analysis thread: a classifier for the chosen model on `requested`, falling back from GPU to CPU; `note` (why
     * this is not what the user chose) is shown instead of the usual status line.
     */
    private fun reopen(requested: Accelerator = accelerator, note: String? = null) {
        val chosen = model ?: return
        val current = ++generation
        classifier?.close()
        classifier = null
        synchronized(latency) { latency.reset() }
        try {
            val opened = AcceleratorFallback.open(requested) { choice ->
                LiveClassifier.open(this, chosen, choice,
                    onResult = { predictions, millis -> onResult(current, predictions, millis) },
                    onError = { error -> runOnAnalysisThread { onRuntimeError(current, error) } })
            }
            classifier = opened.value
            showStatus(note ?: opened.note
                ?: getString(R.string.running, ModelCatalog.title(chosen), opened.accelerator.title))
        } catch (error: NoAcceleratorException) {
            showStatus(error.message ?: error.toString())
        }
    }

    /**
     * Analysis thread: an error while running (e.g. the GPU delegate failing on its first frame) moves on to the
     * next accelerator; the user's choice stays selected, and the status line says what runs instead.
     */
    private fun onRuntimeError(fromGeneration: Int, error: RuntimeException) {
        val failed = classifier ?: return
        if (fromGeneration != generation) return
        val next = AcceleratorFallback.next(failed.accelerator)
        if (next == null) {
            classifier = null
            failed.close()
            showStatus(getString(R.string.classifier_error, error.message ?: error.toString()))
            return
        }
        reopen(next, AcceleratorFallback.fallbackNote(failed.accelerator, next, error))
    }

    private fun onResult(fromGeneration: Int, predictions: List<Prediction>, millis: Long) {
        if (fromGeneration != generation) return
        val text = synchronized(latency) {
            val average = latency.add(millis.toDouble())
            ResultText.overlay(predictions, LiveClassifier.MAX_RESULTS, average, latency.count)
        }
        runOnUiThread { resultsView.text = text }
    }

    private fun startCamera() {
        val providerFuture = ProcessCameraProvider.getInstance(this)
        providerFuture.addListener({
            val provider = providerFuture.get()
            // The activity is recreated on rotation, so the display's rotation now is the one to target; each
            // frame's rotationDegrees then tells MediaPipe how to turn it upright.
            val rotation = previewView.display?.rotation ?: Surface.ROTATION_0
            val preview = Preview.Builder().setTargetRotation(rotation).build()
            preview.setSurfaceProvider(previewView.surfaceProvider)
            val analysis = ImageAnalysis.Builder()
                .setTargetRotation(rotation)
                .setBackpressureStrategy(ImageAnalysis.STRATEGY_KEEP_ONLY_LATEST)
                .setOutputImageFormat(ImageAnalysis.OUTPUT_IMAGE_FORMAT_RGBA_8888)
                .build()
            analysis.setAnalyzer(analysisExecutor) { frame -> analyze(frame) }
            provider.unbindAll()
            provider.bindToLifecycle(this, CameraSelector.DEFAULT_BACK_CAMERA, preview, analysis)
        }, ContextCompat.getMainExecutor(this))
    }

    /** Analysis thread: hand the frame to MediaPipe (which closes nothing: LiveClassifier closes the frame). */
    private fun analyze(frame: ImageProxy) {
        val current = classifier
        if (current == null) {
            frame.close()
            return
        }
        try {
            current.classify(frame)
        } catch (error: RuntimeException) {
            onRuntimeError(generation, error)
        }
    }

    /** MediaPipe reports errors on its own thread; the classifier they concern lives on the analysis thread. */
    private fun runOnAnalysisThread(action: () -> Unit) {
        if (!analysisExecutor.isShutdown) analysisExecutor.execute(action)
    }

    private fun showStatus(message: String) {
        runOnUiThread { statusView.text = message }
    }

    private companion object {
        const val LATENCY_WINDOW = 30
        const val BUTTON_ID_BASE = 1000
        const val KEY_MODEL = "model"
        const val KEY_ACCELERATOR = "accelerator"
    }
}
