"""What the overview and scans pages show, read from the database (no scanning here)."""

from __future__ import annotations

import concurrent.futures
import contextvars
import logging
import threading
from concurrent.futures import Executor
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from monitor import store
from monitor.config import Settings
from monitor.coverage import SearchOutcome, backend_coverage, coverage_line
from monitor.db import Database
from monitor.db.models import FetchErrorRecord, Scan, Subject, SubjectHealth
from monitor.orgs.scope import scoped

__all__ = ["PersonOverview", "ScanRow", "ScanRunner", "overview", "recent_scans"]

logger = logging.getLogger("monitor.web")

STATUS_WORDS = {
    "completed": "Every planned search was answered.",
    "partial": "Some searches failed, were skipped or were answered only in part.",
    "failed": "No search was answered, so nothing was looked at: this is not 'nothing found'.",
    "running": "Running now.",
    "interrupted": "Interrupted; the next scan finishes it.",
}

STAGE_WORDS = {
    "search": "a search",
    "page": "a page",
    "image": "an image",
    "hash": "reading an image",
}


@dataclass
class ScanRow:
    id: int
    subject: str
    started_at: datetime
    finished_at: datetime | None
    status: str
    words: str
    searched: str  # "searched 18 of 24; brave: rate limited (6)"
    queries: int
    pages: int
    images: int
    matches: int
    errors: int
    problems: list[str] = field(default_factory=list)


@dataclass
class PersonOverview:
    id: int
    name: str
    minor: bool
    last_scan_at: datetime | None
    next_scan_at: datetime | None
    last_scan: ScanRow | None
    degraded: bool
    failures_in_row: int
    last_failure: str | None


def _scan_row(session: Session, scan: Scan, subject: str, problems: int = 5) -> ScanRow:
    rows = store.scan_coverage(session, scan.id)
    outcomes = [
        SearchOutcome(
            r.backend,
            r.query,
            r.kind,
            r.page,
            asked=r.asked,
            answered=r.answered,
            partial=r.partial,
            results=r.results,
            requests=r.requests,
            reason=r.reason,
            detail=r.detail,
        )
        for r in rows
    ]
    searched = coverage_line(backend_coverage(outcomes)) if outcomes else ""
    errors = session.scalars(
        select(FetchErrorRecord)
        .where(FetchErrorRecord.scan_id == scan.id)
        .order_by(FetchErrorRecord.id)
        .limit(problems)
    )
    return ScanRow(
        id=scan.id,
        subject=subject,
        started_at=scan.started_at,
        finished_at=scan.finished_at,
        status=scan.status,
        words=STATUS_WORDS.get(scan.status, scan.status),
        searched=searched,
        queries=scan.queries,
        pages=scan.pages,
        images=scan.images,
        matches=scan.matches,
        errors=scan.errors,
        problems=[f"{STAGE_WORDS.get(e.stage, e.stage)}: {e.reason}" for e in errors]
        + ([scan.error] if scan.error else []),
    )


def overview(session: Session) -> list[PersonOverview]:
    people: list[PersonOverview] = []
    for subject in store.all_subjects(session):
        scan = session.scalar(
            select(Scan)
            .where(Scan.subject_id == subject.id)
            .order_by(Scan.started_at.desc(), Scan.id.desc())
            .limit(1)
        )
        health = session.get(SubjectHealth, subject.id)
        people.append(
            PersonOverview(
                id=subject.id,
                name=subject.name,
                minor=subject.minor,
                last_scan_at=subject.last_scan_at,
                next_scan_at=subject.next_scan_at,
                last_scan=_scan_row(session, scan, subject.name) if scan else None,
                degraded=bool(health and health.degraded_since),
                failures_in_row=health.search_failures if health else 0,
                last_failure=health.last_failure if health else None,
            )
        )
    return people


def recent_scans(session: Session, limit: int = 30) -> list[ScanRow]:
    stmt = (
        select(Scan, Subject.name)
        .join(Subject, Subject.id == Scan.subject_id)
        .order_by(Scan.started_at.desc(), Scan.id.desc())
        .limit(limit)
    )
    rows = session.execute(scoped(stmt, None)).all()  # the people of the scope in force
    return [_scan_row(session, scan, name) for scan, name in rows]


