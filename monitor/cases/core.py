"""Cases: one per matched image (by content) per person, built on ``Match`` and its sightings.

A case moves through these states (``Match.status``)::

    new -> confirmed | dismissed          only a person decides (confirm / dismiss)
    confirmed -> notice_drafted -> notice_sent
    any open state -> removed             every place it was seen is gone or no longer matches
    removed | notice_sent -> still_online a re-check or a scan finds it (again)

A dismissed case is never re-checked and never alerts again. Everything a case goes through is
dated in ``CaseEvent`` rows, shown by ``case show``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from monitor.config import Settings
from monitor.db.models import (
    CaseContact,
    CaseEvent,
    Image,
    Match,
    Notice,
    Sighting,
    SightingState,
    Subject,
    utcnow,
)
from monitor.errors import MonitorError
from monitor.matching import explain_match
from monitor.types import iso_utc as _iso

__all__ = [
    "OPEN_STATES",
    "STATES",
    "CaseDetail",
    "CaseNotFound",
    "CaseStateError",
    "CaseSummary",
    "add_event",
    "case_detail",
    "confirm_case",
    "dismiss_case",
    "get_case",
    "list_cases",
    "next_steps",
    "sighting_states",
]

STATES = (
    "new",
    "confirmed",
    "dismissed",
    "notice_drafted",
    "notice_sent",
    "removed",
    "still_online",
)
OPEN_STATES = tuple(s for s in STATES if s != "dismissed")
"""States a re-check looks at (removed ones too: a removed image can come back)."""

POLICE_ADVICE = (
    "Keep the evidence (this tool captured it: `case evidence ID OUT.zip`) before you ask for "
    "removal, with the dates and times.",
    "Never pay anyone who threatens to publish images, and do not keep or send copies of "
    "images that may show someone under 18.",
    "You can report this to the police; take the evidence bundle with you.",
)


class CaseNotFound(MonitorError):
    """No case has that number."""


class CaseStateError(MonitorError):
    """The action does not fit the case's state (e.g. a notice for a dismissed case)."""


def get_case(session: Session, case_id: int) -> Match:
    from monitor.orgs.scope import subject_in_scope

    case = session.get(Match, case_id)
    # a case of someone outside the scope in force (monitor/orgs) is "not found", like none
    if case is None or not subject_in_scope(session, case.subject_id):
        raise CaseNotFound(f"there is no case {case_id} (see `cases`)")
    return case


def is_minor_case(session: Session, case_id: int) -> bool:
    """Whether the case's person is marked as possibly under 18."""
    subject = session.get(Subject, get_case(session, case_id).subject_id)
    return bool(subject is not None and subject.minor)


def add_event(
    session: Session, case_id: int, kind: str, detail: str = "", *, now: datetime | None = None
) -> None:
    session.add(CaseEvent(match_id=case_id, kind=kind, detail=detail, at=now or utcnow()))


def sighting_states(session: Session, sighting_ids: Sequence[int]) -> dict[int, SightingState]:
    """The state row of each sighting, created (``online``, evidence ``pending``) if missing."""
    ids = list(dict.fromkeys(sighting_ids))
    if not ids:
        return {}
    found = {
        st.sighting_id: st
        for st in session.scalars(select(SightingState).where(SightingState.sighting_id.in_(ids)))
    }
    for sid in ids:
        if sid not in found:
            st = SightingState(
                sighting_id=sid,
                state="online",
                detail="",
                evidence_status="pending",
                evidence_attempts=0,
            )
            session.add(st)
            found[sid] = st
    session.flush()
    return found


def case_sightings(session: Session, case: Match) -> list[Sighting]:
    return list(
        session.scalars(
            select(Sighting)
            .where(Sighting.subject_id == case.subject_id, Sighting.image_id == case.image_id)
            .order_by(Sighting.first_seen, Sighting.id)
        )
    )


# ---------------------------------------------------------------- decisions


def confirm_case(session: Session, case_id: int, *, now: datetime | None = None) -> Match:
    """A person says: this is me, published without my consent."""
    case = get_case(session, case_id)
    now = now or utcnow()
    if case.status in ("new", "dismissed"):
        was = case.status
        case.status, case.decided_at = "confirmed", now
        add_event(session, case.id, "confirmed", f"was {was}", now=now)
    return case


def dismiss_case(session: Session, case_id: int, *, now: datetime | None = None) -> Match:
    """A person says: this is not me (or not a problem). It never alerts again."""
    case = get_case(session, case_id)
    now = now or utcnow()
    if case.status != "dismissed":
        was = case.status
        case.status, case.decided_at = "dismissed", now
        add_event(session, case.id, "dismissed", f"was {was}", now=now)
    return case


# ---------------------------------------------------------------- views


