"""The local web app: Starlette, server-rendered Jinja2 pages, no third-party assets.

Every page calls the same library functions as the command line (``monitor.store``,
``monitor.cases``, ``monitor.enrol``, ``monitor.searching``, ``monitor.alerts``); nothing here
scans or matches. Safety (docs/web.md): a passphrase, server-side sessions with an idle
timeout, CSRF tokens on every form, security headers on every response (no caching, a strict
Content-Security-Policy, no referrer, no framing), a quick exit on every page, a neutral title
and icon, no found image unless asked for (then blurred, fetched afresh, never stored), and
uploads hashed in memory (see :mod:`monitor.web.forms`).
"""

from __future__ import annotations

import hmac
import logging
import secrets
import tempfile
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import jinja2
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from monitor import alerts, cases, store
from monitor.cases import core as case_core
from monitor.config import Settings, format_duration
from monitor.db import Database
from monitor.db.models import Notice, Subject
from monitor.errors import MonitorError
from monitor.inputs import check_email, clean_name, parse_interval
from monitor.support import COUNTRIES, lines_for, support_lines
from monitor.web import auth, data
from monitor.web.forms import Form, FormError, FormTooLarge, read_form
from monitor.web.i18n import LANGUAGES, translator

__all__ = ["SECURITY_HEADERS", "WebApp", "create_app"]

logger = logging.getLogger("monitor.web")

HERE = Path(__file__).parent
COOKIE = "sid"
TITLE = "Notes"  # neutral: the tab and history show nothing telling

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; connect-src 'self'"
)
SECURITY_HEADERS: dict[str, str] = {
    "cache-control": "no-store",
    "pragma": "no-cache",
    "content-security-policy": CSP,
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
    "permissions-policy": "camera=(), microphone=(), geolocation=(), interest-cohort=()",
}


