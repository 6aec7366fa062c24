"""Stored records on SQLite and PostgreSQL: subjects, sightings, matches, alerts, erasure."""

from __future__ import annotations

import os
import stat
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from monitor import store
from monitor.db import Database
from monitor.db.models import (
    Alias,
    Hit,
    Image,
    Match,
    OutboxMessage,
    Reference,
    ReferenceHash,
    Scan,
    Sighting,
    Subject,
)
from monitor.errors import SubjectNotFound
from monitor.store import SubjectExists
from monitor.types import HashValue, ImageHashes, MatchResult, ResultKind, SearchHit, SearchQuery

DAY = timedelta(days=1)


def _hashes(n: int) -> ImageHashes:
    return ImageHashes(
        sha256=f"{n:064x}",
        width=640,
        height=480,
        hashes=(HashValue("pdq", f"{n:064x}", 90), HashValue("phash", f"{n:016x}")),
    )


def _subject_with_reference(s, name: str) -> Subject:
    subject = store.add_subject(s, name, aliases=[f"{name} alias"], interval=DAY)
    ref = Reference(origin="import")
    ref.hashes.append(ReferenceHash(algorithm="pdq", value="0" * 64))
    subject.references.append(ref)
    s.flush()
    return subject


@pytest.fixture
def db(database_url: str):
    database = Database(database_url)
    yield database
    database.dispose()


def _count(s, model) -> int:
    return s.scalar(select(func.count()).select_from(model))


def test_subject_names_are_unique(db: Database) -> None:
    with db.session() as s:
        store.add_subject(s, "Ann Example", interval=DAY)
    with pytest.raises(SubjectExists), db.session() as s:
        store.add_subject(s, "Ann Example", interval=DAY)


def test_same_image_same_url_is_reported_once_and_new_url_is_a_new_sighting(db: Database) -> None:
    with db.session() as s:
        subject = _subject_with_reference(s, "Ann Example")
        match = MatchResult(subject.references[0].id, "pdq", 4, 31)
        scan = store.start_scan(s, subject.id)
        first = store.record_image(
            s,
            subject,
            scan.id,
            page_url="http://a/p",
            image_url="http://a/i.jpg",
            hashes=_hashes(1),
            match=match,
        )
        again = store.record_image(
            s,
            subject,
            scan.id,
            page_url="http://a/p",
            image_url="http://a/i.jpg",
            hashes=_hashes(1),
            match=match,
        )
        elsewhere = store.record_image(
            s,
            subject,
            scan.id,
            page_url="http://b/p",
            image_url="http://b/i.jpg",
            hashes=_hashes(1),
            match=match,
        )
        unmatched = store.record_image(
            s,
            subject,
            scan.id,
            page_url="http://b/p",
            image_url="http://b/x.jpg",
            hashes=_hashes(2),
            match=None,
        )
    assert (first.new_match, first.new_sighting, first.alerted) == (True, True, True)
    assert (again.new_match, again.new_sighting, again.alerted) == (False, False, False)
    assert (elsewhere.new_match, elsewhere.new_sighting, elsewhere.alerted) == (False, True, True)
    assert not unmatched.alerted
    with db.session() as s:
        rows = store.list_matches(s, "Ann Example")
        assert {(r.page_url, r.image_url) for r in rows} == {
            ("http://a/p", "http://a/i.jpg"),
            ("http://b/p", "http://b/i.jpg"),
        }
        assert _count(s, Match) == 1 and _count(s, Image) == 2 and _count(s, Sighting) == 3
        outbox = s.scalars(select(OutboxMessage)).all()
        assert len(outbox) == 1 and outbox[0].new_items == 2  # one alert per scan
        data = rows[0].as_json()
        assert {
            "subject",
            "page_url",
            "image_url",
            "algorithm",
            "distance",
            "first_seen",
            "status",
        } <= data.keys()
        assert data["first_seen"].endswith("Z") and data["subject"] == "Ann Example"


