"""Passphrase set-up, log-in, lock, quick exit, language."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from monitor.web import auth
from monitor.web.core import (
    COOKIE,
    form_of,
    operators_log_in,
    page,
    web_of,
)
from monitor.web.i18n import LANGUAGES

# ------------------------------------------------------------------ passphrase


@page(auth_required=False)
async def setup_page(request: Request) -> Response:
    web = web_of(request)
    if auth.passphrase_is_set(web.db) or operators_log_in(web):
        return RedirectResponse("/login", 303)
    error = None
    if request.method == "POST":
        form = form_of(request)
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
    web = web_of(request)
    operators = operators_log_in(web)
    if not operators and not auth.passphrase_is_set(web.db):
        return RedirectResponse("/setup", 303)
    if request.state.ws.authenticated:
        return RedirectResponse("/", 303)
    error = None
    if request.method == "POST":
        form = form_of(request)
        try:
            if operators:  # an organisation's operator: email, passphrase, one-time code
                request.state.ws = await run_in_threadpool(
                    web.sessions.log_in_operator,
                    request.state.ws,
                    form.get("email"),
                    form.get("passphrase"),
                    form.get("code"),
                )
            else:
                request.state.ws = await run_in_threadpool(
                    web.sessions.log_in, request.state.ws, form.get("passphrase")
                )
            return RedirectResponse("/", 303)
        except auth.PassphraseError as exc:
            error = str(exc)
    return web.render(
        request,
        "login.html",
        status=400 if error else 200,
        error=error,
        operators=operators,
        expired=request.query_params.get("expired") == "1",
    )


@page(changes=False)
async def lock(request: Request) -> Response:
    web = web_of(request)
    web.sessions.drop(request.state.ws)
    request.state.ws = web.sessions.new(request.state.ws.lang)
    return RedirectResponse("/login", 303)


async def quick_exit(request: Request) -> Response:
    """Locks the session and sends the browser to a neutral site (no page of ours)."""
    web = web_of(request)
    ws, _ = web.sessions.get(request.cookies.get(COOKIE))
    web.sessions.drop(ws)
    response = RedirectResponse(web.settings.web.exit_url, 303)
    response.delete_cookie(COOKIE, path="/")
    return response


@page(auth_required=False)
async def set_language(request: Request) -> Response:
    lang = form_of(request).get("lang")
    if lang in LANGUAGES:
        request.state.ws.lang = lang
    back = form_of(request).get("back", "/")
    return RedirectResponse(
        back if back.startswith("/") and not back.startswith("//") else "/", 303
    )
