"""Demo content: generated photos, uploader edits and the loopback demo web."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from html.parser import HTMLParser
from itertools import combinations
from urllib.parse import urljoin

import httpx
import imagehash
import numpy as np
import pdqhash
import pytest
from PIL import Image

from monitor.demo import transforms as tf
from monitor.demo.photos import DISTINCT_SEEDS, _code_table, generate_photo, photo_bytes
from monitor.demo.web import (
    DemoWeb,
    build_bulk_web,
    build_web,
    demo_distractor_photos,
    demo_reference_photos,
    sniff_image_type,
)
from monitor.testing.web import LoopbackWeb

PDQ_THRESHOLD, PHASH_THRESHOLD = 31, 10
NAMES = ["Alex Demo", "A. Demo"]


# -- hashing, straight from the libraries (independent of monitor.hashing)


def _pdq(im: Image.Image) -> tuple[np.ndarray, int]:
    bits, quality = pdqhash.compute(np.asarray(im.convert("RGB")))
    return bits.astype(bool), int(quality)


def _phash(im: Image.Image) -> np.ndarray:
    return imagehash.phash(im).hash.flatten()


def _distances(a: Image.Image, b: Image.Image) -> tuple[int, int]:
    return int((_pdq(a)[0] != _pdq(b)[0]).sum()), int((_phash(a) != _phash(b)).sum())


def _open(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data)).convert("RGB")


# -- photos


SEEDS = range(60)


@pytest.fixture(scope="module")
def photos() -> list[Image.Image]:
    return [generate_photo(seed) for seed in SEEDS]


def test_photos_are_deterministic_rgb_of_the_size_asked() -> None:
    a, b = generate_photo(7), generate_photo(7)
    assert a.mode == "RGB" and a.size == (800, 600)
    assert a.tobytes() == b.tobytes()
    assert generate_photo(8).tobytes() != a.tobytes()
    small = generate_photo(7, (200, 300))
    assert small.size == (200, 300)
    with pytest.raises(ValueError):
        generate_photo(1, (16, 16))


def test_photo_bytes_encode_the_photo() -> None:
    jpeg = photo_bytes(3, (320, 240))
    assert sniff_image_type(jpeg) == ("image/jpeg", "jpg")
    assert _open(jpeg).size == (320, 240)
    png = photo_bytes(3, (320, 240), format="PNG")
    assert _open(png).tobytes() == generate_photo(3, (320, 240)).tobytes()


def test_photos_are_busy_and_far_apart(photos: list[Image.Image]) -> None:
    pdq = [_pdq(im) for im in photos]
    phash = [_phash(im) for im in photos]
    assert min(q for _bits, q in pdq) >= 70
    pdq_min = min(int((pdq[i][0] != pdq[j][0]).sum()) for i, j in combinations(SEEDS, 2))
    phash_min = min(int((phash[i] != phash[j]).sum()) for i, j in combinations(SEEDS, 2))
    print(f"min distances over {len(SEEDS)} seeds: PDQ {pdq_min}, pHash {phash_min}")
    assert pdq_min > 80
    assert phash_min > 20


def test_photo_phash_is_its_seed_codeword(photos: list[Image.Image]) -> None:
    """The guarantee behind the distances: seed -> a codeword >= 24 bits from any other."""
    table = _code_table()
    assert len(table) == DISTINCT_SEEDS
    weights = (table[:200, None] != table[None, :200]).sum(axis=-1)
    assert weights[~np.eye(200, dtype=bool)].min() >= 24
    for seed, im in zip(SEEDS, photos, strict=True):
        assert (_phash(im) == table[seed].astype(bool)).all()


@pytest.mark.parametrize("edit", sorted(tf.EDITS))
def test_named_edits_stay_within_match_thresholds(edit: str, photos: list[Image.Image]) -> None:
    for im in photos[:4]:
        copy = _open(tf.encode(tf.EDITS[edit](im), "JPEG", 90))
        pdq, phash = _distances(im, copy)
        assert pdq <= PDQ_THRESHOLD and phash <= PHASH_THRESHOLD, (edit, pdq, phash)


# -- transforms


def _source() -> Image.Image:
    return generate_photo(11, (400, 300))


TRANSFORMS = {
    "resize": (lambda im: tf.resize(im, 0.5), (200, 150)),
    "resize_up": (lambda im: tf.resize(im, 1.5), (600, 450)),
    "stretch": (lambda im: tf.stretch(im, 1.25), (500, 300)),
    "crop_centre": (lambda im: tf.crop(im, 0.2), (320, 240)),
    "crop_corner": (lambda im: tf.crop(im, 0.5, anchor=(0, 1)), (200, 150)),
    "mirror": (tf.mirror, (400, 300)),
    "rotate_expand": (lambda im: tf.rotate(im, 90), (300, 400)),
    "rotate_keep": (lambda im: tf.rotate(im, 10, expand=False), (400, 300)),
    "pad": (lambda im: tf.pad(im, 0.1, (255, 255, 255)), (480, 360)),
    "letterbox": (lambda im: tf.letterbox(im, 16 / 9), (533, 300)),
    "brightness": (lambda im: tf.brightness(im, 1.3), (400, 300)),
    "contrast": (lambda im: tf.contrast(im, 0.7), (400, 300)),
    "gamma": (lambda im: tf.gamma(im, 1.8), (400, 300)),
    "saturation": (lambda im: tf.saturation(im, 0.3), (400, 300)),
    "greyscale": (tf.greyscale, (400, 300)),
    "blur": (lambda im: tf.blur(im, 2), (400, 300)),
    "noise": (lambda im: tf.noise(im, 8, seed=1), (400, 300)),
    "recompress": (lambda im: tf.recompress(im, 30), (400, 300)),
    "overlay_text": (lambda im: tf.overlay_text(im, "@someone"), (400, 300)),
    "watermark_tiled": (lambda im: tf.watermark(im, "stock"), (400, 300)),
    "watermark_corner": (lambda im: tf.watermark(im, "stock", tiled=False), (400, 300)),
    "compose": (tf.compose(tf.mirror, lambda im: tf.resize(im, 0.5)), (200, 150)),
    **{f"EDITS[{k}]": (v, None) for k, v in tf.EDITS.items()},
}


@pytest.mark.parametrize("name", list(TRANSFORMS))
def test_transform_is_pure_rgb_and_changes_pixels(name: str) -> None:
    fn, size = TRANSFORMS[name]
    src = _source()
    before = src.tobytes()
    out = fn(src)
    assert src.tobytes() == before, "the input was modified"
    assert out.mode == "RGB"
    if size is not None:
        assert out.size == size
    assert out.width >= 1 and out.height >= 1
    if out.size == src.size:
        assert out.tobytes() != before
    assert fn(src).tobytes() == out.tobytes(), "not deterministic"


def test_greyscale_has_no_colour() -> None:
    arr = np.asarray(tf.greyscale(_source()))
    assert (arr[..., 0] == arr[..., 1]).all() and (arr[..., 1] == arr[..., 2]).all()


def test_crop_keeps_the_anchored_window() -> None:
    src = _source()
    corner = tf.crop(src, 0.5, anchor=(1, 1))
    assert corner.tobytes() == src.crop((200, 150, 400, 300)).tobytes()


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "jpg"])
def test_encode_any_mode(fmt: str) -> None:
    rgba = _source().convert("RGBA")
    for im in (rgba, _source().convert("L"), _source().convert("P")):
        data = tf.encode(im, fmt, 80)
        assert tf.decode(data).size == (400, 300)


# -- the demo web


def _client() -> httpx.Client:
    return httpx.Client(trust_env=False, timeout=10)


class _ImageRefs(HTMLParser):
    """The image URLs a page's markup names, resolved like a browser would (with <base>)."""

    def __init__(self, page_url: str) -> None:
        super().__init__()
        self.base = page_url
        self.urls: set[str] = set()

    def _add(self, ref: str) -> None:
        if not ref.startswith("data:"):
            self.urls.add(urljoin(self.base, ref.strip()))

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "base" and a.get("href"):
            self.base = urljoin(self.base, a["href"])
        if tag == "meta" and a.get("property") == "og:image":
            self._add(a["content"])
        for key in ("src", "data-src"):
            if tag == "img" and a.get(key):
                self._add(a[key])
        if tag in ("img", "source") and a.get("srcset"):
            for candidate in a["srcset"].split(","):
                self._add(candidate.split()[0])
        for css in re.findall(r"url\(['\"]?([^'\")]+)", a.get("style", "")):
            self._add(css)