class SecurityHeaders:
    """Adds :data:`SECURITY_HEADERS` to every HTTP response, errors and files included."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (k, v)
                    for k, v in message.get("headers", [])
                    if k.decode("latin-1").lower() not in SECURITY_HEADERS
                ]
                headers += [(k.encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class WebApp:
    """What the handlers share: settings, database, sessions, templates, the scan runner."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        *,
        clock: Callable[[], datetime] | None = None,
        secure_cookies: bool = False,
        scheduler_running: bool = False,
        pool: Executor | None = None,
    ) -> None:
        self.settings, self.db = settings, db
        self.sessions = auth.Sessions(db, settings.web.idle_timeout, clock)
        self.secure_cookies = secure_cookies
        self.scheduler_running = scheduler_running
        self.runner = data.ScanRunner(settings, db, pool)
        self.templates = jinja2.Environment(
            loader=jinja2.FileSystemLoader(HERE / "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.templates.filters["when"] = _when
        self.templates.filters["every"] = _every

    def render(self, request: Request, name: str, status: int = 200, **values: Any) -> HTMLResponse:
        ws: auth.WebSession = request.state.ws
        lang = ws.lang or self.settings.web.language
        page = self.templates.get_template(name).render(
            _=translator(lang),
            lang=lang,
            languages=LANGUAGES,
            title=TITLE,
            csrf=ws.csrf,
            signed_in=ws.authenticated,
            path=request.url.path,
            flash=[_flash(lang, text, values) for text, values in ws.flash],
            exit_url=self.settings.web.exit_url,
            **values,
        )
        ws.flash.clear()
        return HTMLResponse(page, status_code=status)


def _when(value: datetime | None, empty: str = "-") -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if value else empty


def _every(seconds: int) -> str:
    from datetime import timedelta

    return format_duration(timedelta(seconds=seconds))


Handler = Callable[[Request], Awaitable[Response]]


def page(*, auth_required: bool = True) -> Callable[[Handler], Handler]:
    """Session, log-in and CSRF handling around a handler. A POST's form (read in memory) is
    ``request.state.form``; its ``csrf`` field must match the session's token."""

    def wrap(fn: Handler) -> Handler:
        async def handler(request: Request) -> Response:
            web: WebApp = request.app.state.web
            token = request.cookies.get(COOKIE)
            ws, expired = web.sessions.get(token)
            if ws is None:
                ws = web.sessions.new(web.settings.web.language)
            request.state.ws = ws
            response: Response
            if auth_required and not ws.authenticated:
                if not auth.passphrase_is_set(web.db):
                    response = RedirectResponse("/setup", 303)
                else:
                    response = RedirectResponse("/login" + ("?expired=1" if expired else ""), 303)
            elif request.method == "POST" and (refused := await _read_post(request, web)):
                response = refused
            else:
                try:
                    response = await fn(request)
                except MonitorError as exc:
                    response = web.render(
                        request, "message.html", status=400, heading=None, message=str(exc)
                    )
                except Exception:  # answered here, inside the security headers
                    logger.exception("the page %s failed", request.url.path)
                    response = web.render(
                        request,
                        "message.html",
                        status=500,
                        heading=None,
                        message="This did not work. The details are in the log of the "
                        "program serving these pages.",
                    )
            ws = request.state.ws
            if ws.token != token:
                response.set_cookie(
                    COOKIE,
                    ws.token,
                    httponly=True,
                    samesite="strict",
                    secure=web.secure_cookies,
                    path="/",
                )
            return response

        return handler

    return wrap


async def _read_post(request: Request, web: WebApp) -> Response | None:
    """Reads the form; a response refusing it (CSRF, size), or None."""
    try:
        form = await read_form(request, web.settings.web.max_upload_bytes)
    except FormTooLarge as exc:
        return web.render(request, "message.html", status=413, heading=None, message=str(exc))
    except FormError as exc:
        return web.render(request, "message.html", status=400, heading=None, message=str(exc))
    sent = form.get("csrf")
    if not sent or not hmac.compare_digest(sent.encode(), request.state.ws.csrf.encode()):
        return web.render(
            request,
            "message.html",
            status=403,
            heading=None,
            message="This form has expired or did not come from this page. Go back, reload "
            "the page and try again.",
        )
    request.state.form = form
    return None


def _form(request: Request) -> Form:
    return request.state.form  # type: ignore[no-any-return]


def _web(request: Request) -> WebApp:
    return request.app.state.web  # type: ignore[no-any-return]


def _back(request: Request, url: str, *messages: str, **values: object) -> Response:
    """Redirect to ``url`` with messages shown there once: English texts with ``{name}``
    fields, translated (monitor/web/i18n.py) before the values go in."""
    request.state.ws.flash.extend((m, values) for m in messages if m)
    return RedirectResponse(url, 303)


def _flash(lang: str, text: str, values: dict[str, object]) -> str:
    return translator(lang)(text).format(**values)


# ------------------------------------------------------------------ passphrase


@page(auth_required=False)
async def setup_page(request: Request) -> Response:
    web = _web(request)
    if auth.passphrase_is_set(web.db):
        return RedirectResponse("/login", 303)
    error = None
    if request.method == "POST":
        form = _form(request)
        try:
            phrase = auth.check_passphrase(form.get("passphrase"), form.get("repeat"))
            await run_in_threadpool(auth.set_passphrase, web.db, phrase, first=True)
            request.state.ws = await run_in_threadpool(
                web.sessions.log_in, request.state.ws, phrase
            )
            return RedirectResponse("/", 303)
        except auth.PassphraseError as exc:
            error = str(exc)
    return web.render(request, "setup.html", status=400 if error else 200, error=error)


@page(auth_required=False)
async def login_page(request: Request) -> Response:
    web = _web(request)
    if not auth.passphrase_is_set(web.db):
        return RedirectResponse("/setup", 303)
    if request.state.ws.authenticated:
        return RedirectResponse("/", 303)
    error = None
    if request.method == "POST":
        try:
            request.state.ws = await run_in_threadpool(
                web.sessions.log_in, request.state.ws, _form(request).get("passphrase")
            )
            return RedirectResponse("/", 303)
        except auth.PassphraseError as exc:
            error = str(exc)
    return web.render(
        request,
        "login.html",
        status=400 if error else 200,
        error=error,
        expired=request.query_params.get("expired") == "1",
    )


@page()
async def lock(request: Request) -> Response:
    web = _web(request)
    web.sessions.drop(request.state.ws)
    request.state.ws = web.sessions.new(request.state.ws.lang)
    return RedirectResponse("/login", 303)


async def quick_exit(request: Request) -> Response:
    """Locks the session and sends the browser to a neutral site (no page of ours)."""
    web = _web(request)
    ws, _ = web.sessions.get(request.cookies.get(COOKIE))
    web.sessions.drop(ws)
    response = RedirectResponse(web.settings.web.exit_url, 303)
    response.delete_cookie(COOKIE, path="/")
    return response


@page(auth_required=False)
async def set_language(request: Request) -> Response:
    lang = _form(request).get("lang")
    if lang in LANGUAGES:
        request.state.ws.lang = lang
    back = _form(request).get("back", "/")
    return RedirectResponse(
        back if back.startswith("/") and not back.startswith("//") else "/", 303
    )


# ------------------------------------------------------------------ overview, scans


@page()
async def overview_page(request: Request) -> Response:
    web = _web(request)
    with web.db.session() as s:
        people = data.overview(s)
        open_cases = case_core.count_open(s)
        waiting = alerts.pending_count(s)
    return web.render(
        request,
        "overview.html",
        people=people,
        open_cases=open_cases,
        waiting=waiting,
        scheduler_running=web.scheduler_running,
        running=web.runner.running,
    )


@page()
async def scans_page(request: Request) -> Response:
    web = _web(request)
    with web.db.session() as s:
        rows = data.recent_scans(s)
    return web.render(request, "scans.html", scans=rows, running=web.runner.running)


# ------------------------------------------------------------------ people


def _subject(session: Any, subject_id: int) -> Subject:
    subject = session.get(Subject, subject_id)
    if subject is None:
        raise MonitorError("there is no such person (erased?)")
    return subject


@page()
async def people_page(request: Request) -> Response:
    web = _web(request)
    if request.method == "POST":
        form = _form(request)
        name = clean_name(form.get("name"), "the name")
        aliases = [clean_name(a, "an alias") for a in form.get("aliases").splitlines() if a.strip()]
        email = check_email(form.get("email")) if form.get("email").strip() else None
        every = form.get("every").strip()
        interval = parse_interval(every) if every else web.settings.schedule.default_interval
        with web.db.session() as s:
            subject = store.add_subject(s, name, aliases=aliases, email=email, interval=interval)
            subject.minor = form.get("minor") == "on"
            subject_id = subject.id
        return _back(request, f"/people/{subject_id}", "Added {name}. Next: add photos.", name=name)
    with web.db.session() as s:
        infos = store.subject_infos(s)
        ids = {subj.name: subj.id for subj in store.all_subjects(s)}
    return web.render(
        request,
        "people.html",
        people=[(ids[i.name], i) for i in infos],
        default_every=format_duration(web.settings.schedule.default_interval),
    )


@page()
async def person_page(request: Request) -> Response:
    web = _web(request)
    subject_id = int(request.path_params["subject_id"])
    with web.db.session() as s:
        subject = _subject(s, subject_id)
        refs, hashes = data.references_count(s, subject_id)
        info = {
            "id": subject.id,
            "name": subject.name,
            "aliases": [a.alias for a in subject.aliases],
            "email": subject.email,
            "every": format_duration_seconds(subject.interval_seconds),
            "minor": subject.minor,
            "last_scan_at": subject.last_scan_at,
            "next_scan_at": subject.next_scan_at,
        }
        person_cases = cases.list_cases(s, subject.name)
    return web.render(
        request,
        "person.html",
        person=info,
        references=refs,
        hashes=hashes,
        person_cases=person_cases,
        running=subject.name in web.runner.running,
        last_result=web.runner.last.get(subject.name),
        max_mb=web.settings.web.max_upload_bytes // 1_000_000,
    )


def format_duration_seconds(seconds: int) -> str:
    from datetime import timedelta

    return format_duration(timedelta(seconds=seconds))


@page()
async def person_enrol(request: Request) -> Response:
    """Photos from the upload, hashed in memory (monitor.enrol) and dropped."""
    from monitor.enrol import enrol_images
    from monitor.retro import match_seen_images

    web = _web(request)
    subject_id = int(request.path_params["subject_id"])
    form = _form(request)
    uploads = [(u.filename or f"photo {i + 1}", u.data) for i, u in enumerate(form.files)]
    form.files.clear()  # the bytes live on only in ``uploads``, until this returns
    if not uploads:
        return _back(request, f"/people/{subject_id}", "Choose one or more photos first.")

    def enrol() -> tuple[Any, Any]:
        with web.db.session() as s:
            subject = _subject(s, subject_id)
            report = enrol_images(s, subject, uploads)
            retro = match_seen_images(s, web.settings, subject) if report.enrolled else None
        if retro is not None and retro.alerted:
            alerts.deliver_pending(
                web.db, alerts.notifier_from_settings(web.settings), web.settings
            )
        return report, retro

    try:
        report, retro = await run_in_threadpool(enrol)
    finally:
        uploads.clear()
    back = f"/people/{subject_id}"
    response = _back(
        request,
        back,
        "Hashed {enrolled} photo(s); only their hashes were stored.",
        "{duplicates} were already there." if report.duplicates else "",
        "{matched} image(s) found earlier match: see Cases."
        if retro is not None and retro.matched
        else "",
        enrolled=report.enrolled,
        duplicates=report.duplicates,
        matched=retro.matched if retro is not None else 0,
    )
    for problem in report.errors:
        _back(request, back, "Could not use {problem}", problem=problem)
    for bland in report.low_quality:
        _back(request, back, "{photo}: a bland photo, it may miss or mis-match.", photo=bland)
    return response


@page()
async def person_update(request: Request) -> Response:
    from monitor.cases import image_copies

    web = _web(request)
    subject_id = int(request.path_params["subject_id"])
    form = _form(request)
    every = form.get("every").strip()
    interval = parse_interval(every) if every else None
    make_minor = form.get("minor") == "on"
    aliases = [clean_name(a, "an alias") for a in form.get("aliases").splitlines() if a.strip()]
    with web.db.session() as s:
        subject = _subject(s, subject_id)
        name, was_minor = subject.name, subject.minor
        if interval is not None:
            subject.interval_seconds = int(interval.total_seconds())
        if "aliases" in form.fields:
            data.set_aliases(s, subject, aliases)
    if make_minor and not was_minor:
        image_copies.mark_minor(web.db, name, web.settings)
    return _back(request, f"/people/{subject_id}", "Saved.")


@page()
async def person_scan(request: Request) -> Response:
    web = _web(request)
    subject_id = int(request.path_params["subject_id"])
    with web.db.session() as s:
        name = _subject(s, subject_id).name
    started = web.runner.start(name)
    return _back(
        request,
        "/scans",
        "Scan started; this page shows it when it is done (reload)."
        if started
        else "A scan of this person is already running.",
    )


@page()
async def person_erase(request: Request) -> Response:
    web = _web(request)
    subject_id = int(request.path_params["subject_id"])
    with web.db.session() as s:
        name = _subject(s, subject_id).name
    if _form(request).get("confirm_name") != name:
        return _back(request, f"/people/{subject_id}", "Not erased: the name did not match.")

    def erase() -> None:
        with web.db.session() as s:
            case_ids = [c.id for c in cases.list_cases(s, name)]
            mail_files = alerts.outbox_files(s, web.settings, subject_id)
            store.erase_subject(s, name)
        cases.erase_evidence(web.settings, case_ids)
        alerts.erase_outbox_files(mail_files)
        web.db.scrub()

    await run_in_threadpool(erase)
    return _back(request, "/people", "Erased: references, scans, cases and evidence are gone.")


# ------------------------------------------------------------------ cases


@page()
async def cases_page(request: Request) -> Response:
    web = _web(request)
    with web.db.session() as s:
        rows = cases.list_cases(s)
    return web.render(request, "cases.html", cases=rows)


def _case_id(request: Request) -> int:
    return int(request.path_params["case_id"])


@page()
async def case_page(request: Request) -> Response:
    web = _web(request)
    case_id = _case_id(request)
    with web.db.session() as s:
        detail = cases.case_detail(s, web.settings, case_id)
        found_by = store.found_by(s, case_id)
    return web.render(
        request,
        "case.html",
        d=detail,
        found_by=found_by,
        reply_to=web.settings.cases.reply_to,
        removal_forms=web.settings.cases.removal_forms,
    )


@page()
async def case_decide(request: Request) -> Response:
    from monitor.cases.image_copies import delete_image_copies

    web = _web(request)
    case_id = _case_id(request)
    action = request.url.path.rstrip("/").rsplit("/", 1)[-1]
    with web.db.session() as s:
        fn = cases.confirm_case if action == "confirm" else cases.dismiss_case
        case = fn(s, case_id)
        status, subject_id = case.status, case.subject_id
    deleted = 0
    if action == "dismiss":
        deleted = await run_in_threadpool(
            delete_image_copies, web.db, subject_id, web.settings, case_id=case_id
        )
    return _back(
        request,
        f"/cases/{case_id}",
        "Case {case}: {status}.",
        "Deleted {n} kept image copy(ies)." if deleted else "",
        case=case_id,
        status=status,
        n=deleted,
    )


@page()
async def case_recheck(request: Request) -> Response:
    web = _web(request)
    case_id = _case_id(request)
    report = await cases.recheck_case(web.settings, web.db, case_id)
    await run_in_threadpool(
        alerts.deliver_pending, web.db, alerts.notifier_from_settings(web.settings), web.settings
    )
    return _back(
        request,
        f"/cases/{case_id}",
        "Checked again: {status}; {online} online, {gone} gone, {unreachable} unreachable.",
        status=report.status,
        online=report.online,
        gone=report.gone,
        unreachable=report.unreachable,
    )


@page()
async def case_bundle(request: Request) -> Response:
    """The evidence zip, built in an owner-only folder of the data folder and sent."""
    from monitor.cases.capture import export_bundle
    from monitor.paths import ensure_private_dir

    web = _web(request)
    case_id = _case_id(request)

    def build() -> bytes:
        ensure_private_dir(web.settings.data_dir)
        with tempfile.TemporaryDirectory(dir=web.settings.data_dir, prefix=".bundle-") as tmp:
            out = Path(tmp) / f"case-{case_id}.zip"
            export_bundle(web.settings, web.db, case_id, out)
            return out.read_bytes()

    body = await run_in_threadpool(build)
    return Response(
        body,
        media_type="application/zip",
        headers={"content-disposition": f'attachment; filename="case-{case_id}.zip"'},
    )


@page()
async def case_notice(request: Request) -> Response:
    from monitor.cases import contacts, notices

    web = _web(request)
    case_id = _case_id(request)
    form = _form(request)
    with web.db.session() as s:
        minor = cases.is_minor_case(s, case_id)
    if form.get("lookup") == "on" and not minor:
        await contacts.lookup_case_contacts(web.settings, web.db, case_id)
    lang = form.get("lang") or None
    reply_to = form.get("reply_to").strip() or None
    signer = form.get("signer").strip() or None
    drafted = await run_in_threadpool(
        lambda: notices.draft_notice(
            web.settings,
            web.db,
            case_id,
            lang=lang if lang in ("en", "nl") else None,
            reply_to=reply_to,
            signer=signer,
        )
    )
    return RedirectResponse(f"/cases/{case_id}/notices/{drafted.id}", 303)


def _notice(session: Any, case_id: int, notice_id: int) -> Notice:
    notice = session.get(Notice, notice_id)
    if notice is None or notice.match_id != case_id:
        raise MonitorError("there is no such removal request")
    return notice


@page()
async def notice_page(request: Request) -> Response:
    web = _web(request)
    case_id, notice_id = _case_id(request), int(request.path_params["notice_id"])
    with web.db.session() as s:
        n = _notice(s, case_id, notice_id)
        notice = {
            "id": n.id,
            "lang": n.lang,
            "subject_line": n.subject_line,
            "body": n.body,
            "reply_to": n.reply_to,
            "sent_at": n.sent_at,
            "sent_to": n.sent_to,
        }
        detail = cases.case_detail(s, web.settings, case_id)
    emails = list(
        dict.fromkeys(c["value"] for c in detail.contacts if c["kind"] in ("email", "mailto"))
    )
    return web.render(request, "notice.html", case_id=case_id, notice=notice, emails=emails)


@page()
async def notice_send(request: Request) -> Response:
    from monitor.cases import notices

    web = _web(request)
    case_id, notice_id = _case_id(request), int(request.path_params["notice_id"])
    form = _form(request)
    with web.db.session() as s:
        _notice(s, case_id, notice_id)
    if form.get("confirm") != "yes":
        return _back(
            request,
            f"/cases/{case_id}/notices/{notice_id}",
            "Not sent: tick the box to confirm that you want it sent.",
        )
    to = form.get("to").strip()
    sent = await run_in_threadpool(
        lambda: notices.send_notice(web.settings, web.db, notice_id, to, confirmed=True)
    )
    return _back(
        request, f"/cases/{case_id}", "Sent to {to}; recorded with the case.", to=sent.sent_to
    )


# ------------------------------------------------------------------ images, behind a click


def _place(session: Any, case_id: int, sighting_id: int) -> tuple[Any, bool]:
    detail_case = case_core.get_case(session, case_id)
    subject = session.get(Subject, detail_case.subject_id)
    for sighting in case_core.case_sightings(session, detail_case):
        if sighting.id == sighting_id:
            return sighting, bool(subject and subject.minor)
    raise MonitorError("there is no such place in this case")


@page()
async def reveal_page(request: Request) -> Response:
    """A warning, and only after a deliberate click a one-time link to the blurred image."""
    web = _web(request)
    case_id, sighting_id = _case_id(request), int(request.path_params["sighting_id"])
    with web.db.session() as s:
        _sighting, minor = _place(s, case_id, sighting_id)
    key = None
    if request.method == "POST" and not minor:
        key = secrets.token_urlsafe(16)
        request.state.ws.reveal_keys[key] = (case_id, sighting_id)
    return web.render(
        request, "reveal.html", case_id=case_id, sighting_id=sighting_id, minor=minor, key=key
    )


@page()
async def blurred_image(request: Request) -> Response:
    from monitor.web.blur import fetch_blurred

    web = _web(request)
    case_id, sighting_id = _case_id(request), int(request.path_params["sighting_id"])
    key = request.query_params.get("k", "")
    if request.state.ws.reveal_keys.pop(key, None) != (case_id, sighting_id):
        return Response("This link works once, after the warning.", 403, media_type="text/plain")
    with web.db.session() as s:
        sighting, minor = _place(s, case_id, sighting_id)
        image_url = sighting.image_url
    if minor:
        return Response("Not shown.", 403, media_type="text/plain")
    try:
        body = await fetch_blurred(web.settings, image_url)
    except MonitorError as exc:
        return Response(f"Could not fetch it now: {exc}", 502, media_type="text/plain")
    return Response(body, media_type="image/jpeg")


def _screenshot_path(web: WebApp, case_id: int, sighting_id: int, index: int) -> Path:
    with web.db.session() as s:
        _place(s, case_id, sighting_id)
        states = case_core.sighting_states(s, [sighting_id])
        files = [
            f
            for f in case_core.evidence_files(states.get(sighting_id))
            if f.get("kind") == "screenshot"
        ]
    if not 0 <= index < len(files):
        raise MonitorError("there is no such screenshot")
    path = Path(files[index]["path"]).resolve()
    root = (web.settings.data_dir / "evidence").resolve()
    if not path.is_relative_to(root) or not path.is_file():
        raise MonitorError("the screenshot file is missing")
    return path


@page()
async def screenshot_page(request: Request) -> Response:
    web = _web(request)
    case_id, sighting_id = _case_id(request), int(request.path_params["sighting_id"])
    index = int(request.path_params["index"])
    _screenshot_path(web, case_id, sighting_id, index)
    shown = request.method == "POST"
    return web.render(
        request,
        "screenshot.html",
        case_id=case_id,
        sighting_id=sighting_id,
        index=index,
        shown=shown,
    )


@page()
async def screenshot_file(request: Request) -> Response:
    web = _web(request)
    case_id, sighting_id = _case_id(request), int(request.path_params["sighting_id"])
    path = _screenshot_path(web, case_id, sighting_id, int(request.path_params["index"]))
    return Response(path.read_bytes(), media_type="image/png")


# ------------------------------------------------------------------ help, settings


@page()
async def help_page(request: Request) -> Response:
    web = _web(request)
    return web.render(
        request,
        "help.html",
        support=lines_for(web.settings.mail.country),
        removal_forms=web.settings.cases.removal_forms,
        hotlines=case_core.hotline_lines(web.settings),
    )


@page()
async def settings_page(request: Request) -> Response:
    web = _web(request)
    return web.render(
        request,
        "settings.html",
        backends=[(b.name or b.kind, b.kind) for b in web.settings.search.backends],
        reports=None,
        mail=web.settings.mail,
        support=support_lines(web.settings.mail),
        country=COUNTRIES.get(web.settings.mail.country.upper(), web.settings.mail.country),
        idle=format_duration(web.settings.web.idle_timeout),
    )


@page()
async def settings_check_backends(request: Request) -> Response:
    from monitor.searching import check_backends

    web = _web(request)
    reports = await run_in_threadpool(check_backends, web.settings, web.db)
    return web.render(
        request,
        "settings.html",
        backends=[(b.name or b.kind, b.kind) for b in web.settings.search.backends],
        reports=reports,
        mail=web.settings.mail,
        support=support_lines(web.settings.mail),
        country=COUNTRIES.get(web.settings.mail.country.upper(), web.settings.mail.country),
        idle=format_duration(web.settings.web.idle_timeout),
    )


@page()
async def settings_mail_test(request: Request) -> Response:
    web = _web(request)
    to = check_email(_form(request).get("to").strip())
    msg = EmailMessage()
    msg["From"] = web.settings.mail.sender
    msg["To"] = to
    msg["Subject"] = web.settings.mail.subject
    msg["Message-ID"] = alerts._new_message_id()
    msg.set_content("Hello,\n\nThis is a test message. Nothing needs to be done.\n")
    try:
        where = await run_in_threadpool(alerts.notifier_from_settings(web.settings).deliver, msg)
    except alerts.DeliveryError as exc:
        return _back(
            request, "/settings", "The test message was not delivered: {why}", why=str(exc)
        )
    return _back(request, "/settings", "Test message delivered ({where}).", where=where)


@page()
async def settings_passphrase(request: Request) -> Response:
    web = _web(request)
    form = _form(request)
    from monitor.web.auth import _stored_hash

    stored = _stored_hash(web.db)
    if stored is None or not auth.verify_passphrase(form.get("current"), stored):
        return _back(request, "/settings", "Not changed: the current passphrase is not right.")
    phrase = auth.check_passphrase(form.get("passphrase"), form.get("repeat"))
    await run_in_threadpool(auth.set_passphrase, web.db, phrase, first=False)
    return _back(request, "/settings", "The passphrase was changed.")


async def not_found(request: Request, exc: Exception) -> Response:
    return Response("Not found.", 404, media_type="text/plain")


# ------------------------------------------------------------------ the app


def create_app(
    settings: Settings,
    db: Database,
    *,
    clock: Callable[[], datetime] | None = None,
    secure_cookies: bool = False,
    scheduler_running: bool = False,
    pool: Executor | None = None,
    allowed_hosts: list[str] | None = None,
) -> Starlette:
    """The ASGI app. ``clock`` (aware UTC) drives the session idle timeout (tests); ``pool``
    hashes the images of scans started from the pages (default: a hashing pool of its own,
    started at the first such scan). Requests naming another host in their ``Host`` header are
    refused (DNS rebinding: a web page whose name points at 127.0.0.1 must not reach these
    pages); ``allowed_hosts`` defaults to :func:`allowed_hosts_for`."""
    web = WebApp(
        settings,
        db,
        clock=clock,
        secure_cookies=secure_cookies,
        scheduler_running=scheduler_running,
        pool=pool,
    )
    get, both, post = ["GET"], ["GET", "POST"], ["POST"]
    cid, sid = "{case_id:int}", "{sighting_id:int}"
    routes = [
        Route("/", overview_page, methods=get),
        Route("/setup", setup_page, methods=both),
        Route("/login", login_page, methods=both),
        Route("/lock", lock, methods=post),
        Route("/exit", quick_exit, methods=get),
        Route("/language", set_language, methods=post),
        Route("/scans", scans_page, methods=get),
        Route("/people", people_page, methods=both),
        Route("/people/{subject_id:int}", person_page, methods=get),
        Route("/people/{subject_id:int}/photos", person_enrol, methods=post),
        Route("/people/{subject_id:int}/settings", person_update, methods=post),
        Route("/people/{subject_id:int}/scan", person_scan, methods=post),
        Route("/people/{subject_id:int}/erase", person_erase, methods=post),
        Route("/cases", cases_page, methods=get),
        Route(f"/cases/{cid}", case_page, methods=get),
        Route(f"/cases/{cid}/confirm", case_decide, methods=post),
        Route(f"/cases/{cid}/dismiss", case_decide, methods=post),
        Route(f"/cases/{cid}/recheck", case_recheck, methods=post),
        Route(f"/cases/{cid}/bundle", case_bundle, methods=get),
        Route(f"/cases/{cid}/notice", case_notice, methods=post),
        Route(f"/cases/{cid}/notices/{{notice_id:int}}", notice_page, methods=get),
        Route(f"/cases/{cid}/notices/{{notice_id:int}}/send", notice_send, methods=post),
        Route(f"/cases/{cid}/places/{sid}/image", reveal_page, methods=both),
        Route(f"/cases/{cid}/places/{sid}/blurred.jpg", blurred_image, methods=get),
        Route(f"/cases/{cid}/places/{sid}/screenshot/{{index:int}}", screenshot_page, methods=both),
        Route(
            f"/cases/{cid}/places/{sid}/screenshot/{{index:int}}.png",
            screenshot_file,
            methods=get,
        ),
        Route("/help", help_page, methods=get),
        Route("/settings", settings_page, methods=get),
        Route("/settings/backends", settings_check_backends, methods=post),
        Route("/settings/mail", settings_mail_test, methods=post),
        Route("/settings/passphrase", settings_passphrase, methods=post),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    app = Starlette(routes=routes, exception_handlers={404: not_found, 405: not_found})
    app.state.web = web
    hosts = allowed_hosts if allowed_hosts is not None else allowed_hosts_for(settings)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=hosts)
    app.add_middleware(SecurityHeaders)  # outermost: refusals carry the headers too
    return app


def allowed_hosts_for(settings: Settings, host: str | None = None) -> list[str]:
    """The names these pages answer to: loopback, ``host`` (the address served on, unless a
    wildcard) and the host of ``[web] public_url``. A wildcard address without a public_url
    answers to any name (only with ``serve --public``, behind TLS)."""
    from urllib.parse import urlsplit

    names = {"127.0.0.1", "localhost", "::1", "[::1]"}
    host = (host or settings.web.host).strip("[]")
    if settings.web.public_url:
        names.add(urlsplit(settings.web.public_url).hostname or "")
    elif host in ("0.0.0.0", "::"):
        return ["*"]
    names.add(host)
    return sorted(n for n in names if n)
