"""Scans as jobs on Celery workers ([queue], docs/scale.md), on the real Redis and PostgreSQL of
this machine: two worker processes, one killed mid-scan (SIGKILL); the other finishes the scan
with exactly one match and one alert. Politeness shared by all workers through Redis."""

from __future__ import annotations

import mailbox
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from monitor import store
from monitor.config import Settings
from monitor.db import Database
from monitor.db.models import Match, OutboxMessage, Scan, Sighting
from monitor.demo.photos import photo_bytes
from monitor.demo.transforms import decode, encode, resize
from monitor.enrol import enrol_images
from monitor.leases import lease_holder
from monitor.testing.searxng import FakeSearxng
from monitor.testing.web import LoopbackWeb, Request, Response
from tests.conftest import run_cli

REPO = Path(__file__).resolve().parents[1]
REDIS_URL = "redis://127.0.0.1:6379/0"
NAME = "Ottilie Brandvold"


def _redis_answers() -> str | None:
    try:
        import redis
    except ImportError:
        return "the redis package is not installed (pip install '.[test]')"
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except Exception as exc:
        return f"Redis at {REDIS_URL} does not answer: {exc}"
    return None


@pytest.fixture
def redis_url() -> str:
    reason = _redis_answers()
    if reason:
        pytest.skip(reason)
    return REDIS_URL


AMQP_URL = "amqp://guest:guest@127.0.0.1:5672//"


@pytest.fixture(params=["redis", "rabbitmq"])
def broker_url(request: pytest.FixtureRequest) -> str:
    """A broker: the local Redis, and the local RabbitMQ (skipped when it does not answer)."""
    if request.param == "redis":
        return request.getfixturevalue("redis_url")
    from kombu import Connection

    try:
        with Connection(AMQP_URL, connect_timeout=3) as conn:
            conn.ensure_connection(max_retries=1)
    except Exception as exc:
        pytest.skip(f"RabbitMQ at {AMQP_URL} does not answer: {exc}")
    return AMQP_URL


# ---------------------------------------------------------------- shared politeness


def test_workers_share_one_pace_per_host_and_per_search_backend(redis_url: str) -> None:
    from monitor.shared_limits import SharedLimiter, window_for

    prefix = f"test-{uuid.uuid4().hex[:8]}:"
    # two workers: two connections to the same Redis
    one, two = (SharedLimiter.from_url(redis_url, prefix) for _ in range(2))
    host = window_for(1 / 5)  # one request per 5 s to a host (a Crawl-delay of 5)
    assert one.try_take("host:example.org", host) == 0.0
    wait = two.try_take("host:example.org", host)  # the other worker must wait its turn
    assert 0 < wait <= 5
    assert two.try_take("host:other.example", host) == 0.0  # another host is not held up
    search = window_for(2.0, 4)  # 2 a second, burst 4: 4 per 2 s, for all workers together
    taken = [w.try_take("search:brave", search) == 0.0 for w in (one, two, one, two, one)]
    assert taken == [True, True, True, True, False]
    one.leave_alone("search:brave", 60, "rate limited; left alone for 60 s")
    assert two.left_alone("search:brave") is not None  # a 429 seen by one holds every worker


def test_window_is_never_faster_than_the_configured_pace() -> None:
    from monitor.shared_limits import window_for

    for rate, burst in [(2.0, 4), (0.4, 1), (2.5, 1), (10.0, 3), (1 / 7, 1)]:
        item = window_for(rate, burst)
        assert item.amount <= burst
        assert item.amount / item.get_expiry() <= rate + 1e-9


class _Recording:
    """A shared limiter (the ``limits`` memory storage) that notes every place taken."""

    def __init__(self) -> None:
        from limits.storage import MemoryStorage

        from monitor.shared_limits import SharedLimiter

        self.inner = SharedLimiter(MemoryStorage())
        self.taken: list[tuple[str, int, int]] = []
        self.alone: list[str] = []

    def try_take(self, key: str, item) -> float:  # noqa: ANN001
        self.taken.append((key, item.amount, item.get_expiry()))
        return 0.0

    async def take(self, key: str, item) -> float:  # noqa: ANN001
        return self.try_take(key, item)

    def leave_alone(self, key: str, seconds: float, reason: str) -> None:
        self.alone.append(key)

    def left_alone(self, key: str) -> None:
        return None


@pytest.fixture
def recording() -> Iterator[_Recording]:
    from monitor import shared_limits

    limiter = _Recording()
    shared_limits.install(limiter)  # type: ignore[arg-type]
    try:
        yield limiter
    finally:
        shared_limits.uninstall()


