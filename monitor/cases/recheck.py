"""Re-checks: fetch every place a case was seen again and decide whether it is still there.

For each sighting (through :class:`~monitor.fetch.Fetcher`, the image hashed in memory with
:func:`~monitor.hashing.compute_hashes`, never written anywhere):

* ``gone``: the image's own address answers 404/410/451 (whatever the page does);
* ``changed``: the image's address serves an image that no longer matches the case's image;
* ``online``: the image (or a matching copy on the same page) is there. A page that no longer
  shows the image (drawn by script, moved, or the page itself gone) while the image's address
  still serves it is "online, unlinked": still online;
* ``unreachable``: anything else (time-out, 5xx, robots.txt...): no conclusion is drawn.

``gone`` and ``changed`` are only recorded when a second check at least ``[cases]
recheck_confirm`` after the first still says so; meanwhile the place is ``missing`` (not yet
confirmed; a case with such a place is checked again once the time has passed). A case whose
every place is gone or changed is ``removed``. A place that was gone and is online again, or a
removed case seen again (also by a scan), is a reappearance: the case becomes
``still_online`` and the person gets a discreet alert (no name, no URL) through the outbox.
Re-checks also retry evidence captures that failed.

Nothing is re-checked for a person whose monitoring is paused (an organisation's person whose
consent expired, was withdrawn or is not confirmed yet; the same gate as scans,
:func:`monitor.orgs.consent.paused_because`): the scheduler leaves their cases out, and a
re-check asked for by hand is refused with :class:`~monitor.orgs.consent.ConsentRequired`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import and_, or_, select

from monitor import alerts
from monitor.cases.capture import CaptureReport, EarlyBrowser, ScannedPage, capture_pending
from monitor.cases.contacts import page_language
from monitor.cases.core import OPEN_STATES, add_event, case_sightings, get_case, sighting_states
from monitor.config import Settings
from monitor.db import Database
from monitor.db.models import Image, Match, Scan, Sighting, SightingState, Subject, utcnow
from monitor.errors import FetchError, MonitorError, NotAnImageError
from monitor.extract import charset_from_content_type, extract_images
from monitor.fetch import BadStatusError, Fetcher
from monitor.hashing import hamming
from monitor.leases import ScanInProgress, scan_lease
from monitor.matching import thresholds_from_config
from monitor.orgs import consent
from monitor.store import image_hashes
from monitor.types import ImageHashes
from monitor.video import hash_media

__all__ = [
    "CheckResult",
    "RecheckReport",
    "after_scan",
    "check_sighting",
    "recheck_case",
    "recheck_due",
    "run_due_rechecks",
]

log = logging.getLogger("monitor.cases.recheck")

GONE_STATUSES = frozenset({404, 410, 451})

MISSING = "missing"
"""A place a check found gone or changed, not yet confirmed by a second check at least
``[cases] recheck_confirm`` later (``SightingState.gone_at``: when it was first found so)."""


@dataclass(frozen=True, slots=True)
class CheckResult:
    state: str  # online | gone | changed | unreachable
    detail: str
    lang: str | None = None


@dataclass
class RecheckReport:
    case_id: int
    status: str = ""
    online: int = 0
    gone: int = 0
    missing: int = 0  # found gone or changed once, to be confirmed by a later check
    unreachable: int = 0
    reappeared: int = 0
    alerted: int = 0
    evidence_captured: int = 0
    details: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, object]:
        return {
            "case": self.case_id,
            "status": self.status,
            "online": self.online,
            "gone": self.gone,
            "missing": self.missing,
            "unreachable": self.unreachable,
            "reappeared": self.reappeared,
            "alerted": self.alerted,
            "evidence_captured": self.evidence_captured,
            "details": self.details,
        }


def _same_image(found: ImageHashes, known: ImageHashes, thresholds: dict[str, int]) -> bool:
    if found.sha256 == known.sha256:
        return True
    for h in known.hashes:
        other = found.get(h.algorithm)
        limit = thresholds.get(h.algorithm)
        if other is not None and limit is not None and hamming(h.value, other.value) <= limit:
            return True
    return False


async def _image_state(
    fetcher: Fetcher, url: str, known: ImageHashes, thresholds: dict[str, int]
) -> CheckResult:
    try:
        # fetch_video also takes images: a case may be a video or an animation, whose matching
        # frame need not be the first one. A video over max_video_bytes: its start, as the
        # scan sampled it.
        res = await fetcher.fetch_video(url, partial=True)
    except BadStatusError as exc:
        if exc.status in GONE_STATUSES:
            return CheckResult("gone", f"the image answers HTTP {exc.status}")
        return CheckResult("unreachable", f"the image: {exc.reason}")
    except FetchError as exc:
        return CheckResult("unreachable", f"the image: {exc.reason}")
    body = res.body
    del res
    try:
        media = await asyncio.to_thread(hash_media, body)
    except NotAnImageError as exc:
        return CheckResult("changed", f"the address no longer holds an image ({exc})")
    finally:
        del body
    candidates = [media.still, *(f.hashes for f in media.frames)]
    if any(_same_image(found, known, thresholds) for found in candidates):
        return CheckResult("online", "the image is still there")
    return CheckResult("changed", "the image at this address no longer matches")


async def check_sighting(
    fetcher: Fetcher,
    page_url: str,
    image_url: str,
    known: ImageHashes,
    thresholds: dict[str, int],
    *,
    max_images: int = 50,
) -> CheckResult:
    """Is the case's image still at (``page_url``, ``image_url``)? See the module docstring."""
    if page_url == image_url:
        return await _image_state(fetcher, image_url, known, thresholds)
    try:
        page = await fetcher.fetch_page(page_url)
    except BadStatusError as exc:
        if exc.status in GONE_STATUSES:
            return await _unlinked(
                fetcher, image_url, known, thresholds, f"the page answers HTTP {exc.status}", None
            )
        return CheckResult("unreachable", f"the page: {exc.reason}")
    except FetchError as exc:
        if exc.reason.startswith("not an HTML page"):  # the page address is the image itself
            return await _image_state(fetcher, image_url, known, thresholds)
        return CheckResult("unreachable", f"the page: {exc.reason}")
    lang = page_language(page.body, page.headers.get("content-language", ""), page.content_type)
    urls = [
        c.image_url
        for c in extract_images(
            page.body,
            page.final_url,
            limit=10_000,
            encoding=charset_from_content_type(page.content_type),
        )
    ]
    del page
    if image_url in urls:
        result = await _image_state(fetcher, image_url, known, thresholds)
        if result.state != "changed":
            return CheckResult(result.state, result.detail, lang)
    # Not at its old address (or replaced there): is a matching copy elsewhere on the page?
    for url in [u for u in urls if u != image_url][:max_images]:
        other = await _image_state(fetcher, url, known, thresholds)
        if other.state == "online":
            return CheckResult("online", f"a matching copy is on the page at {url}", lang)
    if image_url in urls:
        return CheckResult("changed", "the image on the page no longer matches", lang)
    return await _unlinked(
        fetcher, image_url, known, thresholds, "the page no longer shows the image", lang
    )


