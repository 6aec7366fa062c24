"""A scan in two stages that scale apart, as in Meta's Hasher-Matcher-Actioner.

``monitor.scan.fetch`` (queue ``fetch``, IO-bound, many at once per worker): under the person's
scan lease, close what a killed scan left running, start a scan row, send the searches, fetch
the pages and collect the image links on them. It hands the lease and the links (URLs, no bytes)
to ``monitor.scan.hash``.

``monitor.scan.hash`` (queue ``hash``, CPU-bound, a process pool of one worker per core):
downloads the images itself, hashes them in memory, matches and records them (a match with its
alert in one transaction), ends the scan, delivers the alert and captures evidence.

Why the hash stage downloads its own images: found image bytes must never be written to disk
(promise 2), and a broker or result backend may well persist what passes through it (Redis AOF
or RDB, RabbitMQ durable queues). So the only things that cross the broker are ids, URLs and
counts; the bytes of an image live in the memory of the one worker that hashes them, as in a
scan in one process. The image downloads are still bounded (``[fetch] max_concurrency``) and
overlap with hashing, and pages (the bulk of the requests, with the searches) stay on the
fetch queue.

Safe to kill: both tasks are acknowledged late and given back when their worker is lost, so a
killed worker's task is run again by another (after ``[queue] visibility_timeout`` with Redis).
The scan lease (:mod:`monitor.leases`) keeps one scan of a person at a time: a task that finds
it held by a live worker retries later; one held by a dead process on this machine is taken at
once, one on another machine when it expires (``[queue] lease``, renewed while a stage runs).
A hash stage taken over continues the same scan row: images recorded before the kill are known
again (matches and sightings are inserted once, ``ON CONFLICT``), and the alerts held for the
scan are released once when it ends (the durable outbox), so nothing is lost or doubled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Executor
from dataclasses import dataclass, field, fields
from datetime import timedelta
from typing import Any

from sqlalchemy import select, update

from monitor.config import Settings
from monitor.db import Database
from monitor.db.models import Scan, Subject, utcnow
from monitor.errors import MonitorError
from monitor.jobs.app import FETCH_QUEUE, HASH_QUEUE, app, queue_name
from monitor.leases import DEFAULT_LEASE, claim_scan, default_owner, release_scan, renew_scan
from monitor.types import ImageCandidate

__all__ = [
    "JobFailed",
    "Worker",
    "enqueue_scan",
    "fetch_stage",
    "hash_stage",
    "set_worker",
    "wait_for",
]

log = logging.getLogger("monitor.jobs")

HANDOVER = DEFAULT_LEASE
"""How long the lease waits for the hash stage to take it over (time spent in the hash queue)."""


class JobFailed(MonitorError):
    """A queued scan failed; the message is the worker's."""


# ------------------------------------------------------------------ the worker's state


@dataclass
class Worker:
    """What the tasks of this worker process use: settings, database, hashing pool."""

    settings: Settings
    db: Database
    processes: int = 0  # hashing processes; 0: one per core
    _pool: Executor | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def pool(self) -> Executor:
        with self._lock:
            if self._pool is None:
                from monitor.pipeline import hashing_pool

                self._pool = hashing_pool(self.processes or None)
            return self._pool

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool = None


_WORKER: Worker | None = None


def set_worker(worker: Worker | None) -> None:
    global _WORKER
    _WORKER = worker


def _worker() -> Worker:
    if _WORKER is None:
        raise RuntimeError("start workers with `run_monitor.py worker` (it loads the settings)")
    return _WORKER


# ------------------------------------------------------------------ the lease


def _queued_owner(job: str) -> str:
    return f"queued:{job}"[:100]


@contextlib.contextmanager
def _held(db: Database, subject_id: int, lease: timedelta, *, job: str | None = None):
    """Hold the subject's lease (renewed every third of ``lease``) or yield None when someone
    alive holds it. With ``job``: first take it over from the fetch stage that handed it to
    this job. The lease is released at the end unless handed over (:func:`_hand_over`)."""
    owner = default_owner()
    taken = False
    if job is not None:
        with db.session() as s:
            taken = (
                s.execute(
                    update(Subject)
                    .where(Subject.id == subject_id, Subject.scan_lease_owner == _queued_owner(job))
                    .values(scan_lease_owner=owner, scan_lease_until=utcnow() + lease)
                    .execution_options(synchronize_session=False)
                ).rowcount
                == 1
            )
    if not taken:
        taken = claim_scan(db, subject_id, owner, lease=lease)
    if not taken:
        yield None
        return
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(lease.total_seconds() / 3):
            with contextlib.suppress(Exception):  # a database hiccup: try again next time
                if not renew_scan(db, subject_id, owner, lease=lease):
                    return

    thread = threading.Thread(target=beat, name=f"lease-{subject_id}", daemon=True)
    thread.start()
    try:
        yield owner
    finally:
        stop.set()
        thread.join()
        release_scan(db, subject_id, owner)  # nothing when handed over


