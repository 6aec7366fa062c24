"""Alerts: a durable outbox in the database, discreet messages, and delivery with retries.

How an alert travels:

1. **Held.** While a scan runs, each new sighting of a matched image is added to the scan's
   outbox row by :func:`hold_alert`, *in the same transaction as the match*: a recorded match
   is never without its alert.
2. **Pending.** When the scan ends, :func:`release_alerts` renders the message (subject line and
   plain-text body, from the database) and makes it ``pending``. Rows held by a scan that
   crashed are released by the next scan of that subject (``scan_id=None``).
3. **Sending.** :func:`deliver_pending` claims a due row with an atomic
   ``UPDATE ... WHERE status = 'pending' (or its lease expired)``: it sets ``status='sending'``
   and a lease, so two senders (threads or processes) never both claim it.
4. **Sent**, right after the mail server accepted it, in its own transaction. A temporary failure
   (server down, time-out, 4xx) goes back to ``pending`` with an exponential back-off
   (``[mail] retry_base``, doubling, at most ``retry_max``) until ``max_attempts``; a permanent
   refusal (5xx for the recipient or the message) is ``failed`` with the reason kept.

Exactly once, honestly: between the mail server's "250 OK" and the ``sent`` commit there is a
short window. If the process dies (or the database cannot be written, or the connection drops
before the "250" arrives) in that window, the row's lease expires and the message is sent again.
Every copy carries the same ``Message-ID`` (from ``OutboxMessage.message_id``), so mail clients
and most servers show it once. Nothing else can send a row twice.

What an alert says (promise 3): no image, no attachment; by default no name and no web address,
only a neutral subject line (``[mail] subject``), a count of new items, how to see them on this
computer (a link to the local web app's page, ``[web] alert_link``), and the support contacts
(by ``[mail] country``, or ``[mail] support_contacts``; none with ``[mail] support_lines =
false``; shown without ``http(s)://``, see monitor/support.py).
``[mail] detail = "full"`` adds the page and image addresses, never the name or the image.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import os
import re
import smtplib
import socket
import ssl
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, getaddresses, make_msgid
from hashlib import sha256
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import jinja2
from sqlalchemy import ColumnElement, and_, func, or_, select, update
from sqlalchemy.orm import Session

from monitor.config import MailConfig, Settings
from monitor.db import Database
from monitor.db.models import OutboxMessage, Scan, Sighting, Subject, SubjectHealth, utcnow
from monitor.errors import MonitorError
from monitor.paths import ensure_private_dir
from monitor.support import support_lines

if TYPE_CHECKING:
    from monitor.orgs.scope import Scope

__all__ = [
    "VIEW_COMMAND",
    "DeliveryError",
    "DeliveryReport",
    "Notifier",
    "OutboxFolderNotifier",
    "PermanentDeliveryError",
    "SmtpNotifier",
    "TransientDeliveryError",
    "build_email",
    "compose_alert",
    "deliver_pending",
    "erase_outbox_files",
    "hold_alert",
    "note_search_health",
    "notifier_from_settings",
    "outbox_file_key",
    "outbox_files",
    "outbox_status",
    "pending_count",
    "release_alerts",
    "requeue_failed",
    "retry_delay",
]

logger = logging.getLogger("monitor.alerts")

VIEW_COMMAND = "python run_monitor.py matches"
"""What an alert tells the person to run to see the new items."""

HEALTH_COMMAND = "python run_monitor.py scan --all"
"""What a "monitoring is degraded" notice tells the person to run to see what fails."""

TEMPLATES_DIR = Path(__file__).parent / "templates"
_MSGID_PLACEHOLDER_DOMAIN = "localhost"


# ---------------------------------------------------------------------- errors


class DeliveryError(MonitorError):
    """An alert could not be delivered."""


class TransientDeliveryError(DeliveryError):
    """Delivery failed for now (server down, time-out, 4xx, login refused...): retry later.

    ``unreachable`` is true when the destination could not be reached at all, so the other
    messages for it are not tried in the same pass.
    """

    def __init__(self, message: str, *, unreachable: bool = False) -> None:
        super().__init__(message)
        self.unreachable = unreachable


class PermanentDeliveryError(DeliveryError):
    """The destination refused this message for good (a 5xx answer): do not retry."""


# ---------------------------------------------------------------------- outbox rows


def _new_message_id(domain: str = _MSGID_PLACEHOLDER_DOMAIN) -> str:
    # make_msgid's default domain is socket.getfqdn(): a DNS lookup that names this machine.
    return make_msgid(domain=domain)


def _sender_domain(sender: str) -> str:
    """The domain of ``[mail] sender`` for Message-IDs (``localhost`` if it has none)."""
    addrs = getaddresses([sender])
    if addrs:
        _, addr = addrs[0]
        domain = addr.rpartition("@")[2].strip().strip("[]")
        if domain and re.fullmatch(r"[A-Za-z0-9.-]+", domain):
            return domain
    return _MSGID_PLACEHOLDER_DOMAIN


def hold_alert(
    session: Session, subject: Subject, scan_id: int, new_items: int = 1
) -> OutboxMessage:
    """Add ``new_items`` to this scan's held alert for ``subject``, creating it if needed.

    Call it inside the transaction that records the match; then link the sighting with
    ``sighting.alert_id = row.id`` (after a flush). The row stays ``held`` until
    :func:`release_alerts`, so one scan makes one alert however many items it finds.
    """
    if new_items < 0:
        raise ValueError("new_items cannot be negative")
    row = session.scalar(
        select(OutboxMessage).where(
            OutboxMessage.subject_id == subject.id,
            OutboxMessage.scan_id == scan_id,
            OutboxMessage.status == "held",
        )
    )
    if row is None:
        row = OutboxMessage(
            subject_id=subject.id,
            scan_id=scan_id,
            message_id=_new_message_id(),
            recipient=_recipient(session, subject),
            status="held",
            new_items=0,
            attempts=0,
        )
        session.add(row)
    row.new_items = (row.new_items or 0) + new_items
    return row


def _recipient(session: Session, subject: Subject) -> str | None:
    """The person's address, or for an organisation's person their caseworkers' or both
    (``subject.alert_to``, monitor/orgs/casework.py)."""
    if subject.organisation_id is None:
        return subject.email
    from monitor.orgs.casework import alert_recipient

    return alert_recipient(session, subject)


def release_alerts(
    session: Session,
    settings: Settings,
    *,
    scan_id: int | None = None,
    now: datetime | None = None,
) -> int:
    """Render held alerts and make them ``pending`` (due at ``now``). Returns how many.

    With ``scan_id``: that scan's held alerts (call it when the scan ends, whatever its status).
    With ``None``: every held alert whose scan is no longer running (left behind by a crash).
    The message is rendered from the database: the number of sightings linked to the alert
    (``Sighting.alert_id``), and their addresses for ``detail = "full"``. A held alert with
    nothing to report is dropped.
    """
    now = now or utcnow()
    query = select(OutboxMessage).where(OutboxMessage.status == "held")
    if scan_id is not None:
        query = query.where(OutboxMessage.scan_id == scan_id)
    else:
        query = query.outerjoin(Scan, Scan.id == OutboxMessage.scan_id).where(
            or_(Scan.id.is_(None), Scan.status != "running")
        )
    rows = session.scalars(query.order_by(OutboxMessage.id)).all()
    domain = _sender_domain(settings.mail.sender)
    released = 0
    for row in rows:
        urls = [
            (page, image)
            for page, image in session.execute(
                select(Sighting.page_url, Sighting.image_url)
                .where(Sighting.alert_id == row.id)
                .order_by(Sighting.id)
            ).all()
        ]
        count = len(urls) or row.new_items
        if count <= 0:
            logger.info("outbox row %s had nothing to report; dropped", row.id)
            session.delete(row)
            continue
        subject = session.get(Subject, row.subject_id)
        if subject is not None:
            row.recipient = _recipient(session, subject)  # the address as it is now
        row.new_items = count
        # Never sent yet, so it may get its final Message-ID (the sender's domain) now.
        row.message_id = _new_message_id(domain)
        row.subject_line, row.body = compose_alert(settings, row, urls)
        row.status = "pending"
        row.next_attempt_at = now
        row.lease_until = None
        released += 1
    session.flush()
    return released


def _outbox_in_scope(scope: Scope | None) -> ColumnElement[bool] | None:
    """The condition keeping outbox rows to the people of ``scope`` (the one in force when
    None); None: every row (no scope in force: the scheduler, the machine's owner's `run`)."""
    from monitor.orgs.scope import subject_filter

    cond = subject_filter(scope)
    if cond is None:
        return None
    return OutboxMessage.subject_id.in_(select(Subject.id).where(cond))


def requeue_failed(
    session: Session,
    *,
    ids: list[int] | None = None,
    now: datetime | None = None,
    scope: Scope | None = None,
) -> int:
    """Make ``failed`` alerts (all, or those ``ids``) pending again with fresh attempts: only
    those of ``scope``'s people (the scope in force when None; with none, every one).

    For after the cause is fixed (a wrong address or password). Returns how many.
    """
    stmt = update(OutboxMessage).where(OutboxMessage.status == "failed")
    if ids is not None:
        stmt = stmt.where(OutboxMessage.id.in_(ids))
    if (in_scope := _outbox_in_scope(scope)) is not None:
        stmt = stmt.where(in_scope)
    result = session.execute(
        stmt.values(status="pending", attempts=0, next_attempt_at=now or utcnow()),
        execution_options={"synchronize_session": False},
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def outbox_status(session: Session) -> list[dict[str, Any]]:
    """Every outbox row, newest first, for the CLI: state and timing only, never the body."""
    from monitor.orgs.scope import scoped

    stmt = select(OutboxMessage).join(Subject, Subject.id == OutboxMessage.subject_id)
    rows = session.scalars(scoped(stmt, None).order_by(OutboxMessage.id.desc())).all()
    return [
        {
            "id": r.id,
            "kind": r.kind,
            "status": r.status,
            "new_items": r.new_items,
            "attempts": r.attempts,
            "created_at": r.created_at,
            "next_attempt_at": r.next_attempt_at if r.status in ("pending", "sending") else None,
            "sent_at": r.sent_at,
            "delivered_to": r.delivered_to,
            "last_error": r.last_error,
        }
        for r in rows
    ]


def note_search_health(
    session: Session,
    settings: Settings,
    subject_id: int,
    *,
    failed: bool,
    reason: str | None = None,
    scan_id: int | None = None,
    now: datetime | None = None,
) -> str | None:
    """Count a finished scan whose search failed (``failed``) or worked, for ``subject_id``.

    After ``[search] degraded_after`` failed scans in a row the person is told, once, that
    monitoring is degraded; after the first scan that works again, once, that it recovered.
    Both notices go through the outbox like alerts (``kind`` "degraded" / "recovered"), as
    discreet as they are: no name, no web address. Returns the kind queued, or ``None``.
    """
    now = now or utcnow()
    health = session.get(SubjectHealth, subject_id)
    if health is None:
        health = SubjectHealth(subject_id=subject_id, search_failures=0)
        session.add(health)
    state: str | None = None
    if failed:
        health.search_failures = (health.search_failures or 0) + 1
        health.last_failure = (reason or "")[:2000] or None
        health.last_failure_at = now
        if (
            health.search_failures >= settings.search.degraded_after
            and health.degraded_since is None
        ):
            health.degraded_since = now
            state = "degraded"
    else:
        health.search_failures = 0
        if health.degraded_since is not None:
            health.degraded_since = None
            state = "recovered"
    if state is not None:
        _queue_health_notice(session, settings, subject_id, state, health, scan_id, now)
        logger.info("subject %d: monitoring %s; the person is told", subject_id, state)
    session.flush()
    return state


def _queue_health_notice(
    session: Session,
    settings: Settings,
    subject_id: int,
    state: str,
    health: SubjectHealth,
    scan_id: int | None,
    now: datetime,
) -> OutboxMessage:
    subject = session.get(Subject, subject_id)
    body = (
        _templates()
        .get_template("health.txt.j2")
        .render(
            state=state,
            scans=health.search_failures,
            command=HEALTH_COMMAND,
            link=web_link(settings, "/"),
            support_contacts=[_without_scheme(_one_line(c)) for c in support_lines(settings.mail)],
        )
    )
    body = re.sub(r"\n{3,}", "\n\n", body).strip("\n") + "\n"
    recipient = _recipient(session, subject) if subject is not None else None
    return queue_message(
        session, settings, subject_id, recipient, state, body, now=now, scan_id=scan_id
    )


def queue_message(
    session: Session,
    settings: Settings,
    subject_id: int | None,
    recipient: str | None,
    kind: str,
    body: str,
    *,
    now: datetime | None = None,
    scan_id: int | None = None,
) -> OutboxMessage:
    """Queue a message other than a match alert (a health notice, a consent link, an
    invitation, a consent notice for the caseworker) in the outbox: delivered like alerts,
    with the same neutral subject line. ``recipient`` None: the configured address."""
    row = OutboxMessage(
        subject_id=subject_id,
        scan_id=scan_id,
        message_id=_new_message_id(_sender_domain(settings.mail.sender)),
        recipient=recipient,
        status="pending",
        kind=kind,
        new_items=0,
        subject_line=_one_line(settings.mail.subject)[:200] or "You have a new notification",
        body=body,
        attempts=0,
        next_attempt_at=now or utcnow(),
    )
    session.add(row)
    return row


# ---------------------------------------------------------------------- composition


@functools.cache
def _templates() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
        autoescape=False,  # plain text, never HTML
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


_SCHEME = re.compile(r"\bhttps?://", re.IGNORECASE)


def _without_scheme(text: str) -> str:
    """``https://stopncii.org`` -> ``stopncii.org``: readable, and no link in the alert."""
    return _SCHEME.sub("", text).rstrip("/") if text else text


