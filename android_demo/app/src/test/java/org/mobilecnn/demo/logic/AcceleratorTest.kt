package org.mobilecnn.demo.logic

import org.junit.Assert.assertEquals
import org.junit.Assert.assertNull
import org.junit.Assert.assertTrue
import org.junit.Assert.fail
import org.junit.Test

class AcceleratorTest {
    @Test
    fun gpuThatOpensIsUsedWithoutANote() {
        val tried = ArrayList<Accelerator>()
        val opened = AcceleratorFallback.open(Accelerator.GPU) { tried.add(it); "classifier on $it" }
        assertEquals(listOf(Accelerator.GPU), tried)
        assertEquals(Accelerator.GPU, opened.accelerator)
        assertEquals("classifier on GPU", opened.value)
        assertNull(opened.note)
    }

    @Test
    fun aFailingGpuFallsBackToTheCpuAndSaysWhy() {
        val tried = ArrayList<Accelerator>()
        val opened = AcceleratorFallback.open(Accelerator.GPU) {
            tried.add(it)
            if (it == Accelerator.GPU) throw IllegalStateException("OpenCL library not loaded\nstack detail")
            "cpu classifier"
        }
        assertEquals(listOf(Accelerator.GPU, Accelerator.CPU), tried)
        assertEquals(Accelerator.CPU, opened.accelerator)
        assertEquals("GPU unavailable (OpenCL library not loaded); running on CPU", opened.note)
    }

    @Test
    fun aFailingCpuHasNoFallback() {
        val tried = ArrayList<Accelerator>()
        try {
            AcceleratorFallback.open<String>(Accelerator.CPU) { tried.add(it); throw RuntimeException("bad model") }
            fail("opened a classifier that threw")
        } catch (error: NoAcceleratorException) {
            assertEquals("The model could not be opened on CPU: bad model", error.message)
        }
        assertEquals(listOf(Accelerator.CPU), tried)
    }

    @Test
    fun whenBothFailTheFirstErrorIsReported() {
        try {
            AcceleratorFallback.open<String>(Accelerator.GPU) { throw RuntimeException("failed on $it") }
            fail("opened a classifier that threw")
        } catch (error: NoAcceleratorException) {
            assertTrue(error.message!!.endsWith("failed on GPU"))
        }
    }

    @Test
    fun fallbackOrderAndSavedNames() {
        assertEquals(Accelerator.CPU, AcceleratorFallback.next(Accelerator.GPU))
        assertNull(AcceleratorFallback.next(Accelerator.CPU))
        assertEquals(Accelerator.GPU, Accelerator.fromName("GPU"))
        assertEquals(Accelerator.CPU, Accelerator.fromName("NNAPI"))
        assertEquals(Accelerator.CPU, Accelerator.fromName(null))
        assertEquals("GPU unavailable (RuntimeException); running on CPU",
            AcceleratorFallback.fallbackNote(Accelerator.GPU, Accelerator.CPU, RuntimeException()))
    }
}