def _page_images(client: httpx.Client, url: str) -> set[str]:
    parser = _ImageRefs(url)
    parser.feed(client.get(url).text)
    return parser.urls


def _search(client: httpx.Client, demo: DemoWeb, q: str, category: str) -> list[dict]:
    resp = client.get(
        demo.searxng_url + "/search", params={"q": q, "format": "json", "categories": category}
    )
    resp.raise_for_status()
    return resp.json()["results"]


@pytest.fixture(scope="module")
def demo_photos() -> tuple[list[bytes], list[bytes]]:
    return demo_reference_photos(3), demo_distractor_photos(12)


@pytest.fixture
def demo(demo_photos: tuple[list[bytes], list[bytes]]) -> Iterator[DemoWeb]:
    references, distractors = demo_photos
    with LoopbackWeb() as web:
        yield build_web(
            web,
            subject_names=NAMES,
            references=references,
            distractors=distractors,
            edits=("resize_half", "recompress_q50", "resize_0.75_q70"),
        )


def test_demo_web_places_every_copy_once(demo: DemoWeb) -> None:
    copies = {(p.reference_index, p.edit) for p in demo.planted}
    assert len(demo.planted) == len(copies) == 9
    urls = [p.image_url for p in demo.planted] + demo.distractors
    assert len(set(urls)) == len(urls), "an image URL is used twice"
    assert set(demo.pages) >= {p.page_url for p in demo.planted}


