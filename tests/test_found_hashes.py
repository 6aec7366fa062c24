"""Every hash of a found image is kept (``image_hashes``): a known image is matched again on
all of them, region hashes included; enrolling matches earlier images (retro-match); hashes of
images nobody matched are forgotten after ``[match] keep_seen_days``; a match says how it
matched."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from datetime import timedelta
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import func, insert, inspect, select, text

from monitor import store
from monitor.config import Settings
from monitor.db import MIGRATIONS_DIR, Database, make_engine
from monitor.db.models import (
    FetchCacheEntry,
    Image,
    ImageHash,
    Match,
    MediaFrames,
    OutboxMessage,
    Sighting,
    Subject,
    utcnow,
)
from monitor.demo.photos import photo_bytes
from monitor.demo.transforms import decode, encode, pad
from monitor.enrol import enrol_images
from monitor.hashing import compute_hashes
from monitor.matching import ReferenceIndex, explain_match, thresholds_from_config
from monitor.pipeline import hashing_pool, scan_subject
from monitor.retro import match_seen_images
from monitor.testing.searxng import FakeSearxng
from monitor.testing.web import LoopbackWeb
from monitor.types import HashValue, ImageHashes
from tests.conftest import loopback_settings

FINDER = "Fay Finder"  # her scan finds the padded copy (not her photo)
OWNER = "Olga Owner"  # whose photo it is
LATE = "Lena Late"  # enrols the same photo after both scans
DAY = timedelta(days=1)


@pytest.fixture(scope="module")
def pool() -> Iterator[ProcessPoolExecutor]:
    with hashing_pool(2) as p:
        yield p


def _padded(ref: bytes) -> bytes:
    return encode(pad(decode(ref), 0.2), "JPEG", 85)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[Callable[[str], tuple[Settings, Database, LoopbackWeb]]]:
    """A page with a padded (bordered) copy of the owner's photo, found by both names."""
    ref = photo_bytes(5200)
    fake = FakeSearxng()
    with LoopbackWeb() as web:
        url = fake.install(web)
        web.add("/pad.jpg", _padded(ref), content_type="image/jpeg")
        web.add("/other.jpg", photo_bytes(5201), content_type="image/jpeg")
        web.add(
            "/page.html", "<html><body><img src='/pad.jpg'><img src='/other.jpg'></body></html>"
        )
        for name in (FINDER, OWNER, LATE):
            fake.add_result(name, "general", {"url": web.url("/page.html")})

        def make(database_url: str) -> tuple[Settings, Database, LoopbackWeb]:
            settings = loopback_settings(tmp_path, url)
            settings.database = settings.database.model_copy(update={"url": database_url})
            settings.cases = settings.cases.model_copy(update={"capture_evidence": False})
            settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            db = Database(settings.database_url, key_file=settings.key_path)
            with db.session() as s:
                finder = store.add_subject(s, FINDER, interval=DAY)
                enrol_images(s, finder, [("mine", photo_bytes(5202))])
            return settings, db, web

        yield make


def _enrol(db: Database, name: str, photo: bytes) -> None:
    with db.session() as s:
        subject = store.add_subject(s, name, interval=DAY)
        enrol_images(s, subject, [("ref", photo)])


def test_a_padded_copy_found_once_matches_another_persons_photo_from_its_stored_hashes(
    world: Callable[[str], tuple[Settings, Database, LoopbackWeb]],
    database_url: str,
    pool: ProcessPoolExecutor,
) -> None:
    settings, db, web = world(database_url)
    ref = photo_bytes(5200)
    # The copy matches only through the hash of the photo inside its border.
    fresh = compute_hashes(_padded(ref))
    assert fresh.get("pdq.region") is not None
    try:
        first = scan_subject(settings, db, FINDER, pool=pool, deliver=False)
        assert first.images_hashed == 2 and first.matches == 0
        _enrol(db, OWNER, ref)
        # The owner's scan meets the same bytes: known by content, not hashed again, and
        # matched on every stored hash, the region's included.
        second = scan_subject(settings, db, OWNER, pool=pool, deliver=False)
        assert second.images_hashed == 0
        assert second.matches == 1 and second.new_matches == 1 and second.new_sightings == 1
        with db.session() as s:
            match = s.scalars(select(Match)).one()
            how = json.loads(match.how)
            assert how["found"] == "pdq.region" and how["stage"] == "scan"
            assert "border, letterbox or screenshot" in explain_match(match.how)
            image = s.get(Image, match.image_id)
            assert image is not None
            stored = store.image_hashes(s, image)
            assert set(stored.hashes) == set(fresh.hashes)
            rows = s.execute(
                select(ImageHash.algorithm, ImageHash.role).where(ImageHash.image_id == image.id)
            ).all()
            assert ("pdq", "whole") in rows and ("pdq", "region") in rows
            assert ("phash", "whole") in rows
        with db.engine.connect() as conn:
            known = store.known_image(conn, fresh.sha256)
        assert known is not None and known.get("pdq.region") == fresh.get("pdq.region")
    finally:
        db.dispose()


