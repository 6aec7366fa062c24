"""Two scans that find the same new images at the same time both record their matches.

``record_images`` used to read which images were stored and insert the others: the second of
two concurrent transactions then hit the unique key of ``images`` (or ``sightings``,
``matches``) once the first committed, and its matches and alert rolled back. Inserts are now
idempotent (``INSERT ... ON CONFLICT DO NOTHING``, then read back), on SQLite and PostgreSQL.
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from monitor import store
from monitor.db import Database
from monitor.db.models import (
    Image,
    ImageHash,
    Match,
    OutboxMessage,
    Reference,
    ReferenceHash,
    Sighting,
    Subject,
)
from monitor.types import HashValue, ImageHashes, MatchResult

DAY = timedelta(days=1)


def _hashes(n: int) -> ImageHashes:
    return ImageHashes(
        f"{n:064x}",
        640,
        480,
        (
            HashValue("pdq", f"{n:064x}", 90),
            HashValue("phash", f"{n:016x}"),
            HashValue("pdq.region", f"{n + 1:064x}", 80),
        ),
    )


@pytest.fixture
def db(database_url: str):
    database = Database(database_url)
    yield database
    database.dispose()


def _person(db: Database, name: str) -> tuple[int, int, int]:
    """A subject with one reference, and a running scan: (subject id, reference id, scan id)."""
    with db.session() as s:
        subject = store.add_subject(s, name, interval=DAY)
        ref = Reference(origin="import")
        ref.hashes.append(ReferenceHash(algorithm="pdq", value="0" * 64))
        subject.references.append(ref)
        s.flush()
        return subject.id, ref.id, store.start_scan(s, subject.id).id


def _seen(ref_id: int) -> list[store.SeenImage]:
    return [
        store.SeenImage(
            f"https://example.org/p{n}.html",
            f"https://example.org/{n}.jpg",
            _hashes(n),
            MatchResult(ref_id, "pdq", 3, 52),
            how={"stage": "scan", "found": "pdq", "reference": "pdq", "distance": 3},
        )
        for n in range(1, 4)
    ]


def test_two_scans_finding_the_same_new_images_at_once_both_record_their_matches(
    db: Database,
) -> None:
    a, ref_a, scan_a = _person(db, "Ann Concurrent")
    b, ref_b, scan_b = _person(db, "Bea Concurrent")

    # Ann's scan writes the three new images and holds its transaction open...
    first = Session(db.engine)
    first.begin()
    subject_a = first.get(Subject, a)
    assert subject_a is not None
    store.record_images(first, subject_a, scan_a, _seen(ref_a))

    # ...while Bea's scan, which found the same images, records them too.
    outcome: dict[str, object] = {}

    def second() -> None:
        try:
            with db.session() as s:
                subject_b = s.get(Subject, b)
                assert subject_b is not None
                outcome["b"] = store.record_images(s, subject_b, scan_b, _seen(ref_b))
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            outcome["error"] = exc

    thread = threading.Thread(target=second)
    thread.start()
    time.sleep(1.0)  # Bea's insert now waits on Ann's uncommitted rows (or the write lock)
    first.commit()
    first.close()
    thread.join(60)
    assert not thread.is_alive()
    assert "error" not in outcome, outcome.get("error")
    recorded = outcome["b"]
    assert [o.new_match for o in recorded] == [True, True, True]  # type: ignore[attr-defined]
    assert [o.alerted for o in recorded] == [True, True, True]  # type: ignore[attr-defined]

    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(Image)) == 3
        assert s.scalar(select(func.count()).select_from(ImageHash)) == 9  # 3 hashes each
        for subject_id in (a, b):
            matches = s.scalar(
                select(func.count()).select_from(Match).where(Match.subject_id == subject_id)
            )
            sightings = s.scalars(select(Sighting).where(Sighting.subject_id == subject_id)).all()
            alert = s.scalar(select(OutboxMessage).where(OutboxMessage.subject_id == subject_id))
            assert matches == 3 and len(sightings) == 3
            assert alert is not None and alert.new_items == 3
            assert all(x.alert_id == alert.id for x in sightings)


def test_recording_the_same_batch_twice_is_idempotent(db: Database) -> None:
    a, ref_a, scan_a = _person(db, "Cas Twice")
    with db.session() as s:
        subject = s.get(Subject, a)
        assert subject is not None
        first = store.record_images(s, subject, scan_a, _seen(ref_a))
        again = store.record_images(s, subject, scan_a, _seen(ref_a))
        assert all(o.new_match and o.new_sighting and o.alerted for o in first)
        assert not any(o.new_match or o.new_sighting or o.alerted for o in again)
        assert s.scalar(select(func.count()).select_from(Sighting)) == 3
        assert s.scalar(select(OutboxMessage.new_items)) == 3


def test_two_peoples_scans_running_at_once_both_record_the_matches(
    database_url: str, tmp_path
) -> None:
    """The same thing end to end: two scans in two threads find the same new copies."""
    from monitor.demo.photos import photo_bytes
    from monitor.demo.transforms import decode, encode, pad, resize
    from monitor.enrol import enrol_images
    from monitor.pipeline import hashing_pool, scan_subject
    from monitor.testing.searxng import FakeSearxng
    from monitor.testing.web import LoopbackWeb
    from tests.conftest import loopback_settings

    ref = photo_bytes(5300)
    copies = {
        "/a.jpg": encode(resize(decode(ref), 0.5), "JPEG", 80),
        "/b.jpg": encode(pad(decode(ref), 0.2), "JPEG", 85),
    }
    names = ("Dee Parallel", "Eve Parallel")
    fake = FakeSearxng()
    with LoopbackWeb() as web, hashing_pool(2) as pool:
        url = fake.install(web)
        for path, body in copies.items():
            web.add(path, body, content_type="image/jpeg")
        web.add("/page.html", "".join(f"<img src='{p}'>" for p in copies))
        for name in names:
            fake.add_result(name, "general", {"url": web.url("/page.html")})
        settings = loopback_settings(tmp_path, url)
        settings.database = settings.database.model_copy(update={"url": database_url})
        settings.cases = settings.cases.model_copy(update={"capture_evidence": False})
        settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        db = Database(settings.database_url, key_file=settings.key_path)
        try:
            with db.session() as s:
                for name in names:
                    enrol_images(s, store.add_subject(s, name, interval=DAY), [("ref", ref)])
            results: dict[str, object] = {}
            start = threading.Barrier(2)

            def scan(name: str) -> None:
                start.wait()
                try:
                    results[name] = scan_subject(settings, db, name, pool=pool, deliver=False)
                except Exception as exc:  # noqa: BLE001 - reported by the assertion below
                    results[name] = exc

            threads = [threading.Thread(target=scan, args=(n,)) for n in names]
            for t in threads:
                t.start()
            for t in threads:
                t.join(120)
            for name in names:
                summary = results[name]
                assert not isinstance(summary, Exception), summary
                assert summary.matches == 2 and summary.new_matches == 2  # type: ignore[attr-defined]
            with db.session() as s:
                assert s.scalar(select(func.count()).select_from(Image)) == 2
                for name in names:
                    subject = store.get_subject(s, name)
                    matches = s.scalars(select(Match).where(Match.subject_id == subject.id)).all()
                    alert = s.scalars(
                        select(OutboxMessage).where(OutboxMessage.subject_id == subject.id)
                    ).one()
                    assert len(matches) == 2 and alert.new_items == 2
        finally:
            db.dispose()
