"""Evidence at first sighting, through :mod:`monitor.evidence`: a WARC of the page (the image
withheld: only its hashes) and a blurred screenshot with a URL/time banner.

Never for a person marked as possibly under 18: their sightings are marked ``skipped`` and
nothing is fetched. A failed capture is recorded (``evidence_status = "failed"`` with the reason)
and retried by the next re-check, up to :data:`MAX_ATTEMPTS`; it never fails a scan.
Files live in ``<data_dir>/evidence/case-<id>/`` (owner-only) and are erased with the person.
For a person who opted in (never a minor), the image fetched for the WARC is also kept,
encrypted (:mod:`monitor.cases.image_copies`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select

from monitor.cases.core import add_event, evidence_files, sighting_states
from monitor.config import Settings
from monitor.db import Database
from monitor.db.models import Image, Match, Sighting, SightingState, Subject, utcnow
from monitor.types import ImageHashes
from monitor.types import iso_utc as _iso

__all__ = [
    "MAX_ATTEMPTS",
    "PAGE_REUSE_SECONDS",
    "CaptureReport",
    "EarlyBrowser",
    "ScannedPage",
    "capture_pending",
    "evidence_key",
    "shared_screenshots",
]

log = logging.getLogger("monitor.cases.capture")

MAX_ATTEMPTS = 5
"""A capture that failed this many times is not tried again automatically."""

CONCURRENT_CAPTURES = 3
"""Pages captured at the same time (they load in parallel in one browser)."""


def evidence_key(case_id: int) -> str:
    """The evidence folder name of a case: ``case-<id>``."""
    return f"case-{case_id}"


PAGE_REUSE_SECONDS = 600.0
"""A page the scan fetched this recently is archived as the scan received it (not fetched
again): the WARC then shows the page in which the image was found, at the time it was found."""


@dataclass
class CaptureReport:
    captured: int = 0  # sightings with every part of their evidence
    failed: int = 0  # sightings with a part missing (recorded; retried on re-check)
    skipped: int = 0  # minors
    errors: list[str] = field(default_factory=list)
    # Per part, over the sightings tried (captured + failed):
    archives: int = 0  # web archives (WARC) written
    pages_reused: int = 0  # of those, pages archived as the scan received them
    screenshots: int = 0  # blurred screenshots written
    screenshot_note: str = ""  # why no screenshot was taken at all ("" when some were tried)
    seconds: float = 0.0

    @property
    def tried(self) -> int:
        return self.captured + self.failed

    def parts(self) -> str:
        """``archives 6/6, screenshots 0/6: Chromium is not installed ...``."""
        shots = f"screenshots {self.screenshots}/{self.tried}"
        if self.screenshot_note:
            shots += f": {self.screenshot_note}"
        return f"archives {self.archives}/{self.tried}, {shots}"


@dataclass(frozen=True, slots=True)
class ScannedPage:
    """A matched page as the scan received it, kept in memory (never on disk) for its WARC:
    the exchanges (redirect hops, then the page with its body, see
    :class:`monitor.evidence.HttpExchange`) and when they were received (monotonic clock)."""

    exchanges: tuple[Any, ...]
    received: float


@dataclass(frozen=True, slots=True)
class _Job:
    case_id: int
    sighting_id: int
    page_url: str
    image_url: str
    keep_copy: bool = False  # the person opted in to encrypted image copies (never a minor)
    image_sha256: str = ""  # the matched image: only these exact bytes are kept
    frame_offset: float | None = None  # a video or animation: the time of the frame matched
    known_hashes: ImageHashes | None = None  # the scan's stored hashes of the matched image


async def _capture_page(
    settings: Settings,
    jobs: list[_Job],
    browser: Awaitable[tuple[Any, str | None]] | None,
    now: datetime,
    keystore: Any = None,
    page: ScannedPage | None = None,
    on_shot: Callable[[], None] | None = None,
) -> list[tuple[list[dict[str, Any]], list[str]]]:
    """Capture the sightings of one page: ``(files written, problems)`` for each job.

    Each sighting gets its WARC (the page and its own image); the page is shot once (in the
    browser ``browser`` yields, once started), at the same time, and every sighting gets its
    own copy of that screenshot in its case's folder. With ``page`` (the scan's own response,
    still fresh) the WARCs archive it instead of fetching the page again. ``on_shot`` is
    called once the browser is done with the page (shot, failed, or no browser), before the
    screenshot is written."""
    results = await asyncio.gather(
        _screenshot(settings, jobs[0], browser, now, tuple(job.image_url for job in jobs), on_shot),
        *(_archive(settings, job, now, keystore, page) for job in jobs),
    )
    shot, shot_problems = results[0]
    out: list[tuple[list[dict[str, Any]], list[str]]] = []
    for job, (files, problems) in zip(jobs, results[1:], strict=True):
        problems = problems + shot_problems
        if shot is not None:
            try:
                files = files + [shot if job is jobs[0] else _copy_shot(settings, shot, job, now)]
            except Exception as exc:
                problems.append(f"screenshot: {_reason(exc)}")
        out.append((files, problems))
    return out


async def _archive(
    settings: Settings, job: _Job, now: datetime, keystore: Any, page: ScannedPage | None
) -> tuple[list[dict[str, Any]], list[str]]:
    """The sighting's WARC (and, opted in, its encrypted image copy)."""
    from monitor.cases.image_copies import CopyOutcome, copy_hook
    from monitor.evidence import evidence_dir, fetch_and_capture_warc
    from monitor.evidence.store import capture_file_name

    folder = evidence_dir(settings, evidence_key(job.case_id))
    copy = CopyOutcome()
    hook = None
    if job.keep_copy and keystore is not None:
        hook = copy_hook(
            keystore,
            folder,
            case_id=job.case_id,
            sighting_id=job.sighting_id,
            image_url=job.image_url,
            expected_sha256=job.image_sha256,
            now=now,
            outcome=copy,
        )
    files: list[dict[str, Any]] = []
    problems: list[str] = []
    try:
        warc = await fetch_and_capture_warc(
            settings.fetch,
            job.page_url,
            job.image_url,
            folder / capture_file_name("page", now, f"-s{job.sighting_id}.warc.gz"),
            description=f"case {job.case_id}, sighting {job.sighting_id}",
            on_image_bytes=hook,
            matched_offset=job.frame_offset,
            page_exchanges=page.exchanges if page is not None else None,
            known_hashes=job.known_hashes,
        )
        files.append(
            {
                "kind": "warc",
                "path": str(warc.warc.path),
                "sha256": warc.warc.sha256,
                "url": job.page_url,
                "captured_at": _iso(warc.warc.created_at),
            }
        )
    except Exception as exc:
        problems.append(f"WARC: {_reason(exc)}")
    if copy.entry is not None:
        files.append(copy.entry)
    if copy.error:
        problems.append(f"image copy: {copy.error}")
    elif copy.note:
        log.info("sighting %d: %s", job.sighting_id, copy.note)
    return files, problems


