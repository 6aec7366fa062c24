"""Alerts: discreet content, the durable outbox, and delivery exactly once (loopback SMTP only)."""

from __future__ import annotations

import mailbox
import os
import socket
import stat
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path

import pytest
from sqlalchemy import select

from monitor import alerts
from monitor.alerts import (
    OutboxFolderNotifier,
    PermanentDeliveryError,
    SmtpNotifier,
    TransientDeliveryError,
)
from monitor.config import Settings
from monitor.db import Database
from monitor.db.models import Alias, Image, OutboxMessage, Scan, Sighting, Subject
from monitor.support import support_lines
from monitor.testing.smtp import LoopbackSMTP, self_signed_context

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
NAME, ALIAS = "Jane Secretname", "J. Hidden"
EMAIL = "jane@example.org"


# ---------------------------------------------------------------- helpers


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path}/t.db")
    yield database
    database.dispose()


def make_settings(tmp_path: Path, **mail: object) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        mail={"retry_base": "30s", "retry_max": "1h", "starttls": False, **mail},
    )


def smtp_settings(tmp_path: Path, server: LoopbackSMTP, **mail: object) -> Settings:
    return make_settings(tmp_path, smtp_host="127.0.0.1", smtp_port=server.port, **mail)


def add_subject(db: Database, name: str = NAME, email: str | None = EMAIL) -> int:
    with db.session() as s:
        subject = Subject(name=name, email=email, interval_seconds=86400)
        subject.aliases.append(Alias(alias=ALIAS))
        s.add(subject)
        s.flush()
        return subject.id


def start_scan(db: Database, subject_id: int, status: str = "running") -> int:
    with db.session() as s:
        scan = Scan(subject_id=subject_id, status=status)
        s.add(scan)
        s.flush()
        return scan.id


def record_match(db: Database, subject_id: int, scan_id: int, n: int) -> None:
    """Like the store does: a sighting and its alert row in one transaction."""
    with db.session() as s:
        subject = s.get(Subject, subject_id)
        assert subject is not None
        image = Image(sha256=f"{subject_id:04d}{scan_id:04d}{n:056d}", width=10, height=10)
        s.add(image)
        s.flush()
        sighting = Sighting(
            subject_id=subject_id,
            image_id=image.id,
            page_url=f"https://pages.example.net/jane-secretname/{n}.html",
            image_url=f"https://img.example.net/{n}.jpg",
            first_scan_id=scan_id,
        )
        s.add(sighting)
        row = alerts.hold_alert(s, subject, scan_id)
        s.flush()
        sighting.alert_id = row.id


def queue_alert(db: Database, settings: Settings, items: int = 2, **subject: object) -> int:
    """A released (pending) alert with ``items`` sightings; returns its outbox id."""
    sid = add_subject(db, **subject)  # type: ignore[arg-type]
    scan_id = start_scan(db, sid)
    for n in range(items):
        record_match(db, sid, scan_id, n)
    with db.session() as s:
        s.get(Scan, scan_id).status = "completed"  # type: ignore[union-attr]
        assert alerts.release_alerts(s, settings, scan_id=scan_id, now=NOW) == 1
        return s.scalars(select(OutboxMessage.id).where(OutboxMessage.scan_id == scan_id)).one()


def outbox_row(db: Database, row_id: int) -> OutboxMessage:
    with db.session() as s:
        row = s.get(OutboxMessage, row_id)
        assert row is not None
        return row