def test_pages_show_their_planted_images(demo: DemoWeb) -> None:
    with _client() as client:
        shown = {url: _page_images(client, url) for url in demo.pages}
        on_pages = [p for p in demo.planted if p.image_url in shown[p.page_url]]
        assert len(on_pages) >= len(demo.planted) - 1  # one copy is for the image search alone
        for url in demo.pages:
            html = client.get(url).text
            for p in demo.planted:
                if p.image_url in shown[url]:
                    assert p.image_url.rsplit("/", 1)[1] in html
        every_image = set().union(*shown.values())
        assert every_image >= set(demo.distractors)
        assert every_image <= set(demo.distractors) | {p.image_url for p in demo.planted}


def test_markup_uses_every_way_of_naming_an_image(demo: DemoWeb) -> None:
    with _client() as client:
        html = "".join(client.get(url).text for url in demo.pages)
    for needle in (
        "<img src=",
        "srcset=",
        "data-src=",
        "og:image",
        "<picture><source",
        "background-image: url(",
        "<base href=",
        'src="../media/',
        'src="/media/',
        f'src="{demo.web.base_url}/media/',
    ):
        assert needle in html, needle


def test_every_planted_copy_is_reachable_and_matches_its_reference(
    demo: DemoWeb, demo_photos: tuple[list[bytes], list[bytes]]
) -> None:
    references, _ = demo_photos
    with _client() as client:
        reachable: set[str] = set()
        for url in demo.pages:
            reachable |= _page_images(client, url)
        for name in NAMES:
            reachable |= {
                r["img_src"]
                for r in _search(client, demo, f'"{name}"', "images")
                if r.get("img_src")
            }
        assert {p.image_url for p in demo.planted} <= reachable
        for p in demo.planted:
            resp = client.get(p.image_url)
            assert resp.status_code == 200
            assert resp.headers["content-type"] == "image/jpeg"
            pdq, phash = _distances(_open(references[p.reference_index]), _open(resp.content))
            assert pdq <= PDQ_THRESHOLD or phash <= PHASH_THRESHOLD, (p, pdq, phash)


def test_distractors_are_served_and_never_match_a_reference(
    demo: DemoWeb, demo_photos: tuple[list[bytes], list[bytes]]
) -> None:
    references, distractors = demo_photos
    refs = [_open(r) for r in references]
    with _client() as client:
        seen = set()
        for url in demo.distractors:
            resp = client.get(url)
            assert resp.status_code == 200 and resp.headers["content-type"] == "image/jpeg"
            seen.add(resp.content)
        assert seen == set(distractors)
    for data in seen:
        for ref in refs:
            pdq, phash = _distances(ref, _open(data))
            assert pdq > PDQ_THRESHOLD and phash > PHASH_THRESHOLD