async def _unlinked(
    fetcher: Fetcher,
    image_url: str,
    known: ImageHashes,
    thresholds: dict[str, int],
    why: str,
    lang: str | None,
) -> CheckResult:
    """The page no longer shows the image (``why``): whether its own address still serves
    it decides. Still served: "online, unlinked" (the page may draw it by script, or link it
    from elsewhere); 404/410/451: gone; another image: changed; else unreachable."""
    result = await _image_state(fetcher, image_url, known, thresholds)
    if result.state == "online":
        detail = f"online, unlinked: {why}, but the image's address still serves it"
        return CheckResult("online", detail, lang)
    return CheckResult(result.state, f"{why}, and {result.detail}", lang)


# ---------------------------------------------------------------- recording


def _alert(session, settings: Settings, subject: Subject, count: int) -> None:  # type: ignore[no-untyped-def]
    """A discreet alert for ``count`` reappeared items, queued in this transaction."""
    alerts.hold_alert(session, subject, None, new_items=count)  # type: ignore[arg-type]
    session.flush()
    alerts.release_alerts(session, settings)


def _apply(
    session,  # type: ignore[no-untyped-def]
    case: Match,
    sighting: Sighting,
    st: SightingState,
    result: CheckResult,
    now: datetime,
    confirm: timedelta = timedelta(0),
) -> bool:
    """Record one sighting's result; True if it reappeared (was gone/changed, now online).

    A place found gone or changed is first ``missing``; it becomes gone or changed when a
    check at least ``confirm`` after the first still finds it so (at once if ``confirm`` is
    zero). Found online meanwhile, it is simply online again (no reappearance)."""
    before = st.state
    st.checked_at = now
    if result.lang:
        st.page_lang = result.lang[:35]
    if result.state == "unreachable":
        st.detail = result.detail  # keep the last known state
        return False
    if result.state in ("gone", "changed"):
        if before in ("gone", "changed"):
            st.state, st.detail = result.state, result.detail
            return False
        first = st.gone_at if before == MISSING and st.gone_at is not None else now
        if now - first >= confirm:
            st.state, st.detail, st.gone_at = result.state, result.detail, first
            add_event(session, case.id, "gone", f"{sighting.page_url}: {result.detail}", now=now)
        else:
            due = first + confirm
            st.state, st.gone_at = MISSING, first
            st.detail = (
                f"{result.detail} (to be confirmed by a check after {due:%Y-%m-%d %H:%M} UTC)"
            )
        return False
    st.state, st.detail = result.state, result.detail
    if before in ("gone", "changed"):
        st.gone_at = None
        add_event(session, case.id, "reappeared", f"{sighting.page_url}: {result.detail}", now=now)
        return True
    if before == MISSING:
        st.gone_at = None
    return False


