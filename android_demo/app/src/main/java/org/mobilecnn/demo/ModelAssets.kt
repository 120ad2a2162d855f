package org.mobilecnn.demo

import android.content.res.AssetManager
import org.mobilecnn.demo.logic.Labels
import org.mobilecnn.demo.logic.ModelMeta
import java.io.FileInputStream
import java.io.FileNotFoundException
import java.nio.MappedByteBuffer
import java.nio.channels.FileChannel

/** The three files `python -m export.android` packages into app/src/main/assets/. */
class ModelAssets(val model: MappedByteBuffer, val meta: ModelMeta, val labels: List<String>) {
    companion object {
        const val MODEL = "model.tflite"
        const val LABELS = "labels.txt"
        const val META = "model_meta.json"

        /** Load and cross-check the packaged model; the exception message tells the user how to fix a problem. */
        fun load(assets: AssetManager): ModelAssets {
            val meta = ModelMeta.parse(readText(assets, META))
            val labels = Labels.parse(readText(assets, LABELS))
            meta.checkLabels(labels)
            return ModelAssets(mapModel(assets), meta, labels)
        }

        /** Memory-map model.tflite out of the APK; this is why app/build.gradle.kts stores .tflite uncompressed. */
        private fun mapModel(assets: AssetManager): MappedByteBuffer {
            val descriptor = try {
                assets.openFd(MODEL)
            } catch (error: FileNotFoundException) {
                throw IllegalStateException(missing(MODEL) + " (or it was stored compressed: keep noCompress += \"tflite\")")
            }
            return descriptor.use {
                FileInputStream(it.fileDescriptor).channel.use { channel ->
                    channel.map(FileChannel.MapMode.READ_ONLY, it.startOffset, it.declaredLength)
                }
            }
        }

        private fun readText(assets: AssetManager, name: String): String = try {
            assets.open(name).use { it.readBytes().toString(Charsets.UTF_8) }
        } catch (error: FileNotFoundException) {
            throw IllegalStateException(missing(name))
        }

        private fun missing(name: String) =
            "assets/$name is missing: package a model with python -m export.android --run_dir RUN, then rebuild the app"
    }
}
