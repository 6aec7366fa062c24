"""The append-only audit log: every view, change and export of a person's data.

``detail`` never holds personal data (ids, counts, field names only), so after an erasure the
log keeps that something happened, and nothing about whom. The database refuses UPDATE and
DELETE on the table (triggers, migration 0012)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from monitor.db.models import AuditEntry, utcnow
from monitor.orgs.scope import Scope, resolve
from monitor.types import iso_utc


def log(
    session: Session,
    scope: Scope | None,
    action: str,
    *,
    subject_id: int | None = None,
    detail: str = "",
    org_id: int | None = None,
) -> None:
    """Append one entry (in the caller's transaction: it commits with the change it records).
    Household mode (no organisation) keeps no audit log."""
    scope = resolve(scope)
    org = org_id if org_id is not None else (scope.org_id if scope else None)
    if org is None:
        return
    session.add(
        AuditEntry(
            at=utcnow(),
            organisation_id=org,
            operator=(scope.operator if scope else "system")[:320],
            action=action[:40],
            subject_id=subject_id,
            detail=detail[:2000],
        )
    )
    session.flush()


@dataclass(frozen=True, slots=True)
class Entry:
    at: datetime
    operator: str
    action: str
    subject_id: int | None
    detail: str

    def as_json(self) -> dict[str, object]:
        return {
            "at": iso_utc(self.at),
            "operator": self.operator,
            "action": self.action,
            "subject_id": self.subject_id,
            "detail": self.detail,
        }


def entries(session: Session, scope: Scope, subject_id: int | None = None) -> list[Entry]:
    """The organisation's entries (oldest first), or those about one person."""
    stmt = select(AuditEntry).where(AuditEntry.organisation_id == scope.org_id)
    if subject_id is not None:
        stmt = stmt.where(AuditEntry.subject_id == subject_id)
    return [
        Entry(e.at, e.operator, e.action, e.subject_id, e.detail)
        for e in session.scalars(stmt.order_by(AuditEntry.id))
    ]
