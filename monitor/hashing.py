"""Perceptual hashes of images, computed in memory.

Hash algorithms are plug-ins, registered by name (like python-threatexchange's signal types):
``pdq`` (Meta's PDQ, 256 bits, with a quality score) and ``phash`` (the DCT hash of
``imagehash``, 64 bits). Adding a hash is one class with ``name``, ``label``, ``bits``,
``default_threshold`` and ``compute(image)``, plus :func:`register_algorithm` at import time of
a module that worker processes import too.

Everything here works on bytes held in memory: images are never written anywhere, not even as
a temporary file or a thumbnail. :func:`decode_image` refuses decompression bombs from the
header before any pixel is decoded, and turns every decoding failure into
:class:`~monitor.errors.NotAnImageError`.

Decoding is shaped for hashing, not for display. PDQ looks at a 64x64 and pHash at a 32x32
summary of the picture, so large images are decoded at reduced scale (JPEG draft mode: the
decoder skips detail, up to 1/8 scale; of a progressive JPEG at 1/8 scale only the DC scans are
decoded) or box-reduced right after decoding, to a short side of at least :data:`WORKING_SIZE`
pixels. The hash algorithms are then given one copy box-reduced to :data:`PDQ_INPUT` pixels.
Enrolment and scans decode the same way, so a reference and its copy are always hashed alike.
"""

from __future__ import annotations

import hashlib
import io
import math
import re
import struct
import warnings
from collections.abc import Iterator
from typing import Protocol, runtime_checkable

import imagehash
import numpy as np
import pdqhash
from PIL import ExifTags, Image, ImageOps

from monitor.errors import NotAnImageError
from monitor.types import HashValue, ImageHashes

try:  # HEIC/HEIF photos (iPhones); optional dependency ``pillow-heif``
    from pillow_heif import register_heif_opener
except ImportError:  # pragma: no cover - depends on the installation
    HEIF_SUPPORTED = False
else:
    register_heif_opener()
    HEIF_SUPPORTED = True

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "FORMATS",
    "HEIF_SUPPORTED",
    "WORKING_SIZE",
    "HashAlgorithm",
    "PDQ",
    "PHash",
    "algorithms",
    "REGION",
    "VARIANT_SEPARATOR",
    "base_algorithm",
    "compute_hashes",
    "compute_hashes_from_image",
    "compute_reference_hashes",
    "content_box",
    "content_boxes",
    "letterbox_box",
    "reference_variants",
    "decode_image",
    "get_algorithm",
    "hamming",
    "normalise_hex",
    "register_algorithm",
]

DEFAULT_MAX_PIXELS = 64_000_000
"""Images declaring more pixels than this (width x height) are refused before decoding."""

WORKING_SIZE = 256
"""Large images are decoded or reduced so that their short side stays at least this long (and
below twice that). PDQ works on a 64x64 and pHash on a 32x32 summary, so 256 pixels lose
nothing they use, and a camera-size JPEG is decoded at 1/8 scale."""

_WEB_FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF", "ICO", "AVIF", "HEIF")
Image.init()
FORMATS: tuple[str, ...] = tuple(f for f in _WEB_FORMATS if f in Image.OPEN)
"""Pillow formats tried when decoding, those of the web set this Pillow can open (AVIF and HEIF
depend on how Pillow was built and on ``pillow-heif``). Others (EPS, PSD, FITS, ...) are refused:
they are not published as web images, and some of their decoders run external programs."""

WHITE = (255, 255, 255)


# ---------------------------------------------------------------- algorithms


@runtime_checkable
class HashAlgorithm(Protocol):
    """One perceptual hash. Implementations are registered with :func:`register_algorithm`."""

    name: str  # the key stored in the database: "pdq", "phash"
    label: str  # for people: "PDQ", "pHash"
    bits: int  # hash length; its lowercase hex has bits // 4 digits
    default_threshold: int  # Hamming distance at or below which two hashes match

    def compute(self, image: Image.Image) -> HashValue:
        """Hash an RGB image: one returned by :func:`decode_image`, box-reduced to at most
        :data:`PDQ_INPUT` pixels on its long side (see :func:`compute_hashes_from_image`)."""
        ...


def _bits_to_hex(bits: np.ndarray) -> str:
    """Hex of a 0/1 vector, first element as the most significant bit (threatexchange style)."""
    return np.packbits(np.asarray(bits, dtype=np.uint8)).tobytes().hex()


class PDQ:
    """Meta's PDQ: 256 bits, robust to resizing and recompression; has a quality score (0-100).

    The hex is MSB-first, as python-threatexchange and the PDQ reference tools write it.
    """

    name = "pdq"
    label = "PDQ"
    bits = 256
    default_threshold = 31  # Meta's recommended threshold for PDQ

    def compute(self, image: Image.Image) -> HashValue:
        vector, quality = pdqhash.compute(_pdq_pixels(image))
        return HashValue(self.name, _bits_to_hex(vector), int(quality))


PDQ_INPUT = 256
"""PDQ is given the picture box-reduced to at most this many pixels on its long side: it keeps
only a 64x64 summary, and its filter costs time per input pixel (8 ms for 640x427, 1 ms here).
The other algorithms (pHash's 32x32 summary) are given the same reduced copy."""


def _hash_input(image: Image.Image) -> Image.Image:
    """``image`` as RGB, box-reduced to at most :data:`PDQ_INPUT` pixels on its long side."""
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    w, h = rgb.size
    if max(w, h) > PDQ_INPUT:
        scale = PDQ_INPUT / max(w, h)
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        rgb = rgb.resize(size, Image.Resampling.BOX)
    return rgb


def _pdq_pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(_hash_input(image))


class PHash:
    """The DCT perceptual hash of ``imagehash`` (64 bits); a second opinion beside PDQ."""

    name = "phash"
    label = "pHash"
    bits = 64
    default_threshold = 10

    def compute(self, image: Image.Image) -> HashValue:
        return HashValue(self.name, _bits_to_hex(imagehash.phash(image).hash.flatten()))


_REGISTRY: dict[str, HashAlgorithm] = {}


