"""The ``demo`` command: the whole flow offline, on loopback servers, in a throwaway folder."""

from __future__ import annotations

import json
import mailbox
import shutil
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

from monitor import store
from monitor.config import Settings
from monitor.db import Database
from monitor.demo.web import build_web, demo_distractor_photos, demo_reference_photos
from monitor.enrol import enrol_images
from monitor.pipeline import scan_subject
from monitor.testing.smtp import LoopbackSMTP
from monitor.testing.web import LoopbackWeb
from monitor.textsafe import text

DEMO_NAME = "Alex Demo"
DEMO_ALIAS = "A. Demo"
DEMO_EMAIL = "alex@example.invalid"


def run_demo(
    *, keep: Path | None = None, as_json: bool = False, console: Console | None = None
) -> int:
    """Run the demo; print what happened. Returns the process exit code."""
    console = console or Console()
    folder = keep if keep is not None else Path(tempfile.mkdtemp(prefix="exposure-monitor-demo-"))
    try:
        return _run(folder, as_json, console)
    finally:
        if keep is None:
            shutil.rmtree(folder, ignore_errors=True)


def _run(folder: Path, as_json: bool, console: Console) -> int:
    say = (lambda *_a, **_k: None) if as_json else console.print
    say("[bold]Exposure Monitor demo[/bold]: everything below runs on this machine only.")
    references = demo_reference_photos(3)
    with LoopbackWeb() as web, LoopbackSMTP(folder / "maildir") as smtp:
        demo = build_web(
            web,
            subject_names=[DEMO_NAME, DEMO_ALIAS],
            references=references,
            distractors=demo_distractor_photos(12),
        )
        say(
            f"- a loopback web at {web.base_url}: {len(demo.pages)} pages, a SearXNG-compatible "
            f"search, {len(demo.planted)} edited copies of the demo photos among "
            f"{len(demo.distractors)} unrelated images"
        )
        say(
            f"- a loopback mail server at 127.0.0.1:{smtp.port}, delivering to {folder / 'maildir'}"
        )
        settings = Settings(
            data_dir=folder / "data",
            database={"url": ""},
            search={
                "backends": [{"kind": "searxng", "url": demo.searxng_url, "name": "demo-searxng"}]
            },
            fetch={"allow_private_networks": True, "timeout": 10},
            mail={
                "smtp_host": "127.0.0.1",
                "smtp_port": smtp.port,
                "starttls": False,
                "outbox_dir": str(folder / "outbox"),
            },
        )
        settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        db = Database(settings.database_url)
        try:
            with db.session() as s:
                subject = store.add_subject(
                    s,
                    DEMO_NAME,
                    aliases=[DEMO_ALIAS],
                    email=DEMO_EMAIL,
                    interval=settings.schedule.default_interval,
                )
                report = enrol_images(
                    s, subject, [(f"demo-photo-{i + 1}", b) for i, b in enumerate(references)]
                )
            say(
                f"- enrolled {report.enrolled} generated reference photos of {DEMO_NAME!r} "
                "(only their hashes are stored)"
            )
            say("- scanning...")
            summary = scan_subject(settings, db, DEMO_NAME)
            with db.session() as s:
                rows = store.list_matches(s, DEMO_NAME)
        finally:
            db.dispose()
        messages = list(mailbox.Maildir(folder / "maildir", create=False))

    found = {r.image_url for r in rows}
    planted = {p.image_url for p in demo.planted}
    false_hits = found & set(demo.distractors)
    result = {
        "scan": summary.as_json(),
        "matches": [r.as_json() for r in rows],
        "planted": len(planted),
        "found": len(planted & found),
        "false_matches": len(false_hits),
        "alerts_delivered": len(messages),
        "maildir": str(folder / "maildir"),
    }
    if as_json:
        print(json.dumps(result, indent=2, default=str))
    else:
        table = Table("page", "image", "hash", "distance", title="Matches")
        for r in rows:
            table.add_row(
                text(r.page_url.removeprefix(web.base_url)),
                text(r.image_url.removeprefix(web.base_url)),
                r.algorithm,
                str(r.distance),
            )
        console.print(table)
        console.print(
            f"{summary.queries} queries, {summary.pages} pages, {summary.images} images, "
            f"{summary.matches} matched images ({len(rows)} sightings), {summary.errors} errors, "
            f"in {summary.seconds:.1f}s. Planted copies found: {len(planted & found)}/{len(planted)}; "
            f"false matches: {len(false_hits)}."
        )
        if summary.evidence_captured or summary.evidence_failed:
            tried = summary.evidence_captured + summary.evidence_failed
            console.print(
                f"Evidence for {tried} sighting(s), under {folder / 'data' / 'evidence'}, "
                f"after the alert was sent: {summary.evidence_parts()}. A web archive holds the "
                "page with the image withheld (only its hashes); a screenshot has every image "
                "blurred and the address and time stamped on it.",
                markup=False,
            )
        if messages:
            msg = messages[0]
            console.print(
                f"\n{len(messages)} alert delivered to {folder / 'maildir'} "
                f"(subject: {msg['Subject']!r}). It reads:\n"
            )
            body = msg.get_payload(decode=True) or b""
            console.print(body.decode("utf-8", "replace"), markup=False)
        else:
            console.print("[red]No alert was delivered.[/red]")
    ok = planted <= found and not false_hits and len(messages) == 1
    return 0 if ok else 1
