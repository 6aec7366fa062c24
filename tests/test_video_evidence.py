"""Evidence for a video case: the WARC records the video's exchange with its payload withheld,
and a metadata record with its SHA-256, size, content type and the hashes of every sampled frame
with its time offset (the matched one marked). No byte of the video, and no frame, is written
anywhere. Everything is served from loopback; the video is made in code."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import zipfile
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from warcio.archiveiterator import ArchiveIterator

from monitor import cases, store
from monitor.config import FetchConfig, Settings
from monitor.db import Database
from monitor.db.models import Match
from monitor.demo.photos import generate_photo
from monitor.demo.transforms import encode
from monitor.enrol import enrol_images
from monitor.evidence import fetch_and_capture_warc
from monitor.hashing import compute_hashes, hamming
from monitor.pipeline import scan_subject
from monitor.testing.searxng import FakeSearxng
from monitor.testing.web import LoopbackWeb
from tests.test_video import LONG_SIZE, make_long_video

NAME = "Eve Evidence"


def _records(warc: bytes) -> list[tuple[str, str, dict[str, str], dict[str, str], bytes]]:
    """(type, target URI, WARC headers, HTTP headers, payload) of every record, digests
    checked."""
    out = []
    for rec in ArchiveIterator(io.BytesIO(warc), check_digests="raise"):
        headers = dict(rec.rec_headers.headers)
        http = dict(rec.http_headers.headers) if rec.http_headers else {}
        payload = rec.content_stream().read()
        out.append((rec.rec_type, headers.get("WARC-Target-URI", ""), headers, http, payload))
    return out


def _windows(body: bytes) -> list[bytes]:
    """64-byte pieces from all over ``body``, none of which may be found in the evidence."""
    return [body[at : at + 64] for at in range(256, len(body) - 64, max(len(body) // 40, 1))]


@pytest.fixture(scope="module")
def clip() -> tuple[bytes, bytes]:
    """A 100 s video showing the person's photo only from 88 s to 93 s, and that photo."""
    photo = generate_photo(51, LONG_SIZE)
    return make_long_video(photo, at=88.0, lasting=5.0, seconds=100.0), encode(photo, "PNG")


def test_a_video_case_evidence_holds_its_frame_hashes_and_no_media_bytes(
    tmp_path: Path, clip: tuple[bytes, bytes]
) -> None:
    video, photo = clip
    with LoopbackWeb() as web:
        search = FakeSearxng()
        settings = Settings(
            data_dir=tmp_path / "data",
            search={"backends": [{"kind": "searxng", "url": search.install(web)}]},
            fetch={"allow_private_networks": True, "timeout": 10},
            cases={
                "capture_evidence": True,
                "screenshots": False,
                "rdap_domain_url": "",
                "rdap_ip_url": "",
            },
        )
        web.add("/media/clip.webm", video, "video/webm")
        web.add("/robots.txt", "", "text/plain")
        page = web.add("/post.html", '<html><body><video src="/media/clip.webm"></video></body>')
        search.add_result(NAME, "general", {"url": page, "title": "a post"})
        db = Database(settings.database_url, key_file=settings.key_path)
        try:
            with db.session() as s:
                subject = store.add_subject(s, NAME, interval=timedelta(days=1))
                subject.keep_image_copies = True  # even so, no copy of a video is kept
                assert enrol_images(s, subject, [("me.png", photo)]).enrolled == 1
            summary = scan_subject(settings, db, NAME, deliver=False)
            assert summary.new_matches == 1 and summary.evidence_captured == 1, summary
            with db.session() as s:
                case = s.scalars(select(Match)).one()
                case_id, matched_at = case.id, case.frame_offset
                (sighting,) = cases.case_detail(s, settings, case_id).sightings
            assert matched_at is not None and 88.0 <= matched_at < 93.0
            assert sighting.evidence_status == "captured", sighting.evidence_error
            assert [f["kind"] for f in sighting.evidence_files] == ["warc"]  # no image copy
            bundle = cases.export_bundle(settings, db, case_id, tmp_path / "case.zip")
        finally:
            db.dispose()

    clip_url = web.url("/media/clip.webm")
    with zipfile.ZipFile(bundle.path) as z:
        members = {name: z.read(name) for name in z.namelist()}
    (warc_name,) = [n for n in members if n.startswith("warc/")]
    records = _records(members[warc_name])
    (response,) = [r for r in records if r[0] == "response" and r[1] == clip_url]
    assert response[3]["Content-Type"] == "video/webm" and response[4] == b""  # as served
    assert response[2]["WARC-Truncated"] == "unspecified"
    assert "video payload withheld" in response[2]["Exposure-Monitor-Withheld"]
    (meta,) = [json.loads(r[4]) for r in records if r[0] == "metadata" and r[1] == clip_url]
    assert meta["withheld"] is True and meta["kind"] == "video"
    assert meta["sha256"] == hashlib.sha256(video).hexdigest() and meta["length"] == len(video)
    assert meta["content_type"] == "video/webm"
    frames = meta["frames"]
    offsets = [f["offset"] for f in frames]
    assert 50 <= len(frames) <= 60 and offsets == sorted(offsets) and offsets[-1] >= 95.0
    assert all({"pdq", "phash"} <= set(f["hashes"]) for f in frames)
    # The frame the case matched is marked, and its PDQ is the person's photo.
    (matched,) = [f for f in frames if f.get("matched")]
    assert matched["offset"] == pytest.approx(matched_at) and meta["matched_offset"] == matched_at
    ref = compute_hashes(photo).get("pdq")
    assert ref is not None and hamming(matched["hashes"]["pdq"]["value"], ref.value) <= 31

    # No piece of the video anywhere: not in the bundle (WARC unpacked), not in the data folder.
    unpacked = [gzip.decompress(b) if n.endswith(".gz") else b for n, b in members.items()]
    on_disk = [
        gzip.decompress(p.read_bytes()) if p.name.endswith(".gz") else p.read_bytes()
        for p in settings.data_dir.rglob("*")
        if p.is_file()
    ]
    for piece in _windows(video):
        assert not any(piece in blob for blob in unpacked + on_disk)


async def test_a_video_not_linked_as_one_is_fetched_again_as_a_video(
    tmp_path: Path, clip: tuple[bytes, bytes]
) -> None:
    """A URL that does not look like a video (an image link, no extension) but is served as
    one: the refused image request is recorded, then the video is hashed like a video."""
    video, _ = clip
    with LoopbackWeb() as web:
        web.add("/m/12345", video, "video/webm")
        page = web.add("/p.html", '<html><body><img src="/m/12345"></body></html>')
        capture = await fetch_and_capture_warc(
            FetchConfig(allow_private_networks=True, respect_robots=False),
            page,
            web.url("/m/12345"),
            tmp_path / "ev.warc.gz",
            matched_offset=None,
        )
    assert capture.image_error is None and capture.image is not None
    withheld = capture.image.withheld
    assert withheld is not None and withheld.kind == "video" and len(withheld.frames) >= 50
    records = _records(capture.warc.path.read_bytes())
    responses = [r for r in records if r[0] == "response" and r[1].endswith("/m/12345")]
    assert len(responses) == 2  # the image request refused, then the video request
    assert all(piece not in r[4] for r in records for piece in _windows(video))
