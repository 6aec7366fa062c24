"""Scan throughput: images per second for a whole scan, against hashing the same images alone.

A loopback web (in a separate process) serves N distinct images on P pages, listed by a
SearXNG-compatible search. In the same run we time (1) a full scan — search, fetch, extract,
hash in the process pool, match, record — and (2) hashing the same image bytes alone in the same
pool, and print their ratio (aim: >= 0.7 on two cores), where the CPU time went, and the
scanner's peak memory (the main process plus its hashing workers; aim: < 300 MB), both as
proportional set size (sampled) and as the sum of each process's peak RSS (exact, but counting
pages the processes share once per process).

    python benchmarks/scan_throughput.py [--images 2000] [--pages 200]

Photos come from ../shared/corpus/distractors when present (generated in code otherwise); each
image served is distinct (a unique trailer after the JPEG's end marker), so no cache can help.
"""

from __future__ import annotations

import argparse
import cProfile
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

# Only the hashing module at the top: the hashing workers re-import this file as __mp_main__,
# and the scanner's libraries (imported in main()) would add ~50 MB to each of them.
from monitor.hashing import compute_hashes  # noqa: E402

CORPUS = REPO.parent / "shared" / "corpus" / "distractors"
NAME = "Bench Mark"


def base_photos(max_side: int = 800) -> list[bytes]:
    """JPEG bytes of the corpus distractors (or generated photos), at most max_side pixels.

    The one with the highest PDQ quality comes first: it is the benchmark's reference photo
    (a flat photo would fall under match.min_quality and never match)."""
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
    best = max(range(len(out)), key=lambda i: compute_hashes(out[i]).get("pdq").quality or 0)
    out.insert(0, out.pop(best))
    return out


def image_bytes(bases: list[bytes], i: int) -> bytes:
    """Image number i: a base photo with a unique trailer (same pixels, distinct SHA-256)."""
    return bases[i % len(bases)] + f"bench-{i}".encode()


def serve(
    conn,
    n_images: int,
    n_pages: int,
    etag: bool = False,
    cache_control: str = "",
    page_kb: int = 0,
) -> None:  # runs in a child process
    """The loopback web; pages and images get an ETag (answered with 304) and a Cache-Control
    if asked, and ``page_kb`` KB of text (as real pages have). Sent "requests" on the pipe, it answers with the requests for pages and images
    so far, by status; sent "stop", it stops."""
    from monitor.testing.searxng import FakeSearxng
    from monitor.testing.web import LoopbackWeb, Response

    bases = base_photos()
    web = LoopbackWeb().start()
    per_page = n_images // n_pages
    fake = FakeSearxng(results_per_page=n_pages)
    results = []
    answered: dict[str, int] = {}  # "page 200", "image 304"... -> requests so far
    lock = threading.Lock()

    def count(kind: str, resp):
        with lock:
            key = f"{kind} {resp.status}"
            answered[key] = answered.get(key, 0) + 1
        return resp

    page_headers = {"Cache-Control": cache_control} if cache_control else {}
    text = f"<p>{'Some text of the page. ' * 44}</p>\n" * page_kb  # about 1 KB a paragraph

    def page(req):
        p = int(req.path.rsplit("/", 1)[1].split(".")[0])
        headers = {**page_headers, "ETag": f'"page-{p}-v1"'} if etag else page_headers
        if etag and req.headers.get("if-none-match") == headers["ETag"]:
            return count("page", Response(304, b"", "text/html; charset=utf-8", headers))
        imgs = "".join(f'<img src="/img/{p * per_page + k}.jpg" alt="">' for k in range(per_page))
        body = f"<html><body><h1>{p}</h1>{imgs}{text}</body></html>".encode()
        return count("page", Response(200, body, "text/html; charset=utf-8", headers))

    for p in range(n_pages):
        web.route(f"/page/{p}.html", page)
        results.append({"url": web.url(f"/page/{p}.html"), "title": f"page {p}", "engine": "bench"})
    fake.add_results(f'"{NAME}"', "general", results)
    fake.install(web)
    web.add("/robots.txt", "User-agent: *\nAllow: /\n", "text/plain")

    def image(req):
        i = int(req.path.rsplit("/", 1)[1].split(".")[0])
        headers = {"ETag": f'"img-{i}-v1"'} if etag else {}
        if cache_control:
            headers["Cache-Control"] = cache_control
        if etag and req.headers.get("if-none-match") == headers["ETag"]:
            return count("image", Response(304, b"", "image/jpeg", headers))
        return count("image", Response(200, image_bytes(bases, i), "image/jpeg", headers))

    for i in range(n_images):
        web.route(f"/img/{i}.jpg", image)
    conn.send(web.base_url)
    while conn.recv() != "stop":  # "requests": how many so far
        with lock:
            conn.send(dict(answered))
    web.stop()