async def _screenshot(
    settings: Settings,
    job: _Job,
    browser: Awaitable[tuple[Any, str | None]] | None,
    now: datetime,
    focus: tuple[str, ...] = (),
    on_shot: Callable[[], None] | None = None,
) -> tuple[dict[str, Any] | None, list[str]]:
    """The page's screenshot, into the folder of ``job``'s case: (file, problems). A tall
    page is shot around the ``focus`` images (the sightings' own) and its top. ``on_shot``:
    called when the browser's part is over (before the PNG is written)."""
    from monitor.evidence import evidence_dir
    from monitor.evidence.store import capture_file_name

    try:
        screenshotter = (await browser)[0] if browser is not None else None
        if screenshotter is None:
            return None, []
        folder = evidence_dir(settings, evidence_key(job.case_id))
        try:
            taken = await screenshotter.shoot(
                job.page_url,
                folder / capture_file_name("screenshot", now, f"-s{job.sighting_id}.png"),
                may_show_minor=False,
                focus=focus,
            )
        except Exception as exc:
            return None, [f"screenshot: {_reason(exc)}"]
    finally:
        if on_shot is not None:
            on_shot()
    try:
        shot = await asyncio.to_thread(taken.write)
    except Exception as exc:
        return None, [f"screenshot: {_reason(exc)}"]
    file = {
        "kind": "screenshot",
        "path": str(shot.path),
        "sha256": shot.sha256,
        "url": job.page_url,
        "captured_at": _iso(shot.captured_at),
    }
    return file, []


