"""Matching found images against a subject's reference hashes."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from monitor import matching
from monitor.config import MatchConfig
from monitor.hashing import compute_hashes
from monitor.matching import ReferenceHashRecord, ReferenceIndex, thresholds_from_config
from monitor.types import HashValue, ImageHashes, MatchResult
from tests.conftest import corpus_files

THRESHOLDS = {"pdq": 31, "phash": 10}


def flip(hex_value: str, n: int) -> str:
    """``hex_value`` with its lowest ``n`` bits inverted (a hash at distance ``n``)."""
    bits = len(hex_value) * 4
    return format(int(hex_value, 16) ^ ((1 << n) - 1), f"0{bits // 4}x")


def image(pdq: str | None = None, phash: str | None = None) -> ImageHashes:
    hashes = []
    if pdq is not None:
        hashes.append(HashValue("pdq", pdq, 90))
    if phash is not None:
        hashes.append(HashValue("phash", phash))
    return ImageHashes(sha256="0" * 64, width=100, height=100, hashes=tuple(hashes))


rng = np.random.default_rng(42)
PDQ_A, PDQ_B = (bytes(rng.integers(0, 256, 32, dtype=np.uint8)).hex() for _ in range(2))
PH_A, PH_B = (bytes(rng.integers(0, 256, 8, dtype=np.uint8)).hex() for _ in range(2))


@pytest.fixture
def index() -> ReferenceIndex:
    return ReferenceIndex(
        [
            ReferenceHashRecord(1, "pdq", PDQ_A),
            ReferenceHashRecord(1, "phash", PH_A),
            ReferenceHashRecord(2, "pdq", PDQ_B),
            ReferenceHashRecord(2, "phash", PH_B),
        ],
        THRESHOLDS,
    )


def test_threshold_is_inclusive(index: ReferenceIndex) -> None:
    assert index.match(image(pdq=PDQ_A)) == MatchResult(1, "pdq", 0, 31)
    assert index.match(image(pdq=flip(PDQ_B, 31))) == MatchResult(2, "pdq", 31, 31)
    assert index.match(image(pdq=flip(PDQ_B, 32))) is None
    assert index.match(image(phash=flip(PH_A, 10))) == MatchResult(1, "phash", 10, 10)
    assert index.match(image(phash=flip(PH_A, 11))) is None


def test_any_algorithm_within_its_threshold_is_a_match(index: ReferenceIndex) -> None:
    far_pdq = flip(PDQ_A, 120)
    assert index.match(image(pdq=far_pdq, phash=PH_B)) == MatchResult(2, "phash", 0, 10)


def test_the_relatively_closest_algorithm_wins_and_pdq_on_ties(index: ReferenceIndex) -> None:
    # pdq 20/31 = 0.65 against phash 3/10 = 0.3: phash wins
    assert index.match(image(pdq=flip(PDQ_A, 20), phash=flip(PH_A, 3))).algorithm == "phash"
    # pdq 3/31 against phash 5/10: pdq wins
    assert index.match(image(pdq=flip(PDQ_A, 3), phash=flip(PH_A, 5))).algorithm == "pdq"
    # an exact tie (0 and 0): pdq
    assert index.match(image(pdq=PDQ_B, phash=PH_B)) == MatchResult(2, "pdq", 0, 31)


def test_nearest_reports_every_shared_algorithm(index: ReferenceIndex) -> None:
    far = image(pdq=flip(PDQ_A, 100), phash=flip(PH_B, 20))
    assert index.match(far) is None
    assert index.nearest(far) == {"pdq": (1, 100), "phash": (2, 20)}
    assert index.nearest(image(phash=PH_A)) == {"phash": (1, 0)}  # pdq absent from the image


def test_empty_index_never_matches() -> None:
    empty = ReferenceIndex([], THRESHOLDS)
    assert len(empty) == 0
    assert empty.match(image(pdq=PDQ_A, phash=PH_A)) is None
    assert empty.nearest(image(pdq=PDQ_A)) == {}


def test_len_counts_references_and_thresholds_default_per_algorithm(
    index: ReferenceIndex,
) -> None:
    assert len(index) == 2
    only_pdq = ReferenceIndex(
        [ReferenceHashRecord(7, "pdq", PDQ_A), ReferenceHashRecord(8, "mystery", "ab" * 8)],
        {"phash": 4},
    )
    assert only_pdq.thresholds == {"pdq": 31}  # registered default; "mystery" has no threshold
    assert len(only_pdq) == 1


def test_malformed_stored_hash_names_its_reference() -> None:
    with pytest.raises(ValueError, match="reference 9"):
        ReferenceIndex([ReferenceHashRecord(9, "pdq", "xyz")], THRESHOLDS)


def test_thresholds_from_config() -> None:
    assert thresholds_from_config(MatchConfig()) == {
        "pdq": 70,
        "phash": 10,
        "pdq.*": 56,
        "pdq.region": 52,
        "pdq.s2": 52,
        "pdq.s2.w": 64,
        "pdq.s2.a": 46,
    }
    cfg = MatchConfig(
        pdq_threshold=20,
        phash_threshold=6,
        variants=False,
        region_pdq_threshold=9,
        second_stage=False,
    )
    assert thresholds_from_config(cfg) == {"pdq": 20, "phash": 6, "pdq.*": -1, "pdq.region": 9}


def test_threshold_lookup_for_variants() -> None:
    given = {"pdq": 31, "pdq.*": 40, "pdq.region": 35}
    assert matching.threshold_for("pdq", given) == 31
    assert matching.threshold_for("pdq.mirror", given) == 40
    assert matching.threshold_for("pdq.region", given) == 35
    assert matching.threshold_for("pdq.mirror", {"pdq": 31}) == 31
    assert matching.threshold_for("phash", {}) == 10  # the registered default
    assert matching.threshold_for("mystery.x", {}) is None


def test_reference_variants_match_with_their_own_threshold() -> None:
    refs = [
        ReferenceHashRecord(1, "pdq", PDQ_A),
        ReferenceHashRecord(1, "pdq.mirror", PDQ_B),
    ]
    index = ReferenceIndex(refs, {"pdq": 31, "pdq.*": 40})
    assert index.size == 2 and len(index) == 1
    detail = index.match_detail(image(pdq=flip(PDQ_B, 40)))
    assert detail is not None and detail.result == MatchResult(1, "pdq", 40, 40)
    assert (detail.found, detail.reference) == ("pdq", "pdq.mirror")
    assert index.match(image(pdq=flip(PDQ_B, 41))) is None
    assert index.match(image(pdq=flip(PDQ_A, 32))) is None  # the original keeps 31
    off = ReferenceIndex(refs, {"pdq": 31, "pdq.*": -1})  # variants switched off
    assert off.size == 1 and off.match(image(pdq=PDQ_B)) is None


def test_frames_of_an_enrolled_video_reach_no_further_than_variants() -> None:
    """A photo's one own hash may reach further (its threshold was tuned on photos); the up to
    60 frames of an enrolled video are many chances to meet a look-alike, so they get the
    variants' threshold."""
    refs = [
        ReferenceHashRecord(1, "pdq", PDQ_A),  # a photo
        ReferenceHashRecord(2, "pdq", PDQ_B, offset=12.0),  # a frame of an enrolled video
    ]
    index = ReferenceIndex(refs, {"pdq": 70, "pdq.*": 56})
    assert index.match(image(pdq=flip(PDQ_A, 70))) == MatchResult(1, "pdq", 70, 70)
    assert index.match(image(pdq=flip(PDQ_B, 57))) is None
    detail = index.match_detail(image(pdq=flip(PDQ_B, 56)))
    assert detail is not None and detail.result == MatchResult(2, "pdq", 56, 56)
    assert detail.reference_offset == 12.0


