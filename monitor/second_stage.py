"""Second stage: more hashes of a found image that came near a reference but matched nothing.

The first stage compares a found image's own PDQ hashes (the whole picture and its content
boxes) with every stored hash of the references. Some chains of two edits leave a copy in a
grey zone: nearer to a reference than unrelated photos usually are, but beyond every threshold.
Only for such a candidate (see :meth:`monitor.matching.ReferenceIndex.grey`) the found image,
still in memory, is transformed here and hashed again; the references are untouched: nothing
more is stored about a reference photo than its PDQ hashes (promise 1; no keypoints).

Several kinds of hashes, each a PDQ hash named ``pdq.s2.<what>``:

- **counter-turns** (``pdq.s2.r+35f``, ``pdq.s2.r-20s``; tenths of a degree): the picture turned back by 1 to 5
  degrees either way in steps of :data:`TURN_STEP`, then cut down two ways: to the rectangle a
  turn with a grown canvas leaves the original in (``f``: the corners of a crop that was then
  turned, black, white or coloured, fall outside) and to the largest upright rectangle inside
  (``s``: a crop that was then "straightened"). A crop of a turned photo is near none of the
  stored turns (whole photo) nor the stored crops (upright); turned back, it is a crop, near a
  stored crop. A third way (``u``, :func:`_unstraightened`): turned back onto a canvas as large
  as the picture a "straighten" was cut from, the corners it does not reach filled with the
  picture blurred (a crop that was then straightened, cut down again, is between the stored
  crops' sizes). Compared with every stored hash, at ``second_stage_pdq_threshold``.
- **content boxes cut inwards** (``pdq.s2.b1i4``: the first content box with 4% of each side
  cut away; :data:`INSETS`): the photo in a screenshot or a border whose box is a little off.
  Compared with every stored hash, at ``second_stage_pdq_threshold``.
- **aspect boxes** (``pdq.s2.a.w160t``: the first content box, or the whole picture when none
  is found, kept as wide as it is and cut to the height of a common photo shape (:data:`ASPECTS`,
  here 16:10) at its top, middle or bottom; ``h`` for as high as it is, cut to the shape's width
  around its middle): a screenshot whose photo is as dark or as light as the page around it
  (a full-width story, a dark post) has a content box of the right width but the wrong height,
  or none. Compared with every stored hash, at ``second_stage_aspect_threshold``.
- **windows** (``pdq.s2.w.crop30tl``): the picture cut to some of the enrolment crop windows
  (:data:`WINDOWS`, from :data:`monitor.hashing.CROP_WINDOWS`), each compared ONLY with the
  reference's hash of the same window (``pdq.crop30tl``): a sticker or emoji over part of the
  photo leaves some windows clean, and a window compared with its one counterpart has one
  chance, not ~500, to meet a look-alike (``second_stage_window_threshold``).
- **stickers filled in** (``pdq.s2.w.filled``): flat blobs of one colour (:func:`flat_blobs`:
  stickers, emoji, censor bars, labels) painted over from the pixels around them
  (:func:`fill_holes`), the whole picture hashed again and compared ONLY with each photo's own
  hash (``pdq``), like a window (``second_stage_window_threshold``; it counts in the vote too).

Everything here works on the decoded image in memory (promise 2).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
from PIL import Image
from scipy import ndimage

from monitor.errors import NotAnImageError
from monitor.hashing import (
    CROP_WINDOWS,
    DEFAULT_MAX_PIXELS,
    VARIANT_SEPARATOR,
    Box,
    _hash_input,
    _pdq,
    content_boxes,
    decode_image,
)
from monitor.types import HashValue

__all__ = [
    "SECOND",
    "ANCHORS",
    "ASPECT",
    "ASPECTS",
    "INSETS",
    "TURNS",
    "TURN_STEP",
    "FILLED",
    "WINDOW",
    "WINDOWS",
    "WINDOW_VOTES",
    "WINDOW_VOTE_SLACK",
    "aspect_boxes",
    "fill_holes",
    "flat_blobs",
    "is_second_stage",
    "second_stage_hashes",
    "second_stage_from_bytes",
    "window_tag",
]

SECOND = "s2"
"""The role prefix of second-stage hashes: ``pdq.s2.<what>``."""

ASPECT = "a"
"""Second-stage aspect boxes are ``pdq.s2.a.<shape and place>`` (``pdq.s2.a.w160t``)."""

WINDOW = "w"
"""Second-stage window hashes are ``pdq.s2.w.<crop tag>``."""

FILLED = "filled"
"""The window tag of the picture with its flat blobs (stickers) filled in: ``pdq.s2.w.filled``,
compared with each photo's own hash (``pdq``) only, like a window with its own window."""

