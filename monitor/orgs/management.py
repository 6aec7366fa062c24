"""Managing an organisation's operators: role, passphrase, second factor, disable/enable.

Used by the command line (``operator role/reset/disable/enable``) and the web app's Operators
page alike, so both check the same rights and write the same audit entries (numbers only, no
email in the detail: ``operator 5: caseworker -> viewer``).

Who may: the organisation's admins. The machine's owner (no operator) may reset an operator's
passphrase or second factor (recovery: an admin who lost their authenticator), and do the rest
only while the organisation has no active admin (as with ``operator add``). An organisation
never loses its last active admin (changing their role or disabling them is refused).

Sessions: a web session remembers :func:`credentials_stamp` of its operator at log-in; a reset
passphrase or second factor changes it, and a disabled operator is refused, so their sessions
end at their next page (``monitor.web.core``). A role change takes effect at the next page.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import pyotp
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from monitor.db.models import Operator, Organisation, utcnow
from monitor.errors import MonitorError
from monitor.orgs import audit
from monitor.orgs.accounts import ISSUER, MIN_PASSPHRASE
from monitor.orgs.scope import ROLES, NotAllowed, Scope
from monitor.passphrases import hash_passphrase, verify_passphrase

__all__ = [
    "OperatorInfo",
    "change_own_passphrase",
    "change_role",
    "credentials_stamp",
    "find_operator",
    "list_operators",
    "may_manage",
    "reset_passphrase",
    "reset_totp",
    "set_disabled",
]


@dataclass(frozen=True, slots=True)
class OperatorInfo:
    id: int
    email: str
    role: str
    disabled: bool

    def as_json(self) -> dict[str, object]:
        return {"id": self.id, "email": self.email, "role": self.role, "disabled": self.disabled}


def credentials_stamp(op: Operator) -> str:
    """Changes whenever the operator's passphrase or second factor is reset (each passphrase
    hash has its own salt, so even the same passphrase set again changes it)."""
    return hashlib.sha256(f"{op.passphrase_hash}\0{op.totp_secret}".encode()).hexdigest()


def list_operators(session: Session, org_id: int) -> list[OperatorInfo]:
    return [
        OperatorInfo(o.id, o.email, o.role, o.disabled_at is not None)
        for o in session.scalars(
            select(Operator).where(Operator.organisation_id == org_id).order_by(Operator.email)
        )
    ]


def find_operator(
    session: Session, org_id: int, *, email: str | None = None, operator_id: int | None = None
) -> Operator:
    """An operator of the organisation, disabled ones included; another organisation's
    operator is "not found", like no one."""
    stmt = select(Operator).where(Operator.organisation_id == org_id)
    if email is not None:
        stmt = stmt.where(Operator.email == email.strip().lower())
    elif operator_id is not None:
        stmt = stmt.where(Operator.id == operator_id)
    else:
        raise MonitorError("which operator? give their email")
    op = session.scalar(stmt)
    if op is None:
        raise MonitorError("no such operator in this organisation")
    return op


def _active_admins(session: Session, org_id: int) -> int:
    return int(
        session.scalar(
            select(func.count(Operator.id)).where(
                Operator.organisation_id == org_id,
                Operator.role == "admin",
                Operator.disabled_at.is_(None),
            )
        )
        or 0
    )


def may_manage(session: Session, scope: Scope, org_id: int, *, recovery: bool = False) -> None:
    """:class:`NotAllowed` unless ``scope`` may manage the organisation's operators."""
    if scope.role == "admin" and scope.org_id == org_id:
        return
    if scope.role == "owner" and scope.org_id is None:
        if recovery or _active_admins(session, org_id) == 0:
            return
        raise NotAllowed(
            "this organisation has an admin: operators are managed by them (--operator)"
        )
    raise NotAllowed("operators are managed by their organisation's admins")


def _keeps_an_admin(session: Session, op: Operator) -> None:
    last = op.role == "admin" and op.disabled_at is None
    if last and _active_admins(session, op.organisation_id) <= 1:
        raise MonitorError(
            f"{op.email} is the organisation's last admin: make another operator admin first"
        )


def _log(session: Session, scope: Scope, action: str, op: Operator, what: str = "") -> None:
    detail = f"operator {op.id}" + (f": {what}" if what else "")
    audit.log(session, scope, action, detail=detail, org_id=op.organisation_id)


def change_role(session: Session, scope: Scope, op: Operator, role: str) -> str:
    """Give ``op`` another role; returns the old one."""
    if role not in ROLES:
        raise MonitorError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    may_manage(session, scope, op.organisation_id)
    old = op.role
    if old == role:
        return old
    if role != "admin":
        _keeps_an_admin(session, op)
    op.role = role
    _log(session, scope, "operator role", op, f"{old} -> {role}")
    return old


def _check_new(passphrase: str) -> str:
    if len(passphrase) < MIN_PASSPHRASE:
        raise MonitorError(f"the passphrase must have at least {MIN_PASSPHRASE} characters")
    return passphrase


def reset_passphrase(session: Session, scope: Scope, op: Operator, passphrase: str) -> None:
    """A new passphrase for ``op`` (told to them out of band); their sessions end."""
    may_manage(session, scope, op.organisation_id, recovery=True)
    op.passphrase_hash = hash_passphrase(_check_new(passphrase))
    _log(session, scope, "operator reset", op, "passphrase")


def reset_totp(session: Session, scope: Scope, op: Operator) -> str:
    """A new second-factor secret for ``op`` (a lost or changed phone); their sessions end.
    Returns the provisioning URI, to be shown once."""
    may_manage(session, scope, op.organisation_id, recovery=True)
    secret = pyotp.random_base32()
    op.totp_secret = secret
    op.totp_last_step = None
    org = session.get(Organisation, op.organisation_id)
    _log(session, scope, "operator reset", op, "second factor")
    issuer = f"{ISSUER} ({org.name})" if org else ISSUER
    return pyotp.TOTP(secret).provisioning_uri(name=op.email, issuer_name=issuer)


def set_disabled(session: Session, scope: Scope, op: Operator, disabled: bool) -> bool:
    """Disable ``op`` (they cannot log in; their sessions end; their log entries stay) or
    enable them again. Returns whether anything changed."""
    may_manage(session, scope, op.organisation_id)
    if disabled == (op.disabled_at is not None):
        return False
    if disabled:
        _keeps_an_admin(session, op)
        op.disabled_at = utcnow()
        _log(session, scope, "operator disable", op)
    else:
        op.disabled_at = None
        _log(session, scope, "operator enable", op)
    return True


def change_own_passphrase(session: Session, scope: Scope, current: str, new: str) -> Operator:
    """The operator of ``scope`` changes their own passphrase (the current one is asked)."""
    op = session.get(Operator, scope.operator_id) if scope.operator_id else None
    if op is None or op.disabled_at is not None:
        raise MonitorError("only an organisation's operator changes their passphrase here")
    if not verify_passphrase(op.passphrase_hash, current):
        raise MonitorError("not changed: the current passphrase is not right")
    op.passphrase_hash = hash_passphrase(_check_new(new))
    _log(session, scope, "operator passphrase", op, "changed by themselves")
    return op