def _one_line(text: str) -> str:
    return " ".join(text.split())


def web_link(settings: Settings, path: str) -> str:
    """The local web app's page an alert points to (``[web] alert_link``), or "" for the
    command line. A page of this tool on the person's own machine: no name, no found URL."""
    if not settings.web.alert_link:
        return ""
    return _one_line(settings.web.base_url() + path)


def compose_alert(
    settings: Settings, message: OutboxMessage, urls: list[tuple[str, str]]
) -> tuple[str, str]:
    """``(subject line, plain-text body)`` for an alert about ``message.new_items`` items.

    ``urls`` are the (page, image) addresses of the new items; they appear only with
    ``[mail] detail = "full"``. The person's name never appears.
    """
    cfg = settings.mail
    body = (
        _templates()
        .get_template("alert.txt.j2")
        .render(
            count=message.new_items,
            detail=cfg.detail,
            urls=[(_one_line(p), _one_line(i)) for p, i in urls] if cfg.detail == "full" else [],
            command=VIEW_COMMAND,
            link=web_link(settings, "/cases"),
            support_contacts=[_without_scheme(_one_line(c)) for c in support_lines(cfg)],
        )
    )
    body = re.sub(r"\n{3,}", "\n\n", body).strip("\n") + "\n"
    subject_line = _one_line(cfg.subject)[:200] or "You have a new notification"
    return subject_line, body