FLAT_SPREAD = 4.0
"""A pixel is flat when the standard deviation of each colour channel over the 5x5 pixels
around it (in the 256-pixel picture PDQ is given) is under this many levels."""

BLOB_SPREAD = 6.0
"""...and a flat blob is a sticker's when its colour is one colour: each channel's standard
deviation over the whole blob under this many levels (a smooth sky or a gradient is flat
locally but spreads further)."""

BLOB_SHARES = (0.004, 0.3)
"""The smallest and largest share of the picture a flat blob may cover to be filled in."""

TURN_STEP = 0.5
"""Degrees between counter-turns: PDQ changes by up to about 45 bits for a turn 1 degree off,
so a step of half a degree leaves every turn within a quarter degree of one tried."""

TURNS = tuple(
    sign * (1.0 + TURN_STEP * i) for i in range(round(4 / TURN_STEP) + 1) for sign in (1, -1)
)
"""The counter-turns tried, in degrees: +-1, +-1.5, ... +-5 (18)."""

WINDOWS = (
    "crop30tl",
    "crop30tr",
    "crop30bl",
    "crop30br",
    "crop30c",
    "crop25tl",
    "crop25tr",
    "crop25bl",
    "crop25br",
    "crop20-00",
    "crop20-08",
    "crop20-80",
    "crop20-88",
    "crop20-04",
    "crop20-40",
    "crop20-48",
    "crop20-84",
    "crop20-44",
)
"""Enrolment crop windows the found image is cut to, each compared with the reference's hash of
the same window: 70% at the corners and centre, 75% at the corners, 80% at the corners, the
middles of the sides and the centre."""

WINDOW_VOTES = 3
WINDOW_VOTE_SLACK = 12
"""A vote of windows: :data:`WINDOW_VOTES` windows of a found image, each within the window
threshold plus :data:`WINDOW_VOTE_SLACK` bits of the same window of ONE photo, match it (64 + 12
= 76 by default). Several stickers can leave no window clean enough on its own, but several
near; unrelated photos (tune half) had their third-nearest window of a photo 100 bits or
more away, their nearest 88."""

INSETS = (0.02, 0.04, 0.07)
"""Shares of each side cut from a content box (:func:`monitor.hashing.content_boxes`) for the
inset hashes: a box that took in a strip of the page around the photo, or cut into it, is a few
pixels off, and PDQ loses about 30 bits per 1% of shift; the box cut inwards is a crop of the
photo, near a stored crop."""

ASPECTS = (4 / 3, 3 / 2, 16 / 10, 16 / 9, 1.0, 4 / 5, 3 / 4, 2 / 3, 9 / 16)
"""Width / height of the photo shapes tried for aspect boxes: phone (4:3, 3:4), camera (3:2,
2:3), screen (16:10, 16:9, 9:16), square and 4:5 (a portrait post)."""

ANCHORS = {"t": 0.0, "m": 0.5, "b": 1.0}
"""Where an aspect box of a box's width sits in its height: top, middle, bottom."""

_ASPECT_SLACK = 0.03  # an aspect box within this share of the box's own height is the box

_WINDOW_BOXES = {tag: (size, anchor) for tag, size, anchor in CROP_WINDOWS if tag in WINDOWS}


def is_second_stage(name: str) -> bool:
    """Whether a hash name is a second-stage hash (``pdq.s2.r+20f``, ``pdq.s2.w.crop30tl``)."""
    parts = name.split(VARIANT_SEPARATOR)
    return len(parts) > 2 and parts[1] == SECOND


def window_tag(name: str) -> str | None:
    """The reference hash a second-stage window hash is compared with (``pdq.s2.w.crop30tl``
    -> ``pdq.crop30tl``), or ``None`` for any other hash."""
    parts = name.split(VARIANT_SEPARATOR, 3)
    if len(parts) == 4 and parts[1] == SECOND and parts[2] == WINDOW:
        if parts[3] == FILLED:  # the whole picture, stickers filled in: the photo's own hash
            return parts[0]
        return f"{parts[0]}{VARIANT_SEPARATOR}{parts[3]}"
    return None


