"""Operators of more than one organisation, and the web app's organisation switcher.

An operator has one home organisation (``Operator.organisation_id``: their log-in, managed by
its admins) and may be an admin of further ones (``memberships``, migration 0016), e.g. the
coordinator of a helpline network with regional member organisations. A web session acts for
one organisation at a time (its :class:`~monitor.orgs.scope.Scope`); :func:`switch` changes it
to another organisation the operator is an active admin of (or back home), audited in both.

On PostgreSQL ``memberships`` has row-level security like ``subjects``: a scope sees only its
organisation's memberships. Looking up an operator's own memberships across organisations
(which organisations may they switch to) lifts it for that statement only
(:func:`monitor.orgs.scope.every_row`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from monitor.db.models import Membership, Operator, Organisation
from monitor.orgs import audit
from monitor.orgs.scope import NotAllowed, Scope, every_row

__all__ = ["Choice", "membership", "organisations_of", "role_in", "switch", "visible"]


@dataclass(frozen=True, slots=True)
class Choice:
    """An organisation an operator's session may act for."""

    org_id: int
    name: str
    role: str
    home: bool


@contextmanager
def visible(session: Session, scope: Scope | None) -> Iterator[None]:
    """Every organisation's memberships visible for the machine's owner (whose scope, the
    household's, sees none under row-level security); an operator's scope as it is."""
    with every_row(session) if scope is None or scope.role == "owner" else nullcontext():
        yield


def membership(session: Session, operator_id: int, org_id: int) -> Membership | None:
    return session.scalar(
        select(Membership).where(
            Membership.operator_id == operator_id, Membership.organisation_id == org_id
        )
    )


def role_in(session: Session, op: Operator, org_id: int | None) -> str | None:
    """The operator's role in the organisation now; None when they may not act for it
    (disabled, not a member, or their membership there disabled)."""
    if op.disabled_at is not None or org_id is None:
        return None
    if org_id == op.organisation_id:
        return op.role
    with every_row(session):
        m = membership(session, op.id, org_id)
    return m.role if m is not None and m.disabled_at is None else None


def organisations_of(session: Session, operator_id: int) -> list[Choice]:
    """The organisations the operator may act for: their home one (whatever their role
    there), then those they are an active admin of, by name."""
    op = session.get(Operator, operator_id)
    if op is None or op.disabled_at is not None:
        return []
    home = session.get(Organisation, op.organisation_id)
    choices = [Choice(op.organisation_id, home.name if home else "?", op.role, True)]
    with every_row(session):
        rows = session.execute(
            select(Organisation.id, Organisation.name, Membership.role)
            .join(Membership, Membership.organisation_id == Organisation.id)
            .where(
                Membership.operator_id == op.id,
                Membership.disabled_at.is_(None),
                Membership.role == "admin",
            )
            .order_by(Organisation.name)
        ).all()
    choices += [Choice(i, n, r, False) for i, n, r in rows if i != op.organisation_id]
    return choices


def switch(session: Session, scope: Scope, org_id: int) -> Scope:
    """The operator of ``scope`` acts for ``org_id`` from now on: allowed back to their home
    organisation, or to one they are an active admin of; anything else is refused alike
    (another organisation's existence does not leak). Written to both organisations' audit
    logs (their numbers only)."""
    op = session.get(Operator, scope.operator_id) if scope.operator_id else None
    refused = NotAllowed("you may not act for that organisation (admins of it only)")
    if op is None or scope.org_id is None:
        raise refused
    role = role_in(session, op, org_id)
    if role is None or (org_id != op.organisation_id and role != "admin"):
        raise refused
    new = Scope(org_id=org_id, operator_id=op.id, operator=op.email, role=role)
    if org_id != scope.org_id:
        audit.log(session, scope, "organisation switch", detail=f"web: to organisation {org_id}")
        audit.log(
            session, new, "organisation switch", detail=f"web: from organisation {scope.org_id}"
        )
    return new