def test_enrolling_matches_images_seen_before_without_downloading(
    world: Callable[[str], tuple[Settings, Database, LoopbackWeb]],
    database_url: str,
    pool: ProcessPoolExecutor,
) -> None:
    settings, db, web = world(database_url)
    try:
        scan_subject(settings, db, FINDER, pool=pool, deliver=False)
        requests = len(web.requests)
        with db.session() as s:
            subject = store.add_subject(s, LATE, interval=DAY)
            enrol_images(s, subject, [("ref", photo_bytes(5200))])
            report = match_seen_images(s, settings, subject)
        assert len(web.requests) == requests  # nothing fetched
        assert (report.checked, report.matched, report.alerted) == (2, 1, 1)
        with db.session() as s:
            late = store.get_subject(s, LATE)
            match = s.scalars(select(Match).where(Match.subject_id == late.id)).one()
            assert match.scan_id is None and json.loads(match.how)["stage"] == "retro"
            assert json.loads(match.how)["found"] == "pdq.region"
            sighting = s.scalars(select(Sighting).where(Sighting.subject_id == late.id)).one()
            assert (sighting.page_url, sighting.image_url) == (
                web.url("/page.html"),
                web.url("/pad.jpg"),
            )
            alert = s.scalars(select(OutboxMessage).where(OutboxMessage.subject_id == late.id))
            (row,) = alert.all()
            assert row.status == "pending" and row.new_items == 1
            assert sighting.alert_id == row.id
            rows = store.list_matches(s, LATE)
            assert len(rows) == 1
            # Enrolling again checks again but finds nothing new: no second alert.
            again = match_seen_images(s, settings, late)
            assert (again.checked, again.matched, again.alerted) == (1, 0, 0)
        # The person's own next scan sees the same place: no new alert either.
        later = scan_subject(settings, db, LATE, pool=pool, deliver=False)
        assert later.matches == 1 and later.new_matches == 0 and later.new_sightings == 0
    finally:
        db.dispose()


def _image(s, n: int, *, seen_at, matched_by: Subject | None = None) -> int:  # type: ignore[no-untyped-def]
    hashes = ImageHashes(
        f"{n:064x}",
        10,
        10,
        (HashValue("pdq", f"{n:064x}", 90), HashValue("pdq.region", f"{n + 1:064x}", 80)),
    )
    subject = matched_by or store.get_subject(s, "Pia Prune")
    match = None
    if matched_by is not None:
        from monitor.types import MatchResult

        ref_id = matched_by.references[0].id
        match = MatchResult(ref_id, "pdq", 0, 52)
    store.record_images(
        s,
        subject,
        None,
        [store.SeenImage(f"https://e.test/{n}", f"https://e.test/{n}.jpg", hashes, match)],
        now=seen_at,
    )
    image_id = s.scalar(select(Image.id).where(Image.sha256 == hashes.sha256))
    s.execute(
        insert(FetchCacheEntry).values(
            url_sha256=store.url_key(f"https://e.test/{n}.jpg"),
            url=f"https://e.test/{n}.jpg",
            image_id=image_id,
            etag='"x"',
            fetched_at=seen_at,
        )
    )
    s.execute(insert(MediaFrames).values(image_id=image_id, frames="[]", sampled_at=seen_at))
    return image_id