async def test_fetches_and_searches_take_their_place_in_the_shared_windows(
    recording: _Recording,
) -> None:
    from monitor.config import FetchConfig
    from monitor.fetch import Fetcher
    from monitor.search.base import SearchAnswer
    from monitor.search.pacing import Limits, PacedBackend
    from monitor.types import ResultKind, SearchQuery

    with LoopbackWeb() as web:
        web.add("/robots.txt", b"User-agent: *\nCrawl-delay: 2\n", "text/plain")
        web.add("/a.html", b"<html>a</html>", "text/html")
        cfg = FetchConfig(allow_private_networks=True, max_crawl_delay=0.01)
        async with Fetcher(cfg) as fetcher:
            await fetcher.fetch_page(web.url("/a.html"))
    # the Crawl-delay (capped at max_crawl_delay here) is kept by all workers together
    assert [k for k, _n, _s in recording.taken] == ["host:127.0.0.1"]

    class Backend:
        name = "engine"

        async def search(self, query: SearchQuery, *, page: int = 1) -> SearchAnswer:
            return SearchAnswer(hits=[])

        async def aclose(self) -> None:
            pass

    recording.taken.clear()
    paced = PacedBackend(Backend(), Limits(rate=2.0, burst=4))  # type: ignore[arg-type]
    await paced.search(SearchQuery('"Ottilie Brandvold"', ResultKind.WEB))
    assert recording.taken == [("search:engine", 4, 2)]  # 4 per 2 s: 2 a second, burst 4


# ---------------------------------------------------------------- the CLI without a queue


def test_worker_and_queued_scan_need_a_queue(capsys: pytest.CaptureFixture[str]) -> None:
    code, _out, err = run_cli(capsys, "worker")
    assert code == 2 and "[queue]" in err and "broker_url" in err
    code, _out, err = run_cli(capsys, "worker", "--queues", "fetch,bogus")
    assert code == 2 and "bogus" in err
    code, _out, err = run_cli(capsys, "scan", "--all", "--queue")
    assert code == 2 and "[queue]" in err  # said once, not once per person


# ---------------------------------------------------------------- two workers, one killed


def _copy(ref: bytes) -> bytes:
    return encode(resize(decode(ref), 0.7), "JPEG", 80)


def _start_worker(config: Path, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as fh:
        return subprocess.Popen(
            [sys.executable, "run_monitor.py", "--config", str(config), "-v", "worker"],
            cwd=REPO,
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the kill takes its hashing pool
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )


def _stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, sig)
    proc.wait(timeout=30)


@pytest.fixture
def workers() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        _stop(proc)


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_worker_killed_mid_scan_is_taken_over_without_loss_or_duplicates(
    database_url: str,
    redis_url: str,
    tmp_path: Path,
    workers: list[subprocess.Popen[bytes]],
) -> None:
    ref = photo_bytes(811)
    gate, asked = threading.Event(), threading.Event()
    fake = FakeSearxng()
    with LoopbackWeb() as web:

        def gated(_req: Request) -> Response:  # an unrelated image that hangs until the kill
            asked.set()
            gate.wait(60)
            return Response(200, photo_bytes(912), "image/jpeg")

        html = b'<html><body><img src="/i/copy.jpg"><img src="/i/slow.jpg"></body></html>'
        web.add("/p/1.html", html, "text/html")
        web.add("/i/copy.jpg", _copy(ref), "image/jpeg")
        web.route("/i/slow.jpg", gated)
        searxng = fake.install(web)
        fake.add_result(NAME, "general", {"url": web.url("/p/1.html"), "title": "a page"})

        config = _config(tmp_path, database_url, searxng, redis_url)
        from monitor.config import load_settings

        settings: Settings = load_settings(config)
        db = Database(settings.database_url, key_file=settings.key_path)
        with db.session() as s:
            subject = store.add_subject(s, NAME, aliases=[], interval=timedelta(hours=24))
            assert enrol_images(s, subject, [("ref", ref)]).enrolled == 1
            subject_id = subject.id

        from monitor.jobs.app import configure
        from monitor.jobs.stages import enqueue_scan, summary_from, wait_for

        app = configure(settings)
        log = tmp_path / "workers.log"
        first = _start_worker(config, log)
        workers.append(first)
        job = enqueue_scan(subject_id)

        deadline = time.monotonic() + 60
        while not (asked.is_set() and _count(db, Match) == 1):  # matched; hangs on the other
            assert first.poll() is None, log.read_text()[-3000:]
            assert not app.AsyncResult(f"{job}.fetch").failed(), log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.1)
        _stop(first)  # SIGKILL, mid-scan: its hash task is neither finished nor acknowledged
        with db.session() as s:
            assert s.scalars(select(Scan.status)).all() == ["running"]
            assert s.scalars(select(OutboxMessage.status)).all() == ["held"]
        gate.set()

        workers.append(_start_worker(config, log))
        summary = summary_from(wait_for(job, timeout=110))

    assert summary.status == "completed", log.read_text()[-3000:]
    assert summary.matches == 1
    with db.session() as s:
        scans = s.execute(select(Scan.id, Scan.status)).all()
        matches = s.scalars(select(Match.id)).all()
        sightings = s.execute(select(Sighting.image_url, Sighting.alert_id)).all()
        outbox = s.execute(select(OutboxMessage.status, OutboxMessage.new_items)).all()
    assert scans == [(summary.scan_id, "completed")]  # the same scan, finished by the other
    assert len(matches) == 1
    alerted = [url for url, alert in sightings if alert is not None]
    assert alerted == [web.url("/i/copy.jpg")]  # the unrelated image: seen, not alerted
    assert outbox == [("sent", 1)]
    delivered = mailbox.Maildir(settings.outbox_dir, create=False)
    assert len(delivered) == 1  # one alert, delivered once
    assert lease_holder(db, subject_id) == (None, None)
    db.dispose()


