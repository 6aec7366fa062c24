"""Consent: no scan of an organisation's person without it, only the names and search
backends it allows, paused when it expires, erasure at once when it is withdrawn.

A consent record says who consented (the person, or a representative with stated
authority), when, how (the SHA-256 of the signed form, or a confirmation link mailed to the
person: valid once confirmed), which names and aliases may be searched, which search backends
may receive them (search queries are personal data sent to a third party), and until when.
People without an organisation (a person monitoring themselves) need no record."""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from monitor.db.models import Consent, Subject, utcnow
from monitor.errors import MonitorError
from monitor.orgs.scope import Scope, subject_in_scope
from monitor.types import iso_utc

MAX_FORM_BYTES = 50 * 2**20
ANY_BACKEND = "*"


class ConsentRequired(MonitorError):
    """An organisation's person has no valid consent: nothing is searched."""


def form_sha256(path: Path) -> str:
    """SHA-256 of the signed consent form (the file itself is not stored)."""
    path = Path(path)
    if not path.is_file():
        raise MonitorError(f"consent form not found: {path}")
    if path.stat().st_size > MAX_FORM_BYTES:
        raise MonitorError(f"{path}: larger than {MAX_FORM_BYTES // 2**20} MB")
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def record_consent(
    session: Session,
    subject: Subject,
    *,
    given_by: str,
    names: list[str],
    backends: list[str],
    form_sha: str | None = None,
    link_token: str | None = None,
    representative: str | None = None,
    authority: str | None = None,
    valid_until: datetime | None = None,
    operator_id: int | None = None,
    now: datetime | None = None,
) -> Consent:
    """Record a consent (a signed form, or a mailed link still to be confirmed) and lift a
    pause for an expired one."""
    now = now or utcnow()
    if given_by not in ("person", "representative"):
        raise MonitorError("consent is given by 'person' or by a 'representative'")
    if given_by == "representative" and not (representative and authority):
        raise MonitorError("a representative's consent needs their name and stated authority")
    if (form_sha is None) == (link_token is None):
        raise MonitorError("consent needs a signed form (its file) or a mailed confirmation link")
    if valid_until is not None and valid_until <= now:
        raise MonitorError("the consent's end date is in the past")
    if not backends:
        raise MonitorError("the consent must allow at least one search backend (or '*': any)")
    consent = Consent(
        subject_id=subject.id,
        given_by=given_by,
        representative=representative,
        authority=authority,
        given_at=now,
        method="signed_form" if form_sha else "mailed_link",
        form_sha256=form_sha,
        link_token_sha256=hashlib.sha256(link_token.encode()).hexdigest() if link_token else None,
        confirmed_at=now if form_sha else None,
        names=json.dumps(list(dict.fromkeys(names))),
        backends=json.dumps(list(dict.fromkeys(backends))),
        valid_until=valid_until,
        recorded_by=operator_id,
    )
    session.add(consent)
    if subject.paused_reason and consent.confirmed_at is not None:
        subject.paused_reason = None
    session.flush()
    return consent


def new_link_token() -> str:
    """A code the person may also pass on to be typed (`consent confirm CODE`): never starting
    with "-", which the command line would take for an option."""
    while (token := secrets.token_urlsafe(18)).startswith("-"):
        pass
    return token


def queue_link_mail(session: Session, settings: Any, subject: Subject, token: str) -> None:
    """Mail the person the link (or code) that confirms their consent, through the outbox.
    Discreet like the alerts: no name, no organisation."""
    from monitor import alerts

    if not subject.email:
        raise MonitorError("consent by a mailed link needs the person's --email")
    url = settings.orgs.confirm_url
    how = (
        f"To confirm, open this link:\n\n  {url}{token}\n"
        if url
        else f"To confirm, give this code to the person helping you:\n\n  {token}\n"
    )
    body = (
        "You asked to be helped with finding images of you published without your consent.\n"
        "Nothing is searched until you confirm that you agree.\n\n"
        f"{how}\nIf you did not ask for this, ignore this message: nothing will happen.\n"
    )
    alerts.queue_message(session, settings, subject.id, subject.email, "consent_link", body)


