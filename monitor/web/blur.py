"""A heavily blurred view of a found image, made on the fly and never stored.

The image is fetched again now through the scan's guarded :class:`~monitor.fetch.Fetcher`
(private addresses refused, size caps, redirects checked), decoded in memory, shrunk to a few
dozen pixels, blown up and blurred again, and returned as JPEG bytes for one response.
"""

from __future__ import annotations

import asyncio
import io
from concurrent.futures import Executor

from PIL import Image as PILImage
from PIL import ImageFilter

from monitor.config import Settings
from monitor.fetch import Fetcher
from monitor.hashing import decode_image

__all__ = ["SHOWN_WIDTH", "blur_image_bytes", "fetch_blurred"]

SHOWN_WIDTH = 360
_DETAIL = 24  # pixels across the image keeps, before it is blown up again


def blur_image_bytes(data: bytes) -> bytes:
    """JPEG bytes of a heavily blurred version of ``data`` (any image the scanner decodes)."""
    im = decode_image(data)
    w, h = im.size
    small = im.resize((_DETAIL, max(1, round(_DETAIL * h / w))), PILImage.Resampling.BOX)
    shown_h = max(1, round(SHOWN_WIDTH * h / w))
    big = small.resize((SHOWN_WIDTH, shown_h), PILImage.Resampling.BILINEAR)
    big = big.filter(ImageFilter.GaussianBlur(radius=SHOWN_WIDTH / 30))
    out = io.BytesIO()
    big.save(out, "JPEG", quality=70)
    return out.getvalue()


async def fetch_blurred(settings: Settings, image_url: str, pool: Executor | None = None) -> bytes:
    """Fetch ``image_url`` now (guarded) and blur it; raises ``FetchError`` or
    ``NotAnImageError`` with a readable reason. The web's bytes are decoded in ``pool`` (the
    hashing pool: another process, with a deadline, as in a scan) when given, never in the
    process serving the pages."""
    async with Fetcher(settings.fetch) as fetcher:
        resource = await fetcher.fetch_image(image_url)
    if pool is None:
        return blur_image_bytes(resource.body)
    return await asyncio.wrap_future(pool.submit(blur_image_bytes, resource.body))
