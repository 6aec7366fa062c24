"""Removal requests: drafted from editable templates, sent only after a person confirms.

``draft_notice`` writes a request in the site's language (the page's ``lang`` or its
Content-Language, as found by the contact look-up or a re-check; English otherwise; Dutch
available) holding what EU DSA article 16 and the US TAKE IT DOWN Act ask for: the exact URLs,
that the person is shown without consent, a good-faith statement, a contact address (``[cases]
reply_to``, a relay, unless the person gives another) and the date.

``send_notice`` sends a drafted request over the configured SMTP server (the alert code's
:class:`~monitor.alerts.SmtpNotifier`) only when called with ``confirmed=True`` — the CLI asks
the person to type "yes" first — and records when and to whom.

Templates: ``monitor/templates/notice_<lang>.txt.j2``; a file of the same name in ``[cases]
templates_dir`` is used instead. The first line of a rendered template is ``Subject: ...``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from urllib.parse import urlsplit

import jinja2
from sqlalchemy import select

from monitor.alerts import Notifier, SmtpNotifier, _sender_domain
from monitor.cases.core import (
    CaseStateError,
    add_event,
    case_sightings,
    get_case,
    hotline_lines,
    sighting_states,
)
from monitor.config import Settings
from monitor.db import Database
from monitor.db.models import Notice, Subject, utcnow
from monitor.errors import MonitorError

__all__ = [
    "LANGUAGES",
    "DraftedNotice",
    "MinorCase",
    "NotConfirmed",
    "choose_language",
    "draft_notice",
    "send_notice",
]

LANGUAGES = ("en", "nl")
TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "templates"
NO_REPLY_TO = "(your contact address: set [cases] reply_to, or use --reply-to ADDRESS)"
_EMAIL = re.compile(r"^[^@\s<>\"',;]+@[^@\s<>\"',;]+\.[^@\s<>\"',;]+$")


class NotConfirmed(MonitorError):
    """A notice is only sent after a person confirmed it."""


class MinorCase(MonitorError):
    """The person may be under 18: report to a hotline, do not contact the site."""


@dataclass(frozen=True, slots=True)
class DraftedNotice:
    id: int
    case_id: int
    lang: str
    subject_line: str
    body: str
    reply_to: str | None
    sent_at: datetime | None = None
    sent_to: str | None = None

    def as_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "case": self.case_id,
            "lang": self.lang,
            "subject": self.subject_line,
            "body": self.body,
            "reply_to": self.reply_to,
            "sent_at": self.sent_at.isoformat().replace("+00:00", "Z") if self.sent_at else None,
            "sent_to": self.sent_to,
        }


def choose_language(requested: str | None, page_lang: str | None) -> str:
    """``requested`` if given, else the page's language when a template exists for it, else
    English."""
    if requested:
        lang = requested.lower()
        if lang not in LANGUAGES:
            raise MonitorError(f"no notice template for {requested!r}; available: en, nl")
        return lang
    lang = (page_lang or "").lower().split("-")[0]
    return lang if lang in LANGUAGES else "en"


def _environment(settings: Settings) -> jinja2.Environment:
    folders: list[str] = []
    if settings.cases.templates_dir:
        folders.append(str(Path(settings.cases.templates_dir).expanduser()))
    folders.append(str(TEMPLATES_DIR))
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(folders),
        autoescape=False,  # plain text
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _check_address(address: str, what: str) -> str:
    address = address.strip()
    if not _EMAIL.match(address):
        raise MonitorError(f"{what} {address!r} is not an email address")
    return address


def render_notice(
    settings: Settings,
    lang: str,
    *,
    urls: list[dict[str, str]],
    reply_to: str,
    signer: str,
    now: datetime,
) -> tuple[str, str]:
    """``(subject line, body)`` of a notice in ``lang``."""
    site = ", ".join(dict.fromkeys(urlsplit(u["page_url"]).hostname or "" for u in urls)) or "-"
    text = (
        _environment(settings)
        .get_template(f"notice_{lang}.txt.j2")
        .render(
            urls=urls,
            site=site,
            reply_to=reply_to,
            signer=signer,
            date=now.strftime("%Y-%m-%d"),
            time=now.strftime("%H:%M"),
        )
    )
    first, _, body = text.lstrip("\n").partition("\n")
    if first.lower().startswith("subject:"):
        subject_line = _one_line(first.split(":", 1)[1])
    else:
        subject_line, body = "Removal request", text
    body = re.sub(r"\n{3,}", "\n\n", body).strip("\n") + "\n"
    return subject_line[:300], body


def draft_notice(
    settings: Settings,
    db: Database,
    case_id: int,
    *,
    lang: str | None = None,
    reply_to: str | None = None,
    signer: str | None = None,
    now: datetime | None = None,
) -> DraftedNotice:
    """Draft (and store) a removal request for a confirmed case. Nothing is sent."""
    now = now or utcnow()
    with db.session() as s:
        case = get_case(s, case_id)
        subject = s.get(Subject, case.subject_id)
        assert subject is not None
        if subject.minor:
            raise MinorCase(
                "this person may be under 18: do not contact the site. Report the web addresses "
                "to a child-abuse hotline instead: " + "; ".join(hotline_lines(settings))
            )
        if case.status == "dismissed":
            raise CaseStateError(f"case {case_id} is dismissed; `case confirm {case_id}` first")
        if case.status == "new":
            raise CaseStateError(
                f"case {case_id} is not confirmed yet: look at it (`case show {case_id}`) and "
                f"run `case confirm {case_id}` if it is you"
            )
        sightings = case_sightings(s, case)
        states = sighting_states(s, [x.id for x in sightings])
        live = [x for x in sightings if states[x.id].state not in ("gone", "changed")] or sightings
        page_lang = next((states[x.id].page_lang for x in live if states[x.id].page_lang), None)
        chosen = choose_language(lang, page_lang)
        contact = reply_to or settings.cases.reply_to
        if contact:
            contact = _check_address(contact, "the reply-to address")
        urls = [
            {
                "page_url": x.page_url,
                "image_url": x.image_url,
                "first_seen": x.first_seen.strftime("%Y-%m-%d %H:%M UTC"),
            }
            for x in live
        ]
        subject_line, body = render_notice(
            settings,
            chosen,
            urls=urls,
            reply_to=contact or NO_REPLY_TO,
            signer=(signer or subject.name).strip(),
            now=now,
        )
        notice = Notice(
            match_id=case.id,
            lang=chosen,
            subject_line=subject_line,
            body=body,
            reply_to=contact or None,
            created_at=now,
        )
        s.add(notice)
        s.flush()
        if case.status in ("confirmed", "still_online"):
            case.status = "notice_drafted"
        add_event(s, case.id, "notice_drafted", f"notice {notice.id} ({chosen})", now=now)
        return DraftedNotice(notice.id, case.id, chosen, subject_line, body, notice.reply_to)


def build_notice_email(
    settings: Settings, notice: Notice, to: str, *, now: datetime
) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = settings.mail.sender
    msg["To"] = to
    if notice.reply_to:
        msg["Reply-To"] = notice.reply_to
    msg["Subject"] = notice.subject_line
    msg["Date"] = format_datetime(now)
    msg["Message-ID"] = make_msgid(domain=_sender_domain(settings.mail.sender))
    msg.set_content(notice.body)
    return msg


def send_notice(
    settings: Settings,
    db: Database,
    notice_id: int,
    to: str,
    *,
    confirmed: bool,
    notifier: Notifier | None = None,
    now: datetime | None = None,
) -> DraftedNotice:
    """Send a drafted notice to ``to`` — only with ``confirmed=True``, the person's explicit
    confirmation. Records when, to whom and where it went; the case becomes ``notice_sent``."""
    if not confirmed:
        raise NotConfirmed("a removal request is only sent after you confirm it")
    to = _check_address(to, "the recipient")
    now = now or utcnow()
    with db.session() as s:
        notice = s.get(Notice, notice_id)
        if notice is None:
            raise MonitorError(f"there is no notice {notice_id}")
        if notice.reply_to is None:
            raise MonitorError(
                "the notice has no contact address for the site's answer: set [cases] reply_to "
                "(a relay address) or pass --reply-to ADDRESS"
            )
        if notice.sent_at is not None:
            raise CaseStateError(
                f"notice {notice_id} was already sent to {notice.sent_to} on "
                f"{notice.sent_at:%Y-%m-%d %H:%M} UTC; draft a new one to send again"
            )
        msg = build_notice_email(settings, notice, to, now=now)
    if notifier is None:
        if not settings.mail.smtp_host:
            raise MonitorError(
                "sending a removal request needs a mail server: set [mail] smtp_host (the "
                "request was drafted; you can also copy it into your own mail program)"
            )
        notifier = SmtpNotifier(settings.mail)
    where = notifier.deliver(msg)  # raises a DeliveryError with a readable reason
    with db.session() as s:
        notice = s.get(Notice, notice_id)
        assert notice is not None
        notice.sent_at, notice.sent_to = now, to
        notice.message_id, notice.delivered_to = msg["Message-ID"], where[:2000]
        case = get_case(s, notice.match_id)
        if case.status not in ("removed", "dismissed"):
            case.status = "notice_sent"
        add_event(s, case.id, "notice_sent", f"notice {notice.id} to {to} via {where}", now=now)
        return DraftedNotice(
            notice.id,
            case.id,
            notice.lang,
            notice.subject_line,
            notice.body,
            notice.reply_to,
            notice.sent_at,
            notice.sent_to,
        )


def latest_notice(db: Database, case_id: int) -> Notice | None:
    with db.session() as s:
        return s.scalar(
            select(Notice).where(Notice.match_id == case_id).order_by(Notice.id.desc()).limit(1)
        )
