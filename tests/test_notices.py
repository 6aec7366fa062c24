"""Removal requests: drafted in the site's language with what DSA art. 16 and the TAKE IT DOWN
Act ask for; sent over SMTP only after a person confirms, and recorded."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from monitor import cases
from monitor.cases.contacts import lookup_case_contacts
from monitor.cases.notices import NotConfirmed, draft_notice, send_notice
from monitor.cli import main
from monitor.errors import MonitorError
from monitor.testing.smtp import LoopbackSMTP
from tests.test_cases import NAME, World, make_world

RELAY = "relay-7f3a@helpdesk.example"
NOW = datetime(2026, 3, 4, 5, 6, tzinfo=UTC)


@pytest.fixture
def world(tmp_path: Path):
    w = make_world(tmp_path, capture_evidence=False, reply_to=RELAY)
    yield w
    w.db.dispose()
    w.web.stop()


def _confirmed_case(world: World, lang: str = "en") -> tuple[int, str]:
    page = world.publish("/post/1.html", lang=lang)
    world.scan()
    case_id = world.case_id()
    with world.db.session() as s:
        cases.confirm_case(s, case_id)
    return case_id, page


def test_an_english_notice_holds_what_the_law_asks(world: World) -> None:
    case_id, page = _confirmed_case(world)
    notice = draft_notice(world.settings, world.db, case_id, now=NOW)
    assert notice.lang == "en"
    assert "without consent" in notice.subject_line and "127.0.0.1" in notice.subject_line
    body = notice.body
    assert page in body and world.web.url("/img/1.jpg") in body  # the exact addresses
    assert "without my consent" in body
    assert "good-faith belief" in body and "accurate and complete" in body
    assert f"Contact: {RELAY}" in body
    assert "Date: 2026-03-04 05:06 UTC" in body
    assert f"Signature: {NAME}" in body
    assert "Article 16" in body and "TAKE IT DOWN" in body
    assert "{{" not in body and "{#" not in body
    with world.db.session() as s:
        detail = cases.case_detail(s, world.settings, case_id)
    assert detail.summary.status == "notice_drafted" and detail.notices[0]["sent_at"] is None


def test_a_dutch_site_gets_a_dutch_notice_and_english_stays_available(world: World) -> None:
    case_id, page = _confirmed_case(world, lang="nl")
    asyncio.run(lookup_case_contacts(world.settings, world.db, case_id))  # learns the language
    notice = draft_notice(world.settings, world.db, case_id, signer="J. E.", now=NOW)
    assert notice.lang == "nl"
    body = notice.body
    assert page in body and world.web.url("/img/1.jpg") in body
    assert "zonder mijn toestemming" in body
    assert "te goeder trouw" in body and "juist en volledig" in body
    assert "artikel 16" in body and "139h" in body
    assert f"Contact: {RELAY}" in body and "Datum: 2026-03-04 05:06 UTC" in body
    assert "Handtekening: J. E." in body and NAME not in body
    english = draft_notice(world.settings, world.db, case_id, lang="en", now=NOW)
    assert english.lang == "en" and "good-faith" in english.body


def test_a_new_case_is_confirmed_before_a_notice_and_templates_can_be_overridden(
    world: World, tmp_path: Path
) -> None:
    world.publish("/post/1.html")
    world.scan()
    case_id = world.case_id()
    with pytest.raises(cases.CaseStateError, match="confirm"):
        draft_notice(world.settings, world.db, case_id)
    with world.db.session() as s:
        cases.confirm_case(s, case_id)
    own = tmp_path / "mine"
    own.mkdir()
    (own / "notice_en.txt.j2").write_text(
        "Subject: Please take this down\n\n{% for u in urls %}{{ u.page_url }}\n{% endfor %}"
        "Reach me at {{ reply_to }}. {{ date }}\n"
    )
    settings = world.settings.model_copy(
        update={"cases": world.settings.cases.model_copy(update={"templates_dir": str(own)})}
    )
    notice = draft_notice(settings, world.db, case_id, reply_to="other@relay.example", now=NOW)
    assert notice.subject_line == "Please take this down"
    assert (
        notice.body
        == f"{world.web.url('/post/1.html')}\nReach me at other@relay.example. 2026-03-04\n"
    )


def test_nothing_is_sent_without_confirmation(world: World) -> None:
    case_id, _ = _confirmed_case(world)
    notice = draft_notice(world.settings, world.db, case_id)
    with pytest.raises(NotConfirmed):
        send_notice(world.settings, world.db, notice.id, "abuse@site.example", confirmed=False)
    with pytest.raises(MonitorError, match="not an email address"):
        send_notice(world.settings, world.db, notice.id, "not an address", confirmed=True)


# ---------------------------------------------------------------- command line


def _config(world: World, smtp: LoopbackSMTP) -> Path:
    cfg = world.tmp / "monitor.toml"
    cfg.write_text(
        f'data_dir = "{world.settings.data_dir}"\n'
        "[fetch]\nallow_private_networks = true\n"
        f'[mail]\nsmtp_host = "127.0.0.1"\nsmtp_port = {smtp.port}\nstarttls = false\n'
        'sender = "Monitor <monitor@helpdesk.example>"\n'
        f'[cases]\ncapture_evidence = false\nreply_to = "{RELAY}"\n'
        'rdap_domain_url = ""\nrdap_ip_url = ""\n'
    )
    return cfg


def _cli(capsys, cfg: Path, *argv: str) -> tuple[int, str, str]:
    code = main(["--config", str(cfg), *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_send_refuses_without_confirmation_then_sends_and_records(
    world: World, capsys, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    case_id, page = _confirmed_case(world)
    world.web.add("/", '<a href="mailto:abuse@site.example">Report abuse</a>')
    with LoopbackSMTP(tmp_path / "maildir") as smtp:
        cfg = _config(world, smtp)
        cid = str(case_id)

        # Drafting only: the contacts and the text are shown, nothing is sent.
        code, out, _ = _cli(capsys, cfg, "case", "notice", cid)
        assert code == 0 and "abuse@site.example" in out and "Nothing was sent" in out

        # No terminal to confirm on and no --yes: refused.
        monkeypatch.setattr("sys.stdin.isatty", lambda: False)
        code, _, err = _cli(capsys, cfg, "case", "notice", cid, "--send", "abuse@site.example")
        assert code == 2 and "confirmation" in err and "--yes" in err
        # On a terminal, anything but "yes" sends nothing.
        monkeypatch.setattr("sys.stdin.isatty", lambda: True)
        monkeypatch.setattr("builtins.input", lambda prompt: "y")
        code, _, err = _cli(capsys, cfg, "case", "notice", cid, "--send", "abuse@site.example")
        assert code == 1 and "Not sent" in err
        assert smtp.messages == []

        prompts: list[str] = []
        monkeypatch.setattr("builtins.input", lambda prompt: prompts.append(prompt) or "yes")
        code, out, err = _cli(capsys, cfg, "case", "notice", cid, "--send", "abuse@site.example")
        assert code == 0, err
        assert "abuse@site.example" in prompts[0]
        (msg,) = smtp.messages
        assert msg["To"] == "abuse@site.example" and msg["Reply-To"] == RELAY
        assert page in msg.get_content() and not msg.is_multipart()

        # --yes is the person's explicit confirmation in a script.
        monkeypatch.setattr("sys.stdin.isatty", lambda: False)
        code, out, _ = _cli(
            capsys,
            cfg,
            "case",
            "notice",
            cid,
            "--lang",
            "nl",
            "--send",
            "x@host.example",
            "--yes",
            "--json",
            "--no-lookup",
        )
        assert code == 0 and json.loads(out)["sent_to"] == "x@host.example"
        assert (
            len(smtp.messages) == 2 and "zonder mijn toestemming" in smtp.messages[1].get_content()
        )

    code, out, _ = _cli(capsys, cfg, "case", "show", cid, "--json")
    shown = json.loads(out)
    assert shown["status"] == "notice_sent"
    assert [n["sent_to"] for n in shown["notices"] if n["sent_at"]] == [
        "abuse@site.example",
        "x@host.example",
    ]
    assert shown["contacts"][0]["value"] == "abuse@site.example"
    sent = [e for e in shown["events"] if e["kind"] == "notice_sent"]
    assert len(sent) == 2 and "abuse@site.example" in sent[0]["detail"]