def test_hashes_of_images_nobody_matched_are_forgotten_after_keep_seen_days(
    database_url: str,
) -> None:
    db = Database(database_url)
    t0 = utcnow()
    keep = timedelta(days=90)
    try:
        with db.session() as s:
            store.add_subject(s, "Pia Prune", interval=DAY)
            owner = store.add_subject(s, "Max Matched", interval=DAY)
            enrol_images(s, owner, [("ref", photo_bytes(5203))])
            s.flush()
            old = _image(s, 1, seen_at=t0)
            recent = _image(s, 3, seen_at=t0 + timedelta(days=60))
            matched = _image(s, 5, seen_at=t0, matched_by=owner)
        with db.session() as s:
            assert store.forget_unmatched_hashes(s, keep=keep, now=t0 + timedelta(days=89)) == 0
        with db.session() as s:
            assert store.forget_unmatched_hashes(s, keep=keep, now=t0 + timedelta(days=91)) == 1

        def count(s, model, image_id: int) -> int:  # type: ignore[no-untyped-def]
            return s.scalar(
                select(func.count()).select_from(model).where(model.image_id == image_id)
            )

        with db.session() as s:
            assert count(s, ImageHash, old) == 0
            assert count(s, MediaFrames, old) == 0 and count(s, FetchCacheEntry, old) == 0
            assert count(s, ImageHash, recent) == 2 and count(s, ImageHash, matched) == 2
            assert count(s, Sighting, old) == 1  # the place is still on record
            # An image whose hashes are gone is unknown to a scan (hashed again when seen)...
            assert store.known_image(s, f"{1:064x}") is None
            assert store.cached_images(s, ["https://e.test/1.jpg"]) == {}
            assert store.known_image(s, f"{3:064x}") is not None
            # ...and seen again it gets its hashes back.
            _image_again = ImageHashes(f"{1:064x}", 10, 10, (HashValue("pdq", f"{1:064x}", 90),))
            subject = store.get_subject(s, "Pia Prune")
            store.record_images(
                s, subject, None, [store.SeenImage("https://e.test/1", "u", _image_again, None)]
            )
            assert count(s, ImageHash, old) == 1
    finally:
        db.dispose()


def test_a_match_is_explained_in_words() -> None:
    how = {"stage": "scan", "found": "pdq", "reference": "pdq.mirror", "distance": 18}
    assert explain_match({**how, "bits": 256}) == "mirrored copy, 18 of 256 bits"
    assert explain_match({**how, "reference": "pdq", "distance": 3, "bits": 256}) == (
        "same photo, 3 of 256 bits"
    )
    region = {**how, "found": "pdq.region", "reference": "pdq", "distance": 12, "bits": 256}
    assert explain_match(region) == (
        "the photo inside a border, letterbox or screenshot, 12 of 256 bits"
    )
    assert explain_match({**how, "reference": "pdq.crop20-03", "bits": 256}).startswith(
        "cropped copy (about 20% cut away)"
    )
    assert explain_match({**how, "reference": "pdq.rot+4c", "bits": 256}).startswith(
        "straightened copy (about 4 degrees)"
    )
    # variants of the mirrored photo and square crops are said in words, not by their tags
    assert explain_match({**how, "found": "pdq.region", "reference": "pdq.mcrop20-03"}) == (
        "the photo inside a border, letterbox or screenshot, mirrored and cropped copy "
        "(about 20% cut away), distance 18"
    )
    assert "mirrored and straightened copy (about 2 degrees)" in explain_match(
        {**how, "reference": "pdq.mrot+2c"}
    )
    assert "square crop" in explain_match({**how, "reference": "pdq.sq90-2-1"})
    assert explain_match(json.dumps({**how, "found": "phash", "reference": "phash", "bits": 64}))
    assert explain_match(None) == "" and explain_match("not json") == ""


def test_migration_0011_copies_the_stored_hashes_into_rows(
    database_url: str, tmp_path: Path
) -> None:
    engine = make_engine(database_url)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0009")
        conn.execute(
            text(
                "INSERT INTO images (sha256, width, height, pdq, pdq_quality, phash, "
                "first_fetched_at) VALUES (:sha, 1, 1, :pdq, 77, :ph, :at)"
            ),
            {"sha": "ab" * 32, "pdq": "cd" * 32, "ph": "ef" * 8, "at": utcnow()},
        )
    engine.dispose()
    db = Database(database_url, key_file=tmp_path / "key")
    try:
        with db.engine.connect() as conn:
            columns = {c["name"] for c in inspect(conn).get_columns("images")}
        assert not columns & {"pdq", "pdq_quality", "phash"}
        with db.session() as s:
            image = s.scalars(select(Image)).one()
            copied = store.image_hashes(s, image)
            assert set(copied.hashes) == {
                HashValue("pdq", "cd" * 32, 77),
                HashValue("phash", "ef" * 8),
            }
            # Its content-box hashes were never stored: hashed again when next fetched...
            assert image.rehash and store.known_image(s, "ab" * 32) is None
            subject = store.add_subject(s, "Rex Rehash", interval=DAY)
            # ...but an enrolment already matches it on the rows it has (and leaves the mark).
            store.record_images(
                s, subject, None, [store.SeenImage("p", "i", copied, None)], hashed=False
            )
            assert image.rehash
            fresh = ImageHashes(
                "ab" * 32, 1, 1, (*copied.hashes, HashValue("pdq.region", "12" * 32, 60))
            )
            store.record_images(s, subject, None, [store.SeenImage("p", "i", fresh, None)])
        with db.session() as s:
            known = store.known_image(s, "ab" * 32)
            assert known is not None and set(known.hashes) == set(fresh.hashes)
    finally:
        db.dispose()