@dataclass(frozen=True, slots=True)
class CaseSummary:
    id: int
    subject: str
    minor: bool
    status: str
    first_seen: datetime
    last_seen: datetime | None
    sightings: int
    online: int
    evidence: int  # sightings with captured evidence
    last_checked_at: datetime | None
    removed_at: datetime | None

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("first_seen", "last_seen", "last_checked_at", "removed_at"):
            data[key] = _iso(data[key])
        return data


@dataclass(frozen=True, slots=True)
class SightingView:
    id: int
    page_url: str
    image_url: str
    first_seen: datetime
    last_seen: datetime
    state: str
    detail: str
    checked_at: datetime | None
    gone_at: datetime | None
    page_lang: str | None
    evidence_status: str
    evidence_files: list[dict[str, Any]]
    evidence_at: datetime | None
    evidence_error: str | None

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("first_seen", "last_seen", "checked_at", "gone_at", "evidence_at"):
            data[key] = _iso(data[key])
        return data


@dataclass(frozen=True, slots=True)
class CaseDetail:
    summary: CaseSummary
    algorithm: str
    distance: int
    sha256: str
    decided_at: datetime | None
    sightings: list[SightingView]
    contacts: list[dict[str, Any]]
    notices: list[dict[str, Any]]
    events: list[dict[str, Any]]
    next_steps: list[str] = field(default_factory=list)
    how: str = ""  # how it matched, in words (matching.explain_match); "" if not recorded

    def as_json(self) -> dict[str, Any]:
        return {
            **self.summary.as_json(),
            "algorithm": self.algorithm,
            "distance": self.distance,
            "how": self.how,
            "sha256": self.sha256,
            "decided_at": _iso(self.decided_at),
            "sightings": [s.as_json() for s in self.sightings],
            "contacts": self.contacts,
            "notices": self.notices,
            "events": self.events,
            "next_steps": self.next_steps,
        }


def list_cases(session: Session, subject_name: str | None = None) -> list[CaseSummary]:
    """Every case (newest first), or one person's."""
    stmt = (
        select(Match, Subject.name, Subject.minor)
        .join(Subject, Subject.id == Match.subject_id)
        .order_by(Match.first_seen.desc(), Match.id.desc())
    )
    from monitor.orgs.scope import scoped

    stmt = scoped(stmt, None)  # the people the scope in force may see (monitor/orgs)
    if subject_name is not None:
        from monitor.store import get_subject

        stmt = stmt.where(Match.subject_id == get_subject(session, subject_name).id)
    rows = session.execute(stmt).all()
    if not rows:
        return []
    keys = {(m.subject_id, m.image_id) for m, _, _ in rows}
    subject_ids = {k[0] for k in keys}
    per: dict[tuple[int, int], list[tuple[Sighting, SightingState | None]]] = {}
    for sighting, state in session.execute(
        select(Sighting, SightingState)
        .outerjoin(SightingState, SightingState.sighting_id == Sighting.id)
        .where(Sighting.subject_id.in_(subject_ids))
    ):
        key = (sighting.subject_id, sighting.image_id)
        if key in keys:
            per.setdefault(key, []).append((sighting, state))
    return [
        _summary(m, name, minor, per.get((m.subject_id, m.image_id), [])) for m, name, minor in rows
    ]


def _summary(
    case: Match,
    name: str,
    minor: bool,
    sightings: list[tuple[Sighting, SightingState | None]],
) -> CaseSummary:
    return CaseSummary(
        id=case.id,
        subject=name,
        minor=bool(minor),
        status=case.status,
        first_seen=case.first_seen,
        last_seen=max((s.last_seen for s, _ in sightings), default=None),
        sightings=len(sightings),
        online=sum(
            1
            for _, st in sightings
            if st is None or st.state in ("online", "unreachable", "missing")
        ),
        evidence=sum(
            1 for _, st in sightings if st is not None and st.evidence_status == "captured"
        ),
        last_checked_at=case.last_checked_at,
        removed_at=case.removed_at,
    )


