"""A subject's scan lease: no subject is ever scanned twice at the same time.

The lease lives on the subject's row (``scan_lease_until``, ``scan_lease_owner``), so it works
across processes (the ``run`` scheduler and a CLI ``scan`` in another terminal) on SQLite and
PostgreSQL alike. Claiming is one atomic conditional ``UPDATE`` in its own transaction: of two
claimants exactly one sees ``rowcount == 1``. A lease expires, so a killed process blocks the
subject only until its lease runs out; :func:`scan_lease` renews the lease in the background while
the scan runs, so a long scan keeps it. A lease whose owner is a process on this machine that no
longer runs (killed, crashed) is recognised at once and taken over (:func:`owner_is_dead`).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from uuid import uuid4

from sqlalchemy import select, update

from monitor.db import Database
from monitor.db.models import Scan, Subject
from monitor.errors import MonitorError

__all__ = [
    "DEFAULT_LEASE",
    "ScanInProgress",
    "claim_scan",
    "default_owner",
    "lease_holder",
    "owner_is_dead",
    "release_scan",
    "renew_scan",
    "scan_lease",
]

logger = logging.getLogger("monitor.leases")

DEFAULT_LEASE = timedelta(minutes=30)
_OWNER_MAX = 100  # length of subjects.scan_lease_owner


class ScanInProgress(MonitorError):
    """Another process (or thread) holds the subject's scan lease."""

    def __init__(
        self,
        subject_id: int,
        *,
        owner: str | None = None,
        until: datetime | None = None,
        since: datetime | None = None,
    ) -> None:
        when = f"since {_fmt(since)}" if since else f"until at most {_fmt(until)}"
        by = f", by {owner}" if owner else ""
        super().__init__(f"a scan of this subject is already running ({when}{by}); try again later")
        self.subject_id = subject_id
        self.owner = owner
        self.until = until
        self.since = since


