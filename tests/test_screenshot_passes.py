"""The two passes of a screenshot (blurred images at a quarter scale, the page sharp with its
images not painted) are laid together box by box; a tall page is shot at its top and around
the image the capture is about, the parts joined by strips that say what is left out."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from monitor.demo.photos import photo_bytes
from monitor.evidence import screenshot
from monitor.evidence.screenshot import (
    BLURRED_PASS_SCALE,
    BOX_MARGIN_PX,
    GAP_BACKGROUND,
    GAP_HEIGHT,
    MAX_BLURRED_BOXES,
    Picture,
    Screenshotter,
    Shot,
    _blurred_boxes,
    _draw_copy,
    _intrinsic_size,
    _placeholder_svg,
    _spans,
    chromium_path,
)
from monitor.testing.web import LoopbackWeb
from monitor.thumbnail import THUMB_SIDE, blurred_thumbnail


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


# --- with the browser: the passes laid together, against a page that fights the hiding ------

PHOTO = photo_bytes(7, (400, 300))
NESTED_BOX = (100, 120, 500, 420)  # an img inside a div with a background image
PSEUDO_BOX = (600, 120, 1000, 420)  # an image as a pseudo-element's content
HOSTILE_PAGE = f"""<!DOCTYPE html>
<html><head><style>
body {{ margin: 0; background: #fff; font: 40px sans-serif; }}
img {{ visibility: visible !important; opacity: 1 !important; filter: none !important; }}
#pseudo::before {{ content: url('/photo.jpg'); visibility: visible !important;
  opacity: 1 !important; filter: none !important; }}
</style></head><body>
<h1 style="position:absolute; left:20px; top:10px; margin:0; font-size:40px">Posted by someone</h1>
<div style="position:absolute; left:{NESTED_BOX[0]}px; top:{NESTED_BOX[1]}px; width:400px;
  height:300px; background-image:url('/bg.jpg')">
  <img src="/photo.jpg" alt="" style="visibility: visible !important; opacity: 1 !important">
</div>
<p id="pseudo" style="position:absolute; left:{PSEUDO_BOX[0]}px; top:{PSEUDO_BOX[1]}px;
  margin:0; width:400px; height:300px; line-height:0"></p>
