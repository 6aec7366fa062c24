"""Cases from a real scan of a loopback web: states, evidence at first sighting, re-checks
(removal, reappearance, a new copy elsewhere), minors, the CLI and erasure."""

from __future__ import annotations

import asyncio
import json
import zipfile
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from monitor import cases, store
from monitor.cases.capture import evidence_key
from monitor.cli import main
from monitor.config import Settings
from monitor.db import Database
from monitor.db.models import (
    CaseEvent,
    Match,
    OutboxMessage,
    Reference,
    SightingState,
    Subject,
    utcnow,
)
from monitor.demo.photos import photo_bytes
from monitor.enrol import enrol_paths
from monitor.pipeline import scan_subject
from monitor.testing.searxng import FakeSearxng
from monitor.testing.web import LoopbackWeb

NAME = "Jane Example"
LATER = timedelta(hours=7)  # past [cases] recheck_confirm (6 h): a second check confirms
PAGE = '<html lang="{lang}"><body><h1>album</h1><img src="/img/{n}.jpg"><img src="/img/other.jpg"></body></html>'


@dataclass
class World:
    web: LoopbackWeb
    search: FakeSearxng
    settings: Settings
    db: Database
    tmp: Path
    photo: bytes

    def page(self, path: str, n: int = 1, lang: str = "en") -> str:
        return self.web.add(path, PAGE.format(n=n, lang=lang))

    def publish(self, path: str, lang: str = "en") -> str:
        """Put a page showing the person's photo online and make the search find it."""
        url = self.page(path, lang=lang)
        self.search.add_result(NAME, "general", {"url": url, "title": "album"})
        return url

    def scan(self) -> object:
        return scan_subject(self.settings, self.db, NAME, deliver=False)

    def case_id(self) -> int:
        with self.db.session() as s:
            return s.scalars(select(Match.id)).one()


def make_world(tmp_path: Path, *, minor: bool = False, **cases_cfg: object) -> World:
    """A started loopback web (the caller stops it) with a fake search and an enrolled person."""
    web = LoopbackWeb().start()
    search = FakeSearxng()
    searxng_url = search.install(web)
    photo = photo_bytes(7, (640, 480))
    web.add("/img/1.jpg", photo, "image/jpeg")
    web.add("/img/other.jpg", photo_bytes(99, (640, 480)), "image/jpeg")
    settings = Settings(
        data_dir=tmp_path / "data",
        search={"backends": [{"kind": "searxng", "url": searxng_url}]},
        fetch={"allow_private_networks": True, "timeout": 10},
        cases={
            "capture_evidence": True,
            "screenshots": False,
            "rdap_domain_url": "",
            "rdap_ip_url": "",
            **cases_cfg,
        },
    )
    db = Database(settings.database_url, key_file=settings.key_path)
    ref = tmp_path / "me.jpg"
    ref.write_bytes(photo)
    with db.session() as s:
        subject = store.add_subject(s, NAME, interval=timedelta(days=1))
        subject.minor = minor
        assert enrol_paths(s, subject, [ref]).enrolled == 1
    ref.unlink()
    return World(web, search, settings, db, tmp_path, photo)


@pytest.fixture
def world(tmp_path: Path):
    w = make_world(tmp_path)
    yield w
    w.db.dispose()
    w.web.stop()


def _state(db: Database, case_id: int) -> str:
    with db.session() as s:
        return s.get(Match, case_id).status  # type: ignore[union-attr]


def _events(db: Database, case_id: int) -> list[str]:
    with db.session() as s:
        return list(
            s.scalars(
                select(CaseEvent.kind).where(CaseEvent.match_id == case_id).order_by(CaseEvent.id)
            )
        )


def _alerts(db: Database) -> list[OutboxMessage]:
    with db.session() as s:
        return list(s.scalars(select(OutboxMessage).order_by(OutboxMessage.id)))


