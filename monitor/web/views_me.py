"""The monitored person's own pages (``/me``; monitor/orgs/person.py): set a passphrase from
the invitation, log in, see their own cases read only (places, state, what was done, what the
sites answered; no image; an evidence screenshot only behind the operators' warning), withdraw
consent, log out. Each look is audited as
"the person". A person's session is not an operator's: every other page stays closed to it,
and these pages show nothing of anyone else (the cases are the person's own, by their id)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import select
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from monitor import cases
from monitor.db.models import PersonLogin, Subject
from monitor.errors import MonitorError
from monitor.orgs import audit, casework, consent, person
from monitor.orgs.scope import Scope, using_scope
from monitor.web import auth
from monitor.web.core import WebApp, form_of, page, web_of


def _person_now(web: WebApp, ws: auth.WebSession) -> Scope | None:
    """The signed-in person's scope; None (and the session ends) when there is none, or the
    person was erased, or their passphrase was set again since."""
    if ws.person is None:
        return None
    with using_scope(None), web.db.session() as s:
        subject = s.get(Subject, ws.person)
        login = s.scalar(select(PersonLogin).where(PersonLogin.subject_id == ws.person))
        if subject is None or login is None or person.stamp(login) != ws.credentials:
            web.sessions.drop(ws)
            return None
        return person.person_scope(subject)


@page(auth_required=False, changes=False)
async def me_invite(request: Request) -> Response:
    """The invitation's link: choose a passphrase. Opening it changes nothing."""
    web = web_of(request)
    code = request.query_params.get("code", "").strip()
    error = None
    if request.method == "POST":
        form = form_of(request)
        code = form.get("code").strip()

        def accept() -> tuple[int, str]:
            with using_scope(None), web.db.session() as s:
                login = person.accept_invite(s, code, form.get("passphrase"), form.get("repeat"))
                return login.subject_id, person.stamp(login)

        try:
            subject_id, stamp = await run_in_threadpool(accept)
        except MonitorError as exc:
            error = str(exc)
        else:
            request.state.ws = web.sessions.person_session(request.state.ws, subject_id, stamp)
            return RedirectResponse("/me", 303)
    return web.render(
        request, "me_invite.html", status=400 if error else 200, code=code, error=error
    )


@page(auth_required=False, changes=False)
async def me_login(request: Request) -> Response:
    web = web_of(request)
    error = None
    if request.method == "POST":
        form = form_of(request)
        try:
            request.state.ws = await run_in_threadpool(
                web.sessions.log_in_person,
                request.state.ws,
                form.get("email"),
                form.get("passphrase"),
            )
            return RedirectResponse("/me", 303)
        except auth.PassphraseError as exc:
            error = str(exc)
    return web.render(request, "me_login.html", status=400 if error else 200, error=error)


@page(auth_required=False, changes=False)
async def me_page(request: Request) -> Response:
    """The person's own cases, read only; audited."""
    web = web_of(request)
    ws: auth.WebSession = request.state.ws
    scope = _person_now(web, ws)
    if scope is None or ws.person is None:
        return RedirectResponse("/me/login", 303)
    subject_id = ws.person

    def load() -> dict[str, Any]:
        with using_scope(scope), web.db.session() as s:
            subject = s.get(Subject, subject_id)
            if subject is None:
                raise MonitorError("there is nothing here any more")
            shown = []
            for summary in cases.list_cases(s, subject.name):
                if summary.status == "dismissed":  # judged not to be the person
                    continue
                detail = cases.case_detail(s, web.settings, summary.id)
                shown.append(
                    {
                        "id": summary.id,
                        "status": summary.status,
                        "first_seen": summary.first_seen,
                        "removed_at": summary.removed_at,
                        "places": [
                            {
                                "id": x.id,
                                "page_url": x.page_url,
                                "state": x.state,
                                "checked_at": x.checked_at,
                                "screenshots": [
                                    i
                                    for i, f in enumerate(
                                        f for f in x.evidence_files if f.get("kind") == "screenshot"
                                    )
                                ],
                            }
                            for x in detail.sightings
                        ],
                        "requests": casework.requests_of(s, summary.id),
                        "events": detail.events,
                    }
                )
            record = consent.latest(s, subject_id)
            info = {
                "cases": shown,
                "paused": consent.paused_because(s, subject),
                "consent_until": record.valid_until if record else None,
            }
            audit.log(
                s, scope, "person view", subject_id=subject_id, detail=f"web: {len(shown)} case(s)"
            )
            return info

    with using_scope(scope):
        info = await run_in_threadpool(load)
    return web.render(request, "me.html", **info)