def _counter_turns(image: Image.Image, turns: Iterable[float]) -> Iterable[HashValue]:
    w, h = image.size
    for degrees in turns:
        c, s = math.cos(math.radians(abs(degrees))), math.sin(math.radians(abs(degrees)))
        back = image.rotate(-degrees, resample=Image.Resampling.BILINEAR, expand=False)
        # A picture of (w0, h0) turned on a grown canvas fills w = w0 c + h0 s, h = w0 s + h0 c.
        det = c * c - s * s
        w0, h0 = (w * c - h * s) / det, (h * c - w * s) / det
        if min(w0, h0) >= 16:
            box = (
                round((w - w0) / 2) + 1,
                round((h - h0) / 2) + 1,
                round((w + w0) / 2) - 1,
                round((h + h0) / 2) - 1,
            )
            value, quality = _pdq(back.crop(box))
            yield HashValue(f"pdq.{SECOND}.r{round(degrees * 10):+d}f", value, quality)
        k = min(w / (w * c + h * s), h / (w * s + h * c))  # the largest upright rectangle
        kw, kh = k * w / 2, k * h / 2
        box = (round(w / 2 - kw), round(h / 2 - kh), round(w / 2 + kw), round(h / 2 + kh))
        value, quality = _pdq(back.crop(box))
        yield HashValue(f"pdq.{SECOND}.r{round(degrees * 10):+d}s", value, quality)
        value, quality = _pdq(_unstraightened(image, degrees))
        yield HashValue(f"pdq.{SECOND}.r{round(degrees * 10):+d}u", value, quality)