def register_algorithm(algorithm: HashAlgorithm, *, replace: bool = False) -> HashAlgorithm:
    """Add a hash algorithm; every image is then hashed with it too. Returns it.

    Register at import time of a module: hashing runs in worker processes, which only know the
    algorithms registered by the modules they import.
    """
    if not isinstance(algorithm, HashAlgorithm):
        raise TypeError(f"{algorithm!r} does not implement HashAlgorithm")
    if algorithm.bits <= 0 or algorithm.bits % 4:
        raise ValueError(f"{algorithm.name}: bits must be a positive multiple of 4")
    if algorithm.name in _REGISTRY and not replace:
        raise ValueError(f"a hash algorithm named {algorithm.name!r} is already registered")
    _REGISTRY[algorithm.name] = algorithm
    return algorithm


def get_algorithm(name: str) -> HashAlgorithm:
    """The registered algorithm called ``name``; ``ValueError`` naming the known ones if none."""
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(_REGISTRY) or "none"
        raise ValueError(f"unknown hash algorithm {name!r} (known: {known})") from None


def algorithms() -> tuple[HashAlgorithm, ...]:
    """The registered algorithms, in registration order (``pdq`` first)."""
    return tuple(_REGISTRY.values())


register_algorithm(PDQ())
register_algorithm(PHash())


def normalise_hex(algorithm: str, value: str) -> str:
    """``value`` as lowercase hex of the right length for ``algorithm``, or ``ValueError``."""
    alg = get_algorithm(algorithm)
    text = value.strip().lower()
    digits = alg.bits // 4
    if len(text) != digits or not all(c in "0123456789abcdef" for c in text):
        raise ValueError(f"not a {alg.label} hash ({digits} hex digits): {value!r}")
    return text


def hamming(a_hex: str, b_hex: str) -> int:
    """Number of differing bits between two hex hashes of the same length."""
    if len(a_hex) != len(b_hex):
        raise ValueError(f"hashes differ in length: {len(a_hex)} and {len(b_hex)} hex digits")
    return (int(a_hex, 16) ^ int(b_hex, 16)).bit_count()


# ---------------------------------------------------------------- decoding

_SWAPS_SIDES = {5, 6, 7, 8}  # EXIF orientations that turn the picture a quarter


def _reason(exc: BaseException) -> str:
    if isinstance(exc, Image.UnidentifiedImageError):
        return "cannot identify image file"
    if isinstance(exc, MemoryError):
        return "out of memory while decoding"
    text = str(exc).strip()
    return text or type(exc).__name__


def _open(data: bytes, max_pixels: int) -> Image.Image:
    """Read the header only and refuse images declaring too many pixels."""
    try:
        im = Image.open(io.BytesIO(data), formats=FORMATS)
    except Image.DecompressionBombError as exc:  # Pillow's own, larger, limit
        raise NotAnImageError(f"refused, could be a decompression bomb: {exc}") from None
    except Exception as exc:
        raise NotAnImageError(f"not a decodable image: {_reason(exc)}") from None
    width, height = im.size
    if width <= 0 or height <= 0:
        raise NotAnImageError(f"not a decodable image: it declares {width}x{height} pixels")
    if width * height > max_pixels:
        raise NotAnImageError(
            f"refused, could be a decompression bomb: it declares {width}x{height} pixels, "
            f"more than the limit of {max_pixels:,}"
        )
    return im


def _apply_orientation(im: Image.Image) -> tuple[Image.Image, bool]:
    """The image turned as its EXIF orientation says, and whether width and height swapped."""
    try:
        orientation = int(im.getexif().get(ExifTags.Base.Orientation, 1))
        if orientation == 1:
            return im, False
        turned = ImageOps.exif_transpose(im)
    except Exception:  # unreadable EXIF: take the picture as stored
        return im, False
    return turned, orientation in _SWAPS_SIDES


def _to_8bit(im: Image.Image) -> Image.Image:
    """16-bit and 32-bit greyscale (``I;16*``, ``I``, ``F``) scaled to 8-bit ``L``."""
    arr = np.asarray(im).astype(np.float64)
    if im.mode == "F":
        lo, hi = float(arr.min()), float(arr.max())
        if lo >= 0.0 and hi <= 1.0:
            scaled = arr * 255.0
        else:
            scaled = (arr - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(arr)
    else:
        top = float(arr.max())
        if top <= 255:
            scaled = arr
        elif top <= 65535:
            scaled = arr / 257.0
        else:
            scaled = arr * (255.0 / top)
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), "L")


def _normalise_mode(im: Image.Image) -> Image.Image:
    """Any decoded mode to ``L``, ``LA``, ``RGB`` or ``RGBA``."""
    mode = im.mode
    if mode in ("LA", "RGBA") or (mode in ("L", "RGB") and "transparency" not in im.info):
        return im
    if mode in ("P", "PA", "L", "RGB"):  # palette, or a colour key (tRNS) on L/RGB
        return im.convert("RGBA" if "transparency" in im.info or mode == "PA" else "RGB")
    if mode == "1":
        return im.convert("L")
    if mode.startswith("I") or mode == "F":
        return _to_8bit(im)
    if mode in ("La", "RGBa"):  # premultiplied alpha
        return im.convert("RGBA")
    return im.convert("RGB")  # CMYK, YCbCr, LAB, HSV, RGBX...