def build_email(
    settings: Settings, row: OutboxMessage, *, now: datetime | None = None
) -> EmailMessage:
    """The email for an outbox row: plain text only, no attachment, its stable Message-ID.

    ``Date`` is the time of sending (``now``), so a late alert still shows as new.
    """
    msg = EmailMessage()
    msg["From"] = settings.mail.sender
    if row.recipient:
        msg["To"] = row.recipient
    subject_line, body = row.subject_line, row.body
    if not body:  # not rendered (released by other code): render without addresses
        subject_line, body = compose_alert(settings, row, [])
    msg["Subject"] = subject_line or _one_line(settings.mail.subject)
    msg["Date"] = format_datetime(now or utcnow())
    msg["Message-ID"] = row.message_id
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies
    msg.set_content(body)
    return msg


# ---------------------------------------------------------------------- notifiers


@runtime_checkable
class Notifier(Protocol):
    """Somewhere alerts go. ``deliver`` returns where the message went (for the record).

    Raises :class:`TransientDeliveryError` to retry later, :class:`PermanentDeliveryError`
    when the message is refused for good.
    """

    def deliver(self, msg: EmailMessage) -> str: ...


def _is_loopback(host: str) -> bool:
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _reply(code: int, text: bytes | str) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return f"{code} {_one_line(text)}".strip()