def test_the_index_matches_stored_region_hashes() -> None:
    """Thresholds from the configuration: a stored row named pdq.region is a region hash."""
    ref = compute_hashes(photo_bytes(5200))
    records = [store.ReferenceHashRecord(1, h.algorithm, h.value) for h in ref.hashes]
    index = ReferenceIndex(records, thresholds_from_config(Settings().match), min_quality=50)
    padded = compute_hashes(_padded(photo_bytes(5200)))
    only_whole = ImageHashes(padded.sha256, padded.width, padded.height, padded.hashes[:2])
    assert index.match(only_whole) is None  # what the image row used to keep
    detail = index.match_detail(padded)
    assert detail is not None and detail.found == "pdq.region"


@pytest.mark.sqlite_default  # its config names an SQLite file
def test_enroll_on_the_command_line_says_how_many_earlier_images_it_checked(
    world: Callable[[str], tuple[Settings, Database, LoopbackWeb]],
    tmp_path: Path,
    pool: ProcessPoolExecutor,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from monitor.cli import main

    settings, db, web = world(f"sqlite:///{tmp_path / 'cli.db'}")
    try:
        scan_subject(settings, db, FINDER, pool=pool, deliver=False)
    finally:
        db.dispose()
    cfg = tmp_path / "monitor.toml"
    cfg.write_text(
        f'data_dir = "{settings.data_dir}"\n'
        f'[database]\nurl = "{settings.database_url}"\nkey_file = "{settings.key_path}"\n'
    )
    photo = tmp_path / "me.jpg"
    photo.write_bytes(photo_bytes(5200))
    assert main(["--config", str(cfg), "subject", "add", LATE]) == 0
    capsys.readouterr()
    assert main(["--config", str(cfg), "enroll", LATE, str(photo), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["earlier_images_checked"] == 2 and report["earlier_matches"] == 1
    assert main(["--config", str(cfg), "cases", "--json"]) == 0
    (case,) = [c for c in json.loads(capsys.readouterr().out) if c["subject"] == LATE]
    assert main(["--config", str(cfg), "case", "show", str(case["id"])]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "How it matched: the photo inside a border, letterbox or screenshot" in out
    assert "found when a photo was enrolled" in out


def test_a_scan_forgets_the_hashes_of_images_nobody_matched_for_keep_seen_days(
    world: Callable[[str], tuple[Settings, Database, LoopbackWeb]],
    tmp_path: Path,
    pool: ProcessPoolExecutor,
) -> None:
    from sqlalchemy import update

    settings, db, web = world(f"sqlite:///{tmp_path / 'forget.db'}")
    try:
        scan_subject(settings, db, FINDER, pool=pool, deliver=False)
        with db.session() as s:
            assert s.scalar(select(func.count(func.distinct(ImageHash.image_id)))) == 2
            long_ago = utcnow() - timedelta(days=settings.match.keep_seen_days + 1)
            s.execute(update(Sighting).values(first_seen=long_ago, last_seen=long_ago))
            s.execute(update(Image).values(first_fetched_at=long_ago))
        _enrol(db, "Ned Nothing", photo_bytes(5204))  # found nothing: sees none of them
        scan_subject(settings, db, "Ned Nothing", pool=pool, deliver=False)
        with db.session() as s:
            assert s.scalar(select(func.count()).select_from(ImageHash)) == 0
            assert s.scalar(select(func.count()).select_from(Sighting)) == 2  # places stay
    finally:
        db.dispose()