def test_a_found_images_region_is_matched_unless_it_is_flat() -> None:
    index = ReferenceIndex([ReferenceHashRecord(3, "pdq", PDQ_A)], {"pdq": 31, "pdq.region": 20},
                           min_quality=50)  # fmt: skip
    far = flip(PDQ_A, 120)

    def with_region(value: str, quality: int) -> ImageHashes:
        hashes = (HashValue("pdq", far, 90), HashValue("pdq.region", value, quality))
        return ImageHashes("0" * 64, 10, 10, hashes)

    assert index.match(with_region(flip(PDQ_A, 20), 90)) == MatchResult(3, "pdq", 20, 20)
    assert index.match(with_region(flip(PDQ_A, 21), 90)) is None
    assert index.match(with_region(PDQ_A, 10)) is None  # a blank box in a screenshot
    assert index.nearest(with_region(flip(PDQ_A, 5), 90)) == {"pdq": (3, 5)}


def test_popcount_lookup_table_agrees_with_numpy() -> None:
    words = np.random.default_rng(1).integers(0, 2**64, (50, 4), dtype=np.uint64)
    expected = [sum(bin(int(w)).count("1") for w in row) for row in words]
    assert matching._popcount_rows_table(words).tolist() == expected
    if hasattr(np, "bitwise_count"):
        assert matching._popcount_rows_native(words).tolist() == expected


