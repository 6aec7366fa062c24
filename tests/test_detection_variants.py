"""Copies that used to slip through: turns filled white, turns beyond 6 degrees, straightened
photos, right-angle turns of near-symmetric photos, and photos letterboxed between bars as dark
as their own edges or between blurred bars. Each must match its own reference with the
production configuration, and unrelated photos must stay well away from every reference.

The full measurement is ``benchmarks/quality.py`` (docs/detection.md)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from PIL import Image

from monitor.config import MatchConfig
from monitor.demo import transforms as tf
from monitor.hashing import compute_hashes, compute_reference_hashes, content_boxes, letterbox_box
from monitor.matching import (
    ReferenceHashRecord,
    ReferenceIndex,
    threshold_for,
    thresholds_from_config,
)
from monitor.types import HashValue, ImageHashes
from tests.conftest import corpus_files

WHITE = (255, 255, 255)

# Photos that failed one of the edits below before: dark edges (after-the-rain, Dune, Grace
# Hopper, Chelsea), a water reflection that is nearly symmetric (BytheWater), and light skies.
PHOTOS = (
    "enlightenment-data__God-Rays.jpg",
    "lxqt-themes__after-the-rain.jpg",
    "mate-backgrounds__Dune.jpg",
    "plasma-workspace-wallpapers__BytheWater.jpg",
    "python-matplotlib-data__grace_hopper.jpg",
    "scikit-image__chelsea.jpg",
)


EDITS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "turned 7 degrees, white corners": lambda im: tf.rotate(im, 7, fill=WHITE),
    "turned -5 degrees, white corners": lambda im: tf.rotate(im, -5, fill=WHITE),
    "turned 9 degrees": lambda im: tf.rotate(im, 9),
    "straightened 5 degrees": lambda im: tf.straighten(im, 5),
    "turned 180 degrees": lambda im: im.transpose(Image.Transpose.ROTATE_180),
    "letterboxed 16:9, black": lambda im: tf.letterbox(im, 16 / 9),
    "padded 15%, black": lambda im: tf.pad(im, 0.15),
    "letterboxed 9:16, blurred bars": lambda im: tf.blurred_letterbox(im, 9 / 16, darken=1.0),
}


def _index(refs: list[ImageHashes], cfg: MatchConfig) -> ReferenceIndex:
    records = [
        ReferenceHashRecord(i, hv.algorithm, hv.value)
        for i, h in enumerate(refs)
        for hv in h.hashes
    ]
    return ReferenceIndex(records, thresholds_from_config(cfg), min_quality=cfg.min_quality)


@pytest.fixture(scope="module")
def corpus() -> tuple[list[Image.Image], list[ImageHashes]]:
    by_name = {p.name: p for p in corpus_files("reference")}
    paths = [by_name[name] for name in PHOTOS if name in by_name]
    if len(paths) < 4:
        pytest.skip("the corpus lacks the photos these tests use")
    images = [tf.decode(p.read_bytes()) for p in paths]
    return images, [compute_reference_hashes(p.read_bytes()) for p in paths]


@pytest.mark.parametrize("edit", list(EDITS))
def test_edited_copy_matches_its_own_reference(corpus, edit: str) -> None:
    images, refs = corpus
    index = _index(refs, MatchConfig())
    missed = []
    for i, im in enumerate(images):
        copy = compute_hashes(tf.encode(EDITS[edit](im), "JPEG", 85))
        found = index.match(copy)
        if found is None or found.reference_id != i:
            missed.append((PHOTOS[i], found, index.nearest(copy)))
    assert not missed, f"{edit}: {missed}"


def test_unrelated_photos_stay_far_from_every_reference(corpus) -> None:
    """No unrelated photo matches, and none comes near: the variant threshold (56 bits) keeps a
    margin of at least 20 bits below the nearest hash of any kind (82 in the full benchmark's
    tune half), and the whole-photo threshold (70) as much below the nearest original."""
    _, refs = corpus
    cfg = MatchConfig()
    index = _index(refs, cfg)
    background = corpus_files("distractors")[::2] + corpus_files("cutouts")[::4]
    originals = _index(refs, cfg.model_copy(update={"variants": False, "regions": False}))
    nearest, nearest_original, false = 256, 256, []
    for path in background:
        hashes = compute_hashes(path.read_bytes())
        if index.match(hashes) is not None:
            false.append(path.name)
        nearest = min(nearest, index.nearest(hashes).get("pdq", (0, 256))[1])
        whole = ImageHashes(hashes.sha256, hashes.width, hashes.height, (hashes.get("pdq"),))
        nearest_original = min(nearest_original, originals.nearest(whole).get("pdq", (0, 256))[1])
    assert not false, f"{len(false)} false matches: {false}"
    assert nearest >= max(cfg.variant_pdq_threshold, cfg.region_pdq_threshold) + 20, nearest
    assert nearest_original >= cfg.pdq_threshold + 20, nearest_original


def _photo(width: int, height: int, dark_edges: bool) -> Image.Image:
    """A textured picture; with ``dark_edges`` its left fifth and bottom third nearly black."""
    rng = np.random.default_rng(7)
    y, x = np.mgrid[0:height, 0:width]
    base = 120 + 60 * np.sin(x / 9.0) * np.cos(y / 13.0) + rng.normal(0, 12, (height, width))
    rgb = np.stack([base, base * 0.8 + 30, 255 - base], axis=2)
    if dark_edges:
        rgb[:, : width // 5] *= 0.03
        rgb[height * 2 // 3 :] *= 0.03
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), "RGB")


def test_letterbox_box_is_exact_when_the_photo_is_as_dark_as_its_bars() -> None:
    photo = _photo(300, 240, dark_edges=True)
    canvas = tf.letterbox(photo, 16 / 9)  # black bars left and right
    left = (canvas.width - photo.width) // 2
    box = letterbox_box(canvas)
    assert box is not None
    expected = (left, 0, left + photo.width, photo.height)
    assert all(abs(a - b) <= 1 for a, b in zip(box, expected, strict=True)), (box, expected)
    padded = tf.pad(photo, 0.2, WHITE)
    bx, by = round(photo.width * 0.2), round(photo.height * 0.2)
    box = letterbox_box(padded)
    assert box is not None
    expected = (bx, by, bx + photo.width, by + photo.height)
    assert all(abs(a - b) <= 1 for a, b in zip(box, expected, strict=True)), (box, expected)


def test_full_frame_and_blank_images_have_no_content_box() -> None:
    assert content_boxes(_photo(400, 300, dark_edges=False)) == []
    assert letterbox_box(_photo(400, 300, dark_edges=False)) is None
    assert content_boxes(Image.new("RGB", (400, 300), (0, 0, 0))) == []
    assert content_boxes(Image.new("RGB", (10, 300), WHITE)) == []


def test_a_second_region_is_judged_and_switched_off_as_a_region() -> None:
    value = "a" * 64
    far = "5" * 64
    assert threshold_for("pdq.region.2", {"pdq": 31, "pdq.*": 40, "pdq.region": 35}) == 35
    found = ImageHashes(
        "0" * 64, 1, 1, (HashValue("pdq", far, 90), HashValue("pdq.region.2", value, 90))
    )
    refs = [ReferenceHashRecord(4, "pdq", value)]
    on = ReferenceIndex(refs, thresholds_from_config(MatchConfig()))
    detail = on.match_detail(found)
    assert detail is not None and detail.result.reference_id == 4
    assert detail.found == "pdq.region.2"
    off = ReferenceIndex(refs, thresholds_from_config(MatchConfig(regions=False)))
    assert off.match(found) is None