class SmtpNotifier:
    """Delivers over SMTP with ``smtplib``: STARTTLS (``starttls``) or implicit TLS (``tls``).

    The certificate is verified with the system's trust store unless ``ssl_context`` is given
    (tests pass one that trusts a self-signed certificate). With ``username`` set, it logs in
    with the password from the environment variable ``password_env``, only over TLS unless the
    server is on this machine. EHLO says ``local_hostname`` (not this computer's name).
    """

    def __init__(
        self,
        cfg: MailConfig,
        *,
        ssl_context: ssl.SSLContext | None = None,
        local_hostname: str = "localhost",
    ) -> None:
        if not cfg.smtp_host:
            raise ValueError("SmtpNotifier needs [mail] smtp_host")
        self.cfg = cfg
        self.ssl_context = ssl_context
        self.local_hostname = local_hostname

    @property
    def destination(self) -> str:
        scheme = "smtps" if self.cfg.tls else "smtp"
        host = f"[{self.cfg.smtp_host}]" if ":" in self.cfg.smtp_host else self.cfg.smtp_host
        return f"{scheme}://{host}:{self.cfg.smtp_port}"

    def _context(self) -> ssl.SSLContext:
        return self.ssl_context or ssl.create_default_context()

    def deliver(self, msg: EmailMessage) -> str:
        """Send ``msg``; return ``smtp://host:port``. Raises a :class:`DeliveryError`."""
        try:
            self._send(msg)
        except DeliveryError:
            raise
        except Exception as exc:
            raise self._classify(exc) from exc
        return self.destination

    def _send(self, msg: EmailMessage) -> None:
        cfg = self.cfg
        conn: smtplib.SMTP
        if cfg.tls:
            conn = smtplib.SMTP_SSL(
                cfg.smtp_host,
                cfg.smtp_port,
                local_hostname=self.local_hostname,
                timeout=cfg.timeout,
                context=self._context(),
            )
        else:
            conn = smtplib.SMTP(
                cfg.smtp_host,
                cfg.smtp_port,
                local_hostname=self.local_hostname,
                timeout=cfg.timeout,
            )
        try:
            conn.ehlo()
            encrypted = cfg.tls
            if not cfg.tls and cfg.starttls:
                if not conn.has_extn("starttls"):
                    raise TransientDeliveryError(
                        f"the mail server at {self.destination} does not offer STARTTLS; use its "
                        "TLS port with `tls = true`, or `starttls = false` only for a server on "
                        "this machine"
                    )
                conn.starttls(context=self._context())
                conn.ehlo()
                encrypted = True
            if cfg.username:
                password = cfg.password()
                if password is None:
                    raise TransientDeliveryError(
                        f"[mail] username is set but the environment variable "
                        f"{cfg.password_env or '(password_env)'} holding the SMTP password is "
                        "empty or missing"
                    )
                if not encrypted and not _is_loopback(cfg.smtp_host):
                    raise TransientDeliveryError(
                        "refusing to send the SMTP password over an unencrypted connection to "
                        f"{self.destination}: set `starttls = true` or `tls = true` in [mail]"
                    )
                conn.login(cfg.username, password)
            conn.send_message(msg)
        except BaseException:
            conn.close()  # no polite QUIT on a broken or timed-out connection
            raise
        try:
            conn.quit()  # the message is already accepted: a failing QUIT changes nothing
        except Exception:
            conn.close()

    def _classify(self, exc: BaseException) -> DeliveryError:
        """Turn an smtplib/socket/ssl error into a transient or permanent delivery error."""
        where = self.destination
        if isinstance(exc, smtplib.SMTPRecipientsRefused):
            answers = list(exc.recipients.values())
            reason = "; ".join(_reply(code, text) for code, text in answers)
            if answers and all(code >= 500 for code, _ in answers):
                return PermanentDeliveryError(f"the mail server refused the recipient: {reason}")
            return TransientDeliveryError(f"the mail server deferred the recipient: {reason}")
        if isinstance(exc, smtplib.SMTPDataError):
            reason = _reply(exc.smtp_code, exc.smtp_error)
            if exc.smtp_code >= 500:
                return PermanentDeliveryError(f"the mail server rejected the message: {reason}")
            return TransientDeliveryError(f"the mail server deferred the message: {reason}")
        if isinstance(exc, smtplib.SMTPAuthenticationError):
            return TransientDeliveryError(
                f"the mail server refused the login ({_reply(exc.smtp_code, exc.smtp_error)}); "
                f"check [mail] username and the password in ${self.cfg.password_env}"
            )
        if isinstance(exc, smtplib.SMTPSenderRefused):
            return TransientDeliveryError(
                f"the mail server refused the sender address "
                f"({_reply(exc.smtp_code, exc.smtp_error)}); check [mail] sender"
            )
        if isinstance(exc, smtplib.SMTPConnectError):
            return TransientDeliveryError(
                f"the mail server at {where} refused the connection "
                f"({_reply(exc.smtp_code, exc.smtp_error)})",
                unreachable=True,
            )
        if isinstance(exc, smtplib.SMTPResponseException):
            return TransientDeliveryError(
                f"the mail server at {where} answered {_reply(exc.smtp_code, exc.smtp_error)}"
            )
        if isinstance(exc, smtplib.SMTPServerDisconnected) and "timed out" in str(exc):
            # smtplib reports a server that stops answering as a closed connection
            return TransientDeliveryError(
                f"the mail server at {where} did not answer within {self.cfg.timeout:g}s",
                unreachable=True,
            )
        if isinstance(exc, smtplib.SMTPServerDisconnected):
            return TransientDeliveryError(
                f"the mail server at {where} closed the connection", unreachable=True
            )
        if isinstance(exc, smtplib.SMTPNotSupportedError):
            return TransientDeliveryError(f"the mail server at {where} does not support: {exc}")
        if isinstance(exc, ssl.SSLCertVerificationError):
            return TransientDeliveryError(
                f"the certificate of the mail server at {where} could not be verified "
                f"({exc.verify_message or exc})",
                unreachable=True,
            )
        if isinstance(exc, ssl.SSLError):
            return TransientDeliveryError(
                f"TLS with the mail server at {where} failed ({exc}); is `tls` or `starttls` "
                "right for this port?",
                unreachable=True,
            )
        if isinstance(exc, ConnectionRefusedError):
            return TransientDeliveryError(
                f"could not connect to the mail server at {where}: connection refused",
                unreachable=True,
            )
        if isinstance(exc, TimeoutError | socket.timeout):
            return TransientDeliveryError(
                f"the mail server at {where} did not answer within {self.cfg.timeout:g}s",
                unreachable=True,
            )
        if isinstance(exc, socket.gaierror):
            return TransientDeliveryError(
                f"could not find the mail server {self.cfg.smtp_host!r} ({exc.strerror or exc})",
                unreachable=True,
            )
        if isinstance(exc, OSError):
            return TransientDeliveryError(
                f"could not talk to the mail server at {where}: {exc.strerror or exc}",
                unreachable=True,
            )
        if isinstance(exc, smtplib.SMTPException):
            return TransientDeliveryError(f"mail error with {where}: {exc}")
        return TransientDeliveryError(f"unexpected error sending to {where}: {exc!r}")


