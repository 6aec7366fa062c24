"""A fast PNG writer for the evidence screenshot (RGB, 8 bits, text chunks).

Pillow's PNG encoder tries all five filters on every row to pick one, which costs about three
times the compression itself on a page-sized picture even at zlib level 1. A screenshot is
mostly flat colour and smooth blurs, which the "Up" filter (each row minus the row above)
suits well, and Chromium's own fast PNGs use it on every row too. Here every row is filtered
"Up" with numpy and compressed once with zlib; both release the GIL, so a capture's PNG is
encoded while the event loop goes on. The file is a few per cent larger than Pillow's.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence

import numpy as np
from PIL import Image

__all__ = ["encode_png"]

SIGNATURE = b"\x89PNG\r\n\x1a\n"
UP = 2  # PNG filter type "Up": each byte minus the byte above it (modulo 256)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data))
        + kind
        + data
        + struct.pack(">I", zlib.crc32(data, zlib.crc32(kind)) & 0xFFFFFFFF)
    )


def _text_chunk(key: str, value: str) -> bytes:
    """``tEXt`` when both fit Latin-1 (as Pillow writes them), else ``iTXt`` in UTF-8."""
    try:
        return _chunk(b"tEXt", key.encode("latin-1") + b"\0" + value.encode("latin-1"))
    except UnicodeEncodeError:
        keyword = key.encode("latin-1", "replace")
        # keyword, no compression (flag, method), empty language tag and translated keyword
        return _chunk(b"iTXt", keyword + b"\0\0\0" + b"\0" + b"\0" + value.encode("utf-8"))


def encode_png(
    image: Image.Image, text: Sequence[tuple[str, str]] = (), *, level: int = 1
) -> bytes:
    """``image`` (converted to RGB if it is not) as PNG bytes with ``text`` chunks, every row
    filtered "Up", compressed at zlib ``level``."""
    if image.mode != "RGB":
        image = image.convert("RGB")
    width, height = image.size
    if width < 1 or height < 1:
        raise ValueError(f"cannot encode an empty image ({width} x {height})")
    pixels = np.asarray(image, dtype=np.uint8).reshape(height, width * 3)
    rows = np.empty((height, width * 3 + 1), dtype=np.uint8)
    rows[:, 0] = UP
    rows[0, 1:] = pixels[0]  # the row above the first is all zeros
    np.subtract(pixels[1:], pixels[:-1], out=rows[1:, 1:])  # wraps modulo 256, as PNG wants
    del pixels
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB, not interlaced
    return b"".join(
        [
            SIGNATURE,
            _chunk(b"IHDR", header),
            *(_text_chunk(key, value) for key, value in text),
            _chunk(b"IDAT", zlib.compress(rows, level)),
            _chunk(b"IEND", b""),
        ]
    )
