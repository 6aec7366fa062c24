"""Scale: scans per minute on 1, 2 and 4 Celery worker processes (``[queue]``, docs/scale.md).

200 people, each found on a loopback web (SearXNG-compatible search, ``--pages`` pages per
person with ``--images`` distinct JPEGs each, one of them an edited copy of the person's photo,
so every scan records a match and delivers an alert to the outbox folder). For each worker count,
on the local PostgreSQL (a fresh schema) and Redis, the run starts the workers (each
``worker --queues fetch,hash`` with one hashing process, one hash slot and two fetch slots, so
that a worker is one unit of CPU), enqueues every person's scan at once and waits for every
summary. A new loopback web (new port, new image bytes) per run, so no cache helps.

It prints scans per minute per worker count, the scaling ratio against one worker, and from
one worker's pace how many people one worker keeps on a daily cadence (86400 s / seconds per
scan), next to what one search backend allows at its configured rate.

    python benchmarks/scale.py [--people 200] [--workers 1,2,4] [--pages 2] [--images 3]

Needs PostgreSQL at 127.0.0.1:5432 (database ``test``) and Redis at 127.0.0.1:6379. Evidence
capture is off (Chromium would dominate and is measured by scan_throughput.py); search pacing is
set high (``rate = 1000``) so that the search backend, which all workers share through Redis,
does not cap the run: with a real backend, its rate does (printed).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from datetime import timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
PG_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test"
REDIS = "redis://127.0.0.1:6379/0"


def _jpegs(count: int) -> list[bytes]:
    from monitor.demo.photos import photo_bytes

    return [photo_bytes(5000 + i, size=(640, 480), quality=85) for i in range(count)]


def _copy_of(ref: bytes) -> bytes:
    from monitor.demo.transforms import decode, encode, resize

    return encode(resize(decode(ref), 0.7), "JPEG", 80)


def _write_config(tmp: Path, url: str, searxng: str, prefix: str) -> Path:
    config = tmp / f"monitor-{prefix.strip(':')}.toml"
    config.write_text(
        textwrap.dedent(
            f"""\
            data_dir = "{tmp / "data"}"
            [database]
            url = "{url}"
            key_file = "{tmp / "ref.key"}"
            [search]
            rate = 1000
            burst = 100
            [[search.backends]]
            kind = "searxng"
            url = "{searxng}"
            [fetch]
            allow_private_networks = true
            timeout = 60
            deadline = 120
            [cases]
            capture_evidence = false
            [queue]
            broker_url = "{REDIS}"
            key_prefix = "{prefix}"
            visibility_timeout = "10m"
            lease = "5m"
            fetch_concurrency = 2
            hash_concurrency = 1
            hash_processes = 1
            """
        )
    )
    return config


def _start_workers(config: Path, n: int, log: Path) -> list[subprocess.Popen[bytes]]:
    procs = []
    for _ in range(n):
        with open(log, "ab") as fh:
            procs.append(
                subprocess.Popen(
                    [sys.executable, "run_monitor.py", "--config", str(config), "-v", "worker"],
                    cwd=REPO,
                    stdout=fh,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    env={**os.environ, "PYTHONPATH": str(REPO)},
                )
            )
    return procs


def _wait_ready(log: Path, n: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while log.read_text(errors="replace").count(" ready.") < n:
        if time.monotonic() > deadline:
            raise SystemExit(f"workers did not start: see {log}")
        time.sleep(0.2)


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def run_once(
    tmp: Path,
    url: str,
    people: list[tuple[int, str]],
    refs: list[bytes],
    bases: list[bytes],
    workers: int,
    pages: int,
    images: int,
) -> dict[str, float]:
    from monitor.config import load_settings
    from monitor.jobs.app import configure
    from monitor.testing.searxng import FakeSearxng
    from monitor.testing.web import LoopbackWeb

    run = uuid.uuid4().hex[:8]
    fake = FakeSearxng()
    with LoopbackWeb() as web:
        searxng = fake.install(web)
        for i, (_sid, name) in enumerate(people):
            for p in range(pages):
                tags = []
                for j in range(images):
                    path = f"/{i}/{p}/{j}.jpg"
                    if p == 0 and j == 0:
                        body = refs[i % len(refs)]  # the person's edited copy: a match
                    else:  # distinct bytes: no cache, no "seen before"
                        body = bases[(i + p + j) % len(bases)] + f"{run}:{i}:{p}:{j}".encode()
                    web.add(path, body, "image/jpeg")
                    tags.append(f'<img src="{path}">')
                web.add(f"/{i}/{p}.html", f"<html>{''.join(tags)}</html>".encode(), "text/html")
                fake.add_result(name, "general", {"url": web.url(f"/{i}/{p}.html"), "title": "p"})
        prefix = f"bench-{run}:"
        config = _write_config(tmp, url, searxng, prefix)
        settings = load_settings(config)
        app = configure(settings)
        log = tmp / f"workers-{run}.log"
        log.touch()
        procs = _start_workers(config, workers, log)
        try:
            _wait_ready(log, workers)
            from monitor.jobs.stages import enqueue_scan

            t0 = time.monotonic()
            jobs = [enqueue_scan(sid) for sid, _name in people]
            pending = {j: app.AsyncResult(f"{j}.summary") for j in jobs}
            summaries = []
            while pending:
                for j, res in list(pending.items()):
                    if res.ready():
                        summaries.append(res.get(propagate=False))
                        del pending[j]
                time.sleep(0.5)
            wall = time.monotonic() - t0
        finally:
            _stop(procs)
    ok = [s for s in summaries if isinstance(s, dict) and s.get("status") == "completed"]
    matched = sum(1 for s in ok if s.get("matches"))
    requests = sum(int(s.get("search_requests", 0)) for s in ok) / max(len(ok), 1)
    return {
        "wall": wall,
        "per_min": len(people) / wall * 60,
        "completed": len(ok),
        "matched": matched,
        "search_requests_per_scan": requests,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--people", type=int, default=200)
    ap.add_argument("--workers", default="1,2,4", help="worker counts to measure")
    ap.add_argument("--pages", type=int, default=2, help="pages per person")
    ap.add_argument("--images", type=int, default=3, help="images per page")
    args = ap.parse_args()
    counts = [int(x) for x in args.workers.split(",")]

    import psycopg

    from monitor import store
    from monitor.db import Database
    from monitor.demo.photos import photo_bytes
    from monitor.enrol import enrol_hash_file
    from monitor.hashing import compute_hashes

    schema = f"bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    url = f"{PG}?options=-csearch_path%3D{schema}"
    tmp = Path(tempfile.mkdtemp(prefix="scale-bench-"))
    try:
        print(f"setting up {args.people} people ({args.pages} pages x {args.images} images each)")
        refs_raw = [photo_bytes(4000 + k, size=(640, 480)) for k in range(8)]
        refs = [_copy_of(r) for r in refs_raw]
        hash_files = []
        for k, r in enumerate(refs_raw):
            h = compute_hashes(r).get("pdq")
            assert h is not None
            f = tmp / f"ref{k}.txt"
            f.write_text(f"pdq:{h.value},{h.quality or 100}\n")
            hash_files.append(f)
        bases = _jpegs(16)
        db = Database(url, key_file=tmp / "ref.key")
        people: list[tuple[int, str]] = []
        with db.session() as s:
            for i in range(args.people):
                name = f"Person{i:04d} Benchmark"
                subj = store.add_subject(s, name, interval=timedelta(hours=24))
                enrol_hash_file(s, subj, hash_files[i % len(hash_files)])
                s.flush()
                people.append((subj.id, name))
        db.dispose()
        results = {}
        for n in counts:
            r = run_once(tmp, url, people, refs, bases, n, args.pages, args.images)
            results[n] = r
            print(
                f"{n} worker(s): {args.people} scans in {r['wall']:.1f} s = "
                f"{r['per_min']:.1f} scans/min ({r['completed']} completed, "
                f"{r['matched']} with their match)",
                flush=True,
            )
        base = results.get(counts[0])
        print(f"\ncores: {os.cpu_count()}; load average now: {os.getloadavg()[0]:.2f}")
        for n in counts[1:]:
            print(
                f"scaling {n} vs {counts[0]} worker(s): "
                f"{results[n]['per_min'] / base['per_min']:.2f}x (ideal {n / counts[0]:.0f}x)"
            )
        if base:
            per_scan = base["wall"] / args.people * counts[0]
            print(
                f"one worker: {per_scan:.2f} s per scan ({args.pages * args.images} images, "
                f"{args.pages} pages) -> about {86400 / per_scan:,.0f} people on a daily cadence"
            )
            req = base["search_requests_per_scan"]
            if req:
                print(
                    f"search: {req:.1f} requests per scan; a backend paced at 2/s (the default) "
                    f"allows {2 * 86400 / req:,.0f} scans a day for all workers together"
                )
    finally:
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