class OutboxFolderNotifier:
    """Writes each alert as an ``.eml`` file into a Maildir folder on this computer.

    The folder (and its ``tmp``/``new``/``cur``) is owner-only (0700) and each file 0600. The
    file is named after the Message-ID, so writing the same alert twice leaves one file. Any
    mail program can open the files; ``mailbox.Maildir(folder)`` reads them.
    """

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder).expanduser()

    def deliver(self, msg: EmailMessage) -> str:
        """Write ``msg`` into ``folder/new``; return the file's path."""
        try:
            return str(self._write(msg))
        except OSError as exc:
            raise TransientDeliveryError(
                f"could not write the alert into {self.folder}: {exc.strerror or exc}"
            ) from exc

    def _write(self, msg: EmailMessage) -> Path:
        ensure_private_dir(self.folder)
        for sub in ("tmp", "new", "cur"):
            path = self.folder / sub
            path.mkdir(mode=0o700, exist_ok=True)
            os.chmod(path, 0o700)
        message_id = msg.get("Message-ID")
        key = outbox_file_key(message_id) if message_id else uuid.uuid4().hex
        name = f"{key}.eml"
        final = self.folder / "new" / name
        if final.exists() or any((self.folder / "cur").glob(f"{key}.eml*")):
            return final if final.exists() else next((self.folder / "cur").glob(f"{key}.eml*"))
        tmp = self.folder / "tmp" / f"{name}.{os.getpid()}.{threading.get_ident()}"
        fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(msg.as_bytes())
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, final)  # Maildir: complete files only ever appear in new/
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return final


