"""Organisations and their operators: passphrases (scrypt), TOTP second factor (pyotp).

A passphrase is kept as an scrypt hash (monitor/passphrases.py); the
TOTP secret encrypted with the reference key (``Operator.totp_secret``, monitor/secrets.py).
:func:`authenticate` checks both and gives the operator's :class:`~monitor.orgs.scope.Scope`.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from datetime import UTC, datetime

import pyotp
from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from monitor.db.models import Operator, Organisation
from monitor.errors import MonitorError
from monitor.orgs.scope import ROLES, Scope
from monitor.passphrases import hash_passphrase, verify_passphrase

ISSUER = "Exposure Monitor"
MIN_PASSPHRASE = 12


class OrganisationNotFound(MonitorError):
    """No organisation has that name."""


class LoginFailed(MonitorError):
    """Unknown operator, wrong passphrase or wrong one-time code (never says which)."""


def add_organisation(session: Session, name: str) -> Organisation:
    name = name.strip()
    if not name:
        raise MonitorError("an organisation needs a name")
    if session.scalar(select(Organisation).where(Organisation.name == name)) is not None:
        raise MonitorError(f"an organisation named {name!r} already exists")
    org = Organisation(name=name)
    session.add(org)
    session.flush()
    return org


def get_organisation(session: Session, name: str) -> Organisation:
    org = session.scalar(select(Organisation).where(Organisation.name == name))
    if org is None:
        raise OrganisationNotFound(f"no organisation named {name!r} (see `org list`)")
    return org


def organisations(session: Session) -> list[Organisation]:
    return list(session.scalars(select(Organisation).order_by(Organisation.name)))


def any_organisation(session: Session) -> bool:
    return session.scalar(select(Organisation.id).limit(1)) is not None


@dataclass(frozen=True, slots=True)
class NewOperator:
    id: int
    email: str
    role: str
    organisation: str
    provisioning_uri: str  # shown once, for the authenticator app


def add_operator(
    session: Session, email: str, org: Organisation, role: str, passphrase: str
) -> NewOperator:
    """Create an operator; the TOTP provisioning URI is returned once and not shown again."""
    email = email.strip().lower()
    if role not in ROLES:
        raise MonitorError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    if len(passphrase) < MIN_PASSPHRASE:
        raise MonitorError(f"the passphrase must have at least {MIN_PASSPHRASE} characters")
    if session.scalar(select(Operator.id).where(Operator.email == email)) is not None:
        raise MonitorError(f"an operator {email!r} already exists")
    secret = pyotp.random_base32()
    op = Operator(
        organisation_id=org.id,
        email=email,
        role=role,
        passphrase_hash=hash_passphrase(passphrase),
        totp_secret=secret,
    )
    session.add(op)
    session.flush()
    uri = pyotp.TOTP(secret).provisioning_uri(name=email, issuer_name=f"{ISSUER} ({org.name})")
    return NewOperator(op.id, email, role, org.name, uri)


def find_by_email(session: Session, email: str) -> Operator | None:
    return session.scalar(select(Operator).where(Operator.email == email.strip().lower()))


def operators_of(session: Session, org_id: int) -> list[Operator]:
    return list(
        session.scalars(
            select(Operator).where(Operator.organisation_id == org_id).order_by(Operator.email)
        )
    )


def get_operator(session: Session, email: str, org_id: int | None = None) -> Operator:
    stmt = select(Operator).where(Operator.email == email.strip().lower())
    if org_id is not None:
        stmt = stmt.where(Operator.organisation_id == org_id)
    op = session.scalar(stmt)
    if op is None or op.disabled_at is not None:
        raise MonitorError(f"no operator {email!r} in this organisation")
    return op


def scope_of(op: Operator) -> Scope:
    return Scope(org_id=op.organisation_id, operator_id=op.id, operator=op.email, role=op.role)


def authenticate(
    session: Session, email: str, passphrase: str, code: str, *, single_use: bool = False
) -> Scope:
    """The operator's scope when the passphrase and the current TOTP code are right, else
    :class:`LoginFailed` (which does not say what was wrong). ``single_use`` (the web app's
    log-in, which then holds a session): a code accepted once is refused after, so one seen
    over a shoulder or replayed within its ~90 s window does not open a second session. The
    command line asks for a code on every command, so there a code serves its window."""
    op = session.scalar(select(Operator).where(Operator.email == email.strip().lower()))
    failed = LoginFailed("login failed: unknown operator, wrong passphrase or wrong code")
    if op is None or op.disabled_at is not None:
        verify_passphrase(hash_passphrase("x" * MIN_PASSPHRASE), passphrase)  # same time
        raise failed
    if not verify_passphrase(op.passphrase_hash, passphrase):
        raise failed
    step = _accepted_step(pyotp.TOTP(op.totp_secret), code.strip())
    if step is None:
        raise failed
    if not single_use:
        return scope_of(op)
    # A code works once: an observed or replayed one (within its ~90 s window) is refused.
    # One UPDATE, so two log-ins racing with the same code cannot both pass.
    used = session.execute(
        update(Operator)
        .where(
            Operator.id == op.id,
            or_(Operator.totp_last_step.is_(None), Operator.totp_last_step < step),
        )
        .values(totp_last_step=step)
    )
    if used.rowcount != 1:  # type: ignore[attr-defined]
        raise failed
    return scope_of(op)


def _accepted_step(totp: pyotp.TOTP, code: str) -> int | None:
    """The time step (30 s) whose code ``code`` is, within one step of now; None if none."""
    if not (code.isascii() and code.isdigit()):
        return None
    now = totp.timecode(datetime.now(UTC))
    for step in (now - 1, now, now + 1):
        if hmac.compare_digest(totp.generate_otp(step), code):
            return step
    return None
