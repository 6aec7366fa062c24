"""The ``run`` command's engine: scan each subject on its own interval, deliver the outbox.

Every ``schedule.check_every`` an APScheduler 3 job calls :meth:`Scheduler.run_due`, which scans
the subjects whose ``next_scan_at`` has come (or who were never scanned), one at a time, each
under its scan lease (:mod:`monitor.leases`), so a CLI ``scan`` elsewhere is never doubled. After a
scan (successful or not) the subject's next scan is set to *the time the scan ran* plus its
interval, plus or minus ``schedule.jitter``: after a long downtime each subject is scanned once,
not once per missed interval, and a failing subject waits its interval like any other.

Log lines (logger ``monitor.scheduler``) name subjects by id only, never by name, alias or hash;
exceptions are described by type and place, since their messages may carry a name.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import signal
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import func, select, update

from monitor.config import Settings
from monitor.db import Database
from monitor.db.models import Scan, Subject
from monitor.leases import (
    DEFAULT_LEASE,
    ScanInProgress,
    owner_is_dead,
    release_scan,
    scan_lease,
)

__all__ = ["Scheduler", "due_subjects", "next_due"]

logger = logging.getLogger("monitor.scheduler")

_SCAN_JOB = "monitor-scan-due"
_DELIVER_JOB = "monitor-deliver-outbox"
_RECHECK_JOB = "monitor-recheck-cases"


def _utcnow() -> datetime:
    return datetime.now(UTC)


def next_due(interval: timedelta, jitter: timedelta, now: datetime, rng: random.Random) -> datetime:
    """When to scan next: ``now + interval`` shifted by a uniform draw in ``[-jitter, +jitter]``,
    but never earlier than ``now + interval / 2``."""
    if interval <= timedelta(0):
        raise ValueError(f"a scan interval must be positive, got {interval}")
    if jitter < timedelta(0):
        raise ValueError(f"jitter must not be negative, got {jitter}")
    shift = timedelta(seconds=rng.uniform(-jitter.total_seconds(), jitter.total_seconds()))
    return max(now + interval + shift, now + interval / 2)


def due_subjects(db: Database, now: datetime) -> list[int]:
    """Ids of subjects due at ``now`` (``next_scan_at`` unset or ``<= now``) whose scan lease is
    free, expired, or held by a process on this machine that has ended (killed mid-scan);
    never-scanned first, then the longest overdue."""
    stmt = (
        select(Subject.id, Subject.scan_lease_until, Subject.scan_lease_owner)
        .where(Subject.next_scan_at.is_(None) | (Subject.next_scan_at <= now))
        .where(Subject.paused_reason.is_(None))  # e.g. consent expired (monitor/orgs)
        .order_by(Subject.next_scan_at.is_not(None), Subject.next_scan_at, Subject.id)
    )
    with db.session() as s:
        rows = s.execute(stmt).all()
    return [
        subject_id
        for subject_id, until, owner in rows
        if until is None or until < now or owner_is_dead(owner)
    ]


def _fixed_clock(at: datetime) -> Callable[[], datetime]:
    def clock() -> datetime:
        return at

    return clock


def _describe(exc: BaseException) -> str:
    """``"TypeName at file.py:123"``: where an error happened, without its (possibly personal)
    message."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return type(exc).__name__
    last = frames[-1]
    return f"{type(exc).__name__} at {Path(last.filename).name}:{last.lineno}"