def test_a_match_becomes_a_case_with_evidence_captured_at_first_sighting(world: World) -> None:
    page = world.publish("/post/1.html")
    world.scan()
    case_id = world.case_id()
    with world.db.session() as s:
        (summary,) = cases.list_cases(s)
        detail = cases.case_detail(s, world.settings, case_id)
    assert summary.status == "new" and summary.sightings == 1 and summary.evidence == 1
    (sighting,) = detail.sightings
    assert sighting.page_url == page and sighting.image_url == world.web.url("/img/1.jpg")
    assert sighting.evidence_status == "captured"
    (warc,) = sighting.evidence_files
    path = Path(warc["path"])
    assert warc["kind"] == "warc" and path.is_file()
    assert path.parent == world.settings.data_dir / "evidence" / evidence_key(case_id)
    assert world.photo[1000:1064] not in path.read_bytes()  # the image itself is withheld
    assert "evidence_captured" in _events(world.db, case_id)
    assert any("case confirm" in step for step in detail.next_steps)


def test_only_a_person_decides_and_a_dismissed_case_is_left_alone(world: World) -> None:
    world.publish("/post/1.html")
    world.scan()
    case_id = world.case_id()
    with world.db.session() as s:
        cases.dismiss_case(s, case_id)
    assert _state(world.db, case_id) == "dismissed"
    world.web.remove("/post/1.html")
    report = asyncio.run(cases.recheck_case(world.settings, world.db, case_id))
    assert report.status == "dismissed" and "not checked" in report.details[0]
    with world.db.session() as s:
        cases.confirm_case(s, case_id)
    assert _state(world.db, case_id) == "confirmed"
    assert _events(world.db, case_id)[-2:] == ["dismissed", "confirmed"]


def test_removal_is_detected_and_a_reappearance_alerts_discreetly(world: World) -> None:
    world.publish("/post/1.html")
    world.scan()
    case_id = world.case_id()
    with world.db.session() as s:
        cases.confirm_case(s, case_id)
    alerts_before = len(_alerts(world.db))

    report = asyncio.run(cases.recheck_case(world.settings, world.db, case_id))
    assert report.status == "confirmed" and report.online == 1 and report.reappeared == 0

    world.web.remove("/post/1.html")
    world.web.remove("/img/1.jpg")
    report = asyncio.run(cases.recheck_case(world.settings, world.db, case_id))
    assert report.status == "confirmed" and report.missing == 1 and report.gone == 0
    report = asyncio.run(
        cases.recheck_case(world.settings, world.db, case_id, now=utcnow() + LATER)
    )
    assert report.status == "removed" and report.gone == 1
    assert "HTTP 404" in report.details[0]
    with world.db.session() as s:
        removed_at = s.get(Match, case_id).removed_at  # type: ignore[union-attr]
    assert removed_at is not None
    assert len(_alerts(world.db)) == alerts_before  # a removal does not alert

    world.web.add("/img/1.jpg", world.photo, "image/jpeg")
    world.publish("/post/1.html")  # back online
    report = asyncio.run(cases.recheck_case(world.settings, world.db, case_id))
    assert report.status == "still_online" and report.reappeared == 1 and report.alerted == 1
    rows = _alerts(world.db)
    assert len(rows) == alerts_before + 1
    alert = rows[-1]
    assert alert.status == "pending" and alert.new_items == 1
    own_page = world.settings.web.base_url() + "/cases"  # the tool's page on this computer
    shown = (alert.body + alert.subject_line).replace(own_page, "")
    for secret in (NAME, "Jane", "http://", world.web.base_url, "/post/1"):
        assert secret not in shown
    kinds = _events(world.db, case_id)
    assert kinds.index("gone") < kinds.index("removed") < kinds.index("reappeared")


def test_an_image_that_no_longer_matches_counts_as_removed(world: World) -> None:
    world.publish("/post/1.html")
    world.scan()
    case_id = world.case_id()
    world.web.add("/img/1.jpg", photo_bytes(55, (640, 480)), "image/jpeg")  # replaced
    report = asyncio.run(cases.recheck_case(world.settings, world.db, case_id))
    assert report.status == "new" and report.missing == 1  # to be confirmed
    report = asyncio.run(
        cases.recheck_case(world.settings, world.db, case_id, now=utcnow() + LATER)
    )
    assert report.status == "removed"
    with world.db.session() as s:
        (st,) = s.scalars(select(SightingState)).all()
    assert st.state == "changed" and "no longer matches" in st.detail


