"""Cases: list, detail, decisions, re-check, bundle, removal requests, and the found image or
evidence screenshot behind a warning and a click."""

from __future__ import annotations

import secrets
import tempfile
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from monitor import alerts, cases, store
from monitor.cases import core as case_core
from monitor.db.models import Notice, Operator, Subject
from monitor.errors import MonitorError
from monitor.orgs import casework, management
from monitor.orgs.scope import HOUSEHOLD, current_scope
from monitor.pool import PoolTaskError
from monitor.web.core import (
    WebApp,
    back,
    form_of,
    page,
    web_of,
)

# ------------------------------------------------------------------ cases


@page(audit="cases")
async def cases_page(request: Request) -> Response:
    web = web_of(request)
    with web.db.session() as s:
        rows = cases.list_cases(s)
    return web.render(request, "cases.html", cases=rows)


def _case_id(request: Request) -> int:
    return int(request.path_params["case_id"])


@page(audit="case show")
async def case_page(request: Request) -> Response:
    web = web_of(request)
    case_id = _case_id(request)
    scope = current_scope() or HOUSEHOLD
    with web.db.session() as s:
        detail = cases.case_detail(s, web.settings, case_id)
        found_by = store.found_by(s, case_id)
        requests = casework.requests_of(s, case_id)
        assigned, workers = None, []
        if scope.org_id is not None:
            case = case_core.get_case(s, case_id)
            op = s.get(Operator, case.assigned_to) if case.assigned_to else None
            assigned = op.email if op else None
            workers = [
                o.email
                for o in management.list_operators(s, scope.org_id)
                if o.role in ("admin", "caseworker") and not o.disabled
            ]
    return web.render(
        request,
        "case.html",
        d=detail,
        found_by=found_by,
        requests=requests,
        request_states=casework.REQUEST_STATES,
        assigned=assigned,
        workers=workers,
        reply_to=web.settings.cases.reply_to,
        removal_forms=web.settings.cases.removal_forms,
    )


@page(audit="case {last}")
async def case_decide(request: Request) -> Response:
    from monitor.cases.image_copies import delete_image_copies

    web = web_of(request)
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
    return back(
        request,
        f"/cases/{case_id}",
        "Case {case}: {status}.",
        "Deleted {n} kept image copy(ies)." if deleted else "",
        case=case_id,
        status=status,
        n=deleted,
    )


@page(audit="case recheck")
async def case_recheck(request: Request) -> Response:
    web = web_of(request)
    case_id = _case_id(request)
    report = await cases.recheck_case(web.settings, web.db, case_id)
    await run_in_threadpool(
        alerts.deliver_pending, web.db, alerts.notifier_from_settings(web.settings), web.settings
    )
    return back(
        request,
        f"/cases/{case_id}",
        "Checked again: {status}; {online} online, {gone} gone, {unreachable} unreachable.",
        status=report.status,
        online=report.online,
        gone=report.gone,
        unreachable=report.unreachable,
    )


@page(audit="case evidence export")
async def case_bundle(request: Request) -> Response:
    """The evidence zip, built in an owner-only folder of the data folder and sent."""
    from monitor.cases.capture import export_bundle
    from monitor.paths import ensure_private_dir

    web = web_of(request)
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


@page(audit="case notice draft")
async def case_notice(request: Request) -> Response:
    from monitor.cases import contacts, notices

    web = web_of(request)
    case_id = _case_id(request)
    form = form_of(request)
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
    case_core.get_case(session, case_id)  # "no such case" outside the scope in force
    notice = session.get(Notice, notice_id)
    if notice is None or notice.match_id != case_id:
        raise MonitorError("there is no such removal request")
    return notice


@page(audit="case notice show")
async def notice_page(request: Request) -> Response:
    web = web_of(request)
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


