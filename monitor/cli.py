"""Command line: parses, calls the library, prints. ``python run_monitor.py --help``."""

from __future__ import annotations

import argparse
import gc
import json
import logging
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import NoReturn

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy.exc import SQLAlchemyError

from monitor import __version__, alerts, cases, cli_orgs, cli_queue, cli_web, store
from monitor.cases import image_copies
from monitor.config import Settings, load_settings
from monitor.db import Database, check_sqlite_folder, describe_db_error
from monitor.errors import MonitorError
from monitor.inputs import check_email, check_hash_file, clean_name, parse_interval
from monitor.paths import ensure_private_dir
from monitor.textsafe import markup as esc
from monitor.textsafe import text as cell
from monitor.textsafe import visible

# Untrusted text (addresses, titles, names, reasons) goes through monitor.textsafe before
# Rich sees it: esc() inside markup strings, cell() (a Text, never parsed) in tables. Emoji
# codes are off so that ":name:" in an address prints as written.
out = Console(highlight=False, emoji=False)
err = Console(stderr=True, highlight=False, emoji=False)

DESCRIPTION = """\
Exposure Monitor searches the web for a person's name and aliases, hashes the images it finds
and compares them with hashes of the person's own photos. Matches are recorded and the person
gets a discreet email (no image, no name, no URL) pointing them back to this tool.

Reference photos never leave this machine and are never stored: only their hashes are.
Start with `demo` to see the whole flow offline."""

EPILOG = """\
examples:
  python run_monitor.py demo
  python run_monitor.py subject add "Jane Doe" --alias "J. Doe" --email jane@example.org --every 24h
  python run_monitor.py enroll "Jane Doe" ~/Pictures/me/
  python run_monitor.py scan "Jane Doe"
  python run_monitor.py matches --json
  python run_monitor.py run

configuration: --config FILE, else $MONITOR_CONFIG, else config/monitor.toml, else defaults
(see config/monitor.example.toml)."""


