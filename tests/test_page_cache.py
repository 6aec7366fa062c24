"""The page cache: a rescan asks for known pages conditionally (ETag / Last-Modified) or, while
the server says they stay fresh, not at all, and reuses the image URLs found on them; the cache
keeps URLs and validators only, never a page, and is erased with the people it was found for."""

from __future__ import annotations

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
from monitor.db.models import Base, FetchErrorRecord, PageCacheEntry, Sighting
from monitor.demo.photos import photo_bytes
from monitor.demo.transforms import decode, encode, resize
from monitor.enrol import enrol_images
from monitor.pipeline import ScanSummary, hashing_pool, scan_subject
from monitor.testing.searxng import FakeSearxng
from monitor.testing.web import LoopbackWeb, Request, Response, Validated
from monitor.types import HashValue, ImageCandidate, ImageHashes
from tests.conftest import loopback_settings

NAME = "Pat Pagecache"
OTHER = "Kim Othersubject"
PADDING = "<!-- " + "page text that is never stored " * 800 + "-->"  # about 25 KB


class ServedPage(Validated):
    """An HTML page the test web serves, with validators it honours, counting its answers."""

    def __init__(
        self,
        images: list[str],
        *,
        etag: str | None = None,
        modified: str | None = None,
        cache_control: str | None = None,
    ) -> None:
        super().__init__(
            b"",
            "text/html; charset=utf-8",
            etag=etag,
            modified=modified,
            cache_control=cache_control,
        )
        self.images = images

    def current_body(self) -> bytes:
        tags = "".join(f"<img src='{p}'>" for p in self.images)
        return f"<html><body><h1>Pat's holiday</h1>{tags}{PADDING}</body></html>".encode()


def _image_handler(body: bytes, etag: str) -> Callable[[Request], Response]:
    return Validated(body, etag=etag).handle


class World:
    def __init__(self, tmp_path: Path, web: LoopbackWeb, searxng: str, page: ServedPage) -> None:
        self.tmp_path, self.web, self.searxng, self.page = tmp_path, web, searxng, page
        self.ref = photo_bytes(5300)
        self.robots = "User-agent: *\nAllow: /\n"

    def open(self, database_url: str, **fetch: object) -> tuple[Settings, Database]:
        settings = loopback_settings(self.tmp_path, self.searxng)
        settings.database = settings.database.model_copy(update={"url": database_url})
        settings.fetch = settings.fetch.model_copy(update=fetch)
        settings.cases = settings.cases.model_copy(update={"capture_evidence": False})
        settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        db = Database(settings.database_url, key_file=settings.key_path)
        with db.session() as s:
            subject = store.add_subject(s, NAME, interval=timedelta(days=1))
            enrol_images(s, subject, [("ref", self.ref)])
        return settings, db

    def page_requests(self) -> list[Request]:
        return [r for r in self.web.requests if r.path == "/page.html"]


@pytest.fixture(scope="module")
def pool() -> Iterator[ProcessPoolExecutor]:
    with hashing_pool(2) as p:
        yield p


@pytest.fixture
def world(tmp_path: Path) -> Iterator[Callable[..., World]]:
    """A page holding a copy of the reference and a distractor (images with an ETag)."""
    fake = FakeSearxng()
    with LoopbackWeb() as web:
        url = fake.install(web)
        made: list[World] = []
        ref = photo_bytes(5300)
        web.route("/copy.jpg", _image_handler(encode(resize(decode(ref), 0.6), "JPEG", 80), '"c"'))
        web.route("/copy2.jpg", _image_handler(encode(resize(decode(ref), 0.5), "PNG"), '"c2"'))
        web.route("/other.jpg", _image_handler(photo_bytes(5301), '"o"'))
        web.route("/robots.txt", lambda _req: Response(200, made[0].robots.encode(), "text/plain"))
        fake.add_result(OTHER, "general", {"url": web.url("/page.html")})

        def make(start: str = "/page.html", **page: object) -> World:
            """``start``: the page URL the search finds (it may redirect to the page)."""
            fake.add_result(NAME, "general", {"url": web.url(start)})
            served = ServedPage(["/copy.jpg", "/other.jpg"], **page)  # type: ignore[arg-type]
            web.route("/page.html", served.handle)
            made.append(World(tmp_path, web, url, served))
            return made[-1]

        yield make


