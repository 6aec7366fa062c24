"""Who is looking: the organisation (or the household) whose people a caller may see.

A :class:`Scope` is passed to the store functions that read or change people, cases and
matches; every query is then filtered by organisation. ``Scope(org_id=None)`` (``HOUSEHOLD``)
is the single-household mode: only people without an organisation. ``scope=None`` means "the
scope in force" (:func:`using_scope`, set by the command line for the whole command), and when
none is in force, no filter: the scheduler and maintenance work on everyone.

On PostgreSQL a second wall stands behind these filters: row-level security (migration 0012)
keyed on the session setting ``app.org_id``, set at the start of every transaction opened
while a scope is in force (:func:`scoped_session` for an explicit one).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, event, exists, select, text
from sqlalchemy.orm import Session

from monitor.db.models import Subject
from monitor.errors import MonitorError

ROLES = ("admin", "caseworker", "viewer")
"""An organisation's operators: admins manage operators and see everything of their
organisation; caseworkers add people, handle cases; viewers only look."""


class NotAllowed(MonitorError):
    """The operator's role does not allow this (e.g. a viewer changing something)."""


@dataclass(frozen=True, slots=True)
class Scope:
    """The organisation whose people are visible (``None``: people without one), and who is
    acting (for the audit log and role checks)."""

    org_id: int | None
    operator_id: int | None = None
    operator: str = "local"  # an operator's email; "local": the machine's owner
    role: str = "owner"  # "owner" (household mode), or one of ROLES

    @property
    def rls_value(self) -> str:
        return "none" if self.org_id is None else str(self.org_id)

    def require(self, *roles: str) -> None:
        """Raise :class:`NotAllowed` unless the role is one of ``roles`` (the household's
        owner may do everything)."""
        if self.role != "owner" and self.role not in roles:
            raise NotAllowed(
                f"a {self.role} may not do this (needs: {', '.join(roles)}); ask an admin"
            )


HOUSEHOLD = Scope(org_id=None)

_current: ContextVar[Scope | None] = ContextVar("monitor_scope", default=None)


def current_scope() -> Scope | None:
    return _current.get()


@contextmanager
def using_scope(scope: Scope | None) -> Iterator[Scope | None]:
    """Make ``scope`` the one in force (for store calls given no scope, and PostgreSQL's
    row-level security) until the block ends."""
    token = _current.set(scope)
    try:
        yield scope
    finally:
        _current.reset(token)


def resolve(scope: Scope | None) -> Scope | None:
    return scope if scope is not None else _current.get()


def subject_filter(scope: Scope | None) -> ColumnElement[bool] | None:
    """The condition on ``Subject`` for ``scope`` (the one in force when None); None: none."""
    scope = resolve(scope)
    if scope is None:
        return None
    if scope.org_id is None:
        return Subject.organisation_id.is_(None)
    return Subject.organisation_id == scope.org_id


S = TypeVar("S")


def scoped(stmt: S, scope: Scope | None) -> S:
    """``stmt`` (a select involving ``Subject``) filtered to ``scope``."""
    cond = subject_filter(scope)
    return stmt if cond is None else stmt.where(cond)  # type: ignore[attr-defined]


def subject_in_scope(session: Session, subject_id: int, scope: Scope | None = None) -> bool:
    cond = subject_filter(scope)
    if cond is None:
        return True
    return bool(session.scalar(select(exists().where(Subject.id == subject_id, cond))))


def set_rls(session: Session, scope: Scope | None) -> None:
    """Name the scope's organisation to PostgreSQL's row-level security for this transaction
    (no-op elsewhere)."""
    if scope is None or session.get_bind().dialect.name != "postgresql":
        return
    session.execute(text("SELECT set_config('app.org_id', :v, true)"), {"v": scope.rls_value})


@contextmanager
def scoped_session(db: Any, scope: Scope | None = None) -> Iterator[Session]:
    """``db.session()`` with ``scope`` (or the one in force) set for row-level security."""
    with db.session() as s:
        set_rls(s, resolve(scope))
        yield s


@event.listens_for(Session, "after_begin")
def _rls_after_begin(session: Session, transaction: Any, connection: Any) -> None:
    scope = _current.get()
    if scope is not None and connection.dialect.name == "postgresql":
        connection.execute(
            text("SELECT set_config('app.org_id', :v, true)"), {"v": scope.rls_value}
        )


@contextmanager
def every_row(session: Session) -> Iterator[None]:
    """Lift PostgreSQL's row-level security for the statements in the block (housekeeping
    that must see every organisation's rows: deleting found images no sighting refers to any
    more would otherwise delete images other organisations' people were seen in). Restores the
    scope in force afterwards. No-op elsewhere, or when no scope is in force."""
    scope = _current.get()
    if scope is None or session.get_bind().dialect.name != "postgresql":
        yield
        return
    session.execute(text("SELECT set_config('app.org_id', '', true)"))
    try:
        yield
    finally:
        set_rls(session, scope)
