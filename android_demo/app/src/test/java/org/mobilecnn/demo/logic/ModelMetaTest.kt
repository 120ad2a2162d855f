package org.mobilecnn.demo.logic

import org.junit.Assert.assertArrayEquals
import org.junit.Assert.assertEquals
import org.junit.Assert.assertFalse
import org.junit.Assert.assertNull
import org.junit.Assert.assertTrue
import org.junit.Assert.fail
import org.junit.Test

/** model_meta.json as export/meta.py writes it (schema version 1). */
fun metaJson(
    inputDtype: String = "int8",
    inputQuantization: String = """{"scale": 0.0078125, "zero_point": -1}""",
    outputShape: String = "[1, 3]",
    labels: String = """["tench", "church", "golf_ball"]""",
    extra: String = ""
): String = """
{
  "schema_version": 1,
  "created_by": "mobile-cnn export.meta",
  "model_name": "mobilenet_v3_small",
  "input": {"shape": [1, 4, 2, 3], "dtype": "$inputDtype", "quantization": $inputQuantization},
  "output": {"shape": $outputShape, "dtype": "int8", "quantization": {"scale": 0.25, "zero_point": 5}, "kind": "logits"},
  "normalization": {"mean": [127.5, 127.5, 127.5], "std": [127.5, 127.5, 127.5], "pixel_range": [0, 255]},
  "labels": $labels$extra
}
"""

class ModelMetaTest {
    private fun expectError(text: String, fragment: String) {
        try {
            ModelMeta.parse(text)
            fail("accepted a bad model_meta.json; expected an error about '$fragment'")
        } catch (error: ModelMetaException) {
            assertTrue("'${error.message}' should mention '$fragment'", error.message!!.contains(fragment))
        }
    }

    @Test
    fun readsEverythingTheAppNeeds() {
        val meta = ModelMeta.parse(metaJson(extra = """, "model_file": "model_int8.tflite", "accuracy": {"top1": 0.9}"""))
        assertEquals(listOf(1, 4, 2, 3), meta.input.shape)
        assertEquals(4, meta.inputHeight)
        assertEquals(2, meta.inputWidth)
        assertEquals(TensorType.INT8, meta.input.type)
        assertEquals(Quantization(0.0078125f, -1), meta.input.quantization)
        assertEquals(Quantization(0.25f, 5), meta.output.quantization)
        assertEquals(3, meta.numClasses)
        assertTrue(meta.outputIsLogits)
        assertArrayEquals(floatArrayOf(127.5f, 127.5f, 127.5f), meta.normalization.mean, 0f)
        assertEquals(listOf("tench", "church", "golf_ball"), meta.labels)
        assertEquals("mobilenet_v3_small", meta.modelName)
    }

    @Test
    fun float32InputHasNoQuantization() {
        val meta = ModelMeta.parse(metaJson(inputDtype = "float32", inputQuantization = "null"))
        assertEquals(TensorType.FLOAT32, meta.input.type)
        assertNull(meta.input.quantization)
    }

    @Test
    fun scalarMeanAndStdApplyToAllChannels() {
        val text = metaJson().replace(
            """"mean": [127.5, 127.5, 127.5], "std": [127.5, 127.5, 127.5]""", """"mean": 0, "std": 255"""
        )
        val meta = ModelMeta.parse(text)
        assertArrayEquals(floatArrayOf(255f, 255f, 255f), meta.normalization.std, 0f)
    }

    @Test
    fun rejectsWhatTheAppCannotRun() {
        expectError(metaJson(labels = """["a", "b"]"""), "2 labels but the model outputs 3 classes")
        expectError(metaJson(inputDtype = "float16"), "Unsupported tensor dtype 'float16'")
        expectError(metaJson(inputQuantization = "null"), "input is int8 but has no quantization")
        expectError(metaJson(inputDtype = "float32"), "input is float32 but has quantization")
        expectError(metaJson(inputQuantization = """{"scale": 0, "zero_point": 0}"""), "scale must be > 0")
        expectError(metaJson(outputShape = "[3]"), "output shape must be [1, classes]")
        expectError(metaJson().replace("\"schema_version\": 1", "\"schema_version\": 2"), "schema_version 2")
        expectError(metaJson().replace("[1, 4, 2, 3]", "[1, 4, 2, 1]"), "input shape must be [1, height, width, 3]")
        expectError(metaJson().replace("\"pixel_range\": [0, 255]", "\"pixel_range\": [0, 1]"), "pixel_range must be [0, 255]")
        expectError(metaJson().replace("\"labels\"", "\"names\""), "labels must be a JSON array")
        expectError("{", "not valid JSON")
        expectError("[]", "model_meta.json must be a JSON object")
    }

    @Test
    fun labelsTxtMustMatchTheMeta() {
        val meta = ModelMeta.parse(metaJson())
        meta.checkLabels(listOf("tench", "church", "golf_ball"))
        try {
            meta.checkLabels(listOf("tench", "parachute", "golf_ball"))
            fail("accepted labels.txt that disagrees with model_meta.json")
        } catch (error: ModelMetaException) {
            assertTrue(error.message!!.contains("at line 2"))
        }
        try {
            meta.checkLabels(listOf("tench", "church"))
            fail("accepted a short labels.txt")
        } catch (error: ModelMetaException) {
            assertTrue(error.message!!.contains("at line 3"))
        }
    }

    @Test
    fun probabilitiesOutputIsNotSoftmaxedAgain() {
        val meta = ModelMeta.parse(metaJson().replace("\"kind\": \"logits\"", "\"kind\": \"probabilities\""))
        assertFalse(meta.outputIsLogits)
    }
}
