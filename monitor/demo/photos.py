"""Synthetic "photos" made in code: deterministic, busy, and far apart from each other.

``generate_photo(seed)`` paints a soft multi-octave colour noise background, a dozen large
translucent shapes (ellipses, polygons, bands), many small blobs and film-grain noise. PDQ's
quality score is 100 for these images.

Distinct seeds must never look alike to a perceptual hash, or a demo distractor could "match" a
demo reference. Random pictures give random 64-bit pHashes, and among a few dozen of them some
pairs fall within 20 bits by chance. So each photo's low-frequency luminance (the 8x8 DCT block
that pHash reads) is set to a codeword of the extended BCH(64, 16) code, whose codewords differ
in at least 24 bits: for seeds in ``range(DISTINCT_SEEDS)`` the pHash of ``generate_photo(seed)``
*is* that codeword, and any two such photos are at least 24 pHash bits apart. The codeword
pattern is a smooth light/shade field that survives resizing and recompression (pHash distance
0 for the edits in :mod:`monitor.demo.transforms` ``EDITS``). PDQ is left to chance: measured
minimum over seeds 0-59 is 96 of 256 bits.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from monitor.demo.transforms import encode

__all__ = ["DISTINCT_SEEDS", "generate_photo", "photo_bytes"]

_N = 32  # pHash reads a 32x32 greyscale thumbnail ...
_K = 8  # ... and the top-left 8x8 block of its DCT
_AMPLITUDE = 5000.0  # target |DCT coefficient| of the code pattern (~20 grey levels of shading)


def _bch_generator(designed_distance: int = 23) -> list[int]:
    """Generator polynomial (low degree first) of the narrow-sense binary BCH code of length 63."""
    exp = [0] * 126
    log = [0] * 64
    x = 1
    for i in range(63):  # GF(64) with the primitive polynomial x^6 + x + 1
        exp[i] = exp[i + 63] = x
        log[x] = i
        x <<= 1
        if x & 64:
            x ^= 0b1000011

    def mul(a: int, b: int) -> int:
        return 0 if a == 0 or b == 0 else exp[log[a] + log[b]]

    seen: set[int] = set()
    gen = [1]
    for i in range(1, designed_distance):
        if i in seen:
            continue
        coset, j = set(), i
        while j not in coset:
            coset.add(j)
            j = 2 * j % 63
        seen |= coset
        minimal = [1]  # product of (x - a^j) over the cyclotomic coset: coefficients in GF(2)
        for j in coset:
            nxt = [0] * (len(minimal) + 1)
            for k, c in enumerate(minimal):
                nxt[k + 1] ^= c
                nxt[k] ^= mul(c, exp[j])
            minimal = nxt
        prod = [0] * (len(gen) + len(minimal) - 1)
        for a, ca in enumerate(gen):
            if ca:
                for b, cb in enumerate(minimal):
                    prod[a + b] ^= cb
        gen = prod
    return gen


@lru_cache(maxsize=1)
def _code_table() -> np.ndarray:
    """Balanced codewords (32 ones, bit 0 set) of the extended BCH(64, 16, 24) code, (n, 64)."""
    g = np.array(_bch_generator(), dtype=np.uint8)  # degree 47, so k = 16
    k = 63 - (len(g) - 1)
    basis = np.zeros((k, 64), dtype=np.uint8)
    for i in range(k):
        basis[i, i : i + len(g)] = g
    basis[:, 63] = basis[:, :63].sum(axis=1) % 2  # overall parity: minimum distance 23 -> 24
    messages = ((np.arange(2**k)[:, None] >> np.arange(k)) & 1).astype(np.uint8)
    words = (messages @ basis) % 2
    # pHash compares each coefficient with the median of the 64: a balanced codeword puts the
    # median between -A and +A. Bit 0 is the DC term, which is always large: it must be 1.
    keep = (words.sum(axis=1) == 32) & (words[:, 0] == 1)
    return words[keep]


#: Seeds ``0 .. DISTINCT_SEEDS - 1`` get distinct pHash codewords (>= 24 bits apart).
DISTINCT_SEEDS = 15183


def _background(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """Soft multi-octave colour noise at quarter resolution, tinted, as an RGB image."""
    sw, sh = max(width // 4, 8), max(height // 4, 8)
    acc = np.zeros((sh, sw, 3), dtype=np.float32)
    amp = 1.0
    for cells in (2, 4, 8, 16, 32):
        gh, gw = (
            (max(2, cells * sh // sw) + 2, cells + 2)
            if sw >= sh
            else (cells + 2, max(2, cells * sw // sh) + 2)
        )
        grid = rng.random((gh, gw, 3), dtype=np.float32)
        layer = np.stack(
            [
                np.asarray(Image.fromarray(grid[..., c], "F").resize((sw, sh), Image.BICUBIC))
                for c in range(3)
            ],
            axis=-1,
        )
        acc += amp * (layer - 0.5)
        amp *= 0.55
    base = rng.random(3) * 160 + 50
    tint = (rng.random((3, 3)) * 1.2 - 0.2).astype(np.float32)
    arr = np.clip(base + (acc @ tint.T) * 220, 0, 255).astype(np.uint8)
    return Image.fromarray(arr, "RGB")


def _colour(rng: np.random.Generator, alpha: tuple[int, int]) -> tuple[int, int, int, int]:
    r, g, b = (int(v) for v in rng.integers(0, 256, 3))
    return r, g, b, int(rng.integers(*alpha))


def _shapes(rng: np.random.Generator, im: Image.Image) -> None:
    """Paint translucent shapes and small blobs onto ``im`` in place."""
    draw = ImageDraw.Draw(im, "RGBA")
    w, h = im.size
    for _ in range(int(rng.integers(8, 14))):
        kind = int(rng.integers(0, 3))
        fill = _colour(rng, (120, 230))
        cx, cy = float(rng.random() * w), float(rng.random() * h)
        if kind == 0:
            rx, ry = (rng.random(2) * 0.25 + 0.04) * w
            draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=fill)
        elif kind == 1:
            n = int(rng.integers(3, 8))
            angles = np.sort(rng.random(n)) * 2 * np.pi
            radii = (rng.random() * 0.25 + 0.05) * w * (0.5 + rng.random(n))
            points = [
                (float(cx + r * np.cos(a)), float(cy + r * np.sin(a)))
                for a, r in zip(angles, radii, strict=True)
            ]
            draw.polygon(points, fill=fill)
        else:
            angle = float(rng.random() * np.pi)  # a band right across the picture
            dx, dy = np.cos(angle) * (w + h), np.sin(angle) * (w + h)
            draw.line(
                [(cx - dx, cy - dy), (cx + dx, cy + dy)], fill=fill, width=int(rng.integers(8, 48))
            )
    for _ in range(int(rng.integers(60, 120))):
        cx, cy = float(rng.random() * w), float(rng.random() * h)
        r = float(rng.random() * 8 + 1.5)
        draw.ellipse([cx - r, cy - r * 0.6, cx + r, cy + r * 0.6], fill=_colour(rng, (60, 180)))


def _imprint_code(arr: np.ndarray, code: np.ndarray, passes: int = 2) -> np.ndarray:
    """Set the low-frequency pHash block of ``arr`` (float HxWx3) to ``+-A`` by ``code`` (8x8).

    Measures the 8x8 DCT block exactly as imagehash does (greyscale, Lanczos to 32x32, DCT-II)
    and adds the smooth luminance field that moves it to the target; twice, to absorb clipping.
    """
    h, w = arr.shape[:2]
    k = np.arange(_K)[:, None]
    dct = (2 * np.cos(np.pi * k * (2 * np.arange(_N)[None] + 1) / (2 * _N))).astype(np.float32)
    weights = np.ones(_K, dtype=np.float32)
    weights[0] = 0.5
    rows = np.cos(np.pi * k * (np.arange(h)[None] + 0.5) / h).astype(np.float32) * weights[:, None]
    cols = np.cos(np.pi * k * (np.arange(w)[None] + 0.5) / w).astype(np.float32) * weights[:, None]
    target = np.where(code, _AMPLITUDE, -_AMPLITUDE).astype(np.float32)
    for _ in range(passes):
        small = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")
        grey = np.asarray(small.convert("L").resize((_N, _N), Image.LANCZOS), dtype=np.float32)
        delta = target - dct @ grey @ dct.T
        delta[0, 0] = 0.0  # keep the mean brightness
        arr = arr + (rows.T @ delta @ cols / (_N * _N))[..., None]
    return arr


def generate_photo(seed: int, size: tuple[int, int] = (800, 600)) -> Image.Image:
    """A deterministic synthetic photo (RGB, ``size`` = (width, height)) for ``seed``.

    The same seed and size always give the same pixels. Photos of seeds below
    :data:`DISTINCT_SEEDS` are >= 24 pHash bits apart (seeds ``s`` and ``s + DISTINCT_SEEDS``
    share a pHash). Sizes below 32x32 are refused.
    """
    width, height = size
    if width < 32 or height < 32:
        raise ValueError(f"photo size must be at least 32x32, got {width}x{height}")
    rng = np.random.default_rng(seed)
    half = _background(rng, width, height).resize(
        (max(width // 2, 16), max(height // 2, 16)), Image.BICUBIC
    )
    _shapes(rng, half)
    half = half.filter(ImageFilter.GaussianBlur(0.8))  # soft edges
    arr = np.asarray(half.resize((width, height), Image.BICUBIC), dtype=np.float32)
    arr = arr * (200 / 255) + 28  # headroom for the shading field
    arr += rng.standard_normal((height, width, 1), dtype=np.float32) * 4  # film grain
    code = _code_table()[seed % DISTINCT_SEEDS].reshape(_K, _K).astype(bool)
    arr = _imprint_code(arr, code)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def photo_bytes(
    seed: int, size: tuple[int, int] = (800, 600), format: str = "JPEG", quality: int = 90
) -> bytes:
    """:func:`generate_photo` encoded as ``format`` (JPEG, PNG, WEBP...) at ``quality``."""
    return encode(generate_photo(seed, size), format, quality)