def _settle(case: Match, states: list[SightingState], session, now: datetime) -> None:  # type: ignore[no-untyped-def]
    """Move the case to ``removed`` or ``still_online`` from its sightings' states."""
    if case.status == "dismissed" or not states:
        return
    online = any(st.state == "online" for st in states)
    all_gone = all(st.state in ("gone", "changed") for st in states)
    if all_gone and case.status != "removed":
        case.status, case.removed_at = "removed", now
        add_event(session, case.id, "removed", "every place it was seen is gone", now=now)
    elif online and case.status in ("removed", "notice_sent"):
        was = case.status
        case.status, case.removed_at = "still_online", None
        add_event(session, case.id, "still_online", f"was {was}", now=now)


async def recheck_case(
    settings: Settings,
    db: Database,
    case_id: int,
    *,
    fetcher: Fetcher | None = None,
    now: datetime | None = None,
    capture: bool = True,
) -> RecheckReport:
    """Fetch every place of one case again, record what was found, alert on a reappearance,
    and retry evidence captures that failed. Dismissed cases are not checked; a paused
    person's cases are refused (:class:`~monitor.orgs.consent.ConsentRequired`)."""
    if fetcher is None:
        async with Fetcher(settings.fetch) as own:
            return await recheck_case(settings, db, case_id, fetcher=own, now=now, capture=capture)
    report = RecheckReport(case_id)
    with db.session() as s:
        case = get_case(s, case_id)
        _check_not_paused(s, case.subject_id, now)
        report.status = case.status
        if case.status == "dismissed":
            report.details.append("dismissed: not checked")
            return report
        image = s.get(Image, case.image_id)
        assert image is not None
        known = image_hashes(s, image)
        places = [(x.id, x.page_url, x.image_url) for x in case_sightings(s, case)]
    thresholds = thresholds_from_config(settings.match)
    results = [
        (
            sid,
            await check_sighting(
                fetcher,
                page,
                img,
                known,
                thresholds,
                max_images=settings.cases.max_recheck_images,
            ),
        )
        for sid, page, img in places
    ]
    at = now or utcnow()
    confirm = settings.cases.recheck_confirm
    with db.session() as s:
        case = get_case(s, case_id)
        states = sighting_states(s, [sid for sid, _ in results])
        sightings = {x.id: x for x in case_sightings(s, case)}
        for sid, result in results:
            if sid not in sightings:
                continue
            if _apply(s, case, sightings[sid], states[sid], result, at, confirm):
                report.reappeared += 1
            report.details.append(f"{sightings[sid].page_url}: {result.state} ({result.detail})")
        was_removed = case.status == "removed"
        _settle(case, [states[sid] for sid in sightings], s, at)
        if was_removed and case.status != "removed" and not report.reappeared:
            report.reappeared = 1
        case.last_checked_at = at
        if report.reappeared:
            subject = s.get(Subject, case.subject_id)
            assert subject is not None
            _alert(s, settings, subject, report.reappeared)
            report.alerted = report.reappeared
        report.status = case.status
        report.online = sum(1 for sid in sightings if states[sid].state == "online")
        report.gone = sum(1 for sid in sightings if states[sid].state in ("gone", "changed"))
        report.missing = sum(1 for sid in sightings if states[sid].state == MISSING)
        report.unreachable = sum(1 for _, r in results if r.state == "unreachable")
    if capture:
        captured = await capture_pending(settings, db, case_ids=[case_id])
        report.evidence_captured = captured.captured
    return report