def confirm_link(
    session: Session, token: str, now: datetime | None = None, scope: Scope | None = None
) -> Consent:
    """The person followed the confirmation link mailed to them (or passed its code on): the
    consent becomes valid. A code of someone outside ``scope`` is unknown."""
    digest = hashlib.sha256(token.strip().encode()).hexdigest()
    consent = session.scalar(select(Consent).where(Consent.link_token_sha256 == digest))
    if consent is not None and not subject_in_scope(session, consent.subject_id, scope):
        consent = None
    if consent is None or consent.withdrawn_at is not None:
        raise MonitorError("unknown or withdrawn confirmation link")
    consent.confirmed_at = consent.confirmed_at or now or utcnow()
    subject = session.get(Subject, consent.subject_id)
    if subject is not None and subject.paused_reason:
        subject.paused_reason = None
    return consent


def latest(session: Session, subject_id: int) -> Consent | None:
    return session.scalar(
        select(Consent)
        .where(Consent.subject_id == subject_id)
        .order_by(Consent.given_at.desc(), Consent.id.desc())
        .limit(1)
    )


@dataclass(frozen=True, slots=True)
class Permit:
    """What a scan may do for one person: which names it may search, which backends may
    receive them (``None``: no limit, a person monitoring themselves)."""

    names: frozenset[str] | None
    backends: frozenset[str] | None

    def allows_backend(self, name: str, kind: str = "") -> bool:
        if self.backends is None or ANY_BACKEND in self.backends:
            return True
        return name in self.backends or (bool(kind) and kind in self.backends)

    def allows_name(self, name: str) -> bool:
        return self.names is None or name.casefold() in self.names


UNLIMITED = Permit(None, None)


def why_invalid(consent: Consent | None, now: datetime) -> str | None:
    """Why ``consent`` does not allow a scan now, or None when it does."""
    if consent is None:
        return "no consent is recorded"
    if consent.withdrawn_at is not None:
        return "consent was withdrawn"
    if consent.confirmed_at is None:
        return "the person has not confirmed the mailed consent link yet"
    if consent.valid_until is not None and consent.valid_until <= now:
        return f"consent expired on {consent.valid_until:%Y-%m-%d}"
    return None


def paused_because(session: Session, subject: Subject, now: datetime | None = None) -> str | None:
    """Why monitoring of ``subject`` is paused now, or None when it goes on. Paused means no
    scan and no re-check of the places already found (nothing is fetched for the person):
    an organisation's person without valid consent (even before the scheduler's maintenance
    has marked it), or a person marked paused (``subjects.paused_reason``)."""
    if subject.organisation_id is not None:
        reason = why_invalid(latest(session, subject.id), now or utcnow())
        if reason is not None:
            return reason
    return subject.paused_reason or None


def permit(session: Session, subject: Subject, now: datetime | None = None) -> Permit:
    """What a scan of ``subject`` may do now; :class:`ConsentRequired` when it may not run
    (an organisation's person without valid consent, or paused)."""
    if subject.organisation_id is None:
        return UNLIMITED
    reason = paused_because(session, subject, now)
    consent = latest(session, subject.id)
    if reason is not None or consent is None:
        raise ConsentRequired(f"not scanned: {reason}; monitoring is paused until it is renewed")
    names = frozenset(n.casefold() for n in json.loads(consent.names))
    return Permit(names, frozenset(json.loads(consent.backends)))


def describe(consent: Consent) -> dict[str, Any]:
    return {
        "given_by": consent.given_by,
        "representative": consent.representative,
        "authority": consent.authority,
        "given_at": iso_utc(consent.given_at),
        "method": consent.method,
        "form_sha256": consent.form_sha256,
        "confirmed_at": iso_utc(consent.confirmed_at),
        "names": json.loads(consent.names),
        "backends": json.loads(consent.backends),
        "valid_until": iso_utc(consent.valid_until),
        "withdrawn_at": iso_utc(consent.withdrawn_at),
        "valid_now": why_invalid(consent, utcnow()) is None,
    }
