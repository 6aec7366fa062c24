"""Web-controlled text on the terminal: Rich markup and control sequences are shown, never obeyed.

Addresses, titles, contact values and error reasons come from pages anyone can publish; names and
aliases may hold anything a person typed (or that reached the database before names were
checked). Every command that shows them must print them literally, with no markup interpreted
(``[/]`` used to crash `matches` and `case show` for good, ``[link=...]`` made links) and no
control character (ESC, CSI, OSC 8 hyperlinks, BEL, backspace, CR, bidi overrides) reaching the
terminal."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from rich.console import Console

from monitor import cli, store
from monitor.config import Settings
from monitor.db import Database
from monitor.db.models import CaseContact, CaseEvent, OutboxMessage, Reference, SightingState
from monitor.textsafe import markup, text, visible
from monitor.types import HashValue, ImageHashes, MatchResult
from tests.conftest import run_cli as _run

ESC = "\x1b"
OSC8 = f"{ESC}]8;;http://evil.test/{ESC}\\click me{ESC}]8;;{ESC}\\"
CSI = f"{ESC}[2J{ESC}[31m"
PAGE = f"http://x.test/[/]a[link=http://evil.test/]b[/link]{OSC8}{CSI}\x07\x08\r\u202egpj.exe"
IMAGE = "http://x.test/[bold]i[/bold]/[/].jpg:warning:"
NAME = "Jane [/] [link=http://evil.test/]Doe[/link]"
ODD_NAME = f"Eve{ESC}]0;pwned\x07 [/]"  # stored before names were checked
ALIAS = f"J. [/]{ESC}[5m\u2066"
DETAIL = f"gone: [/] {ESC}[1A{ESC}[2K overwritten\r"
CONTACT = f"abuse@x.test[/]{ESC}]8;;http://evil.test/{ESC}\\"


def _shown_literally(value: str) -> str:
    """What a safe terminal shows for ``value``: the text, with controls as escapes."""
    return visible(value)


@pytest.fixture
def hostile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A database holding hostile names, addresses, details and contacts; returns --config."""
    cfg = tmp_path / "monitor.toml"
    cfg.write_text(f'data_dir = "{tmp_path / "data"}"\n')
    settings = Settings(data_dir=tmp_path / "data")
    settings.data_dir.mkdir(mode=0o700)
    db = Database(settings.database_url, key_file=settings.key_path)
    hashes = ImageHashes("a" * 64, 640, 480, (HashValue("pdq", "0" * 64, 90),))
    with db.session() as s:
        for name in (NAME, ODD_NAME):
            subject = store.add_subject(
                s, name, aliases=[ALIAS], email="x@example.org", interval=timedelta(days=1)
            )
            ref = Reference(origin="import")
            subject.references.append(ref)
            s.flush()
            scan = store.start_scan(s, subject.id)
            store.record_image(
                s,
                subject,
                scan.id,
                page_url=PAGE,
                image_url=IMAGE,
                hashes=hashes,
                match=MatchResult(ref.id, "pdq", 3, 31),
            )
        s.flush()
        from sqlalchemy import select

        from monitor.db.models import Match, Sighting

        for match in s.scalars(select(Match)):
            sighting = s.scalars(
                select(Sighting).where(Sighting.subject_id == match.subject_id)
            ).one()
            s.add(SightingState(sighting_id=sighting.id, state="gone", detail=DETAIL))
            s.add(CaseEvent(match_id=match.id, kind="recheck", detail=DETAIL))
            s.add(
                CaseContact(
                    match_id=match.id,
                    sighting_id=sighting.id,
                    rank=0,
                    kind="email",
                    value=CONTACT,
                    source="page",
                    found_at=PAGE,
                )
            )
        # A mail server's refusal (its text is the server's) recorded for an alert.
        s.add(
            OutboxMessage(
                subject_id=match.subject_id,
                message_id="<hostile@test>",
                status="failed",
                last_error=f"550 {DETAIL} {CONTACT}",
            )
        )
    db.dispose()
    # A wide console, so that addresses are not folded and can be found whole in the output.
    monkeypatch.setattr(cli, "out", Console(highlight=False, width=2000))
    monkeypatch.setattr(cli, "err", Console(stderr=True, highlight=False, width=2000))
    return str(cfg)


def _assert_safe(output: str) -> None:
    assert ESC not in output, "an escape sequence reached the terminal"
    for ch in ("\x07", "\x08", "\r", "\u202e", "\u2066", "\x9b"):
        assert ch not in output, f"control character {ch!r} reached the terminal"
    assert "\x1b]8;" not in output


