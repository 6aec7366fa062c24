"""Operators page (an organisation's admins only): change a role, reset a passphrase or the
second factor, disable and enable; an operator's own passphrase (Settings). The rules and the
audit entries are those of the command line (:mod:`monitor.orgs.management`)."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from monitor.errors import MonitorError
from monitor.orgs import management
from monitor.orgs.scope import ROLES, NotAllowed, Scope
from monitor.web import auth
from monitor.web.core import back, form_of, page, web_of


def _admin(request: Request) -> Scope:
    scope: Scope | None = request.state.ws.scope
    if scope is None or scope.org_id is None or scope.role != "admin":
        raise NotAllowed("only an organisation's admins manage its operators")
    return scope


def _render(request: Request, **values: object) -> Response:
    web = web_of(request)
    scope = _admin(request)
    with web.db.session() as s:
        rows = management.list_operators(s, scope.org_id)  # type: ignore[arg-type]
    values.setdefault("new_uri", None)
    values.setdefault("reset_email", None)
    return web.render(request, "operators.html", operators=rows, roles=ROLES, **values)


@page(changes=False)
async def operators_page(request: Request) -> Response:
    return _render(request)


@page()
async def operator_change(request: Request) -> Response:
    """``/operators/{id}/role|disable|enable|passphrase|totp``."""
    web = web_of(request)
    scope = _admin(request)
    operator_id = int(request.path_params["operator_id"])
    action = request.url.path.rstrip("/").rsplit("/", 1)[-1]
    form = form_of(request)
    if action == "passphrase" and form.get("passphrase") != form.get("repeat"):
        raise MonitorError("the two passphrases differ")

    def change() -> tuple[str, str | None]:
        with web.db.session() as s:
            op = management.find_operator(s, scope.org_id, operator_id=operator_id)  # type: ignore[arg-type]
            if action == "role":
                management.change_role(s, scope, op, form.get("role"))
            elif action in ("disable", "enable"):
                management.set_disabled(s, scope, op, action == "disable")
            elif action == "passphrase":
                management.reset_passphrase(s, scope, op, form.get("passphrase"))
            elif action == "totp":
                return op.email, management.reset_totp(s, scope, op)
            else:
                raise MonitorError("unknown change")
            return op.email, None

    email, uri = await run_in_threadpool(change)
    if uri is not None:  # shown once, on this answer only (no-store)
        return _render(request, new_uri=uri, reset_email=email)
    messages = {
        "role": "{email} has a new role.",
        "disable": "{email} can no longer log in; their sessions have ended.",
        "enable": "{email} may log in again.",
        "passphrase": "{email} has a new passphrase; their sessions have ended.",
    }
    return back(request, "/operators", messages[action], email=email)


async def change_own_passphrase(request: Request) -> Response:
    """An operator changes their own passphrase (Settings page); their other sessions end,
    this one goes on. Called by :func:`monitor.web.views_settings.settings_passphrase`."""
    web = web_of(request)
    ws: auth.WebSession = request.state.ws
    form = form_of(request)
    if form.get("passphrase") != form.get("repeat"):
        return back(request, "/settings", "Not changed: the two passphrases differ.")
    scope = ws.scope
    assert scope is not None

    def change() -> str:
        with web.db.session() as s:
            op = management.change_own_passphrase(
                s, scope, form.get("current"), form.get("passphrase")
            )
            return management.credentials_stamp(op)

    try:
        stamp = await run_in_threadpool(change)
    except MonitorError as exc:
        return back(
            request, "/settings", "Not changed: {why}", why=str(exc).removeprefix("not changed: ")
        )
    request.state.ws = web.sessions.operator_changed_passphrase(ws, stamp)
    return back(request, "/settings", "The passphrase was changed.")