def test_a_copy_moved_elsewhere_on_the_page_is_still_online(world: World) -> None:
    world.publish("/post/1.html")
    world.scan()
    case_id = world.case_id()
    world.web.add("/img/moved.jpg", world.photo, "image/jpeg")
    world.web.add("/post/1.html", PAGE.format(n="moved", lang="en"))
    world.web.remove("/img/1.jpg")
    report = asyncio.run(cases.recheck_case(world.settings, world.db, case_id))
    assert report.online == 1 and report.status == "new"
    assert "moved.jpg" in report.details[0]


def test_a_new_copy_elsewhere_of_a_removed_case_alerts(world: World) -> None:
    world.publish("/post/1.html")
    world.scan()
    case_id = world.case_id()
    world.web.remove("/post/1.html")
    world.web.remove("/img/1.jpg")
    asyncio.run(cases.recheck_case(world.settings, world.db, case_id))
    asyncio.run(cases.recheck_case(world.settings, world.db, case_id, now=utcnow() + LATER))
    assert _state(world.db, case_id) == "removed"
    alerts_before = len(_alerts(world.db))

    world.web.add("/img/1.jpg", world.photo, "image/jpeg")
    world.publish("/post/2.html")  # the same image on another page
    world.scan()
    assert _state(world.db, case_id) == "still_online"
    assert len(_alerts(world.db)) == alerts_before + 1  # the scan's own alert, once
    assert "new_copy" in _events(world.db, case_id)
    with world.db.session() as s:
        (summary,) = cases.list_cases(s)
    assert summary.sightings == 2 and summary.online == 1


