package org.mobilecnn.demo.logic

import org.junit.Assert.assertEquals
import org.junit.Assert.assertNull
import org.junit.Test

class ModelCatalogTest {
    @Test
    fun onlyTfliteFilesSortedByName() {
        val assets = listOf("model_meta.json", "mobilenet_v3_small_int8.tflite", "labels.txt", "images",
            "mobilenet_v2_float32.TFLITE", ".tflite", "mobilenet_v3_small_int8.tflite")
        assertEquals(listOf("mobilenet_v2_float32.TFLITE", "mobilenet_v3_small_int8.tflite"), ModelCatalog.models(assets))
        assertEquals(emptyList<String>(), ModelCatalog.models(listOf("labels.txt")))
    }

    @Test
    fun theSavedChoiceWinsWhileItIsStillPackaged() {
        val models = listOf("a.tflite", "b.tflite")
        assertEquals("b.tflite", ModelCatalog.choose(models, "b.tflite"))
        assertEquals("a.tflite", ModelCatalog.choose(models, "removed.tflite"))
        assertEquals("a.tflite", ModelCatalog.choose(models, null))
        assertNull(ModelCatalog.choose(emptyList(), "a.tflite"))
    }

    @Test
    fun titleDropsTheSuffix() {
        assertEquals("mobilenet_v3_small_int8", ModelCatalog.title("mobilenet_v3_small_int8.tflite"))
        assertEquals("notes", ModelCatalog.title("notes"))
    }
}
