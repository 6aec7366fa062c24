"""Matching speed: query latency of ReferenceIndex for 10k, 100k and 1M reference PDQ hashes.

Random 256-bit hashes stand in for references, and random hashes for found images (most found
images match nothing; a random hash is about 128 bits from every reference). A query is one
found image with a PDQ hash (and, second column, with a content-box hash too: two PDQ
queries), at the configured thresholds (``[match]`` defaults: a photo's own hash 70 of 256 bits,
its variants 56, content boxes 52), the rows laid out as enrolment stores them: one photo's own
hash, then ``--rows-per-photo`` - 1 variants (518 for a 3:2 photo). ``--threshold N`` puts every
row and query at N and every row as a photo's own hash (the layout measured before issue 10).

Two baselines, timed in the same run:

- full scan: the distance of one query to every row (XOR + ``np.bitwise_count`` over all four
  64-bit columns, then ``<= threshold``), which is what a query cost before rows were pruned
  after the first three words (:meth:`monitor.matching._Table.within`);
- a plain Python loop over the same hashes held as Python ints (``(q ^ r).bit_count()``, the
  fastest pure-Python form): timed on the first 20,000 hashes and extrapolated linearly to N
  (said so in the output).

Single-threaded throughout (numpy does not thread these ufuncs; run under
``OMP_NUM_THREADS=1 taskset -c 0`` to pin one core).

    python benchmarks/match_speed.py [--sizes 10000,100000,1000000] [--queries 50]
                                     [--rows-per-photo 518] [--threshold 52]

Aim: 1M reference hashes under 5 ms per query on one core.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from monitor.config import MatchConfig  # noqa: E402
from monitor.matching import (  # noqa: E402
    ReferenceHashRecord,
    ReferenceIndex,
    thresholds_from_config,
)
from monitor.types import HashValue, ImageHashes  # noqa: E402

LOOP_SUBSET = 20_000


def _hexes(rng: np.random.Generator, n: int) -> list[str]:
    raw = rng.integers(0, 256, (n, 32), dtype=np.uint8)
    return [row.tobytes().hex() for row in raw]


def _median_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--queries", type=int, default=50)
    ap.add_argument("--threshold", type=int, help="one threshold for all (default: [match])")
    ap.add_argument("--rows-per-photo", type=int, default=518)
    args = ap.parse_args()
    cfg = MatchConfig()
    if args.threshold is not None:
        cfg = MatchConfig(
            pdq_threshold=args.threshold,
            variant_pdq_threshold=args.threshold,
            region_pdq_threshold=args.threshold,
        )
    thresholds = thresholds_from_config(cfg)
    per_photo = 40 if args.threshold is not None else args.rows_per_photo
    scan_threshold = max(cfg.pdq_threshold, cfg.variant_pdq_threshold)

    def name(i: int) -> str:
        return "pdq" if args.threshold is not None or i % per_photo == 0 else "pdq.v"

    rng = np.random.default_rng(7)
    sizes = [int(s) for s in args.sizes.split(",")]
    hexes = _hexes(rng, max(sizes))
    queries = _hexes(rng, args.queries)
    print(
        f"PDQ thresholds: own hash {cfg.pdq_threshold}, variants {cfg.variant_pdq_threshold}, "
        f"content box {cfg.region_pdq_threshold} of 256 bits; {per_photo} rows per photo; "
        "times in ms per query (median)"
    )
    print(f"{'references':>11} {'build s':>8} {'1 query':>8} {'2 queries':>10} "
          f"{'full scan':>10} {'python loop':>12} {'vs loop':>8} {'vs scan':>8}")  # fmt: skip
    # the plain loop, timed once on a subset
    ints = [int(h, 16) for h in hexes[:LOOP_SUBSET]]
    q_int = int(queries[0], 16)

    def loop() -> tuple[int, int]:
        best, best_i = 257, -1
        for i, r in enumerate(ints):
            d = (q_int ^ r).bit_count()
            if d < best:
                best, best_i = d, i
        return best_i, best

    loop_per_hash_ms = _median_ms(loop, 5) / len(ints)
    for n in sizes:
        t0 = time.perf_counter()
        index = ReferenceIndex(
            [ReferenceHashRecord(i // per_photo, name(i), h) for i, h in enumerate(hexes[:n])],
            thresholds,
        )
        build = time.perf_counter() - t0
        one = [ImageHashes("0" * 64, 1, 1, (HashValue("pdq", q, 90),)) for q in queries]
        two = [
            ImageHashes("0" * 64, 1, 1, (HashValue("pdq", q, 90), HashValue("pdq.region", r, 90)))
            for q, r in zip(queries, queries[::-1], strict=True)
        ]
        table = index._tables["pdq"]  # the full scan of one query, as before pruning

        def full_scan(q: str, table=table) -> np.ndarray:
            return np.flatnonzero(table.distances(q) <= scan_threshold)

        it1, it2, it3 = iter(one * 100), iter(two * 100), iter(queries * 100)
        t_one = _median_ms(lambda it=it1, ix=index: ix.match(next(it)), args.queries)
        t_two = _median_ms(lambda it=it2, ix=index: ix.match(next(it)), args.queries)
        t_scan = _median_ms(lambda it=it3: full_scan(next(it)), args.queries)
        loop_ms = loop_per_hash_ms * n
        print(f"{n:>11,} {build:>8.2f} {t_one:>8.3f} {t_two:>10.3f} {t_scan:>10.3f} "
              f"{loop_ms:>12.1f} {loop_ms / t_one:>7.0f}x {t_scan / t_one:>7.1f}x")  # fmt: skip
    print(
        f"python loop: timed on {LOOP_SUBSET:,} hashes ({loop_per_hash_ms * 1e6:.0f} ns each), "
        "extrapolated linearly to each size; index times are medians of single queries."
    )


if __name__ == "__main__":
    main()