def _check_not_paused(session, subject_id: int, now: datetime | None) -> None:  # type: ignore[no-untyped-def]
    """:class:`ConsentRequired` when monitoring of the person is paused (consent expired,
    withdrawn, not confirmed, or paused): their places are not fetched again either."""
    subject = session.get(Subject, subject_id)
    reason = consent.paused_because(session, subject, now) if subject is not None else None
    if reason is not None:
        raise consent.ConsentRequired(
            f"not re-checked: {reason}; monitoring is paused until consent is renewed"
        )


def _due_cases(
    db: Database, now: datetime, every_seconds: float, confirm_seconds: float = 0.0
) -> dict[int, list[int]]:
    """Open cases not checked for ``recheck_every``, and those with a place found missing at
    least ``recheck_confirm`` ago (to confirm it), by subject id. People whose monitoring is
    paused (the scans' consent gate, :func:`monitor.orgs.consent.paused_because`) are left
    out: nothing is fetched for them until consent is renewed."""
    cutoff = now - timedelta(seconds=every_seconds)
    confirm_cutoff = now - timedelta(seconds=confirm_seconds)
    to_confirm = (
        select(Sighting.id)
        .join(SightingState, SightingState.sighting_id == Sighting.id)
        .where(
            Sighting.subject_id == Match.subject_id,
            Sighting.image_id == Match.image_id,
            SightingState.state == MISSING,
            SightingState.gone_at <= confirm_cutoff,
        )
        .exists()
    )
    with db.session() as s:
        rows = s.execute(
            select(Match.subject_id, Match.id)
            .where(
                Match.status.in_(OPEN_STATES),
                or_(
                    and_(
                        Match.last_checked_at.is_(None) | (Match.last_checked_at <= cutoff),
                        # a case is first checked one interval after it was found
                        Match.first_seen <= cutoff,
                    ),
                    to_confirm,
                ),
            )
            .order_by(Match.subject_id, Match.id)
        ).all()
        paused = {
            subject_id
            for subject_id in {r.subject_id for r in rows}
            if (subject := s.get(Subject, subject_id)) is None
            or consent.paused_because(s, subject, now) is not None
        }
    out: dict[int, list[int]] = {}
    for subject_id, case_id in rows:
        if subject_id not in paused:
            out.setdefault(subject_id, []).append(case_id)
    if paused:
        log.info("%d person(s) paused (consent): their cases are not re-checked", len(paused))
    return out


