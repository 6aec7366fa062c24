"""Casework for organisations: cases assigned to caseworkers, what came of each removal
request (sent, acknowledged, removed, refused, with dates), where alerts go, statistics."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import urlsplit

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from monitor.cases.core import get_case
from monitor.db.models import Match, Notice, Operator, Sighting, Subject, utcnow
from monitor.errors import MonitorError
from monitor.orgs.accounts import find_by_email
from monitor.orgs.memberships import role_in
from monitor.orgs.scope import Scope, resolve

ALERT_TO = ("person", "caseworker", "both")
REQUEST_STATES = ("acknowledged", "removed", "refused")


def assign_case(session: Session, case_id: int, email: str, scope: Scope | None = None) -> Match:
    """Give a case to one of the organisation's caseworkers (or admins)."""
    scope = resolve(scope)
    if scope is None or scope.org_id is None:
        raise MonitorError("case assignment is for organisations: give --operator EMAIL")
    scope.require("admin", "caseworker")
    case = get_case(session, case_id)  # "not found" outside the scope
    op = find_by_email(session, email)
    role = role_in(session, op, scope.org_id) if op is not None else None  # members too
    if op is None or role is None:
        raise MonitorError(f"no operator {email!r} in this organisation")
    if role not in ("admin", "caseworker"):
        raise MonitorError(f"{op.email} is a {role}: cases go to caseworkers or admins")
    case.assigned_to = op.id
    return case


def record_request_outcome(
    session: Session, case_id: int, state: str, at: datetime | None = None
) -> Notice:
    """Record what the site did with the case's latest sent removal request."""
    if state not in REQUEST_STATES:
        raise MonitorError(f"state must be one of {', '.join(REQUEST_STATES)}")
    get_case(session, case_id)
    notice = session.scalar(
        select(Notice)
        .where(Notice.match_id == case_id, Notice.sent_at.is_not(None))
        .order_by(Notice.sent_at.desc(), Notice.id.desc())
        .limit(1)
    )
    if notice is None:
        raise MonitorError(f"case {case_id} has no sent removal request (`case notice --send`)")
    setattr(notice, f"{state}_at", at or utcnow())
    return notice


def requests_of(session: Session, case_id: int) -> list[dict[str, object]]:
    from monitor.types import iso_utc

    get_case(session, case_id)
    return [
        {
            "notice": n.id,
            "sent_at": iso_utc(n.sent_at),
            "sent_to": n.sent_to,
            "acknowledged_at": iso_utc(n.acknowledged_at),
            "removed_at": iso_utc(n.removed_at),
            "refused_at": iso_utc(n.refused_at),
        }
        for n in session.scalars(
            select(Notice).where(Notice.match_id == case_id).order_by(Notice.id)
        )
    ]


def alert_recipient(session: Session, subject: Subject) -> str | None:
    """Where the person's alerts go: their address, their caseworkers' (those assigned to
    their cases, else the organisation's caseworkers), or both (``Subject.alert_to``)."""
    if subject.organisation_id is None or subject.alert_to == "person":
        return subject.email
    workers = caseworker_addresses(session, subject)
    if subject.alert_to == "caseworker":
        addresses = workers
    else:
        addresses = ([subject.email] if subject.email else []) + workers
    return ", ".join(dict.fromkeys(addresses)) or subject.email


def caseworker_addresses(session: Session, subject: Subject) -> list[str]:
    assigned = list(
        session.scalars(
            select(Operator.email)
            .join(Match, Match.assigned_to == Operator.id)
            .where(Match.subject_id == subject.id, Operator.disabled_at.is_(None))
            .distinct()
        )
    )
    if assigned:
        return sorted(assigned)
    return list(
        session.scalars(
            select(Operator.email)
            .where(
                Operator.organisation_id == subject.organisation_id,
                Operator.role == "caseworker",
                Operator.disabled_at.is_(None),
            )
            .order_by(Operator.email)
        )
    )


# ---------------------------------------------------------------- statistics


@dataclass
class SiteStats:
    cases: int = 0
    removed: int = 0
    days: list[float] = field(default_factory=list)

    def as_json(self) -> dict[str, object]:
        return {
            "cases": self.cases,
            "removed": self.removed,
            "removal_rate": round(self.removed / self.cases, 3) if self.cases else None,
            "median_days_to_removal": round(statistics.median(self.days), 1) if self.days else None,
        }


def removal_stats(session: Session, org_id: int | None) -> dict[str, object]:
    """Removal rate and median days from first sighting to removal, overall and by site
    (the host of the page the image was first seen on), for one organisation's cases (None:
    the household's). Cases dismissed as "not me" do not count."""
    owner = (
        Subject.organisation_id.is_(None) if org_id is None else Subject.organisation_id == org_id
    )
    first_page = (
        select(Sighting.page_url)
        .where(Sighting.subject_id == Match.subject_id, Sighting.image_id == Match.image_id)
        .order_by(Sighting.first_seen, Sighting.id)
        .limit(1)
        .scalar_subquery()
    )
    rows = session.execute(
        select(Match.first_seen, Match.removed_at, first_page)
        .join(Subject, Subject.id == Match.subject_id)
        .where(owner, Match.status != "dismissed")
    ).all()
    total, by_site = SiteStats(), {}
    for first_seen, removed_at, page in rows:
        site = (urlsplit(page or "").hostname or "?").removeprefix("www.")
        for bucket in (total, by_site.setdefault(site, SiteStats())):
            bucket.cases += 1
            if removed_at is not None:
                bucket.removed += 1
                bucket.days.append((removed_at - first_seen).total_seconds() / 86400)
    requests = session.execute(
        select(
            func.count(Notice.sent_at),
            func.count(Notice.acknowledged_at),
            func.count(Notice.removed_at),
            func.count(Notice.refused_at),
        )
        .join(Match, Match.id == Notice.match_id)
        .join(Subject, Subject.id == Match.subject_id)
        .where(owner)
    ).one()
    return {
        **total.as_json(),
        "requests": dict(
            zip(("sent", "acknowledged", "removed", "refused"), requests, strict=True)
        ),
        "by_site": {site: s.as_json() for site, s in sorted(by_site.items())},
    }
