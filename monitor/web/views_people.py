"""Overview, scans and people pages (enrolment by in-memory upload)."""

from __future__ import annotations

import hashlib
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from monitor import alerts, cases, store
from monitor.cases import core as case_core
from monitor.config import format_duration
from monitor.db.models import Subject
from monitor.errors import MonitorError
from monitor.inputs import check_email, clean_name, parse_interval
from monitor.orgs import audit, casework, consent
from monitor.orgs.scope import HOUSEHOLD, current_scope, subject_in_scope
from monitor.web import data
from monitor.web.core import (
    back,
    form_of,
    page,
    web_of,
)
from monitor.web.forms import Form

# ------------------------------------------------------------------ overview, scans


@page(audit="overview")
async def overview_page(request: Request) -> Response:
    web = web_of(request)
    with web.db.session() as s:
        people = data.overview(s)
        open_cases = case_core.count_open(s)
        waiting = data.pending_alerts(s)
    return web.render(
        request,
        "overview.html",
        people=people,
        open_cases=open_cases,
        waiting=waiting,
        scheduler_running=web.scheduler_running,
        running=web.runner.running_in({p.id for p in people}),
    )


@page(audit="scans")
async def scans_page(request: Request) -> Response:
    web = web_of(request)
    with web.db.session() as s:
        rows = data.recent_scans(s)
        visible = {subject.id for subject in store.all_subjects(s)}
    return web.render(request, "scans.html", scans=rows, running=web.runner.running_in(visible))


# ------------------------------------------------------------------ people


def _subject(session: Any, subject_id: int) -> Subject:
    subject = session.get(Subject, subject_id)
    if subject is None or not subject_in_scope(session, subject_id):
        raise MonitorError("there is no such person (erased?)")
    return subject


def backend_choices(settings: Any) -> list[str]:
    """What a consent may allow: the configured backends' kinds and names."""
    kinds = sorted({b.kind for b in settings.search.backends})
    names = sorted({b.name for b in settings.search.backends if b.name} - set(kinds))
    return kinds + names or [consent.ANY_BACKEND]


def consent_fields(form: Form, settings: Any, *, link_allowed: bool = False) -> dict[str, Any]:
    """The consent of an organisation's person from the form (as ``subject add --consent-by
    --consent-file|--consent-link --consent-until --allow-backend``): the signed form's SHA-256
    is computed in memory and the file dropped; or a code for a mailed confirmation link."""
    from datetime import UTC, datetime

    by = form.get("consent_by").strip()
    files = [u for u in form.files if u.field == "consent_form" and u.data]
    form.files.clear()
    link = link_allowed and form.get("consent_how") == "link"
    if not by or not (files or link):
        raise MonitorError(
            "an organisation's person needs consent: who gave it, and the signed consent form"
            + (" (or a mailed confirmation link)" if link_allowed else "")
        )
    digest = None if link else hashlib.sha256(files[0].data).hexdigest()
    files.clear()
    person = by.casefold() == "person"
    until = form.get("consent_until").strip()
    try:
        valid_until = datetime.strptime(until, "%Y-%m-%d").replace(tzinfo=UTC) if until else None
    except ValueError:
        raise MonitorError(f"consent until: expected a date YYYY-MM-DD, got {until!r}") from None
    return {
        "given_by": "person" if person else "representative",
        "representative": None if person else clean_name(by, "consent given by"),
        "authority": form.get("authority").strip() or None,
        "form_sha": digest,
        "link_token": consent.new_link_token() if link else None,
        "valid_until": valid_until,
        "backends": form.getlist("backend"),
    }


