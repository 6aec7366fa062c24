"""Videos and animations in a whole scan: found on pages, sampled, matched frame by frame, and
videos enrolled as references. Everything is served from loopback; media are made in code."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from PIL import Image

from monitor import store
from monitor.cli import main
from monitor.config import Settings
from monitor.db import Database
from monitor.db.models import Reference, ReferenceHash, Subject
from monitor.demo.photos import generate_photo
from monitor.demo.transforms import encode
from monitor.enrol import enrol_images, enrol_paths
from monitor.pipeline import scan_subject
from monitor.testing.searxng import FakeSearxng
from monitor.testing.web import LoopbackWeb
from monitor.types import HashValue, ImageHashes, MatchResult
from tests.conftest import loopback_settings
from tests.test_video import SIZE, make_animation, make_video

NAME = "Jane Example"


def _photo(seed: int) -> Image.Image:
    return generate_photo(seed, SIZE)


def _png(im: Image.Image) -> bytes:
    return encode(im, "PNG")


def _world(tmp_path: Path, web: LoopbackWeb, files: dict[str, tuple[bytes, str]], html: str):
    """A page holding ``html`` at a public-looking loopback address, found by searching the
    name; ``files`` are served beside it. Returns (settings, db, page URL)."""
    for path, (body, content_type) in files.items():
        web.add(path, body, content_type)
    page_url = web.add("/post.html", f"<html><body>{html}</body></html>")
    web.add("/robots.txt", "", "text/plain")
    fake = FakeSearxng()
    fake.add_result(NAME, "general", {"url": page_url, "title": "a post", "engine": "fake"})
    settings = loopback_settings(tmp_path, fake.install(web))
    settings.cases.screenshots = False
    settings.cases.capture_evidence = False  # tests/test_cases.py covers evidence
    return settings, Database(settings.database_url, key_file=settings.key_path), page_url


def _subject(db: Database, settings: Settings):
    with db.session() as s:
        return store.add_subject(s, NAME, interval=settings.schedule.default_interval).id


def _matches(db: Database) -> dict[str, store.MatchRow]:
    with db.session() as s:
        return {r.image_url.rsplit("/", 1)[-1]: r for r in store.list_matches(s, NAME)}


def test_animations_and_videos_on_a_page_match_on_the_frame_that_shows_the_photo(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    in_gif, in_clip = _photo(1), _photo(2)
    # (a) the photo is the 3rd frame of an animated GIF; a still decoder sees only the 1st.
    gif = make_animation([_photo(10), _photo(11), in_gif, _photo(12)], "GIF", duration_ms=500)
    # (b) a clip that shows the photo from second 2 on; (c) a clip of unrelated scenes.
    clip = make_video([(_photo(13), 2.0), (in_clip, 2.0)], fmt="mp4")
    other = make_video([(_photo(14), 1.5), (_photo(15), 1.5)], fmt="webm")
    html = """<img src="/anim.gif">
        <video poster="/poster.jpg"><source src="/clip.mp4" type="video/mp4"></video>
        <video src="/other.webm"></video>"""
    files = {
        "/anim.gif": (gif, "image/gif"),
        "/clip.mp4": (clip, "video/mp4"),
        "/other.webm": (other, "video/webm"),
        "/poster.jpg": (encode(_photo(16), "JPEG", 90), "image/jpeg"),
    }
    with LoopbackWeb() as web:
        settings, db, page_url = _world(tmp_path, web, files, html)
        subject_id = _subject(db, settings)
        with db.session() as s:
            subject = s.get(Subject, subject_id)
            report = enrol_images(
                s, subject, [("gif.png", _png(in_gif)), ("clip.png", _png(in_clip))]
            )
        assert report.enrolled == 2 and not report.errors

        summary = scan_subject(settings, db, NAME, deliver=False)

    assert summary.status == "completed", summary.error_samples
    assert summary.errors == 0, summary.error_samples
    assert summary.images == 4  # the poster is still fetched as an image
    found = _matches(db)
    assert set(found) == {"anim.gif", "clip.mp4"}  # not other.webm, not the poster
    assert found["anim.gif"].frame_offset == pytest.approx(1.0)  # 3rd frame, 500 ms each
    assert found["clip.mp4"].frame_offset == pytest.approx(2.0, abs=0.15)
    assert all(r.page_url == page_url and r.reference_offset is None for r in found.values())

    # `matches --json` gives the offsets; the table says where in the video.
    config = tmp_path / "monitor.toml"
    config.write_text(f'data_dir = "{settings.data_dir}"\n')
    assert main(["--config", str(config), "matches", "--json"]) == 0
    rows = {r["image_url"].rsplit("/", 1)[-1]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["clip.mp4"]["frame_offset"] == pytest.approx(2.0, abs=0.15)
    assert rows["anim.gif"]["frame_offset"] == pytest.approx(1.0)
    assert main(["--config", str(config), "matches"]) == 0
    table = capsys.readouterr().out
    assert "at 2 s" in table and "at 1 s" in table
    db.dispose()


def test_an_enrolled_video_matches_a_still_of_one_of_its_frames(tmp_path: Path) -> None:
    opening, scene = _photo(3), _photo(4)
    video = tmp_path / "mine.mp4"
    video.write_bytes(make_video([(opening, 2.0), (scene, 2.0)], fmt="mp4"))
    still = encode(scene.resize((480, 360)), "JPEG", 80)  # a screenshot of second 3, resized
    html = '<img src="/still.jpg"><img src="/unrelated.jpg">'
    files = {
        "/still.jpg": (still, "image/jpeg"),
        "/unrelated.jpg": (encode(_photo(17), "JPEG", 90), "image/jpeg"),
    }
    with LoopbackWeb() as web:
        settings, db, _ = _world(tmp_path, web, files, html)
        subject_id = _subject(db, settings)
        with db.session() as s:
            subject = s.get(Subject, subject_id)
            report = enrol_paths(s, subject, [video])
            again = enrol_paths(s, subject, [video])
        assert report.enrolled == 1 and not report.errors and not report.low_quality
        assert again.duplicates == 1 and again.enrolled == 0
        with db.session() as s:
            (ref,) = s.query(Reference).all()
            offsets = {h.frame_offset for h in s.query(ReferenceHash)}
        assert ref.origin == "video"
        assert {0.0, 2.0} <= offsets <= {0.0, 1.0, 2.0, 3.0}  # a frame a second

        summary = scan_subject(settings, db, NAME, deliver=False)

    assert summary.status == "completed", summary.error_samples
    found = _matches(db)
    assert set(found) == {"still.jpg"}
    row = found["still.jpg"]
    assert row.frame_offset is None  # a photo was found...
    assert row.reference_offset is not None and row.reference_offset >= 2.0  # ...of the scene
    db.dispose()


def test_a_garbage_video_is_a_readable_error_not_a_failed_enrolment(tmp_path: Path) -> None:
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(300))
    photo = tmp_path / "me.png"
    photo.write_bytes(_png(_photo(5)))
    settings = Settings(data_dir=tmp_path / "data")
    db = Database(settings.database_url, key_file=settings.key_path)
    with db.session() as s:
        subject = store.add_subject(s, NAME, interval=timedelta(days=1))
        report = enrol_paths(s, subject, [bad, photo])
    assert report.enrolled == 1
    assert len(report.errors) == 1 and "broken.mp4: not a decodable video" in report.errors[0]
    db.dispose()


def test_frame_offsets_are_stored_with_the_match(database_url: str) -> None:
    db = Database(database_url)
    with db.session() as s:
        subject = store.add_subject(s, NAME, interval=timedelta(days=1))
        ref = Reference(subject=subject, origin="video", content_sha256="ab" * 32)
        ref.hashes = [ReferenceHash(algorithm="pdq", value="0f" * 32, frame_offset=40.0)]
        s.add(ref)
        s.flush()
        scan_id = store.start_scan(s, subject.id).id
        (record,) = store.reference_records(s, subject.id)
        assert record.offset == 40.0
        hashes = ImageHashes("cd" * 32, 320, 240, (HashValue("pdq", "0f" * 32, 90),))
        seen = store.SeenImage(
            "https://p.example/post",
            "https://p.example/clip.mp4",
            hashes,
            MatchResult(ref.id, "pdq", 3, 52),
            frame_offset=12.0,
            reference_offset=40.0,
        )
        store.record_images(s, subject, scan_id, [seen])
    with db.session() as s:
        (row,) = store.list_matches(s, NAME)
    assert row.as_json()["frame_offset"] == 12.0 and row.reference_offset == 40.0
    db.dispose()