def _hand_over(db: Database, subject_id: int, owner: str, job: str) -> None:
    with db.session() as s:
        s.execute(
            update(Subject)
            .where(Subject.id == subject_id, Subject.scan_lease_owner == owner)
            .values(scan_lease_owner=_queued_owner(job), scan_lease_until=utcnow() + HANDOVER)
            .execution_options(synchronize_session=False)
        )


def _retry_later(task: Any, settings: Settings) -> None:
    """Someone alive holds the lease: try again when it would have expired."""
    countdown = max(int(settings.queue.lease.total_seconds()), 1)
    raise task.retry(countdown=countdown, max_retries=None)


# ------------------------------------------------------------------ the stages


@app.task(name="monitor.scan.fetch", bind=True, acks_late=True, reject_on_worker_lost=True)
def fetch_stage(self: Any, subject_id: int, job: str, requested_at: float) -> dict[str, Any]:
    """Search, fetch pages, collect image links; hand them to the hash stage."""
    from monitor.pipeline import ScanSummary, _Scan, close_scan, open_scan

    w = _worker()
    settings, db = w.settings, w.db
    with db.session() as s:
        if s.get(Subject, subject_id) is None:  # erased since it was queued
            return {"job": job, "erased": True}
    done = _scanned_since(db, subject_id, requested_at)
    if done is not None:
        return {"job": job, "already": done}
    with _held(db, subject_id, settings.queue.lease) as owner:
        if owner is None:
            _retry_later(self, settings)
        done = _scanned_since(db, subject_id, requested_at)  # finished while we waited
        if done is not None:
            return {"job": job, "already": done}
        started = time.time()
        opened = open_scan(settings, db, subject_id)
        summary = ScanSummary(scan_id=opened.scan_id, subject=opened.name)
        scan = _Scan(
            settings,
            db,
            subject_id,
            opened.scan_id,
            summary,
            opened.index,
            None,
            None,  # type: ignore[arg-type]
        )
        scan.deferred = []
        scan.permit = opened.permit  # only the backends the consent allows get the names
        try:
            asyncio.run(scan.run(opened.name, opened.aliases))
        except BaseException as exc:
            close_scan(
                settings,
                db,
                subject_id,
                summary,
                status="failed",
                error=f"{type(exc).__name__}: {exc}",
                finished=False,
                started=time.monotonic() - (time.time() - started),
            )
            raise
        links = [[c.image_url, c.page_url, c.source] for c in scan.deferred]
        _hand_over(db, subject_id, owner, job)
        hash_stage.apply_async(
            args=(subject_id, job, opened.scan_id, _summary_json(summary), links, started),
            task_id=f"{job}.hash",
            queue=queue_name(HASH_QUEUE),
        )
    log.info(
        "subject %d: scan %d searched; %d image links to hash",
        subject_id,
        summary.scan_id,
        len(links),
    )
    return {"job": job, "scan_id": opened.scan_id, "links": len(links)}