def pending_alerts(session: Session) -> int:
    """Alerts waiting to be delivered, of the people in the scope in force."""
    from monitor.db.models import OutboxMessage

    stmt = (
        select(func.count())
        .select_from(OutboxMessage)
        .join(Subject, Subject.id == OutboxMessage.subject_id)
        .where(OutboxMessage.status.in_(("pending", "sending")))
    )
    return int(session.scalar(scoped(stmt, None)) or 0)


def references_count(session: Session, subject_id: int) -> tuple[int, int]:
    """(reference photos, stored hashes) of a person."""
    from monitor.db.models import Reference, ReferenceHash

    refs = session.scalar(
        select(func.count()).select_from(Reference).where(Reference.subject_id == subject_id)
    )
    hashes = session.scalar(
        select(func.count())
        .select_from(ReferenceHash)
        .join(Reference, Reference.id == ReferenceHash.reference_id)
        .where(Reference.subject_id == subject_id)
    )
    return int(refs or 0), int(hashes or 0)


def set_aliases(session: Session, subject: Subject, aliases: list[str]) -> None:
    """Replace a person's other names (cleaned by the caller), keeping their order, without
    repeats or the name itself (as ``store.add_subject`` does)."""
    from monitor.db.models import Alias

    seen = {subject.name.casefold()}
    wanted: list[str] = []
    for alias in (a.strip() for a in aliases):
        if alias and alias.casefold() not in seen:
            seen.add(alias.casefold())
            wanted.append(alias)
    if [a.alias for a in subject.aliases] != wanted:
        subject.aliases.clear()
        session.flush()  # the old rows go before new ones with the same names come
        subject.aliases.extend(Alias(alias=a) for a in wanted)


class ScanRunner:
    """ "Scan now" from the web: one scan at a time in a worker thread (the subject's lease in
    the database keeps it from overlapping the scheduler's)."""

    def __init__(self, settings: Settings, db: Database, pool: Executor | None = None) -> None:
        self.settings, self.db = settings, db
        self.pool = pool  # for hashing; None: one of our own, started at the first scan
        self._own_pool: Executor | None = None
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="web-scan")
        self._lock = threading.Lock()
        # by person (ids: the same name can be two people of two organisations)
        self.running: dict[int, str] = {}  # subject id -> name
        self.last: dict[int, str] = {}  # subject id -> what the last web-started scan came to

    def start(self, subject_id: int, name: str) -> bool:
        with self._lock:
            if subject_id in self.running:
                return False
            self.running[subject_id] = name
        # in the caller's scope (the operator's, or the household's), like the page
        self._pool.submit(contextvars.copy_context().run, self._scan, subject_id, name)
        return True

    def running_in(self, subject_ids: set[int]) -> list[str]:
        """Names of the people among ``subject_ids`` (those the page may show) being scanned."""
        with self._lock:
            return [name for sid, name in self.running.items() if sid in subject_ids]

    def hashing_pool(self) -> Executor:
        """The pool that decodes web bytes (with a deadline per task), started when first
        needed."""
        from monitor.pipeline import hashing_pool

        with self._lock:
            if self.pool is None and self._own_pool is None:
                self._own_pool = hashing_pool()
            pool = self.pool or self._own_pool
        assert pool is not None
        return pool

    def _scan(self, subject_id: int, name: str) -> None:
        from monitor.pipeline import scan_subject

        try:
            pool = self.hashing_pool()
            summary = scan_subject(self.settings, self.db, name, pool=pool)
            self.last[subject_id] = f"{summary.status}: {summary.searched}"
        except Exception as exc:  # shown on the page; the scan records its own failure
            logger.warning("scan from the web failed: %s", exc)
            self.last[subject_id] = f"failed: {exc}"
        finally:
            with self._lock:
                self.running.pop(subject_id, None)

    def wait(self) -> None:
        """Wait for the scans started so far (tests)."""
        self._pool.submit(lambda: None).result()

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        if self._own_pool is not None:
            self._own_pool.shutdown(wait=True, cancel_futures=True)
