package org.mobilecnn.demo.logic

import org.junit.Assert.assertEquals
import org.junit.Assert.assertNull
import org.junit.Assert.assertTrue
import org.junit.Assert.fail
import org.junit.Test

class JsonTest {
    @Test
    fun parsesNestedValues() {
        val value = Json.parse(
            """ {"a": [1, -2.5, 3e2, 0], "b": {"c": true, "d": false, "e": null}, "s": "x\"y\\n\u00e9\n"} """
        ) as Map<*, *>
        assertEquals(listOf(1.0, -2.5, 300.0, 0.0), value["a"])
        val b = value["b"] as Map<*, *>
        assertEquals(true, b["c"])
        assertEquals(false, b["d"])
        assertTrue(b.containsKey("e"))
        assertNull(b["e"])
        assertEquals("x\"y\\n\u00e9\n", value["s"])
    }

    @Test
    fun keepsKeyOrderAndEmptyContainers() {
        val value = Json.parse("""{"z": {}, "y": [], "x": ""}""") as Map<*, *>
        assertEquals(listOf("z", "y", "x"), value.keys.toList())
        assertEquals(emptyMap<String, Any?>(), value["z"])
        assertEquals(emptyList<Any?>(), value["y"])
    }

    @Test
    fun rejectsMalformedText() {
        val bad = listOf("", "{", "[1,]", "{\"a\" 1}", "01", "1.", "tru", "\"abc", "{} x", "[1 2]", "-", "{'a': 1}")
        for (text in bad) {
            try {
                Json.parse(text)
                fail("accepted malformed JSON: $text")
            } catch (expected: JsonException) {
                assertTrue(expected.message!!.startsWith("Invalid JSON at offset"))
            }
        }
    }
}
