"""Detection quality: recall per edit and per method, at zero false positives on the corpus.

Transformed copies of ../shared/corpus/reference are made in code (resized, recompressed, colour
changes, blur, noise, overlays, mirrored, turned (corners black or white, or straightened),
cropped, padded, letterboxed (plain or blurred bars), stretched, embedded in a screenshot of a
post, a video frame), encoded as a site would serve them, and hashed exactly as
a scan hashes found images (:func:`monitor.hashing.compute_hashes`). References are hashed as
enrolment does (:func:`monitor.hashing.compute_reference_hashes`). The background is every photo
of distractors/ and cutouts/, hashed as found images too.

For each method (which reference hashes and which found-image hashes are compared) the score of
a (found image, reference) pair is the smallest Hamming distance over its pairs of hashes. The
method's threshold is the largest that gives ZERO false positives: one less than the smallest
score of any (distractor, reference) pair. Recall is the share of copies whose score with their
own reference is within it. Every method uses the production quality gate (found images and
content boxes with PDQ quality below ``[match] min_quality`` never match).

``production`` is the configured matcher itself: :class:`monitor.matching.ReferenceIndex` with
the ``[match]`` defaults (its thresholds are fixed, not tuned per run); a copy counts when it
matches its own reference, a distractor when it matches any.

    python benchmarks/quality.py [--quick] [--jobs 2] [--markdown FILE]

``--quick`` uses 6 references and 60 background photos (about 20 s); the full run about 1-3
minutes on two cores. The first line also gives the stored hashes per reference (variants
included) and the time to hash one background photo (bytes to hashes, median, in a worker).
Video frames are simulated (no video codec): scaled to 640 pixels wide and 97%, blurred
slightly, and JPEG-encoded at quality 20, then again at 30.
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
from PIL import Image, ImageDraw, ImageFont  # noqa: E402

from monitor.config import MatchConfig  # noqa: E402
from monitor.demo import transforms as tf  # noqa: E402
from monitor.errors import NotAnImageError  # noqa: E402
from monitor.hashing import (  # noqa: E402
    base_algorithm,
    compute_hashes,
    compute_reference_hashes,
)
from monitor.matching import (  # noqa: E402
    ReferenceHashRecord,
    ReferenceIndex,
    thresholds_from_config,
)
from monitor.types import ImageHashes  # noqa: E402

CORPUS = REPO.parent / "shared" / "corpus"

# ---------------------------------------------------------------- edits

Encoder = Callable[[Image.Image], bytes]


def _jpeg(im: Image.Image, quality: int = 85) -> bytes:
    return tf.encode(im, "JPEG", quality)


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=max(size, 8))


def screenshot(
    im: Image.Image, share: float, dark: bool = False, left: bool = False
) -> Image.Image:
    """The photo inside a screenshot of a social media post: 1080 px wide, an avatar, a name
    and a handle, two lines of caption above, a thin border, like/comment lines below; the
    photo ``share`` of the canvas width. The screenshot is then scaled to 60% (a phone's
    screenshot re-posted)."""
    bg, fg, muted = (
        ((21, 32, 43), (235, 235, 235), (140, 150, 160))
        if dark
        else (
            (255, 255, 255),
            (20, 20, 20),
            (110, 118, 125),
        )
    )
    width = 1080
    pw = round(width * share)
    ph = round(pw * im.height / im.width)
    top, bottom = 250, 190
    canvas = Image.new("RGB", (width, top + ph + bottom), bg)
    draw = ImageDraw.Draw(canvas)
    draw.ellipse((30, 30, 120, 120), fill=(200, 120, 80))
    draw.text((140, 38), "Someone Posting", font=_font(34), fill=fg)
    draw.text((140, 82), "@someone_posting · 2h", font=_font(28), fill=muted)
    draw.text((30, 140), "can't believe this is online lol", font=_font(32), fill=fg)
    draw.text((30, 185), "#nofilter #weekend #throwback", font=_font(32), fill=(29, 155, 240))
    x = 30 if left else (width - pw) // 2
    canvas.paste(im.resize((pw, ph), Image.Resampling.LANCZOS), (x, top))
    draw.rectangle((x - 1, top - 1, x + pw, top + ph), outline=muted)
    y = top + ph + 30
    for i, label in enumerate(("12", "48", "1.2K", "Share")):
        draw.rectangle((30 + i * 250, y, 62 + i * 250, y + 32), outline=muted, width=3)
        draw.text((75 + i * 250, y), label, font=_font(28), fill=muted)
    draw.text((30, y + 70), "View all 56 comments", font=_font(28), fill=muted)
    return tf.resize(canvas, 0.6)


def video_frame(im: Image.Image) -> bytes:
    """Simulated video frame: 640 px wide, scaled 97%, slight blur, JPEG q20 then q30."""
    small = tf.resize(im, 640 / im.width * 0.97)
    return _jpeg(tf.recompress(tf.blur(small, 0.8), 20), 30)


@dataclass(frozen=True)
class Edit:
    name: str
    group: str
    make: Callable[[Image.Image], bytes]


def _e(name: str, group: str, edit: Callable[[Image.Image], Image.Image], q: int = 85) -> Edit:
    return Edit(name, group, lambda im: _jpeg(edit(im), q))


EDITS: list[Edit] = [
    *(
        _e(f"resize {s}x", "resize", functools.partial(tf.resize, scale=s))
        for s in (0.25, 0.5, 0.75, 1.5, 2.0)
    ),
    *(
        Edit(f"JPEG q{q}", "recompression", functools.partial(_jpeg, quality=q))
        for q in (20, 40, 60, 80, 95)
    ),
    *(
        Edit(f"WebP q{q}", "recompression", lambda im, q=q: tf.encode(im, "WEBP", q))
        for q in (40, 80)
    ),
    _e("brightness 0.7", "colour", lambda im: tf.brightness(im, 0.7)),
    _e("brightness 1.3", "colour", lambda im: tf.brightness(im, 1.3)),
    _e("contrast 0.7", "colour", lambda im: tf.contrast(im, 0.7)),
    _e("contrast 1.4", "colour", lambda im: tf.contrast(im, 1.4)),
    _e("gamma 0.7", "colour", lambda im: tf.gamma(im, 0.7)),
    _e("gamma 1.5", "colour", lambda im: tf.gamma(im, 1.5)),
    _e("saturation 0.5", "colour", lambda im: tf.saturation(im, 0.5)),
    _e("saturation 1.6", "colour", lambda im: tf.saturation(im, 1.6)),
    _e("greyscale", "colour", tf.greyscale),
    _e("blur r1.5", "blur/noise", lambda im: tf.blur(im, 1.5)),
    _e("blur r3", "blur/noise", lambda im: tf.blur(im, 3)),
    _e("noise s8", "blur/noise", lambda im: tf.noise(im, 8)),
    _e("noise s16", "blur/noise", lambda im: tf.noise(im, 16)),
    _e("caption text", "overlay", lambda im: tf.overlay_text(im, "omg look who it is")),
    _e("watermark tiled", "overlay", tf.watermark),
    _e("watermark corner", "overlay", lambda im: tf.watermark(im, "@site.example", tiled=False)),
    _e("mirror", "mirror/right angle", tf.mirror),
    _e("rotate 90", "mirror/right angle", lambda im: im.transpose(Image.Transpose.ROTATE_90)),
    _e("rotate 180", "mirror/right angle", lambda im: im.transpose(Image.Transpose.ROTATE_180)),
    _e("rotate 270", "mirror/right angle", lambda im: im.transpose(Image.Transpose.ROTATE_270)),
    *(
        _e(f"rotate {d}deg", "small rotation", lambda im, d=d: tf.rotate(im, d))
        for d in (3, -4, 5, 8)
    ),
    _e("rotate 5deg, white", "small rotation", lambda im: tf.rotate(im, 5, fill=(255, 255, 255))),
    _e("rotate -7deg, white", "small rotation", lambda im: tf.rotate(im, -7, fill=(255, 255, 255))),
    _e("straighten 4deg", "small rotation", lambda im: tf.straighten(im, 4)),
    _e("straighten -7deg", "small rotation", lambda im: tf.straighten(im, -7)),
    *(
        _e(f"crop {round(f * 100)}% centred", "crop <=20%", lambda im, f=f: tf.crop(im, f))
        for f in (0.05, 0.1, 0.2)
    ),
    *(
        _e(
            f"crop {round(f * 100)}% at {a}",
            "crop <=20%",
            lambda im, f=f, a=a: tf.crop(im, f, anchor=a),
        )
        for f in (0.05, 0.1, 0.2)
        for a in ((0.2, 0.8), (1.0, 0.35))
    ),
    _e("crop 30% centred", "crop 30%", lambda im: tf.crop(im, 0.3)),
    _e("crop 30% at (0.8, 0.1)", "crop 30%", lambda im: tf.crop(im, 0.3, anchor=(0.8, 0.1))),
    *(
        _e(f"pad {round(f * 100)}% black", "padding", lambda im, f=f: tf.pad(im, f))
        for f in (0.1, 0.2, 0.3)
    ),
    _e("pad 20% white", "padding", lambda im: tf.pad(im, 0.2, (255, 255, 255))),
    _e("letterbox 16:9", "padding", lambda im: tf.letterbox(im, 16 / 9)),
    _e("letterbox 1:1 white", "padding", lambda im: tf.letterbox(im, 1.0, (255, 255, 255))),
    _e("letterbox 9:16 blurred", "padding", lambda im: tf.blurred_letterbox(im, 9 / 16)),
    _e("letterbox 16:9 blurred", "padding", lambda im: tf.blurred_letterbox(im, 16 / 9)),
    _e("stretch 0.8", "stretch", lambda im: tf.stretch(im, 0.8)),
    _e("stretch 1.25", "stretch", lambda im: tf.stretch(im, 1.25)),
    *(
        _e(
            f"screenshot {round(s * 100)}%{' dark' if d else ''}{' left' if left else ''}",
            "screenshot",
            lambda im, s=s, d=d, left=left: screenshot(im, s, d, left),
            80,
        )
        for s, d, left in (
            (0.4, False, True),
            (0.55, True, False),
            (0.7, False, False),
            (0.7, True, True),
        )
    ),
    Edit("video frame (simulated)", "video frame", video_frame),
]

TARGETS = {
    "resize": 0.99,
    "recompression": 0.99,
    "colour": 0.99,
    "blur/noise": 0.99,
    "overlay": 0.99,
    "mirror/right angle": 0.99,
    "crop <=20%": 0.90,
    "crop 30%": None,
    "padding": 0.90,
    "small rotation": 0.90,
    "stretch": 0.90,
    "screenshot": 0.80,
    "video frame": None,
}

# ---------------------------------------------------------------- methods


@dataclass(frozen=True)
class Method:
    name: str
    base: str  # "pdq" or "phash"
    reference: Callable[[str], bool]  # which stored reference hashes take part
    found: Callable[[str], bool]  # which hashes of a found image take part


def _dihedral(name: str) -> bool:
    return name in {
        "pdq", "pdq.rot90", "pdq.rot180", "pdq.rot270", "pdq.flipv", "pdq.mirror",
        "pdq.transpose", "pdq.transverse",
    }  # fmt: skip


METHODS = [
    Method("phash", "phash", lambda n: n == "phash", lambda n: n == "phash"),
    Method("pdq", "pdq", lambda n: n == "pdq", lambda n: n == "pdq"),
    Method("pdq+dihedral", "pdq", _dihedral, lambda n: n == "pdq"),
    Method("pdq+variants", "pdq", lambda n: base_algorithm(n) == "pdq", lambda n: n == "pdq"),
    Method("pdq+region", "pdq", lambda n: n == "pdq", lambda n: base_algorithm(n) == "pdq"),
    Method(
        "pdq+variants+region",
        "pdq",
        lambda n: base_algorithm(n) == "pdq",
        lambda n: base_algorithm(n) == "pdq",
    ),
]

# ---------------------------------------------------------------- work (in worker processes)


@functools.lru_cache(maxsize=4)
def _reference_image(path: str) -> Image.Image:
    with Image.open(path) as im:
        return tf.decode(Path(path).read_bytes()) if im.format else im.convert("RGB")


def _copy(job: tuple[str, int]) -> ImageHashes | None:
    path, edit_index = job
    data = EDITS[edit_index].make(_reference_image(path))
    try:
        return compute_hashes(data)
    except NotAnImageError:
        return None


def _found(path: Path) -> tuple[ImageHashes | None, float]:
    data = path.read_bytes()
    started = time.perf_counter()
    try:
        hashes: ImageHashes | None = compute_hashes(data)
    except NotAnImageError:
        hashes = None
    return hashes, time.perf_counter() - started


def _reference(path: Path) -> ImageHashes:
    return compute_reference_hashes(path.read_bytes())


# ---------------------------------------------------------------- scoring


def _bits(values: list[str]) -> np.ndarray:
    return np.stack(
        [np.frombuffer(bytes.fromhex(v), dtype=">u8").astype(np.uint64) for v in values]
    )


def _distance_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    out = np.zeros((len(a), len(b)), dtype=np.int32)
    for w in range(a.shape[1]):
        out += np.bitwise_count(a[:, w, None] ^ b[None, :, w]).astype(np.int32)
    return out


def scores(
    method: Method, found: list[ImageHashes | None], refs: list[ImageHashes], min_quality: int
) -> tuple[np.ndarray, int]:
    """(found x reference) matrix of the method's score (a large number where nothing can be
    compared), and the number of hash comparisons made."""
    big = 10_000
    f_rows, f_img = [], []
    for i, h in enumerate(found):
        if h is None:
            continue
        pdq = h.get("pdq")
        if pdq is not None and pdq.quality is not None and pdq.quality < min_quality:
            continue  # the production quality gate
        for hv in h.hashes:
            if base_algorithm(hv.algorithm) != method.base or not method.found(hv.algorithm):
                continue
            if hv.algorithm != method.base and (hv.quality or 0) < min_quality:
                continue
            f_rows.append(hv.value)
            f_img.append(i)
    r_rows, r_img = [], []
    for j, h in enumerate(refs):
        for hv in h.hashes:
            if base_algorithm(hv.algorithm) == method.base and method.reference(hv.algorithm):
                r_rows.append(hv.value)
                r_img.append(j)
    out = np.full((len(found), len(refs)), big, dtype=np.int32)
    if not f_rows or not r_rows:
        return out, 0
    d = _distance_matrix(_bits(f_rows), _bits(r_rows))
    per_ref = np.full((len(f_rows), len(refs)), big, dtype=np.int32)
    r_img_a = np.asarray(r_img)
    for j in range(len(refs)):
        per_ref[:, j] = d[:, r_img_a == j].min(axis=1)
    np.minimum.at(out, np.asarray(f_img), per_ref)
    return out, d.size


# ---------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="6 references, 60 background photos")
    ap.add_argument("--jobs", type=int, default=2, help="worker processes (default 2)")
    ap.add_argument("--markdown", type=Path, help="also write the tables as Markdown here")
    args = ap.parse_args()

    ref_paths = sorted(p for p in (CORPUS / "reference").iterdir() if p.is_file())
    bg_paths = sorted(p for p in (CORPUS / "distractors").iterdir() if p.is_file()) + sorted(
        p for p in (CORPUS / "cutouts").iterdir() if p.is_file()
    )
    if args.quick:
        ref_paths, bg_paths = ref_paths[:6], bg_paths[::5][:60]
    cfg = MatchConfig()
    started = time.perf_counter()
    with ProcessPoolExecutor(args.jobs) as pool:
        refs = list(pool.map(_reference, ref_paths))
        found = list(pool.map(_found, bg_paths, chunksize=8))
        background = [h for h, _ in found]
        seconds = [t for _, t in found]
        jobs = [(str(p), e) for p in ref_paths for e in range(len(EDITS))]
        copies = list(pool.map(_copy, jobs, chunksize=len(EDITS)))
    hashed = time.perf_counter() - started
    copy_ref = np.asarray([ref_paths.index(Path(p)) for p, _ in jobs])
    copy_edit = np.asarray([e for _, e in jobs])
    n_pairs = len(refs) * sum(b is not None for b in background)

    # Per method: zero-FP threshold and recall per edit.
    lines: list[str] = []
    header = ["edit", "group", "target"] + [m.name for m in METHODS] + ["production"]
    recall: dict[str, np.ndarray] = {}
    summary: list[list[str]] = []
    for m in METHODS:
        bg_scores, bg_comparisons = scores(m, background, refs, cfg.min_quality)
        cp_scores, _ = scores(m, copies, refs, cfg.min_quality)
        threshold = int(bg_scores.min()) - 1
        own = cp_scores[np.arange(len(copies)), copy_ref]
        recall[m.name] = own <= threshold
        valid = bg_scores[bg_scores < 10_000]
        spread = f"{valid.mean():.0f} ± {valid.std():.0f}" if valid.size else "-"
        summary.append([m.name, str(threshold), spread, f"{n_pairs:,}", f"{bg_comparisons:,}", "0"])

    # Production: the configured index, as a scan uses it.
    thresholds = thresholds_from_config(cfg)
    records = [
        ReferenceHashRecord(j, hv.algorithm, hv.value)
        for j, h in enumerate(refs)
        for hv in h.hashes
    ]
    index = ReferenceIndex(records, thresholds, min_quality=cfg.min_quality)
    prod = np.zeros(len(copies), dtype=bool)
    for i, h in enumerate(copies):
        found = index.match(h) if h is not None else None
        prod[i] = found is not None and found.reference_id == copy_ref[i]
    false = [p.name for p, b in zip(bg_paths, background, strict=True) if b and index.match(b)]
    nearest = [index.nearest(b).get("pdq", (0, 999))[1] for b in background if b is not None]
    comparisons = sum(
        len(index._tables[base_algorithm(hv.algorithm)])
        for b in background
        if b is not None
        for hv in b.hashes
        if base_algorithm(hv.algorithm) in index.algorithms
    )
    recall["production"] = prod
    shown = ", ".join(f"{k} {v}" for k, v in thresholds.items())
    summary.append(
        [
            "production",
            shown,
            f"nearest PDQ {min(nearest)}",
            f"{n_pairs:,}",
            f"{comparisons:,}",
            str(len(false)),
        ]
    )

    names = [m.name for m in METHODS] + ["production"]
    rows: list[list[str]] = []
    for e, edit in enumerate(EDITS):
        sel = copy_edit == e
        target = TARGETS[edit.group]
        rows.append(
            [edit.name, edit.group, f"{target:.0%}" if target else "-"]
            + [f"{recall[n][sel].mean():.0%}" for n in names]
        )
    group_rows: list[list[str]] = []
    for group, target in TARGETS.items():
        sel = np.isin(copy_edit, [i for i, e in enumerate(EDITS) if e.group == group])
        if not sel.any():
            continue
        cells = [f"{recall[n][sel].mean():.1%}" for n in names]
        ok = (
            "-"
            if target is None
            else ("yes" if recall["production"][sel].mean() >= target else "NO")
        )
        group_rows.append(
            [group, f"{target:.0%}" if target else "-", str(int(sel.sum()))] + cells + [ok]
        )

    def table(head: list[str], body: list[list[str]]) -> list[str]:
        out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        out += ["| " + " | ".join(r) + " |" for r in body]
        return out

    rows_per_ref = sum(len(h.hashes) for h in refs) / len(refs)
    regions = sum(
        sum(hv.algorithm.startswith("pdq.region") for hv in b.hashes) for b in background if b
    )
    lines.append(
        f"{len(refs)} references ({rows_per_ref:.0f} stored hashes each), {len(bg_paths)} "
        f"background photos (distractors + cutouts), {len(copies)} copies; hashing took "
        f"{hashed:.0f} s; a background photo {np.median(seconds) * 1000:.1f} ms (median; "
        f"{regions / len(bg_paths):.2f} region hashes each)."
    )
    lines.append("")
    lines += table(
        [
            "method",
            "zero-FP threshold",
            "background score (mean ± sd)",
            "reference-background pairs",
            "hash comparisons",
            "false positives",
        ],
        summary,
    )
    lines.append("")
    lines += table(["group", "target", "copies"] + names + ["production meets target"], group_rows)
    lines.append("")
    lines += table(header, rows)
    if false:
        lines += ["", f"production false positives: {', '.join(false)}"]
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n")


if __name__ == "__main__":
    main()