def test_a_failed_capture_is_recorded_never_fails_the_scan_and_is_retried(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    import monitor.evidence as evidence

    real = evidence.fetch_and_capture_warc

    async def broken(*args: object, **kwargs: object) -> object:
        raise evidence.EvidenceError("the disk is full")

    monkeypatch.setattr(evidence, "fetch_and_capture_warc", broken)
    world.publish("/post/1.html")
    summary = world.scan()
    assert summary.status == "completed"  # type: ignore[attr-defined]
    case_id = world.case_id()
    with world.db.session() as s:
        (st,) = s.scalars(select(SightingState)).all()
    assert st.evidence_status == "failed" and "disk is full" in (st.evidence_error or "")
    assert "evidence_failed" in _events(world.db, case_id)

    monkeypatch.setattr(evidence, "fetch_and_capture_warc", real)
    report = asyncio.run(cases.recheck_case(world.settings, world.db, case_id))
    assert report.evidence_captured == 1
    with world.db.session() as s:
        (st,) = s.scalars(select(SightingState)).all()
    assert st.evidence_status == "captured" and st.evidence_attempts == 2


def test_rechecks_come_due_after_recheck_every(world: World) -> None:
    world.publish("/post/1.html")
    world.scan()
    case_id = world.case_id()
    now = utcnow()
    assert asyncio.run(cases.recheck_due(world.settings, world.db, now=now)) == []
    later = now + world.settings.cases.recheck_every + timedelta(minutes=1)
    (report,) = asyncio.run(cases.recheck_due(world.settings, world.db, now=later))
    assert report.case_id == case_id
    assert asyncio.run(cases.recheck_due(world.settings, world.db, now=later)) == []


def test_the_scheduler_runs_rechecks_on_their_own_job(world: World) -> None:
    from monitor.scheduler import Scheduler

    calls: list[str] = []
    scheduler = Scheduler(
        world.db,
        world.settings,
        lambda _id: None,
        deliver_fn=lambda: calls.append("deliver"),
        recheck_fn=lambda: calls.append("recheck"),
    )
    scheduler.start(block=False)
    try:
        jobs = {job.id for job in scheduler._aps.get_jobs()}  # type: ignore[union-attr]
    finally:
        scheduler.shutdown()
    assert "monitor-recheck-cases" in jobs
    scheduler.recheck()
    assert calls[-2:] == ["recheck", "deliver"]


def test_a_minor_gets_no_capture_and_the_hotline(tmp_path: Path) -> None:
    w = make_world(
        tmp_path, minor=True, hotline_name="Offlimits (NL)", hotline_url="https://www.offlimits.nl"
    )
    try:
        w.publish("/post/1.html")
        w.scan()
        case_id = w.case_id()
        with w.db.session() as s:
            cases.confirm_case(s, case_id)
            detail = cases.case_detail(s, w.settings, case_id)
        (sighting,) = detail.sightings
        assert sighting.evidence_status == "skipped" and sighting.evidence_files == []
        assert not (w.settings.data_dir / "evidence").exists() or not any(
            (w.settings.data_dir / "evidence").rglob("*")
        )
        text = "\n".join(detail.next_steps)
        assert "Offlimits (NL): https://www.offlimits.nl" in text
        assert "Do not contact the site" in text
        assert not any("case notice" in step for step in detail.next_steps)
        # Page captures only went to the page once, for the scan: no WARC or screenshot fetch.
        page_fetches = [r for r in w.web.requests if r.path == "/post/1.html"]
        assert len(page_fetches) == 1
        from monitor.cases.notices import MinorCase, draft_notice

        with pytest.raises(MinorCase, match="Offlimits"):
            draft_notice(w.settings, w.db, case_id)
        # The bundle holds the addresses, dates and hashes only.
        info = cases.export_bundle(w.settings, w.db, case_id, tmp_path / "minor.zip")
        names = zipfile.ZipFile(info.path).namelist()
        assert not any(n.startswith(("warc/", "screenshots/")) for n in names)
        report = zipfile.ZipFile(info.path).read("report.html").decode()
        assert w.web.url("/post/1.html") in report and "hotline" in report
    finally:
        w.db.dispose()
        w.web.stop()


# ---------------------------------------------------------------- command line


def _cli(capsys: pytest.CaptureFixture[str], cfg: Path, *argv: str) -> tuple[int, str, str]:
    code = main(["--config", str(cfg), *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _config(world: World, **cases_cfg: object) -> Path:
    cfg = world.tmp / "monitor.toml"
    extra = "".join(f"{k} = {json.dumps(v)}\n" for k, v in cases_cfg.items())
    cfg.write_text(
        f'data_dir = "{world.settings.data_dir}"\n'
        f"[fetch]\nallow_private_networks = true\n"
        f'[cases]\nscreenshots = false\nrdap_domain_url = ""\nrdap_ip_url = ""\n{extra}'
    )
    return cfg


def test_cli_lists_shows_decides_and_exports_the_evidence_bundle(world: World, capsys) -> None:
    page = world.publish("/post/1.html")
    world.scan()
    case_id = world.case_id()
    cfg = _config(world)

    code, out, _ = _cli(capsys, cfg, "cases", "--json")
    (row,) = json.loads(out)
    assert code == 0 and row["id"] == case_id and row["status"] == "new" and row["evidence"] == 1
    code, out, _ = _cli(capsys, cfg, "cases", NAME)
    assert code == 0 and "new" in out
    code, out, _ = _cli(capsys, cfg, "case", "confirm", str(case_id))
    assert code == 0 and "confirmed" in out
    code, out, _ = _cli(capsys, cfg, "case", "show", str(case_id), "--json")
    shown = json.loads(out)
    assert shown["status"] == "confirmed" and shown["sightings"][0]["page_url"] == page
    assert any("stopncii.org" in s for s in shown["next_steps"])
    assert any("takeitdown.ncmec.org" in s for s in shown["next_steps"])
    assert any("support.google.com" in s for s in shown["next_steps"])
    code, out, _ = _cli(capsys, cfg, "case", "show", str(case_id))
    assert code == 0 and page in out and "Next steps" in out

    out_zip = world.tmp / "case.zip"
    code, out, err = _cli(capsys, cfg, "case", "evidence", str(case_id), str(out_zip))
    assert code == 0, err
    with zipfile.ZipFile(out_zip) as z:
        names = z.namelist()
        assert any(n.startswith("warc/") and n.endswith(".warc.gz") for n in names)
        assert {"report.html", "manifest.json", "SHA256SUMS"} <= set(names)
        report = z.read("report.html").decode()
    assert page in report and NAME not in report and "confirmed" in report

    code, _, err = _cli(capsys, cfg, "case", "show", "999")
    assert code == 2 and "no case 999" in err

    world.web.remove("/post/1.html")
    world.web.remove("/img/1.jpg")
    cfg = _config(world, recheck_confirm="0s")  # no second check to wait for
    code, out, _ = _cli(capsys, cfg, "case", "recheck", str(case_id), "--json")
    assert code == 0 and json.loads(out)["status"] == "removed"


def test_subject_add_minor_and_erasure_removes_the_evidence(world: World, capsys) -> None:
    world.publish("/post/1.html")
    world.scan()
    case_id = world.case_id()
    folder = world.settings.data_dir / "evidence" / evidence_key(case_id)
    assert any(folder.iterdir())
    cfg = _config(world)
    code, _, _ = _cli(capsys, cfg, "subject", "add", "Young Person", "--minor")
    assert code == 0
    with world.db.session() as s:
        assert s.scalar(select(Subject.minor).where(Subject.name == "Young Person")) is True
        assert s.scalar(select(Subject.minor).where(Subject.name == NAME)) is False
    code, _, err = _cli(capsys, cfg, "subject", "remove", NAME, "--yes")
    assert code == 0, err
    assert not folder.exists()
    with world.db.session() as s:
        assert s.scalar(select(Match.id)) is None


@pytest.fixture
def db(database_url: str):
    database = Database(database_url)
    yield database
    database.dispose()


def test_case_states_on_sqlite_and_postgresql(db: Database, tmp_path: Path) -> None:
    from monitor.types import HashValue, ImageHashes, MatchResult

    settings = Settings(data_dir=tmp_path / "data")
    hashes = ImageHashes("a" * 64, 640, 480, (HashValue("pdq", "0" * 64, 90),))
    with db.session() as s:
        subject = store.add_subject(s, NAME, interval=timedelta(days=1))
        ref = Reference(origin="import")
        subject.references.append(ref)
        s.flush()
        scan = store.start_scan(s, subject.id)
        store.record_image(
            s,
            subject,
            scan.id,
            page_url="https://x.test/p",
            image_url="https://x.test/i.jpg",
            hashes=hashes,
            match=MatchResult(ref.id, "pdq", 3, 31),
        )
    with db.session() as s:
        (case,) = cases.list_cases(s, NAME)
        assert case.status == "new" and case.online == 1 and case.evidence == 0
        cases.confirm_case(s, case.id)
    with db.session() as s:
        detail = cases.case_detail(s, settings, case.id)
        assert detail.summary.status == "confirmed" and detail.decided_at is not None
        assert [e["kind"] for e in detail.events] == ["confirmed"]
        assert detail.as_json()["sightings"][0]["state"] == "online"


def test_first_sighting_evidence_includes_a_blurred_screenshot_in_the_bundle(
    tmp_path: Path,
) -> None:
    from monitor.evidence import chromium_path

    if chromium_path() is None:
        pytest.skip("Chromium is not installed (/usr/bin/chromium or $MONITOR_CHROMIUM)")
    w = make_world(tmp_path, screenshots=True)
    try:
        w.publish("/post/1.html")
        w.scan()
        case_id = w.case_id()
        with w.db.session() as s:
            (sighting,) = cases.case_detail(s, w.settings, case_id).sightings
        assert sighting.evidence_status == "captured", sighting.evidence_error
        assert sorted(f["kind"] for f in sighting.evidence_files) == ["screenshot", "warc"]
        info = cases.export_bundle(w.settings, w.db, case_id, tmp_path / "case.zip")
        names = zipfile.ZipFile(info.path).namelist()
        assert any(n.startswith("screenshots/") and n.endswith(".png") for n in names)
        assert any(n.startswith("warc/") for n in names)
    finally:
        w.db.dispose()
        w.web.stop()
