"""What every page of the web app shares: the security headers, the app state (settings,
database, sessions, templates, scan runner) and :func:`page`, which wraps each handler with the
session, the log-in check and the CSRF check. Safety as a whole: docs/web.md."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
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
from monitor.orgs.scope import HOUSEHOLD, using_scope
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
        page = self.templates.get_template(name).render(
            _=translator(lang),
            lang=lang,
            languages=LANGUAGES,
            title=TITLE,
            csrf=ws.csrf,
            signed_in=ws.authenticated,
            path=request.url.path,
            flash=[flash_text(lang, text, values) for text, values in ws.flash],
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
                    # Until operators log in here, the pages are the household's: people of
                    # an organisation are invisible to them, as to the CLI without --operator.
                    with using_scope(HOUSEHOLD):
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
