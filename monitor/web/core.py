"""What every page of the web app shares: the security headers, the app state (settings,
database, sessions, templates, scan runner) and :func:`page`, which wraps each handler with the
session, the log-in check and the CSRF check. Safety as a whole: docs/web.md."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from monitor.config import Settings, format_duration
from monitor.db import Database
from monitor.errors import MonitorError
from monitor.orgs.scope import HOUSEHOLD, NotAllowed, using_scope
from monitor.orgs.scope import Scope as OrgScope
from monitor.web import auth, data
from monitor.web.forms import Form, FormError, FormTooLarge, read_form
from monitor.web.i18n import LANGUAGES, translator

__all__ = ["COOKIE", "SECURITY_HEADERS", "WebApp", "back", "form_of", "page", "web_of"]

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
        organisation, choices = self.organisations(ws)
        page = self.templates.get_template(name).render(
            _=translator(lang),
            lang=lang,
            languages=LANGUAGES,
            title=TITLE,
            csrf=ws.csrf,
            signed_in=ws.authenticated,
            operator=ws.scope,
            organisation=organisation,
            organisations=choices,
            path=request.url.path,
            flash=[flash_text(lang, text, values) for text, values in ws.flash],
            exit_url=self.settings.web.exit_url,
            **values,
        )
        ws.flash.clear()
        return HTMLResponse(page, status_code=status)

    def organisations(self, ws: auth.WebSession) -> tuple[str | None, list[Any]]:
        """The name of the organisation the session acts for (named on every page), and the
        ones its operator may switch between (the switcher shows only with more than one)."""
        from monitor.orgs.memberships import organisations_of

        if ws.scope is None or ws.scope.operator_id is None or not ws.authenticated:
            return None, []
        with self.db.session() as s:
            choices = organisations_of(s, ws.scope.operator_id)
        name = next((c.name for c in choices if c.org_id == ws.scope.org_id), None)
        if name is None:  # acting for it, though no longer an admin of it (ends at next page)
            from monitor.db.models import Organisation

            with self.db.session() as s:
                org = s.get(Organisation, ws.scope.org_id)
                name = org.name if org else "?"
        return name, choices if len(choices) > 1 else []


def _when(value: datetime | None, empty: str = "-") -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if value else empty


def _every(seconds: int) -> str:
    from datetime import timedelta

    return format_duration(timedelta(seconds=seconds))


Handler = Callable[[Request], Awaitable[Response]]


def page(
    *, auth_required: bool = True, changes: bool | None = None, audit: str | None = None
) -> Callable[[Handler], Handler]:
    """Session, log-in and CSRF handling around a handler. A POST's form (read in memory) is
    ``request.state.form``; its ``csrf`` field must match the session's token.

    The handler runs in the session's scope (:func:`monitor.orgs.scope.using_scope`): an
    organisation's operator sees only their organisation's people, the household's session
    only people without one. ``changes`` (default: POSTs change) needs an admin or caseworker:
    a viewer only looks. ``audit`` names the audit log entry written for an operator when the
    handler succeeds (``{last}``: the path's last part, e.g. ``confirm``), about the person of
    the page's ``subject_id`` or ``case_id`` (checked to be in scope before the handler runs,
    as the command line does)."""

    def wrap(fn: Handler) -> Handler:
        async def handler(request: Request) -> Response:
            web: WebApp = request.app.state.web
            token = request.cookies.get(COOKIE)
            ws, expired = web.sessions.get(token)
            if ws is not None and ws.scope is not None:
                role = _operator_role_now(web, ws)
                if role is None:  # disabled, or passphrase / second factor reset since log-in
                    web.sessions.drop(ws)
                    ws = None
                elif role != ws.scope.role:  # an admin changed it: applies from this page on
                    ws.scope = replace(ws.scope, role=role)
            if ws is None:
                ws = web.sessions.new(web.settings.web.language)
            request.state.ws = ws
            response: Response
            if auth_required and not ws.authenticated:
                if not auth.passphrase_is_set(web.db) and not operators_log_in(web):
                    response = RedirectResponse("/setup", 303)
                else:
                    response = RedirectResponse("/login" + ("?expired=1" if expired else ""), 303)
            elif request.method == "POST" and (refused := await _read_post(request, web)):
                response = refused
            else:
                scope = ws.scope or HOUSEHOLD
                try:
                    with using_scope(scope):
                        changing = request.method == "POST" if changes is None else changes
                        if changing:
                            scope.require("admin", "caseworker")
                        subject_id = _subject_of(web, request) if audit else None
                        response = await fn(request)
                        if audit and response.status_code < 400:
                            _audit(web, scope, audit, subject_id, request)
                except NotAllowed as exc:
                    response = web.render(
                        request, "message.html", status=403, heading=None, message=str(exc)
                    )
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


def operators_log_in(web: WebApp) -> bool:
    """Whether the log-in page asks for an operator (email, passphrase, one-time code): as soon
    as the database has an organisation. Without one, the household's passphrase."""
    from monitor.orgs.accounts import any_organisation

    with web.db.session() as s:
        return any_organisation(s)