def test_a_batch_records_the_same_as_one_image_at_a_time(db: Database) -> None:
    from monitor.store import SeenImage

    with db.session() as s:
        subject = _subject_with_reference(s, "Ann Example")
        match = MatchResult(subject.references[0].id, "pdq", 4, 31)
        first = store.start_scan(s, subject.id)
        # An earlier scan saw image 3 without matching it (say, before a reference was added).
        (before,) = store.record_images(
            s, subject, first.id, [SeenImage("http://c/p", "http://c/3.jpg", _hashes(3), None)]
        )
        assert (before.new_sighting, before.new_match, before.alerted) == (True, False, False)
        scan = store.start_scan(s, subject.id)
        outcomes = store.record_images(
            s,
            subject,
            scan.id,
            [
                SeenImage("http://a/p", "http://a/1.jpg", _hashes(1), match),  # new match
                SeenImage("http://a/p", "http://a/1.jpg", _hashes(1), match),  # same, again
                SeenImage("http://b/p", "http://b/1.jpg", _hashes(1), match),  # same, elsewhere
                SeenImage("http://a/p", "http://a/2.jpg", _hashes(2), None),  # no match
                SeenImage("http://c/p", "http://c/3.jpg", _hashes(3), match),  # matches now
            ],
        )
    flags = [(o.new_sighting, o.new_match, o.alerted) for o in outcomes]
    assert flags == [
        (True, True, True),
        (False, False, False),
        (True, False, True),
        (True, False, False),
        (False, True, True),
    ]
    with db.session() as s:
        assert _count(s, Image) == 3 and _count(s, Sighting) == 4 and _count(s, Match) == 2
        (alert,) = s.scalars(select(OutboxMessage)).all()
        assert alert.new_items == 3
        alerted = s.scalars(select(Sighting).where(Sighting.alert_id == alert.id)).all()
        assert {sg.image_url for sg in alerted} == {
            "http://a/1.jpg",
            "http://b/1.jpg",
            "http://c/3.jpg",
        }
        c3 = s.scalar(select(Sighting).where(Sighting.image_url == "http://c/3.jpg"))
        assert c3.first_scan_id == first.id and c3.last_seen >= c3.first_seen


def test_dismissed_match_never_alerts_again(db: Database) -> None:
    with db.session() as s:
        subject = _subject_with_reference(s, "Ann Example")
        match = MatchResult(subject.references[0].id, "pdq", 4, 31)
        scan = store.start_scan(s, subject.id)
        store.record_image(
            s,
            subject,
            scan.id,
            page_url="http://a/p",
            image_url="http://a/i.jpg",
            hashes=_hashes(1),
            match=match,
        )
        s.scalars(select(Match)).one().status = "dismissed"
        later = store.record_image(
            s,
            subject,
            scan.id,
            page_url="http://c/p",
            image_url="http://c/i.jpg",
            hashes=_hashes(1),
            match=match,
        )
    assert later.new_sighting and not later.alerted


def test_erasure_removes_everything_about_the_person_only(db: Database) -> None:
    with db.session() as s:
        ann = _subject_with_reference(s, "Ann Example")
        bob = _subject_with_reference(s, "Bob Example")
        for subject, shas in ((ann, (1, 2)), (bob, (2, 3))):
            scan = store.start_scan(s, subject.id)
            q = SearchQuery(f'"{subject.name}"', ResultKind.WEB)
            store.record_hits(s, scan.id, [SearchHit("fake", q, "http://a/p")])
            store.record_error(s, scan.id, "http://a/bad", "page", "HTTP 500")
            for n in shas:
                store.record_image(
                    s,
                    subject,
                    scan.id,
                    page_url="http://a/p",
                    image_url=f"http://a/{n}.jpg",
                    hashes=_hashes(n),
                    match=MatchResult(subject.references[0].id, "pdq", 3, 31),
                )
        ann_id = ann.id
    with db.session() as s:
        store.erase_subject(s, "Ann Example")
    with db.session() as s:
        for model in (Alias, Reference, Scan, Sighting, Match, OutboxMessage):
            assert not s.scalars(select(model).where(model.subject_id == ann_id)).all(), model
        assert s.scalar(select(func.count()).select_from(ReferenceHash)) == 1  # Bob's
        assert _count(s, Hit) == 1
        # Image 1 was only Ann's: gone. Image 2 is also Bob's, image 3 only Bob's: kept.
        assert set(s.scalars(select(Image.sha256))) == {f"{2:064x}", f"{3:064x}"}
        assert [r.subject for r in store.list_matches(s)] == ["Bob Example"] * 2
        with pytest.raises(SubjectNotFound):
            store.get_subject(s, "Ann Example")


def test_sqlite_file_is_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "monitor.db"
    Database(f"sqlite:///{path}").dispose()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
