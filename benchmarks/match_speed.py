"""Matching speed: query latency of ReferenceIndex for 10k, 100k and 1M reference PDQ hashes.

Random 256-bit hashes stand in for references (the scan's cost does not depend on their
content). A query is one found image with a PDQ hash (and, second row, with a content-box hash
too: two PDQ queries). The baseline is a plain Python loop over the same hashes held as Python
ints (``(q ^ r).bit_count()``, the fastest pure-Python form): it is timed on the first 20,000
hashes and extrapolated linearly to N (said so in the output). Single-threaded throughout.

    python benchmarks/match_speed.py [--sizes 10000,100000,1000000] [--queries 50]

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

from monitor.matching import ReferenceHashRecord, ReferenceIndex  # noqa: E402
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
    args = ap.parse_args()
    rng = np.random.default_rng(7)
    sizes = [int(s) for s in args.sizes.split(",")]
    hexes = _hexes(rng, max(sizes))
    queries = _hexes(rng, args.queries)
    print(f"{'references':>11} {'build s':>8} {'1 query ms':>11} {'2 queries ms':>13} "
          f"{'python loop ms':>15} {'speed-up':>9}")  # fmt: skip
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
            [ReferenceHashRecord(i // 40, "pdq", h) for i, h in enumerate(hexes[:n])],
            {"pdq": 31, "pdq.region": 31},
        )
        build = time.perf_counter() - t0
        one = [ImageHashes("0" * 64, 1, 1, (HashValue("pdq", q, 90),)) for q in queries]
        two = [
            ImageHashes("0" * 64, 1, 1, (HashValue("pdq", q, 90), HashValue("pdq.region", r, 90)))
            for q, r in zip(queries, queries[::-1], strict=True)
        ]
        it1, it2 = iter(one * 100), iter(two * 100)
        t_one = _median_ms(lambda it=it1, ix=index: ix.match(next(it)), args.queries)
        t_two = _median_ms(lambda it=it2, ix=index: ix.match(next(it)), args.queries)
        loop_ms = loop_per_hash_ms * n
        print(f"{n:>11,} {build:>8.2f} {t_one:>11.3f} {t_two:>13.3f} {loop_ms:>15.1f} "
              f"{loop_ms / t_one:>8.0f}x")  # fmt: skip
    print(
        f"python loop: timed on {LOOP_SUBSET:,} hashes ({loop_per_hash_ms * 1e6:.0f} ns each), "
        "extrapolated linearly to each size; index times are medians of single queries."
    )


if __name__ == "__main__":
    main()
