"""A tiny, blurred thumbnail of image bytes from the web, for the evidence screenshot.

Run in a process pool with a deadline (:class:`monitor.pool.DeadlinePool`): it decodes bytes a
website chose. Only Pillow is imported here, so a worker that unpickles this task stays small.
The JPEG decoder's ``draft`` mode decodes at 1/8 scale straight from the DCT coefficients: a
camera-size photo costs a few milliseconds, not the full decode Chromium would do.
"""

from __future__ import annotations

import io

from PIL import Image, ImageFilter, ImageOps

__all__ = ["FORMATS", "THUMB_SIDE", "blurred_thumbnail"]

FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP")
"""The formats read (the web's raster ones): no other Pillow plugin ever sees the bytes."""

THUMB_SIDE = 24
"""The thumbnail's longer side, in pixels: an image is never shown sharper than this many
pixels across (the screenshot stretches it to the element's box; see
:mod:`monitor.evidence.screenshot`)."""

MAX_PIXELS = 200_000_000  # a header claiming more is refused (a decompression bomb)


def blurred_thumbnail(data: bytes) -> tuple[tuple[int, int], bytes]:
    """``((width, height), RGB bytes)`` of the image, at most :data:`THUMB_SIDE` pixels on
    its longer side, turned as its EXIF orientation says, and blurred."""
    with Image.open(io.BytesIO(data), formats=FORMATS) as im:
        if im.width * im.height > MAX_PIXELS:
            raise ValueError(f"{im.width} x {im.height} pixels: too large")
        im.draft("RGB", (THUMB_SIDE * 4, THUMB_SIDE * 4))
        im = ImageOps.exif_transpose(im) or im
        small = im.convert("RGB")
    small.thumbnail((THUMB_SIDE, THUMB_SIDE), Image.Resampling.BOX)
    small = small.filter(ImageFilter.GaussianBlur(1))
    return small.size, small.tobytes()