# ------------------------------------------- the pruned scan against brute force


def _pair_limit(found: str, found_threshold: int, reference: str, reference_threshold: int) -> int:
    """The documented threshold of a pair: its variant side's (a found content box's, a
    reference variant's), the smaller where both are variants, the base's where neither is
    (then the reference's threshold is the base's)."""
    if "." not in found:
        return reference_threshold
    if "." in reference:
        return min(reference_threshold, found_threshold)
    return found_threshold


def _brute_detail(
    records: list[ReferenceHashRecord],
    thresholds: dict[str, int],
    hashes: ImageHashes,
    min_quality: int,
) -> tuple[matching.MatchDetail | None, dict[str, tuple[int, int]], int]:
    """What match_detail and nearest promise, pair by pair in plain Python: a pair is judged
    by its variant side's threshold (the smaller where both are variants, the base's where
    neither is); the smallest distance/threshold ratio wins, then the smaller distance, then
    originals before variants, then the lowest reference id, then the order given; across a
    found image's hashes the first wins ties unless PDQ comes later. Also returns how many
    found hashes had a tie for their best pair (so the test knows ties were exercised)."""
    rank = {alg.name: i for i, alg in enumerate(matching.algorithms())}
    pdq = hashes.get("pdq")
    low = pdq is not None and pdq.quality is not None and pdq.quality < min_quality
    best, nearest, ties = None, {}, 0
    for hv in hashes.hashes:
        base = matching.base_algorithm(hv.algorithm)
        qt = matching.threshold_for(hv.algorithm, thresholds)
        if qt is None or qt < 0:
            continue
        if "." in hv.algorithm and hv.quality is not None and hv.quality < min_quality:
            continue
        rows = []
        for rec in records:
            rt = matching.threshold_for(rec.algorithm, thresholds)
            if matching.base_algorithm(rec.algorithm) == base and rt is not None and rt >= 0:
                rows.append((rec, rt))
        rows.sort(key=lambda r: (r[0].algorithm != base, r[0].reference_id))  # stable
        if not rows:
            continue
        q = int(hv.value, 16)
        dist = [(q ^ int(rec.value, 16)).bit_count() for rec, _ in rows]
        near = min(range(len(rows)), key=lambda i: (dist[i], i))
        if base not in nearest or dist[near] < nearest[base][1]:
            nearest[base] = (rows[near][0].reference_id, dist[near])
        hits = []
        for i, ((rec, rt), d) in enumerate(zip(rows, dist, strict=True)):
            limit = _pair_limit(hv.algorithm, qt, rec.algorithm, rt)
            if d <= limit:
                hits.append(((d / limit if limit else 0.0, d), i, limit))
        if not hits or low:
            continue
        (ratio, d), i, limit = min(hits)
        ties += sum(1 for key, _, _ in hits if key == (ratio, d)) > 1
        rec = rows[i][0]
        result = MatchResult(rec.reference_id, base, d, limit)
        detail = matching.MatchDetail(result, hv.algorithm, rec.algorithm, rec.offset)
        key = (ratio, rank[base], d)
        if best is None or key < best[0]:
            best = (key, detail)
    return (best[1] if best else None), nearest, ties