def start_world(n_images: int, n_pages: int, prefix: str, **serve_options):  # noqa: ANN201
    """Start the loopback web in a child process and a database with the subject enrolled.

    Returns (pipe to stop the web, the web's process, settings, database, number of distinct
    base photos). Base 0 is the reference and reappears every that many images."""
    from monitor import store
    from monitor.config import Settings
    from monitor.db import Database
    from monitor.enrol import enrol_images

    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    server = ctx.Process(
        target=serve, args=(child, n_images, n_pages), kwargs=serve_options, daemon=True
    )
    server.start()
    base_url = parent.recv()
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    settings = Settings(
        data_dir=tmp,
        search={"backends": [{"kind": "searxng", "url": base_url}], "max_queries_per_scan": 2},
        fetch={"allow_private_networks": True, "max_pages_per_scan": n_pages + 10},
        mail={"outbox_dir": str(tmp / "outbox")},
        # Evidence capture (a browser per scan) is timed by its own tests, not here.
        cases={"capture_evidence": False},
    )
    db = Database(settings.database_url)
    bases = base_photos()
    with db.session() as s:
        subject = store.add_subject(s, NAME, interval=timedelta(days=1))
        report = enrol_images(s, subject, [("ref", bases[0])])
        assert report.enrolled == 1, report
    return parent, server, settings, db, len(bases)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process so far."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_split(server_pid: int, pool) -> dict[str, float]:  # noqa: ANN001
    workers = [p.pid for p in getattr(pool, "_processes", {}).values()]
    return {
        "scanner": cpu_seconds(os.getpid()),
        "hashing workers": sum(cpu_seconds(w) for w in workers),
        "loopback web": cpu_seconds(server_pid),
    }


class PeakPSS:
    """Samples, 5 times a second, the total proportional memory (PSS) of some processes.

    PSS splits each shared page among the processes sharing it, so the hashing workers' copy of
    the libraries they share with the process they forked from is not counted twice."""

    def __init__(self, pids: list[int]) -> None:
        self.pids, self.peak, self._stop = pids, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> int:
        total = 0
        for pid in self.pids:
            with open(f"/proc/{pid}/smaps_rollup") as fh:
                for line in fh:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1]) * 1024
        return total

    def _run(self) -> None:
        while True:
            self.peak = max(self.peak, self.sample())
            if self._stop.wait(0.2):
                return

    def __enter__(self) -> PeakPSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.sample())


def reset_peak_rss(pids: list[int]) -> None:
    """Start the processes' peak-memory marks afresh (Linux: 5 > /proc/PID/clear_refs)."""
    for pid in pids:
        with open(f"/proc/{pid}/clear_refs", "w") as fh:
            fh.write("5")


def peak_rss(pids: list[int]) -> int:
    """The sum of the peak resident memory (VmHWM) of these processes, in bytes.

    The kernel keeps each process's high-water mark, so nothing needs to sample while the scan
    runs (a sampling thread would itself load the scanner). Summing per-process peaks is an
    upper bound on the peak of their total."""
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1]) * 1024
    return total


def main() -> int:
    from monitor.pipeline import hashing_pool, scan_subject

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--pages", type=int, default=200)
    ap.add_argument("--profile", metavar="FILE", help="write a cProfile of the scan to FILE")
    args = ap.parse_args()

    parent, server, settings, db, n_bases = start_world(args.images, args.pages, "bench-scan-")
    expected_matches = len(range(0, args.images, n_bases))
    with hashing_pool() as pool:
        list(pool.map(int, range(4)))  # start the workers before timing
        scanner = [os.getpid(), *(p.pid for p in pool._processes.values())]  # type: ignore[attr-defined]
        reset_peak_rss(scanner)
        profiler = cProfile.Profile() if args.profile else None
        cpu0 = cpu_split(server.pid or 0, pool)
        t0 = time.perf_counter()
        if profiler is not None:
            profiler.enable()
        with PeakPSS(scanner) as pss:
            summary = scan_subject(settings, db, NAME, pool=pool, deliver=False)
        scan_s = time.perf_counter() - t0
        cpu1 = cpu_split(server.pid or 0, pool)
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(args.profile)
        peaks = [peak_rss([pid]) for pid in scanner]
        peak = sum(peaks)
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
        f"pages; {summary.matches} matched images (expected {expected_matches}); "
        f"{summary.errors} errors"
    )
    print(f"scan:         {scan_s:7.2f} s  {scan_rate:7.1f} images/s")
    print(f"hashing only: {hash_s:7.2f} s  {hash_rate:7.1f} images/s  ({os.cpu_count()} workers)")
    print(
        "CPU seconds during the scan: "
        + ", ".join(f"{k} {cpu1[k] - cpu0[k]:.1f}" for k in cpu0)
        + f" ({os.cpu_count()} cores)"
    )
    print(f"ratio scan/hashing: {scan_rate / hash_rate:.2f}  (aim >= 0.7)")
    print(
        f"peak memory of the scanner and its hashing workers: {pss.peak / 1e6:.0f} MB PSS "
        f"(aim < 300 MB); summing each process's own peak RSS, shared pages counted in each: "
        f"{peak / 1e6:.0f} MB (scanner {peaks[0] / 1e6:.0f}, workers "
        + ", ".join(f"{b / 1e6:.0f}" for b in peaks[1:])
        + ")"
    )
    return 0 if summary.errors == 0 and summary.matches == expected_matches else 1


if __name__ == "__main__":
    sys.exit(main())
