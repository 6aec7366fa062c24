"""Overview, scans and people pages (enrolment by in-memory upload)."""

from __future__ import annotations

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
from monitor.orgs.scope import subject_in_scope
from monitor.web import data
from monitor.web.core import (
    back,
    form_of,
    page,
    web_of,
)

# ------------------------------------------------------------------ overview, scans


@page()
async def overview_page(request: Request) -> Response:
    web = web_of(request)
    with web.db.session() as s:
        people = data.overview(s)
        open_cases = case_core.count_open(s)
        waiting = alerts.pending_count(s)
    return web.render(
        request,
        "overview.html",
        people=people,
        open_cases=open_cases,
        waiting=waiting,
        scheduler_running=web.scheduler_running,
        running=web.runner.running,
    )


@page()
async def scans_page(request: Request) -> Response:
    web = web_of(request)
    with web.db.session() as s:
        rows = data.recent_scans(s)
    return web.render(request, "scans.html", scans=rows, running=web.runner.running)


# ------------------------------------------------------------------ people


def _subject(session: Any, subject_id: int) -> Subject:
    subject = session.get(Subject, subject_id)
    if subject is None or not subject_in_scope(session, subject_id):
        raise MonitorError("there is no such person (erased?)")
    return subject


@page()
async def people_page(request: Request) -> Response:
    web = web_of(request)
    if request.method == "POST":
        form = form_of(request)
        name = clean_name(form.get("name"), "the name")
        aliases = [clean_name(a, "an alias") for a in form.get("aliases").splitlines() if a.strip()]
        email = check_email(form.get("email")) if form.get("email").strip() else None
        every = form.get("every").strip()
        interval = parse_interval(every) if every else web.settings.schedule.default_interval
        with web.db.session() as s:
            subject = store.add_subject(s, name, aliases=aliases, email=email, interval=interval)
            subject.minor = form.get("minor") == "on"
            subject_id = subject.id
        return back(request, f"/people/{subject_id}", "Added {name}. Next: add photos.", name=name)
    with web.db.session() as s:
        infos = store.subject_infos(s)
        ids = {subj.name: subj.id for subj in store.all_subjects(s)}
    return web.render(
        request,
        "people.html",
        people=[(ids[i.name], i) for i in infos],
        default_every=format_duration(web.settings.schedule.default_interval),
    )


@page()
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
        }
        person_cases = cases.list_cases(s, subject.name)
    return web.render(
        request,
        "person.html",
        person=info,
        references=refs,
        hashes=hashes,
        person_cases=person_cases,
        running=subject.name in web.runner.running,
        last_result=web.runner.last.get(subject.name),
        max_mb=web.settings.web.max_upload_bytes // 1_000_000,
    )


def format_duration_seconds(seconds: int) -> str:
    from datetime import timedelta

    return format_duration(timedelta(seconds=seconds))


@page()
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


@page()
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


@page()
async def person_scan(request: Request) -> Response:
    web = web_of(request)
    subject_id = int(request.path_params["subject_id"])
    with web.db.session() as s:
        name = _subject(s, subject_id).name
    started = web.runner.start(name)
    return back(
        request,
        "/scans",
        "Scan started; this page shows it when it is done (reload)."
        if started
        else "A scan of this person is already running.",
    )


@page()
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