def _operator_role_now(web: WebApp, ws: auth.WebSession) -> str | None:
    """The session's operator's role now, in the organisation the session acts for; None
    when their session must end: disabled, no longer an admin of the organisation switched
    to, or their passphrase or second factor was reset since they logged in
    (:func:`monitor.orgs.management.credentials_stamp`)."""
    from monitor.db.models import Operator
    from monitor.orgs.management import credentials_stamp
    from monitor.orgs.memberships import role_in

    assert ws.scope is not None
    with web.db.session() as s:
        op = s.get(Operator, ws.scope.operator_id)
        if op is None or op.disabled_at is not None:
            return None
        if not hmac.compare_digest(credentials_stamp(op), ws.credentials):
            return None
        role = role_in(s, op, ws.scope.org_id)
        if ws.scope.org_id != op.organisation_id and role != "admin":
            return None
        return role


def _subject_of(web: WebApp, request: Request) -> int | None:
    """The person the page is about (``subject_id`` or ``case_id`` in its path); "not found"
    outside the scope in force."""
    from monitor.cases.core import get_case
    from monitor.orgs.scope import subject_in_scope

    params = request.path_params
    with web.db.session() as s:
        if "case_id" in params:
            return get_case(s, int(params["case_id"])).subject_id
        if "subject_id" in params:
            subject_id = int(params["subject_id"])
            if not subject_in_scope(s, subject_id):
                raise MonitorError("there is no such person (erased?)")
            return subject_id
    return None


def _audit(
    web: WebApp, scope: OrgScope, action: str, subject_id: int | None, request: Request
) -> None:
    """The audit log entry for an operator's look or change (none in household mode). The
    detail holds numbers only, no personal data."""
    from monitor.orgs import audit

    if scope.org_id is None:
        return
    detail = ", ".join(
        f"{k.removesuffix('_id')} {v}" for k, v in request.path_params.items() if k != "subject_id"
    )
    action = action.replace("{last}", request.url.path.rstrip("/").rsplit("/", 1)[-1])
    with web.db.session() as s:
        audit.log(s, scope, action, subject_id=subject_id, detail=f"web: {detail}".rstrip(": "))


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


def form_of(request: Request) -> Form:
    return request.state.form  # type: ignore[no-any-return]


def web_of(request: Request) -> WebApp:
    return request.app.state.web  # type: ignore[no-any-return]


def back(request: Request, url: str, *messages: str, **values: object) -> Response:
    """Redirect to ``url`` with messages shown there once: English texts with ``{name}``
    fields, translated (monitor/web/i18n.py) before the values go in."""
    request.state.ws.flash.extend((m, values) for m in messages if m)
    return RedirectResponse(url, 303)


def flash_text(lang: str, text: str, values: dict[str, object]) -> str:
    return translator(lang)(text).format(**values)
