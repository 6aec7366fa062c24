"""Passphrase and sessions of the local web app.

* The passphrase is stored as an scrypt hash (monitor/passphrases.py) in
  ``web_access``; set on the first visit, checked in constant time.
* Sessions live in this process only (a restart locks everyone out): a random token in an
  HttpOnly, SameSite=Strict cookie, a CSRF token per session, an idle timeout
  (``[web] idle_timeout``) measured with an injectable clock. Every visitor gets an anonymous
  session first, so the set-up and log-in forms carry a CSRF token too; logging in replaces the
  token (no session fixation).
* Wrong passphrases: after 5 in a row, each further try waits 30 seconds.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from monitor.db import Database
from monitor.db.models import WebAccess
from monitor.errors import MonitorError
from monitor.orgs.scope import Scope
from monitor.passphrases import hash_passphrase, verify_passphrase

__all__ = [
    "MIN_PASSPHRASE",
    "PassphraseError",
    "Sessions",
    "WebSession",
    "check_passphrase",
    "hash_passphrase",
    "passphrase_is_set",
    "set_passphrase",
    "verify_passphrase",
]

MIN_PASSPHRASE = 8
_FAILURES_BEFORE_WAIT = 5
_WAIT = timedelta(seconds=30)


class PassphraseError(MonitorError):
    """A passphrase that cannot be used, or a wrong one."""


def check_passphrase(passphrase: str, repeated: str) -> str:
    """The passphrase to set, or :class:`PassphraseError` saying what is wrong with it."""
    if len(passphrase) < MIN_PASSPHRASE:
        raise PassphraseError(f"use at least {MIN_PASSPHRASE} characters")
    if passphrase != repeated:
        raise PassphraseError("the two passphrases differ")
    return passphrase


def passphrase_is_set(db: Database) -> bool:
    with db.session() as s:
        return s.scalar(select(WebAccess.id).limit(1)) is not None


def set_passphrase(db: Database, passphrase: str, *, first: bool) -> None:
    """Store the passphrase's hash. ``first``: only if none is set yet (the set-up page),
    so a second visitor cannot replace it."""
    hashed = hash_passphrase(passphrase)
    with db.session() as s:
        row = s.scalar(select(WebAccess).limit(1))
        if row is not None and first:
            raise PassphraseError("a passphrase is already set")
        if row is None:
            s.add(WebAccess(passphrase_hash=hashed))
        else:
            row.passphrase_hash = hashed
            row.changed_at = datetime.now(UTC)


def stored_hash(db: Database) -> str | None:
    with db.session() as s:
        return s.scalar(select(WebAccess.passphrase_hash).limit(1))


@dataclass
class WebSession:
    token: str
    csrf: str
    last_seen: datetime
    authenticated: bool = False
    lang: str = ""
    flash: list[tuple[str, dict[str, object]]] = field(default_factory=list)  # shown once
    reveal_keys: dict[str, tuple[int, int]] = field(default_factory=dict)  # one-time image keys
    scope: Scope | None = None  # an organisation's operator (None: the household)
    credentials: str = ""  # the operator's credentials stamp at log-in (monitor/orgs/management)
    person: int | None = None  # a monitored person signed in to see their own cases (subject id)


class Sessions:
    """Sessions of this process. ``clock`` returns aware UTC datetimes (tests inject one)."""

    def __init__(
        self, db: Database, idle_timeout: timedelta, clock: Callable[[], datetime] | None = None
    ) -> None:
        self.db = db
        self.idle_timeout = idle_timeout
        self.clock = clock or (lambda: datetime.now(UTC))
        self._by_token: dict[str, WebSession] = {}
        self._lock = threading.Lock()
        self._failures = 0
        self._wait_until: datetime | None = None

    def new(self, lang: str = "") -> WebSession:
        ws = WebSession(
            token=secrets.token_urlsafe(32),
            csrf=secrets.token_urlsafe(32),
            last_seen=self.clock(),
            lang=lang,
        )
        with self._lock:
            self._drop_idle()
            self._by_token[ws.token] = ws
        return ws

    def get(self, token: str | None) -> tuple[WebSession | None, bool]:
        """The live session for ``token`` (its idle clock restarted) and whether the token
        belonged to a session that timed out."""
        if not token:
            return None, False
        now = self.clock()
        with self._lock:
            ws = self._by_token.get(token)
            if ws is None:
                return None, False
            if now - ws.last_seen > self.idle_timeout:
                del self._by_token[token]
                return None, ws.authenticated
            ws.last_seen = now
            return ws, False

    def drop(self, ws: WebSession | None) -> None:
        if ws is not None:
            with self._lock:
                self._by_token.pop(ws.token, None)

    def log_in(self, ws: WebSession, passphrase: str) -> WebSession:
        """A new, authenticated session replacing ``ws``; :class:`PassphraseError` if the
        passphrase is wrong (or tries come too fast after several wrong ones)."""
        now = self.clock()
        if self._wait_until is not None and now < self._wait_until:
            raise PassphraseError("too many wrong tries: wait half a minute and try again")
        stored = stored_hash(self.db)
        if stored is None or not verify_passphrase(stored, passphrase):
            self._failures += 1
            if self._failures >= _FAILURES_BEFORE_WAIT:
                self._wait_until = now + _WAIT
            raise PassphraseError("that passphrase is not right")
        return self._fresh(ws)

    def log_in_operator(self, ws: WebSession, email: str, passphrase: str, code: str) -> WebSession:
        """An organisation's operator logs in (passphrase and the authenticator's code): a
        new session carrying their :class:`~monitor.orgs.scope.Scope`. A wrong email,
        passphrase or code gives the same :class:`PassphraseError`, and counts towards the
        same slow-down as wrong household passphrases."""
        from monitor.db.models import Operator
        from monitor.orgs import accounts
        from monitor.orgs.management import credentials_stamp

        now = self.clock()
        if self._wait_until is not None and now < self._wait_until:
            raise PassphraseError("too many wrong tries: wait half a minute and try again")
        try:
            with self.db.session() as s:
                scope = accounts.authenticate(s, email, passphrase, code, single_use=True)
                stamp = credentials_stamp(s.get(Operator, scope.operator_id))
        except accounts.LoginFailed:
            self._failures += 1
            if self._failures >= _FAILURES_BEFORE_WAIT:
                self._wait_until = now + _WAIT
            raise PassphraseError(
                "that did not work: the email, the passphrase or the code is not right"
            ) from None
        fresh = self._fresh(ws)
        fresh.scope, fresh.credentials = scope, stamp
        return fresh

    def log_in_person(self, ws: WebSession, address: str, passphrase: str) -> WebSession:
        """A monitored person logs in (monitor/orgs/person.py): a new session that opens only
        their own pages (``/me``), never an operator's. Wrong tries count towards the same
        slow-down as the others'."""
        from monitor.orgs import accounts, person
        from monitor.orgs.scope import using_scope

        now = self.clock()
        if self._wait_until is not None and now < self._wait_until:
            raise PassphraseError("too many wrong tries: wait half a minute and try again")
        try:
            with using_scope(None), self.db.session() as s:  # among every organisation's
                login = person.authenticate(s, address, passphrase)
                subject_id, stamp = login.subject_id, person.stamp(login)
        except accounts.LoginFailed as exc:
            self._failures += 1
            if self._failures >= _FAILURES_BEFORE_WAIT:
                self._wait_until = now + _WAIT
            raise PassphraseError(str(exc)) from None
        return self.person_session(ws, subject_id, stamp)

    def person_session(self, ws: WebSession, subject_id: int, stamp: str) -> WebSession:
        """A new session for the person ``subject_id`` (not ``authenticated``: operators'
        pages stay closed to it), replacing ``ws``."""
        self._failures, self._wait_until = 0, None
        self.drop(ws)
        fresh = self.new(ws.lang)
        fresh.person, fresh.credentials = subject_id, stamp
        return fresh

    def operator_changed_passphrase(self, ws: WebSession, stamp: str) -> WebSession:
        """The operator of ``ws`` changed their own passphrase: their other sessions end at
        their next page (the stamp changed); this one goes on, under a new token."""
        fresh = self._fresh(ws)
        fresh.scope, fresh.credentials = ws.scope, stamp
        return fresh

    def _fresh(self, ws: WebSession) -> WebSession:
        self._failures, self._wait_until = 0, None
        self.drop(ws)
        fresh = self.new(ws.lang)
        fresh.authenticated = True
        return fresh

    def _drop_idle(self) -> None:
        now = self.clock()
        for token in [
            t for t, s in self._by_token.items() if now - s.last_seen > self.idle_timeout
        ]:
            del self._by_token[token]