def _flatten(im: Image.Image) -> Image.Image:
    """Transparent pixels onto a white background (``LA``/``RGBA`` to ``RGB``).

    White, because a transparent picture is mostly seen on a light web page, and re-posted
    copies (screenshots, JPEG re-encodes) usually keep that background.
    """
    if im.mode not in ("LA", "RGBA"):
        return im
    rgba = im.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (*WHITE, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


# ---------------------------------------------------------------- progressive JPEGs at 1/8

_SEGMENT_END = re.compile(rb"\xff[^\x00\xd0-\xd7]")
"""The marker that ends a scan's entropy-coded data (not a stuffed 0xFF00 nor a restart)."""

_EOB_TABLE_ID = 0
_EOB_DHT = (
    b"\xff\xc4"
    + struct.pack(">HB", 2 + 1 + 16 + 15, 0x10 | _EOB_TABLE_ID)
    + bytes([0, 0, 0, 15] + [0] * 12)  # 15 codes of 4 bits...
    + bytes(r << 4 for r in range(15))  # ...for EOB0 to EOB14: runs of 2**r to 2**(r+1)-1 blocks
)
"""An AC Huffman table that codes only end-of-band runs; symbol EOBr has the 4-bit code r."""

_NO_RESTARTS = b"\xff\xdd\x00\x04\x00\x00"  # DRI 0: the scans that follow have no restarts


def _empty_ac_scan(component: int, blocks: int) -> bytes:
    """A progressive scan setting AC coefficients 1-63 of ``blocks`` blocks of a component to 0:
    end-of-band runs of at most 32,767 blocks, coded with :data:`_EOB_DHT`."""
    acc, nbits = 0, 0
    while blocks > 0:
        run = min(blocks, 32767)
        r = run.bit_length() - 1
        acc = (acc << (4 + r)) | (r << r) | (run - (1 << r))
        nbits += 4 + r
        blocks -= run
    pad = -nbits % 8
    coded = ((acc << pad) | ((1 << pad) - 1)).to_bytes((nbits + pad) // 8, "big")
    header = struct.pack(">BBHBBBBBB", 0xFF, 0xDA, 8, 1, component, _EOB_TABLE_ID, 1, 63, 0)
    return header + coded.replace(b"\xff", b"\xff\x00")


def _progressive_dc_only(data: bytes) -> bytes | None:
    """The same progressive JPEG without the AC coefficients that a 1/8-scale decode ignores,
    or ``None`` if not one.

    At 1/8 scale a JPEG decoder outputs each 8x8 block of a full-resolution component (luma,
    and every component unless chroma is subsampled both ways) as its DC coefficient (the
    block's mean) alone, but it still entropy-decodes every scan of a progressive file into a
    whole-image buffer of coefficients. So of those components only the DC scans (the first,
    coarse, one and its refinements) are kept, and what replaces their AC scans is one tiny scan
    per component stating that all AC coefficients are zero. Without it, the decoder would see
    them as missing and smooth the blocks (libjpeg's interblock smoothing, which changes the
    picture). Chroma subsampled both ways (4:2:0) is decoded at 1/4 scale and upsampled by its
    inverse DCT, which reads some AC coefficients: such components keep all their scans.
    Decoded at 1/8 scale, the result is pixel-identical to the whole file decoded at 1/8 scale.

    ``None`` for anything but a complete (EOI-terminated) Huffman-coded progressive JPEG whose
    DC scans give every component its full precision: those are decoded as they are.
    """
    if data[:2] != b"\xff\xd8":
        return None
    out = [data[:2]]
    n, pos = len(data), 2
    components: list[tuple[int, int, int]] = []  # (id, horizontal, vertical sampling)
    keep_ac: set[int] = set()  # ids of the components whose AC coefficients count at 1/8
    width = height = h_max = v_max = 0
    dc_low_bit: dict[int, int] = {}  # component id -> lowest DC bit decoded so far
    while True:
        if pos + 2 > n or data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0xD9:  # EOI
            break
        if pos + 4 > n:
            return None
        end = pos + 2 + struct.unpack_from(">H", data, pos + 2)[0]
        if end < pos + 4 or end > n:
            return None
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # a start of frame
            if marker != 0xC2 or components:  # progressive Huffman only, one frame
                return None
            if end < pos + 10:
                return None
            height, width, count = struct.unpack_from(">HHB", data, pos + 5)
            if end != pos + 10 + 3 * count or not count or not width or not height:
                return None
            for i in range(count):
                cid, sampling = data[pos + 10 + 3 * i], data[pos + 11 + 3 * i]
                if not (1 <= sampling >> 4 <= 4 and 1 <= sampling & 15 <= 4):
                    return None
                components.append((cid, sampling >> 4, sampling & 15))
            h_max = max(h for _, h, _ in components)
            v_max = max(v for _, _, v in components)
            # libjpeg scales the IDCT of a component subsampled by two both ways up to 2x2
            keep_ac = {c for c, h, v in components if h_max % (2 * h) == v_max % (2 * v) == 0}
        elif marker == 0xDA:  # start of scan, then its entropy-coded data up to a marker
            if not components:
                return None
            ns = data[pos + 4]
            if not 1 <= ns <= 4 or end != pos + 8 + 2 * ns:
                return None
            ss, se, approx = data[pos + 5 + 2 * ns : pos + 8 + 2 * ns]
            found = _SEGMENT_END.search(data, end)
            if found is None:
                return None
            if ss == 0:  # a DC scan (first pass or refinement)
                if se != 0:
                    return None
                out.append(data[pos : found.start()])
                for i in range(ns):
                    dc_low_bit[data[pos + 5 + 2 * i]] = approx & 15
            elif ns == 1 and data[pos + 5] in keep_ac:  # an AC scan the decoder uses
                out.append(data[pos : found.start()])
            pos = found.start()
            continue
        if not (marker == 0xE2 and data[pos + 4 : pos + 8] == b"MPF\x00"):  # MPO index: drop
            out.append(data[pos:end])
        pos = end
    if not components or any(dc_low_bit.get(cid) != 0 for cid, _, _ in components):
        return None
    out += [_NO_RESTARTS, _EOB_DHT]
    for cid, h, v in components:
        if cid in keep_ac:
            continue
        comp_w, comp_h = -(-width * h // h_max), -(-height * v // v_max)
        out.append(_empty_ac_scan(cid, -(-comp_w // 8) * -(-comp_h // 8)))
    out.append(b"\xff\xd9")
    return b"".join(out)


# ---------------------------------------------------------------- decoding (continued)


def _jpeg_scale(width: int, height: int) -> int:
    """The JPEG decoder's reduction (8, 4, 2 or 1): the short side stays >= WORKING_SIZE."""
    for scale in (8, 4, 2):
        if min(width, height) >= scale * WORKING_SIZE:
            return scale
    return 1


def _decode(data: bytes, max_pixels: int) -> tuple[Image.Image, int, int]:
    """The RGB image for hashing, and the full width and height as shown (EXIF-oriented)."""
    if not data:
        raise NotAnImageError("not a decodable image: no data")
    with warnings.catch_warnings():
        # Pillow warns about large images, odd EXIF and palettes; our own checks cover these.
        warnings.simplefilter("ignore")
        im = _open(data, max_pixels)
        width, height = im.size
        try:
            scale = _jpeg_scale(width, height) if im.format in ("JPEG", "MPO") else 1
            if scale == 8 and im.info.get("progressive"):
                dc_only = _progressive_dc_only(data)
                if dc_only is not None:
                    im = Image.open(io.BytesIO(dc_only), formats=("JPEG",))
            if scale > 1:
                im.draft("RGB", (width // scale, height // scale))  # exactly 1/scale
            im.load()  # the first frame of an animation
            im, swapped = _apply_orientation(im)
            im = _normalise_mode(im)
            factor = min(im.size) // WORKING_SIZE
            if factor >= 2:
                im = im.reduce(factor)
            im = _flatten(im)
            if im.mode != "RGB":
                im = im.convert("RGB")
        except Exception as exc:  # truncated or corrupt data, or a decoder's own limit
            raise NotAnImageError(f"not a decodable image: {_reason(exc)}") from None
    if swapped:
        width, height = height, width
    return im, width, height


def decode_image(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode image bytes in memory into an RGB image ready for hashing.

    - The pixel count declared in the header is checked against ``max_pixels`` before
      decoding (independently of Pillow's global limit).
    - EXIF orientation is applied, so a rotated phone photo hashes like the upright one.
    - Transparency is flattened onto white; palette, greyscale, CMYK and 16-bit images become
      8-bit RGB; of an animation only the first frame is used.
    - Large images come back reduced (short side between :data:`WORKING_SIZE` and twice that).

    Raises :class:`NotAnImageError` with a readable reason for anything that is not a decodable
    image of an accepted format (:data:`FORMATS`), and never another exception type.
    """
    return _decode(data, max_pixels)[0]


# ---------------------------------------------------------------- regions

VARIANT_SEPARATOR = "."
"""Joins an algorithm and a variant tag: ``pdq.mirror`` is the PDQ hash of the mirrored picture."""

REGION = "region"
"""Variant tag of the hash of a found image's content box: ``pdq.region``, and ``pdq.region.2``
for a second candidate (see :func:`content_boxes`)."""

_BOX_SIDE = 160  # content boxes are looked for on a thumbnail this long
_BG_TOLERANCE = 24  # a pixel this close (per channel) to the background colour is background
_FLAT_TOLERANCE = 6  # ...or this close, when the surround is flat (see _surround_tolerance)
_MIN_BOX_AREA = 0.08  # a content box smaller than this share of the image is not a photo
_MAX_BOX_AREA = 0.93  # one larger than this is the whole image: nothing to cut away
_BAR_TOLERANCE = 12  # a plain bar: its pixels this close (per channel) to its colour...
_BAR_SHARE = 0.98  # ...on this share of each of its lines
_BLUR_CURVE = 1.5  # a blurred bar: mean |second difference| (grey levels on the thumbnail)...
_BLUR_JUMP = 12.0  # ...and mean |difference| between neighbouring lines at most these
_BLUR_EDGE = (4.0, 10.0)  # the jump from blurred bars to the picture: at least on both sides,
# and on one of them

Box = tuple[int, int, int, int]


def base_algorithm(name: str) -> str:
    """``pdq`` for ``pdq``, ``pdq.mirror`` and ``pdq.region``: the algorithm a variant is of."""
    return name.split(VARIANT_SEPARATOR, 1)[0]


def _longest_run(flags: np.ndarray, gap: int) -> tuple[int, int]:
    """Start and end (exclusive) of the longest run of True, bridging gaps up to ``gap``."""
    idx = np.flatnonzero(flags)
    if idx.size == 0:
        return 0, 0
    breaks = np.flatnonzero(np.diff(idx) > gap + 1)
    starts = np.concatenate(([idx[0]], idx[breaks + 1]))
    ends = np.concatenate((idx[breaks], [idx[-1]])) + 1
    best = int(np.argmax(ends - starts))
    return int(starts[best]), int(ends[best])


def _colour(pixels: np.ndarray) -> np.ndarray:
    """The median colour of ``pixels`` (n x RGB, ``int16``), as ``int16``."""
    return np.rint(np.median(pixels, axis=0)).astype(np.int16)


def _differ(pixels: np.ndarray, colour: np.ndarray, tolerance: int) -> np.ndarray:
    """Which of ``pixels`` (``int16`` RGB in the last axis) differ from ``colour`` by more than
    ``tolerance`` in a channel (channel by channel: numpy's ``max`` over a 3-long axis is slow)."""
    d = np.abs(pixels - colour)
    return np.maximum(np.maximum(d[..., 0], d[..., 1]), d[..., 2]) > tolerance


def _thumbnail(image: Image.Image) -> np.ndarray:
    """``image`` box-reduced to at most :data:`_BOX_SIDE` pixels, as ``int16`` RGB."""
    w, h = image.size
    scale = min(1.0, _BOX_SIDE / max(w, h))
    small = image
    if scale < 1.0:
        small = image.resize(
            (max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BOX
        )
    return np.asarray(small.convert("RGB"), dtype=np.int16)


def _fits(box: Box, size: tuple[int, int]) -> Box | None:
    """``box`` if it can be a photo inside an image of ``size``: 16 pixels or more each way,
    and neither too small a share of the image nor nearly all of it."""
    x0, y0, x1, y1 = box
    if x1 - x0 < 16 or y1 - y0 < 16:
        return None
    area = (x1 - x0) * (y1 - y0) / (size[0] * size[1])
    return box if _MIN_BOX_AREA <= area <= _MAX_BOX_AREA else None


# Edges of a box found on the thumbnail are placed exactly on the full-size image: within
# reach (1.5 thumbnail pixels) of where the thumbnail puts them. PDQ needs that precision:
# a 1% shift changes about 30 of its 256 bits, and a thumbnail pixel is 1-2% of a photo.


def _lines(image: Image.Image, box: Box, edge: str, reach: int) -> tuple[np.ndarray, int, int]:
    """The full-size lines of pixels within ``reach`` of one edge of ``box`` (``"top"``,
    ``"bottom"``, ``"left"``, ``"right"``), outermost first (lines x length x RGB, ``int16``),
    each taken between the box's other two edges (away from its corners); and the position of
    the first line and the step (+1 or -1) to the next."""
    w, h = image.size
    x0, y0, x1, y1 = box
    across = edge in ("top", "bottom")  # the lines are rows
    start, end, size, other = (x0, x1, w, h) if across else (y0, y1, h, w)
    a, b = max(0, min(start + reach, end - 1)), min(size, max(end - reach, start + 1))
    at = {"top": y0, "bottom": y1 - 1, "left": x0, "right": x1 - 1}[edge]
    lo, hi = max(0, at - reach), min(other - 1, at + reach)
    if b <= a or hi < lo:
        lines = np.zeros((0, 0, 3), dtype=np.int16)
    elif across:
        lines = np.asarray(image.crop((a, lo, b, hi + 1)).convert("RGB"), dtype=np.int16)
    else:
        crop = image.crop((lo, a, hi + 1, b)).convert("RGB")
        lines = np.asarray(crop, dtype=np.int16).transpose(1, 0, 2)
    if edge in ("top", "left"):
        return lines, lo, 1
    return lines[::-1], hi, -1


def _refine(
    image: Image.Image,
    box: Box,
    colours: dict[str, np.ndarray],
    reach: int,
    share: float,
    tolerances: tuple[int, ...] = (_BG_TOLERANCE,),
) -> Box:
    """``box`` with each edge named in ``colours`` moved to the outermost line (within reach)
    on which more than ``share`` of the pixels differ from that edge's background colour by
    more than the first of ``tolerances`` that finds such a line (the next ones are tried only
    when the one before finds none: a smaller tolerance places the edge of a photo as dark as
    the page, but the JPEG ringing beside a sharp edge can exceed it); an edge with no such
    line in reach stays."""
    out = dict(zip(("left", "top", "right", "bottom"), box, strict=True))
    for edge, colour in colours.items():
        lines, first, step = _lines(image, box, edge, reach)
        if lines.size == 0:
            continue
        for tolerance in tolerances:
            differs = _differ(lines, colour, tolerance)
            hits = np.flatnonzero(differs.mean(axis=1) > share)
            if hits.size:
                line = first + step * int(hits[0])
                out[edge] = line if step > 0 else line + 1  # right and bottom are exclusive
                break
    return out["left"], out["top"], out["right"], out["bottom"]


_STORY_PLAIN = 0.9  # a photo as wide as the page: its first and last rows this plain
_FLAT_LEVELS = 2  # a flat surround: at least half its frame within this of its colour


def _surround_tolerance(frame: np.ndarray, bg: np.ndarray) -> int:
    """How far (per channel) a pixel may be from the background colour ``bg`` and still be
    background, given the image's outer ``frame`` of pixels: :data:`_FLAT_TOLERANCE` when the
    surround is flat (at least half the frame within :data:`_FLAT_LEVELS` of ``bg``, as the
    page of a screenshot is), else :data:`_BG_TOLERANCE`. A dark photo on a dark page (or a
    light one on a light page) has large parts within 24 levels of the page, which then count
    as page and cut the box short; they are rarely within 6 (issue 10: screenshots of dark
    photos in dark chats and posts)."""
    flat = np.abs(frame - bg).max(axis=-1) <= _FLAT_LEVELS
    return _FLAT_TOLERANCE if flat.mean() >= 0.5 else _BG_TOLERANCE


def _surround_box(image: Image.Image, a: np.ndarray) -> Box | None:
    """:func:`content_box` on the thumbnail ``a`` of ``image``."""
    sh, sw = a.shape[:2]
    frame = np.concatenate((a[0], a[-1], a[1:-1, 0], a[1:-1, -1]))
    bg = _colour(frame)
    full_width = (1 - _differ(frame, bg, _BG_TOLERANCE).mean()) < 0.6
    if full_width:  # no uniform surround; or a photo as wide as the page (a story)?
        frame = np.concatenate((a[0], a[-1]))
        bg = _colour(frame)
        if (1 - _differ(frame, bg, _BG_TOLERANCE).mean()) < _STORY_PLAIN:
            return None  # the picture fills the image
    tolerance = _surround_tolerance(frame, bg)
    busy = _differ(a, bg, tolerance)
    gap_r, gap_c = max(1, sh // 50), max(1, sw // 50)
    c0, c1 = 0, sw
    if full_width:
        r0, r1 = _longest_run(busy.mean(axis=1) > 0.5, gap_r)
    else:
        r0, r1 = _longest_run(busy.mean(axis=1) > 0.25, gap_r)
    for _ in range(0 if full_width else 2):
        if r1 - r0 < 8:
            return None
        c0, c1 = _longest_run(busy[r0:r1].mean(axis=0) > 0.5, gap_c)
        if c1 - c0 < 8:
            return None
        r0, r1 = _longest_run(busy[:, c0:c1].mean(axis=1) > 0.5, gap_r)
    area = (r1 - r0) * (c1 - c0) / (sh * sw)
    if r1 - r0 < 8 or not _MIN_BOX_AREA <= area <= _MAX_BOX_AREA:
        return None
    w, h = image.size
    fx, fy = w / sw, h / sh
    coarse = (round(c0 * fx), round(r0 * fy), round(c1 * fx), round(r1 * fy))
    sides = ("top", "bottom") if full_width else ("left", "top", "right", "bottom")
    edges = {edge: bg for edge in sides}
    tolerances = tuple(sorted({_BG_TOLERANCE, tolerance}, reverse=True))
    box = _refine(image, coarse, edges, math.ceil(1.5 * max(fx, fy)), 0.5, tolerances)
    return box if box[2] - box[0] >= 16 and box[3] - box[1] >= 16 else None


def content_box(image: Image.Image) -> Box | None:
    """The box ``(left, top, right, bottom)`` of the photo inside a larger, plainer canvas.

    Finds what a re-poster wraps around a photo: uniform borders (padding, letterboxing) and
    the plain page of a screenshot of a social media post (a photo between lines of text).
    The background is the colour of most of the image's outer frame; the box is the largest
    block of rows, then of columns, that are mostly not background, refined twice (lines of
    text are thin and separated by background, so the photo wins), found on a thumbnail of at
    most 160 pixels and then placed exactly on the image itself. A pixel is background within
    24 levels of its colour, or within 6 when the surround is flat (a screenshot's page: a dark
    photo on a dark page is not cut short; :func:`_surround_tolerance`). When the frame is not
    uniform but its first and last rows are (a story: a photo as wide as the page), the box is
    the largest block of rows that are mostly not background, as wide as the image. ``None``
    when the image has no uniform surround, or when what is left is too small to be a photo or
    is the whole image. Costs well under a millisecond. See also :func:`letterbox_box`.
    """
    a = _thumbnail(image)
    return None if min(a.shape[:2]) < 16 else _surround_box(image, a)


def _plain_run(lines: np.ndarray) -> tuple[int, np.ndarray]:
    """How many of ``lines`` (outermost first) are a plain bar of the first one's colour, and
    that colour."""
    colour = _colour(lines[0])
    if 1 - _differ(lines[0], colour, _BAR_TOLERANCE).mean() < _BAR_SHARE:
        return 0, colour  # most images: no bar at all
    plain = 1 - _differ(lines, colour, _BAR_TOLERANCE).mean(axis=1) >= _BAR_SHARE
    return (len(plain) if plain.all() else int(np.argmin(plain))), colour


def _blurred_run(grey: np.ndarray) -> tuple[int, float]:
    """How many of the lines of ``grey`` (outermost first) are a blurred bar -- smooth along
    (small second differences) and joining smoothly (small first and second differences
    between lines) -- at most half of them; and the jump from the last of them to the picture
    (the larger of the next two line differences)."""
    n, i = len(grey) // 2, 0
    if np.abs(np.diff(grey[0], n=2)).mean() > _BLUR_CURVE:
        return 0, 0.0  # most images: no bar at all
    grey = grey[: n + 2]
    curve = np.abs(np.diff(grey, n=2, axis=1)).mean(axis=1)
    jump = np.abs(np.diff(grey, axis=0)).mean(axis=1)
    bend = np.abs(np.diff(grey, n=2, axis=0)).mean(axis=1)  # bend[i] is centred on line i + 1
    while (
        i < n
        and curve[i] <= _BLUR_CURVE
        and (i == 0 or jump[i - 1] <= _BLUR_JUMP)
        and (i < 2 or bend[i - 2] <= _BLUR_CURVE)
    ):
        i += 1
    return i, (float(jump[i - 1 : i + 1].max()) if i else 0.0)


def _step(image: Image.Image, box: Box, edge: str, reach: int) -> int | None:
    """Where, within reach of one edge of ``box``, the full-size image jumps most from one
    line to the next: the position of the edge (exclusive for right and bottom)."""
    lines, first, step = _lines(image, box, edge, reach)
    if len(lines) < 2:
        return None
    jump = np.abs(np.diff(lines, axis=0)).mean(axis=(1, 2))
    line = first + step * (int(np.argmax(jump)) + 1)  # the first line of the picture
    return line if step > 0 else line + 1


def _letterbox(image: Image.Image, a: np.ndarray) -> Box | None:
    """:func:`letterbox_box` on the thumbnail ``a`` of ``image``."""
    sh, sw = a.shape[:2]
    w, h = image.size
    fx, fy = w / sw, h / sh
    reach = math.ceil(1.5 * max(fx, fy))
    cols = a.transpose(1, 0, 2)
    top, c_top = _plain_run(a[: sh // 2])
    bottom, c_bottom = _plain_run(a[::-1][: sh // 2])
    left, c_left = _plain_run(cols[: sw // 2])
    right, c_right = _plain_run(cols[::-1][: sw // 2])
    rows = top > 0 and bottom > 0 and np.abs(c_top - c_bottom).max() <= _BAR_TOLERANCE
    sides = left > 0 and right > 0 and np.abs(c_left - c_right).max() <= _BAR_TOLERANCE
    if rows or sides:  # plain bars: the picture may be as dark as they are at one edge...
        coarse = (
            round(left * fx) if sides else 0,
            round(top * fy) if rows else 0,
            round((sw - right) * fx) if sides else w,
            round((sh - bottom) * fy) if rows else h,
        )
        edges = {}
        if sides:
            edges.update(left=c_left, right=c_right)
        if rows:
            edges.update(top=c_top, bottom=c_bottom)
        x0, y0, x1, y1 = _refine(image, coarse, edges, reach, 0.02)
        if rows:  # ...so the thinner bar of a pair sets both
            y0 = min(y0, h - y1)
            y1 = h - y0
        if sides:
            x0 = min(x0, w - x1)
            x1 = w - x0
        return _fits((x0, y0, x1, y1), image.size)
    grey = (a[..., 0] + a[..., 1] + a[..., 2]).astype(np.float32) / 3
    for axis, lines, f in ((0, grey, fy), (1, grey.T, fx)):
        first, jump_first = _blurred_run(lines)
        last, jump_last = _blurred_run(lines[::-1])
        if (
            min(first, last) < 2
            or abs(first - last) > 2  # centred
            or min(jump_first, jump_last) < _BLUR_EDGE[0]
            or max(jump_first, jump_last) < _BLUR_EDGE[1]
        ):
            continue
        n = len(lines)
        if axis == 0:
            coarse = (0, round(first * f), w, round((n - last) * f))
            y0, y1 = _step(image, coarse, "top", reach), _step(image, coarse, "bottom", reach)
            box = None if y0 is None or y1 is None else (0, y0, w, y1)
        else:
            coarse = (round(first * f), 0, round((n - last) * f), h)
            x0, x1 = _step(image, coarse, "left", reach), _step(image, coarse, "right", reach)
            box = None if x0 is None or x1 is None else (x0, 0, x1, h)
        if box is not None and (box := _fits(box, image.size)) is not None:
            return box
    return None


def letterbox_box(image: Image.Image) -> Box | None:
    """The box ``(left, top, right, bottom)`` of the photo between bars on opposite sides.

    Letterboxing and padding: the photo centred on a wider or taller canvas, between plain
    bars (of one colour, top and bottom or left and right or both) or blurred ones (the photo
    enlarged and blurred behind itself, as phone apps fit a landscape photo into a portrait
    story). Plain bars are lines of one colour from the image's edge inwards; as a photo's edge
    can be as dark as a black bar, the thinner bar of a pair sets both. Blurred bars are smooth
    lines (small second differences) that end, on both sides about as far in, with a jump to
    the photo. Found on a thumbnail of at most 160 pixels, then placed exactly on the image.
    ``None`` when there are no such bars, or when what they leave is too small to be a photo
    or is nearly the whole image.
    """
    a = _thumbnail(image)
    return None if min(a.shape[:2]) < 16 else _letterbox(image, a)


def content_boxes(image: Image.Image) -> list[Box]:
    """Where the photo may be inside a found image: :func:`letterbox_box`, then
    :func:`content_box` when it differs (by more than half a percent of the long side). Each is
    hashed (``pdq.region``, then ``pdq.region.2``): of a photo as dark as its bars the content
    box can miss, and of a screenshot with even margins the letterbox box is the whole page."""
    if image.mode != "RGB":
        image = image.convert("RGB")
    a = _thumbnail(image)
    if min(a.shape[:2]) < 16:
        return []
    out: list[Box] = []
    tolerance = max(2, round(0.005 * max(image.size)))
    for box in (_letterbox(image, a), _surround_box(image, a)):
        if box is None:
            continue
        if all(max(abs(p - q) for p, q in zip(box, b, strict=True)) > tolerance for b in out):
            out.append(box)
    return out


# ---------------------------------------------------------------- reference variants

_DIHEDRAL = {
    "rot90": Image.Transpose.ROTATE_90,
    "rot180": Image.Transpose.ROTATE_180,
    "rot270": Image.Transpose.ROTATE_270,
    "flipv": Image.Transpose.FLIP_TOP_BOTTOM,
    "mirror": Image.Transpose.FLIP_LEFT_RIGHT,
    "transpose": Image.Transpose.TRANSPOSE,
    "transverse": Image.Transpose.TRANSVERSE,
}
"""Tags of the seven other dihedral transforms (rot90 is a quarter turn counter-clockwise).
Each is hashed from the transformed pixels: PDQ's own dihedral hashes (made from the DCT of the
upright picture) differ from the hash of the turned picture by up to 74 bits on near-symmetric
photos (a landscape reflected in water)."""

CROP_SIZES = (0.95, 0.9, 0.85, 0.8)
"""Reference crop variants keep these shares of the width and height (5 to 20% cut away)...

PDQ is shift-sensitive: moving the window by 1% of the picture changes about 30 of its 256
bits, 2% about 60. So the windows of each size are laid on a grid of :data:`CROP_STEP`."""

CROP_STEP = 0.025
"""...every 2.5% of the picture's width and height (164 windows)."""

WIDE_CROPS = {
    "c": (0.5, 0.5),
    "tl": (0.0, 0.0),
    "tr": (1.0, 0.0),
    "bl": (0.0, 1.0),
    "br": (1.0, 1.0),
}
"""30% crops (keeping 70% x 70%), centred and towards each corner; also 25% and 27.5% crops
(:data:`CORNER_CROP_SIZES`) towards each corner."""

CORNER_CROP_SIZES = (0.75, 0.725)
"""Crops keeping 75% and 72.5% of the width and height, towards each corner (``pdq.crop25tl``,
``pdq.crop27tl``): with the 70% ones they cover a 25-30% crop from a corner, which the 5-20%
grid and the 30% crops alone left 20-30 bits too far (issue 10)."""


def _crop_windows() -> list[tuple[str, float, tuple[float, float]]]:
    """(tag, kept share, anchor) of every crop variant."""
    out: list[tuple[str, float, tuple[float, float]]] = []
    for size in CROP_SIZES:
        steps = round((1 - size) / CROP_STEP)
        for i in range(steps + 1):
            for j in range(steps + 1):
                tag = f"crop{round((1 - size) * 100)}-{i}{j}"
                out.append((tag, size, (i / steps, j / steps)))
    out += [(f"crop30{name}", 0.7, anchor) for name, anchor in WIDE_CROPS.items()]
    for size in CORNER_CROP_SIZES:
        out += [
            (f"crop{int((1 - size) * 100)}{name}", size, anchor)
            for name, anchor in WIDE_CROPS.items()
            if name != "c"
        ]
    return out


CROP_WINDOWS = _crop_windows()

MIRROR_CROP_WINDOWS = [w for w in CROP_WINDOWS if not w[0].startswith(("crop25", "crop27"))]
"""The crop windows also laid on the mirrored photo (``pdq.mcrop20-03``, ``pdq.mcrop30tl``):
a mirrored copy that is then cropped is near none of the upright crops (issue 10: mirror +
crop was found 0-4% of the time)."""

MIRROR_ROTATIONS = (-4.0, -2.0, 2.0, 4.0)
"""Turns of the mirrored photo, three ways each as :data:`ROTATIONS` (``pdq.mrot+2``,
``pdq.mrot+2w``, ``pdq.mrot+2c``): a mirrored copy turned by 1-5 degrees."""

SQUARE_SIZES = (1.0, 0.9)
"""Square crops: the largest square of the photo and one of 90% of its short side...

A square crop (profile pictures, feeds) keeps a window of another shape, which no crop of the
photo's own shape is near."""

SQUARE_STEP = 0.035
"""...laid every 3.5% of the square's side along the photo (and across it, for the 90% one):
21 squares for a 3:2 photo, 121 in all with the 90% ones."""


def _square_windows(size: tuple[int, int]) -> list[tuple[str, tuple[int, int, int, int]]]:
    """(tag, box) of the square crops of a photo of ``size``."""
    w, h = size
    out: list[tuple[str, tuple[int, int, int, int]]] = []
    for keep in SQUARE_SIZES:
        side = min(w, h) * keep
        nx = math.ceil((w - side) / (SQUARE_STEP * side) - 0.01)
        ny = math.ceil((h - side) / (SQUARE_STEP * side) - 0.01)
        for i in range(nx + 1):
            for j in range(ny + 1):
                left = (w - side) * (i / nx if nx else 0.5)
                top = (h - side) * (j / ny if ny else 0.5)
                box = (round(left), round(top), round(left + side), round(top + side))
                out.append((f"sq{round(keep * 100)}-{i}-{j}", box))
    return out


ROTATIONS = (-10.0, -8.0, -6.0, -4.0, -2.0, 2.0, 4.0, 6.0, 8.0, 10.0)
"""Reference variants turned by these degrees, three ways each: on a canvas grown to keep the
corners, filled black (``pdq.rot+4``) or white (``pdq.rot+4w``: also a transparent turn, as
decoding puts transparency on white), and cropped to the largest upright rectangle of the
photo's shape inside the turned photo (``pdq.rot+4c``, as a phone's "straighten" does). PDQ
needs them close: a turn 1 degree off one changes up to about 45 bits, 2 degrees up to about
65 (measured on the corpus), so every turn up to 11 degrees is within a degree of one."""

ROTATION_FILLS = {"": (0, 0, 0), "w": WHITE}
"""Tag suffix and corner colour of the turned variants on a grown canvas."""


def _straightened(turned: Image.Image, size: tuple[int, int], degrees: float) -> Image.Image:
    """The largest rectangle of the photo's shape (``size``) inside ``turned`` (the photo turned
    by ``degrees`` on a grown canvas): what a "straighten" tool keeps."""
    w, h = size
    c, s = math.cos(math.radians(abs(degrees))), math.sin(math.radians(abs(degrees)))
    k = min(w / (w * c + h * s), h / (w * s + h * c))
    cx, cy, kw, kh = turned.width / 2, turned.height / 2, k * w / 2, k * h / 2
    return turned.crop((round(cx - kw), round(cy - kh), round(cx + kw), round(cy + kh)))


def _pdq(image: Image.Image) -> tuple[str, int]:
    vector, quality = pdqhash.compute(_pdq_pixels(image))
    return _bits_to_hex(vector), int(quality)


def _crop(image: Image.Image, fraction: float, anchor: tuple[float, float]) -> Image.Image:
    w, h = image.size
    kw, kh = max(1, round(w * (1 - fraction))), max(1, round(h * (1 - fraction)))
    left, top = round((w - kw) * anchor[0]), round((h - kh) * anchor[1])
    return image.crop((left, top, left + kw, top + kh))


def reference_variants(image: Image.Image) -> list[HashValue]:
    """Extra PDQ hashes of a reference photo, for the edits that defeat a single hash.

    Made once at enrolment, from the pixels (which are then dropped), so they cost nothing per
    found image: the seven other dihedral transforms (mirror, quarter turns...), crops of 5 to 20%
    on a grid of windows (:data:`CROP_WINDOWS`), of 30% centred and towards each corner and of 25
    and 27.5% towards each corner, the same crops of the mirrored photo
    (:data:`MIRROR_CROP_WINDOWS`), turns of 2 to 10 degrees with black or white corners or
    straightened (:data:`ROTATIONS`) and of the mirrored photo by 2 and 4 degrees
    (:data:`MIRROR_ROTATIONS`), and square crops (:data:`SQUARE_SIZES`): 516 hashes for a 3:2
    photo (421 for a square one). Algorithm names are ``pdq.<tag>`` (``pdq.mirror``,
    ``pdq.crop20-03``, ``pdq.crop30tl``, ``pdq.mcrop20-03``, ``pdq.rot-4``, ``pdq.rot+6w``,
    ``pdq.rot+2c``, ``pdq.mrot+2``, ``pdq.sq100-3-0``...).
    """
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    mirrored = rgb.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    out: list[HashValue] = []
    for tag, transpose in _DIHEDRAL.items():
        value, q = _pdq(rgb.transpose(transpose))
        out.append(HashValue(f"pdq.{tag}", value, q))
    for tag, size, anchor in CROP_WINDOWS:
        value, q = _pdq(_crop(rgb, 1 - size, anchor))
        out.append(HashValue(f"pdq.{tag}", value, q))
    for tag, size, anchor in MIRROR_CROP_WINDOWS:
        value, q = _pdq(_crop(mirrored, 1 - size, anchor))
        out.append(HashValue(f"pdq.m{tag}", value, q))
    for prefix, photo, angles in (("rot", rgb, ROTATIONS), ("mrot", mirrored, MIRROR_ROTATIONS)):
        for degrees in angles:
            for suffix, fill in ROTATION_FILLS.items():
                turned = photo.rotate(
                    degrees, resample=Image.Resampling.BILINEAR, expand=True, fillcolor=fill
                )
                value, q = _pdq(turned)
                out.append(HashValue(f"pdq.{prefix}{degrees:+g}{suffix}", value, q))
            value, q = _pdq(_straightened(turned, photo.size, degrees))
            out.append(HashValue(f"pdq.{prefix}{degrees:+g}c", value, q))
    for tag, box in _square_windows(rgb.size):
        value, q = _pdq(rgb.crop(box))
        out.append(HashValue(f"pdq.{tag}", value, q))
    return out


# ---------------------------------------------------------------- hashing


def _all_hashes(image: Image.Image) -> Iterator[HashValue]:
    small = _hash_input(image)  # reduced once, for every algorithm
    for alg in algorithms():
        yield alg.compute(small)
    for i, box in enumerate(content_boxes(image)):
        value, quality = _pdq(image.crop(box))
        name = f"pdq{VARIANT_SEPARATOR}{REGION}" + (f"{VARIANT_SEPARATOR}{i + 1}" if i else "")
        yield HashValue(name, value, quality)


def compute_hashes_from_image(
    image: Image.Image, sha256: str, width: int, height: int
) -> ImageHashes:
    """Every registered hash of an image already decoded by :func:`decode_image` (each given a
    copy box-reduced to :data:`PDQ_INPUT` pixels on its long side), plus the PDQ hashes of the
    boxes where its photo may be when it is padded, letterboxed or in a screenshot
    (``pdq.region``, and ``pdq.region.2`` for a second, different box; see
    :func:`content_boxes`)."""
    return ImageHashes(sha256=sha256, width=width, height=height, hashes=tuple(_all_hashes(image)))


def compute_hashes(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageHashes:
    """SHA-256, full oriented size and every registered hash of image bytes (plus
    ``pdq.region``, see :func:`compute_hashes_from_image`).

    A top-level function, so it can run in a process pool. Raises :class:`NotAnImageError`.
    """
    sha256 = hashlib.sha256(data).hexdigest()
    image, width, height = _decode(data, max_pixels)
    try:
        return compute_hashes_from_image(image, sha256, width, height)
    except Exception as exc:  # a hash library choking on odd pixels
        raise NotAnImageError(f"not a decodable image: hashing failed: {_reason(exc)}") from None


def compute_reference_hashes(
    data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS, variants: bool = True
) -> ImageHashes:
    """What enrolment stores for a reference photo: :func:`compute_hashes`, and with
    ``variants`` the :func:`reference_variants` too. Raises :class:`NotAnImageError`."""
    sha256 = hashlib.sha256(data).hexdigest()
    image, width, height = _decode(data, max_pixels)
    try:
        hashes = compute_hashes_from_image(image, sha256, width, height)
        if not variants:
            return hashes
        extra = tuple(reference_variants(image))
    except Exception as exc:
        raise NotAnImageError(f"not a decodable image: hashing failed: {_reason(exc)}") from None
    return ImageHashes(sha256, width, height, hashes.hashes + extra)