@app.task(name="monitor.scan.hash", bind=True, acks_late=True, reject_on_worker_lost=True)
def hash_stage(
    self: Any,
    subject_id: int,
    job: str,
    scan_id: int,
    summary: dict[str, Any],
    links: list[list[str]],
    started: float,
) -> dict[str, Any]:
    """Download, hash, match and record the images; end the scan, alert, capture evidence."""
    from monitor.pipeline import (
        ScanSummary,
        _Scan,
        alert_and_capture,
        close_scan,
        reference_index,
        scan_outcome,
    )

    w = _worker()
    settings, db = w.settings, w.db
    with db.session() as s:
        row = s.get(Scan, scan_id)
        if row is None:  # erased meanwhile
            return {"job": job, "scan_id": scan_id, "erased": True}
        if row.status not in ("running", "interrupted"):  # ended by an earlier delivery
            return _summary_json(_ended(ScanSummary(**summary), row))
    with _held(db, subject_id, settings.queue.lease, job=job) as owner:
        if owner is None:
            _retry_later(self, settings)
        sm = ScanSummary(**summary)
        with db.session() as s:
            subject = s.get(Subject, subject_id)
            if subject is None:
                return {"job": job, "scan_id": scan_id, "erased": True}
            index = reference_index(settings, s, subject_id, subject.name)
            s.execute(
                update(Scan)
                .where(Scan.id == scan_id, Scan.status == "interrupted")
                .values(status="running", finished_at=None)
            )
        t0 = time.monotonic() - (time.time() - started)
        scan = _Scan(settings, db, subject_id, scan_id, sm, index, w.pool(), None)
        candidates = [ImageCandidate(u, p, src) for u, p, src in links]
        status, error, finished = "failed", None, False
        try:
            asyncio.run(scan.run_images(candidates))
        except BaseException as exc:
            error = f"{type(exc).__name__}: {exc}"
            _publish(job, exc, failed=True)
            raise
        else:
            finished = True
            status, error = scan_outcome(sm)
        finally:
            close_scan(
                settings,
                db,
                subject_id,
                sm,
                status=status,
                error=error,
                finished=finished,
                started=t0,
            )
        asyncio.run(alert_and_capture(settings, db, subject_id, sm, started=t0))
    _publish(job, _summary_json(sm))
    return _summary_json(sm)


def _publish(job: str, result: Any, *, failed: bool = False) -> None:
    """The job's outcome under ``<job>.summary``, written only by the delivery of the hash
    stage that ran the scan (a task's own result can be overwritten by a duplicate delivery
    that found the scan ended, or was retried)."""
    from celery import states

    with contextlib.suppress(Exception):  # the result backend is down: the scan is recorded
        app.backend.store_result(
            f"{job}.summary", result, states.FAILURE if failed else states.SUCCESS
        )


def _summary_json(summary: Any) -> dict[str, Any]:
    """A summary for the broker and result backend: without the person's name."""
    return {**summary.as_json(), "subject": ""}


def _ended(summary: Any, row: Scan) -> Any:
    summary.status = row.status
    summary.matches = row.matches
    return summary


def _scanned_since(db: Database, subject_id: int, requested_at: float) -> str | None:
    """When the subject's last scan ended, if after ``requested_at`` (the job is done)."""
    with db.session() as s:
        last = s.scalar(select(Subject.last_scan_at).where(Subject.id == subject_id))
    if last is None:
        return None
    stamp = last.timestamp() if last.tzinfo else last.replace(tzinfo=utcnow().tzinfo).timestamp()
    return last.isoformat() if stamp >= requested_at else None


# ------------------------------------------------------------------ for the scheduler and CLI


def enqueue_scan(subject_id: int) -> str:
    """Queue a scan of the subject; returns its job id (see :func:`wait_for`)."""
    job = uuid.uuid4().hex
    fetch_stage.apply_async(
        args=(subject_id, job, time.time()), task_id=f"{job}.fetch", queue=queue_name(FETCH_QUEUE)
    )
    return job


def wait_for(
    job: str, *, timeout: float | None = None, poll: float = 0.5, sleep: Callable = time.sleep
) -> dict[str, Any]:
    """Wait for a queued scan to end; its summary (``ScanSummary.as_json()``), or
    ``{"already": when}`` when the person was scanned since the job was queued. Raises
    :class:`JobFailed` when a stage failed, :class:`TimeoutError` after ``timeout`` seconds."""
    fetch, outcome = app.AsyncResult(f"{job}.fetch"), app.AsyncResult(f"{job}.summary")
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        if outcome.ready():
            return _result(outcome)
        if fetch.ready():
            first = _result(fetch)
            if ("already" in first or "erased" in first) and not outcome.ready():
                return first
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"the queued scan did not end within {timeout:g} s")
        sleep(poll)


def _result(result: Any) -> dict[str, Any]:
    if result.failed():
        exc = result.result
        raise JobFailed(str(exc) if exc else "the queued scan failed")
    return dict(result.result)


def summary_from(data: dict[str, Any]) -> Any:
    """A :class:`~monitor.pipeline.ScanSummary` from a hash stage's result."""
    from monitor.pipeline import ScanSummary

    known = {f.name for f in fields(ScanSummary)}
    return ScanSummary(**{k: v for k, v in data.items() if k in known})


@contextlib.contextmanager
def worker_state(settings: Settings, db: Database, processes: int = 0) -> Iterator[Worker]:
    """Install the state the tasks of this process use, for the ``with`` block."""
    w = Worker(settings, db, processes)
    set_worker(w)
    try:
        yield w
    finally:
        set_worker(None)
        w.close()
