"""Scan throughput: the scan command as a person waits for it, and images per second for a
whole scan against hashing the same images alone.

``--part command`` (the default): a loopback web of 20 pages with 103 camera-size JPEGs, 3 of
them edited copies of the person's photo (``naive_scanner.CameraPhotos``). Each run, on a fresh
database, times the ``scan`` command in a subprocess as a person waits for it (search, scan,
alert to a loopback SMTP server, evidence: web archives and Chromium screenshots), when the
alert reached the mail server, the same command without evidence, and the naive sequential
scanner (``naive_scanner.naive_scan``); it prints evidence seconds per sighting, the CPU seconds
of each command (the processes it waited for, the browser's included), and the ratios whole
command / command without evidence (aim <= 1.5) and naive / our scan (aim >= 3).

    python benchmarks/scan_throughput.py [--repeat 2] [--camera-pages 20] [--camera-images 103]

``--part capture``: the evidence screenshot alone, on the same camera-size pages: one
Screenshotter, its start, three pages one at a time then three at once (with the CPU seconds
of this process and the browser's), with the time of each pass in the browser and of the
banner + PNG + write (``docs/evidence.md``, "Heavy pages", "PNG and tabs").

    python benchmarks/scan_throughput.py --part capture

``--part throughput``: a loopback web (in a separate process) serves N distinct images on P
pages, listed by a SearXNG-compatible search. In the same run we time (1) a full scan — search,
fetch, extract, hash in the process pool, match, record — and (2) hashing the same image bytes
alone in the same pool, and print their ratio (aim: >= 0.7 on two cores), where the CPU time went, and the
scanner's peak memory (the main process plus its hashing workers; aim: < 300 MB), both as
proportional set size (sampled) and as the sum of each process's peak RSS (exact, but counting
pages the processes share once per process).

    python benchmarks/scan_throughput.py --part throughput [--images 2000] [--pages 200]

Photos come from ../shared/corpus/distractors when present (generated in code otherwise); each
image served is distinct (a unique trailer after the JPEG's end marker), so no cache can help.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path
from statistics import median

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
    photos: str = "distractors",
    planted: int = 0,
) -> None:  # runs in a child process
    """The loopback web; pages and images get an ETag (answered with 304) and a Cache-Control
    if asked, and ``page_kb`` KB of text (as real pages have). Sent "requests" on the pipe, it answers with the requests for pages and images
    so far, by status; sent "stop", it stops.

    ``photos="camera"``: camera-size photos (:class:`naive_scanner.CameraPhotos`), ``planted``
    of them edited copies of the reference, instead of the 800 px distractors."""
    from monitor.testing.searxng import FakeSearxng
    from monitor.testing.web import LoopbackWeb, Response

    camera = planted_at = None
    if photos == "camera":
        photo_set = _naive_scanner().CameraPhotos
        camera = photo_set.build()
        planted_at = photo_set.planted_at(n_images, planted)
    else:
        bases = base_photos()
    web = LoopbackWeb().start()
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
        numbers = range(p * n_images // n_pages, (p + 1) * n_images // n_pages)
        imgs = "".join(f'<img src="/img/{i}.jpg" alt="">' for i in numbers)
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
        body = camera.image(i, planted_at) if camera is not None else image_bytes(bases, i)
        return count("image", Response(200, body, "image/jpeg", headers))

    for i in range(n_images):
        web.route(f"/img/{i}.jpg", image)
    conn.send(web.base_url)
    while conn.recv() != "stop":  # "requests": how many so far
        with lock:
            conn.send(dict(answered))
    web.stop()


def _naive_scanner():  # noqa: ANN202
    """benchmarks/naive_scanner.py (the baseline, and the camera-size photos)."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import naive_scanner

    return naive_scanner


def start_web(n_images: int, n_pages: int, **serve_options):  # noqa: ANN201
    """Start the loopback web in a child process: (pipe to stop it, its process, its URL)."""
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    server = ctx.Process(
        target=serve, args=(child, n_images, n_pages), kwargs=serve_options, daemon=True
    )
    server.start()
    return parent, server, parent.recv()


def start_world(n_images: int, n_pages: int, prefix: str, **serve_options):  # noqa: ANN201
    """Start the loopback web in a child process and a database with the subject enrolled.

    Returns (pipe to stop the web, the web's process, settings, database, number of distinct
    base photos). Base 0 is the reference and reappears every that many images."""
    from monitor import store
    from monitor.config import Settings
    from monitor.db import Database
    from monitor.enrol import enrol_images

    parent, server, base_url = start_web(n_images, n_pages, **serve_options)
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