@page(audit="case notice send")
async def notice_send(request: Request) -> Response:
    from monitor.cases import notices

    web = web_of(request)
    case_id, notice_id = _case_id(request), int(request.path_params["notice_id"])
    form = form_of(request)
    with web.db.session() as s:
        _notice(s, case_id, notice_id)
    if form.get("confirm") != "yes":
        return back(
            request,
            f"/cases/{case_id}/notices/{notice_id}",
            "Not sent: tick the box to confirm that you want it sent.",
        )
    to = form.get("to").strip()
    sent = await run_in_threadpool(
        lambda: notices.send_notice(web.settings, web.db, notice_id, to, confirmed=True)
    )
    return back(
        request, f"/cases/{case_id}", "Sent to {to}; recorded with the case.", to=sent.sent_to
    )


@page(audit="case assign")
async def case_assign(request: Request) -> Response:
    """Give the case to one of the organisation's caseworkers (or admins)."""
    web = web_of(request)
    case_id = _case_id(request)
    email = form_of(request).get("email")
    with web.db.session() as s:
        casework.assign_case(s, case_id, email)
    return back(
        request, f"/cases/{case_id}", "Case {case} is assigned to {to}.", case=case_id, to=email
    )


@page(audit="case request")
async def case_request(request: Request) -> Response:
    """What the site did with the latest sent removal request: acknowledged, removed,
    refused, on a date (default today)."""
    from datetime import UTC, datetime

    web = web_of(request)
    case_id = _case_id(request)
    form = form_of(request)
    at_text = form.get("at").strip()
    try:
        at = datetime.strptime(at_text, "%Y-%m-%d").replace(tzinfo=UTC) if at_text else None
    except ValueError:
        raise MonitorError(f"expected a date YYYY-MM-DD, got {at_text!r}") from None
    with web.db.session() as s:
        casework.record_request_outcome(s, case_id, form.get("state"), at)
    return back(request, f"/cases/{case_id}", "Recorded: {state}.", state=form.get("state"))


@page()
async def stats_page(request: Request) -> Response:
    """Removal rate and median days to removal, overall and by site, of the organisation's
    cases (the household's without one)."""
    web = web_of(request)
    scope = current_scope() or HOUSEHOLD
    with web.db.session() as s:
        stats = casework.removal_stats(s, scope.org_id)
    return web.render(request, "stats.html", stats=stats)


# ------------------------------------------------------------------ images, behind a click


def _place(session: Any, case_id: int, sighting_id: int) -> tuple[Any, bool]:
    detail_case = case_core.get_case(session, case_id)
    subject = session.get(Subject, detail_case.subject_id)
    for sighting in case_core.case_sightings(session, detail_case):
        if sighting.id == sighting_id:
            return sighting, bool(subject and subject.minor)
    raise MonitorError("there is no such place in this case")


@page(changes=False, audit="case image")
async def reveal_page(request: Request) -> Response:
    """A warning, and only after a deliberate click a one-time link to the blurred image."""
    web = web_of(request)
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


@page(audit="case image view")
async def blurred_image(request: Request) -> Response:
    from monitor.web.blur import fetch_blurred

    web = web_of(request)
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
        # the pool's first start (a forkserver: seconds) must not hold up the event loop
        pool = await run_in_threadpool(web.runner.hashing_pool)
        body = await fetch_blurred(web.settings, image_url, pool=pool)
    except MonitorError as exc:
        return Response(f"Could not fetch it now: {exc}", 502, media_type="text/plain")
    except PoolTaskError as exc:  # the decoder hung or crashed on these bytes
        return Response(f"Could not show it: {exc}", 502, media_type="text/plain")
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


@page(changes=False, audit="case screenshot")
async def screenshot_page(request: Request) -> Response:
    web = web_of(request)
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
        prefix="",
        back_url=f"/cases/{case_id}",
    )


@page(audit="case screenshot view")
async def screenshot_file(request: Request) -> Response:
    web = web_of(request)
    case_id, sighting_id = _case_id(request), int(request.path_params["sighting_id"])
    path = _screenshot_path(web, case_id, sighting_id, int(request.path_params["index"]))
    return Response(path.read_bytes(), media_type="image/png")
