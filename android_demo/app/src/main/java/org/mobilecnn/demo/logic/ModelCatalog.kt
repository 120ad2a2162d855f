package org.mobilecnn.demo.logic

/**
 * The models the app can swap between: every `.tflite` file packaged into the APK's assets by
 * `python -m export.android`. Each carries its own TFLite Model Metadata (normalization, labels), so a file name
 * is all the app needs to know about a model.
 */
object ModelCatalog {
    const val MODEL_SUFFIX = ".tflite"

    /** The model files among the asset root's entries, sorted by name so the list is stable across builds. */
    fun models(assetNames: List<String>): List<String> =
        assetNames.filter { it.endsWith(MODEL_SUFFIX, ignoreCase = true) && it.length > MODEL_SUFFIX.length }
            .distinct()
            .sorted()

    /**
     * The model to open: `preferred` (the user's last choice) if it is still packaged, else the first one; null when
     * no model is packaged.
     */
    fun choose(models: List<String>, preferred: String?): String? =
        if (preferred != null && preferred in models) preferred else models.firstOrNull()

    /** What the model picker shows: the file name without its suffix. */
    fun title(model: String): String =
        if (model.endsWith(MODEL_SUFFIX, ignoreCase = true)) model.dropLast(MODEL_SUFFIX.length) else model

    /** The message shown when the APK holds no model, naming the command that packages one. */
    const val NO_MODEL_MESSAGE =
        "No .tflite model in the app's assets: package one with python -m export.android --run_dir RUN, then rebuild"
}
