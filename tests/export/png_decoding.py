"""Just enough PNG decoding to read back export.android.png_bytes' output in tests (no imaging library needed)."""
import struct
import zlib

import numpy as np


def decode_png(data: bytes) -> np.ndarray:
    """An [H, W, 3] uint8 array from an 8-bit RGB PNG with one IDAT and filter 0 on every row (CRCs checked)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    position, chunks = 8, {}
    while position < len(data):
        (length,) = struct.unpack(">I", data[position:position + 4])
        kind = data[position + 4:position + 8]
        body = data[position + 8:position + 8 + length]
        (crc,) = struct.unpack(">I", data[position + 8 + length:position + 12 + length])
        assert crc == zlib.crc32(kind + body) & 0xFFFFFFFF, f"bad CRC in {kind!r}"
        chunks[kind] = body
        position += 12 + length
    width, height, depth, colour, _, _, _ = struct.unpack(">IIBBBBB", chunks[b"IHDR"])
    assert (depth, colour) == (8, 2), "only 8-bit RGB"
    raw = np.frombuffer(zlib.decompress(chunks[b"IDAT"]), np.uint8).reshape(height, 1 + width * 3)
    assert not raw[:, 0].any(), "only filter type 0"
    return raw[:, 1:].reshape(height, width, 3)
