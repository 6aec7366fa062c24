"""Rescan: the same loopback web scanned twice; how much the fetch cache saves the second time.

A loopback web (in a separate process) serves N distinct images on P pages, listed by a
SearXNG-compatible search; pages and images carry an ``ETag`` (and answer ``If-None-Match`` with
304) and ``Cache-Control: public, max-age=2592000`` (30 days), as most image servers and CDNs
do. The first scan downloads and hashes everything; the second reuses the stored image URLs of
pages and the stored hashes of images still fresh (capped by ``[fetch] max_cache_age``) without
asking, and asks for the rest with the stored validators. Prints the second scan's time as a
fraction of the first (aim: at most 1/10) and the bytes downloaded by each.

    python benchmarks/rescan.py [--images 1000] [--pages 100] [--page-kb 0] [--no-cache-control]

``--no-cache-control``: pages and images without Cache-Control, so every one is asked for
again (304). ``--page-kb``: pages of that many KB (of text) instead of a few hundred bytes.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# Only what the hashing workers need at the top (they re-import this file as __mp_main__).
from benchmarks.scan_throughput import NAME, start_world  # noqa: E402

CACHE_CONTROL = "public, max-age=2592000"


def main() -> int:
    from monitor.pipeline import hashing_pool, scan_subject

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--pages", type=int, default=100)
    ap.add_argument("--page-kb", type=int, default=0, help="KB of text on each page")
    ap.add_argument(
        "--no-cache-control",
        action="store_true",
        help="serve pages and images without Cache-Control: every one is revalidated (304)",
    )
    args = ap.parse_args()

    parent, server, settings, db, _ = start_world(
        args.images,
        args.pages,
        "bench-rescan-",
        etag=True,
        cache_control="" if args.no_cache_control else CACHE_CONTROL,
        page_kb=args.page_kb,
    )
    with hashing_pool() as pool:
        list(pool.map(int, range(4)))  # start the workers before timing
        t0 = time.perf_counter()
        first = scan_subject(settings, db, NAME, pool=pool, deliver=False)
        first_s = time.perf_counter() - t0
        parent.send("requests")
        asked_first = parent.recv()
        t0 = time.perf_counter()
        second = scan_subject(settings, db, NAME, pool=pool, deliver=False)
        second_s = time.perf_counter() - t0
        parent.send("requests")
        asked = parent.recv()
    parent.send("stop")
    server.join(timeout=10)
    db.dispose()

    for label, summary, seconds in (("first ", first, first_s), ("second", second, second_s)):
        print(
            f"{label} scan: {seconds:7.2f} s  {summary.bytes_downloaded / 1e6:8.2f} MB "
            f"({summary.bytes_downloaded:,} B) downloaded  "
            f"{summary.pages} pages ({summary.pages_unchanged} unchanged, "
            f"{summary.pages_fresh} not asked for), "
            f"{summary.images} images ({summary.images_hashed} hashed, "
            f"{summary.images_unchanged} unchanged, {summary.images_fresh} not asked for), "
            f"{summary.matches} matched, "
            f"{summary.errors} errors"
        )
    asked_second = {k: n - asked_first.get(k, 0) for k, n in asked.items()}
    for label, counts in (("first ", asked_first), ("second", asked_second)):
        shown = ", ".join(f"{k}: {n}" for k, n in sorted(counts.items()) if n) or "none"
        print(f"{label} scan: requests to the web by answer: {shown}")
    ratio = second_s / first_s
    print(
        f"second scan / first scan: time {ratio:.3f} (aim <= 0.1), bytes "
        f"{second.bytes_downloaded / max(first.bytes_downloaded, 1):.4f}"
    )
    ok = (
        first.errors == 0
        and second.errors == 0
        and second.images_hashed == 0
        and second.pages_unchanged == second.pages == first.pages
        and second.matches == first.matches
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