def _scan(settings: Settings, db: Database, pool: ProcessPoolExecutor) -> ScanSummary:
    return scan_subject(settings, db, NAME, pool=pool, deliver=False)


def _sightings(db: Database) -> set[tuple[str, str]]:
    with db.session() as s:
        return {(r.page_url, r.image_url) for r in s.scalars(select(Sighting))}


def test_an_unchanged_page_is_asked_for_conditionally_and_not_downloaded_again(
    world: Callable[..., World], database_url: str, pool: ProcessPoolExecutor
) -> None:
    w = world(etag='"p1"')
    settings, db = w.open(database_url)
    try:
        first = _scan(settings, db, pool)
        assert w.page.full == 1 and first.pages == 1 and first.pages_unchanged == 0
        assert first.new_matches == 1 and first.new_sightings == 1 and first.alerts_queued == 1
        assert first.bytes_downloaded > len(PADDING)
        seen = _sightings(db)

        second = _scan(settings, db, pool)
        # Asked with the page's ETag; the 304 had no body, and the images found on it the first
        # time were looked at again (all 304 too).
        assert w.page_requests()[-1].headers.get("if-none-match") == '"p1"'
        assert (w.page.full, w.page.not_modified) == (1, 1)
        assert (second.pages, second.pages_unchanged, second.pages_fresh) == (1, 1, 0)
        assert second.bytes_downloaded < len(PADDING)
        assert (second.images, second.images_unchanged, second.images_hashed) == (2, 2, 0)
        # The same match, the same places: nothing new, nothing alerted twice.
        assert second.matches == 1 and second.new_matches == 0 and second.new_sightings == 0
        assert second.alerts_queued == 0 and second.errors == 0
        assert _sightings(db) == seen
    finally:
        db.dispose()


def test_a_page_with_last_modified_only_is_asked_with_if_modified_since(
    world: Callable[..., World], tmp_path: Path, pool: ProcessPoolExecutor
) -> None:
    when = "Wed, 01 May 2024 12:00:00 GMT"
    w = world(modified=when)
    settings, db = w.open(f"sqlite:///{tmp_path / 'lm.db'}")
    try:
        _scan(settings, db, pool)
        second = _scan(settings, db, pool)
        assert w.page_requests()[-1].headers.get("if-modified-since") == when
        assert w.page.full == 1 and second.pages_unchanged == 1 and second.matches == 1
    finally:
        db.dispose()


def test_a_changed_page_is_read_again_and_its_new_image_found(
    world: Callable[..., World], database_url: str, pool: ProcessPoolExecutor
) -> None:
    w = world(etag='"p1"')
    settings, db = w.open(database_url)
    try:
        _scan(settings, db, pool)
        # The page now shows a second copy of the person, under a new ETag.
        w.page.images = ["/copy.jpg", "/copy2.jpg", "/other.jpg"]
        w.page.etag = '"p2"'
        second = _scan(settings, db, pool)
        assert w.page_requests()[-1].headers.get("if-none-match") == '"p1"'  # the old one
        assert (w.page.full, w.page.not_modified) == (2, 0)
        assert second.pages_unchanged == 0 and second.images == 3
        assert second.new_sightings == 1 and second.alerts_queued == 1
        assert (w.web.url("/page.html"), w.web.url("/copy2.jpg")) in _sightings(db)
        with db.session() as s:
            entry = s.scalar(select(PageCacheEntry))
            assert entry is not None and entry.etag == '"p2"'
            assert w.web.url("/copy2.jpg") in entry.candidates

        third = _scan(settings, db, pool)  # and the new list is what is reused next
        assert w.page.not_modified == 1 and third.images == 3 and third.new_sightings == 0
    finally:
        db.dispose()


def _age_pages(db: Database, by: timedelta) -> None:
    """Pretend the page cache entries were stored ``by`` earlier."""
    with db.session() as s:
        for entry in s.scalars(select(PageCacheEntry)):
            entry.fetched_at -= by
            if entry.fresh_until is not None:
                entry.fresh_until -= by