def case_detail(session: Session, settings: Settings, case_id: int) -> CaseDetail:
    case = get_case(session, case_id)
    subject = session.get(Subject, case.subject_id)
    assert subject is not None
    sightings = case_sightings(session, case)
    states = {
        st.sighting_id: st
        for st in session.scalars(
            select(SightingState).where(
                SightingState.sighting_id.in_([s.id for s in sightings] or [-1])
            )
        )
    }
    views = [_sighting_view(s, states.get(s.id)) for s in sightings]
    image = session.get(Image, case.image_id)
    contacts = [
        {
            "rank": c.rank,
            "kind": c.kind,
            "value": c.value,
            "source": c.source,
            "found_at": c.found_at,
            "label": c.label,
            "sighting_id": c.sighting_id,
        }
        for c in session.scalars(
            select(CaseContact).where(CaseContact.match_id == case.id).order_by(CaseContact.rank)
        )
    ]
    notices = [
        {
            "id": n.id,
            "lang": n.lang,
            "created_at": _iso(n.created_at),
            "reply_to": n.reply_to,
            "sent_at": _iso(n.sent_at),
            "sent_to": n.sent_to,
        }
        for n in session.scalars(
            select(Notice).where(Notice.match_id == case.id).order_by(Notice.id)
        )
    ]
    events = [
        {"at": _iso(e.at), "kind": e.kind, "detail": e.detail}
        for e in session.scalars(
            select(CaseEvent).where(CaseEvent.match_id == case.id).order_by(CaseEvent.id)
        )
    ]
    summary = _summary(
        case, subject.name, subject.minor, [(s, states.get(s.id)) for s in sightings]
    )
    return CaseDetail(
        summary=summary,
        algorithm=case.algorithm,
        distance=case.distance,
        sha256=image.sha256 if image else "",
        decided_at=case.decided_at,
        sightings=views,
        contacts=contacts,
        notices=notices,
        events=events,
        next_steps=next_steps(settings, case.id, case.status, minor=subject.minor),
        how=explain_match(case.how),
    )


def evidence_files(st: SightingState | None) -> list[dict[str, Any]]:
    """The evidence files recorded for a sighting: kind, path, sha256, url, captured_at."""
    if st is None or not st.evidence_files:
        return []
    try:
        files = json.loads(st.evidence_files)
    except ValueError:
        return []
    return [f for f in files if isinstance(f, dict)]


def _sighting_view(s: Sighting, st: SightingState | None) -> SightingView:
    return SightingView(
        id=s.id,
        page_url=s.page_url,
        image_url=s.image_url,
        first_seen=s.first_seen,
        last_seen=s.last_seen,
        state=st.state if st else "online",
        detail=st.detail if st else "",
        checked_at=st.checked_at if st else None,
        gone_at=st.gone_at if st else None,
        page_lang=st.page_lang if st else None,
        evidence_status=st.evidence_status if st else "pending",
        evidence_files=evidence_files(st),
        evidence_at=st.evidence_at if st else None,
        evidence_error=st.evidence_error if st else None,
    )


# ---------------------------------------------------------------- next steps


def hotline_lines(settings: Settings) -> list[str]:
    cfg = settings.cases
    if cfg.hotline_name or cfg.hotline_url:
        return [f"{cfg.hotline_name or 'Hotline'}: {cfg.hotline_url}".rstrip(": ")]
    return list(cfg.hotlines)


def next_steps(settings: Settings, case_id: int, status: str, *, minor: bool) -> list[str]:
    """What the person can do next, in order, for a case in ``status``."""
    if status == "dismissed":
        return [f"Dismissed: it will not alert again. `case confirm {case_id}` undoes this."]
    if minor:
        return [
            "This person may be under 18. Do not contact the site and do not keep, download or "
            "send copies of the image. Report the web addresses (only the addresses) to a "
            "child-abuse hotline:",
            *(f"  {line}" for line in hotline_lines(settings)),
            "Take It Down (NCMEC) helps remove images taken before someone was 18: "
            "https://takeitdown.ncmec.org",
            "You can also report it to the police.",
        ]
    steps: list[str] = []
    if status == "new":
        steps.append(
            f"Look at the addresses and decide: `case confirm {case_id}` (it is you, without "
            f"consent) or `case dismiss {case_id}` (it is not)."
        )
    if status in ("new", "confirmed", "notice_drafted", "still_online"):
        steps.append(
            f"Draft a removal request to the site: `case notice {case_id}` (send it with "
            f"`--send ADDRESS`; nothing is sent without your confirmation)."
        )
    if status == "notice_sent":
        steps.append(
            "Wait for the site's answer; re-checks tell you when the image is gone "
            f"(`case recheck {case_id}` checks now)."
        )
    if status == "removed":
        steps.append("Removed. Re-checks continue and alert you if it comes back.")
    steps.append("Ask search engines and hash-sharing services to remove or block it:")
    steps.extend(f"  {form}" for form in settings.cases.removal_forms)
    steps.extend(POLICE_ADVICE)
    return steps


def count_open(session: Session) -> int:
    """Open cases of the people in the scope in force (monitor/orgs)."""
    from monitor.orgs.scope import scoped

    stmt = (
        select(func.count())
        .select_from(Match)
        .join(Subject, Subject.id == Match.subject_id)
        .where(Match.status.in_(OPEN_STATES))
    )
    return int(session.scalar(scoped(stmt, None)) or 0)