def outbox_file_key(message_id: str) -> str:
    """The name (before ``.eml``) of an alert's file in the outbox folder."""
    return sha256(message_id.encode()).hexdigest()[:32]


def outbox_files(session: Session, settings: Settings, subject_id: int) -> list[Path]:
    """The files the outbox folder holds for one person's alerts and notices (to erase them).

    An alert written to the outbox folder holds the person's address (``To:``) and, with
    ``[mail] detail = "full"``, web addresses. Its file is found by its Message-ID in
    ``new/``, ``cur/`` (a mail program may have read it) and ``tmp/``, in the configured folder
    and in the folder it was delivered to (if that has changed since)."""
    rows = session.execute(
        select(OutboxMessage.message_id, OutboxMessage.delivered_to).where(
            OutboxMessage.subject_id == subject_id
        )
    ).all()
    keys = {outbox_file_key(message_id) for message_id, _ in rows if message_id}
    folders = {settings.outbox_dir.expanduser()}
    for message_id, delivered_to in rows:
        path = Path(delivered_to) if delivered_to and not delivered_to.startswith("smtp:") else None
        if path is not None and message_id and path.name.startswith(outbox_file_key(message_id)):
            folders.add(path.parent.parent)
    found: set[Path] = set()
    for folder in folders:
        for sub in ("new", "cur", "tmp"):
            if (folder / sub).is_dir():
                found.update(p for key in keys for p in (folder / sub).glob(f"{key}.eml*"))
    return sorted(found)


