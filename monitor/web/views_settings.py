"""What to do now, and settings (backends check, mail test, passphrase)."""

from __future__ import annotations

from email.message import EmailMessage

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from monitor import alerts
from monitor.cases import core as case_core
from monitor.config import format_duration
from monitor.inputs import check_email
from monitor.support import COUNTRIES, lines_for, support_lines
from monitor.web import auth
from monitor.web.core import (
    back,
    form_of,
    page,
    web_of,
)

# ------------------------------------------------------------------ help, settings


@page()
async def help_page(request: Request) -> Response:
    web = web_of(request)
    return web.render(
        request,
        "help.html",
        support=lines_for(web.settings.mail.country),
        removal_forms=web.settings.cases.removal_forms,
        hotlines=case_core.hotline_lines(web.settings),
    )


def _settings(request: Request, reports: object = None) -> Response:
    """The settings page, with the backend check's ``reports`` when one was just run."""
    web = web_of(request)
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
async def settings_page(request: Request) -> Response:
    return _settings(request)


@page()
async def settings_check_backends(request: Request) -> Response:
    from monitor.searching import check_backends

    web = web_of(request)
    reports = await run_in_threadpool(check_backends, web.settings, web.db)
    return _settings(request, reports)


@page()
async def settings_mail_test(request: Request) -> Response:
    web = web_of(request)
    to = check_email(form_of(request).get("to").strip())
    msg = EmailMessage()
    msg["From"] = web.settings.mail.sender
    msg["To"] = to
    msg["Subject"] = web.settings.mail.subject
    msg["Message-ID"] = alerts._new_message_id()
    msg.set_content("Hello,\n\nThis is a test message. Nothing needs to be done.\n")
    try:
        where = await run_in_threadpool(alerts.notifier_from_settings(web.settings).deliver, msg)
    except alerts.DeliveryError as exc:
        return back(request, "/settings", "The test message was not delivered: {why}", why=str(exc))
    return back(request, "/settings", "Test message delivered ({where}).", where=where)


@page(changes=False)  # a viewer changes their own passphrase too
async def settings_passphrase(request: Request) -> Response:
    web = web_of(request)
    if request.state.ws.scope is not None:  # an organisation's operator: their own
        from monitor.web.views_operators import change_own_passphrase

        return await change_own_passphrase(request)
    form = form_of(request)
    stored = auth.stored_hash(web.db)
    if stored is None or not auth.verify_passphrase(stored, form.get("current")):
        return back(request, "/settings", "Not changed: the current passphrase is not right.")
    phrase = auth.check_passphrase(form.get("passphrase"), form.get("repeat"))
    await run_in_threadpool(auth.set_passphrase, web.db, phrase, first=False)
    return back(request, "/settings", "The passphrase was changed.")


async def not_found(request: Request, exc: Exception) -> Response:
    return Response("Not found.", 404, media_type="text/plain")
