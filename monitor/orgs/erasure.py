"""Erasing a person at once (consent withdrawn): rows, evidence files and alert files."""

from __future__ import annotations

from monitor import alerts, cases, store
from monitor.config import Settings
from monitor.db import Database
from monitor.db.models import Consent, utcnow
from monitor.orgs import audit
from monitor.orgs.scope import Scope, resolve


def withdraw_and_erase(settings: Settings, db: Database, name: str, scope: Scope | None) -> bool:
    """Consent withdrawn: monitoring stops and everything about the person is erased (as
    ``subject remove``). The audit log keeps that it happened: the person's number, no name.
    Returns whether the database's log could be emptied now (see ``Database.scrub``)."""
    scope = resolve(scope)
    with db.session() as s:
        subject = store.get_subject(s, name, scope)
        subject_id, org_id = subject.id, subject.organisation_id
        for c in s.query(Consent).filter(Consent.subject_id == subject_id):
            c.withdrawn_at = utcnow()  # stops any scan starting before the erasure commits
        subject.paused_reason = "consent withdrawn"
    with db.session() as s:
        case_ids = [c.id for c in cases.list_cases(s, name)]
        mail_files = alerts.outbox_files(s, settings, subject_id)
        store.erase_subject(s, name, scope)
        audit.log(
            s,
            scope,
            "consent withdrawn",
            subject_id=subject_id,
            detail=f"everything erased ({len(case_ids)} case(s))",
            org_id=org_id,
        )
    cases.erase_evidence(settings, case_ids)
    alerts.erase_outbox_files(mail_files)
    return db.scrub()
