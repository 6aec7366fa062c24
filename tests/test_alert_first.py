"""Alert first, evidence after: the alert of a scan is delivered before any evidence is
captured, a capture that hangs or fails cannot hold it back, evidence is counted per part
(web archives, screenshots), and a matched page is archived as the scan received it."""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from rich.console import Console
from warcio.archiveiterator import ArchiveIterator

from monitor import alerts, cases, evidence, store
from monitor.cases import capture
from monitor.cli import main
from monitor.config import Settings
from monitor.db import Database
from monitor.demo.photos import photo_bytes
from monitor.enrol import enrol_images
from monitor.pipeline import run_scan, scan_subject
from monitor.testing.searxng import FakeSearxng
from monitor.testing.smtp import LoopbackSMTP
from monitor.testing.web import LoopbackWeb

NAME = "Jane Example"
PAGE = (
    "<html><body><h1>album {n}</h1><img src='/img/me.jpg'><img src='/img/other.jpg'></body></html>"
)


@dataclass
class World:
    web: LoopbackWeb
    smtp: LoopbackSMTP
    search: FakeSearxng
    settings: Settings
    db: Database
    pages: list[str]

    def page_requests(self) -> int:
        return sum(1 for r in self.web.requests if r.path.startswith("/post/"))


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    web = LoopbackWeb().start()
    smtp = LoopbackSMTP(tmp_path / "maildir").start()
    search = FakeSearxng()
    searxng_url = search.install(web)
    photo = photo_bytes(7, (640, 480))
    web.add("/img/me.jpg", photo, "image/jpeg")
    web.add("/img/other.jpg", photo_bytes(99, (640, 480)), "image/jpeg")
    web.add("/post/0.html", "<html><body><img src='/img/other.jpg'></body></html>")
    pages = [web.add(f"/post/{n}.html", PAGE.format(n=n)) for n in (1, 2, 3)]
    for url in [web.url("/post/0.html"), *pages]:
        search.add_result(NAME, "general", {"url": url, "title": "album"})
    settings = Settings(
        data_dir=tmp_path / "data",
        search={"backends": [{"kind": "searxng", "url": searxng_url}]},
        fetch={"allow_private_networks": True, "timeout": 10},
        mail={"smtp_host": "127.0.0.1", "smtp_port": smtp.port, "starttls": False},
        cases={"capture_evidence": True, "rdap_domain_url": "", "rdap_ip_url": ""},
    )
    db = Database(settings.database_url, key_file=settings.key_path)
    with db.session() as s:
        subject = store.add_subject(
            s, NAME, email="jane@example.invalid", interval=timedelta(days=1)
        )
        assert enrol_images(s, subject, [("me", photo)]).enrolled == 1
    yield World(web, smtp, search, settings, db, pages)
    db.dispose()
    smtp.stop()
    web.stop()


@dataclass
class _Shot:
    path: Path
    sha256: str = "0" * 64
    captured_at: datetime = datetime(2026, 1, 1, tzinfo=UTC)


class FakeScreenshotter:
    """Stands in for the browser: notes how many alerts had arrived when each capture began,
    and then takes a shot, hangs or fails."""

    def __init__(self, smtp: LoopbackSMTP, mode: str = "shoot") -> None:
        self.smtp, self.mode = smtp, mode
        self.delivered_at_capture: list[int] = []
        self.focus: list[tuple[str, ...]] = []  # the images each capture was asked to show
        self.started = threading.Event()
        self.closed = False

    async def shoot(
        self, url: str, out_path: Path, *, may_show_minor: bool, focus: tuple[str, ...] = ()
    ) -> Any:
        self.focus.append(tuple(focus))
        self.delivered_at_capture.append(len(self.smtp.messages))
        self.started.set()
        if self.mode == "hang":
            await asyncio.Event().wait()
        if self.mode == "raise":
            raise RuntimeError("the browser crashed")

        def write() -> _Shot:
            out_path.write_bytes(b"png")
            return _Shot(out_path)

        return SimpleNamespace(write=write)

    async def __aexit__(self, *exc: object) -> None:
        self.closed = True


def _use(monkeypatch: pytest.MonkeyPatch, shooter: FakeScreenshotter) -> None:
    async def open_screenshotter(settings: Settings) -> tuple[Any, str | None]:
        shooter.delivered_at_capture.append(len(shooter.smtp.messages))  # starting the browser
        return shooter, None

    monkeypatch.setattr(capture, "_open_screenshotter", open_screenshotter)