def _random_world(seed: int) -> tuple[list[ReferenceHashRecord], list[ImageHashes]]:
    """References near a few base hashes (originals, variants, exact duplicates under other
    ids, frames with offsets) among many unrelated ones, and found images near the bases."""
    gen = np.random.default_rng(seed)

    def rand(bits: int) -> int:
        return int.from_bytes(gen.integers(0, 256, bits // 8, dtype=np.uint8).tobytes())

    def near(value: int, bits: int, n: int) -> str:
        for b in gen.choice(bits, n, replace=False):
            value ^= 1 << int(b)
        return format(value, f"0{bits // 4}x")

    bases = [(rand(256), rand(64)) for _ in range(5)]
    tags = ["pdq", "pdq", "pdq.mirror", "pdq.crop20tl", "pdq.rot90"]
    records = []
    for ref_id in range(1, 60):
        pdq, phash = bases[int(gen.integers(len(bases)))]
        tag = tags[int(gen.integers(len(tags)))]
        offset = float(ref_id) if ref_id % 7 == 0 else None
        records.append(ReferenceHashRecord(ref_id, tag, near(pdq, 256, int(gen.integers(70))),
                                           offset))  # fmt: skip
        records.append(ReferenceHashRecord(ref_id, "phash", near(phash, 64, int(gen.integers(16)))))
    for rec in records[:30:3]:  # the same hash again under another id and kind: ties
        records.append(ReferenceHashRecord(rec.reference_id + 100, rec.algorithm, rec.value))
        if rec.algorithm.startswith("pdq"):
            records.append(ReferenceHashRecord(rec.reference_id + 200, "pdq.mirror", rec.value))
    records += [ReferenceHashRecord(1000 + i, "pdq", near(rand(256), 256, 0)) for i in range(1500)]
    gen.shuffle(records)
    found = []
    for _ in range(80):
        pdq, phash = bases[int(gen.integers(len(bases)))]
        hashes = [
            HashValue("pdq", near(pdq, 256, int(gen.integers(80))), int(gen.integers(30, 100)))
        ]
        if gen.random() < 0.6:
            region = near(pdq, 256, int(gen.integers(80)))
            hashes.append(HashValue("pdq.region", region, int(gen.integers(0, 100))))
        if gen.random() < 0.5:
            hashes.append(HashValue("phash", near(phash, 64, int(gen.integers(20)))))
        gen.shuffle(hashes)
        found.append(ImageHashes("0" * 64, 10, 10, tuple(hashes)))
    return records, found


def _at_the_thresholds(
    records: list[ReferenceHashRecord], thresholds: dict[str, int]
) -> list[ImageHashes]:
    """Found images (whole, or a content box) exactly at, one inside and one beyond the
    threshold of a pair with one of the references."""
    out = []
    for rec in [r for r in records if r.algorithm.startswith("pdq")][:40:4]:
        rt = matching.threshold_for(rec.algorithm, thresholds)
        for found_name in ("pdq", "pdq.region"):
            qt = matching.threshold_for(found_name, thresholds)
            limit = _pair_limit(found_name, qt, rec.algorithm, rt)
            for n in (limit - 1, limit, limit + 1):
                if not 0 <= n <= 256:
                    continue
                value = flip(rec.value, n)
                hashes = [HashValue(found_name, value, 90)]
                if found_name != "pdq":  # a whole image far from everything, and its box
                    hashes.insert(0, HashValue("pdq", flip(rec.value, 200), 90))
                out.append(ImageHashes("0" * 64, 10, 10, tuple(hashes)))
    return out


@pytest.mark.parametrize("native", [True, False], ids=["bitwise_count", "lookup-table"])
@pytest.mark.parametrize(
    "thresholds",
    [
        {"pdq": 31, "phash": 10},
        {"pdq": 52, "pdq.*": 52, "pdq.region": 52, "phash": 10},
        {"pdq": 45, "pdq.*": 38, "pdq.mirror": 60, "pdq.region": 50, "phash": 6},
        {"pdq": 40, "pdq.*": -1, "pdq.region": -1, "phash": 12},
        {"pdq": 130, "pdq.region": 140, "phash": 40},  # beyond what pruning can use
    ],
)
def test_pruned_scan_agrees_with_brute_force(
    thresholds: dict[str, int], native: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if native and not hasattr(np, "bitwise_count"):
        pytest.skip("numpy < 2 has no bitwise_count")
    monkeypatch.setattr(matching, "_NATIVE", native)
    records, found = _random_world(seed=len(thresholds) * 7 + thresholds["pdq"])
    found += _at_the_thresholds(records, thresholds)
    index = ReferenceIndex(records, thresholds, min_quality=50)
    matched = ties = 0
    expected_details = []
    for hashes in found:
        expected, nearest, tied = _brute_detail(records, thresholds, hashes, min_quality=50)
        expected_details.append(expected)
        assert index.match_detail(hashes) == expected, hashes
        assert index.nearest(hashes) == nearest
        matched += expected is not None
        ties += tied
    assert matched >= 10 and matched < len(found)  # both outcomes were exercised
    if thresholds["pdq"] < 100:
        assert ties >= 3  # and ties between rows were broken by the documented order

    frames = [(float(i), hashes) for i, hashes in enumerate(found[:12])]
    scored = [
        ((d.result.distance / d.result.threshold if d.result.threshold else 0.0,
          d.result.algorithm != "pdq", d.result.distance), i, d)
        for i, d in enumerate(expected_details[:12]) if d is not None
    ]  # fmt: skip
    best = min(scored, key=lambda s: (s[0], s[1])) if scored else None
    got = index.match_frames(frames)
    if best is None:
        assert got is None
    else:
        assert got is not None and got.frame_offset == float(best[1])
        assert (got.result, got.found, got.reference) == (
            best[2].result, best[2].found, best[2].reference,
        )  # fmt: skip


# ---------------------------------------------------------------- real photos


def _jpeg(im: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def test_corpus_copies_match_their_reference_and_distractors_match_nothing() -> None:
    references = corpus_files("reference", 6)
    distractors = corpus_files("distractors", 40) + corpus_files("cutouts", 10)
    records = []
    for ref_id, path in enumerate(references, start=1):
        hashes = compute_hashes(path.read_bytes())
        records += [ReferenceHashRecord(ref_id, h.algorithm, h.value) for h in hashes.hashes]
    index = ReferenceIndex(records, THRESHOLDS)
    assert len(index) == len(references)

    for ref_id, path in enumerate(references, start=1):
        with Image.open(path) as im:
            rgb = im.convert("RGB")
        half = rgb.resize((rgb.width // 2, rgb.height // 2), Image.Resampling.LANCZOS)
        for label, data in (("resized 0.5x", _jpeg(half, 90)), ("JPEG q40", _jpeg(rgb, 40))):
            found = index.match(compute_hashes(data))
            assert found is not None, f"{path.name} {label}: {index.nearest(compute_hashes(data))}"
            assert found.reference_id == ref_id, f"{path.name} {label}: {found}"

    false_matches = []
    for path in distractors:
        found = index.match(compute_hashes(path.read_bytes()))
        if found is not None:
            false_matches.append((path.name, found))
    pairs = len(references) * len(distractors)
    assert not false_matches, f"{len(false_matches)} false matches in {pairs} pairs"


def test_blank_found_images_never_match_even_a_bland_reference() -> None:
    def png(colour: tuple[int, int, int], size: tuple[int, int]) -> bytes:
        buf = io.BytesIO()
        Image.new("RGB", size, colour).save(buf, "PNG")
        return buf.getvalue()

    bland = compute_hashes(png((0, 0, 0), (300, 200)))  # a black "reference"
    spacer = compute_hashes(png((255, 255, 255), (1, 1)))  # a 1x1 spacer GIF-like image
    refs = [ReferenceHashRecord(1, h.algorithm, h.value) for h in bland.hashes]
    cfg = MatchConfig()
    assert cfg.min_quality == 50
    strict = ReferenceIndex(refs, thresholds_from_config(cfg), min_quality=cfg.min_quality)
    lax = ReferenceIndex(refs, thresholds_from_config(cfg), min_quality=0)
    assert lax.match(spacer) is not None  # what the quality gate is there to stop
    assert strict.match(spacer) is None