def test_a_fresh_page_is_not_asked_for_at_all(
    world: Callable[..., World], database_url: str, pool: ProcessPoolExecutor
) -> None:
    w = world(etag='"p1"', cache_control="public, max-age=86400")
    settings, db = w.open(database_url, max_cache_age=timedelta(hours=1))
    try:
        first = _scan(settings, db, pool)
        assert first.new_matches == 1
        with db.session() as s:
            before = s.scalar(select(Sighting.last_seen).where(Sighting.image_url.like("%copy%")))

        second = _scan(settings, db, pool)
        assert len(w.page_requests()) == 1  # only the first scan's
        assert (second.pages, second.pages_unchanged, second.pages_fresh) == (1, 1, 1)
        assert second.matches == 1 and second.new_sightings == 0 and second.alerts_queued == 0
        with db.session() as s:
            after = s.scalar(select(Sighting.last_seen).where(Sighting.image_url.like("%copy%")))
        assert after > before  # seen again

        # Past the cap (an hour, though the server said a day): asked again, conditionally.
        _age_pages(db, timedelta(hours=1, minutes=1))
        third = _scan(settings, db, pool)
        assert (w.page.full, w.page.not_modified) == (1, 1) and third.pages_fresh == 0
        # That 304 said "a day" again: fresh for another hour.
        fourth = _scan(settings, db, pool)
        assert len(w.page_requests()) == 2 and fourth.pages_fresh == 1 and fourth.matches == 1
    finally:
        db.dispose()


def test_a_page_without_validators_or_freshness_is_fetched_whole_and_not_stored(
    world: Callable[..., World], tmp_path: Path, pool: ProcessPoolExecutor
) -> None:
    w = world()
    settings, db = w.open(f"sqlite:///{tmp_path / 'plain.db'}")
    try:
        _scan(settings, db, pool)
        second = _scan(settings, db, pool)
        assert w.page.full == 2 and second.pages_unchanged == 0 and second.matches == 1
        assert not any("if-none-match" in r.headers for r in w.page_requests())
        with db.session() as s:
            assert s.scalar(select(func.count()).select_from(PageCacheEntry)) == 0
    finally:
        db.dispose()


def test_a_page_cut_at_max_images_per_page_is_not_stored(
    world: Callable[..., World], tmp_path: Path, pool: ProcessPoolExecutor
) -> None:
    """Its list may be incomplete: reusing it would hide images if the limit were raised."""
    w = world(etag='"p1"')
    settings, db = w.open(f"sqlite:///{tmp_path / 'limit.db'}", max_images_per_page=2)
    try:
        _scan(settings, db, pool)
        second = _scan(settings, db, pool)
        assert w.page.full == 2 and second.pages_unchanged == 0 and second.matches == 1
        with db.session() as s:
            assert s.scalar(select(func.count()).select_from(PageCacheEntry)) == 0
    finally:
        db.dispose()


def test_robots_txt_still_applies_to_a_conditional_page_request(
    world: Callable[..., World], tmp_path: Path, pool: ProcessPoolExecutor
) -> None:
    w = world(etag='"p1"')
    settings, db = w.open(f"sqlite:///{tmp_path / 'robots.db'}")
    try:
        _scan(settings, db, pool)
        w.robots = "User-agent: *\nDisallow: /page.html\n"
        second = _scan(settings, db, pool)
        assert len(w.page_requests()) == 1  # not asked again, not even conditionally
        assert second.pages == 0 and second.images == 0 and second.errors == 1
        with db.session() as s:
            reason = s.scalar(
                select(FetchErrorRecord.reason).where(FetchErrorRecord.stage == "page")
            )
        assert reason is not None and "robots.txt" in reason
    finally:
        db.dispose()


def test_conditional_requests_off_means_no_page_cache(
    world: Callable[..., World], tmp_path: Path, pool: ProcessPoolExecutor
) -> None:
    w = world(etag='"p1"', cache_control="max-age=86400")
    settings, db = w.open(f"sqlite:///{tmp_path / 'off.db'}", conditional_requests=False)
    try:
        _scan(settings, db, pool)
        _scan(settings, db, pool)
        assert w.page.full == 2 and not any("if-none-match" in r.headers for r in w.page_requests())
        with db.session() as s:
            assert s.scalar(select(func.count()).select_from(PageCacheEntry)) == 0
    finally:
        db.dispose()