def _watch_archives(monkeypatch: pytest.MonkeyPatch, smtp: LoopbackSMTP) -> list[int]:
    """Note, for every web archive started, how many alerts had arrived by then."""
    seen: list[int] = []
    real = evidence.fetch_and_capture_warc

    async def watched(*args: Any, **kwargs: Any) -> Any:
        seen.append(len(smtp.messages))
        return await real(*args, **kwargs)

    monkeypatch.setattr(evidence, "fetch_and_capture_warc", watched)
    return seen


def test_the_alert_is_delivered_before_any_evidence_is_captured(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    shooter = FakeScreenshotter(world.smtp)
    _use(monkeypatch, shooter)
    archives_started = _watch_archives(monkeypatch, world.smtp)
    summary = scan_subject(world.settings, world.db, NAME)
    assert summary.new_sightings == 3 and summary.alerts_sent == 1
    assert len(world.smtp.messages) == 1
    # The browser was started during the scan, at its first new sighting (its start-up
    # overlaps the scan), once; every archive and screenshot began after the alert arrived.
    assert shooter.delivered_at_capture == [0, 1, 1, 1]
    assert archives_started == [1, 1, 1]
    # each page shot around the matched image
    assert sorted(shooter.focus) == [(world.web.url("/img/me.jpg"),)] * 3
    assert summary.alert_seconds is not None and summary.alert_seconds <= summary.seconds + 5
    assert (summary.evidence_archives, summary.evidence_screenshots) == (3, 3)
    assert summary.evidence_parts() == "archives 3/3, screenshots 3/3"
    assert shooter.closed


def test_the_browser_is_started_only_for_new_sightings_of_an_adult(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    shooter = FakeScreenshotter(world.smtp)
    _use(monkeypatch, shooter)
    assert scan_subject(world.settings, world.db, NAME).new_sightings == 3
    assert len(shooter.delivered_at_capture) == 1 + 3  # the browser, then the three pages
    # Nothing new: no browser at all.
    assert scan_subject(world.settings, world.db, NAME).new_sightings == 0
    assert len(shooter.delivered_at_capture) == 1 + 3
    # A new place, but the person may be a minor: nothing is captured, no browser started.
    with world.db.session() as s:
        store.get_subject(s, NAME).minor = True
    world.web.add("/post/6.html", PAGE.format(n=6).replace("me.jpg", "me.jpg?six"))
    world.search.add_result(NAME, "general", {"url": world.web.url("/post/6.html")})
    assert scan_subject(world.settings, world.db, NAME).new_sightings == 1
    assert len(shooter.delivered_at_capture) == 1 + 3


def test_a_hanging_capture_does_not_hold_the_alert_back(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    shooter = FakeScreenshotter(world.smtp, mode="hang")
    _use(monkeypatch, shooter)
    with world.db.session() as s:
        subject_id = store.get_subject(s, NAME).id

    async def scan_until_capture_hangs() -> None:
        task = asyncio.create_task(run_scan(world.settings, world.db, subject_id))
        while not shooter.started.is_set():
            assert not task.done(), task
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)  # the capture hangs...
        assert len(world.smtp.messages) == 1  # ...and the alert is out
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(asyncio.wait_for(scan_until_capture_hangs(), 60))
    assert shooter.closed  # the browser is closed when the capture is given up


def test_a_failing_capture_or_delivery_stops_neither_the_other(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    shooter = FakeScreenshotter(world.smtp, mode="raise")
    _use(monkeypatch, shooter)
    summary = scan_subject(world.settings, world.db, NAME)
    assert summary.alerts_sent == 1 and len(world.smtp.messages) == 1
    assert (summary.evidence_captured, summary.evidence_failed) == (0, 3)
    assert summary.evidence_parts() == (
        "archives 3/3, screenshots 0/3: RuntimeError: the browser crashed"
    )

    # Delivery itself breaks: the alert stays queued, the evidence is still captured.
    world.web.add("/post/4.html", PAGE.format(n=4).replace("me.jpg", "me.jpg?copy"))
    world.search.add_result(NAME, "general", {"url": world.web.url("/post/4.html")})

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise OSError("the mail library blew up")

    monkeypatch.setattr(alerts, "deliver_pending", broken)
    shooter.mode = "shoot"
    summary = scan_subject(world.settings, world.db, NAME)
    assert summary.status == "completed" and summary.alerts_sent == 0
    assert summary.evidence_screenshots >= 1 and summary.evidence_archives >= 1


def test_evidence_is_counted_per_part_when_chromium_is_missing(
    world: World, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("MONITOR_CHROMIUM", str(tmp_path / "no-chromium"))
    monkeypatch.setattr(evidence.screenshot, "DEFAULT_CHROMIUM", str(tmp_path / "no-chromium"))
    config = tmp_path / "monitor.toml"
    config.write_text(
        f'[[search.backends]]\nkind = "searxng"\nurl = "{world.settings.search.backends[0].url}"\n'
        "[fetch]\nallow_private_networks = true\n"
        f'[mail]\nsmtp_host = "127.0.0.1"\nsmtp_port = {world.smtp.port}\nstarttls = false\n'
        '[cases]\nrdap_domain_url = ""\nrdap_ip_url = ""\n'
    )
    monkeypatch.setenv("MONITOR_DATA_DIR", str(world.settings.data_dir))
    assert main(["--config", str(config), "scan", NAME, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["evidence_archives"] == 3 and data["evidence_screenshots"] == 0
    assert (data["evidence_captured"], data["evidence_failed"]) == (0, 3)
    assert "Chromium is not installed" in data["evidence_note"]
    assert data["alerts_sent"] == 1

    # The archives were written: a second scan finds nothing new; a new page shows the text.
    world.web.add("/post/5.html", PAGE.format(n=5).replace("me.jpg", "me.jpg?five"))
    world.search.add_result(NAME, "general", {"url": world.web.url("/post/5.html")})
    assert main(["--config", str(config), "scan", NAME]) == 0
    out = capsys.readouterr().out
    # The new place, and the three whose screenshot is missing (retried up to 5 times).
    assert "evidence: archives 4/4, screenshots 0/4: Chromium is not installed" in out, out


def test_the_demo_counts_archives_when_chromium_is_missing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from monitor.demo.run import run_demo

    monkeypatch.setenv("MONITOR_CHROMIUM", str(tmp_path / "no-chromium"))
    monkeypatch.setattr(evidence.screenshot, "DEFAULT_CHROMIUM", str(tmp_path / "no-chromium"))
    console = Console(record=True, width=200)
    assert run_demo(keep=tmp_path / "demo", console=console) == 0
    text = console.export_text()
    line = next(ln for ln in text.splitlines() if ln.startswith("Evidence for "))
    n = int(line.removeprefix("Evidence for ").split(" ", 1)[0])
    assert n >= 1
    assert f"archives {n}/{n}, screenshots 0/{n}: Chromium is not installed" in line, line


def test_a_matched_page_is_archived_as_the_scan_received_it(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    world.settings.cases.screenshots = False
    summary = scan_subject(world.settings, world.db, NAME)
    assert summary.evidence_archives == 3 and summary.evidence_pages_reused == 3
    assert summary.evidence_parts() == (
        "archives 3/3, screenshots 0/3: off ([cases] screenshots = false)"
    )
    assert world.page_requests() == 4  # each page once: not fetched again for its archive
    archives = {}
    for warc in (world.settings.data_dir / "evidence").rglob("*.warc.gz"):
        with warc.open("rb") as fh:
            records = [
                (r.rec_type, r.rec_headers.get_header("WARC-Target-URI"), r.content_stream().read())
                for r in ArchiveIterator(fh)
            ]
        archives[next(uri for kind, uri, _ in records if kind == "response")] = records
    assert sorted(archives) == sorted(world.pages)
    records = archives[world.pages[0]]
    kinds = [(kind, uri) for kind, uri, _ in records]
    assert ("request", world.pages[0]) in kinds
    (body,) = [body for kind, uri, body in records if (kind, uri) == ("response", world.pages[0])]
    assert body == PAGE.format(n=1).encode()
    # The image: its response withheld (no bytes), its hashes in a metadata record.
    (image,) = [
        body
        for kind, uri, body in records
        if (kind, uri) == ("response", world.web.url("/img/me.jpg"))
    ]
    assert image == b""
    assert ("metadata", world.web.url("/img/me.jpg")) in kinds


def test_the_archive_records_the_scans_hashes_of_the_image_without_decoding_it_again(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    from monitor.evidence import warc

    decoded: list[int] = []
    real = warc.hash_media

    def counting(data: bytes, *args: Any, **kwargs: Any) -> Any:
        decoded.append(len(data))
        return real(data, *args, **kwargs)

    monkeypatch.setattr(warc, "hash_media", counting)
    world.settings.cases.screenshots = False
    summary = scan_subject(world.settings, world.db, NAME)
    assert summary.evidence_archives == 3
    assert decoded == []  # the image was fetched for each archive, but not decoded again
    with world.db.session() as s:
        known = store.known_image(s, hashlib.sha256(photo_bytes(7, (640, 480))).hexdigest())
    assert known is not None
    warcs = list((world.settings.data_dir / "evidence").rglob("*.warc.gz"))
    assert len(warcs) == 3
    for path in warcs:
        with path.open("rb") as fh:
            (meta,) = [
                json.loads(r.content_stream().read())
                for r in ArchiveIterator(fh)
                if r.rec_type == "metadata"
                and r.rec_headers.get_header("WARC-Target-URI") == world.web.url("/img/me.jpg")
            ]
        assert meta["sha256"] == known.sha256
        assert meta["hashes"]["pdq"]["value"] == known.get("pdq").value
        assert meta["hashes"]["phash"]["value"] == known.get("phash").value


def test_a_page_received_too_long_ago_is_fetched_again(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    world.settings.cases.screenshots = False
    monkeypatch.setattr(capture, "PAGE_REUSE_SECONDS", -1.0)
    summary = scan_subject(world.settings, world.db, NAME)
    assert summary.evidence_archives == 3 and summary.evidence_pages_reused == 0
    assert world.page_requests() == 4 + 3


def test_a_redirected_page_is_archived_with_its_redirect(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    from monitor.testing.web import Response

    world.settings.cases.screenshots = False
    target = world.web.add("/post/9.html", PAGE.format(n=9).replace("me.jpg", "me.jpg?nine"))
    world.web.route("/go/9", lambda req: Response(302, b"", "text/plain", {"Location": target}))
    world.search.add_result(NAME, "general", {"url": world.web.url("/go/9")})
    summary = scan_subject(world.settings, world.db, NAME)
    assert summary.evidence_archives == 4 and summary.evidence_pages_reused == 4
    assert sum(1 for r in world.web.requests if r.path in ("/go/9", "/post/9.html")) == 2
    for warc in (world.settings.data_dir / "evidence").rglob("*.warc.gz"):
        with warc.open("rb") as fh:
            records = [
                (r.rec_type, r.rec_headers.get_header("WARC-Target-URI"), r.http_headers)
                for r in ArchiveIterator(fh)
            ]
        if ("response", target) in [(kind, uri) for kind, uri, _ in records]:
            break
    else:
        raise AssertionError("no archive of the redirected page")
    (hop,) = [h for kind, uri, h in records if (kind, uri) == ("response", world.web.url("/go/9"))]
    assert hop.get_statuscode() == "302" and hop.get_header("Location") == target


def test_a_page_with_several_sightings_is_shot_once(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    shooter = FakeScreenshotter(world.smtp)
    _use(monkeypatch, shooter)
    two = "<html><body><img src='/img/me.jpg?a'><img src='/img/me.jpg?b'></body></html>"
    world.web.add("/post/7.html", two)
    world.search.add_result(NAME, "general", {"url": world.web.url("/post/7.html")})
    summary = scan_subject(world.settings, world.db, NAME)
    assert summary.new_sightings == 5
    assert (summary.evidence_archives, summary.evidence_screenshots) == (5, 5)
    assert len(shooter.delivered_at_capture) == 1 + 4  # the browser, then 4 pages
    with world.db.session() as s:
        (case,) = cases.list_cases(s)
        detail = cases.case_detail(s, world.settings, case.id)
    shots = {
        x.image_url: f
        for x in detail.sightings
        for f in x.evidence_files
        if f["kind"] == "screenshot" and x.page_url.endswith("/post/7.html")
    }
    a, b = shots[world.web.url("/img/me.jpg?a")], shots[world.web.url("/img/me.jpg?b")]
    assert a["path"] != b["path"] and a["sha256"] == b["sha256"]
    assert Path(a["path"]).read_bytes() == Path(b["path"]).read_bytes() == b"png"
