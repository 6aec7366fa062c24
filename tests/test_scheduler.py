"""Scan leases and the scheduler: who gets scanned, when, and never twice at once."""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from monitor.config import Settings
from monitor.db import Database
from monitor.db.models import Scan, Subject
from monitor.errors import MonitorError
from monitor.leases import (
    ScanInProgress,
    claim_scan,
    release_scan,
    renew_scan,
    scan_lease,
)
from monitor.scheduler import Scheduler, due_subjects, next_due

NOW = datetime(2030, 6, 1, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
JITTER = timedelta(minutes=5)


@pytest.fixture
def db(database_url: str):
    """A migrated database: SQLite, and PostgreSQL when one answers locally."""
    database = Database(database_url)
    yield database
    database.dispose()


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(data_dir=tmp_path / "data", schedule={"jitter": "5m", "check_every": "1m"})


def add_subject(
    db: Database, name: str, *, interval: timedelta = HOUR, next_scan_at: datetime | None = None
) -> int:
    with db.session() as s:
        subject = Subject(
            name=name, interval_seconds=int(interval.total_seconds()), next_scan_at=next_scan_at
        )
        s.add(subject)
        s.flush()
        return subject.id


def subject(db: Database, subject_id: int) -> Subject:
    with db.session() as s:
        row = s.get(Subject, subject_id)
        assert row is not None
        return row


class Recorder:
    """A scan_fn that counts calls per subject (thread-safe) and can fail for some subjects."""

    def __init__(self, fail: set[int] = frozenset(), pause: float = 0.0) -> None:
        self.calls: Counter[int] = Counter()
        self.fail = fail
        self.pause = pause
        self.lock = threading.Lock()

    def __call__(self, subject_id: int) -> None:
        with self.lock:
            self.calls[subject_id] += 1
        if self.pause:
            time.sleep(self.pause)
        if subject_id in self.fail:
            raise RuntimeError(f"search backend down while scanning secret-name-{subject_id}")


def make_scheduler(db: Database, settings: Settings, scan_fn, **kwargs) -> Scheduler:
    return Scheduler(db, settings, scan_fn, now_fn=lambda: NOW, rng=random.Random(7), **kwargs)


# ---------------------------------------------------------------- next_due


def test_next_due_stays_within_jitter_and_uses_it() -> None:
    rng = random.Random(1)
    draws = [next_due(HOUR, timedelta(minutes=10), NOW, rng) for _ in range(2000)]
    assert all(NOW + timedelta(minutes=50) <= d <= NOW + timedelta(minutes=70) for d in draws)
    # The jitter is really applied, in both directions.
    assert min(draws) < NOW + timedelta(minutes=52)
    assert max(draws) > NOW + timedelta(minutes=68)


def test_next_due_never_earlier_than_half_the_interval() -> None:
    rng = random.Random(2)
    draws = [next_due(HOUR, timedelta(hours=2), NOW, rng) for _ in range(2000)]
    assert min(draws) == NOW + timedelta(minutes=30)
    assert max(draws) <= NOW + timedelta(hours=3)


def test_next_due_without_jitter_is_exact_and_rejects_bad_intervals() -> None:
    assert next_due(HOUR, timedelta(0), NOW, random.Random()) == NOW + HOUR
    with pytest.raises(ValueError, match="positive"):
        next_due(timedelta(0), JITTER, NOW, random.Random())


# ---------------------------------------------------------------- due_subjects


def test_due_subjects_picks_never_scanned_and_overdue_but_not_future(db: Database) -> None:
    never = add_subject(db, "never")
    overdue = add_subject(db, "overdue", next_scan_at=NOW - timedelta(days=3))
    exactly_now = add_subject(db, "now", next_scan_at=NOW)
    add_subject(db, "future", next_scan_at=NOW + timedelta(seconds=1))
    assert due_subjects(db, NOW) == [never, overdue, exactly_now]


def test_due_subjects_leaves_out_a_subject_whose_lease_is_held(db: Database) -> None:
    sid = add_subject(db, "held")
    assert claim_scan(db, sid, "other-host:1:abc", lease=HOUR, now=NOW)
    assert due_subjects(db, NOW) == []
    assert due_subjects(db, NOW + HOUR + timedelta(seconds=1)) == [sid]  # lease expired


# ---------------------------------------------------------------- leases


def test_claim_is_exclusive_until_released_or_expired(db: Database) -> None:
    sid = add_subject(db, "a")
    assert claim_scan(db, sid, "one", lease=HOUR, now=NOW)
    assert not claim_scan(db, sid, "two", lease=HOUR, now=NOW + timedelta(minutes=59))
    assert not claim_scan(db, sid, "one", lease=HOUR, now=NOW)  # not re-entrant
    release_scan(db, sid, "two")  # not the owner: no effect
    assert not claim_scan(db, sid, "two", lease=HOUR, now=NOW)
    release_scan(db, sid, "one")
    assert claim_scan(db, sid, "two", lease=HOUR, now=NOW)
    assert subject(db, sid).scan_lease_owner == "two"
    assert claim_scan(db, sid, "three", lease=HOUR, now=NOW + HOUR + timedelta(seconds=1))


def test_renew_only_by_the_owner(db: Database) -> None:
    sid = add_subject(db, "a")
    assert claim_scan(db, sid, "one", lease=HOUR, now=NOW)
    assert not renew_scan(db, sid, "two", lease=HOUR, now=NOW + timedelta(minutes=30))
    assert renew_scan(db, sid, "one", lease=HOUR, now=NOW + timedelta(minutes=30))
    # Renewed: still held after the first lease would have run out.
    assert not claim_scan(db, sid, "two", lease=HOUR, now=NOW + timedelta(minutes=61))


def test_claim_rejects_naive_times(db: Database) -> None:
    sid = add_subject(db, "a")
    with pytest.raises(ValueError, match="timezone-aware"):
        claim_scan(db, sid, "one", lease=HOUR, now=datetime(2030, 1, 1))


def test_scan_lease_refuses_while_held_and_works_after_expiry(db: Database) -> None:
    sid = add_subject(db, "a")
    assert claim_scan(db, sid, "cli-host:42:deadbeef", lease=timedelta(minutes=30), now=NOW)

    with (
        pytest.raises(ScanInProgress) as info,
        scan_lease(db, sid, clock=lambda: NOW + timedelta(minutes=10)),
    ):
        pytest.fail("entered the block while another process holds the lease")
    assert isinstance(info.value, MonitorError)
    assert "already running" in str(info.value)
    assert "try again later" in str(info.value)

    later = NOW + timedelta(minutes=31)  # the other process died; its lease ran out
    with scan_lease(db, sid, clock=lambda: later) as owner:
        assert subject(db, sid).scan_lease_owner == owner
        assert not claim_scan(db, sid, "someone-else", lease=HOUR, now=later)
    assert subject(db, sid).scan_lease_owner is None  # released on exit


def test_scan_lease_is_released_when_the_scan_raises(db: Database) -> None:
    sid = add_subject(db, "a")
    with pytest.raises(RuntimeError), scan_lease(db, sid):
        raise RuntimeError("scan blew up")
    assert claim_scan(db, sid, "next")


# ---------------------------------------------------------------- run_due


def test_run_due_scans_a_due_subject_once_and_schedules_the_next(
    db: Database, settings: Settings
) -> None:
    sid = add_subject(db, "a")
    scan = Recorder()
    sched = make_scheduler(db, settings, scan)

    assert sched.run_due(NOW) == [sid]
    assert scan.calls == Counter({sid: 1})
    row = subject(db, sid)
    assert row.last_scan_at == NOW
    assert NOW + HOUR - JITTER <= row.next_scan_at <= NOW + HOUR + JITTER
    assert row.scan_lease_owner is None and row.scan_lease_until is None

    assert sched.run_due(NOW + timedelta(minutes=30)) == []
    assert sched.run_due(row.next_scan_at) == [sid]
    assert scan.calls[sid] == 2


def test_long_overdue_subject_is_scanned_once_not_once_per_missed_interval(
    db: Database, settings: Settings
) -> None:
    sid = add_subject(db, "a", next_scan_at=NOW - 10 * HOUR)
    scan = Recorder()
    sched = make_scheduler(db, settings, scan)

    assert sched.run_due(NOW) == [sid]
    assert due_subjects(db, NOW) == []
    assert sched.run_due(NOW + timedelta(minutes=1)) == []
    assert scan.calls[sid] == 1
    assert subject(db, sid).next_scan_at >= NOW + HOUR - JITTER


def test_run_due_without_now_uses_the_injected_clock(db: Database, settings: Settings) -> None:
    sid = add_subject(db, "a", next_scan_at=NOW - timedelta(minutes=1))
    later = add_subject(db, "b", next_scan_at=NOW + timedelta(minutes=1))
    sched = make_scheduler(db, settings, Recorder())
    assert sched.run_due() == [sid]
    assert subject(db, sid).last_scan_at == NOW
    assert subject(db, later).last_scan_at is None


def test_run_due_skips_a_subject_another_process_is_scanning(
    db: Database, settings: Settings
) -> None:
    busy = add_subject(db, "busy")
    free = add_subject(db, "free")
    assert claim_scan(db, busy, "cli-host:42:deadbeef", lease=timedelta(minutes=30), now=NOW)
    scan = Recorder()
    sched = make_scheduler(db, settings, scan)

    assert sched.run_due(NOW) == [free]
    assert busy not in scan.calls
    assert subject(db, busy).scan_lease_owner == "cli-host:42:deadbeef"  # untouched
    assert subject(db, busy).next_scan_at is None  # still due once the other scan ends


def test_a_failing_scan_does_not_block_others_and_is_rescheduled_and_recorded(
    db: Database, settings: Settings
) -> None:
    bad = add_subject(db, "bad")
    good = add_subject(db, "good")
    scan = Recorder(fail={bad})
    sched = make_scheduler(db, settings, scan)

    assert sched.run_due(NOW) == [bad, good]
    assert scan.calls == Counter({bad: 1, good: 1})
    failed = subject(db, bad)
    assert failed.next_scan_at >= NOW + HOUR - JITTER  # no hot loop
    assert failed.scan_lease_owner is None
    assert subject(db, good).next_scan_at is not None
    with db.session() as s:
        scans = list(s.scalars(select(Scan).where(Scan.subject_id == bad)))
    assert [(x.status, x.error) for x in scans] == [
        ("failed", f"RuntimeError: search backend down while scanning secret-name-{bad}")
    ]
    assert sched.run_due(NOW + timedelta(minutes=1)) == []  # not retried at once


def test_a_failure_the_scan_recorded_itself_is_not_recorded_twice(
    db: Database, settings: Settings
) -> None:
    sid = add_subject(db, "a")

    def scan_fn(subject_id: int) -> None:
        with db.session() as s:
            s.add(Scan(subject_id=subject_id, status="failed", error="its own record"))
        raise RuntimeError("boom")

    make_scheduler(db, settings, scan_fn).run_due(NOW)
    with db.session() as s:
        errors = list(s.scalars(select(Scan.error).where(Scan.subject_id == sid)))
    assert errors == ["its own record"]


def test_log_lines_name_subjects_by_id_only(
    db: Database, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    bad = add_subject(db, "Jane Secretname")
    add_subject(db, "John Hiddenname")
    caplog.set_level(logging.DEBUG, logger="monitor")
    make_scheduler(db, settings, Recorder(fail={bad})).run_due(NOW)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert f"subject {bad}" in text
    for secret in ("Secretname", "Hiddenname", "secret-name"):
        assert secret not in text


def test_deliver_runs_after_each_pass_and_its_errors_do_not_escape(
    db: Database, settings: Settings
) -> None:
    delivered: list[int] = []

    def deliver() -> None:
        delivered.append(1)
        raise OSError("smtp down")

    sched = make_scheduler(db, settings, Recorder(), deliver_fn=deliver)
    assert sched.run_due(NOW) == []
    add_subject(db, "a")
    assert len(sched.run_due(NOW)) == 1
    assert len(delivered) == 2


def test_two_concurrent_passes_scan_each_subject_exactly_once(
    db: Database, settings: Settings
) -> None:
    ids = [add_subject(db, f"s{i}") for i in range(6)]
    scan = Recorder(pause=0.02)
    barrier = threading.Barrier(2)
    results: list[list[int]] = []
    errors: list[BaseException] = []

    def worker() -> None:
        sched = make_scheduler(db, settings, scan)  # like two processes
        try:
            barrier.wait(timeout=5)
            results.append(sched.run_due(NOW))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors
    assert scan.calls == Counter(dict.fromkeys(ids, 1))
    assert sorted(results[0] + results[1]) == ids


# ---------------------------------------------------------------- APScheduler


def test_started_scheduler_scans_a_due_subject_and_shuts_down(tmp_path, settings: Settings) -> None:
    db = Database(f"sqlite:///{tmp_path}/t.db")
    sid = add_subject(db, "a")
    scanned = threading.Event()
    delivered = threading.Event()
    calls: list[int] = []

    def scan_fn(subject_id: int) -> None:
        calls.append(subject_id)
        scanned.set()

    fast = settings.model_copy(
        update={
            "schedule": settings.schedule.model_copy(update={"check_every": timedelta(seconds=0.2)})
        }
    )
    sched = Scheduler(db, fast, scan_fn, deliver_fn=delivered.set)
    sched.start(block=False)
    try:
        assert scanned.wait(timeout=5), "the scheduler never scanned the due subject"
        assert delivered.wait(timeout=5), "the scheduler never delivered the outbox"
    finally:
        sched.shutdown()
    assert calls == [sid]  # scanned once, then no longer due
    row = subject(db, sid)
    assert row.next_scan_at is not None and row.scan_lease_owner is None
    db.dispose()


def test_the_scans_of_a_pass_run_inside_one_pass_context(db: Database, settings: Settings) -> None:
    first, second = add_subject(db, "first"), add_subject(db, "second")
    events: list[object] = []

    @contextlib.contextmanager
    def one_browser():
        events.append("open")
        yield
        events.append("close")

    sched = make_scheduler(db, settings, events.append, pass_context=one_browser)
    assert sched.run_due(NOW) == [first, second]
    assert events == ["open", first, second, "close"]
    assert sched.run_due(NOW + timedelta(minutes=1)) == []
    assert events == ["open", first, second, "close"]  # nothing due: not entered