def _unstraightened(image: Image.Image, degrees: float) -> Image.Image:
    """The picture a "straighten" by ``degrees`` was cut from, as far as it can be told: the
    straightened picture keeps the largest upright rectangle of its shape inside the turned one
    (a share ``k`` of each side), so it is turned back onto a canvas ``1 / k`` as large, and
    the corners it does not reach are filled from the nearest picture (:func:`fill_holes`).
    A crop that was then straightened, cut down again to an upright rectangle (``s``), is a
    crop of 66-92% of the photo, between the stored crops' sizes; this is the crop itself."""
    w, h = image.size
    c, s = math.cos(math.radians(abs(degrees))), math.sin(math.radians(abs(degrees)))
    k = min(w / (w * c + h * s), h / (w * s + h * c))
    big_w, big_h = round(w / k), round(h / k)
    back = image.convert("RGBA").rotate(-degrees, resample=Image.Resampling.BILINEAR, expand=True)
    # The corners it does not reach: the picture itself, blurred and grown to the canvas (the
    # colours near each corner), under the turned picture.
    canvas = (
        image.resize((max(1, w // 16), max(1, h // 16)), Image.Resampling.BOX)
        .resize((big_w, big_h), Image.Resampling.BILINEAR)
        .convert("RGBA")
    )
    canvas.alpha_composite(back, ((big_w - back.width) // 2, (big_h - back.height) // 2))
    return canvas.convert("RGB")


def fill_holes(rgb: np.ndarray, holes: np.ndarray) -> np.ndarray:
    """``rgb`` (height x width x 3, uint8) with the pixels where ``holes`` is true filled from
    the pixels around them: each hole pixel takes the mean of the known pixels in the smallest
    block around it (2, 4, ... 64 pixels, coarse blocks blended in bilinearly) that has some."""
    if not holes.any():
        return rgb
    h, w = holes.shape
    known = (~holes).astype(np.float32)
    values = rgb.astype(np.float32) * known[..., None]
    out = rgb.astype(np.float32)
    todo = holes.copy()
    for block in (2, 4, 8, 16, 32, 64):
        size = (max(1, w // block), max(1, h // block))
        sums = [
            np.asarray(
                Image.fromarray(plane)
                .resize(size, Image.Resampling.BOX)
                .resize((w, h), Image.Resampling.BILINEAR)
            )
            for plane in (*(values[..., i] for i in range(3)), known)
        ]
        weight = sums[3]
        ready = todo & (weight > 0.2)
        for i in range(3):
            out[..., i][ready] = sums[i][ready] / weight[ready]
        todo &= ~ready
        if not todo.any():
            break
    if todo.any():  # nothing known near: the mean of the known pixels
        out[todo] = values.reshape(-1, 3).sum(axis=0) / max(1.0, float(known.sum()))
    return out.clip(0, 255).astype(np.uint8)


def flat_blobs(rgb: np.ndarray) -> np.ndarray:
    """Where a picture (height x width x 3, uint8) has flat blobs of one colour covering
    :data:`BLOB_SHARES` of it, such as stickers, emoji and censor bars drawn over a photo
    (their holes -- eyes, letters -- and a rim of 3 pixels included): a boolean mask."""
    a = rgb.astype(np.float32)
    mean = ndimage.uniform_filter(a, size=(5, 5, 1))
    square = ndimage.uniform_filter(a * a, size=(5, 5, 1))
    flat = np.sqrt(np.maximum(square - mean * mean, 0)).max(axis=2) < FLAT_SPREAD
    labels, n = ndimage.label(flat)
    if n == 0:
        return np.zeros(flat.shape, dtype=bool)
    index = np.arange(1, n + 1)
    area = flat.size
    sizes = ndimage.sum(flat, labels, index)
    keep = (sizes >= BLOB_SHARES[0] * area) & (sizes <= BLOB_SHARES[1] * area)
    for i in range(3):
        m = ndimage.mean(a[..., i], labels, index)
        m2 = ndimage.mean(a[..., i] * a[..., i], labels, index)
        keep &= np.sqrt(np.maximum(m2 - m * m, 0)) < BLOB_SPREAD
    if not keep.any():
        return np.zeros(flat.shape, dtype=bool)
    mask = np.concatenate(([False], keep))[labels]
    return ndimage.binary_dilation(ndimage.binary_fill_holes(mask), iterations=3)


def _filled(image: Image.Image) -> Iterable[HashValue]:
    pixels = np.asarray(image)
    blobs = flat_blobs(pixels)
    if blobs.any():
        value, quality = _pdq(Image.fromarray(fill_holes(pixels, blobs)))
        yield HashValue(f"pdq.{SECOND}.{WINDOW}.{FILLED}", value, quality)


def _windows(image: Image.Image, tags: Iterable[str]) -> Iterable[HashValue]:
    w, h = image.size
    for tag in tags:
        size, (ax, ay) = _WINDOW_BOXES[tag]
        kw, kh = max(1, round(w * size)), max(1, round(h * size))
        left, top = round((w - kw) * ax), round((h - kh) * ay)
        value, quality = _pdq(image.crop((left, top, left + kw, top + kh)))
        yield HashValue(f"pdq.{SECOND}.{WINDOW}.{tag}", value, quality)


def _insets(image: Image.Image, insets: Iterable[float]) -> Iterable[HashValue]:
    for i, (left, top, right, bottom) in enumerate(content_boxes(image)):
        w, h = right - left, bottom - top
        for inset in insets:
            box = (
                round(left + w * inset),
                round(top + h * inset),
                round(right - w * inset),
                round(bottom - h * inset),
            )
            value, quality = _pdq(image.crop(box))
            yield HashValue(f"pdq.{SECOND}.b{i + 1}i{round(inset * 100)}", value, quality)


def aspect_boxes(image: Image.Image) -> list[tuple[str, Box]]:
    """``(tag, box)`` of the aspect boxes of a decoded image: for its first content box (or the
    whole picture when it has none), kept as wide as it is with the height of each shape of
    :data:`ASPECTS` at the top, middle and bottom (``w160t``), and kept as high as it is
    with the shape's width around its middle (``h133m``); a shape that does not fit in the
    picture, or is within 3% of the box itself, is left out."""
    w, h = image.size
    boxes = content_boxes(image)
    left, top, right, bottom = boxes[0] if boxes else (0, 0, w, h)
    bw, bh = right - left, bottom - top
    out: list[tuple[str, Box]] = []
    for ratio in ASPECTS:
        tag = f"{round(ratio * 100)}"
        ph = round(bw / ratio)
        if 16 <= ph <= h and abs(ph - bh) > _ASPECT_SLACK * bh:
            for name, anchor in ANCHORS.items():
                y = min(max(0, round(top + (bh - ph) * anchor)), h - ph)
                out.append((f"w{tag}{name}", (left, y, right, y + ph)))
        pw = round(bh * ratio)
        if 16 <= pw <= w and abs(pw - bw) > _ASPECT_SLACK * bw:
            x = min(max(0, round(left + (bw - pw) / 2)), w - pw)
            out.append((f"h{tag}m", (x, top, x + pw, bottom)))
    return out


def _aspects(image: Image.Image) -> Iterable[HashValue]:
    for tag, box in aspect_boxes(image):
        value, quality = _pdq(image.crop(box))
        yield HashValue(f"pdq.{SECOND}.{ASPECT}.{tag}", value, quality)


def second_stage_hashes(
    image: Image.Image,
    *,
    turns: Iterable[float] = TURNS,
    windows: Iterable[str] = WINDOWS,
    insets: Iterable[float] = INSETS,
    aspects: bool = True,
    filled: bool = True,
) -> tuple[HashValue, ...]:
    """The second-stage hashes of a decoded found image (see the module's docstring)."""
    rgb = _hash_input(image)  # turned and cut at the size PDQ is given anyway (256 px)
    if min(rgb.size) < 32:
        return ()
    full = image if image.mode == "RGB" else image.convert("RGB")
    return (
        *_counter_turns(rgb, turns),
        *_windows(rgb, windows),
        *(_filled(rgb) if filled else ()),
        *_insets(full, insets),
        *(_aspects(full) if aspects else ()),
    )


def second_stage_from_bytes(
    data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS
) -> tuple[HashValue, ...]:
    """:func:`second_stage_hashes` of image bytes, decoded as for hashing. A top-level function,
    so it can run in a process pool. Raises :class:`NotAnImageError`."""
    image = decode_image(data, max_pixels=max_pixels)
    try:
        return second_stage_hashes(image)
    except Exception as exc:  # a hash library choking on odd pixels
        raise NotAnImageError(f"second stage failed: {exc}") from None