def tree_cpu_seconds(exclude: int) -> float:
    """User + system CPU time so far of this process and all its descendants (the browser's
    processes included; those that ended counted in the parent that waited for them), except
    the process ``exclude`` and its own descendants (the loopback web)."""
    parents: dict[int, int] = {}
    spent: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:  # ended meanwhile
            continue
        parents[int(name)] = int(fields[1])
        spent[int(name)] = sum(int(f) for f in fields[11:15]) / tick
    mine = {os.getpid()}
    grown = True
    while grown:
        grown = False
        for pid, parent in parents.items():
            if parent in mine and pid not in mine and pid != exclude:
                mine.add(pid)
                grown = True
    return sum(spent[pid] for pid in mine)


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


def _camera_world(base_url: str, smtp_port: int, reference: bytes) -> tuple[Path, Path]:
    """A fresh data folder with the subject enrolled (with ``reference``) and a config file for
    the ``scan`` command: (data folder, config file)."""
    from monitor import store
    from monitor.config import Settings
    from monitor.db import Database
    from monitor.enrol import enrol_images

    tmp = Path(tempfile.mkdtemp(prefix="bench-command-"))
    config = tmp / "monitor.toml"
    config.write_text(
        f'[[search.backends]]\nkind = "searxng"\nurl = "{base_url}"\n\n'
        "[search]\nmax_queries_per_scan = 2\n\n"
        "[fetch]\nallow_private_networks = true\n\n"
        f'[mail]\nsmtp_host = "127.0.0.1"\nsmtp_port = {smtp_port}\nstarttls = false\n\n'
        '[cases]\nrdap_domain_url = ""\nrdap_ip_url = ""\n'
    )
    settings = Settings(data_dir=tmp / "data")
    settings.data_dir.mkdir(mode=0o700)
    db = Database(settings.database_url)
    with db.session() as s:
        subject = store.add_subject(s, NAME, email="bench@example.invalid", interval=timedelta(1))
        assert enrol_images(s, subject, [("ref", reference)]).enrolled == 1
    db.dispose()
    return settings.data_dir, config


