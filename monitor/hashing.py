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
decoder skips detail, up to 1/8 scale) or box-reduced right after decoding, to a short side of
at least :data:`WORKING_SIZE` pixels. Enrolment and scans decode the same way, so a reference and
its copy are always hashed alike.
"""

from __future__ import annotations

import hashlib
import io
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
        """Hash an RGB image as returned by :func:`decode_image`."""
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
only a 64x64 summary, and its filter costs time per input pixel (8 ms for 640x427, 1 ms here)."""


def _pdq_pixels(image: Image.Image) -> np.ndarray:
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    w, h = rgb.size
    if max(w, h) > PDQ_INPUT:
        scale = PDQ_INPUT / max(w, h)
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        rgb = rgb.resize(size, Image.Resampling.BOX)
    return np.asarray(rgb)


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
            if im.format in ("JPEG", "MPO") and min(width, height) >= 2 * WORKING_SIZE:
                im.draft("RGB", (WORKING_SIZE, WORKING_SIZE))
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
"""Variant tag of the hash of an image's content box (see :func:`content_box`)."""

_BOX_SIDE = 160  # the content box is looked for on a thumbnail this long
_BG_TOLERANCE = 24  # a pixel this close (per channel) to the background colour is background
_MIN_BOX_AREA = 0.08  # a content box smaller than this share of the image is not a photo
_MAX_BOX_AREA = 0.93  # one larger than this is the whole image: nothing to cut away


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


def content_box(image: Image.Image) -> tuple[int, int, int, int] | None:
    """The box ``(left, top, right, bottom)`` of the photo inside a larger, plainer canvas.

    Finds what a re-poster wraps around a photo: uniform borders (padding, letterboxing) and
    the plain page of a screenshot of a social media post (a photo between lines of text).
    The background is the colour of most of the image's outer frame; the box is the largest
    block of rows, then of columns, that are mostly not background, refined twice (lines of
    text are thin and separated by background, so the photo wins). ``None`` when the image has
    no uniform surround, or when what is left is too small to be a photo or is the whole image.
    Works on a thumbnail of at most 160 pixels, so it costs well under a millisecond.
    """
    w, h = image.size
    scale = min(1.0, _BOX_SIDE / max(w, h))
    small = image
    if scale < 1.0:
        small = image.resize(
            (max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BOX
        )
    a = np.asarray(small.convert("RGB"), dtype=np.int16)
    sh, sw = a.shape[:2]
    if sh < 16 or sw < 16:
        return None
    frame = np.concatenate((a[0], a[-1], a[1:-1, 0], a[1:-1, -1]))
    bg = np.median(frame, axis=0)
    if (np.abs(frame - bg).max(axis=1) <= _BG_TOLERANCE).mean() < 0.6:
        return None  # no uniform surround: the picture fills the image
    busy = np.abs(a - bg).max(axis=2) > _BG_TOLERANCE
    gap_r, gap_c = max(1, sh // 50), max(1, sw // 50)
    c0, c1 = 0, sw
    r0, r1 = _longest_run(busy.mean(axis=1) > 0.25, gap_r)
    for _ in range(2):
        if r1 - r0 < 8:
            return None
        c0, c1 = _longest_run(busy[r0:r1].mean(axis=0) > 0.5, gap_c)
        if c1 - c0 < 8:
            return None
        r0, r1 = _longest_run(busy[:, c0:c1].mean(axis=1) > 0.5, gap_r)
    area = (r1 - r0) * (c1 - c0) / (sh * sw)
    if r1 - r0 < 8 or not _MIN_BOX_AREA <= area <= _MAX_BOX_AREA:
        return None
    # back to full size, one thumbnail pixel inwards (the thumbnail blends the edges)
    fx, fy = w / sw, h / sh
    box = (
        round((c0 + 1) * fx),
        round((r0 + 1) * fy),
        round((c1 - 1) * fx),
        round((r1 - 1) * fy),
    )
    return box if box[2] - box[0] >= 16 and box[3] - box[1] >= 16 else None


# ---------------------------------------------------------------- reference variants

_DIHEDRAL_TAGS = ("", "rot90", "rot180", "rot270", "flipv", "mirror", "transpose", "transverse")
"""Tags of the eight hashes of :func:`pdqhash.compute_dihedral`, in its order (rot90 is a
quarter turn counter-clockwise, as ``Image.Transpose.ROTATE_90``)."""

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
"""30% crops (keeping 70% x 70%), centred and towards each corner."""


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
    return out


CROP_WINDOWS = _crop_windows()

ROTATIONS = (-6.0, -3.0, 3.0, 6.0)
"""Reference variants turned by these degrees (the canvas grows; corners filled black)."""


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
    on a grid of windows (:data:`CROP_WINDOWS`) and of 30% centred and towards each corner, and
    small rotations. Algorithm names are ``pdq.<tag>`` (``pdq.mirror``, ``pdq.crop20-03``,
    ``pdq.crop30tl``, ``pdq.rot-3``...).
    """
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    out: list[HashValue] = []
    vectors, quality = pdqhash.compute_dihedral(_pdq_pixels(rgb))
    for tag, vector in zip(_DIHEDRAL_TAGS, vectors, strict=True):
        if tag:
            out.append(HashValue(f"pdq.{tag}", _bits_to_hex(vector), int(quality)))
    for tag, size, anchor in CROP_WINDOWS:
        value, q = _pdq(_crop(rgb, 1 - size, anchor))
        out.append(HashValue(f"pdq.{tag}", value, q))
    for degrees in ROTATIONS:
        turned = rgb.rotate(degrees, resample=Image.Resampling.BILINEAR, expand=True)
        value, q = _pdq(turned)
        out.append(HashValue(f"pdq.rot{degrees:+g}", value, q))
    return out


# ---------------------------------------------------------------- hashing


def _all_hashes(image: Image.Image) -> Iterator[HashValue]:
    for alg in algorithms():
        yield alg.compute(image)
    box = content_box(image)
    if box is not None:
        value, quality = _pdq(image.crop(box))
        yield HashValue(f"pdq{VARIANT_SEPARATOR}{REGION}", value, quality)


def compute_hashes_from_image(
    image: Image.Image, sha256: str, width: int, height: int
) -> ImageHashes:
    """Every registered hash of an image already decoded by :func:`decode_image`, plus the PDQ
    hash of its content box (``pdq.region``) when it has one (see :func:`content_box`)."""
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