@pytest.mark.parametrize(
    "argv",
    [
        ["matches"],
        ["matches", NAME],
        ["cases"],
        ["cases", NAME],
        ["case", "show", "1"],
        ["case", "show", "2"],
        ["subject", "list"],
        ["outbox"],
    ],
    ids=[
        "matches",
        "matches-name",
        "cases",
        "cases-name",
        "case-1",
        "case-2",
        "subject-list",
        "outbox",
    ],
)
def test_hostile_text_is_shown_literally(hostile: str, capsys, argv: list[str]) -> None:
    for _ in range(2):  # the old failure was permanent: every later run crashed as well
        code, out, err = _run(capsys, "--config", hostile, *argv)
        assert code == 0, err
        _assert_safe(out + err)
    if argv[0] in ("matches", "case"):
        assert _shown_literally(PAGE) in out
        assert IMAGE in out  # markup and emoji codes are not interpreted
    if argv[0] == "case":
        assert _shown_literally(DETAIL) in out and _shown_literally(CONTACT) in out
    if argv in (["subject", "list"], ["cases"], ["matches"]):
        assert NAME in out and _shown_literally(ODD_NAME) in out
    if argv[0] == "subject":
        assert _shown_literally(ALIAS) in out
    if argv[0] == "outbox":
        assert _shown_literally(f"550 {DETAIL} {CONTACT}") in out

    # --json keeps the exact values for scripts (JSON escapes the control characters).
    code, out, err = _run(capsys, "--config", hostile, *argv, "--json")
    assert code == 0, err
    _assert_safe(out + err)
    values = set(_strings(json.loads(out)))
    assert NAME in values or ODD_NAME in values or argv[0] == "outbox"
    if argv[0] in ("matches", "case"):
        assert PAGE in values and IMAGE in values


def _strings(data: object):
    if isinstance(data, str):
        yield data
    elif isinstance(data, dict):
        for v in data.values():
            yield from _strings(v)
    elif isinstance(data, list):
        for v in data:
            yield from _strings(v)


def test_errors_that_repeat_a_hostile_name_are_escaped(hostile: str, capsys) -> None:
    nobody = f"No[/]body{ESC}[2J"
    code, out, err = _run(capsys, "--config", hostile, "matches", nobody)
    assert code == 2
    _assert_safe(out + err)
    assert "No[/]body" in err


def test_scan_error_samples_from_the_web_are_printed_literally(
    tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A page address from a search answer comes back in the scan's error samples."""
    from monitor.testing.searxng import FakeSearxng
    from monitor.testing.web import LoopbackWeb

    with LoopbackWeb() as web:
        search = FakeSearxng()
        url = search.install(web)
        search.fail_next(500, body=f"[/]oops[link=http://evil.test/]x[/link]{ESC}[2J\x07", times=4)
        cfg = tmp_path / "monitor.toml"
        cfg.write_text(
            f'data_dir = "{tmp_path / "data"}"\n'
            f'[[search.backends]]\nkind = "searxng"\nurl = "{url}"\n'
        )
        c = str(cfg)
        assert _run(capsys, "--config", c, "subject", "add", "Jane Doe")[0] == 0
        hashes = tmp_path / "h.txt"
        hashes.write_text("0" * 63 + "1\n")
        assert _run(capsys, "--config", c, "enroll", "Jane Doe", "--hashes", str(hashes))[0] == 0
        monkeypatch.setattr(cli, "out", Console(highlight=False, width=2000))
        monkeypatch.setattr(cli, "err", Console(stderr=True, highlight=False, width=2000))
        code, out, err = _run(capsys, "--config", c, "scan", "Jane Doe")
    assert code == 4, err  # no search was answered: a failed scan, not "nothing found"
    _assert_safe(out + err)
    assert "[/]oops[link=http://evil.test/]x[/link]" in err


def test_helpers() -> None:
    assert visible("a\x1b[31mb") == "a\\x1b[31mb"
    assert visible("x\u202ey") == "x\\u202ey"
    assert visible("l1\nl2\r", keep_newlines=True) == "l1\nl2\\x0d"
    assert visible("\x9b\x7f") == "\\x9b\\x7f"
    assert visible("Zoë Ñandú") == "Zoë Ñandú"
    assert markup("[/]") == "\\[/]"
    assert text("[bold]x[/bold]").plain == "[bold]x[/bold]"