@page(auth_required=False, changes=False)
async def me_withdraw(request: Request) -> Response:
    """The person withdraws their consent: monitoring stops and everything is erased at once
    (their log-in too); the audit log keeps that it happened."""
    from monitor.orgs.erasure import withdraw_and_erase

    web = web_of(request)
    ws: auth.WebSession = request.state.ws
    scope = _person_now(web, ws)
    if scope is None or ws.person is None:
        return RedirectResponse("/me/login", 303)
    if form_of(request).get("confirm") != "yes":
        raise MonitorError("not withdrawn: tick the box to confirm")
    with using_scope(scope), web.db.session() as s:
        subject = s.get(Subject, ws.person)
        name = subject.name if subject else ""
    with using_scope(scope):
        await run_in_threadpool(withdraw_and_erase, web.settings, web.db, name, scope)
    web.sessions.drop(ws)
    request.state.ws = web.sessions.new(ws.lang)
    return web.render(request, "me_withdrawn.html")


@page(auth_required=False, changes=False)
async def me_logout(request: Request) -> Response:
    web = web_of(request)
    web.sessions.drop(request.state.ws)
    request.state.ws = web.sessions.new(request.state.ws.lang)
    return RedirectResponse("/me/login", 303)


@page()
async def person_invite(request: Request) -> Response:
    """A caseworker invites the person to see their own cases (a mailed one-time link);
    audited as "person invited"."""
    from monitor import alerts
    from monitor.orgs.scope import current_scope, subject_in_scope
    from monitor.web.core import back

    web = web_of(request)
    subject_id = int(request.path_params["subject_id"])
    scope = current_scope()
    assert scope is not None

    def send() -> None:
        with web.db.session() as s:
            subject = s.get(Subject, subject_id)
            if subject is None or not subject_in_scope(s, subject_id):
                raise MonitorError("there is no such person (erased?)")
            person.invite(s, web.settings, subject, scope)
        alerts.deliver_pending(web.db, alerts.notifier_from_settings(web.settings), web.settings)

    await run_in_threadpool(send)
    return back(
        request,
        f"/people/{subject_id}",
        "The person was invited: a link to choose a passphrase was mailed to them.",
    )


def _own_screenshot(request: Request) -> tuple[Scope, int, Path] | Response:
    """The signed-in person's scope, their id and the screenshot file the path names, after
    checking the case is theirs (else "not found"); or where to log in."""
    from monitor.cases.core import CaseNotFound, get_case
    from monitor.web.views_cases import _screenshot_path

    web = web_of(request)
    ws: auth.WebSession = request.state.ws
    scope = _person_now(web, ws)
    if scope is None or ws.person is None:
        return RedirectResponse("/me/login", 303)
    case_id = int(request.path_params["case_id"])
    sighting_id = int(request.path_params["sighting_id"])
    with using_scope(scope):
        with web.db.session() as s:
            case = get_case(s, case_id)
            if case.subject_id != ws.person or case.status == "dismissed":
                raise CaseNotFound(f"there is no case {case_id}")
        path = _screenshot_path(web, case_id, sighting_id, int(request.path_params["index"]))
    return scope, ws.person, path


def _log(web: WebApp, scope: Scope, action: str, subject_id: int, request: Request) -> None:
    p = request.path_params
    with using_scope(scope), web.db.session() as s:
        audit.log(
            s,
            scope,
            action,
            subject_id=subject_id,
            detail=f"web: case {p['case_id']}, sighting {p['sighting_id']}, index {p['index']}",
        )


@page(auth_required=False, changes=False)
async def me_screenshot(request: Request) -> Response:
    """The same warning operators get; the screenshot (every image blurred) only after a
    deliberate click."""
    web = web_of(request)
    own = _own_screenshot(request)
    if isinstance(own, Response):
        return own
    scope, subject_id, _path = own
    _log(web, scope, "person screenshot", subject_id, request)
    case_id = int(request.path_params["case_id"])
    return web.render(
        request,
        "screenshot.html",
        case_id=case_id,
        sighting_id=int(request.path_params["sighting_id"]),
        index=int(request.path_params["index"]),
        shown=request.method == "POST",
        prefix="/me",
        back_url=f"/me#case-{case_id}",
    )


@page(auth_required=False, changes=False)
async def me_screenshot_file(request: Request) -> Response:
    web = web_of(request)
    own = _own_screenshot(request)
    if isinstance(own, Response):
        return own
    scope, subject_id, path = own
    _log(web, scope, "person screenshot view", subject_id, request)
    return Response(path.read_bytes(), media_type="image/png")