@page()
async def people_page(request: Request) -> Response:
    web = web_of(request)
    scope = current_scope() or HOUSEHOLD
    if request.method == "POST":
        form = form_of(request)
        name = clean_name(form.get("name"), "the name")
        aliases = [clean_name(a, "an alias") for a in form.get("aliases").splitlines() if a.strip()]
        email = check_email(form.get("email")) if form.get("email").strip() else None
        every = form.get("every").strip()
        interval = parse_interval(every) if every else web.settings.schedule.default_interval
        fields = None
        if scope.org_id is not None:
            fields = consent_fields(form, web.settings, link_allowed=True)
            alert_to = form.get("alert_to", "person")
            if alert_to not in casework.ALERT_TO:
                raise MonitorError(f"alerts go to one of {', '.join(casework.ALERT_TO)}")
        with web.db.session() as s:
            subject = store.add_subject(
                s,
                name,
                aliases=aliases,
                email=email,
                interval=interval,
                organisation_id=scope.org_id,
            )
            subject.minor = form.get("minor") == "on"
            if fields is not None:
                subject.alert_to = alert_to
                consent.record_consent(
                    s, subject, names=[name, *aliases], operator_id=scope.operator_id, **fields
                )
                if fields["link_token"]:
                    consent.queue_link_mail(s, web.settings, subject, fields["link_token"])
                how = "link mailed" if fields["link_token"] else "signed form"
                audit.log(s, scope, "subject add", subject_id=subject.id, detail=f"web: {how}")
            subject_id = subject.id
        if fields is not None and fields["link_token"]:
            await run_in_threadpool(
                alerts.deliver_pending,
                web.db,
                alerts.notifier_from_settings(web.settings),
                web.settings,
            )
            return back(
                request,
                f"/people/{subject_id}",
                "Added {name}; a consent link was mailed. Nothing is searched before they agree.",
                name=name,
            )
        return back(request, f"/people/{subject_id}", "Added {name}. Next: add photos.", name=name)
    with web.db.session() as s:
        infos = store.subject_infos(s)
        ids = {subj.name: subj.id for subj in store.all_subjects(s)}
        audit.log(s, scope, "subject list", detail="web")
    return web.render(
        request,
        "people.html",
        people=[(ids[i.name], i) for i in infos],
        default_every=format_duration(web.settings.schedule.default_interval),
        backends=backend_choices(web.settings),
    )


@page(audit="subject show")
async def person_page(request: Request) -> Response:
    web = web_of(request)
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
            "organisation": subject.organisation_id,
            "paused": consent.paused_because(s, subject),
        }
        person_cases = cases.list_cases(s, subject.name)
        record = consent.latest(s, subject_id) if subject.organisation_id else None
        consent_info = consent.describe(record) if record else None
    return web.render(
        request,
        "person.html",
        person=info,
        references=refs,
        hashes=hashes,
        person_cases=person_cases,
        consent=consent_info,
        backends=backend_choices(web.settings),
        running=subject_id in web.runner.running,
        last_result=web.runner.last.get(subject_id),
        max_mb=web.settings.web.max_upload_bytes // 1_000_000,
    )


def format_duration_seconds(seconds: int) -> str:
    from datetime import timedelta

    return format_duration(timedelta(seconds=seconds))