def _scan_command(
    data_dir: Path,
    config: Path,
    smtp,
    **env: str,  # noqa: ANN001
) -> tuple[float, dict, float | None, float]:
    """Run ``run_monitor.py scan NAME --json`` as a person would: (wall seconds, summary,
    seconds until the alert reached the mail server, watched from here, CPU seconds of the
    command and every process it started and waited for: the browser's, the pools')."""
    import resource

    environ = {**os.environ, "MONITOR_DATA_DIR": str(data_dir), **env}
    environ.pop("MONITOR_CONFIG", None)
    # As installed: pip compiles the package's bytecode once, so a person's command does not
    # compile it on every run (an environment that forbids writing it would add ~0.4 s here).
    environ.pop("PYTHONDONTWRITEBYTECODE", None)
    command = [sys.executable, str(REPO / "run_monitor.py"), "--config", str(config)]
    sent, arrived, done_event = len(smtp.messages), [], threading.Event()

    def watch() -> None:
        while not done_event.wait(0.02):
            if len(smtp.messages) > sent:
                arrived.append(time.perf_counter() - t0)
                return

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    done = subprocess.run(
        [*command, "scan", NAME, "--json"], env=environ, capture_output=True, text=True, cwd=REPO
    )
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    done_event.set()
    watcher.join()
    if done.returncode != 0:
        raise SystemExit(f"the scan command failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return wall, json.loads(done.stdout), arrived[0] if arrived else None, cpu


def _parts(sm: dict) -> str:
    tried = sm["evidence_captured"] + sm["evidence_failed"]
    if "evidence_archives" not in sm:  # before evidence was counted per part
        return f"{sm['evidence_captured']} captured, {sm['evidence_failed']} failed"
    note = f": {sm['evidence_note']}" if sm.get("evidence_note") else ""
    return (
        f"archives {sm['evidence_archives']}/{tried}, "
        f"screenshots {sm['evidence_screenshots']}/{tried}{note}"
    )


def command_benchmark(args: argparse.Namespace) -> int:
    """The ``scan`` command as a person waits for it (alert and evidence included) on a web of
    camera-size photos, beside the same command without evidence and the naive scanner, each
    run on a fresh database (else the caches and the known sightings would help)."""
    from monitor.testing.smtp import LoopbackSMTP

    naive = _naive_scanner()
    n_images, n_pages, planted = args.camera_images, args.camera_pages, args.planted
    parent, server, base_url = start_web(n_images, n_pages, photos="camera", planted=planted)
    reference = naive.CameraPhotos.reference_only()
    rows: dict[str, list[float]] = {
        "whole": [],
        "alert": [],
        "no evidence": [],
        "scan": [],
        "naive": [],
        "cpu": [],
        "cpu no evidence": [],
    }
    per_sighting: list[float] = []
    ok, parts = True, ""
    maildir = Path(tempfile.mkdtemp(prefix="bench-maildir-"))
    # The package's bytecode, as `pip install` leaves it (ignored by git).
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "monitor")], check=True)
    try:
        with LoopbackSMTP(maildir) as smtp:
            for run in range(args.repeat):
                sent = len(smtp.messages)
                data, config = _camera_world(base_url, smtp.port, reference)
                quick, sm, _, quick_cpu = _scan_command(
                    data, config, smtp, MONITOR_CASES__CAPTURE_EVIDENCE="false"
                )
                shutil.rmtree(config.parent)
                rows["no evidence"].append(quick)
                rows["cpu no evidence"].append(quick_cpu)
                rows["scan"].append(sm["seconds"])
                data, config = _camera_world(base_url, smtp.port, reference)
                wall, sm, alert_after, cpu = _scan_command(data, config, smtp)
                rows["cpu"].append(cpu)
                shutil.rmtree(config.parent)  # its evidence too
                rows["whole"].append(wall)
                rows["alert"].append(alert_after or float("nan"))
                tried = sm["evidence_captured"] + sm["evidence_failed"]
                parts = _parts(sm)
                evidence_s = sm.get("evidence_seconds", wall - quick)  # (estimated before)
                if tried:
                    per_sighting.append(evidence_s / tried)
                ok &= len(smtp.messages) == sent + 2 and sm["new_sightings"] == planted == tried
                result = naive.naive_scan(base_url, NAME, reference)
                rows["naive"].append(result.seconds)
                print(
                    f"run {run + 1}: command {wall:.2f} s (scan {sm['seconds']:.2f} s, alert "
                    f"arrived after {alert_after or float('nan'):.2f} s, {sm['new_sightings']} new "
                    f"sightings, evidence {evidence_s:.2f} s: {parts}); without "
                    f"evidence {quick:.2f} s (scan {rows['scan'][-1]:.2f} s); naive "
                    f"{result.seconds:.2f} s ({result.images} images, "
                    f"{len(result.matches)} matched); CPU s of the command {cpu:.2f}, without "
                    f"evidence {quick_cpu:.2f}",
                    flush=True,
                )
    finally:
        parent.send("stop")
        server.join(timeout=10)
        shutil.rmtree(maildir, ignore_errors=True)

    med = {k: median(v) for k, v in rows.items()}
    print(
        f"camera web: {n_pages} pages, {n_images} camera-size JPEGs, {planted} planted copies "
        f"(median of {args.repeat} run(s)):"
    )
    print(f"  scan command, alert and evidence: {med['whole']:6.2f} s")
    print(f"  ... the alert arrived after:      {med['alert']:6.2f} s")
    print(f"  scan command without evidence:    {med['no evidence']:6.2f} s")
    print(f"  its scan (summary seconds):       {med['scan']:6.2f} s")
    print(f"  naive sequential scanner:         {med['naive']:6.2f} s")
    print(
        f"  CPU s of the command (its processes and the browser's): {med['cpu']:.2f}, "
        f"without evidence {med['cpu no evidence']:.2f}"
    )
    if per_sighting:
        print(f"  evidence: {median(per_sighting):.2f} s per sighting ({parts})")
    print(
        f"ratio whole command / command without evidence: "
        f"{med['whole'] / med['no evidence']:.2f}  (aim <= 1.5)"
    )
    print(
        f"ratio naive / our scan: {med['naive'] / med['scan']:.1f}  (aim >= 3); "
        f"naive / our command without evidence: {med['naive'] / med['no evidence']:.1f}"
    )
    return 0 if ok else 1