def _count(db: Database, model: type) -> int:
    with db.session() as s:
        return int(s.scalar(select(func.count()).select_from(model)) or 0)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_scan_queue_prints_the_local_summary_and_run_enqueues_due_scans(
    database_url: str,
    broker_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    workers: list[subprocess.Popen[bytes]],
) -> None:
    import json

    from monitor.cli_queue import queued_scan_fn
    from monitor.db.models import Subject
    from monitor.scheduler import Scheduler

    ref = photo_bytes(812)
    fake = FakeSearxng()
    with LoopbackWeb() as web:
        web.add("/p/1.html", b'<html><img src="/i/copy.jpg"></html>', "text/html")
        web.add("/i/copy.jpg", _copy(ref), "image/jpeg")
        searxng = fake.install(web)
        fake.add_result(NAME, "general", {"url": web.url("/p/1.html"), "title": "a page"})
        config = _config(tmp_path, database_url, searxng, broker_url)
        from monitor.config import load_settings

        settings = load_settings(config)
        db = Database(settings.database_url, key_file=settings.key_path)
        with db.session() as s:
            subject = store.add_subject(s, NAME, aliases=[], interval=timedelta(hours=24))
            assert enrol_images(s, subject, [("ref", ref)]).enrolled == 1
            subject_id = subject.id
            store.add_subject(s, "Nobody Enrolled", aliases=[], interval=timedelta(hours=24))
        workers.append(_start_worker(config, tmp_path / "worker.log"))

        code, out, err = run_cli(capsys, "--config", str(config), "scan", NAME, "--queue", "--json")
        assert code == 0, err
        summary = json.loads(out)
        assert (summary["status"], summary["matches"], summary["new_sightings"]) == (
            "completed",
            1,
            1,
        )
        assert summary["alerts_sent"] == 1

        code, _out, err = run_cli(
            capsys, "--config", str(config), "scan", "Nobody Enrolled", "--queue"
        )
        assert code == 2 and "no enrolled reference photos" in err

        # `run` with [queue]: due scans are enqueued (the next scan time set at once)
        with db.session() as s:
            s.get(Subject, subject_id).next_scan_at = None  # due now
            scanned_at = s.get(Subject, subject_id).last_scan_at
        scheduler = Scheduler(db, settings, queued_scan_fn(settings))
        assert subject_id in scheduler.run_due()
        with db.session() as s:
            assert s.get(Subject, subject_id).next_scan_at is not None
        deadline = time.monotonic() + 60
        while True:  # the worker scans again
            with db.session() as s:
                if s.get(Subject, subject_id).last_scan_at != scanned_at:
                    break
            assert time.monotonic() < deadline, (tmp_path / "worker.log").read_text()[-3000:]
            time.sleep(0.2)
    assert _count(db, Match) == 1  # seen again, not recorded twice
    assert _count(db, OutboxMessage) == 1  # and not alerted twice
    db.dispose()


def _config(tmp_path: Path, database_url: str, searxng: str, broker: str) -> Path:
    config = tmp_path / "monitor.toml"
    config.write_text(
        textwrap.dedent(
            f"""\
            data_dir = "{tmp_path / "data"}"
            [database]
            url = "{database_url}"
            key_file = "{tmp_path / "ref.key"}"
            [[search.backends]]
            kind = "searxng"
            url = "{searxng}"
            [fetch]
            allow_private_networks = true
            timeout = 30
            deadline = 90
            [cases]
            capture_evidence = false
            [queue]
            broker_url = "{broker}"
            key_prefix = "test-{uuid.uuid4().hex[:8]}:"
            visibility_timeout = "2s"
            lease = "3s"
            hash_processes = 1
            """
        )
    )
    return config
