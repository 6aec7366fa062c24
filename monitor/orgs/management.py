"""Managing an organisation's operators: add, role, passphrase, second factor, disable/enable.

Used by the command line (``operator add/role/reset/disable/enable``) and the web app's
Operators page alike, so both check the same rights and write the same audit entries (numbers only, no
email in the detail: ``operator 5: caseworker -> viewer``).

Who may: the organisation's admins. The machine's owner (no operator) may reset an operator's
passphrase or second factor (recovery: an admin who lost their authenticator), and do the rest
only while the organisation has no active admin (as with ``operator add``). An organisation
never loses its last active admin (changing their role or disabling them is refused).

Members (:mod:`monitor.orgs.memberships`): adding an email that is already another
organisation's operator makes them an admin of this one too (nothing else: their log-in stays
their home organisation's). This organisation's admins may disable and enable that membership;
a member's role here stays admin, and their passphrase and second factor are reset by their
home organisation only.

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

from monitor.db.models import Membership, Operator, Organisation, utcnow
from monitor.errors import MonitorError
from monitor.orgs import accounts, audit, memberships
from monitor.orgs.accounts import ISSUER, MIN_PASSPHRASE
from monitor.orgs.scope import ROLES, NotAllowed, Scope, every_row
from monitor.passphrases import hash_passphrase, verify_passphrase

__all__ = [
    "Added",
    "OperatorInfo",
    "add_operator",
    "change_own_passphrase",
    "change_role",
    "credentials_stamp",
    "find_operator",
    "home_only",
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
    member: bool = False  # an admin here whose home is another organisation

    def as_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "email": self.email,
            "role": self.role,
            "disabled": self.disabled,
            "member": self.member,
        }


@dataclass(frozen=True, slots=True)
class Added:
    """What :func:`add_operator` did: a new operator (``provisioning_uri`` for their
    authenticator, shown once) or a membership of an existing one (``None``)."""

    id: int
    email: str
    role: str
    organisation: str
    provisioning_uri: str | None

    @property
    def member(self) -> bool:
        return self.provisioning_uri is None


def credentials_stamp(op: Operator) -> str:
    """Changes whenever the operator's passphrase or second factor is reset (each passphrase
    hash has its own salt, so even the same passphrase set again changes it)."""
    return hashlib.sha256(f"{op.passphrase_hash}\0{op.totp_secret}".encode()).hexdigest()


def list_operators(session: Session, org_id: int, scope: Scope | None = None) -> list[OperatorInfo]:
    """The organisation's operators and its members (admins whose home is elsewhere)."""
    rows = [
        OperatorInfo(o.id, o.email, o.role, o.disabled_at is not None)
        for o in session.scalars(select(Operator).where(Operator.organisation_id == org_id))
    ]
    with memberships.visible(session, scope):
        members = session.execute(
            select(Operator, Membership)
            .join(Membership, Membership.operator_id == Operator.id)
            .where(Membership.organisation_id == org_id)
        ).all()
    rows += [
        OperatorInfo(
            o.id, o.email, m.role, o.disabled_at is not None or m.disabled_at is not None, True
        )
        for o, m in members
        if o.organisation_id != org_id
    ]
    return sorted(rows, key=lambda r: r.email)


def find_operator(
    session: Session, org_id: int, *, email: str | None = None, operator_id: int | None = None
) -> Operator:
    """An operator of the organisation or a member of it, disabled ones included; another
    organisation's operator is "not found", like no one."""
    stmt = select(Operator)
    if email is not None:
        stmt = stmt.where(Operator.email == email.strip().lower())
    elif operator_id is not None:
        stmt = stmt.where(Operator.id == operator_id)
    else:
        raise MonitorError("which operator? give their email")
    op = session.scalar(stmt)
    if op is not None and op.organisation_id != org_id:
        with every_row(session):  # the machine's owner's scope sees no memberships
            if memberships.membership(session, op.id, org_id) is None:
                op = None
    if op is None:
        raise MonitorError("no such operator in this organisation")
    return op


def _active_admins(session: Session, org_id: int) -> int:
    """The organisation's active admins, its members included."""
    home = session.scalar(
        select(func.count(Operator.id)).where(
            Operator.organisation_id == org_id,
            Operator.role == "admin",
            Operator.disabled_at.is_(None),
        )
    )
    with every_row(session):
        members = session.scalar(
            select(func.count(Membership.id))
            .join(Operator, Operator.id == Membership.operator_id)
            .where(
                Membership.organisation_id == org_id,
                Membership.role == "admin",
                Membership.disabled_at.is_(None),
                Operator.disabled_at.is_(None),
            )
        )
    return int(home or 0) + int(members or 0)


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


def _keeps_an_admin(session: Session, op: Operator, org_id: int | None = None) -> None:
    org_id = op.organisation_id if org_id is None else org_id
    last = memberships.role_in(session, op, org_id) == "admin"
    if last and _active_admins(session, org_id) <= 1:
        raise MonitorError(
            f"{op.email} is the organisation's last admin: make another operator admin first"
        )


def _log(
    session: Session,
    scope: Scope,
    action: str,
    op: Operator,
    what: str = "",
    org_id: int | None = None,
) -> None:
    detail = f"operator {op.id}" + (f": {what}" if what else "")
    org = op.organisation_id if org_id is None else org_id
    audit.log(session, scope, action, detail=detail, org_id=org)