def closed_port() -> tuple[socket.socket, int]:
    """A port that refuses connections: bound, never listening (keep the socket open)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock, sock.getsockname()[1]


class Crash(BaseException):
    """Stands for the process dying in the middle of a delivery."""


class CrashingNotifier:
    def deliver(self, msg: EmailMessage) -> str:
        raise Crash()


# ---------------------------------------------------------------- content


def test_discreet_alert_has_no_name_url_or_image_and_ends_with_support(
    db: Database, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path)
    row_id = queue_alert(db, settings, items=3)
    msg = alerts.build_email(settings, outbox_row(db, row_id))

    raw = msg.as_string()
    for secret in (NAME, ALIAS, "Secretname", "secretname", "example.net", "https://"):
        assert secret not in raw, f"{secret!r} leaked into the alert"
    # the one address in it is this tool's own page on the person's machine
    assert raw.count("http://") == 1 and "http://127.0.0.1:8765/cases" in raw
    assert not msg.is_multipart() and msg.get_content_type() == "text/plain"
    assert not any(p.get_filename() or p.get_content_maintype() == "image" for p in msg.walk())
    assert msg["Subject"] == "You have a new notification"
    assert msg["From"] == settings.mail.sender and msg["To"] == EMAIL

    body = msg.get_content()
    assert "3 new items" in body
    assert "open this page in a browser" in body and "type:" not in body
    contacts = [c.replace("https://", "") for c in support_lines(settings.mail)]
    assert any("stopncii.org" in c for c in contacts)
    tail = body.rstrip().splitlines()[-len(contacts) :]
    assert [line.strip(" -") for line in tail] == contacts


def test_custom_subject_and_contacts_are_used(db: Database, tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path, subject="Weekly digest", support_contacts=["Call Sam: 0123 456"]
    )
    row_id = queue_alert(db, settings, items=1)
    msg = alerts.build_email(settings, outbox_row(db, row_id))
    assert msg["Subject"] == "Weekly digest"
    body = msg.get_content()
    assert "1 new item " in body and body.rstrip().endswith("Call Sam: 0123 456")


def test_without_the_web_link_the_alert_gives_the_command(db: Database, tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    settings = settings.model_copy(
        update={"web": settings.web.model_copy(update={"alert_link": False})}
    )
    row_id = queue_alert(db, settings, items=1)
    body = alerts.build_email(settings, outbox_row(db, row_id)).get_content()
    assert "python run_monitor.py matches" in body and "http://" not in body


def test_discreet_option_leaves_the_support_lines_out(db: Database, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, support_lines=False)
    row_id = queue_alert(db, settings, items=1)
    body = alerts.build_email(settings, outbox_row(db, row_id)).get_content()
    assert "support" not in body.lower() and "stopncii" not in body.lower()
    assert "http://127.0.0.1:8765/cases" in body


@pytest.mark.parametrize(
    ("country", "present", "absent"),
    [
        ("NL", ["offlimits.nl", "112", "0900-8844"], ["helpwanted.nl", "911"]),
        ("BQ", ["KPCN", "911", "offlimits.nl"], ["112", "helpwanted.nl"]),
        ("", ["local emergency number", "stopncii.org"], ["helpwanted.nl", "KPCN"]),
    ],
)
def test_support_lines_are_chosen_by_country(
    db: Database, tmp_path: Path, country: str, present: list[str], absent: list[str]
) -> None:
    settings = make_settings(tmp_path, country=country)
    row_id = queue_alert(db, settings, items=1)
    body = alerts.build_email(settings, outbox_row(db, row_id)).get_content().lower()
    for text in present:
        assert text.lower() in body, text
    for text in absent:
        assert text.lower() not in body, text


def test_full_detail_adds_the_urls_but_never_the_name(db: Database, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, detail="full")
    row_id = queue_alert(db, settings, items=2)
    msg = alerts.build_email(settings, outbox_row(db, row_id))
    body = msg.get_content()
    for n in range(2):
        assert f"https://pages.example.net/jane-secretname/{n}.html" in body
        assert f"https://img.example.net/{n}.jpg" in body
    assert NAME not in msg.as_string() and ALIAS not in msg.as_string()
    assert not msg.is_multipart()


# ---------------------------------------------------------------- outbox rows


def test_hold_and_release_make_one_pending_alert_per_scan(db: Database, tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    sid = add_subject(db)
    first, second = start_scan(db, sid), start_scan(db, sid)
    for n in range(3):
        record_match(db, sid, first, n)
    record_match(db, sid, second, 10)

    with db.session() as s:
        held = s.scalars(select(OutboxMessage).order_by(OutboxMessage.id)).all()
        assert [(r.scan_id, r.status, r.new_items) for r in held] == [
            (first, "held", 3),
            (second, "held", 1),
        ]
        assert held[0].recipient == EMAIL and held[0].message_id != held[1].message_id
        assert alerts.release_alerts(s, settings, scan_id=first, now=NOW) == 1

    with db.session() as s:
        rows = {r.scan_id: r for r in s.scalars(select(OutboxMessage))}
    assert rows[first].status == "pending" and rows[first].next_attempt_at == NOW
    assert rows[first].new_items == 3 and "3 new items" in rows[first].body
    assert rows[second].status == "held"  # its scan is still running


def test_release_without_scan_id_releases_only_crashed_scans_alerts(
    db: Database, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path)
    sid = add_subject(db)
    running, crashed = start_scan(db, sid), start_scan(db, sid)
    record_match(db, sid, running, 1)
    record_match(db, sid, crashed, 2)
    with db.session() as s:
        s.get(Scan, crashed).status = "interrupted"  # type: ignore[union-attr]

    with db.session() as s:
        assert alerts.release_alerts(s, settings, now=NOW) == 1
    with db.session() as s:
        status = dict(s.execute(select(OutboxMessage.scan_id, OutboxMessage.status)).all())
    assert status == {running: "held", crashed: "pending"}
    with db.session() as s:  # nothing left to release
        assert alerts.release_alerts(s, settings, now=NOW) == 0


def test_outbox_status_shows_state_but_not_the_message(db: Database, tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    row_id = queue_alert(db, settings)
    with db.session() as s:
        (info,) = alerts.outbox_status(s)
    assert info["id"] == row_id and info["status"] == "pending" and info["attempts"] == 0
    assert {"last_error", "created_at", "sent_at"} <= info.keys()
    assert "body" not in info and "subject_line" not in info and "recipient" not in info


# ---------------------------------------------------------------- delivery by SMTP


def test_delivers_once_over_plain_smtp_with_the_stable_message_id(
    db: Database, tmp_path: Path
) -> None:
    with LoopbackSMTP(tmp_path / "maildir") as server:
        settings = smtp_settings(tmp_path, server)
        row_id = queue_alert(db, settings)
        notifier = alerts.notifier_from_settings(settings)
        assert isinstance(notifier, SmtpNotifier)

        report = alerts.deliver_pending(db, notifier, settings, now=NOW)
        again = alerts.deliver_pending(db, notifier, settings, now=NOW + timedelta(days=1))

    row = outbox_row(db, row_id)
    assert (report.sent, report.retried, report.failed) == (1, 0, 0)
    assert report.where == [f"smtp://127.0.0.1:{server.port}"]
    assert (again.sent, again.retried, again.failed) == (0, 0, 0)
    assert len(server.messages) == 1
    assert server.messages[0]["Message-ID"] == row.message_id
    assert server.envelopes[0].rcpt_tos == (EMAIL,)
    assert len(list(mailbox.Maildir(tmp_path / "maildir", create=False))) == 1
    assert row.status == "sent" and row.sent_at == NOW and row.attempts == 1
    assert row.delivered_to == report.where[0]


def test_delivers_over_starttls_with_login(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server_ctx, client_ctx = self_signed_context()
    monkeypatch.setenv("MONITOR_SMTP_PASSWORD", "s3cret")
    with LoopbackSMTP(tls_context=server_ctx, auth=("alerts", "s3cret")) as server:
        settings = smtp_settings(tmp_path, server, starttls=True, username="alerts")
        row_id = queue_alert(db, settings)
        notifier = SmtpNotifier(settings.mail, ssl_context=client_ctx)
        report = alerts.deliver_pending(db, notifier, settings, now=NOW)
    assert report.sent == 1 and len(server.messages) == 1
    assert server.messages[0]["Message-ID"] == outbox_row(db, row_id).message_id


def test_delivers_over_implicit_tls(db: Database, tmp_path: Path) -> None:
    server_ctx, client_ctx = self_signed_context()
    with LoopbackSMTP(tls_context=server_ctx, implicit_tls=True) as server:
        settings = smtp_settings(tmp_path, server, tls=True)
        queue_alert(db, settings)
        notifier = SmtpNotifier(settings.mail, ssl_context=client_ctx)
        report = alerts.deliver_pending(db, notifier, settings, now=NOW)
    assert report.sent == 1 and report.where == [f"smtps://127.0.0.1:{server.port}"]
    assert len(server.messages) == 1


def test_an_untrusted_certificate_is_refused_by_default(db: Database, tmp_path: Path) -> None:
    server_ctx, _ = self_signed_context()
    with LoopbackSMTP(tls_context=server_ctx) as server:
        settings = smtp_settings(tmp_path, server, starttls=True)
        row_id = queue_alert(db, settings)
        report = alerts.deliver_pending(db, SmtpNotifier(settings.mail), settings, now=NOW)
    assert report.retried == 1 and not server.messages
    row = outbox_row(db, row_id)
    assert row.status == "pending" and "certificate" in (row.last_error or "")


def test_wrong_password_is_retried_not_dropped(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server_ctx, client_ctx = self_signed_context()
    monkeypatch.setenv("MONITOR_SMTP_PASSWORD", "wrong")
    with LoopbackSMTP(tls_context=server_ctx, auth=("alerts", "s3cret")) as server:
        settings = smtp_settings(tmp_path, server, starttls=True, username="alerts")
        row_id = queue_alert(db, settings)
        notifier = SmtpNotifier(settings.mail, ssl_context=client_ctx)
        alerts.deliver_pending(db, notifier, settings, now=NOW)
        row = outbox_row(db, row_id)
        assert row.status == "pending" and "login" in (row.last_error or "")
        monkeypatch.setenv("MONITOR_SMTP_PASSWORD", "s3cret")
        later = NOW + timedelta(hours=1)
        assert alerts.deliver_pending(db, notifier, settings, now=later).sent == 1
    assert len(server.messages) == 1


def test_mail_server_down_keeps_the_alert_and_backs_off(db: Database, tmp_path: Path) -> None:
    sock, port = closed_port()
    with sock:
        settings = make_settings(tmp_path, smtp_host="127.0.0.1", smtp_port=port)
        row_id = queue_alert(db, settings)
        down = alerts.notifier_from_settings(settings)
        report = alerts.deliver_pending(db, down, settings, now=NOW)
    assert (report.sent, report.retried, report.failed) == (0, 1, 0)
    row = outbox_row(db, row_id)
    assert row.status == "pending" and row.attempts == 1
    assert row.next_attempt_at == NOW + timedelta(seconds=30)
    assert "connection refused" in (row.last_error or "")

    with LoopbackSMTP() as server:
        up = SmtpNotifier(smtp_settings(tmp_path, server).mail)
        early = alerts.deliver_pending(db, up, settings, now=NOW + timedelta(seconds=29))
        assert early.sent == 0 and not server.messages  # backing off: not due yet
        late = alerts.deliver_pending(db, up, settings, now=NOW + timedelta(seconds=30))
        again = alerts.deliver_pending(db, up, settings, now=NOW + timedelta(days=1))
        assert (late.sent, again.sent) == (1, 0)
        assert len(server.messages) == 1
    row = outbox_row(db, row_id)
    assert row.status == "sent" and row.attempts == 2


def test_backoff_doubles_up_to_the_maximum_and_gives_up_after_max_attempts(
    db: Database, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path, retry_base="10s", retry_max="1m", max_attempts=3)
    delays = [alerts.retry_delay(settings.mail, n).total_seconds() for n in range(1, 6)]
    assert delays == [10, 20, 40, 60, 60]

    sock, port = closed_port()
    with sock:
        settings = make_settings(
            tmp_path, smtp_host="127.0.0.1", smtp_port=port, retry_base="10s", max_attempts=3
        )
        row_id = queue_alert(db, settings)
        notifier = alerts.notifier_from_settings(settings)
        at = NOW
        for expected in (10, 20):
            assert alerts.deliver_pending(db, notifier, settings, now=at).retried == 1
            row = outbox_row(db, row_id)
            assert row.next_attempt_at == at + timedelta(seconds=expected)
            at = row.next_attempt_at
        last = alerts.deliver_pending(db, notifier, settings, now=at)
    assert last.failed == 1
    row = outbox_row(db, row_id)
    assert row.status == "failed" and row.attempts == 3
    assert "gave up after 3 attempts" in (row.last_error or "")


def test_a_permanent_refusal_fails_with_its_reason_and_is_not_retried(
    db: Database, tmp_path: Path
) -> None:
    with LoopbackSMTP(fail_with=(550, "mailbox unavailable"), fail_times=1) as server:
        settings = smtp_settings(tmp_path, server)
        row_id = queue_alert(db, settings)
        notifier = alerts.notifier_from_settings(settings)
        report = alerts.deliver_pending(db, notifier, settings, now=NOW)
        later = alerts.deliver_pending(db, notifier, settings, now=NOW + timedelta(days=7))
    assert (report.failed, later.sent, later.retried) == (1, 0, 0)
    assert server.refused == 1 and not server.messages
    row = outbox_row(db, row_id)
    assert row.status == "failed" and "550 mailbox unavailable" in (row.last_error or "")
    with db.session() as s:
        assert alerts.outbox_status(s)[0]["last_error"] == row.last_error

    # Once the cause is fixed, failed alerts can be queued again.
    with db.session() as s:
        assert alerts.requeue_failed(s, now=NOW) == 1
    assert outbox_row(db, row_id).status == "pending"


def test_a_temporary_refusal_is_retried_and_then_delivered_once(
    db: Database, tmp_path: Path
) -> None:
    with LoopbackSMTP() as server:
        server.fail_next(421, "try later")
        settings = smtp_settings(tmp_path, server)
        row_id = queue_alert(db, settings)
        notifier = alerts.notifier_from_settings(settings)
        first = alerts.deliver_pending(db, notifier, settings, now=NOW)
        row = outbox_row(db, row_id)
        assert first.retried == 1 and row.status == "pending" and row.attempts == 1
        assert "421 try later" in (row.last_error or "")
        second = alerts.deliver_pending(db, notifier, settings, now=row.next_attempt_at)
    assert second.sent == 1 and server.refused == 1 and len(server.messages) == 1


def test_concurrent_senders_deliver_each_alert_exactly_once(
    database_url: str, tmp_path: Path
) -> None:
    db = Database(database_url)
    try:
        with LoopbackSMTP() as server:
            settings = smtp_settings(tmp_path, server)
            ids = [
                queue_alert(db, settings, items=1, name=f"person {i}", email=f"p{i}@example.org")
                for i in range(8)
            ]
            barrier = threading.Barrier(3)
            reports: list[alerts.DeliveryReport] = []
            errors: list[BaseException] = []

            def sender(n: int) -> None:
                try:
                    barrier.wait(timeout=10)
                    notifier = alerts.notifier_from_settings(settings)
                    reports.append(
                        alerts.deliver_pending(db, notifier, settings, now=NOW, owner=f"t{n}")
                    )
                except BaseException as exc:
                    errors.append(exc)

            threads = [threading.Thread(target=sender, args=(n,)) for n in range(3)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=60)
            assert not errors
            delivered = Counter(m["Message-ID"] for m in server.messages)
        with db.session() as s:
            rows = s.scalars(select(OutboxMessage).where(OutboxMessage.id.in_(ids))).all()
        assert {r.status for r in rows} == {"sent"}
        assert delivered == Counter({r.message_id: 1 for r in rows})
        assert sum(r.sent for r in reports) == len(ids)
    finally:
        db.dispose()


def test_a_sender_that_died_after_claiming_is_taken_over_after_its_lease(
    db: Database, tmp_path: Path
) -> None:
    with LoopbackSMTP() as server:
        settings = smtp_settings(tmp_path, server)
        row_id = queue_alert(db, settings)
        lease = timedelta(minutes=5)
        with pytest.raises(Crash):
            alerts.deliver_pending(db, CrashingNotifier(), settings, now=NOW, lease=lease)
        row = outbox_row(db, row_id)
        assert row.status == "sending" and row.lease_until == NOW + lease

        notifier = alerts.notifier_from_settings(settings)
        during = alerts.deliver_pending(db, notifier, settings, now=NOW + timedelta(minutes=4))
        assert during.sent == 0 and not server.messages  # the lease still holds
        after = alerts.deliver_pending(db, notifier, settings, now=NOW + timedelta(minutes=5))
        again = alerts.deliver_pending(db, notifier, settings, now=NOW + timedelta(hours=1))
    assert (after.sent, again.sent) == (1, 0) and len(server.messages) == 1
    row = outbox_row(db, row_id)
    assert row.status == "sent" and row.attempts == 2
    assert server.messages[0]["Message-ID"] == row.message_id


# ---------------------------------------------------------------- the local outbox folder


def test_folder_notifier_writes_owner_only_files_into_a_maildir(
    db: Database, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path)  # no smtp_host: the local outbox folder
    row_id = queue_alert(db, settings)
    notifier = alerts.notifier_from_settings(settings)
    assert isinstance(notifier, OutboxFolderNotifier)
    report = alerts.deliver_pending(db, notifier, settings, now=NOW)

    (where,) = report.where
    path = Path(where)
    assert path.parent == settings.outbox_dir / "new" and path.suffix == ".eml"
    assert stat.S_IMODE(os.stat(settings.outbox_dir).st_mode) == 0o700
    for sub in ("tmp", "new", "cur"):
        assert stat.S_IMODE(os.stat(settings.outbox_dir / sub).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    (msg,) = list(mailbox.Maildir(settings.outbox_dir, create=False))
    assert msg["Message-ID"] == outbox_row(db, row_id).message_id
    assert outbox_row(db, row_id).delivered_to == where


def test_folder_notifier_writes_the_same_message_once(tmp_path: Path) -> None:
    msg = EmailMessage()
    msg["Message-ID"] = "<same@example.org>"
    msg.set_content("hello")
    notifier = OutboxFolderNotifier(tmp_path / "outbox")
    assert notifier.deliver(msg) == notifier.deliver(msg)
    assert len(list(mailbox.Maildir(tmp_path / "outbox", create=False))) == 1


def test_an_alert_without_recipient_goes_to_the_folder_even_with_smtp(
    db: Database, tmp_path: Path
) -> None:
    with LoopbackSMTP() as server:
        settings = smtp_settings(tmp_path, server)
        row_id = queue_alert(db, settings, email=None)
        report = alerts.deliver_pending(db, SmtpNotifier(settings.mail), settings, now=NOW)
    assert report.sent == 1 and not server.messages
    assert Path(report.where[0]).parent == settings.outbox_dir / "new"
    assert outbox_row(db, row_id).status == "sent"


# ---------------------------------------------------------------- notifier errors


def test_smtp_notifier_classifies_refusals(tmp_path: Path) -> None:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "a@example.org", "b@example.org", "x"
    msg.set_content("x")
    with LoopbackSMTP() as server:
        notifier = SmtpNotifier(smtp_settings(tmp_path, server).mail)
        server.fail_next(451, "local error")
        with pytest.raises(TransientDeliveryError, match="451 local error"):
            notifier.deliver(msg)
        server.fail_next(554, "no thanks")
        with pytest.raises(PermanentDeliveryError, match="554 no thanks"):
            notifier.deliver(msg)
        assert notifier.deliver(msg) == f"smtp://127.0.0.1:{server.port}"
    assert len(server.messages) == 1


def test_smtp_notifier_requires_starttls_when_configured(tmp_path: Path) -> None:
    msg = EmailMessage()
    msg["From"], msg["To"] = "a@example.org", "b@example.org"
    msg.set_content("x")
    with LoopbackSMTP() as server:  # offers no STARTTLS
        notifier = SmtpNotifier(smtp_settings(tmp_path, server, starttls=True).mail)
        with pytest.raises(TransientDeliveryError, match="STARTTLS"):
            notifier.deliver(msg)
    assert not server.messages


# ---------------------------------------------------------------- faults (issue 4)


def test_a_mail_server_that_accepts_but_never_answers_times_out_and_is_retried(
    db: Database, tmp_path: Path
) -> None:
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # connections complete, but no greeting ever comes
    with silent:
        port = silent.getsockname()[1]
        settings = make_settings(tmp_path, smtp_host="127.0.0.1", smtp_port=port, timeout=0.5)
        row_id = queue_alert(db, settings)
        report = alerts.deliver_pending(
            db, alerts.notifier_from_settings(settings), settings, now=NOW
        )
    assert (report.sent, report.retried, report.failed) == (0, 1, 0)
    row = outbox_row(db, row_id)
    assert row.status == "pending" and row.attempts == 1
    assert "did not answer within 0.5s" in (row.last_error or "")

    with LoopbackSMTP() as server:
        up = SmtpNotifier(smtp_settings(tmp_path, server).mail)
        later = row.next_attempt_at
        assert alerts.deliver_pending(db, up, settings, now=later).sent == 1
        assert alerts.deliver_pending(db, up, settings, now=later + timedelta(days=1)).sent == 0
    assert len(server.messages) == 1 and outbox_row(db, row_id).status == "sent"


@pytest.mark.sqlite_default  # its config names an SQLite file
def test_outbox_command_shows_a_refusal_and_retry_failed_delivers_it_once(
    db: Database, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from monitor.cli import main

    with LoopbackSMTP(fail_with=(550, "no such mailbox"), fail_times=1) as server:
        config = tmp_path / "monitor.toml"
        config.write_text(
            f'data_dir = "{tmp_path / "data"}"\n'
            f'[database]\nurl = "{db.url}"\n'
            f'[mail]\nsmtp_host = "127.0.0.1"\nsmtp_port = {server.port}\nstarttls = false\n'
        )
        row_id = queue_alert(db, make_settings(tmp_path))

        def outbox(*argv: str) -> object:
            assert main(["--config", str(config), "outbox", *argv, "--json"]) == 0
            return json.loads(capsys.readouterr().out)

        assert outbox("--send") == {"sent": 0, "retried": 0, "failed": 1, "where": []}
        (shown,) = outbox()  # type: ignore[misc]
        assert shown["id"] == row_id and shown["status"] == "failed"
        assert shown["kind"] == "matches" and "550 no such mailbox" in shown["last_error"]
        assert outbox("--send") == {"sent": 0, "retried": 0, "failed": 0, "where": []}

        again = outbox("--retry-failed", "--send")
        assert again["requeued"] == 1 and again["sent"] == 1  # type: ignore[index]
        assert outbox("--retry-failed") == {"requeued": 0}
        assert outbox("--send")["sent"] == 0  # type: ignore[index]
    assert server.refused == 1 and len(server.messages) == 1
    assert outbox_row(db, row_id).status == "sent"