def erase_outbox_files(paths: list[Path]) -> int:
    """Delete the outbox files found by :func:`outbox_files`; returns how many were deleted."""
    deleted = 0
    for path in paths:
        try:
            path.unlink()
            deleted += 1
        except FileNotFoundError:
            pass
    return deleted


def notifier_from_settings(settings: Settings) -> Notifier:
    """SMTP when ``[mail] smtp_host`` is set, else the local outbox folder."""
    if settings.mail.smtp_host:
        return SmtpNotifier(settings.mail)
    return OutboxFolderNotifier(settings.outbox_dir)


# ---------------------------------------------------------------------- delivery


@dataclass
class DeliveryReport:
    """What one :func:`deliver_pending` pass did."""

    sent: int = 0
    retried: int = 0  # failed for now, will be tried again
    failed: int = 0  # given up (refused for good, or out of attempts)
    where: list[str] = field(default_factory=list)  # destination of each sent alert
    errors: list[str] = field(default_factory=list)  # "alert N: reason" for each failure


def retry_delay(cfg: MailConfig, attempts: int) -> timedelta:
    """Back-off after the ``attempts``-th failed try: ``retry_base * 2**(attempts-1)``, capped."""
    base = cfg.retry_base.total_seconds()
    cap = cfg.retry_max.total_seconds()
    seconds = min(base * 2.0 ** min(max(attempts - 1, 0), 64), cap)
    return timedelta(seconds=seconds)


def _due(now: datetime) -> ColumnElement[bool]:
    """Rows a sender may claim at ``now``: pending and due, or sending with an expired lease."""
    return or_(
        and_(
            OutboxMessage.status == "pending",
            or_(OutboxMessage.next_attempt_at.is_(None), OutboxMessage.next_attempt_at <= now),
        ),
        and_(
            OutboxMessage.status == "sending",
            or_(OutboxMessage.lease_until.is_(None), OutboxMessage.lease_until <= now),
        ),
    )


_NO_SYNC = {"synchronize_session": False}


def _claim(db: Database, row_id: int, now: datetime, lease: timedelta) -> OutboxMessage | None:
    """Atomically take the row for ``lease``; ``None`` if another sender has it or it is done.

    The claim counts as an attempt, so a message that kills its sender cannot loop forever.
    """
    with db.session() as s:
        result = s.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id == row_id, _due(now))
            .values(
                status="sending",
                lease_until=now + lease,
                attempts=OutboxMessage.attempts + 1,
            ),
            execution_options=_NO_SYNC,
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            return None
        return s.get(OutboxMessage, row_id)


def _record(db: Database, row: OutboxMessage, **values: Any) -> bool:
    """Update a row we hold the lease of (our ``lease_until`` is the fencing token)."""
    with db.session() as s:
        result = s.execute(
            update(OutboxMessage)
            .where(
                OutboxMessage.id == row.id,
                OutboxMessage.status == "sending",
                OutboxMessage.lease_until == row.lease_until,
            )
            .values(**values),
            execution_options=_NO_SYNC,
        )
        return result.rowcount == 1  # type: ignore[attr-defined]


def _mark_sent(db: Database, row: OutboxMessage, where: str, now: datetime) -> None:
    """Record delivery. Delivered is the strongest fact: it wins over any other state."""
    with db.session() as s:
        s.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id == row.id, OutboxMessage.status != "sent")
            .values(status="sent", sent_at=now, delivered_to=where[:2000], lease_until=None),
            execution_options=_NO_SYNC,
        )


