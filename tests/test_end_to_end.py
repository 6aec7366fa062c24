"""A whole scan against a loopback web and a loopback SMTP server, with real photos."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import httpx
import pytest
from PIL import Image

from monitor import store
from monitor.db import Database
from monitor.demo.transforms import encode
from monitor.demo.web import build_web
from monitor.enrol import enrol_paths
from monitor.pipeline import scan_subject
from monitor.testing.smtp import LoopbackSMTP
from monitor.testing.web import LoopbackWeb
from tests.conftest import corpus_files, loopback_settings

NAME = "Jane Example"
ALIAS = "J. Example"


@cache  # (both tests serve the same distractors: decode and shrink the photos once)
def _jpeg(path: Path, max_side: int = 900) -> bytes:
    im = Image.open(path).convert("RGB")
    im.thumbnail((max_side, max_side))
    return encode(im, "JPEG", 90)


@pytest.fixture
def world(tmp_path: Path):
    refs = corpus_files("reference", 5)
    distractors = corpus_files("distractors", 40)
    with LoopbackWeb() as web, LoopbackSMTP(tmp_path / "maildir") as smtp:
        demo = build_web(
            web,
            subject_names=[NAME, ALIAS],
            references=[p.read_bytes() for p in refs],
            distractors=[_jpeg(p) for p in distractors],
            edits=("resize_half", "recompress_q50"),
            pages=6,
            images_per_page=8,
        )
        settings = loopback_settings(
            tmp_path, demo.searxng_url, smtp_host="127.0.0.1", smtp_port=smtp.port, starttls=False
        )
        settings.cases.screenshots = False  # ~5 s each; tests/test_cases.py covers them
        db = Database(settings.database_url, key_file=settings.key_path)
        with db.session() as s:
            subject = store.add_subject(
                s,
                NAME,
                aliases=[ALIAS],
                email="person@example.org",
                interval=settings.schedule.default_interval,
            )
            report = enrol_paths(s, subject, refs)
        assert report.enrolled == len(refs) and not report.errors
        yield settings, db, demo, smtp
        db.dispose()


def test_scan_finds_every_edited_copy_and_no_distractor(world) -> None:
    settings, db, demo, smtp = world
    summary = scan_subject(settings, db, NAME)

    assert summary.status == "completed"
    with db.session() as s:
        rows = store.list_matches(s, NAME)
    matched_urls = {r.image_url for r in rows}
    planted_urls = {p.image_url for p in demo.planted}
    assert planted_urls, "the test web holds no planted copies"
    assert planted_urls <= matched_urls, f"missed: {sorted(planted_urls - matched_urls)}"
    assert not matched_urls & set(demo.distractors), "a distractor matched"
    assert all(r.distance <= (31 if r.algorithm == "pdq" else 10) for r in rows)
    assert summary.images >= len(planted_urls) + len(demo.distractors) // 2

    # Exactly one discreet alert for the new matches: no image, no name, no URL.
    assert len(smtp.messages) == 1
    msg = smtp.messages[0]
    assert msg["To"] == "person@example.org"
    assert not any(part.get_content_maintype() == "image" for part in msg.walk())
    assert not msg.is_multipart() or all(not p.get_filename() for p in msg.walk())
    text = msg.as_string().replace("http://127.0.0.1:8765/cases", "")  # the tool's own page
    for secret in (NAME, ALIAS, "Jane", "Example", "http://", "https://", demo.web.base_url):
        assert secret not in text, f"{secret!r} leaked into the alert"
    assert str(len(rows)) in msg.get_content()

    # A second scan of the same web reports nothing new and sends nothing.
    again = scan_subject(settings, db, NAME)
    assert again.new_sightings == 0 and again.new_matches == 0
    assert len(smtp.messages) == 1
    with db.session() as s:
        assert len(store.list_matches(s, NAME)) == len(rows)


@pytest.mark.sqlite_default  # looks for image bytes in the SQLite file too
def test_found_images_are_never_written_to_disk(world, tmp_path: Path) -> None:
    settings, db, demo, _smtp = world
    scan_subject(settings, db, NAME)
    # Slices from the middle of every image the web served (planted copies and distractors).
    urls = [p.image_url for p in demo.planted] + list(demo.distractors)
    needles = [body[len(body) // 2 : len(body) // 2 + 64] for body in map(_get, urls)]
    files = [p for p in tmp_path.rglob("*") if p.is_file() and "maildir" not in p.parts]
    assert any(p.suffix == ".db" for p in files)
    for path in files:
        data = path.read_bytes()
        for needle in needles:
            assert needle not in data, f"found image bytes in {path}"


def _get(url: str) -> bytes:
    return httpx.get(url).raise_for_status().content