def _member(session: Session, op: Operator, org_id: int | None) -> Membership | None:
    """``op``'s membership of ``org_id`` when that is not their home organisation."""
    if org_id is None or org_id == op.organisation_id:
        return None
    with every_row(session):
        m = memberships.membership(session, op.id, org_id)
    if m is None:
        raise MonitorError("no such operator in this organisation")
    return m


def home_only(session: Session, op: Operator, org_id: int | None) -> None:
    """:class:`NotAllowed` when ``op`` is a member of ``org_id`` (their log-in belongs to their
    home organisation's admins)."""
    if _member(session, op, org_id) is not None:
        raise NotAllowed(
            f"{op.email} logs in through another organisation: their passphrase and second "
            "factor are reset by its admins"
        )


def add_operator(
    session: Session,
    scope: Scope,
    org: Organisation,
    email: str,
    role: str,
    passphrase: str | None,
) -> Added:
    """Add an operator to ``org`` (``operator add``, the Operators page): a new log-in with
    ``passphrase`` and a new second factor, or, for an email that is another organisation's
    operator already, an admin membership (their log-in unchanged; ``passphrase`` unused).
    By the organisation's admins; the machine's owner only while it has no active admin.
    Audited as ``operator add``."""
    if role not in ROLES:
        raise MonitorError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    may_manage(session, scope, org.id)
    existing = accounts.find_by_email(session, email)
    if existing is None:
        if passphrase is None:
            raise MonitorError("a new operator needs a passphrase")
        new = accounts.add_operator(session, email, org, role, passphrase)
        audit.log(
            session, scope, "operator add", detail=f"operator {new.id} ({role})", org_id=org.id
        )
        return Added(new.id, new.email, role, org.name, new.provisioning_uri)
    if existing.organisation_id == org.id:
        raise MonitorError(f"{existing.email} is already an operator of this organisation")
    if role != "admin":
        raise MonitorError(
            f"{existing.email} already logs in through another organisation: they can be "
            "added here as admin only (then they switch between the two)"
        )
    with memberships.visible(session, scope):
        if memberships.membership(session, existing.id, org.id) is not None:
            raise MonitorError(
                f"{existing.email} is already an admin here (enable them if disabled)"
            )
        session.add(Membership(operator_id=existing.id, organisation_id=org.id, role="admin"))
        session.flush()
    audit.log(
        session,
        scope,
        "operator add",
        detail=f"operator {existing.id} (admin, member)",
        org_id=org.id,
    )
    return Added(existing.id, existing.email, "admin", org.name, None)


def change_role(
    session: Session, scope: Scope, op: Operator, role: str, org_id: int | None = None
) -> str:
    """Give ``op`` another role (in ``org_id``, default their home organisation); returns the
    old one. A member's role (an admin whose home is elsewhere) stays admin."""
    if role not in ROLES:
        raise MonitorError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    may_manage(session, scope, op.organisation_id if org_id is None else org_id)
    if _member(session, op, org_id) is not None:
        if role != "admin":
            raise MonitorError(
                f"{op.email} logs in through another organisation and is admin here: "
                "to end that, disable them here"
            )
        return "admin"
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


def reset_passphrase(
    session: Session, scope: Scope, op: Operator, passphrase: str, org_id: int | None = None
) -> None:
    """A new passphrase for ``op`` (told to them out of band); their sessions end. By their
    home organisation's admins (``org_id``: the organisation acted for)."""
    may_manage(session, scope, op.organisation_id if org_id is None else org_id, recovery=True)
    home_only(session, op, org_id)
    op.passphrase_hash = hash_passphrase(_check_new(passphrase))
    _log(session, scope, "operator reset", op, "passphrase")


def reset_totp(session: Session, scope: Scope, op: Operator, org_id: int | None = None) -> str:
    """A new second-factor secret for ``op`` (a lost or changed phone); their sessions end.
    Returns the provisioning URI, to be shown once. By their home organisation's admins."""
    may_manage(session, scope, op.organisation_id if org_id is None else org_id, recovery=True)
    home_only(session, op, org_id)
    secret = pyotp.random_base32()
    op.totp_secret = secret
    op.totp_last_step = None
    org = session.get(Organisation, op.organisation_id)
    _log(session, scope, "operator reset", op, "second factor")
    issuer = f"{ISSUER} ({org.name})" if org else ISSUER
    return pyotp.TOTP(secret).provisioning_uri(name=op.email, issuer_name=issuer)


def set_disabled(
    session: Session, scope: Scope, op: Operator, disabled: bool, org_id: int | None = None
) -> bool:
    """Disable ``op`` (they cannot log in; their sessions end; their log entries stay) or
    enable them again. For a member of ``org_id`` (their home is elsewhere): they can no
    longer act for this organisation (their sessions acting for it end), or can again.
    Returns whether anything changed."""
    may_manage(session, scope, op.organisation_id if org_id is None else org_id)
    m = _member(session, op, org_id)
    if m is not None:
        if disabled == (m.disabled_at is not None):
            return False
        if disabled:
            _keeps_an_admin(session, op, m.organisation_id)
        with every_row(session):
            m.disabled_at = utcnow() if disabled else None
            session.flush()
        action = "operator disable" if disabled else "operator enable"
        _log(session, scope, action, op, "member", org_id=m.organisation_id)
        return True
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
