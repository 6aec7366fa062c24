"""Screenshots whose photo the content box used to cut short or miss (issue 10, "screenshot of a
mirrored photo"): a dark photo on a dark page (its dark parts were within 24 levels of the
page, so they counted as page), and a photo as wide as the page (a story: the image's left and
right edges are photo, so there was no uniform surround). Each must get the box of its photo
and match its own reference, mirrored or not.

The full measurement is ``benchmarks/quality.py`` (docs/detection.md)."""

from __future__ import annotations

import functools
import hashlib
import io

import numpy as np
import pytest
from PIL import Image, ImageDraw

from monitor.config import MatchConfig
from monitor.demo import transforms as tf
from monitor.hashing import compute_hashes, compute_reference_hashes, content_boxes, decode_image
from monitor.matching import (
    ReferenceHashRecord,
    ReferenceIndex,
    explain_match,
    match_how,
    thresholds_from_config,
)
from monitor.second_stage import second_stage_from_bytes
from monitor.types import ImageHashes
from tests.conftest import corpus_files, quality_edits

CFG = MatchConfig()


def _photo(width: int, height: int) -> Image.Image:
    """A textured picture whose left third fades to nearly black (a dark room, a night sky)."""
    rng = np.random.default_rng(11)
    y, x = np.mgrid[0:height, 0:width]
    base = 120 + 60 * np.sin(x / 11.0) * np.cos(y / 17.0) + rng.normal(0, 10, (height, width))
    rgb = np.stack([base, base * 0.8 + 30, 255 - base], axis=2)
    fade = np.clip((x - width / 6) / (width / 6), 0.04, 1.0)[..., None]
    return Image.fromarray(np.clip(rgb * fade, 0, 255).astype(np.uint8), "RGB")


def _jpeg(im: Image.Image, quality: int = 85) -> bytes:
    out = io.BytesIO()
    im.save(out, "JPEG", quality=quality)
    return out.getvalue()


def _page(
    photo: Image.Image, width: int, at: tuple[int, int], bg: tuple[int, int, int], below: int
) -> Image.Image:
    """A phone screenshot: a flat page of colour ``bg``, a status line and a header line of
    text, ``photo`` pasted at ``at``, two lines of text ``below`` pixels under it."""
    fg = (235, 235, 235) if sum(bg) < 384 else (20, 20, 20)
    x, y = at
    canvas = Image.new("RGB", (width, y + photo.height + below), bg)
    draw = ImageDraw.Draw(canvas)
    draw.text((20, 8), "9:41", fill=fg)
    draw.text((30, max(24, y - 60)), "< Chats   Someone Posting", fill=fg)
    canvas.paste(photo, (x, y))
    draw.text((30, y + photo.height + 20), "12    48    1.2K", fill=fg)
    draw.text((30, y + photo.height + 50), "View all 56 comments", fill=fg)
    return canvas


@functools.cache
def _index(photo_bytes: bytes) -> ReferenceIndex:
    records = [
        ReferenceHashRecord(1, hv.algorithm, hv.value)
        for hv in compute_reference_hashes(photo_bytes).hashes
    ]
    return ReferenceIndex(records, thresholds_from_config(CFG), min_quality=CFG.min_quality)


def _near(box: tuple[int, int, int, int], expected: tuple[float, ...], slack: float) -> bool:
    return all(abs(a - b) <= slack for a, b in zip(box, expected, strict=True))


@pytest.mark.parametrize("mirrored", [True, False])
def test_a_dark_photo_on_a_dark_page_gets_the_box_of_the_whole_photo(mirrored: bool) -> None:
    photo = _photo(480, 320)
    shown = tf.mirror(photo) if mirrored else photo
    page = _page(shown, 620, (110, 200), (30, 24, 40), 140)  # a dark chat
    data = _jpeg(tf.resize(page, 0.6), 80)
    image = decode_image(data)
    f = image.width / page.width
    expected = (110 * f, 200 * f, 590 * f, 520 * f)
    boxes = content_boxes(image)
    assert any(_near(b, expected, 2) for b in boxes), (boxes, expected)

    hashes = compute_hashes(data)
    detail = _index(_jpeg(photo, 92)).match_detail(hashes)
    assert detail is not None and detail.found.startswith("pdq.region")
    if mirrored:
        assert "mirrored" in explain_match(match_how(detail))


def test_a_photo_as_wide_as_the_page_gets_a_box_between_the_page_above_and_below() -> None:
    """A story: the photo spans the page's width, so the image's left and right edges are the
    photo; the page shows only above and below it."""
    photo = _photo(420, 560).transpose(Image.Transpose.FLIP_TOP_BOTTOM)  # portrait
    page = _page(photo, 420, (0, 110), (246, 244, 240), 170)  # a light story
    data = _jpeg(tf.resize(page, 0.7), 85)
    image = decode_image(data)
    f = image.width / page.width
    boxes = content_boxes(image)
    assert any(_near(b, (0, 110 * f, image.width, 670 * f), 2.5) for b in boxes), boxes
    detail = _index(_jpeg(photo, 92)).match_detail(compute_hashes(data))
    assert detail is not None and detail.found.startswith("pdq.region")


def test_a_textured_frame_keeps_the_usual_tolerance() -> None:
    """A photo padded with a noisy (not flat) border: the page tolerance stays at 24 levels,
    so the border's noise does not make the whole image one box."""
    rng = np.random.default_rng(5)
    photo = _photo(300, 200)
    noise = rng.normal(128, 9, (320, 460, 3))
    canvas = Image.fromarray(np.clip(noise, 0, 255).astype(np.uint8), "RGB")
    canvas.paste(photo, (80, 60))
    boxes = content_boxes(canvas)
    assert all(b != (0, 0, 460, 320) for b in boxes)


@pytest.mark.parametrize(
    ("photo", "copy", "frame"),
    [
        ("enlightenment-data__God-Rays", 4, "screenshot chat dark"),
        ("python-matplotlib-data__grace_hopper", 2, "screenshot post dark"),
        ("python-matplotlib-data__grace_hopper", 7, "screenshot story light"),
    ],
)
def test_corpus_screenshots_of_mirrored_photos_match(photo: str, copy: int, frame: str) -> None:
    """Copies of benchmarks/quality.py (tune half, seed 1, "screenshot of a mirrored photo"),
    made the same way, that no stage found before: more than 90 bits from every stored hash."""
    path = next((p for p in corpus_files("reference") if p.stem == photo), None)
    if path is None:
        pytest.skip(f"corpus photo {photo} not found")
    qe = quality_edits()
    family = next(f for f in qe.FAMILIES if f.name == "screenshot of a mirrored photo")
    key = "\0".join((path.name, family.name, str(copy))).encode()
    rng = np.random.default_rng([1, int.from_bytes(hashlib.sha256(key).digest()[:8], "big")])
    edited, quality, said = family.make(tf.decode(path.read_bytes()), rng)
    assert said.startswith(frame) and "mirrored" in said
    data = tf.encode(edited, "JPEG", quality)
    index = _index(path.read_bytes())
    hashes = compute_hashes(data)
    detail = index.match_detail(hashes)
    if detail is None and index.grey(hashes, CFG.second_stage_grey):  # as a scan does
        extra = second_stage_from_bytes(data)
        detail = index.match_detail(
            ImageHashes(hashes.sha256, hashes.width, hashes.height, hashes.hashes + extra)
        )
    assert detail is not None and detail.result.reference_id == 1