def _copy_shot(
    settings: Settings, shot: dict[str, Any], job: _Job, now: datetime
) -> dict[str, Any]:
    """An exact copy of a page's screenshot for another sighting on it, in its case's folder
    (each case's evidence stands alone: it can be bundled or erased by itself)."""
    from monitor.evidence import evidence_dir
    from monitor.evidence.store import capture_file_name, write_new_file

    data = Path(shot["path"]).read_bytes()
    folder = evidence_dir(settings, evidence_key(job.case_id))
    path = write_new_file(
        folder / capture_file_name("screenshot", now, f"-s{job.sighting_id}.png"),
        lambda fh: fh.write(data),
    )
    return {**shot, "path": str(path)}


def _reason(exc: BaseException) -> str:
    from monitor.errors import MonitorError

    return str(exc) if isinstance(exc, MonitorError) else f"{type(exc).__name__}: {exc}"


def _jobs(db: Database, case_ids: list[int] | None, subject_id: int | None) -> list[_Job]:
    """Sightings whose evidence is pending or failed (with attempts left), of open cases of
    people not marked as minors; minors' pending sightings are marked ``skipped`` here."""
    from monitor.store import known_image

    with db.session() as s:
        stmt = (
            select(
                Match.id,
                Sighting.id,
                Sighting.page_url,
                Sighting.image_url,
                Subject.minor,
                Subject.keep_image_copies,
                Image.sha256,
                Match.frame_offset,
            )
            .join(
                Sighting,
                (Sighting.subject_id == Match.subject_id) & (Sighting.image_id == Match.image_id),
            )
            .join(Subject, Subject.id == Match.subject_id)
            .join(Image, Image.id == Match.image_id)
            .where(Match.status != "dismissed")
            .order_by(Sighting.id)
        )
        if case_ids is not None:
            stmt = stmt.where(Match.id.in_(case_ids or [-1]))
        if subject_id is not None:
            stmt = stmt.where(Match.subject_id == subject_id)
        rows = s.execute(stmt).all()
        states = sighting_states(s, [r[1] for r in rows])
        jobs: list[_Job] = []
        for case_id, sighting_id, page_url, image_url, minor, keep, sha, offset in rows:
            st = states[sighting_id]
            if minor:
                if st.evidence_status != "skipped":
                    st.evidence_status = "skipped"
                    st.evidence_error = "possibly under 18: no capture is made"
                continue
            if st.state in ("gone", "changed"):
                continue
            if st.evidence_status == "pending" or (
                st.evidence_status == "failed" and st.evidence_attempts < MAX_ATTEMPTS
            ):
                keep_copy = bool(keep) and not minor
                known = known_image(s, sha) if sha else None
                jobs.append(
                    _Job(case_id, sighting_id, page_url, image_url, keep_copy, sha, offset, known)
                )
        return jobs


