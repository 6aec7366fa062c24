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

from collections.abc import Callable
from concurrent.futures import Executor
from datetime import datetime
from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from monitor.config import Settings
from monitor.db import Database
from monitor.web.core import SECURITY_HEADERS, SecurityHeaders, WebApp
from monitor.web.views_access import lock, login_page, quick_exit, set_language, setup_page
from monitor.web.views_cases import (
    blurred_image,
    case_assign,
    case_bundle,
    case_decide,
    case_notice,
    case_page,
    case_recheck,
    case_request,
    cases_page,
    notice_page,
    notice_send,
    reveal_page,
    screenshot_file,
    screenshot_page,
    stats_page,
)
from monitor.web.views_me import (
    me_invite,
    me_login,
    me_logout,
    me_page,
    me_screenshot,
    me_screenshot_file,
    me_withdraw,
    person_invite,
)
from monitor.web.views_operators import (
    operator_add,
    operator_change,
    operators_page,
    organisation_switch,
)
from monitor.web.views_people import (
    audit_page,
    consent_code_confirm,
    consent_link_page,
    overview_page,
    people_page,
    person_audit_export,
    person_consent_renew,
    person_consent_withdraw,
    person_enrol,
    person_erase,
    person_page,
    person_scan,
    person_update,
    scans_page,
)
from monitor.web.views_settings import (
    help_page,
    not_found,
    settings_check_backends,
    settings_mail_test,
    settings_page,
    settings_passphrase,
)

__all__ = ["SECURITY_HEADERS", "WebApp", "allowed_hosts_for", "create_app"]

HERE = Path(__file__).parent


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
        Route("/people/{subject_id:int}/consent/withdraw", person_consent_withdraw, methods=post),
        Route("/consent/confirm", consent_code_confirm, methods=post),
        Route("/people/{subject_id:int}/consent/renew", person_consent_renew, methods=post),
        Route("/people/{subject_id:int}/audit.json", person_audit_export, methods=get),
        Route("/audit", audit_page, methods=get),
        Route("/confirm", consent_link_page, methods=both),
        Route("/cases", cases_page, methods=get),
        Route(f"/cases/{cid}", case_page, methods=get),
        Route(f"/cases/{cid}/confirm", case_decide, methods=post),
        Route(f"/cases/{cid}/dismiss", case_decide, methods=post),
        Route(f"/cases/{cid}/recheck", case_recheck, methods=post),
        Route(f"/cases/{cid}/bundle", case_bundle, methods=get),
        Route(f"/cases/{cid}/assign", case_assign, methods=post),
        Route(f"/cases/{cid}/request", case_request, methods=post),
        Route("/stats", stats_page, methods=get),
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
        Route("/people/{subject_id:int}/invite", person_invite, methods=post),
        Route("/me", me_page, methods=get),
        Route("/me/invite", me_invite, methods=both),
        Route("/me/login", me_login, methods=both),
        Route("/me/logout", me_logout, methods=post),
        Route("/me/withdraw", me_withdraw, methods=post),
        Route(
            f"/me/cases/{cid}/places/{sid}/screenshot/{{index:int}}", me_screenshot, methods=both
        ),
        Route(
            f"/me/cases/{cid}/places/{sid}/screenshot/{{index:int}}.png",
            me_screenshot_file,
            methods=get,
        ),
        Route("/operators", operators_page, methods=get),
        Route("/operators/add", operator_add, methods=post),
        Route("/organisation", organisation_switch, methods=post),
        *(
            Route(f"/operators/{{operator_id:int}}/{action}", operator_change, methods=post)
            for action in ("role", "disable", "enable", "passphrase", "totp")
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