async def recheck_due(
    settings: Settings, db: Database, *, now: datetime | None = None
) -> list[RecheckReport]:
    """Re-check every open case due (``[cases] recheck_every``), one person at a time under
    their scan lease (a person being scanned is skipped until the next round)."""
    at = now or utcnow()
    due = _due_cases(
        db,
        at,
        settings.cases.recheck_every.total_seconds(),
        settings.cases.recheck_confirm.total_seconds(),
    )
    reports: list[RecheckReport] = []
    async with Fetcher(settings.fetch) as fetcher:
        for subject_id, case_ids in due.items():
            try:
                with scan_lease(db, subject_id):
                    for case_id in case_ids:
                        try:
                            reports.append(
                                await recheck_case(settings, db, case_id, fetcher=fetcher, now=now)
                            )
                        except MonitorError as exc:
                            log.warning(
                                "case %d: re-check failed (%s)", case_id, type(exc).__name__
                            )
            except ScanInProgress:
                log.info("subject %d: being scanned; its cases are re-checked later", subject_id)
    return reports


def run_due_rechecks(settings: Settings, db: Database) -> list[RecheckReport]:
    """:func:`recheck_due` for the scheduler's thread; alerts are delivered by its outbox job."""
    return asyncio.run(recheck_due(settings, db))


async def after_scan(
    settings: Settings,
    db: Database,
    subject_id: int,
    scan_id: int,
    *,
    before_capture: Callable[[], object] | None = None,
    pages: Mapping[str, ScannedPage] | None = None,
    browser: EarlyBrowser | None = None,
) -> CaptureReport | None:
    """After a scan's matches are committed: removed places seen again are reappearances (a
    discreet alert), then ``before_capture()`` (the scan sends its alerts: capturing never
    delays them, and a failure to send does not stop it), then new sightings get their
    evidence captured (``pages``, ``browser``: see :func:`capture_pending`). Never raises;
    returns the capture report (None if capturing itself broke)."""
    try:
        _reappeared_in_scan(settings, db, subject_id, scan_id)
    except Exception:
        log.exception("scan %d: checking for reappearances failed", scan_id)
    if before_capture is not None:
        try:
            before_capture()
        except Exception:
            log.exception("scan %d: sending alerts failed; they stay queued", scan_id)
    try:
        report = await capture_pending(
            settings, db, subject_id=subject_id, pages=pages, early=browser
        )
        if report.failed:
            log.info(
                "scan %d: %d evidence capture(s) failed; retried on re-check",
                scan_id,
                report.failed,
            )
        return report
    except Exception:
        log.exception("scan %d: evidence capture failed; retried on re-check", scan_id)
        return None


def _reappeared_in_scan(settings: Settings, db: Database, subject_id: int, scan_id: int) -> None:
    with db.session() as s:
        scan = s.get(Scan, scan_id)
        if scan is None:
            return
        rows = s.execute(
            select(Match, Sighting)
            .join(
                Sighting,
                (Sighting.subject_id == Match.subject_id) & (Sighting.image_id == Match.image_id),
            )
            .where(
                Match.subject_id == subject_id,
                Match.status.in_(OPEN_STATES),
                Sighting.last_seen >= scan.started_at,
            )
        ).all()
        if not rows:
            return
        states = sighting_states(s, [sighting.id for _, sighting in rows])
        now = utcnow()
        reappeared = 0
        cases: dict[int, Match] = {}
        for case, sighting in rows:
            st = states[sighting.id]
            cases[case.id] = case
            new_place = sighting.first_scan_id == scan_id
            if st.state in ("gone", "changed"):
                # Seen again by this scan: known places alert here; new places already alerted
                # through the scan's own outbox row.
                result = CheckResult("online", "found again by a scan")
                _apply(s, case, sighting, st, result, now)
                reappeared += 0 if new_place else 1
            elif st.state == MISSING:  # not confirmed gone: simply online again
                _apply(s, case, sighting, st, CheckResult("online", "found again by a scan"), now)
            elif case.status == "removed":
                if not new_place:
                    reappeared += 1
                add_event(s, case.id, "new_copy" if new_place else "reappeared", sighting.page_url)
        for case in cases.values():
            all_states = sighting_states(s, [x.id for x in case_sightings(s, case)])
            _settle(case, list(all_states.values()), s, now)
        if reappeared:
            subject = s.get(Subject, subject_id)
            assert subject is not None
            _alert(s, settings, subject, reappeared)
