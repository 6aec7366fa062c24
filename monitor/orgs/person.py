"""The optional log-in of an organisation's person: their own cases, read only.

A caseworker invites the person (:func:`invite`): a discreet mail (no name, no organisation)
with a one-time link to the web app's ``/me/invite`` page, valid :data:`INVITE_VALID`; only the
token's SHA-256 is kept, until it is used. There the person chooses a passphrase
(:func:`accept_invite`) and later logs in with the address the invitation went to
(:func:`authenticate`). Signed in they see their own cases only (:mod:`monitor.web.views_me`)
and may withdraw their consent; every look is in the organisation's audit log as
:data:`PERSON`. The log-in is erased with the person.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from monitor.db.models import PersonLogin, Subject, utcnow
from monitor.errors import MonitorError
from monitor.orgs import audit
from monitor.orgs.accounts import MIN_PASSPHRASE, LoginFailed
from monitor.orgs.scope import Scope
from monitor.passphrases import hash_passphrase, verify_passphrase

__all__ = [
    "INVITE_VALID",
    "PERSON",
    "accept_invite",
    "authenticate",
    "invite",
    "person_scope",
    "stamp",
]

INVITE_VALID = timedelta(days=7)
PERSON = "the person"  # who the audit log names for the person's own looks and changes


def _sha(token: str) -> str:
    return hashlib.sha256(token.strip().encode()).hexdigest()


def person_scope(subject: Subject) -> Scope:
    """The scope the person's pages run in: their organisation (the pages themselves keep to
    the person's own cases), a role that may change nothing an operator can."""
    return Scope(org_id=subject.organisation_id, operator=PERSON, role="person")


def stamp(login: PersonLogin) -> str:
    """Changes when the passphrase is set again: earlier sessions end."""
    return hashlib.sha256((login.passphrase_hash or "").encode()).hexdigest()


def invite(
    session: Session, settings: Any, subject: Subject, scope: Scope, now: datetime | None = None
) -> str:
    """Invite ``subject`` (an organisation's person with an email address) to see their own
    cases: the mail goes through the outbox; returns the link. A new invitation replaces an
    unused one; a passphrase already set stays until the person sets a new one."""
    scope.require("admin", "caseworker")
    if subject.organisation_id is None:
        raise MonitorError("the person's own log-in is for an organisation's people")
    if not subject.email:
        raise MonitorError("the invitation is mailed: the person needs an email address first")
    now = now or utcnow()
    token = secrets.token_urlsafe(24)
    login = session.scalar(select(PersonLogin).where(PersonLogin.subject_id == subject.id))
    address = subject.email.strip().lower()
    if login is None:
        login = PersonLogin(subject_id=subject.id, login=address, created_at=now)
        session.add(login)
    login.login = address
    login.invite_sha256 = _sha(token)
    login.invite_expires_at = now + INVITE_VALID
    url = f"{settings.web.base_url()}/me/invite?code={token}"
    body = (
        "You can now see for yourself how the search for images of you is going: where they\n"
        "were found, what was done, and what the sites answered. No image is shown.\n\n"
        f"To choose a passphrase, open this link within {INVITE_VALID.days} days:\n\n"
        f"  {url}\n\n"
        "If you did not ask for this, ignore this message: nothing will happen.\n"
    )
    from monitor import alerts

    alerts.queue_message(
        session, settings, subject.id, subject.email, "person_invite", body, now=now
    )
    audit.log(session, scope, "person invited", subject_id=subject.id)
    session.flush()
    return url


def accept_invite(
    session: Session, token: str, passphrase: str, repeated: str, now: datetime | None = None
) -> PersonLogin:
    """The person followed the link and chose a passphrase; the link cannot be used again.
    Call with no scope in force (the link is the key, among every organisation's people)."""
    now = now or utcnow()
    login = session.scalar(select(PersonLogin).where(PersonLogin.invite_sha256 == _sha(token)))
    if (
        login is None
        or login.invite_expires_at is None
        or login.invite_expires_at <= now
        or not token.strip()
    ):
        raise MonitorError("this link is unknown, used or expired: ask for a new invitation")
    if len(passphrase) < MIN_PASSPHRASE:
        raise MonitorError(f"use at least {MIN_PASSPHRASE} characters")
    if passphrase != repeated:
        raise MonitorError("the two passphrases differ")
    login.passphrase_hash = hash_passphrase(passphrase)
    login.invite_sha256, login.invite_expires_at = None, None
    login.last_login_at = now
    subject = session.get(Subject, login.subject_id)
    org = subject.organisation_id if subject else None
    audit.log(
        session,
        Scope(org_id=org, operator=PERSON),
        "person passphrase set",
        subject_id=login.subject_id,
    )
    session.flush()
    return login


def authenticate(session: Session, address: str, passphrase: str) -> PersonLogin:
    """The person's log-in when the passphrase is right, else :class:`LoginFailed` (which
    does not say what was wrong). Call with no scope in force."""
    logins = session.scalars(
        select(PersonLogin)
        .where(
            PersonLogin.login == address.strip().lower(),
            PersonLogin.passphrase_hash.is_not(None),
        )
        .order_by(PersonLogin.id)
    ).all()
    if not logins:
        verify_passphrase(hash_passphrase("x" * MIN_PASSPHRASE), passphrase)  # same time
    # The same address may be a person of two organisations: their own passphrase decides.
    for login in logins:
        if login.passphrase_hash and verify_passphrase(login.passphrase_hash, passphrase):
            login.last_login_at = utcnow()
            return login
    raise LoginFailed("that did not work: the email or the passphrase is not right")
