"""Videos and animations in the fetch cache: an unchanged one is matched again on its stored
frame hashes, without being downloaded or decoded (HTTP 304, or not asked for while fresh),
and the same match is reported once. Everything is served from loopback; media made in code."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from datetime import timedelta
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import func, select

from monitor import store
from monitor.db import Database
from monitor.db.models import (
    Base,
    FetchCacheEntry,
    Image,
    Match,
    MediaFrames,
    OutboxMessage,
    Sighting,
)
from monitor.demo.photos import generate_photo
from monitor.demo.transforms import encode
from monitor.enrol import enrol_images
from monitor.pipeline import hashing_pool, scan_subject
from monitor.testing.searxng import FakeSearxng
from monitor.testing.web import LoopbackWeb
from monitor.testing.web import Validated as Served
from monitor.types import HashValue, ImageHashes
from monitor.video import FrameHashes
from tests.conftest import loopback_settings
from tests.test_video import LONG_SIZE, SIZE, make_animation, make_long_video

NAME = "Vic Video"


@pytest.fixture(scope="module")
def pool() -> Iterator[ProcessPoolExecutor]:
    with hashing_pool(2) as p:
        yield p


@pytest.fixture(scope="module")
def media() -> dict[str, bytes]:
    in_clip, in_gif = generate_photo(41, LONG_SIZE), generate_photo(42, SIZE)
    return {
        # a 100 s clip showing the person's photo only from 88 s to 93 s
        "clip": make_long_video(in_clip, at=88.0, lasting=5.0, seconds=100.0),
        "clip_ref": encode(in_clip, "PNG"),
        # the photo as the 3rd frame of an animated GIF (500 ms a frame)
        "gif": make_animation(
            [generate_photo(s, SIZE) for s in (43, 44)] + [in_gif, generate_photo(45, SIZE)],
            "GIF",
        ),
        "gif_ref": encode(in_gif, "PNG"),
    }


def _world(tmp_path: Path, web: LoopbackWeb, database_url: str, served: dict[str, Served]):
    fake = FakeSearxng()
    url = fake.install(web)
    for path, item in served.items():
        web.route(path, item.handle)
    # The clip a second time, at a URL without validators: known by its bytes next time.
    web.add("/copy.webm", served["/clip.webm"].body, "video/webm")
    html = '<video src="/clip.webm"></video><img src="/anim.gif"><video src="/copy.webm"></video>'
    fake.add_result(NAME, "general", {"url": web.add("/post.html", f"<html><body>{html}</body>")})
    web.add("/robots.txt", "", "text/plain")
    settings = loopback_settings(tmp_path, url)
    settings.database = settings.database.model_copy(update={"url": database_url})
    settings.cases = settings.cases.model_copy(update={"capture_evidence": False})
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    return settings, Database(settings.database_url, key_file=settings.key_path)


def _enrol(db: Database, media: dict[str, bytes]) -> None:
    with db.session() as s:
        subject = store.add_subject(s, NAME, interval=timedelta(days=1))
        report = enrol_images(s, subject, [("c", media["clip_ref"]), ("g", media["gif_ref"])])
        assert report.enrolled == 2


def _offsets(db: Database) -> dict[str, float | None]:
    with db.session() as s:
        return {r.image_url.rsplit("/", 1)[-1]: r.frame_offset for r in store.list_matches(s)}


def _count(db: Database, model: type) -> int:
    with db.session() as s:
        return int(s.scalar(select(func.count()).select_from(model)) or 0)


def test_an_unchanged_video_is_matched_again_without_being_downloaded(
    tmp_path: Path, database_url: str, media: dict[str, bytes], pool: ProcessPoolExecutor
) -> None:
    served = {
        "/clip.webm": Served(media["clip"], "video/webm", etag='"c1"'),
        "/anim.gif": Served(media["gif"], "image/gif", etag='"g1"'),
    }
    with LoopbackWeb() as web:
        settings, db = _world(tmp_path, web, database_url, served)
        try:
            _enrol(db, media)
            first = scan_subject(settings, db, NAME, pool=pool, deliver=False)
            assert first.status == "completed" and first.errors == 0, first.error_samples
            # Matched on the frame near the end of the clip, and on the GIF's 3rd frame.
            found = _offsets(db)
            assert set(found) == {"clip.webm", "copy.webm", "anim.gif"}
            assert 88.0 <= (found["clip.webm"] or 0) < 93.0
            assert found["anim.gif"] == pytest.approx(1.0)
            assert first.matches == 2 and first.new_matches == 2 and first.new_sightings == 3
            assert first.images_hashed == 2  # the copy's bytes were hashed once
            alerts = _count(db, OutboxMessage)

            second = scan_subject(settings, db, NAME, pool=pool, deliver=False)
            assert second.status == "completed" and second.errors == 0, second.error_samples
            # Asked for with their ETag, answered 304: not downloaded again, not decoded.
            for item in served.values():
                assert (item.full, item.not_modified) == (1, 1)
            last = [r for r in web.requests if r.path == "/clip.webm"][-1]
            assert last.headers.get("if-none-match") == '"c1"'
            # The copy (no validators) was downloaded, but known by its bytes: not decoded.
            assert second.images_hashed == 0 and second.images_unchanged == 2
            assert second.bytes_downloaded < first.bytes_downloaded - len(media["clip"])
            # Still matched, on the same frames, and reported once: nothing new, no alert.
            assert second.matches == 2 and second.new_matches == 0
            assert second.new_sightings == 0 and second.alerts_queued == 0
            assert _offsets(db) == found
            assert _count(db, Match) == 2 and _count(db, OutboxMessage) == alerts

            # The clip changes (a new ETag, other bytes): downloaded and sampled again.
            served["/clip.webm"].body = media["clip"][: len(media["clip"]) // 2]
            served["/clip.webm"].etag = '"c2"'
            third = scan_subject(settings, db, NAME, pool=pool, deliver=False)
            assert served["/clip.webm"].full == 2 and third.images_hashed == 1
            assert third.new_matches == 0  # its first half does not show the photo
        finally:
            db.dispose()


def test_a_fresh_video_is_not_even_asked_for(
    tmp_path: Path, media: dict[str, bytes], pool: ProcessPoolExecutor
) -> None:
    served = {
        "/clip.webm": Served(
            media["clip"], "video/webm", etag=None, cache_control="public, max-age=3600"
        ),
        "/anim.gif": Served(media["gif"], "image/gif", etag='"g1"', cache_control="max-age=3600"),
    }
    with LoopbackWeb() as web:
        settings, db = _world(tmp_path, web, f"sqlite:///{tmp_path / 'fresh.db'}", served)
        try:
            _enrol(db, media)
            first = scan_subject(settings, db, NAME, pool=pool, deliver=False)
            assert first.new_matches == 2
            second = scan_subject(settings, db, NAME, pool=pool, deliver=False)
            assert all((s.full, s.not_modified) == (1, 0) for s in served.values())
            assert second.images_fresh == 2 and second.images_hashed == 0
            assert second.matches == 2 and second.new_matches == 0 and second.new_sightings == 0
            assert 88.0 <= (_offsets(db)["clip.webm"] or 0) < 93.0
        finally:
            db.dispose()


def test_the_frame_cache_holds_hashes_only_and_erasure_removes_it(
    tmp_path: Path, media: dict[str, bytes], pool: ProcessPoolExecutor
) -> None:
    served = {
        "/clip.webm": Served(media["clip"], "video/webm", etag='"c1"'),
        "/anim.gif": Served(media["gif"], "image/gif", etag='"g1"'),
    }
    with LoopbackWeb() as web:
        settings, db = _world(tmp_path, web, f"sqlite:///{tmp_path / 'erase.db'}", served)
        try:
            _enrol(db, media)
            scan_subject(settings, db, NAME, pool=pool, deliver=False)
            with db.session() as s:
                shas = set(
                    s.scalars(
                        select(Image.sha256).join(MediaFrames, MediaFrames.image_id == Image.id)
                    )
                )
                assert shas == {hashlib.sha256(served[p].body).hexdigest() for p in served}
                assert _count(db, FetchCacheEntry) == 2
            db.dispose()
            # Neither the media nor any frame is in the database file: only hashes.
            stored = b"".join(p.read_bytes() for p in tmp_path.glob("erase.db*"))
            for item in served.values():
                for at in (len(item.body) // 3, len(item.body) // 2):
                    assert item.body[at : at + 64] not in stored
            db = Database(settings.database_url, key_file=settings.key_path)
            with db.session() as s:
                store.erase_subject(s, NAME)
            for model in (MediaFrames, FetchCacheEntry, Sighting, Image):
                assert _count(db, model) == 0, model
        finally:
            db.dispose()


def test_migration_matches_the_model_and_frames_round_trip(database_url: str) -> None:
    db = Database(database_url, key_file=None)
    try:
        with db.engine.connect() as conn:
            diffs = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        assert [d for d in diffs if "media_frames" in repr(d)] == []
        sha = "ab" * 32
        frame = ImageHashes(
            sha, 64, 48, (HashValue("pdq", "0f" * 32, 90), HashValue("phash", "1" * 16))
        )
        frames = (FrameHashes(0.0, frame), FrameHashes(61.5, frame))
        with db.session() as s:
            subject = store.add_subject(s, NAME, interval=timedelta(days=1))
            both = {sha: frames, "cd" * 32: frames}
            assert store.remember_frames(s, both) == both  # no image rows yet: kept for later
            store.record_images(
                s,
                subject,
                store.start_scan(s, subject.id).id,
                [store.SeenImage("p", "u", frame, None)],
            )
            assert store.remember_frames(s, both) == {"cd" * 32: frames}
            store.remember_frames(s, {sha: frames})  # again: replaced, not a conflict
        with db.session() as s:
            assert store.known_frames(s, [sha, "cd" * 32]) == {sha: frames}
    finally:
        db.dispose()