def capture_benchmark(args: argparse.Namespace) -> int:
    """Screenshots of camera-size pages, step by step (passes, writing), alone and three at once."""
    import asyncio

    from monitor.evidence import screenshot

    parent, server, base_url = start_web(
        args.camera_images, args.camera_pages, photos="camera", planted=args.planted
    )
    steps: list[str] = []
    shoot, write = screenshot._screenshot, screenshot.Screenshotter._write

    async def timed_shot(page, width: int, height: int, scale: float = 1.0, top: int = 0) -> bytes:  # noqa: ANN001
        t0 = time.perf_counter()
        png = await shoot(page, width, height, scale, top=top)
        steps.append(f"pass at scale {scale:g} {time.perf_counter() - t0:.2f} s")
        return png

    def timed_write(self, *a):  # noqa: ANN001, ANN002, ANN202
        t0 = time.perf_counter()
        info = write(self, *a)
        steps.append(f"banner+PNG+write {time.perf_counter() - t0:.2f} s")
        return info

    def focus(p: int) -> tuple[str, ...]:
        """As for a case: the page's middle image (--whole-page: none, the page shot whole)."""
        if args.whole_page:
            return ()
        first, end = (
            p * args.camera_images // args.camera_pages,
            (p + 1) * args.camera_images // args.camera_pages,
        )
        return (f"{base_url}/img/{(first + end) // 2}.jpg",)

    screenshot._screenshot = timed_shot
    screenshot.Screenshotter._write = timed_write
    out = Path(tempfile.mkdtemp(prefix="bench-capture-"))

    async def run() -> None:
        t0 = time.perf_counter()
        async with screenshot.Screenshotter(allow_private_networks=True) as shooter:
            print(f"browser start: {time.perf_counter() - t0:.2f} s")
            for p in range(3):
                steps.clear()
                t0 = time.perf_counter()
                info = await shooter.capture(
                    f"{base_url}/page/{p}.html",
                    out / f"{p}.png",
                    may_show_minor=False,
                    focus=focus(p),
                )
                print(
                    f"page {p} alone: {time.perf_counter() - t0:.2f} s "
                    f"({info.width} x {info.height} px of a {info.page_height} px page, "
                    f"{info.blurred_elements} blurred; " + ", ".join(steps) + ")"
                )
            cpu0, t0 = tree_cpu_seconds(server.pid), time.perf_counter()
            await asyncio.gather(
                *(
                    shooter.capture(
                        f"{base_url}/page/{p}.html",
                        out / f"c{p}.png",
                        may_show_minor=False,
                        focus=focus(p),
                    )
                    for p in (5, 10, 15)
                )
            )
            print(
                f"three pages at once: {time.perf_counter() - t0:.2f} s, "
                f"{tree_cpu_seconds(server.pid) - cpu0:.2f} CPU s (this process and the browser's)"
            )

    try:
        asyncio.run(run())
    finally:
        screenshot._screenshot, screenshot.Screenshotter._write = shoot, write
        shutil.rmtree(out, ignore_errors=True)
        parent.send("stop")
        server.join(timeout=10)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--pages", type=int, default=200)
    ap.add_argument("--profile", metavar="FILE", help="write a cProfile of the scan to FILE")
    ap.add_argument(
        "--part",
        choices=("all", "throughput", "command", "capture"),
        default="command",
        help="throughput: the scan against hashing alone; command: the scan command as a "
        "person waits for it (alert, evidence) on camera-size photos, beside the naive scanner; "
        "capture: the evidence screenshot of those pages alone, step by step",
    )
    ap.add_argument("--camera-pages", type=int, default=20)
    ap.add_argument("--camera-images", type=int, default=103)
    ap.add_argument("--planted", type=int, default=3)
    ap.add_argument(
        "--whole-page",
        action="store_true",
        help="capture: shoot each page whole (as before), not around one image of it",
    )
    ap.add_argument("--repeat", type=int, default=1, help="runs of the command part (median)")
    args = ap.parse_args()
    code = 0
    if args.part in ("all", "throughput"):
        code |= throughput_benchmark(args)
    if args.part in ("all", "command"):
        code |= command_benchmark(args)
    if args.part in ("all", "capture"):
        code |= capture_benchmark(args)
    return code


def throughput_benchmark(args: argparse.Namespace) -> int:
    from monitor.pipeline import hashing_pool, scan_subject

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
    shutil.rmtree(settings.data_dir, ignore_errors=True)  # its database, and the key beside it
    settings.key_path.unlink(missing_ok=True)

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