async def capture_pending(
    settings: Settings,
    db: Database,
    *,
    case_ids: list[int] | None = None,
    subject_id: int | None = None,
    force: bool = False,
    now: datetime | None = None,
    pages: Mapping[str, ScannedPage] | None = None,
    early: EarlyBrowser | None = None,
) -> CaptureReport:
    """Capture evidence for sightings that have none yet (or whose capture failed).

    Does nothing unless ``[cases] capture_evidence`` (or ``force``). Never raises for a failed
    capture: it is recorded with its reason and retried later. One browser serves every
    screenshot of the call, up to :data:`CONCURRENT_CAPTURES` pages are captured at once, and
    a page with several sightings is shot once (each sighting gets a copy in its case).
    ``pages``: matched pages as a scan just received them, by URL; one received less than
    :data:`PAGE_REUSE_SECONDS` ago is archived as it is, not fetched again.
    ``early``: a browser a scan started before (see :class:`EarlyBrowser`), used (or closed)
    here."""
    report = CaptureReport()
    started_early = early.take() if early is not None else None
    shared = _shared_browser(settings)
    jobs = _jobs(db, case_ids, subject_id) if settings.cases.capture_evidence or force else []
    if not jobs:
        if started_early is not None:
            await _close_browser(started_early, shared)
        return report
    started = time.monotonic()
    # The browser starts while the first web archives are written (or, inside
    # shared_screenshots, is the one already running for this thread's scans), unless the
    # scan started it already.
    browser = started_early or asyncio.ensure_future(
        shared.open() if shared is not None else _open_screenshotter(settings)
    )
    if not settings.cases.screenshots:
        report.screenshot_note = "off ([cases] screenshots = false)"
    slots = asyncio.Semaphore(CONCURRENT_CAPTURES)
    shot_problems: list[str] = []

    def fresh(url: str) -> ScannedPage | None:
        page = (pages or {}).get(url)
        if page is None or time.monotonic() - page.received > PAGE_REUSE_SECONDS:
            return None
        return page

    by_page: dict[str, list[_Job]] = {}
    for job in jobs:  # a page is shot once, however many sightings it holds
        by_page.setdefault(job.page_url, []).append(job)
    # The browser is closed as soon as the last page is shot, while its PNG is written.
    unshot = len(by_page)
    closing: asyncio.Future[None] | None = None

    def shot() -> None:
        nonlocal unshot, closing
        unshot -= 1
        if unshot == 0 and closing is None:
            closing = asyncio.ensure_future(_close_browser(browser, shared))

    async def one(group: list[_Job]) -> None:
        async with slots:
            at = now or utcnow()
            page = fresh(group[0].page_url)
            results = await _capture_page(
                settings, group, browser, at, db.keystore, page, on_shot=shot
            )
        problem = (await browser)[1]
        for job, (files, problems) in zip(group, results, strict=True):
            if problem:
                problems.append(problem)
                report.screenshot_note = problem.removeprefix("screenshot: ")
            _record(db, job, files, problems, at)
            kinds = [f["kind"] for f in files]
            report.archives += "warc" in kinds
            report.pages_reused += "warc" in kinds and page is not None
            report.screenshots += "screenshot" in kinds
            shot_problems.extend(
                p.removeprefix("screenshot: ")
                for p in problems
                if p.startswith("screenshot: ") and p != problem
            )
            if problems:
                report.failed += 1
                report.errors.extend(f"sighting {job.sighting_id}: {p}" for p in problems)
            else:
                report.captured += 1

    try:
        await asyncio.gather(*(one(group) for group in by_page.values()))
    finally:
        if not browser.done():  # cancelled while the browser was starting
            browser.cancel()
        await (closing if closing is not None else _close_browser(browser, shared))
        report.seconds = round(time.monotonic() - started, 3)
    if not report.screenshot_note and report.screenshots == 0 and shot_problems:
        report.screenshot_note = shot_problems[0]  # none taken: the first reason
    return report


async def _close_browser(
    browser: asyncio.Future[tuple[Any, str | None]], shared: _SharedBrowser | None
) -> None:
    """Close the browser ``browser`` started (once started), unless it is the shared one,
    whose tabs kept for this call's sites are closed (the next scan's pages get their own)."""
    screenshotter = None
    with contextlib.suppress(Exception, asyncio.CancelledError):
        screenshotter = (await browser)[0]
    if screenshotter is not None and shared is not None:
        with contextlib.suppress(Exception):
            await screenshotter.close_tabs()
    if screenshotter is not None and shared is None:  # a shared one stays open
        try:
            await screenshotter.__aexit__(None, None, None)
        except Exception as exc:  # pragma: no cover - closing a browser that already died
            log.info("closing the screenshot browser failed: %s", exc)


