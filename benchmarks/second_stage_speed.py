"""Time the second stage adds per found image (issue 10: median <= 20 ms, only on candidates).

Enrols one half of the corpus reference photos (``--split``, as ``benchmarks/quality.py``:
held-out by default), then for every found image -- every photo of distractors/ and cutouts/
(unrelated, as most found images are) and ``--copies`` random copies of each enrolled photo
per hard chain (crop + turn, stickers, stickers + resize, screenshot of a mirrored photo) --
times, one image at a time in this process:

- ``hash``: ``compute_hashes`` (decoding and the first-stage hashes: what every image costs);
- ``added``: what the second stage adds: the first-stage match and the grey-zone test
  (``ReferenceIndex.grey``) for every image that matched nothing, and for a candidate the
  second-stage hashes (``second_stage_from_bytes``, decoding again) and matching them.

Prints median, 90th percentile and mean of ``added`` over all found images, over the
unrelated ones only, and per candidate, with ``hash`` of the same run to compare with.

    OMP_NUM_THREADS=1 taskset -c 0 python benchmarks/second_stage_speed.py [--split held-out]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import numpy as np  # noqa: E402
import quality as q  # noqa: E402
import quality_edits as qe  # noqa: E402

from monitor.config import MatchConfig  # noqa: E402
from monitor.errors import NotAnImageError  # noqa: E402
from monitor.hashing import compute_hashes, compute_reference_hashes  # noqa: E402
from monitor.matching import (  # noqa: E402
    ReferenceHashRecord,
    ReferenceIndex,
    thresholds_from_config,
)
from monitor.second_stage import second_stage_from_bytes  # noqa: E402
from monitor.types import ImageHashes  # noqa: E402

HARD = (
    "crop 5-20% + rotation 1-5 deg",
    "stickers 5-20%",
    "stickers + resize 0.3-1.0",
    "screenshot of a mirrored photo",
)


def _ms(values: list[float]) -> str:
    a = np.asarray(values) * 1000
    if not a.size:
        return "-"
    return (
        f"median {np.median(a):.2f} ms, p90 {np.percentile(a, 90):.2f} ms, mean {a.mean():.2f} ms"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--split", choices=("held-out", "tune", "all"), default="held-out")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--copies", type=int, default=2, help="copies per photo and hard chain")
    args = ap.parse_args()

    refs_all = [p for p in (q.CORPUS / "reference").iterdir() if p.is_file()]
    enrolled, _ = q.split_references(refs_all, args.split)
    cfg = MatchConfig()
    records = [
        ReferenceHashRecord(j, hv.algorithm, hv.value)
        for j, p in enumerate(enrolled)
        for hv in compute_reference_hashes(p.read_bytes()).hashes
    ]
    index = ReferenceIndex(records, thresholds_from_config(cfg), min_quality=cfg.min_quality)

    found: list[tuple[str, bytes]] = []
    for folder in ("distractors", "cutouts"):
        found += [
            ("unrelated", p.read_bytes())
            for p in sorted((q.CORPUS / folder).iterdir())
            if p.is_file()
        ]
    families = [f for f in qe.FAMILIES if f.name in HARD]
    for p in enrolled:
        for fam in families:
            for k in range(args.copies):
                rng = q._rng(args.seed, p.name, fam.name, k)
                im, quality, _ = fam.make(q._image(str(p)), rng)
                found.append(("copy", q._jpeg(im, quality)))

    hash_t: list[float] = []
    added: list[float] = []
    kinds: list[str] = []
    per_candidate: list[float] = []
    matched_second = 0
    for kind, data in found:
        t0 = time.perf_counter()
        try:
            hashes = compute_hashes(data)
        except NotAnImageError:
            continue
        t1 = time.perf_counter()
        detail = index.match_detail(hashes)
        t2 = time.perf_counter()
        extra_t = 0.0
        if detail is None and index.grey(hashes, cfg.second_stage_grey):
            t3 = time.perf_counter()
            extra = second_stage_from_bytes(data)
            both = ImageHashes(hashes.sha256, hashes.width, hashes.height, hashes.hashes + extra)
            if index.match_detail(both) is not None:
                matched_second += 1
            extra_t = time.perf_counter() - t3
            per_candidate.append(time.perf_counter() - t2)
        elif detail is None:
            extra_t = time.perf_counter() - t2  # the grey-zone test
        hash_t.append(t1 - t0)
        added.append(extra_t)  # a first-stage match is made anyway: nothing added
        kinds.append(kind)
    unrelated = [a for a, k in zip(added, kinds, strict=True) if k == "unrelated"]
    print(
        f"{len(enrolled)} photos enrolled ({args.split} half, {len(records):,} stored hashes); "
        f"{len(added)} found images ({len(unrelated)} unrelated, "
        f"{len(added) - len(unrelated)} copies of hard chains)."
    )
    print(f"hash (compute_hashes), every image: {_ms(hash_t)}")
    print(f"added by the second stage, every image: {_ms(added)}")
    print(f"added by the second stage, unrelated images: {_ms(unrelated)}")
    print(
        f"candidates (grey zone, no first-stage match): {len(per_candidate)} of {len(added)} "
        f"({len(per_candidate) / max(len(added), 1):.0%}); matched through it: {matched_second}"
    )
    print(f"second stage per candidate (hashes + matching): {_ms(per_candidate)}")
    ratio = np.median(per_candidate) / np.median(hash_t) if per_candidate else float("nan")
    print(f"per candidate / median compute_hashes of the same run: {ratio:.1f}x")


if __name__ == "__main__":
    main()