def test_the_page_cache_holds_urls_only_and_is_erased_with_the_people_it_was_found_for(
    world: Callable[..., World], tmp_path: Path, pool: ProcessPoolExecutor
) -> None:
    w = world(etag='"p1"', cache_control="max-age=3600")
    settings, db = w.open(f"sqlite:///{tmp_path / 'erase.db'}")
    try:
        with db.session() as s:
            other = store.add_subject(s, OTHER, interval=timedelta(days=1))
            enrol_images(s, other, [("ref", photo_bytes(5302))])
        _scan(settings, db, pool)
        scan_subject(settings, db, OTHER, pool=pool, deliver=False)  # the same page, fresh
        assert w.page.full == 1
        with db.session() as s:
            (entry,) = s.scalars(select(PageCacheEntry)).all()
            assert entry.url == w.web.url("/page.html") and entry.final_url is None
            cached = store.cached_pages(s, [entry.url])[entry.url]
            assert cached.image_candidates() == [
                ImageCandidate(w.web.url("/copy.jpg"), entry.url, "img"),
                ImageCandidate(w.web.url("/other.jpg"), entry.url, "img"),
            ]
        db.dispose()
        data = (tmp_path / "erase.db").read_bytes()
        assert b"page text that is never stored" not in data and b"holiday" not in data

        db = Database(settings.database_url, key_file=settings.key_path)
        with db.session() as s:
            store.erase_subject(s, NAME)
        with db.session() as s:  # the other person's scans found it too: kept for them
            assert s.scalar(select(func.count()).select_from(PageCacheEntry)) == 1
            store.erase_subject(s, OTHER)
        with db.session() as s:
            assert s.scalar(select(func.count()).select_from(PageCacheEntry)) == 0
    finally:
        db.dispose()


def test_a_redirected_page_keeps_the_url_its_images_were_found_on(
    world: Callable[..., World], tmp_path: Path, pool: ProcessPoolExecutor
) -> None:
    w = world("/old.html", etag='"p1"', cache_control="max-age=3600")
    start = w.web.add("/old.html", b"", status=301, headers={"Location": "/page.html"})
    settings, db = w.open(f"sqlite:///{tmp_path / 'redirect.db'}")
    try:
        first = _scan(settings, db, pool)
        seen = _sightings(db)
        assert first.new_sightings == 1 and {page for page, _ in seen} == {w.web.url("/page.html")}
        with db.session() as s:
            (entry,) = s.scalars(select(PageCacheEntry)).all()
            assert (entry.url, entry.final_url) == (start, w.web.url("/page.html"))

        second = _scan(settings, db, pool)  # fresh: neither URL asked for
        assert len([r for r in w.web.requests if r.path == "/old.html"]) == 1
        assert second.pages_fresh == 1 and second.matches == 1 and second.new_sightings == 0
        assert _sightings(db) == seen
    finally:
        db.dispose()


def test_migration_matches_the_model(database_url: str) -> None:
    db = Database(database_url, key_file=None)
    try:
        with db.engine.connect() as conn:
            diffs = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        assert [d for d in diffs if "page_cache" in repr(d)] == []
        with db.session() as s:  # upserts replace; pages with nothing to ask with are dropped
            store.remember_pages(s, [store.FetchedPage("p", "p", '"a"', None, None, ())])
        with db.session() as s:
            page = store.FetchedPage("p", "q", '"b"', "then", None, (("img", "u"),))
            store.remember_pages(s, [page, store.FetchedPage("r", "r", None, None, None, ())])
        with db.session() as s:
            cached = store.cached_pages(s, ["p", "r"])
            assert list(cached) == ["p"]
            assert (cached["p"].etag, cached["p"].last_modified) == ('"b"', "then")
            assert cached["p"].final_url == "q" and cached["p"].candidates == (("img", "u"),)
            store.remember_pages(s, [store.FetchedPage("p", "q", None, None, None, ())])
        with db.session() as s:
            assert store.cached_pages(s, ["p"]) == {}
            # Erasure keeps the pages a sighting holds (by where their images were found).
            store.remember_pages(
                s,
                [
                    store.FetchedPage("a", "b", '"x"', None, None, ()),
                    store.FetchedPage("c", "c", '"y"', None, None, ()),
                ],
            )
            subject = store.add_subject(s, NAME, interval=timedelta(days=1))
            hashes = ImageHashes("ab" * 32, 10, 20, (HashValue("pdq", "0" * 64, 90),))
            scan_id = store.start_scan(s, subject.id).id
            store.record_images(s, subject, scan_id, [store.SeenImage("b", "u", hashes, None)])
            assert store.forget_orphan_page_cache(s) == 1
        with db.session() as s:
            assert list(store.cached_pages(s, ["a", "c"])) == ["a"]
    finally:
        db.dispose()
