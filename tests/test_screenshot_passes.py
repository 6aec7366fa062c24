"""The two passes of a screenshot (blurred images at a quarter scale, the page sharp with its
images not painted) are laid together box by box: no browser needed here."""

from __future__ import annotations

import io

from PIL import Image

from monitor.evidence.screenshot import (
    BLURRED_PASS_SCALE,
    BOX_MARGIN_PX,
    MAX_BLURRED_BOXES,
    Shot,
    _blurred_boxes,
)


def png(size: tuple[int, int], colour: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, "PNG")
    return buf.getvalue()


def test_blurred_boxes_are_laid_into_the_sharp_pass():
    width, height = 400, 300
    quarter = (int(width * BLURRED_PASS_SCALE), int(height * BLURRED_PASS_SCALE))
    shot = Shot(
        png((width, height), (255, 255, 255)), png(quarter, (200, 0, 0)), ((40, 80, 200, 160),)
    )
    page = shot.page()
    assert page.size == (width, height)
    assert page.getpixel((41, 81)) == (200, 0, 0) and page.getpixel((199, 159)) == (200, 0, 0)
    assert page.getpixel((39, 81)) == (255, 255, 255)  # outside the box: the sharp pass
    assert page.getpixel((100, 161)) == (255, 255, 255)


def test_boxes_grow_a_little_and_stay_inside_the_shot():
    boxes = _blurred_boxes([[10.5, 20.2, 100, 50, 24], [1200, 5, 300, 40, 24]], 1280, 60)
    assert boxes == (
        (10 - BOX_MARGIN_PX, 20 - BOX_MARGIN_PX, 111 + BOX_MARGIN_PX, 60),
        (1200 - BOX_MARGIN_PX, 5 - BOX_MARGIN_PX, 1280, 45 + BOX_MARGIN_PX),
    )
    assert _blurred_boxes([[0, 70, 10, 10, 24]], 1280, 60) == ()  # below the shot


def test_one_pass_without_images_or_with_too_many():
    assert _blurred_boxes([], 1280, 900) is None
    many = [[i, 0, 1, 1, 24] for i in range(MAX_BLURRED_BOXES + 1)]
    assert _blurred_boxes(many, 1280, 900) is None
    assert Shot(png((10, 10), (1, 2, 3))).page().getpixel((5, 5)) == (1, 2, 3)