def deliver_pending(
    db: Database,
    notifier: Notifier,
    settings: Settings,
    *,
    now: datetime | None = None,
    lease: timedelta = timedelta(minutes=5),
    owner: str | None = None,
    scope: Scope | None = None,
) -> DeliveryReport:
    """Deliver every due alert once; reschedule or fail the ones that could not be delivered.
    Only alerts of ``scope``'s people (the scope in force when None: an operator's command or
    page delivers their organisation's alerts, and reports nothing of another's); with no
    scope in force (the scheduler) every due alert.

    Safe to run from several threads or processes at once: each row is claimed atomically
    before it is sent and marked sent in its own transaction right after. ``now`` fixes the
    clock (tests); ``lease`` is how long a claim lasts before another sender may take the row
    over (make it longer than a delivery can take); ``owner`` names this sender in the logs.
    Alerts without a recipient go to the local outbox folder whatever ``notifier`` is.
    """
    clock = (lambda: now) if now is not None else utcnow
    owner = owner or f"pid {os.getpid()} thread {threading.get_ident()}"
    cfg = settings.mail
    report = DeliveryReport()
    stmt = select(OutboxMessage.id, OutboxMessage.recipient).where(_due(clock()))
    if (in_scope := _outbox_in_scope(scope)) is not None:
        stmt = stmt.where(in_scope)
    with db.session() as s:
        due = s.execute(stmt.order_by(OutboxMessage.id)).all()
    folder: Notifier | None = notifier if isinstance(notifier, OutboxFolderNotifier) else None
    unreachable: set[int] = set()  # id() of notifiers that could not be reached this pass
    for row_id, recipient in due:
        target = notifier
        if recipient is None:
            folder = folder or OutboxFolderNotifier(settings.outbox_dir)
            target = folder
        if id(target) in unreachable:
            continue
        row = _claim(db, row_id, clock(), lease)
        if row is None:
            continue  # another sender has it, or it was sent meanwhile
        logger.debug("alert %s claimed by %s (attempt %s)", row.id, owner, row.attempts)
        if row.attempts > cfg.max_attempts:  # its last try was cut short (the sender died)
            reason = f"gave up after {cfg.max_attempts} attempts; the last one was interrupted"
            if _record(db, row, status="failed", lease_until=None, last_error=reason):
                report.failed += 1
                report.errors.append(f"alert {row.id}: {reason}")
            continue
        try:
            try:
                msg = build_email(settings, row, now=clock())
            except (ValueError, TypeError) as exc:
                raise PermanentDeliveryError(
                    f"the alert cannot be written as an email: {exc}"
                ) from exc
            where = target.deliver(msg)
        except PermanentDeliveryError as exc:
            logger.warning("alert %s refused for good: %s", row.id, exc)
            if _record(db, row, status="failed", lease_until=None, last_error=str(exc)):
                report.failed += 1
                report.errors.append(f"alert {row.id}: {exc}")
            continue
        except Exception as exc:
            error = exc if isinstance(exc, TransientDeliveryError) else None
            if error is None:
                logger.exception("unexpected error delivering alert %s", row.id)
                error = TransientDeliveryError(f"unexpected error: {type(exc).__name__}: {exc}")
            if error.unreachable:
                unreachable.add(id(target))
            _reschedule(db, row, cfg, error, clock(), report)
            continue
        _mark_sent(db, row, where, clock())
        logger.info("alert %s delivered (%s)", row.id, where)
        report.sent += 1
        report.where.append(where)
    return report


def _reschedule(
    db: Database,
    row: OutboxMessage,
    cfg: MailConfig,
    error: TransientDeliveryError,
    now: datetime,
    report: DeliveryReport,
) -> None:
    if row.attempts >= cfg.max_attempts:
        reason = f"gave up after {row.attempts} attempts; last error: {error}"
        if _record(db, row, status="failed", lease_until=None, last_error=reason):
            report.failed += 1
            report.errors.append(f"alert {row.id}: {reason}")
        logger.warning("alert %s: %s", row.id, reason)
        return
    retry_at = now + retry_delay(cfg, row.attempts)
    if _record(
        db,
        row,
        status="pending",
        lease_until=None,
        next_attempt_at=retry_at,
        last_error=str(error),
    ):
        report.retried += 1
        report.errors.append(f"alert {row.id}: {error}")
    logger.info("alert %s not delivered (%s); next try at %s", row.id, error, retry_at)


def pending_count(session: Session) -> int:
    """How many alerts wait to be delivered (pending or being sent)."""
    return int(
        session.scalar(
            select(func.count())
            .select_from(OutboxMessage)
            .where(OutboxMessage.status.in_(("pending", "sending")))
        )
        or 0
    )
