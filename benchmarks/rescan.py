"""Rescan: the same loopback web scanned twice; how much the fetch cache saves the second time.

A loopback web (in a separate process) serves N distinct images on P pages, listed by a
SearXNG-compatible search; images carry an ``ETag`` (and answer ``If-None-Match`` with 304) and
``Cache-Control: public, max-age=2592000`` (30 days), as most image servers and CDNs do. The
first scan downloads and hashes everything; the second reuses the stored hashes of images still
fresh (capped by ``[fetch] max_cache_age``) without asking, and asks for the rest with the
stored validators. Prints the second scan's time as a fraction of the first (aim: at most 1/10)
and the bytes downloaded by each.

    python benchmarks/rescan.py [--images 1000] [--pages 100] [--no-cache-control]

``--no-cache-control``: images without Cache-Control, so every one is asked for again (304).
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# Only what the hashing workers need at the top (they re-import this file as __mp_main__).
from benchmarks.scan_throughput import base_photos, image_bytes  # noqa: E402

NAME = "Bench Rescan"


CACHE_CONTROL = "public, max-age=2592000"


def serve(conn, n_images: int, n_pages: int, cache_control: bool) -> None:  # a child process
    from monitor.testing.searxng import FakeSearxng
    from monitor.testing.web import LoopbackWeb, Response

    bases = base_photos()
    web = LoopbackWeb().start()
    per_page = n_images // n_pages
    fake = FakeSearxng(results_per_page=n_pages)
    results = []
    for p in range(n_pages):
        imgs = "".join(f'<img src="/img/{p * per_page + k}.jpg" alt="">' for k in range(per_page))
        web.add(f"/page/{p}.html", f"<html><body><h1>{p}</h1>{imgs}</body></html>")
        results.append({"url": web.url(f"/page/{p}.html"), "title": f"page {p}", "engine": "bench"})
    fake.add_results(f'"{NAME}"', "general", results)
    fake.install(web)
    web.add("/robots.txt", "User-agent: *\nAllow: /\n", "text/plain")

    def image(req):
        i = int(req.path.rsplit("/", 1)[1].split(".")[0])
        headers = {"ETag": f'"img-{i}-v1"'}
        if cache_control:
            headers["Cache-Control"] = CACHE_CONTROL
        if req.headers.get("if-none-match") == headers["ETag"]:
            return Response(304, b"", "image/jpeg", headers)
        return Response(200, image_bytes(bases, i), "image/jpeg", headers)

    for i in range(n_images):
        web.route(f"/img/{i}.jpg", image)
    conn.send(web.base_url)
    conn.recv()  # wait until told to stop
    web.stop()


def main() -> int:
    from monitor import store
    from monitor.config import Settings
    from monitor.db import Database
    from monitor.enrol import enrol_images
    from monitor.pipeline import hashing_pool, scan_subject

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--pages", type=int, default=100)
    ap.add_argument(
        "--no-cache-control",
        action="store_true",
        help="serve images without Cache-Control: every one is revalidated (304)",
    )
    args = ap.parse_args()

    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    server = ctx.Process(
        target=serve, args=(child, args.images, args.pages, not args.no_cache_control), daemon=True
    )
    server.start()
    base_url = parent.recv()
    tmp = Path(tempfile.mkdtemp(prefix="bench-rescan-"))
    settings = Settings(
        data_dir=tmp,
        search={"backends": [{"kind": "searxng", "url": base_url}], "max_queries_per_scan": 2},
        fetch={"allow_private_networks": True, "max_pages_per_scan": args.pages + 10},
        mail={"outbox_dir": str(tmp / "outbox")},
        cases={"capture_evidence": False},
    )
    db = Database(settings.database_url)
    bases = base_photos()
    with db.session() as s:
        subject = store.add_subject(s, NAME, interval=timedelta(days=1))
        report = enrol_images(s, subject, [("ref", bases[0])])
        assert report.enrolled == 1, report
    del bases
    with hashing_pool() as pool:
        list(pool.map(int, range(4)))  # start the workers before timing
        t0 = time.perf_counter()
        first = scan_subject(settings, db, NAME, pool=pool, deliver=False)
        first_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        second = scan_subject(settings, db, NAME, pool=pool, deliver=False)
        second_s = time.perf_counter() - t0
    parent.send("stop")
    server.join(timeout=10)
    db.dispose()

    for label, summary, seconds in (("first ", first, first_s), ("second", second, second_s)):
        print(
            f"{label} scan: {seconds:7.2f} s  {summary.bytes_downloaded / 1e6:8.2f} MB downloaded  "
            f"{summary.images} images ({summary.images_hashed} hashed, "
            f"{summary.images_unchanged} unchanged, {summary.images_fresh} not asked for), "
            f"{summary.matches} matched, "
            f"{summary.errors} errors"
        )
    ratio = second_s / first_s
    print(
        f"second scan / first scan: time {ratio:.3f} (aim <= 0.1), bytes "
        f"{second.bytes_downloaded / max(first.bytes_downloaded, 1):.4f}"
    )
    ok = (
        first.errors == 0
        and second.errors == 0
        and second.images_hashed == 0
        and second.matches == first.matches
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
