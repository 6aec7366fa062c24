"""Scan throughput: images per second for a whole scan, against hashing the same images alone.

A loopback web (in a separate process) serves N distinct images on P pages, listed by a
SearXNG-compatible search. In the same run we time (1) a full scan — search, fetch, extract,
hash in the process pool, match, record — and (2) hashing the same image bytes alone in the same
pool, and print their ratio (aim: >= 0.7 on two cores) and the scanner's peak memory (the main
process plus its hashing workers; aim: < 300 MB).

    python benchmarks/scan_throughput.py [--images 2000] [--pages 200]

Photos come from ../shared/corpus/distractors when present (generated in code otherwise); each
image served is distinct (a unique trailer after the JPEG's end marker), so no cache can help.
"""

from __future__ import annotations

import argparse
import io
import multiprocessing
import os
import sys
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from PIL import Image  # noqa: E402

from monitor import store  # noqa: E402
from monitor.config import Settings  # noqa: E402
from monitor.db import Database  # noqa: E402
from monitor.enrol import enrol_images  # noqa: E402
from monitor.hashing import compute_hashes  # noqa: E402
from monitor.pipeline import hashing_pool, scan_subject  # noqa: E402

CORPUS = REPO.parent / "shared" / "corpus" / "distractors"
NAME = "Bench Mark"


def base_photos(max_side: int = 800) -> list[bytes]:
    """JPEG bytes of the corpus distractors (or generated photos), at most max_side pixels."""
    out: list[bytes] = []
    if CORPUS.is_dir():
        for path in sorted(CORPUS.iterdir()):
            im = Image.open(path).convert("RGB")
            im.thumbnail((max_side, max_side))
            buf = io.BytesIO()
            im.save(buf, "JPEG", quality=85)
            out.append(buf.getvalue())
    else:
        from monitor.demo.photos import photo_bytes

        out = [photo_bytes(seed, (800, 600)) for seed in range(40)]
    return out


def image_bytes(bases: list[bytes], i: int) -> bytes:
    """Image number i: a base photo with a unique trailer (same pixels, distinct SHA-256)."""
    return bases[i % len(bases)] + f"bench-{i}".encode()


def serve(conn, n_images: int, n_pages: int) -> None:  # runs in a child process
    from monitor.testing.searxng import FakeSearxng
    from monitor.testing.web import LoopbackWeb, Response

    bases = base_photos()
    web = LoopbackWeb().start()
    per_page = n_images // n_pages
    fake = FakeSearxng()
    fake.results_per_page = n_pages
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
        return Response(200, image_bytes(bases, i), "image/jpeg")

    for i in range(n_images):
        web.route(f"/img/{i}.jpg", image)
    conn.send(web.base_url)
    conn.recv()  # wait until told to stop
    web.stop()


class PeakRSS:
    """Samples the resident memory of this process plus its children (but not `exclude`)."""

    def __init__(self, exclude: int) -> None:
        self.exclude, self.peak, self._stop = exclude, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _rss_and_ppid(pid: int) -> tuple[int, int]:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return int(fields[21]) * os.sysconf("SC_PAGE_SIZE"), int(fields[1])

    def sample(self) -> int:
        me, total = os.getpid(), 0
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == self.exclude:
                continue
            try:
                rss, ppid = self._rss_and_ppid(int(entry))
            except (OSError, IndexError):
                continue
            if int(entry) == me or ppid == me:
                total += rss
        return total

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, self.sample())

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--pages", type=int, default=200)
    args = ap.parse_args()

    parent, child = multiprocessing.get_context("spawn").Pipe()
    server = multiprocessing.get_context("spawn").Process(
        target=serve, args=(child, args.images, args.pages), daemon=True
    )
    server.start()
    base_url = parent.recv()
    tmp = Path(tempfile.mkdtemp(prefix="bench-scan-"))
    settings = Settings(
        data_dir=tmp,
        search={"backends": [{"kind": "searxng", "url": base_url}], "max_queries_per_scan": 1},
        fetch={"allow_private_networks": True, "max_pages_per_scan": args.pages + 10},
        mail={"outbox_dir": str(tmp / "outbox")},
    )
    db = Database(settings.database_url)
    bases = base_photos()
    with db.session() as s:
        subject = store.add_subject(s, NAME, interval=timedelta(days=1))
        enrol_images(s, subject, [("ref", bases[0])])  # base 0 reappears every len(bases) images
    del bases
    with hashing_pool() as pool:
        list(pool.map(int, range(4)))  # start the workers before timing
        with PeakRSS(exclude=server.pid or -1) as mem:
            t0 = time.perf_counter()
            summary = scan_subject(settings, db, NAME, pool=pool, deliver=False)
            scan_s = time.perf_counter() - t0
        bases = base_photos()
        bodies = [image_bytes(bases, i) for i in range(args.images)]
        t0 = time.perf_counter()
        list(pool.map(compute_hashes, bodies, chunksize=4))
        hash_s = time.perf_counter() - t0
    parent.send("stop")
    server.join(timeout=10)
    db.dispose()

    scan_rate = summary.images_hashed / scan_s
    hash_rate = len(bodies) / hash_s
    print(
        f"images: {summary.images} fetched, {summary.images_hashed} hashed on {summary.pages} "
        f"pages; {summary.matches} matches; {summary.errors} errors"
    )
    print(f"scan:         {scan_s:7.2f} s  {scan_rate:7.1f} images/s")
    print(f"hashing only: {hash_s:7.2f} s  {hash_rate:7.1f} images/s  ({os.cpu_count()} workers)")
    print(f"ratio scan/hashing: {scan_rate / hash_rate:.2f}  (aim >= 0.7)")
    print(f"peak memory (scanner + hashing workers): {mem.peak / 1e6:.0f} MB  (aim < 300 MB)")
    return 0 if summary.errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