@page(audit="enroll")
async def person_enrol(request: Request) -> Response:
    """Photos from the upload, hashed in memory (monitor.enrol) and dropped."""
    from monitor.enrol import enrol_images
    from monitor.retro import match_seen_images

    web = web_of(request)
    subject_id = int(request.path_params["subject_id"])
    form = form_of(request)
    uploads = [(u.filename or f"photo {i + 1}", u.data) for i, u in enumerate(form.files)]
    form.files.clear()  # the bytes live on only in ``uploads``, until this returns
    if not uploads:
        return back(request, f"/people/{subject_id}", "Choose one or more photos first.")

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
    to = f"/people/{subject_id}"
    response = back(
        request,
        to,
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
        back(request, to, "Could not use {problem}", problem=problem)
    for bland in report.low_quality:
        back(request, to, "{photo}: a bland photo, it may miss or mis-match.", photo=bland)
    return response


@page(audit="subject update")
async def person_update(request: Request) -> Response:
    from monitor.cases import image_copies

    web = web_of(request)
    subject_id = int(request.path_params["subject_id"])
    form = form_of(request)
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
    return back(request, f"/people/{subject_id}", "Saved.")


@page(audit="scan")
async def person_scan(request: Request) -> Response:
    web = web_of(request)
    subject_id = int(request.path_params["subject_id"])
    with web.db.session() as s:
        name = _subject(s, subject_id).name
    started = web.runner.start(subject_id, name)
    return back(
        request,
        "/scans",
        "Scan started; this page shows it when it is done (reload)."
        if started
        else "A scan of this person is already running.",
    )


@page(auth_required=False, changes=False)
async def consent_link_page(request: Request) -> Response:
    """The page the consent link mailed to a person opens (``[orgs] confirm_url``, e.g.
    ``https://help.example/confirm?code=``). Opening it confirms nothing (mail programs open
    links to check them); the person presses the button. No log-in: the code is the key, and
    the page names no one."""
    from monitor.orgs.scope import Scope, using_scope

    web = web_of(request)
    code = request.query_params.get("code", "").strip()
    done = False
    if request.method == "POST":
        code = form_of(request).get("code").strip()
        # the person is no operator: the code is looked up among every organisation's
        with using_scope(None), web.db.session() as s:
            record = consent.confirm_link(s, code)
            subject = s.get(Subject, record.subject_id)
            org = subject.organisation_id if subject else None
            person = Scope(org_id=org, operator="the person (confirmation link)")
            audit.log(s, person, "consent confirmed", subject_id=record.subject_id)
        done = True
    return web.render(request, "confirm.html", code=code, done=done)


@page(audit="consent confirm")
async def consent_code_confirm(request: Request) -> Response:
    """A caseworker types the code the person passed on (their mail had no link)."""
    web = web_of(request)
    with web.db.session() as s:
        record = consent.confirm_link(s, form_of(request).get("code"))
        subject_id = record.subject_id
    return back(request, f"/people/{subject_id}", "Consent confirmed: monitoring can start.")


def _audit_scope() -> Any:
    scope = current_scope() or HOUSEHOLD
    if scope.org_id is None:
        raise MonitorError("the audit log is kept for organisations")
    scope.require("admin", "caseworker")  # as `audit` on the command line
    return scope


@page()
async def audit_page(request: Request) -> Response:
    """The organisation's audit log (newest first): who looked at or changed what, when."""
    web = web_of(request)
    scope = _audit_scope()
    with web.db.session() as s:
        rows = list(reversed(audit.entries(s, scope)))[:500]
    return web.render(request, "audit.html", entries=rows)


@page(audit="audit export")
async def person_audit_export(request: Request) -> Response:
    """One person's audit entries as JSON (their right of access)."""
    import json

    web = web_of(request)
    scope = _audit_scope()
    subject_id = int(request.path_params["subject_id"])
    with web.db.session() as s:
        rows = [e.as_json() for e in audit.entries(s, scope, subject_id)]
    return Response(
        json.dumps(rows, indent=2),
        media_type="application/json",
        headers={"content-disposition": f'attachment; filename="audit-{subject_id}.json"'},
    )


@page(audit="consent renew")
async def person_consent_renew(request: Request) -> Response:
    """A new consent (a signed form): lifts a pause for an expired one (``consent renew``)."""
    web = web_of(request)
    subject_id = int(request.path_params["subject_id"])
    scope = current_scope() or HOUSEHOLD
    fields = consent_fields(form_of(request), web.settings)
    with web.db.session() as s:
        subject = _subject(s, subject_id)
        if subject.organisation_id is None:
            raise MonitorError("consent is recorded for an organisation's people only")
        names = [subject.name, *(a.alias for a in subject.aliases)]
        consent.record_consent(s, subject, names=names, operator_id=scope.operator_id, **fields)
    return back(request, f"/people/{subject_id}", "New consent recorded; monitoring goes on.")


@page()
async def person_consent_withdraw(request: Request) -> Response:
    """Consent withdrawn (an organisation's person): monitoring stops and everything is erased
    at once, after the name was typed; the audit log keeps that it happened, without it."""
    from monitor.orgs.erasure import withdraw_and_erase

    web = web_of(request)
    subject_id = int(request.path_params["subject_id"])
    with web.db.session() as s:
        subject = _subject(s, subject_id)
        name, org = subject.name, subject.organisation_id
    if org is None:
        raise MonitorError("consent is recorded for an organisation's people only")
    if form_of(request).get("confirm_name") != name:
        return back(request, f"/people/{subject_id}", "Not withdrawn: the name did not match.")
    scope = current_scope()
    await run_in_threadpool(withdraw_and_erase, web.settings, web.db, name, scope)
    return back(
        request,
        "/people",
        "Consent withdrawn: monitoring stopped and everything stored about the person is erased.",
    )


@page(audit="subject remove")
async def person_erase(request: Request) -> Response:
    web = web_of(request)
    subject_id = int(request.path_params["subject_id"])
    with web.db.session() as s:
        name = _subject(s, subject_id).name
    if form_of(request).get("confirm_name") != name:
        return back(request, f"/people/{subject_id}", "Not erased: the name did not match.")

    def erase() -> None:
        with web.db.session() as s:
            case_ids = [c.id for c in cases.list_cases(s, name)]
            mail_files = alerts.outbox_files(s, web.settings, subject_id)
            store.erase_subject(s, name)
        cases.erase_evidence(web.settings, case_ids)
        alerts.erase_outbox_files(mail_files)
        web.db.scrub()

    await run_in_threadpool(erase)
    return back(request, "/people", "Erased: references, scans, cases and evidence are gone.")
