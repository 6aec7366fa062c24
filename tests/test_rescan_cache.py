"""The fetch cache: a second scan revalidates known images (ETag / Last-Modified) instead of
downloading and hashing them again, and the cache keeps URLs, validators and hashes only."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from datetime import timedelta
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import func, select

from monitor import store
from monitor.config import Settings
from monitor.db import Database
from monitor.db.models import Base, FetchCacheEntry, Image, Sighting, utcnow
from monitor.demo.photos import photo_bytes
from monitor.demo.transforms import decode, encode, resize
from monitor.enrol import enrol_images
from monitor.fetch import freshness_lifetime
from monitor.pipeline import hashing_pool, scan_subject
from monitor.testing.searxng import FakeSearxng
from monitor.testing.web import LoopbackWeb
from monitor.testing.web import Validated as Served
from monitor.types import HashValue, ImageHashes
from tests.conftest import loopback_settings

NAME = "Sam Rescan"


@pytest.fixture(scope="module")
def pool() -> Iterator[ProcessPoolExecutor]:
    with hashing_pool(2) as p:
        yield p


def _settings(tmp_path: Path, searxng_url: str, database_url: str, **fetch: object) -> Settings:
    settings = loopback_settings(tmp_path, searxng_url)
    settings.database = settings.database.model_copy(update={"url": database_url})
    settings.fetch = settings.fetch.model_copy(update=fetch)
    settings.cases = settings.cases.model_copy(update={"capture_evidence": False})
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    return settings


@pytest.fixture
def web_world(tmp_path: Path) -> Iterator[Callable[..., tuple]]:
    """A web with a copy of the reference (ETag), two distractors (Last-Modified; none)."""
    ref = photo_bytes(5100)
    copy = encode(resize(decode(ref), 0.6), "JPEG", 80)
    images = {
        "/copy.jpg": Served(copy, etag='"v1"'),
        "/dated.jpg": Served(photo_bytes(5101), modified="Wed, 01 May 2024 12:00:00 GMT"),
        "/plain.jpg": Served(photo_bytes(5102)),
    }
    fake = FakeSearxng()
    with LoopbackWeb() as web:
        url = fake.install(web)
        for path, served in images.items():
            web.route(path, served.handle)
        tags = "".join(f"<img src='{p}'>" for p in images)
        web.add("/page.html", f"<html><body>{tags}</body></html>")
        fake.add_result(NAME, "general", {"url": web.url("/page.html")})

        def make(database_url: str, **fetch: object) -> tuple:
            settings = _settings(tmp_path, url, database_url, **fetch)
            db = Database(settings.database_url, key_file=settings.key_path)
            with db.session() as s:
                subject = store.add_subject(s, NAME, interval=timedelta(days=1))
                enrol_images(s, subject, [("ref", ref)])
            return settings, db, web, images

        yield make


def test_a_second_scan_revalidates_instead_of_downloading_and_hashing(
    web_world: Callable[..., tuple], database_url: str, pool: ProcessPoolExecutor
) -> None:
    settings, db, web, images = web_world(database_url)
    try:
        first = scan_subject(settings, db, NAME, pool=pool, deliver=False)
        assert (first.images, first.images_hashed, first.images_unchanged) == (3, 3, 0)
        assert first.new_matches == 1

        second = scan_subject(settings, db, NAME, pool=pool, deliver=False)
        # The two images with validators came back 304: not downloaded, not hashed. The one
        # without validators was downloaded again but not hashed (its content was known).
        assert (second.images, second.images_hashed, second.images_unchanged) == (3, 0, 2)
        assert images["/copy.jpg"].not_modified == 1 and images["/dated.jpg"].not_modified == 1
        assert images["/plain.jpg"].full == 2
        assert second.bytes_downloaded < first.bytes_downloaded - len(images["/copy.jpg"].body)
        # The match is still seen (same sighting, nothing new to alert).
        assert second.matches == 1 and second.new_matches == 0 and second.new_sightings == 0
        conditional = [r for r in web.requests if r.path == "/copy.jpg"]
        assert conditional[-1].headers.get("if-none-match") == '"v1"'

        # The copy changes: a new ETag and new bytes are downloaded and hashed again.
        changed = images["/copy.jpg"]
        changed.body, changed.etag = photo_bytes(5103), '"v2"'
        third = scan_subject(settings, db, NAME, pool=pool, deliver=False)
        assert third.images_hashed == 1 and third.images_unchanged == 1
        assert third.matches == 0  # what is there now is not the person
        with db.session() as s:
            entry = s.scalar(
                select(FetchCacheEntry).where(FetchCacheEntry.url == web.url("/copy.jpg"))
            )
            assert entry is not None and entry.etag == '"v2"'
            sha = s.scalar(select(Image.sha256).where(Image.id == entry.image_id))
            assert sha == hashlib.sha256(changed.body).hexdigest()
            # URLs without validators are not cached: there is nothing to ask with.
            assert s.scalar(select(func.count()).select_from(FetchCacheEntry)) == 2
    finally:
        db.dispose()


def test_conditional_requests_can_be_switched_off(
    web_world: Callable[..., tuple], tmp_path: Path, pool: ProcessPoolExecutor
) -> None:
    settings, db, web, images = web_world(
        f"sqlite:///{tmp_path / 'off.db'}", conditional_requests=False
    )
    try:
        scan_subject(settings, db, NAME, pool=pool, deliver=False)
        again = scan_subject(settings, db, NAME, pool=pool, deliver=False)
        assert again.images_unchanged == 0 and again.images_hashed == 0  # known by content
        assert all(s.not_modified == 0 and s.full == 2 for s in images.values())
        assert not any("if-none-match" in r.headers for r in web.requests)
        with db.session() as s:
            assert s.scalar(select(func.count()).select_from(FetchCacheEntry)) == 0
    finally:
        db.dispose()


def test_the_cache_holds_no_image_bytes_and_erasure_removes_it(
    web_world: Callable[..., tuple], tmp_path: Path, pool: ProcessPoolExecutor
) -> None:
    settings, db, web, images = web_world(f"sqlite:///{tmp_path / 'erase.db'}")
    try:
        scan_subject(settings, db, NAME, pool=pool, deliver=False)
        with db.session() as s:
            rows = s.scalars(select(FetchCacheEntry)).all()
            assert {r.url for r in rows} == {web.url("/copy.jpg"), web.url("/dated.jpg")}
            for row in rows:
                stored = [row.url, row.url_sha256, row.etag or "", row.last_modified or ""]
                assert all(len(v) < 200 for v in stored)
        db.dispose()
        data = (tmp_path / "erase.db").read_bytes()
        for served in images.values():
            middle = served.body[len(served.body) // 2 :][:64]
            assert middle not in data
        db = Database(settings.database_url, key_file=settings.key_path)
        with db.session() as s:
            store.erase_subject(s, NAME)
        with db.session() as s:
            assert s.scalar(select(func.count()).select_from(FetchCacheEntry)) == 0
    finally:
        db.dispose()


def test_migration_matches_the_model_and_upserts_work(database_url: str) -> None:
    db = Database(database_url, key_file=None)
    try:
        with db.engine.connect() as conn:
            diffs = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        ours = [d for d in diffs if "fetch_cache" in repr(d)]
        assert ours == []
        hashes = ImageHashes("ab" * 32, 10, 20, (HashValue("pdq", "0" * 64, 90),))
        with db.session() as s:
            subject = store.add_subject(s, NAME, interval=timedelta(days=1))
            store.record_images(
                s,
                subject,
                store.start_scan(s, subject.id).id,
                [store.SeenImage("p", "u", hashes, None)],
            )
            first = store.FetchedImage("u", hashes.sha256, '"a"', None)
            missing = store.FetchedImage("v", "cd" * 32, '"b"', None)
            assert store.remember_fetches(s, [first, missing]) == [missing]
        with db.session() as s:
            store.remember_fetches(s, [store.FetchedImage("u", hashes.sha256, '"c"', "then")])
        with db.session() as s:
            cached = store.cached_image(s, "u")
            assert cached is not None and (cached.etag, cached.last_modified) == ('"c"', "then")
            assert cached.hashes == hashes
            assert store.cached_image(s, "v") is None
    finally:
        db.dispose()


# ---------------------------------------------------------------- freshness (max-age, Expires)


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"cache-control": "public, max-age=3600"}, 3600),
        ({"cache-control": "max-age=3600, immutable", "age": "600"}, 3000),
        ({"cache-control": "private, max-age=60"}, 60),  # we are a private cache
        ({"cache-control": "no-cache, max-age=3600"}, 0),
        ({"cache-control": "no-store"}, 0),
        ({"cache-control": "max-age=60, max-age=3600"}, 0),  # conflicting: stale
        ({"cache-control": "max-age=soon"}, 0),
        (
            {
                "expires": "Thu, 01 Jan 2099 01:00:00 GMT",
                "date": "Thu, 01 Jan 2099 00:00:00 GMT",
            },
            3600,
        ),
        ({"expires": "0"}, 0),  # an invalid date is already expired
        ({"expires": "Thu, 01 Jan 2099 01:00:00 GMT", "cache-control": "max-age=5"}, 5),
        ({"etag": '"x"'}, 0),  # validators alone: ask again every time
        ({}, 0),
    ],
)
def test_freshness_lifetime_follows_cache_control_and_expires(
    headers: dict[str, str], seconds: float
) -> None:
    assert freshness_lifetime(headers) == seconds


def _last_seen(db: Database, url: str) -> object:
    with db.session() as s:
        return s.scalar(select(Sighting.last_seen).where(Sighting.image_url == url))


def _age_checks(db: Database, by: timedelta) -> None:
    """Pretend the cache entries were stored ``by`` earlier (as if scans were that far apart)."""
    with db.session() as s:
        for entry in s.scalars(select(FetchCacheEntry)):
            entry.fetched_at -= by
            if entry.fresh_until is not None:
                entry.fresh_until -= by


def test_fresh_images_are_not_asked_for_but_still_matched_and_seen(
    web_world: Callable[..., tuple], database_url: str, pool: ProcessPoolExecutor
) -> None:
    settings, db, web, images = web_world(database_url, max_cache_age=timedelta(hours=1))
    images["/copy.jpg"].cache_control = "public, max-age=86400"  # capped to an hour
    images["/dated.jpg"].cache_control = "no-cache"  # revalidate every time
    copy_url = web.url("/copy.jpg")
    try:
        first = scan_subject(settings, db, NAME, pool=pool, deliver=False)
        assert first.new_matches == 1 and first.new_sightings == 1
        seen_before = _last_seen(db, copy_url)

        second = scan_subject(settings, db, NAME, pool=pool, deliver=False)
        # The copy was not asked for at all; the no-cache image was asked (304).
        assert images["/copy.jpg"].full == 1 and images["/copy.jpg"].not_modified == 0
        assert images["/dated.jpg"].not_modified == 1
        assert (second.images, second.images_fresh, second.images_unchanged) == (3, 1, 2)
        assert second.images_hashed == 0
        # Still matched and recorded as seen again, with nothing new to alert.
        assert second.matches == 1 and second.new_matches == 0 and second.new_sightings == 0
        assert second.alerts_queued == 0
        assert _last_seen(db, copy_url) > seen_before

        # Past the cap (an hour, though the server said a day): asked again, conditionally.
        _age_checks(db, timedelta(hours=1, minutes=1))
        third = scan_subject(settings, db, NAME, pool=pool, deliver=False)
        assert images["/copy.jpg"].not_modified == 1 and third.images_fresh == 0
        assert third.matches == 1 and third.new_sightings == 0
        # That 304 said "a day" again: fresh for another hour.
        fourth = scan_subject(settings, db, NAME, pool=pool, deliver=False)
        assert images["/copy.jpg"].not_modified == 1 and fourth.images_fresh == 1
    finally:
        db.dispose()


def test_a_zero_max_cache_age_asks_every_time(
    web_world: Callable[..., tuple], tmp_path: Path, pool: ProcessPoolExecutor
) -> None:
    settings, db, web, images = web_world(
        f"sqlite:///{tmp_path / 'zero.db'}", max_cache_age=timedelta(0)
    )
    images["/copy.jpg"].cache_control = "max-age=86400"
    try:
        scan_subject(settings, db, NAME, pool=pool, deliver=False)
        again = scan_subject(settings, db, NAME, pool=pool, deliver=False)
        assert again.images_fresh == 0 and images["/copy.jpg"].not_modified == 1
    finally:
        db.dispose()


def test_a_lowered_cap_applies_to_entries_stored_before(
    web_world: Callable[..., tuple], tmp_path: Path, pool: ProcessPoolExecutor
) -> None:
    settings, db, web, images = web_world(
        f"sqlite:///{tmp_path / 'cap.db'}", max_cache_age=timedelta(days=7)
    )
    images["/plain.jpg"].cache_control = "max-age=604800"  # no validators, but fresh a week
    try:
        scan_subject(settings, db, NAME, pool=pool, deliver=False)
        with db.session() as s:  # cached on freshness alone
            entry = s.scalar(
                select(FetchCacheEntry).where(FetchCacheEntry.url == web.url("/plain.jpg"))
            )
            assert entry is not None and entry.etag is None and entry.fresh_until > utcnow()
        _age_checks(db, timedelta(hours=2))
        settings.fetch = settings.fetch.model_copy(update={"max_cache_age": timedelta(hours=1)})
        again = scan_subject(settings, db, NAME, pool=pool, deliver=False)
        assert again.images_fresh == 0 and images["/plain.jpg"].full == 2
    finally:
        db.dispose()