class _DropBusyWarnings(logging.Filter):
    """Hide APScheduler's "maximum number of running instances reached" for our jobs: with
    ``max_instances=1`` it would repeat every ``check_every`` while a long scan runs."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return not (
            "maximum number of running instances" in msg
            and (_SCAN_JOB in msg or _DELIVER_JOB in msg or _RECHECK_JOB in msg)
        )


class Scheduler:
    """Scans due subjects and delivers the outbox, on APScheduler 3.

    ``scan_fn(subject_id)`` does one scan; the scheduler holds the subject's lease around it.
    ``deliver_fn()`` sends pending alerts; it runs after every :meth:`run_due` and on its own
    job every ``check_every`` (so alerts still go out while a long scan runs).
    """

    def __init__(
        self,
        db: Database,
        settings: Settings,
        scan_fn: Callable[[int], object],
        *,
        deliver_fn: Callable[[], object] | None = None,
        recheck_fn: Callable[[], object] | None = None,
        pass_context: Callable[[], AbstractContextManager[object]] | None = None,
        now_fn: Callable[[], datetime] = _utcnow,
        rng: random.Random | None = None,
        lease: timedelta = DEFAULT_LEASE,
    ) -> None:
        self.db = db
        self.settings = settings
        self.scan_fn = scan_fn
        self.deliver_fn = deliver_fn
        self.recheck_fn = recheck_fn  # re-checks due cases (monitor.cases), its own job
        # around the scans of one pass (run_due), in its thread: e.g. one screenshot browser
        # for all of them (monitor.cases.capture.shared_screenshots)
        self.pass_context = pass_context
        self.now_fn = now_fn
        self.rng = rng or random.Random()
        self.lease = lease
        self._rng_lock = threading.Lock()
        self._stopping = threading.Event()
        self._held: dict[int, str] = {}  # subject id -> lease owner, for an abort
        self._busy = 0
        self._idle = threading.Condition()
        self._aps: BaseScheduler | None = None
        self._log_filter = _DropBusyWarnings()

    # ------------------------------------------------------------------ one pass

    def run_due(self, now: datetime | None = None) -> list[int]:
        """Scan every subject due at ``now`` (default: ``now_fn()``), one at a time.

        Returns the ids scanned (a failing scan counts: it ran). Subjects whose lease someone
        else holds are skipped. With ``now`` given, that time is used throughout (claims and
        ``next_scan_at``); without, each subject uses the clock when its scan starts and ends.
        """
        fixed = now
        scanned: list[int] = []
        with self._idle:
            self._busy += 1
        try:
            self.maintain(fixed if fixed is not None else self.now_fn())
            due = due_subjects(self.db, fixed if fixed is not None else self.now_fn())
            if due:
                logger.info("%d subject(s) due for a scan", len(due))
                with self.pass_context() if self.pass_context else contextlib.nullcontext():
                    for position, subject_id in enumerate(due):
                        if self._stopping.is_set():
                            logger.info(
                                "stopping: %d due scan(s) left for later", len(due) - position
                            )
                            break
                        if self._scan_one(subject_id, fixed):
                            scanned.append(subject_id)
        finally:
            with self._idle:
                self._busy -= 1
                self._idle.notify_all()
        self.deliver()
        return scanned

    def _scan_one(self, subject_id: int, fixed: datetime | None) -> bool:
        clock = _fixed_clock(fixed) if fixed is not None else self.now_fn
        try:
            with scan_lease(self.db, subject_id, lease=self.lease, clock=clock) as owner:
                self._held[subject_id] = owner
                try:
                    return self._scan_held(subject_id, owner, clock)
                finally:
                    self._held.pop(subject_id, None)
        except ScanInProgress:
            logger.info("subject %d: skipped, a scan of it is already running", subject_id)
            return False

    def _scan_held(self, subject_id: int, owner: str, clock: Callable[[], datetime]) -> bool:
        started = clock()
        with self.db.session() as s:
            row = s.execute(
                select(Subject.next_scan_at, Subject.interval_seconds).where(
                    Subject.id == subject_id
                )
            ).first()
            last_scan_id = s.scalar(select(func.max(Scan.id)).where(Scan.subject_id == subject_id))
        if row is None:  # erased since the due check
            return False
        if row.next_scan_at is not None and row.next_scan_at > started:
            return False  # scanned by someone else since the due check
        logger.info("subject %d: scan started", subject_id)
        t0 = time.monotonic()
        error: BaseException | None = None
        try:
            self.scan_fn(subject_id)
        except Exception as exc:
            error = exc
        finished = clock()
        next_at = self._finish(subject_id, owner, row.interval_seconds, finished)
        took = time.monotonic() - t0
        if error is None:
            logger.info(
                "subject %d: scan finished in %.1fs; next scan at %s",
                subject_id,
                took,
                f"{next_at:%Y-%m-%d %H:%M} UTC",
            )
        else:
            self._record_failure(subject_id, last_scan_id, error, started, finished)
            logger.warning(
                "subject %d: scan failed after %.1fs (%s); next scan at %s",
                subject_id,
                took,
                _describe(error),
                f"{next_at:%Y-%m-%d %H:%M} UTC",
            )
        return True

    def _finish(self, subject_id: int, owner: str, interval_s: int, at: datetime) -> datetime:
        """Set last/next scan times and give the lease back, in one transaction: whoever claims
        the lease next already sees the new ``next_scan_at``."""
        interval = timedelta(seconds=interval_s)
        if interval <= timedelta(0):
            interval = self.settings.schedule.default_interval
        with self._rng_lock:
            next_at = next_due(interval, self.settings.schedule.jitter, at, self.rng)
        with self.db.session() as s:
            s.execute(
                update(Subject)
                .where(Subject.id == subject_id)
                .values(last_scan_at=at, next_scan_at=next_at)
                .execution_options(synchronize_session=False)
            )
            s.execute(
                update(Subject)
                .where(Subject.id == subject_id, Subject.scan_lease_owner == owner)
                .values(scan_lease_until=None, scan_lease_owner=None)
                .execution_options(synchronize_session=False)
            )
        return next_at

    def _record_failure(
        self,
        subject_id: int,
        last_scan_id: int | None,
        error: BaseException,
        started: datetime,
        finished: datetime,
    ) -> None:
        """Write a failed ``Scan`` row unless ``scan_fn`` wrote one itself (it does once it got
        as far as starting a scan; errors before that, such as no references, leave none)."""
        try:
            with self.db.session() as s:
                newer = select(Scan.id).where(Scan.subject_id == subject_id)
                if last_scan_id is not None:
                    newer = newer.where(Scan.id > last_scan_id)
                if s.scalar(newer.limit(1)) is None:
                    s.add(
                        Scan(
                            subject_id=subject_id,
                            started_at=started,
                            finished_at=finished,
                            status="failed",
                            error=f"{type(error).__name__}: {error}",
                        )
                    )
        except Exception as exc:  # e.g. the subject was erased meanwhile
            logger.warning(
                "subject %d: could not record the failure (%s)", subject_id, _describe(exc)
            )

    def maintain(self, now: datetime) -> None:
        """Housekeeping before looking for due scans (monitor/orgs/maintenance.py): pause
        people whose consent expired and tell their caseworker; delete findings and evidence
        of cases closed longer than ``[orgs] retention_days``. Errors are logged."""
        from monitor.orgs.maintenance import run_maintenance

        try:
            run_maintenance(self.db, self.settings, now)
        except Exception as exc:
            logger.warning("maintenance failed (%s)", _describe(exc))

    def deliver(self) -> None:
        """Run ``deliver_fn`` if there is one; its errors are logged, never raised."""
        if self.deliver_fn is None:
            return
        try:
            self.deliver_fn()
        except Exception as exc:
            logger.warning("outbox delivery failed (%s)", _describe(exc))

    def recheck(self) -> None:
        """Run ``recheck_fn`` (cases due for a re-check), then deliver; errors are logged."""
        if self.recheck_fn is None:
            return
        try:
            self.recheck_fn()
        except Exception as exc:
            logger.warning("re-checking cases failed (%s)", _describe(exc))
        self.deliver()

    # ------------------------------------------------------------------ APScheduler

    def _scan_job(self) -> None:
        try:
            self.run_due()
        except Exception as exc:  # e.g. the database is unreachable: try again next time
            logger.warning("checking for due scans failed (%s)", _describe(exc))

    def start(self, *, block: bool = True) -> None:
        """Check for due scans now and every ``schedule.check_every``; deliver the outbox on the
        same period. With ``block`` run in this thread until SIGINT/SIGTERM or :meth:`shutdown`
        (the first signal lets the running scan finish; a second one aborts it, releasing its
        lease); else run in background threads and return at once."""
        if self._aps is not None and self._aps.running:
            raise RuntimeError("the scheduler is already running")
        self._stopping.clear()
        every = self.settings.schedule.check_every
        if every <= timedelta(0):
            raise ValueError(f"schedule.check_every must be positive, got {every}")
        aps: BaseScheduler = (BlockingScheduler if block else BackgroundScheduler)(timezone=UTC)
        options: dict[str, Any] = {
            "trigger": IntervalTrigger(seconds=every.total_seconds(), timezone=UTC),
            "max_instances": 1,
            "coalesce": True,
            "misfire_grace_time": None,
            "replace_existing": True,
        }
        aps.add_job(
            self._scan_job, id=_SCAN_JOB, name=_SCAN_JOB, next_run_time=_utcnow(), **options
        )
        if self.deliver_fn is not None:
            aps.add_job(self.deliver, id=_DELIVER_JOB, name=_DELIVER_JOB, **options)
        if self.recheck_fn is not None:
            aps.add_job(self.recheck, id=_RECHECK_JOB, name=_RECHECK_JOB, **options)
        self._aps = aps
        logging.getLogger("apscheduler.scheduler").addFilter(self._log_filter)
        logger.info("scheduler started; checking for due scans every %s", every)
        if not block:
            aps.start()
            return
        previous = self._install_signal_handlers()
        try:
            aps.start()  # returns after shutdown
            self._wait_idle()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            logging.getLogger("apscheduler.scheduler").removeFilter(self._log_filter)
            logger.info("scheduler stopped")

    def shutdown(self, *, wait: bool = True) -> None:
        """Stop checking for scans; no new scan starts. With ``wait``, wait for a running scan
        to finish (its subject gets its next scan time as usual)."""
        self._stopping.set()
        aps = self._aps
        if aps is not None and aps.running:
            aps.shutdown(wait=wait)  # with wait: also lets a running outbox delivery finish
        if wait:
            self._wait_idle()
        if not isinstance(aps, BlockingScheduler):  # start(block=True) cleans up itself
            logging.getLogger("apscheduler.scheduler").removeFilter(self._log_filter)
            if aps is not None:
                logger.info("scheduler stopped")

    def _wait_idle(self) -> None:
        with self._idle:
            self._idle.wait_for(lambda: self._busy == 0)

    # ------------------------------------------------------------------ signals

    def _install_signal_handlers(self) -> dict[int, Any]:
        if threading.current_thread() is not threading.main_thread():
            return {}  # signals can only be handled in the main thread
        previous: dict[int, Any] = {}
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, self._on_signal)
        return previous

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if not self._stopping.is_set():
            if self._busy:
                logger.info("stopping after the running scan; signal again to abort it now")
            self.shutdown(wait=False)
            return
        for subject_id, owner in list(self._held.items()):
            with contextlib.suppress(Exception):  # best effort: the lease expires anyway
                release_scan(self.db, subject_id, owner)
        logger.warning("aborted: the running scan was interrupted")
        logging.shutdown()
        os._exit(128 + signum)


@contextlib.contextmanager
def monitoring(
    settings: Settings, db: Database, scan_fn: Callable[[int], object] | None = None
) -> Iterator[tuple[Scheduler, Any]]:
    """The scheduler of ``run`` and ``serve``: due scans (``scan_fn``, e.g. one that enqueues
    them for the workers with ``[queue]``; by default run here in a hashing pool, yielded with
    the scheduler, None otherwise), the outbox delivered, re-checks, and one screenshot browser
    shared by the subjects due together (started at the first capture, closed after them)."""
    import asyncio

    from monitor import alerts, cases
    from monitor.cases.capture import shared_screenshots
    from monitor.pipeline import hashing_pool, run_scan

    with contextlib.nullcontext() if scan_fn is not None else hashing_pool() as pool:
        if scan_fn is None:

            def scan_fn(subject_id: int) -> object:
                return asyncio.run(run_scan(settings, db, subject_id, pool=pool))

        def deliver() -> object:
            return alerts.deliver_pending(db, alerts.notifier_from_settings(settings), settings)

        yield (
            Scheduler(
                db,
                settings,
                scan_fn,
                deliver_fn=deliver,
                recheck_fn=lambda: cases.run_due_rechecks(settings, db),
                pass_context=lambda: shared_screenshots(settings),
            ),
            pool,
        )