class EarlyBrowser:
    """The screenshot browser of one scan, started before its evidence is captured.

    ``start()`` (called by the scan at its first new sighting, on its event loop) starts the
    browser in the background, so that its start-up (a second or more) overlaps the rest of
    the scan instead of following it; no page is loaded in it before the scan's alert has gone
    out (:func:`capture_pending` does that, given this object). Nothing happens when
    screenshots are off. ``aclose()`` closes a browser nobody took."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._future: asyncio.Future[tuple[Any, str | None]] | None = None

    @property
    def started(self) -> bool:
        return self._future is not None

    def start(self) -> None:
        cases = self.settings.cases
        if self._future is not None or not (cases.capture_evidence and cases.screenshots):
            return
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # not inside the scan's event loop: the capture starts it
            return
        shared = _shared_browser(self.settings)
        self._future = asyncio.ensure_future(
            shared.open() if shared is not None else _open_screenshotter(self.settings)
        )

    def take(self) -> asyncio.Future[tuple[Any, str | None]] | None:
        """The starting (or started) browser, now the caller's to close; None if none."""
        future, self._future = self._future, None
        return future

    async def aclose(self) -> None:
        future = self.take()
        if future is not None:
            await _close_browser(future, _shared_browser(self.settings))


class _SharedBrowser:
    """One :class:`~monitor.evidence.Screenshotter` for the scans of a scheduler pass, each of
    which runs in an event loop of its own (``asyncio.run``): the browser lives on an event loop
    thread of its own, started at the first capture, and captures are sent to it. A browser that
    died is started again at the next scan's first capture."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="screenshot-browser", daemon=True
        )
        self._thread.start()
        self._shooter: Any = None

    def _run(self, coro: Any) -> asyncio.Future[Any]:
        """Run ``coro`` on the browser's loop; awaitable from any other loop (cancelling the
        awaiting task cancels it there too)."""
        return asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self._loop))

    async def _get(self) -> tuple[Any, str | None]:  # on the browser's loop
        shooter = self._shooter
        if shooter is not None and shooter.running:
            shooter.prepare()  # the first capture's tab (a new browser makes one as it starts)
            return shooter, None
        self._shooter = None
        if shooter is not None:
            with contextlib.suppress(Exception):
                await shooter.aclose()
        shooter, problem = await _open_screenshotter(self.settings)
        self._shooter = shooter
        return shooter, problem

    async def open(self) -> tuple[Any, str | None]:
        """The shared browser (as for :func:`_open_screenshotter`), started if need be."""
        # shielded: a scan cancelled meanwhile leaves a starting browser to finish starting
        # (it is kept, and closed with the others), never half-started
        shooter, problem = await asyncio.shield(self._run(self._get()))
        return (_RemoteScreenshotter(self, shooter) if shooter is not None else None), problem

    def close(self, timeout: float = 30.0) -> None:
        """Close the browser and stop its thread (errors are logged, never raised)."""
        shooter, self._shooter = self._shooter, None
        if shooter is not None:
            try:
                asyncio.run_coroutine_threadsafe(shooter.aclose(), self._loop).result(timeout)
            except Exception as exc:  # pragma: no cover - a browser that already died
                log.info("closing the shared screenshot browser failed: %s", exc)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout)
        if not self._thread.is_alive():
            self._loop.close()


class _RemoteScreenshotter:
    """The shared browser as a scan's loop sees it: ``capture`` runs on the browser's loop."""

    def __init__(self, host: _SharedBrowser, shooter: Any) -> None:
        self._host, self._shooter = host, shooter

    async def capture(self, *args: Any, **kwargs: Any) -> Any:
        return await self._host._run(self._shooter.capture(*args, **kwargs))

    async def shoot(self, *args: Any, **kwargs: Any) -> Any:
        return await self._host._run(self._shooter.shoot(*args, **kwargs))

    async def close_tabs(self) -> None:
        await self._host._run(self._shooter.close_tabs())


_shared = threading.local()  # .browser: the _SharedBrowser of this thread's scans, if any


def _shared_browser(settings: Settings) -> _SharedBrowser | None:
    host = getattr(_shared, "browser", None)
    return host if host is not None and host.settings is settings else None


@contextlib.contextmanager
def shared_screenshots(settings: Settings) -> Iterator[None]:
    """Within this block, evidence captured in this thread with these ``settings`` (scans run
    one after another, each with ``asyncio.run``) shares one screenshot browser, started at the
    first capture and closed at the end of the block, instead of starting one per scan."""
    previous = getattr(_shared, "browser", None)
    host = _SharedBrowser(settings)
    _shared.browser = host
    try:
        yield
    finally:
        _shared.browser = previous
        host.close()


async def _open_screenshotter(settings: Settings) -> tuple[Any, str | None]:
    """A started :class:`monitor.evidence.Screenshotter`, or ``None`` and why not."""
    if not settings.cases.screenshots:
        return None, None
    try:
        from monitor.evidence import Screenshotter

        shooter = Screenshotter(
            timeout=settings.cases.screenshot_timeout,
            allow_private_networks=settings.fetch.allow_private_networks,
            user_agent=settings.fetch.user_agent,
            javascript=settings.cases.screenshot_javascript,
        )
        await shooter.__aenter__()
        return shooter, None
    except Exception as exc:
        return None, f"screenshot: {_reason(exc)}"


def _record(
    db: Database, job: _Job, files: list[dict[str, Any]], problems: list[str], now: datetime
) -> None:
    with db.session() as s:
        st = s.get(SightingState, job.sighting_id)
        if st is None:  # erased meanwhile
            return
        all_files = evidence_files(st) + files
        st.evidence_files = json.dumps(all_files) if all_files else None
        st.evidence_attempts = (st.evidence_attempts or 0) + 1
        if files:
            st.evidence_at = now
        if problems:
            st.evidence_status = "failed"
            st.evidence_error = "; ".join(problems)[:4000]
            add_event(s, job.case_id, "evidence_failed", f"{job.page_url}: {st.evidence_error}")
        else:
            st.evidence_status, st.evidence_error = "captured", None
            kinds = ", ".join(f["kind"] for f in files)
            add_event(s, job.case_id, "evidence_captured", f"{job.page_url} ({kinds})")


def erase_evidence(settings: Settings, case_ids: list[int]) -> None:
    """Delete the evidence folders of these cases (a person's erasure)."""
    from monitor.evidence import remove_evidence

    for case_id in case_ids:
        remove_evidence(settings, evidence_key(case_id))


def case_evidence_files(settings: Settings, db: Database, case_id: int) -> list[Path]:
    """Every evidence file recorded for a case that still exists on disk."""
    from monitor.cases.core import case_sightings, get_case

    with db.session() as s:
        case = get_case(s, case_id)
        states = sighting_states(s, [x.id for x in case_sightings(s, case)])
        paths = [Path(f["path"]) for st in states.values() for f in evidence_files(st)]
    return [p for p in paths if p.is_file()]


def export_bundle(
    settings: Settings,
    db: Database,
    case_id: int,
    out_zip: Path,
    *,
    label: str = "Subject",
    include_image_copy: bool = False,
) -> Any:
    """Write the case's evidence zip (:func:`monitor.evidence.build_bundle`): every capture, a
    printable report with the addresses, dates and hashes, and the case's dated history.

    A kept image copy (:mod:`monitor.cases.image_copies`) is left out unless
    ``include_image_copy``: then it is decrypted in memory into ``images/`` (the caller asks the
    person first). Raises :class:`~monitor.cases.image_copies.ImageCopyError` when asked for a
    copy and the case has none.

    For a person marked as possibly under 18 the bundle holds no capture (none was made): only
    the addresses, dates and hashes, for a hotline or the police."""
    from monitor.cases import image_copies
    from monitor.cases.core import case_sightings, get_case, hotline_lines
    from monitor.db.models import CaseEvent
    from monitor.evidence import (
        CaptureInfo,
        CaseInfo,
        EvidenceFile,
        ImageCopy,
        SightingInfo,
        build_bundle,
    )
    from monitor.matching import thresholds_from_config

    thresholds = thresholds_from_config(settings.match)
    with db.session() as s:
        case = get_case(s, case_id)
        subject = s.get(Subject, case.subject_id)
        image = s.get(Image, case.image_id)
        assert subject is not None and image is not None
        from monitor.store import image_hashes

        stored = image_hashes(s, image)
        pdq, phash = stored.get("pdq"), stored.get("phash")
        sightings = case_sightings(s, case)
        states = sighting_states(s, [x.id for x in sightings])
        if include_image_copy and subject.minor:
            raise image_copies.ImageCopyRefused(image_copies.MINOR_REFUSAL)
        infos, files, copies = [], [], []
        for x in sightings:
            captures = []
            for f in evidence_files(states[x.id]):
                path = Path(f["path"])
                if not path.is_file():
                    continue
                when = datetime.fromisoformat(str(f["captured_at"]).replace("Z", "+00:00"))
                if f.get("kind") == image_copies.KIND:
                    if not include_image_copy:
                        continue
                    data = image_copies.read_copy(db.keystore, f, case.id, x.id)
                    name = f"case-{case.id}-s{x.id}-{f['image_sha256'][:16]}{_image_ext(data)}"
                    copies.append(ImageCopy(name, data, f"the image found at {x.image_url}"))
                    captures.append(
                        CaptureInfo("image_copy", name, when, f["image_sha256"], f.get("url", ""))
                    )
                    continue
                captures.append(
                    CaptureInfo(f["kind"], path.name, when, f["sha256"], f.get("url", ""))
                )
                files.append(
                    EvidenceFile(path, f["sha256"], f["kind"], f"{f['kind']} of {x.page_url}")
                )
            infos.append(
                SightingInfo(
                    page_url=x.page_url,
                    image_url=x.image_url,
                    first_seen=x.first_seen,
                    last_seen=x.last_seen,
                    algorithm=case.algorithm,
                    distance=case.distance,
                    threshold=thresholds.get(case.algorithm),
                    sha256=image.sha256,
                    pdq=pdq.value if pdq else None,
                    phash=phash.value if phash else None,
                    captures=tuple(captures),
                )
            )
        history = [
            f"{e.at:%Y-%m-%d %H:%M:%S} UTC  {e.kind}  {e.detail}".rstrip()
            for e in s.scalars(
                select(CaseEvent).where(CaseEvent.match_id == case.id).order_by(CaseEvent.id)
            )
        ]
        notes = [f"Case state: {case.status}."]
        if subject.minor:
            notes.append(
                "The person may be under 18: no capture of the page was made and nothing of the "
                "image is kept beyond its hashes and addresses. Report the addresses to a "
                "child-abuse hotline: " + "; ".join(hotline_lines(settings))
            )
        if include_image_copy and not copies:
            raise image_copies.ImageCopyError(
                f"case {case.id} has no kept image copy (keeping copies is off for this person, "
                "or none was captured yet); nothing was written"
            )
        if copies:
            notes.append(
                "This bundle holds a copy of the image itself (images/), added at the person's "
                "explicit request."
            )
        if history:
            notes.append("History:\n" + "\n".join(history))
        info = CaseInfo(
            case_id=str(case.id),
            subject_label=label,
            sightings=tuple(infos),
            notes="\n\n".join(notes),
        )
    return build_bundle(info, files, Path(out_zip), image_copies=copies)


def _image_ext(data: bytes) -> str:
    """A file extension for image bytes (from their format), ``.bin`` when unknown."""
    import io

    from PIL import Image as PILImage

    try:
        with PILImage.open(io.BytesIO(data)) as im:
            fmt = (im.format or "").lower()
    except Exception:
        return ".bin"
    return {"jpeg": ".jpg", "": ".bin"}.get(fmt, f".{fmt}")