def _fmt(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if value else "an unknown time"


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _aware(now: datetime | None) -> datetime:
    if now is None:
        return _utcnow()
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("lease times must be timezone-aware (UTC), got a naive datetime")
    return now


def _check_lease(lease: timedelta) -> None:
    if lease <= timedelta(0):
        raise ValueError(f"a scan lease must be positive, got {lease}")


def default_owner() -> str:
    """A lease owner unique to this claim: ``"<hostname>:<pid>:<8 hex digits>"``."""
    tail = f":{os.getpid()}:{uuid4().hex[:8]}"
    return socket.gethostname()[: _OWNER_MAX - len(tail)] + tail


def owner_is_dead(owner: str | None) -> bool:
    """True when ``owner`` (from :func:`default_owner`) names a process on this machine that no
    longer runs. Anything else (another machine, a foreign format, a live or unknown process)
    is False: that lease is respected until it expires."""
    if not owner:
        return False
    parts = owner.rsplit(":", 2)
    if len(parts) != 3 or not parts[1].isdigit():
        return False
    host, pid = parts[0], int(parts[1])
    here = socket.gethostname()
    if host != here and not (len(owner) == _OWNER_MAX and here.startswith(host)):
        return False
    if pid == os.getpid() or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # exists but not ours (PermissionError), or cannot tell
        return False
    return False


def claim_scan(
    db: Database,
    subject_id: int,
    owner: str,
    *,
    lease: timedelta = DEFAULT_LEASE,
    now: datetime | None = None,
) -> bool:
    """Take the subject's scan lease until ``now + lease`` if it is free or expired.

    One atomic ``UPDATE ... WHERE id = :id AND (scan_lease_until IS NULL OR scan_lease_until <
    :now)`` in its own transaction. True when this call took the lease; False when someone else
    holds it, including this same ``owner`` (a lease is not re-entrant), or the subject is gone.
    """
    _check_lease(lease)
    if not owner or len(owner) > _OWNER_MAX:
        raise ValueError(f"a lease owner must be 1 to {_OWNER_MAX} characters")
    now = _aware(now)
    stmt = (
        update(Subject)
        .where(
            Subject.id == subject_id,
            Subject.scan_lease_until.is_(None) | (Subject.scan_lease_until < now),
        )
        .values(scan_lease_until=now + lease, scan_lease_owner=owner)
        .execution_options(synchronize_session=False)
    )
    with db.session() as s:
        if s.execute(stmt).rowcount == 1:
            return True
    holder, _until = lease_holder(db, subject_id)
    if holder is None or holder == owner or not owner_is_dead(holder):
        return False
    take_over = (
        update(Subject)
        .where(Subject.id == subject_id, Subject.scan_lease_owner == holder)
        .values(scan_lease_until=now + lease, scan_lease_owner=owner)
        .execution_options(synchronize_session=False)
    )
    with db.session() as s:
        taken = s.execute(take_over).rowcount == 1
    if taken:
        logger.info("subject %d: took over the scan lease of a process that has ended", subject_id)
    return taken


def renew_scan(
    db: Database,
    subject_id: int,
    owner: str,
    *,
    lease: timedelta = DEFAULT_LEASE,
    now: datetime | None = None,
) -> bool:
    """Extend the lease to ``now + lease`` if ``owner`` still holds it (even if it just expired
    and no one else took it). False when the lease was lost."""
    _check_lease(lease)
    now = _aware(now)
    stmt = (
        update(Subject)
        .where(Subject.id == subject_id, Subject.scan_lease_owner == owner)
        .values(scan_lease_until=now + lease)
        .execution_options(synchronize_session=False)
    )
    with db.session() as s:
        return s.execute(stmt).rowcount == 1


def release_scan(db: Database, subject_id: int, owner: str) -> None:
    """Give the lease back; does nothing unless ``owner`` holds it."""
    stmt = (
        update(Subject)
        .where(Subject.id == subject_id, Subject.scan_lease_owner == owner)
        .values(scan_lease_until=None, scan_lease_owner=None)
        .execution_options(synchronize_session=False)
    )
    with db.session() as s:
        s.execute(stmt)


def lease_holder(db: Database, subject_id: int) -> tuple[str | None, datetime | None]:
    """``(owner, until)`` of the subject's lease as stored (``until`` may be in the past)."""
    with db.session() as s:
        row = s.execute(
            select(Subject.scan_lease_owner, Subject.scan_lease_until).where(
                Subject.id == subject_id
            )
        ).first()
    return (row[0], row[1]) if row else (None, None)


def _in_progress(db: Database, subject_id: int) -> ScanInProgress:
    owner, until = lease_holder(db, subject_id)
    with db.session() as s:
        since = s.scalar(
            select(Scan.started_at)
            .where(Scan.subject_id == subject_id, Scan.status == "running")
            .order_by(Scan.started_at.desc())
            .limit(1)
        )
    return ScanInProgress(subject_id, owner=owner, until=until, since=since)


class _Heartbeat(threading.Thread):
    """Renews a held lease every third of its length until stopped or the lease is lost."""

    def __init__(
        self,
        db: Database,
        subject_id: int,
        owner: str,
        lease: timedelta,
        clock: Callable[[], datetime],
    ) -> None:
        super().__init__(name=f"scan-lease-{subject_id}", daemon=True)
        self.db, self.subject_id, self.owner = db, subject_id, owner
        self.lease, self.clock = lease, clock
        self.stopped = threading.Event()

    def run(self) -> None:
        period = self.lease.total_seconds() / 3
        while not self.stopped.wait(period):
            try:
                held = renew_scan(
                    self.db, self.subject_id, self.owner, lease=self.lease, now=self.clock()
                )
            except Exception as exc:  # a database hiccup: try again next period
                logger.warning(
                    "subject %d: could not renew scan lease (%s)",
                    self.subject_id,
                    type(exc).__name__,
                )
                continue
            if not held:
                logger.warning("subject %d: scan lease was lost", self.subject_id)
                return

    def stop(self) -> None:
        self.stopped.set()
        self.join()


@contextmanager
def scan_lease(
    db: Database,
    subject_id: int,
    owner: str | None = None,
    *,
    lease: timedelta = DEFAULT_LEASE,
    heartbeat: bool = True,
    clock: Callable[[], datetime] | None = None,
) -> Iterator[str]:
    """Hold the subject's scan lease for the ``with`` block; yields the owner string.

    Raises :class:`ScanInProgress` when someone else holds an unexpired lease. With
    ``heartbeat`` a daemon thread renews the lease every ``lease / 3`` while the block runs.
    ``clock`` (default: the real UTC clock) gives the time used for claiming and renewing.
    The lease is released when the block ends, however it ends.
    """
    clock = clock or _utcnow
    owner = owner or default_owner()
    if not claim_scan(db, subject_id, owner, lease=lease, now=clock()):
        raise _in_progress(db, subject_id)
    beat = _Heartbeat(db, subject_id, owner, lease, clock) if heartbeat else None
    if beat is not None:
        beat.start()
    try:
        yield owner
    finally:
        if beat is not None:
            beat.stop()
        release_scan(db, subject_id, owner)
