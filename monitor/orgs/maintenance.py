"""Housekeeping run by the scheduler before each look for due scans: expired consents pause
monitoring (and the caseworkers are told through the outbox); findings and evidence of cases
closed longer than ``[orgs] retention_days`` are deleted."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import and_, delete, exists, select
from sqlalchemy.orm import Session

from monitor import alerts
from monitor.config import Settings
from monitor.db import Database
from monitor.db.models import (
    CaseContact,
    CaseEvent,
    Consent,
    Image,
    Match,
    Notice,
    Sighting,
    Subject,
    utcnow,
)
from monitor.orgs import audit
from monitor.orgs.casework import caseworker_addresses
from monitor.orgs.consent import latest, why_invalid

log = logging.getLogger("monitor.orgs")

CLOSED = ("removed", "dismissed")


def run_maintenance(db: Database, settings: Settings, now: datetime | None = None) -> None:
    now = now or utcnow()
    with db.session() as s:
        pause_expired(s, settings, now)
    if settings.orgs.retention_days > 0:
        case_ids = []
        with db.session() as s:
            case_ids = apply_retention(s, settings.orgs.retention_days, now)
        if case_ids:
            from monitor.cases import erase_evidence

            erase_evidence(settings, case_ids)


def pause_expired(session: Session, settings: Settings, now: datetime) -> list[int]:
    """Pause every organisation's person whose consent is no longer valid, and queue one
    notice per caseworker (no name: the person's number and what to do)."""
    paused: list[int] = []
    ids = session.scalars(
        select(Subject.id).where(
            Subject.organisation_id.is_not(None),
            Subject.paused_reason.is_(None),
            exists().where(Consent.subject_id == Subject.id, Consent.valid_until <= now),
        )
    ).all()
    for subject_id in ids:
        subject = session.get(Subject, subject_id)
        if subject is None:
            continue
        reason = why_invalid(latest(session, subject_id), now)
        if reason is None:  # a newer consent is valid
            continue
        subject.paused_reason = reason[:200]
        paused.append(subject_id)
        audit.log(
            session,
            None,
            "monitoring paused",
            subject_id=subject_id,
            detail=reason,
            org_id=subject.organisation_id,
        )
        body = (
            f"Monitoring of person #{subject_id} is paused: {reason}.\n"
            "No search is sent for them until consent is renewed "
            "(`consent renew NAME --consent-by WHO --consent-file FILE`).\n"
        )
        for address in caseworker_addresses(session, subject) or [None]:
            alerts.queue_message(session, settings, subject_id, address, "consent", body, now=now)
        log.info("subject %d: monitoring paused (%s)", subject_id, reason)
    session.flush()
    return paused


def apply_retention(session: Session, days: int, now: datetime) -> list[int]:
    """Delete the findings of cases closed more than ``days`` ago. A removed case goes whole
    (if the image comes back, it is a new case and a new alert); a dismissed one ("not me")
    keeps only its bare row, without any address, so the same image never alerts again.
    Returns the case ids whose evidence folders are to be deleted."""
    cutoff = now - timedelta(days=days)
    rows = session.execute(
        select(Match.id, Match.subject_id, Match.image_id, Match.status).where(
            Match.status.in_(CLOSED),
            ((Match.status == "removed") & (Match.removed_at <= cutoff))
            | ((Match.status == "dismissed") & (Match.decided_at <= cutoff)),
        )
    ).all()
    if not rows:
        return []
    ids = [r.id for r in rows]
    for r in rows:
        session.execute(
            delete(Sighting).where(
                and_(Sighting.subject_id == r.subject_id, Sighting.image_id == r.image_id)
            )
        )
    for model in (CaseEvent, CaseContact, Notice):
        session.execute(delete(model).where(model.match_id.in_(ids)))
    session.execute(
        delete(Match).where(Match.id.in_([r.id for r in rows if r.status == "removed"]))
    )
    session.execute(
        delete(Image).where(
            ~exists().where(Sighting.image_id == Image.id),
            ~exists().where(Match.image_id == Image.id),
        )
    )
    from monitor.store import forget_orphan_fetch_cache, forget_orphan_page_cache

    forget_orphan_fetch_cache(session)
    forget_orphan_page_cache(session)
    for r in rows:
        org = session.scalar(select(Subject.organisation_id).where(Subject.id == r.subject_id))
        audit.log(
            session,
            None,
            "retention",
            subject_id=r.subject_id,
            detail=f"case {r.id} ({r.status}) findings deleted after {days} days",
            org_id=org,
        )
    return ids