</body></html>"""


def sharpness(im: Image.Image) -> float:
    """Mean absolute Laplacian of the grey image: high-frequency energy."""
    a = np.asarray(im.convert("L"), dtype=np.float64)
    lap = 4 * a[1:-1, 1:-1] - a[:-2, 1:-1] - a[2:, 1:-1] - a[1:-1, :-2] - a[1:-1, 2:]
    return float(np.abs(lap).mean())


@pytest.mark.skipif(chromium_path() is None, reason="no Chromium (apt-get install chromium)")
@pytest.mark.parametrize("draw_images", [True, False], ids=["grey-boxes", "browser-blur"])
async def test_images_stay_blurred_when_the_page_insists_on_showing_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, draw_images: bool
):
    """By default the browser gets grey boxes of each image's size and the tool draws blurred
    copies over the <img> boxes; with ``draw_images=False`` the browser blurs the images
    itself in a quarter-scale pass and the sharp pass paints none of them."""
    with LoopbackWeb() as site:
        site.add("/photo.jpg", PHOTO, "image/jpeg")
        site.add("/bg.jpg", photo_bytes(8, (400, 300)), "image/jpeg")
        url = site.add("/p.html", HOSTILE_PAGE)
        async with Screenshotter(
            allow_private_networks=True, timeout=60, draw_images=draw_images
        ) as shooter:
            info = await shooter.capture(url, tmp_path / "p.png", may_show_minor=False)
            # what the browser painted alone (the sharp pass, or the one pass): not one pixel
            # of any photo in it, blurred or not (nor the copies the tool draws afterwards)
            monkeypatch.setattr(Shot, "page", lambda shot: Image.open(io.BytesIO(shot.png)))
            monkeypatch.setattr(screenshot, "_draw_copy", lambda *a: None)
            sharp = await shooter.capture(url, tmp_path / "sharp.png", may_show_minor=False)
    itself = sharpness(Image.open(io.BytesIO(PHOTO)).crop((40, 40, 360, 260)))
    shot = Image.open(info.path).convert("RGB")
    sharp_pass = Image.open(sharp.path).convert("RGB")
    h = info.banner_height
    for left, top, right, bottom in (NESTED_BOX, PSEUDO_BOX):
        box = (left + 40, top + 40 + h, right - 40, bottom - 40 + h)
        region = np.asarray(shot.crop(box), dtype=np.float64)
        assert sharpness(shot.crop(box)) < 0.15 * itself, (left, sharpness(shot.crop(box)))
        browser_painted = np.asarray(sharp_pass.crop(box))
        if not draw_images:
            assert region.mean() < 235 and region.std() > 3  # the blurred image is there
            assert browser_painted.min() >= 250  # ... and not in the sharp pass
        elif (left, top, right, bottom) == NESTED_BOX:  # an <img>: its blurred copy is drawn
            assert region.mean() < 235 and region.std() > 3
            assert np.ptp(browser_painted, axis=2).max() <= 2  # the browser had a grey box
        else:  # an image in CSS: the browser's grey box (no colour of the photo)
            assert abs(region.mean() - 0x8C) < 30 and np.ptp(region, axis=2).max() <= 2
            assert np.ptp(browser_painted, axis=2).max() <= 2
    assert info.drawn_images == (1 if draw_images else 0)
    heading = shot.crop((20, 10 + h, 700, 70 + h))
    assert sharpness(heading) > 0.3 * itself  # the text is sharp
    assert info.blurred_elements >= 3


# --- a tall page is shot around the image the capture is about ---------------------------


def test_a_short_page_or_one_without_the_image_is_shot_whole():
    assert _spans(2500, [[0, 2000, 400, 300]], 900, 12_000) == ((0, 2500),)
    assert _spans(20_000, [], 900, 12_000) == ((0, 12_000),)  # cut at max_height, as before


def test_a_tall_page_is_shot_at_its_top_and_around_the_image():
    # an image 6,000 px down a 10,000 px page: the top viewport, and the image with half a
    # viewport above and below
    assert _spans(10_000, [[0, 6000, 800, 1000]], 900, 12_000) == ((0, 900), (5550, 7450))
    # an image near the top joins the top part; one at the very end stops at the page's end
    assert _spans(10_000, [[0, 1200, 800, 500]], 900, 12_000) == ((0, 2150),)
    assert _spans(10_000, [[0, 9500, 800, 500]], 900, 12_000) == ((0, 900), (9050, 10_000))
    # an image below max_height is shown too (a whole-page shot would have cut it off)
    assert _spans(30_000, [[0, 25_000, 800, 500]], 900, 12_000) == ((0, 900), (24_550, 25_950))
    # two images far apart: two parts; the parts together never exceed max_height
    spans = _spans(40_000, [[0, 30_000, 800, 9000], [0, 5000, 800, 400]], 900, 12_000)
    assert spans[:2] == ((0, 900), (4550, 5850))
    assert sum(bottom - top for top, bottom in spans) == 12_000
    # parts that would cover most of the page anyway: the whole page
    assert _spans(3600, [[0, 1000, 800, 1500]], 900, 12_000) == ((0, 3600),)


def test_the_parts_are_joined_by_strips_that_say_what_is_left_out():
    top = Shot(png((200, 90), (255, 255, 255)))
    part = Shot(png((200, 50), (0, 0, 255)))
    picture = Picture((((0, 90), top), ((500, 550), part)), page_height=800)
    assert not picture.whole
    image = picture.image()
    assert image.size == (200, 90 + GAP_HEIGHT + 50 + GAP_HEIGHT)
    assert image.getpixel((199, 95)) == GAP_BACKGROUND  # the strip under the top
    assert image.getpixel((5, 90 + GAP_HEIGHT + 5)) == (0, 0, 255)  # then the part
    assert image.getpixel((199, image.height - 2)) == GAP_BACKGROUND  # the page goes on
    assert picture.parts_line().startswith(
        "Parts of the page shown (px from its top): 0-90, 500-550 of 800"
    )
    whole = Picture((((0, 90), top),), page_height=90)
    assert whole.whole and whole.parts_line() == "" and whole.image().size == (200, 90)


TALL_PAGE = """<!DOCTYPE html>
<html><head><style>body {{ margin: 0; font: 40px sans-serif; }}</style></head><body>
<h1 style="margin:0; height:200px">Site title</h1>
<img src="/other.jpg" width="400" height="300" alt="">
<div style="height:5000px">Filler text</div>
<p style="margin:0; height:100px">Posted by someone</p>
<img src="/photo.jpg?x=1" width="400" height="300" alt="">
<div style="height:3000px"></div>
</body></html>"""


@pytest.mark.skipif(chromium_path() is None, reason="no Chromium (apt-get install chromium)")
async def test_a_tall_page_shows_its_address_its_top_and_the_image_blurred(tmp_path: Path):
    from monitor.evidence.screenshot import BANNER_BACKGROUND

    with LoopbackWeb() as site:
        site.add("/photo.jpg", PHOTO, "image/jpeg")
        site.add("/other.jpg", photo_bytes(8, (400, 300)), "image/jpeg")
        url = site.add("/tall.html", TALL_PAGE)
        async with Screenshotter(allow_private_networks=True, timeout=60) as shooter:
            info = await shooter.capture(
                url, tmp_path / "p.png", may_show_minor=False, focus=[site.url("/photo.jpg?x=1")]
            )
            whole = await shooter.capture(url, tmp_path / "w.png", may_show_minor=False)
    assert whole.parts == ((0, whole.page_height),) and whole.page_height > 8000
    assert info.page_height == whole.page_height
    # the top viewport and the image with half a viewport around it: about 2,100 px, not 8,600
    (top, first), (start, end) = info.parts
    assert (top, first) == (0, 900) and start <= 5500 and end >= 5800
    shot = Image.open(info.path)
    text = shot.text  # PNG text chunks
    assert text["Source"] == url
    assert text["Page parts shown"] == f"0-900, {start}-{end} of {info.page_height} px"
    shot = shot.convert("RGB")
    h = info.banner_height
    assert shot.height == h + 900 + GAP_HEIGHT + (end - start) + GAP_HEIGHT
    assert shot.getpixel((5, 5)) == BANNER_BACKGROUND  # the banner with address and time
    # the matched image, blurred, half a viewport into its part
    y = h + 900 + GAP_HEIGHT + 450
    region = shot.crop((40, y + 40, 360, y + 260))
    itself = sharpness(Image.open(io.BytesIO(PHOTO)).crop((40, 40, 360, 260)))
    assert sharpness(region) < 0.15 * itself
    assert np.asarray(region, dtype=np.float64).std() > 3  # the blurred image is there
    assert shot.getpixel((1270, h + 905)) == GAP_BACKGROUND  # what is left out, marked


# --- the browser gets grey boxes; the tool draws blurred thumbnails ---------------------------


def jpeg(size: tuple[int, int], orientation: int = 1) -> bytes:
    im = Image.open(io.BytesIO(photo_bytes(3, size)))
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    im.save(buf, "JPEG", exif=exif.tobytes())
    return buf.getvalue()


def test_the_browser_gets_a_grey_box_of_the_image_s_own_size():
    assert _intrinsic_size(jpeg((640, 480))) == (640, 480)
    assert _intrinsic_size(jpeg((640, 480), orientation=6)) == (480, 640)  # turned by EXIF
    assert _intrinsic_size(b"<svg xmlns='http://www.w3.org/2000/svg'/>") is None  # not read
    svg = _placeholder_svg(640, 480).decode()
    assert 'width="640"' in svg and 'height="480"' in svg and "<image" not in svg


def detail(im: Image.Image, factor: int = 16) -> float:
    """Mean absolute difference between the image and itself shrunk ``factor`` times and
    enlarged back: what it shows finer than ``factor`` pixels."""
    small = im.resize((im.width // factor, im.height // factor), Image.Resampling.BOX)
    back = small.resize(im.size, Image.Resampling.BICUBIC)
    return float(np.abs(np.asarray(im, np.float64) - np.asarray(back, np.float64)).mean())


def test_the_drawn_copy_is_a_tiny_thumbnail_stretched_over_the_box():
    data = jpeg((2000, 1500), orientation=6)
    size, rgb = blurred_thumbnail(data)
    assert max(size) == THUMB_SIDE and size[0] < size[1]  # turned as the browser shows it
    piece = Image.new("RGB", (1280, 900), (255, 255, 255))
    _draw_copy(piece, 100, -200, 600, 800, (size, rgb))  # partly above the piece
    region = piece.crop((100, 0, 700, 600))
    assert np.asarray(region, dtype=np.float64).std() > 3  # the image's colours are there
    itself = Image.open(io.BytesIO(data)).convert("RGB").resize((800, 600)).crop((0, 0, 600, 600))
    assert detail(region) < 0.2 * detail(itself)  # about one thumbnail pixel per blur radius
    assert piece.getpixel((99, 10)) == piece.getpixel((700, 10)) == (255, 255, 255)
    assert piece.getpixel((300, 600)) == (255, 255, 255)  # nothing drawn below the box