def test_robots_txt_allows_everything(demo: DemoWeb) -> None:
    with _client() as client:
        resp = client.get(demo.web.url("/robots.txt"))
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain")
    assert "User-agent: *" in resp.text and "Disallow" not in resp.text


def test_search_lists_the_pages_for_each_quoted_name(demo: DemoWeb) -> None:
    with _client() as client:
        for name in NAMES:
            for q in (f'"{name}"', f'"{name.lower()}"'):
                results = _search(client, demo, q, "general")
                assert [r["url"] for r in results] == demo.pages
                assert all("img_src" not in r for r in results)
        assert _search(client, demo, '"Someone Else"', "general") == []


def test_image_search_gives_planted_copies_and_results_without_images(demo: DemoWeb) -> None:
    with _client() as client:
        results = _search(client, demo, '"Alex Demo"', "images")
    images = {r["img_src"] for r in results if r.get("img_src")}
    planted = {p.image_url for p in demo.planted}
    assert images & planted and images - planted  # copies, and unrelated images too
    assert any(not r.get("img_src") for r in results)
    # one copy sits on a page whose markup never names it (a script builds the URL): only the
    # image search finds it
    with _client() as client:
        hidden = [p for p in demo.planted if p.image_url not in _page_images(client, p.page_url)]
    assert len(hidden) == 1 and hidden[0].image_url in images


def test_without_image_results_every_copy_is_on_a_page(
    demo_photos: tuple[list[bytes], list[bytes]],
) -> None:
    references, distractors = demo_photos
    with LoopbackWeb() as web, _client() as client:
        demo = build_web(
            web,
            subject_names=["Alex Demo"],
            references=references[:2],
            distractors=distractors[:3],
            image_results=False,
            pages=2,
            images_per_page=2,
        )
        shown = {url: _page_images(client, url) for url in demo.pages}
        assert all(p.image_url in shown[p.page_url] for p in demo.planted)
        assert len(demo.planted) == 4 and len(demo.distractors) == 3  # pages grow to fit
        assert [r for r in _search(client, demo, '"Alex Demo"', "images") if r.get("img_src")] == []


def test_build_web_is_deterministic_and_checks_its_arguments(
    demo_photos: tuple[list[bytes], list[bytes]],
) -> None:
    references, distractors = demo_photos
    args = dict(subject_names=NAMES, references=references[:1], distractors=distractors[:2])
    with LoopbackWeb() as w1, LoopbackWeb() as w2:
        a, b = build_web(w1, **args), build_web(w2, **args)
        strip = lambda urls, base: [u.removeprefix(base) for u in urls]  # noqa: E731
        assert strip(a.pages, w1.base_url) == strip(b.pages, w2.base_url)
        assert strip(a.distractors, w1.base_url) == strip(b.distractors, w2.base_url)
        with pytest.raises(ValueError, match="unknown edits"):
            build_web(w1, **{**args, "edits": ("sharpen",)})
        with pytest.raises(ValueError, match="byte for byte"):
            build_web(w1, **{**args, "distractors": [references[0]]})


def test_bulk_web_serves_pages_of_images(
    demo_photos: tuple[list[bytes], list[bytes]],
) -> None:
    _, distractors = demo_photos
    images = distractors[:3]
    with LoopbackWeb() as web, _client() as client:
        bulk = build_bulk_web(
            web, subject_name="Bench Mark", images=images, pages=12, images_per_page=5
        )
        assert len(bulk.pages) == 12 and len(bulk.distractors) == 60
        results = _search(client, bulk, '"Bench Mark"', "general")
        assert [r["url"] for r in results] == bulk.pages
        assert _page_images(client, bulk.pages[1]) == set(bulk.distractors[5:10])
        assert client.get(bulk.distractors[7]).content == images[7 % 3]

        unique = build_bulk_web(
            web, subject_name="Bench Mark", images=images, pages=2, images_per_page=3, unique=True
        )
        bodies = [client.get(url).content for url in unique.distractors]
        assert len(set(bodies)) == 6
        assert _open(bodies[4]).tobytes() == _open(images[1]).tobytes()
