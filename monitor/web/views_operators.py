"""Operators page (an organisation's admins only): add an operator, change a role, reset a
passphrase or the second factor, disable and enable; an operator's own passphrase (Settings);
the organisation switcher of admins of several organisations. The rules and the audit entries
are those of the command line (:mod:`monitor.orgs.management`, :mod:`monitor.orgs.memberships`)."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from monitor.db.models import Organisation
from monitor.errors import MonitorError
from monitor.inputs import check_email
from monitor.orgs import management, memberships
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
    values.setdefault("added", None)
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

    org_id = scope.org_id
    assert org_id is not None

    member = False

    def change() -> tuple[str, str | None]:
        nonlocal member
        with web.db.session() as s:
            op = management.find_operator(s, org_id, operator_id=operator_id)
            member = op.organisation_id != org_id
            if action == "role":
                management.change_role(s, scope, op, form.get("role"), org_id)
            elif action in ("disable", "enable"):
                management.set_disabled(s, scope, op, action == "disable", org_id)
            elif action == "passphrase":
                management.reset_passphrase(s, scope, op, form.get("passphrase"), org_id)
            elif action == "totp":
                return op.email, management.reset_totp(s, scope, op, org_id)
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
    if member:  # their log-in is their home organisation's: only acting for this one changes
        messages["disable"] = "{email} can no longer act for this organisation."
        messages["enable"] = "{email} may act for this organisation again."
    return back(request, "/operators", messages[action], email=email)


@page()
async def operator_add(request: Request) -> Response:
    """``/operators/add``: a new operator of the admin's organisation (the active one), as
    ``operator add`` does: the admin types an initial passphrase twice (told to the operator
    in person); the authenticator's URI is shown once, on this answer only. An email that is
    another organisation's operator already becomes an admin here (a membership; the
    passphrase fields are left empty then, their log-in stays as it is)."""
    web = web_of(request)
    scope = _admin(request)
    form = form_of(request)
    email = check_email(form.get("email").strip(), "the email")
    role, passphrase = form.get("role"), form.get("passphrase")
    if passphrase != form.get("repeat"):
        raise MonitorError("the two passphrases differ")

    def add() -> management.Added:
        with web.db.session() as s:
            org = s.get(Organisation, scope.org_id)
            assert org is not None
            return management.add_operator(s, scope, org, email, role, passphrase or None)

    added = await run_in_threadpool(add)
    if added.member:
        return back(
            request,
            "/operators",
            "{email} is now an admin here too; they switch to it after their own log-in.",
            email=added.email,
        )
    return _render(request, added=added)  # the URI is shown once, on this answer only


@page(changes=False)
async def organisation_switch(request: Request) -> Response:
    """``/organisation``: an admin of several organisations acts for another one from now on
    (:func:`monitor.orgs.memberships.switch`, audited in both). Every page then shows only
    that organisation's people, cases, audit log, statistics and operators."""
    web = web_of(request)
    ws: auth.WebSession = request.state.ws
    scope = ws.scope
    if scope is None:
        raise NotAllowed("only an organisation's operators switch organisations")
    raw = form_of(request).get("org")
    if not raw.isdigit():
        raise MonitorError("which organisation?")

    def switch() -> tuple[Scope, str]:
        with web.db.session() as s:
            new = memberships.switch(s, scope, int(raw))
            org = s.get(Organisation, new.org_id)
            return new, org.name if org else "?"

    new, name = await run_in_threadpool(switch)
    ws.scope = new
    ws.reveal_keys.clear()  # one-time image keys of the other organisation's cases
    return back(request, "/", "You now act for {organisation}.", organisation=name)


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
