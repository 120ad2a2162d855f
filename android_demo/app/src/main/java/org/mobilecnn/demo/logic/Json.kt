package org.mobilecnn.demo.logic

/** Malformed JSON text; the message names the character offset. */
class JsonException(message: String) : IllegalArgumentException(message)

/**
 * A minimal JSON reader (RFC 8259) for the app's one small asset, model_meta.json.
 *
 * Why not org.json: it is part of the Android framework, so code using it cannot be unit-tested on a plain JVM
 * (the android.jar stubs throw). Objects become Map<String, Any?> (insertion order kept), arrays List<Any?>,
 * numbers Double, plus String, Boolean and null.
 */
object Json {
    /** Parse one JSON value that fills the whole text (surrounding whitespace allowed). */
    fun parse(text: String): Any? {
        val reader = Reader(text)
        reader.skipWhitespace()
        val value = reader.readValue()
        reader.skipWhitespace()
        if (!reader.atEnd()) throw reader.error("unexpected text after the JSON value")
        return value
    }

    private class Reader(private val text: String) {
        private var position = 0

        fun atEnd(): Boolean = position >= text.length

        fun error(what: String): JsonException = JsonException("Invalid JSON at offset $position: $what")

        fun skipWhitespace() {
            while (position < text.length) {
                val c = text[position]
                if (c == ' ' || c == '\n' || c == '\r' || c == '\t') position++ else return
            }
        }

        fun readValue(): Any? {
            if (atEnd()) throw error("expected a value, found the end of the text")
            return when (text[position]) {
                '{' -> readObject()
                '[' -> readArray()
                '"' -> readString()
                't' -> readLiteral("true", true)
                'f' -> readLiteral("false", false)
                'n' -> readLiteral("null", null)
                else -> readNumber()
            }
        }

        private fun readLiteral(word: String, value: Any?): Any? {
            if (!text.startsWith(word, position)) throw error("expected '$word'")
            position += word.length
            return value
        }

        private fun expect(c: Char) {
            if (atEnd() || text[position] != c) throw error("expected '$c'")
            position++
        }

        private fun readObject(): Map<String, Any?> {
            expect('{')
            val result = LinkedHashMap<String, Any?>()
            skipWhitespace()
            if (!atEnd() && text[position] == '}') {
                position++
                return result
            }
            while (true) {
                skipWhitespace()
                if (atEnd() || text[position] != '"') throw error("expected a string key")
                val key = readString()
                skipWhitespace()
                expect(':')
                skipWhitespace()
                result[key] = readValue()
                skipWhitespace()
                if (atEnd()) throw error("unterminated object")
                when (text[position]) {
                    ',' -> position++
                    '}' -> {
                        position++
                        return result
                    }
                    else -> throw error("expected ',' or '}'")
                }
            }
        }

        private fun readArray(): List<Any?> {
            expect('[')
            val result = ArrayList<Any?>()
            skipWhitespace()
            if (!atEnd() && text[position] == ']') {
                position++
                return result
            }
            while (true) {
                skipWhitespace()
                result.add(readValue())
                skipWhitespace()
                if (atEnd()) throw error("unterminated array")
                when (text[position]) {
                    ',' -> position++
                    ']' -> {
                        position++
                        return result
                    }
                    else -> throw error("expected ',' or ']'")
                }
            }
        }

        private fun readString(): String {
            expect('"')
            val builder = StringBuilder()
            while (true) {
                if (atEnd()) throw error("unterminated string")
                val c = text[position++]
                when {
                    c == '"' -> return builder.toString()
                    c == '\\' -> {
                        if (atEnd()) throw error("unterminated escape")
                        when (val escaped = text[position++]) {
                            '"', '\\', '/' -> builder.append(escaped)
                            'b' -> builder.append('\b')
                            'f' -> builder.append('\u000C')
                            'n' -> builder.append('\n')
                            'r' -> builder.append('\r')
                            't' -> builder.append('\t')
                            'u' -> {
                                if (position + 4 > text.length) throw error("short \\u escape")
                                val hex = text.substring(position, position + 4)
                                val code = hex.toIntOrNull(16) ?: throw error("bad \\u escape '$hex'")
                                builder.append(code.toChar())
                                position += 4
                            }
                            else -> throw error("unknown escape '\\$escaped'")
                        }
                    }
                    c < ' ' -> throw error("control character in a string")
                    else -> builder.append(c)
                }
            }
        }

        private fun readNumber(): Double {
            val start = position
            if (!atEnd() && text[position] == '-') position++
            if (atEnd() || text[position] !in '0'..'9') throw error("expected a value")
            if (text[position] == '0') position++ else skipDigits()
            if (!atEnd() && text[position] == '.') {
                position++
                if (atEnd() || text[position] !in '0'..'9') throw error("expected digits after '.'")
                skipDigits()
            }
            if (!atEnd() && (text[position] == 'e' || text[position] == 'E')) {
                position++
                if (!atEnd() && (text[position] == '+' || text[position] == '-')) position++
                if (atEnd() || text[position] !in '0'..'9') throw error("expected digits in the exponent")
                skipDigits()
            }
            return text.substring(start, position).toDouble()
        }

        private fun skipDigits() {
            while (!atEnd() && text[position] in '0'..'9') position++
        }
    }
}