SCAN_EXIT_CODES = """\
exit codes:
  0  completed: every planned search was answered
  3  partial: some searches failed, were skipped (rate limit, request cap, monthly budget)
     or were answered only in part (some engines behind a backend did not answer)
  4  failed: no search was answered; the scan could not look, so "0 matches" means nothing
  1  (--all) a person could not be scanned at all (e.g. no reference photos); 4 wins over it,
     and it over 3
  2  an error stopped the command (configuration, unknown person...)"""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="run_monitor.py",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"exposure-monitor {__version__}")
    p.add_argument("--config", metavar="FILE", help="TOML configuration file")
    cli_orgs.add_global_options(p)  # --operator (organisations, monitor/cli_orgs.py)
    p.add_argument(
        "-v", "--verbose", action="count", default=0, help="more log output (-vv: debug)"
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    d = sub.add_parser(
        "demo",
        help="offline end-to-end demonstration (loopback web, search and mail)",
        description="Runs the whole flow offline: a loopback web with a SearXNG-compatible "
        "search, generated photos, a loopback SMTP server delivering to a Maildir. Nothing "
        "leaves this machine and your real data folder is not touched.",
    )
    d.add_argument(
        "--keep",
        metavar="DIR",
        help="keep the demo's data folder here (default: a temporary one, removed)",
    )
    d.add_argument("--json", action="store_true", help="print a machine-readable summary")

    s = sub.add_parser("subject", help="add, list or remove monitored people")
    ssub = s.add_subparsers(dest="subject_command", metavar="ACTION", required=True)
    sa = ssub.add_parser("add", help="start monitoring a person")
    sa.add_argument("name", help="the person's name as it would appear online")
    sa.add_argument(
        "--alias",
        action="append",
        default=[],
        metavar="A",
        help="another name to search (repeatable)",
    )
    sa.add_argument(
        "--email", metavar="ADDR", help="where alerts go (default: the local outbox folder)"
    )
    sa.add_argument(
        "--every", metavar="DURATION", help="scan interval, e.g. 12h, 1d (default from config: 24h)"
    )
    sa.add_argument(
        "--minor",
        action="store_true",
        help="the person may be under 18: no evidence capture, and cases point to a child-abuse "
        "hotline instead of the site",
    )
    sa.add_argument(
        "--keep-image-copies",
        action="store_true",
        help="also keep an encrypted copy of each found image in the case's evidence (off by "
        "default; refused with --minor)",
    )
    sa.add_argument("--json", action="store_true")
    cli_orgs.add_subject_options(sa)  # --org --consent-by --consent-file --consent-until
    sst = ssub.add_parser(
        "set",
        help="change a person's settings",
        description="--no-keep-image-copies deletes the copies already kept. --minor marks the "
        "person as possibly under 18: no further capture, and every image copy is deleted.",
    )
    sst.add_argument("name")
    sst.add_argument(
        "--keep-image-copies",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="keep (or stop keeping and delete) encrypted copies of found images",
    )
    sst.add_argument(
        "--minor", action="store_true", help="the person may be under 18 (cannot be undone here)"
    )
    sl = ssub.add_parser("list", help="list monitored people")
    sl.add_argument("--json", action="store_true")
    cli_orgs.add_invite_parser(ssub)  # subject invite NAME (the person's own log-in)
    sr = ssub.add_parser("remove", help="erase everything stored about a person")
    sr.add_argument("name")
    sr.add_argument("--yes", action="store_true", help="do not ask for confirmation")

    e = sub.add_parser(
        "enroll",
        aliases=["enrol"],
        help="add reference photos (only their hashes are kept)",
        description="Hashes photos (JPEG, PNG, WebP, GIF; HEIC with pillow-heif) or whole folders "
        "locally and stores only the hashes. The photos are not copied, stored or sent anywhere.",
    )
    e.add_argument("name")
    e.add_argument("paths", nargs="*", type=Path, metavar="PATH", help="photos or folders")
    e.add_argument(
        "--hashes",
        type=Path,
        metavar="FILE",
        help="import hashes made elsewhere (hex, one per line)",
    )
    e.add_argument("--json", action="store_true")

    sc = sub.add_parser(
        "scan",
        help="search for a person (or everyone) now",
        description="Searches every configured backend for the person's names (image results "
        "first), fetches the pages and images found and compares their hashes. The summary says "
        "how many of the planned searches were answered and why others were not: 'no matches' "
        "only means something for what was searched.",
        epilog=SCAN_EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    who = sc.add_mutually_exclusive_group(required=True)
    who.add_argument("name", nargs="?")
    who.add_argument("--all", action="store_true", help="scan every monitored person")
    sc.add_argument("--json", action="store_true", help="print a machine-readable summary")
    sc.add_argument(
        "--dry-run",
        action="store_true",
        help="print the search requests a scan would send, per backend, and their cost "
        "(requests; monthly budget left); send nothing",
    )
    sc.add_argument(
        "--queue",
        action="store_true",
        help="run the scan on the workers of [queue] (docs/scale.md) and wait for its summary",
    )

    bk = sub.add_parser(
        "backends",
        help="check each configured search backend with one cheap request",
        description="Sends each configured search backend one cheap request (its own check, or "
        "one tiny search) and says whether it answered, the quota left where its API says, and "
        "what to do when it fails. Exit code: 0 all answered, 3 some did not, 4 none did.",
    )
    bk.add_argument("--json", action="store_true")

    m = sub.add_parser("matches", help="show what was found")
    m.add_argument("name", nargs="?", help="only this person")
    m.add_argument("--json", action="store_true")

    o = sub.add_parser("outbox", help="show alerts waiting to be delivered, or deliver them now")
    o.add_argument("--send", action="store_true", help="try to deliver pending alerts now")
    o.add_argument(
        "--retry-failed",
        action="store_true",
        help="queue alerts that failed for good (refused, or out of attempts) again, e.g. after "
        "fixing the address or password; with --send they are tried at once",
    )
    o.add_argument("--json", action="store_true")

    sub.add_parser("run", help="run the scheduler in the foreground (Ctrl-C stops)")
    _case_parsers(sub)
    cli_orgs.register(sub)  # org, operator, consent, audit, stats
    cli_orgs.register_case_actions(sub)  # case assign, case request
    cli_web.register(sub)  # serve: the web app (monitor/cli_web.py)
    cli_queue.register(sub)  # worker (monitor/cli_queue.py)
    return p


_opened: list[Database] = []  # closed when the command ends (main)


def _db(settings: Settings) -> Database:
    ensure_private_dir(settings.data_dir)
    if settings.database.url:  # the data folder is ours to create; a configured path is not
        check_sqlite_folder(settings.database.url)
    db = Database(settings.database_url, key_file=settings.key_path)
    _opened.append(db)
    return db


def _print_json(data: object) -> None:
    print(json.dumps(data, indent=2, default=str))


def _fmt_time(value: object) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if value is not None else "-"  # type: ignore[attr-defined]


# ---------------------------------------------------------------- commands


def cmd_subject(args: argparse.Namespace, settings: Settings) -> int:
    db = _db(settings)
    if args.subject_command == "add" and cli_orgs.wants_org_subject(args):
        return cli_orgs.cmd_subject_add(args, settings)  # with consent (monitor/cli_orgs.py)
    if args.subject_command == "add":
        interval = parse_interval(args.every) if args.every else settings.schedule.default_interval
        name = clean_name(args.name, "the name")
        aliases = [clean_name(a, "an alias") for a in args.alias]
        email = check_email(args.email) if args.email else None
        image_copies.check_may_keep(minor=bool(args.minor), keep=args.keep_image_copies)
        with db.session() as s:
            subject = store.add_subject(s, name, aliases=aliases, email=email, interval=interval)
            subject.minor = bool(args.minor)
            subject.keep_image_copies = bool(args.keep_image_copies)
            info = {
                "name": subject.name,
                "aliases": [a.alias for a in subject.aliases],
                "email": subject.email,
                "interval_seconds": subject.interval_seconds,
            }
        if args.json:
            _print_json(info)
        else:
            out.print(
                f"Added {esc(repr(info['name']))}. Next: enroll reference photos with "
                f"`enroll {esc(repr(info['name']))} PHOTO_OR_FOLDER...`"
            )
        return 0
    if args.subject_command == "set":
        return _subject_set(args, settings, db)
    if args.subject_command == "invite":
        return cli_orgs.cmd_subject_invite(args, settings)
    if args.subject_command == "list":
        with db.session() as s:
            infos = store.subject_infos(s)
        if args.json:
            _print_json([i.as_json() for i in infos])
            return 0
        if not infos:
            out.print("No one is monitored yet. Add someone with `subject add NAME`.")
            return 0
        t = Table("name", "aliases", "email", "every", "references", "matches", "last scan")
        for i in infos:
            t.add_row(
                cell(i.name),
                cell(", ".join(i.aliases) or "-"),
                cell(i.email or "(local outbox)"),
                _fmt_interval(i.interval_seconds),
                str(i.references),
                str(i.matches),
                _fmt_time(i.last_scan_at),
            )
        out.print(t)
        return 0
    # remove
    if not args.yes:
        if not sys.stdin.isatty():
            raise MonitorError("refusing to erase without confirmation: add --yes")
        answer = input(
            f"Erase everything stored about {visible(repr(args.name))}? Type the name to confirm: "
        )
        if answer.strip() != args.name:
            err.print("Not erased.")
            return 1
    with db.session() as s:
        case_ids = [c.id for c in cases.list_cases(s, args.name)]
        mail_files = alerts.outbox_files(s, settings, store.get_subject(s, args.name).id)
        store.erase_subject(s, args.name)
    cases.erase_evidence(settings, case_ids)
    alerts.erase_outbox_files(mail_files)  # alert files hold the person's address
    if not db.scrub():  # no copy of the erased rows left in the write-ahead log
        err.print(
            "[yellow]warning[/yellow]: another process (the scheduler?) has the database open: "
            "the database's log still holds erased rows until it stops"
        )
    out.print(f"Erased {esc(repr(args.name))}: references, scans, matches and alerts are gone.")
    return 0


def _subject_set(args: argparse.Namespace, settings: Settings, db: Database) -> int:
    if args.minor and args.keep_image_copies:
        image_copies.check_may_keep(minor=True, keep=True)
    if not args.minor and args.keep_image_copies is None:
        raise MonitorError("nothing to change: give --keep-image-copies, --no-... or --minor")
    if args.minor:
        n = image_copies.mark_minor(db, args.name, settings)
        out.print(
            f"{esc(repr(args.name))} is marked as possibly under 18: nothing more is captured"
            + (f"; {n} image copies were deleted." if n else ".")
        )
    if args.keep_image_copies is True:
        image_copies.set_keep_image_copies(db, args.name, True, settings)
        out.print(
            f"Encrypted copies of images found for {esc(repr(args.name))} will be kept with the "
            "evidence (key: the reference key file). Bundles include them only with "
            "`case evidence ID OUT.zip --include-image-copy`."
        )
    elif args.keep_image_copies is False:
        n = image_copies.set_keep_image_copies(db, args.name, False, settings)
        out.print(f"No image copies are kept for {esc(repr(args.name))}; {n} were deleted.")
    return 0


def _fmt_interval(seconds: int) -> str:
    if seconds % 86400 == 0:
        return f"{seconds // 86400}d"
    if seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    return f"{seconds // 60}m"


def cmd_enroll(args: argparse.Namespace, settings: Settings) -> int:
    from monitor.enrol import EnrolReport, enrol_hash_file, enrol_paths
    from monitor.retro import match_seen_images

    if not args.paths and not args.hashes:
        raise MonitorError("give photos or folders to enroll, or --hashes FILE")
    if args.hashes:
        check_hash_file(args.hashes)  # a regular file of at most 10 MB, not /dev/zero
    db = _db(settings)
    reports: list[EnrolReport] = []
    with db.session() as s:
        subject = store.get_subject(s, args.name)
        if args.paths:
            with _spinner(args.json, "hashing photos") as tick:
                reports.append(enrol_paths(s, subject, args.paths, progress=lambda _p: tick()))
        if args.hashes:
            reports.append(enrol_hash_file(s, subject, args.hashes))
        # New references are matched against every image seen before (no download).
        retro = (
            match_seen_images(s, settings, subject) if any(r.enrolled for r in reports) else None
        )
    if retro is not None and retro.alerted:
        alerts.deliver_pending(db, alerts.notifier_from_settings(settings), settings)
    enrolled = sum(r.enrolled for r in reports)
    duplicates = sum(r.duplicates for r in reports)
    errors = [e for r in reports for e in r.errors]
    low = [q for r in reports for q in r.low_quality]
    checked = retro.checked if retro else 0
    matched = retro.matched if retro else 0
    if args.json:
        _print_json(
            {
                "enrolled": enrolled,
                "duplicates": duplicates,
                "errors": errors,
                "low_quality": low,
                "earlier_images_checked": checked,
                "earlier_matches": matched,
            }
        )
    else:
        for line in errors:
            err.print(f"[red]error[/red]: {esc(line)}")
        for line in low:
            err.print(
                f"[yellow]warning[/yellow]: {esc(line)}: a bland photo; it may miss or mis-match"
            )
        out.print(
            f"Enrolled {enrolled} reference(s) for {esc(repr(args.name))}"
            + (f", {duplicates} already enrolled" if duplicates else "")
            + (f", {len(errors)} error(s)" if errors else "")
            + ". Only hashes were stored."
        )
        if retro is not None:
            out.print(
                f"Checked {checked} image(s) found earlier: "
                + (f"{matched} match(es), see `matches`." if matched else "none matched.")
            )
    return 1 if errors and not enrolled else 0


@contextmanager
def _spinner(quiet: bool, label: str) -> Iterator[Callable[[], None]]:
    if quiet or not err.is_terminal:
        yield lambda: None
        return
    with Progress(TextColumn(label), MofNCompleteColumn(), console=err, transient=True) as prog:
        task = prog.add_task(label, total=None)
        yield lambda: prog.advance(task)


def cmd_scan(args: argparse.Namespace, settings: Settings) -> int:
    from monitor.coverage import EXIT_CODES
    from monitor.pipeline import ScanSummary, hashing_pool, scan_subject

    db = _db(settings)
    if args.dry_run:
        return _scan_dry_run(args, settings, db)
    if args.queue:
        cli_queue.require_queue(settings)
    if args.all:
        with db.session() as s:
            names = [subj.name for subj in store.all_subjects(s)]
        if not names:
            raise MonitorError("no one is monitored yet: add someone with `subject add NAME`")
    else:
        names = [args.name]
    summaries: list[ScanSummary] = []
    failures: list[str] = []
    with nullcontext() if args.queue else hashing_pool() as pool:
        for name in names:
            try:
                if args.queue:  # on the workers (monitor/cli_queue.py)
                    with db.session() as s:
                        subject_id = store.get_subject(s, name).id
                    summaries.append(cli_queue.scan_queued(settings, subject_id, name))
                    continue
                with _scan_progress(args.json, name) as progress:
                    summaries.append(scan_subject(settings, db, name, pool=pool, progress=progress))
            except MonitorError as exc:
                if not args.all:
                    raise
                failures.append(f"{name}: {exc}")
                err.print(f"[red]error[/red]: {esc(name)}: {esc(exc)}")
    if args.json:
        data = [s.as_json() for s in summaries]
        _print_json(data[0] if not args.all else {"scans": data, "failures": failures})
    else:
        for sm in summaries:
            out.print(
                f"{esc(sm.subject)}: {sm.queries} queries, {sm.pages} pages, {sm.images} images, "
                f"{sm.matches} matches ({sm.new_sightings} new), {sm.errors} errors "
                f"in {sm.seconds:.1f}s"
            )
            _print_coverage(sm)
            if sm.alerts_queued:
                where = ", ".join(sorted(set(sm.alert_destinations))) or "still queued"
                out.print(f"  alert: {sm.alerts_sent}/{sm.alerts_queued} delivered ({esc(where)})")
            if sm.evidence_captured or sm.evidence_failed:
                retried = " (missing parts retried on re-check)" if sm.evidence_failed else ""
                out.print(
                    f"  evidence: {sm.evidence_parts()} in {sm.evidence_seconds:.1f}s{retried}"
                    " - see `cases`",
                    markup=False,
                )
            for sample in sm.error_samples[:5]:
                err.print(f"  [dim]{esc(sample)}[/dim]")
    codes = {EXIT_CODES.get(sm.status, 4) for sm in summaries}
    if 4 in codes:
        return 4
    if failures:
        return 1
    return 3 if 3 in codes else 0


def _print_coverage(sm: object) -> None:
    """``  searched 18 of 24; brave: rate limited (6)`` and, for a scan that could not look,
    that its "0 matches" means nothing."""
    status, line = getattr(sm, "status", ""), getattr(sm, "searched", "")
    if status == "completed":
        out.print(f"  {visible(line)}", markup=False, soft_wrap=True)
        return
    style = "red" if status == "failed" else "yellow"
    out.print(f"  [{style}]{status}[/{style}]: ", end="")
    out.print(visible(line), markup=False, soft_wrap=True)
    if status == "failed":
        out.print(
            "  No search was answered, so nothing was looked at: this is not 'nothing found'. "
            "`backends` checks each search backend and says what to fix.",
            markup=False,
            soft_wrap=True,
        )


def _scan_dry_run(args: argparse.Namespace, settings: Settings, db: Database) -> int:
    from monitor.searching import plan_scan

    if args.all:
        with db.session() as s:
            names = [subj.name for subj in store.all_subjects(s)]
    else:
        names = [args.name]
    plans = {name: plan_scan(settings, db, name) for name in names}
    if args.json:
        data = [
            {
                "subject": name,
                "dry_run": True,
                "max_requests_per_scan": settings.search.max_requests_per_scan,
                "requests": sum(b.requests for b in bps),
                "backends": [b.as_json() for b in bps],
            }
            for name, bps in plans.items()
        ]
        _print_json(data[0] if not args.all else {"scans": data})
        return 0
    for name, bps in plans.items():
        total = sum(b.requests for b in bps)
        out.print(
            f"Dry run for {visible(name)!r}: nothing was sent. A scan now would send {total} search "
            f"request(s) (cap {settings.search.max_requests_per_scan} per scan):",
            markup=False,
        )
        for b in bps:
            budget = (
                f"monthly budget {b.monthly_budget}, {b.budget_left} left"
                if b.monthly_budget is not None
                else "no monthly budget set"
            )
            out.print(
                visible(
                    f"  {b.backend}: {b.requests} request(s), {b.skipped} skipped; {budget}; "
                    f"at {b.rate:g}/s (burst {b.burst}) at least {b.min_seconds:g} s"
                ),
                markup=False,
                soft_wrap=True,
            )
            for x in b.searches:
                skip = f"  SKIPPED: {x['skip']}" if x["skip"] else ""
                out.print(
                    visible(f"    {x['kind']:<6} page {x['page']}  {x['query']}{skip}"),
                    markup=False,
                    soft_wrap=True,
                )
    return 0


def cmd_backends(args: argparse.Namespace, settings: Settings) -> int:
    from monitor.searching import check_backends, exit_code

    reports = check_backends(settings, _db(settings))
    if args.json:
        _print_json([r.as_json() for r in reports])
        return exit_code([r.ok for r in reports])
    for r in reports:
        state = "[green]ok[/green]" if r.ok else "[red]FAILING[/red]"
        out.print(f"{state} ", end="")
        out.print(visible(f"{r.backend} ({r.kind}): {r.message}"), markup=False, soft_wrap=True)
        extra = []
        if r.quota_remaining is not None:
            extra.append(f"quota left: {r.quota_remaining}")
        if r.monthly_budget is not None:
            extra.append(f"monthly budget {r.monthly_budget}, {r.budget_left} left")
        if extra:
            out.print("  " + "; ".join(extra), markup=False)
        if not r.ok and r.fix and r.fix not in r.message:  # not the same words twice
            out.print(visible(f"  fix: {r.fix}"), markup=False, soft_wrap=True)
    return exit_code([r.ok for r in reports])


@contextmanager
def _scan_progress(quiet: bool, name: str) -> Iterator[Callable[..., None] | None]:
    if quiet or not err.is_terminal:
        yield None
        return
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("images  {task.fields[matches]} matches  {task.fields[errors]} errors"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err, transient=True) as prog:
        task = prog.add_task(f"scanning {esc(name)}", total=None, matches=0, errors=0)

        def update(summary: object, known: int) -> None:
            prog.update(
                task,
                total=max(known, 1),
                completed=summary.images,  # type: ignore[attr-defined]
                matches=summary.matches,
                errors=summary.errors,
            )  # type: ignore[attr-defined]

        yield update


def cmd_matches(args: argparse.Namespace, settings: Settings) -> int:
    db = _db(settings)
    with db.session() as s:
        rows = store.list_matches(s, args.name)
    if args.json:
        _print_json([r.as_json() for r in rows])
        return 0
    if not rows:
        out.print("No matches found so far.")
        return 0
    t = Table("subject", "first seen", "status", "distance", "page", "image", title="Matches")
    for r in rows:
        t.add_row(
            cell(r.subject),
            _fmt_time(r.first_seen),
            cell(r.status),
            cell(f"{r.algorithm} {r.distance}"),
            cell(r.page_url),
            cell(r.image_url + _at_offset(r.frame_offset, r.reference_offset)),
            style=None,
        )
    out.print(t)
    return 0


def _at_offset(frame_offset: float | None, reference_offset: float | None) -> str:
    """`` at 12 s`` for a match in a video or animation (`` (your video at 40 s)`` when it
    matched a frame of an enrolled video); empty for a photo."""
    text = f" at {round(frame_offset, 1):g} s" if frame_offset is not None else ""
    if reference_offset is not None:
        text += f" (your video at {round(reference_offset, 1):g} s)"
    return text


def cmd_outbox(args: argparse.Namespace, settings: Settings) -> int:
    db = _db(settings)
    requeued: int | None = None
    if args.retry_failed:
        with db.session() as s:
            requeued = alerts.requeue_failed(s)
        if not args.send:
            if args.json:
                _print_json({"requeued": requeued})
            else:
                out.print(f"Queued {requeued} failed alert(s) again.")
            return 0
        if not args.json:
            out.print(f"Queued {requeued} failed alert(s) again.")
    if args.send:
        report = alerts.deliver_pending(db, alerts.notifier_from_settings(settings), settings)
        if args.json:
            _print_json(
                {
                    "sent": report.sent,
                    "retried": report.retried,
                    "failed": report.failed,
                    "where": report.where,
                    **({"requeued": requeued} if requeued is not None else {}),
                }
            )
        else:
            out.print(
                f"Delivered {report.sent}, will retry {report.retried}, failed {report.failed}."
            )
        return 0
    with db.session() as s:
        rows = alerts.outbox_status(s)
    if args.json:
        _print_json(rows)
        return 0
    if not rows:
        out.print("The outbox is empty.")
        return 0
    t = Table("id", "kind", "status", "attempts", "created", "sent", "last error")
    for r in rows:
        t.add_row(
            str(r["id"]),
            str(r.get("kind", "matches")),
            str(r["status"]),
            str(r["attempts"]),
            _fmt_time(r["created_at"]),
            _fmt_time(r["sent_at"]),
            cell(r["last_error"] or ""),
        )
    out.print(t)
    return 0


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from monitor.scheduler import monitoring

    db = _db(settings)
    # with [queue], due scans are enqueued for the workers instead of run here
    queued = cli_queue.queued_scan_fn(settings) if settings.queue.enabled else None
    with monitoring(settings, db, queued) as (scheduler, _pool):
        out.print(
            f"Scheduler running (checks every {settings.schedule.check_every}); Ctrl-C stops."
        )
        scheduler.start(block=True)
    return 0


# ---------------------------------------------------------------- cases (monitor/cases)


def _case_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    cl = sub.add_parser("cases", help="list cases: one per matched image per person")
    cl.add_argument("name", nargs="?", help="only this person")
    cl.add_argument("--json", action="store_true")
    c = sub.add_parser(
        "case",
        help="look at a case, decide, export evidence, draft or send a removal request",
        description="A case is one matched image of one person, with every place it was seen. "
        "Nothing is sent to a site without your confirmation.",
    )
    csub = c.add_subparsers(dest="case_command", metavar="ACTION", required=True)
    cs = csub.add_parser("show", help="everything about a case, and what to do next")
    cs.add_argument("id", type=int)
    cs.add_argument("--json", action="store_true")
    for action, text in (
        ("confirm", "it is you, published without consent"),
        ("dismiss", "it is not you: never alert about it again"),
    ):
        ca = csub.add_parser(action, help=text)
        ca.add_argument("id", type=int)
    ce = csub.add_parser("evidence", help="write the case's evidence bundle (a zip)")
    ce.add_argument("id", type=int)
    ce.add_argument("out", type=Path, metavar="OUT.zip")
    ce.add_argument(
        "--label", default="Subject", help="how the report names the person (default: Subject)"
    )
    ce.add_argument(
        "--include-image-copy",
        action="store_true",
        help="put the kept copy of the image itself into the zip (decrypted; you are asked first)",
    )
    ce.add_argument("--yes", action="store_true", help="with --include-image-copy: do not ask")
    cn = csub.add_parser(
        "notice",
        help="draft a removal request for the site (and send it after you confirm)",
        description="Drafts a removal request in the site's language with the exact addresses, "
        "a statement that you are shown without consent, a good-faith statement, a contact "
        "address and the date (EU DSA art. 16, US TAKE IT DOWN Act). With --send it is mailed "
        "over [mail] smtp_host after you type 'yes'.",
    )
    cn.add_argument("id", type=int)
    cn.add_argument("--lang", choices=("en", "nl"), help="default: the site's language")
    cn.add_argument("--reply-to", metavar="ADDR", help="contact address (default [cases] reply_to)")
    cn.add_argument("--signer", metavar="NAME", help="name signing it (default: the person's)")
    cn.add_argument("--send", metavar="TO", help="send it to this address after you confirm")
    cn.add_argument(
        "--yes",
        action="store_true",
        help="you confirm sending now, without a prompt (for scripts you run yourself)",
    )
    cn.add_argument(
        "--no-lookup", action="store_true", help="do not look up the site's contacts now"
    )
    cn.add_argument("--json", action="store_true")
    cr = csub.add_parser("recheck", help="fetch every place of a case again now")
    cr.add_argument("id", type=int)
    cr.add_argument("--json", action="store_true")


def cmd_cases(args: argparse.Namespace, settings: Settings) -> int:
    db = _db(settings)
    with db.session() as s:
        rows = cases.list_cases(s, args.name)
    if args.json:
        _print_json([r.as_json() for r in rows])
        return 0
    if not rows:
        out.print("No cases so far.")
        return 0
    t = Table("case", "subject", "status", "first seen", "places", "online", "evidence", "checked")
    for r in rows:
        t.add_row(
            str(r.id),
            cell(r.subject + (" (minor)" if r.minor else "")),
            cell(r.status),
            _fmt_time(r.first_seen),
            str(r.sightings),
            str(r.online),
            f"{r.evidence}/{r.sightings}",
            _fmt_time(r.last_checked_at),
        )
    out.print(t)
    out.print("Details and next steps: `case show ID`.")
    return 0


def cmd_case(args: argparse.Namespace, settings: Settings) -> int:
    import asyncio

    from monitor.cases import capture, contacts, notices

    db = _db(settings)
    action = args.case_command
    if action in cli_orgs.CASE_ACTIONS:  # assign, request (monitor/cli_orgs.py)
        return cli_orgs.cmd_case(args, settings)
    if action in ("confirm", "dismiss"):
        with db.session() as s:
            fn = cases.confirm_case if action == "confirm" else cases.dismiss_case
            case = fn(s, args.id)
            status, subject_id = case.status, case.subject_id
        out.print(f"Case {args.id}: {status}.")
        if action == "dismiss":  # "not me": a kept copy may show someone else
            from monitor.cases.image_copies import delete_image_copies

            if n := delete_image_copies(db, subject_id, settings, case_id=args.id):
                out.print(f"Deleted {n} kept image copy(ies) of this case.")
        if action == "confirm":
            out.print(f"Next: `case show {args.id}`, then `case notice {args.id}`.")
        return 0
    if action == "show":
        with db.session() as s:
            detail = cases.case_detail(s, settings, args.id)
            found_by = store.found_by(s, args.id)  # the search backends that led to it
        if args.json:
            _print_json({**detail.as_json(), "found_by": found_by})
        else:
            _print_case(detail)
            out.print(f"Found by: {', '.join(found_by) or '-'}", markup=False, soft_wrap=True)
        return 0
    if action == "evidence":
        if args.include_image_copy and not args.yes:
            if not sys.stdin.isatty():
                raise MonitorError(
                    "refusing to put the image in the bundle without confirmation: add --yes"
                )
            answer = input(
                "The bundle will hold the image itself, unencrypted. Anyone who gets the zip "
                "can see it. Type 'yes' to include it: "
            )
            if answer.strip().lower() != "yes":
                err.print("Not written.")
                return 1
        info = capture.export_bundle(
            settings,
            db,
            args.id,
            args.out,
            label=args.label,
            include_image_copy=args.include_image_copy,
        )
        out.print(f"Wrote {esc(info.path)} ({len(info.files)} files, SHA-256 {info.sha256}).")
        return 0
    if action == "recheck":
        report = asyncio.run(cases.recheck_case(settings, db, args.id))
        alerts.deliver_pending(db, alerts.notifier_from_settings(settings), settings)
        if args.json:
            _print_json(report.as_json())
        else:
            out.print(
                f"Case {args.id}: {esc(report.status)}; {report.online} online, "
                f"{report.gone} gone, {report.unreachable} unreachable"
                + (f", {report.reappeared} back online (alerted)" if report.reappeared else "")
            )
            for line in report.details:
                out.print(f"  {visible(line)}", markup=False, soft_wrap=True)
        return 0
    # notice
    if not args.no_lookup:
        with db.session() as s:
            minor = cases.is_minor_case(s, args.id)
        if not minor:
            found = asyncio.run(contacts.lookup_case_contacts(settings, db, args.id))
            if not args.json:
                _print_contacts([c.as_json() for c in found][:8])
    drafted = notices.draft_notice(
        settings, db, args.id, lang=args.lang, reply_to=args.reply_to, signer=args.signer
    )
    if args.json and not args.send:
        _print_json(drafted.as_json())
        return 0
    if not args.json:
        out.print(
            f"[bold]Removal request {drafted.id}[/bold] ({esc(drafted.lang)}), subject: "
            f"{esc(drafted.subject_line)}\n"
        )
        out.print(
            visible(drafted.body, keep_newlines=True), markup=False, highlight=False, soft_wrap=True
        )
    if not args.send:
        out.print(
            f"Nothing was sent. Send it with `case notice {args.id} --send ADDRESS`, or copy it "
            "into your own mail program."
        )
        return 0
    if not args.yes:
        if not sys.stdin.isatty():
            raise MonitorError(
                "refusing to send without your confirmation: run this on a terminal, or add "
                "--yes to confirm that you want it sent"
            )
        answer = input(f"Send this removal request to {visible(args.send)}? Type yes to send: ")
        if answer.strip().lower() != "yes":
            err.print("Not sent.")
            return 1
    sent = notices.send_notice(settings, db, drafted.id, args.send, confirmed=True)
    if args.json:
        _print_json(sent.as_json())
    else:
        out.print(
            f"Sent to {esc(sent.sent_to)} at {_fmt_time(sent.sent_at)}; recorded with the case."
        )
    return 0


def _print_contacts(rows: list[dict[str, object]]) -> None:
    if not rows:
        out.print("No contact found for the site; see the removal forms under next steps.")
        return
    t = Table("#", "contact", "where found", title="Who to contact (best first)")
    for i, c in enumerate(rows, 1):
        t.add_row(str(i), cell(c["value"]), cell(f"{c['source']}: {c['found_at']}"))
    out.print(t)


def _print_case(d: cases.CaseDetail) -> None:
    sm = d.summary
    out.print(
        f"[bold]Case {sm.id}[/bold]: {esc(sm.subject)}"
        f"{' (possibly under 18)' if sm.minor else ''}, {esc(sm.status)}; first seen "
        f"{_fmt_time(sm.first_seen)}, {d.algorithm} distance {d.distance}, "
        f"image SHA-256 {d.sha256[:16]}..."
    )
    out.print(f"How it matched: {d.how or 'not recorded (matched before this was kept)'}")
    t = Table("place", "first seen", "last seen", "state", "evidence", title="Where it was seen")
    for x in d.sightings:
        t.add_row(
            cell(f"{visible(x.page_url)}\n{visible(x.image_url)}", keep_newlines=True),
            _fmt_time(x.first_seen),
            _fmt_time(x.last_seen),
            cell(x.state + (f"\n{visible(x.detail)}" if x.detail else ""), keep_newlines=True),
            cell(
                x.evidence_status + (f"\n{visible(x.evidence_error)}" if x.evidence_error else ""),
                keep_newlines=True,
            ),
        )
    out.print(t)
    if d.contacts:
        _print_contacts(d.contacts)
    for n in d.notices:
        sent = f"sent to {visible(n['sent_to'])} at {n['sent_at']}" if n["sent_at"] else "not sent"
        out.print(
            f"Notice {n['id']} ({n['lang']}), drafted {n['created_at']}: {sent}",
            markup=False,
        )
    if d.events:
        out.print("[bold]History[/bold]")
        for e in d.events:
            out.print(
                f"  {e['at']}  {visible(e['kind'])}  {visible(e['detail'])}",
                markup=False,
                soft_wrap=True,
            )
    out.print("[bold]Next steps[/bold]")
    for step in d.next_steps:
        out.print(f"  {visible(step)}", markup=False, soft_wrap=True)


def cmd_demo(args: argparse.Namespace, settings: Settings | None) -> int:
    from monitor.demo.run import run_demo

    return run_demo(keep=Path(args.keep) if args.keep else None, as_json=args.json, console=out)


COMMANDS: dict[str, Callable[[argparse.Namespace, Settings], int]] = {
    "subject": cmd_subject,
    "enroll": cmd_enroll,
    "enrol": cmd_enroll,
    "scan": cmd_scan,
    "matches": cmd_matches,
    "outbox": cmd_outbox,
    "run": cmd_run,
    "worker": cli_queue.cmd_worker,
    "backends": cmd_backends,
    "cases": lambda args, settings: cmd_cases(args, settings),
    "case": lambda args, settings: cmd_case(args, settings),
    **cli_orgs.COMMANDS,
    "serve": lambda args, settings: cli_web.cmd_serve(args, settings),
}


def _print_error(message: str, show_traceback: bool) -> None:
    """``error: message`` on one line (no wrapping), after the traceback if asked for."""
    if show_traceback:
        err.print(visible(traceback.format_exc(), keep_newlines=True), markup=False)
    err.print(f"[red]error[/red]: {esc(message)}", soft_wrap=True)


class _SafeLogFormatter(logging.Formatter):
    """Log lines can hold reasons and addresses from the web: controls shown as escapes."""

    def __init__(self, inner: logging.Formatter | None) -> None:
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        return visible(self.inner.format(record), keep_newlines=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=[logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)],
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.verbose < 2:  # APScheduler logs every check at INFO
        logging.getLogger("apscheduler").setLevel(logging.WARNING)
        # httpx logs every request's URL at INFO: search URLs hold the person's name.
        for noisy in ("httpx", "httpcore"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    for handler in logging.getLogger().handlers:
        if not isinstance(handler.formatter, _SafeLogFormatter):
            handler.setFormatter(_SafeLogFormatter(handler.formatter))
    try:
        if args.command == "demo":
            return cmd_demo(args, None)
        settings = load_settings(args.config)
        with cli_orgs.command_scope(args, settings):  # who acts, whom they see (organisations)
            return COMMANDS[args.command](args, settings)
    except MonitorError as exc:  # a message written for people: the traceback only with -vv
        _print_error(str(exc), args.verbose >= 2)
        return 2
    except SQLAlchemyError as exc:
        # One line, never the statement's parameters (they can hold decrypted reference hashes;
        # the engine hides them from messages too). The traceback only with -v.
        line = describe_db_error(exc)
        if not isinstance(getattr(exc, "orig", None), MonitorError):
            line = f"database error: {line}"
        _print_error(line, args.verbose >= 1)
        return 2
    except KeyboardInterrupt:
        err.print("interrupted")
        return 130
    finally:  # no connection outlives the command (in-process callers: tests, the web app)
        while _opened:
            _opened.pop().dispose()


def entry() -> NoReturn:
    """The program (``run_monitor.py``, the ``exposure-monitor`` script): :func:`main`, then exit.

    Before exiting, every object left is moved out of the garbage collector's reach
    (``gc.freeze``): the interpreter's teardown would otherwise run full collections over the
    200,000-odd objects of the libraries loaded, measured at 0.3-0.5 s of every command after
    its work was done (its output written, its database closed; ``atexit`` handlers still run).
    Not in :func:`main`: in-process callers (tests, the web app) go on living."""
    code = main()
    gc.freeze()
    sys.exit(code)
