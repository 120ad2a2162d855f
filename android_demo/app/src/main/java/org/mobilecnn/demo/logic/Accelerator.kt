package org.mobilecnn.demo.logic

/** Where MediaPipe runs the model (its BaseOptions.Delegate); the UI offers each. */
enum class Accelerator(val title: String) {
    CPU("CPU"),
    GPU("GPU");

    companion object {
        /** The accelerator named `name` (a saved choice), or CPU for anything unknown. */
        fun fromName(name: String?): Accelerator = values().firstOrNull { it.name == name } ?: CPU
    }
}

/** A classifier opened on `accelerator`; `note` says why that is not the one the user asked for, if it is not. */
class Opened<T>(val value: T, val accelerator: Accelerator, val note: String?)

/** The GPU failed and so did the CPU fallback (or the CPU itself failed): nothing can run this model. */
class NoAcceleratorException(message: String, cause: Throwable?) : RuntimeException(message, cause)

/**
 * The GPU delegate is not available on every phone, and MediaPipe reports that only when the classifier is created
 * (or on its first frame); the app then falls back to the CPU and says so rather than showing nothing.
 */
object AcceleratorFallback {
    /** The accelerator to try after `failed` did not work, or null when there is none left. */
    fun next(failed: Accelerator): Accelerator? = when (failed) {
        Accelerator.GPU -> Accelerator.CPU
        Accelerator.CPU -> null
    }

    /** Open with `requested`, falling back along `next`; `open` throws when an accelerator cannot run the model. */
    fun <T> open(requested: Accelerator, open: (Accelerator) -> T): Opened<T> {
        var accelerator: Accelerator? = requested
        var firstError: RuntimeException? = null
        while (accelerator != null) {
            try {
                val value = open(accelerator)
                val note = firstError?.let { fallbackNote(requested, accelerator!!, it) }
                return Opened(value, accelerator, note)
            } catch (error: RuntimeException) {
                if (firstError == null) firstError = error
                accelerator = next(accelerator)
            }
        }
        throw NoAcceleratorException(
            "The model could not be opened on ${requested.title}: ${describe(firstError!!)}", firstError
        )
    }

    /** What the status line says after falling back from `requested` to `used`. */
    fun fallbackNote(requested: Accelerator, used: Accelerator, error: Throwable): String =
        "${requested.title} unavailable (${describe(error)}); running on ${used.title}"

    private fun describe(error: Throwable): String = error.message?.lineSequence()?.firstOrNull()?.trim()
        ?.takeIf { it.isNotEmpty() } ?: error.javaClass.simpleName
}
