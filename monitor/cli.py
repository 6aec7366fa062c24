"""Command line: parses, calls the library, prints. ``python run_monitor.py --help``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from monitor import __version__, alerts, store
from monitor.config import Settings, load_settings, parse_duration
from monitor.db import Database
from monitor.errors import MonitorError
from monitor.paths import ensure_private_dir

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)

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


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="run_monitor.py",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"exposure-monitor {__version__}")
    p.add_argument("--config", metavar="FILE", help="TOML configuration file")
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
    sa.add_argument("--json", action="store_true")
    sl = ssub.add_parser("list", help="list monitored people")
    sl.add_argument("--json", action="store_true")
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

    sc = sub.add_parser("scan", help="search for a person (or everyone) now")
    who = sc.add_mutually_exclusive_group(required=True)
    who.add_argument("name", nargs="?")
    who.add_argument("--all", action="store_true", help="scan every monitored person")
    sc.add_argument("--json", action="store_true", help="print a machine-readable summary")

    m = sub.add_parser("matches", help="show what was found")
    m.add_argument("name", nargs="?", help="only this person")
    m.add_argument("--json", action="store_true")

    o = sub.add_parser("outbox", help="show alerts waiting to be delivered, or deliver them now")
    o.add_argument("--send", action="store_true", help="try to deliver pending alerts now")
    o.add_argument("--json", action="store_true")

    sub.add_parser("run", help="run the scheduler in the foreground (Ctrl-C stops)")
    return p


def _db(settings: Settings) -> Database:
    ensure_private_dir(settings.data_dir)
    return Database(settings.database_url)


def _print_json(data: object) -> None:
    print(json.dumps(data, indent=2, default=str))


def _fmt_time(value: object) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if value is not None else "-"  # type: ignore[attr-defined]


# ---------------------------------------------------------------- commands


def cmd_subject(args: argparse.Namespace, settings: Settings) -> int:
    db = _db(settings)
    if args.subject_command == "add":
        interval = parse_duration(args.every) if args.every else settings.schedule.default_interval
        if interval < timedelta(minutes=5):
            raise MonitorError("--every must be at least 5m")
        with db.session() as s:
            subject = store.add_subject(
                s, args.name, aliases=args.alias, email=args.email, interval=interval
            )
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
                f"Added {info['name']!r}. Next: enroll reference photos with "
                f"`enroll {info['name']!r} PHOTO_OR_FOLDER...`"
            )
        return 0
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
                i.name,
                ", ".join(i.aliases) or "-",
                i.email or "(local outbox)",
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
        answer = input(f"Erase everything stored about {args.name!r}? Type the name to confirm: ")
        if answer.strip() != args.name:
            err.print("Not erased.")
            return 1
    with db.session() as s:
        store.erase_subject(s, args.name)
    out.print(f"Erased {args.name!r}: references, scans, matches and alerts are gone.")
    return 0


def _fmt_interval(seconds: int) -> str:
    if seconds % 86400 == 0:
        return f"{seconds // 86400}d"
    if seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    return f"{seconds // 60}m"


def cmd_enroll(args: argparse.Namespace, settings: Settings) -> int:
    from monitor.enrol import EnrolReport, enrol_hash_file, enrol_paths

    if not args.paths and not args.hashes:
        raise MonitorError("give photos or folders to enroll, or --hashes FILE")
    db = _db(settings)
    reports: list[EnrolReport] = []
    with db.session() as s:
        subject = store.get_subject(s, args.name)
        if args.paths:
            with _spinner(args.json, "hashing photos") as tick:
                reports.append(enrol_paths(s, subject, args.paths, progress=lambda _p: tick()))
        if args.hashes:
            reports.append(enrol_hash_file(s, subject, args.hashes))
    enrolled = sum(r.enrolled for r in reports)
    duplicates = sum(r.duplicates for r in reports)
    errors = [e for r in reports for e in r.errors]
    low = [q for r in reports for q in r.low_quality]
    if args.json:
        _print_json(
            {"enrolled": enrolled, "duplicates": duplicates, "errors": errors, "low_quality": low}
        )
    else:
        for line in errors:
            err.print(f"[red]error[/red]: {line}")
        for line in low:
            err.print(f"[yellow]warning[/yellow]: {line}: a bland photo; it may miss or mis-match")
        out.print(
            f"Enrolled {enrolled} reference(s) for {args.name!r}"
            + (f", {duplicates} already enrolled" if duplicates else "")
            + (f", {len(errors)} error(s)" if errors else "")
            + ". Only hashes were stored."
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
    from monitor.pipeline import ScanSummary, hashing_pool, scan_subject

    db = _db(settings)
    if args.all:
        with db.session() as s:
            names = [subj.name for subj in store.all_subjects(s)]
        if not names:
            raise MonitorError("no one is monitored yet: add someone with `subject add NAME`")
    else:
        names = [args.name]
    summaries: list[ScanSummary] = []
    failures: list[str] = []
    with hashing_pool() as pool:
        for name in names:
            try:
                with _scan_progress(args.json, name) as progress:
                    summaries.append(scan_subject(settings, db, name, pool=pool, progress=progress))
            except MonitorError as exc:
                if not args.all:
                    raise
                failures.append(f"{name}: {exc}")
                err.print(f"[red]error[/red]: {name}: {exc}")
    if args.json:
        data = [s.as_json() for s in summaries]
        _print_json(data[0] if not args.all else {"scans": data, "failures": failures})
    else:
        for sm in summaries:
            out.print(
                f"{sm.subject}: {sm.queries} queries, {sm.pages} pages, {sm.images} images, "
                f"{sm.matches} matches ({sm.new_sightings} new), {sm.errors} errors "
                f"in {sm.seconds:.1f}s"
            )
            if sm.alerts_queued:
                where = ", ".join(sorted(set(sm.alert_destinations))) or "still queued"
                out.print(f"  alert: {sm.alerts_sent}/{sm.alerts_queued} delivered ({where})")
            for sample in sm.error_samples[:5]:
                err.print(f"  [dim]{sample}[/dim]")
    return 1 if failures else 0


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
        task = prog.add_task(f"scanning {name}", total=None, matches=0, errors=0)

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
            r.subject,
            _fmt_time(r.first_seen),
            r.status,
            f"{r.algorithm} {r.distance}",
            r.page_url,
            r.image_url,
            style=None,
        )
    out.print(t)
    return 0


def cmd_outbox(args: argparse.Namespace, settings: Settings) -> int:
    db = _db(settings)
    if args.send:
        report = alerts.deliver_pending(db, alerts.notifier_from_settings(settings), settings)
        if args.json:
            _print_json(
                {
                    "sent": report.sent,
                    "retried": report.retried,
                    "failed": report.failed,
                    "where": report.where,
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
    t = Table("id", "status", "attempts", "created", "sent", "last error")
    for r in rows:
        t.add_row(
            str(r["id"]),
            str(r["status"]),
            str(r["attempts"]),
            _fmt_time(r["created_at"]),
            _fmt_time(r["sent_at"]),
            str(r["last_error"] or ""),
        )
    out.print(t)
    return 0


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from monitor.pipeline import hashing_pool, run_scan
    from monitor.scheduler import Scheduler

    db = _db(settings)
    import asyncio

    with hashing_pool() as pool:

        def scan(subject_id: int) -> object:
            return asyncio.run(run_scan(settings, db, subject_id, pool=pool))

        def deliver() -> object:
            return alerts.deliver_pending(db, alerts.notifier_from_settings(settings), settings)

        scheduler = Scheduler(db, settings, scan, deliver_fn=deliver)
        out.print(
            f"Scheduler running (checks every {settings.schedule.check_every}); Ctrl-C stops."
        )
        scheduler.start(block=True)
    return 0


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
}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=[logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)],
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.verbose < 2:  # APScheduler logs every check at INFO
        logging.getLogger("apscheduler").setLevel(logging.WARNING)
    try:
        if args.command == "demo":
            return cmd_demo(args, None)
        settings = load_settings(args.config)
        return COMMANDS[args.command](args, settings)
    except MonitorError as exc:
        err.print(f"[red]error[/red]: {exc}")
        return 2
    except KeyboardInterrupt:
        err.print("interrupted")
        return 130
