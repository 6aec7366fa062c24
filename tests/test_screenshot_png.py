"""The evidence screenshot's PNG writer (monitor.evidence.png): every row filtered "Up",
compressed once; what Pillow reads back is the picture, pixel for pixel, with its text."""

from __future__ import annotations

import io
import zlib

import numpy as np
import pytest
from PIL import Image

from monitor.evidence.png import encode_png


def picture(width: int = 97, height: int = 61) -> Image.Image:
    """Noise, flat areas and gradients: every filter byte value and wrap-around is exercised."""
    rng = np.random.default_rng(7)
    rgb = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    rgb[10:30] = (140, 140, 140)
    rgb[30:50] = np.linspace(0, 255, width, dtype=np.uint8)[None, :, None]
    return Image.fromarray(rgb, "RGB")


def idat_rows(data: bytes, width: int) -> list[int]:
    """The filter byte of each row of a PNG's image data."""
    pos, idat = 8, b""
    while pos < len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        if data[pos + 4 : pos + 8] == b"IDAT":
            idat += data[pos + 8 : pos + 8 + length]
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = width * 3 + 1
    return [raw[i] for i in range(0, len(raw), stride)]


def test_the_png_holds_the_picture_exactly_and_its_text():
    im = picture()
    text = [("Source", "https://example.org/a?b=c"), ("Comment", "Every image is blurred.")]
    data = encode_png(im, text)
    with Image.open(io.BytesIO(data)) as back:
        back.load()
        assert back.format == "PNG" and back.mode == "RGB" and back.size == im.size
        assert np.array_equal(np.asarray(back), np.asarray(im))
        assert back.text == dict(text)
    assert set(idat_rows(data, im.width)) == {2}  # "Up" on every row


def test_text_outside_latin_1_is_kept_in_utf_8():
    data = encode_png(picture(4, 3), [("Source", "https://例え.jp/ページ"), ("Note", "café")])
    with Image.open(io.BytesIO(data)) as back:
        back.load()
        assert back.text == {"Source": "https://例え.jp/ページ", "Note": "café"}


def test_other_modes_are_written_as_rgb_and_an_empty_picture_is_refused():
    rgba = Image.new("RGBA", (5, 4), (10, 20, 30, 40))
    with Image.open(io.BytesIO(encode_png(rgba))) as back:
        assert back.mode == "RGB" and back.getpixel((2, 2)) == (10, 20, 30)
    one_row = Image.new("RGB", (3, 1), (1, 2, 3))
    with Image.open(io.BytesIO(encode_png(one_row))) as back:
        assert back.getpixel((0, 0)) == (1, 2, 3)
    with pytest.raises(ValueError, match="empty"):
        encode_png(Image.new("RGB", (0, 5)))
