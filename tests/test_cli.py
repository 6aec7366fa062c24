"""The command line as a person or a script uses it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from monitor.cli import main
from monitor.demo.photos import photo_bytes
from monitor.demo.web import build_web
from monitor.testing.web import LoopbackWeb
from tests.conftest import run_cli as run


@pytest.fixture
def config(tmp_path: Path) -> Path:
    cfg = tmp_path / "monitor.toml"
    cfg.write_text(f'data_dir = "{tmp_path / "data"}"\n')
    return cfg


def test_help_explains_the_commands(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for command in ("demo", "subject", "enroll", "scan", "matches", "run"):
        assert command in text
    assert "never stored" in text


def test_subject_lifecycle_and_enrolment(capsys, config: Path, tmp_path: Path) -> None:
    c = str(config)
    code, out, _ = run(
        capsys,
        "--config",
        c,
        "subject",
        "add",
        "Jane Doe",
        "--alias",
        "J. Doe",
        "--email",
        "jane@example.org",
        "--every",
        "12h",
    )
    assert code == 0 and "Added 'Jane Doe'" in out
    code, _, err = run(capsys, "--config", c, "subject", "add", "Jane Doe")
    assert code == 2 and "already exists" in err

    photos = tmp_path / "photos"
    photos.mkdir()
    for seed in range(3):
        (photos / f"p{seed}.jpg").write_bytes(photo_bytes(seed, (400, 300)))
    Image.new("RGB", (10, 10)).save(photos / "tiny.png")
    (photos / "notes.txt").write_text("not a photo")
    code, out, err = run(capsys, "--config", c, "enroll", "Jane Doe", str(photos), "--json")
    report = json.loads(out)
    assert code == 0 and report["enrolled"] == 4 and len(report["errors"]) == 1
    assert "notes.txt" in report["errors"][0]

    code, out, _ = run(capsys, "--config", c, "subject", "list", "--json")
    (subject,) = json.loads(out)
    assert subject["name"] == "Jane Doe" and subject["aliases"] == ["J. Doe"]
    assert subject["interval_seconds"] == 12 * 3600 and subject["references"] == 4

    code, out, _ = run(capsys, "--config", c, "matches", "--json")
    assert code == 0 and json.loads(out) == []

    code, _, err = run(capsys, "--config", c, "subject", "remove", "Jane Doe")
    assert code == 2 and "--yes" in err  # no terminal to confirm on
    code, out, _ = run(capsys, "--config", c, "subject", "remove", "Jane Doe", "--yes")
    assert code == 0
    code, out, _ = run(capsys, "--config", c, "subject", "list", "--json")
    assert json.loads(out) == []


def test_clear_errors(capsys, config: Path) -> None:
    c = str(config)
    code, _, err = run(capsys, "--config", "/nonexistent/monitor.toml", "subject", "list")
    assert code == 2 and "config file not found" in err
    code, _, err = run(capsys, "--config", c, "scan", "Nobody")
    assert code == 2 and "no subject named 'Nobody'" in err
    run(capsys, "--config", c, "subject", "add", "Jane Doe")
    code, _, err = run(capsys, "--config", c, "scan", "Jane Doe")
    assert code == 2 and "enroll" in err
    code, _, err = run(capsys, "--config", c, "enroll", "Jane Doe", "/nonexistent/photo.jpg")
    assert code == 1 and "/nonexistent/photo.jpg" in err


def test_scan_and_matches_json(capsys, tmp_path: Path) -> None:
    refs = [photo_bytes(seed, (640, 480)) for seed in (1, 2)]
    others = [photo_bytes(seed, (640, 480)) for seed in range(100, 106)]
    with LoopbackWeb() as web:
        demo = build_web(web, subject_names=["Jane Doe"], references=refs, distractors=others)
        cfg = tmp_path / "monitor.toml"
        cfg.write_text(
            f'data_dir = "{tmp_path / "data"}"\n'
            f'[[search.backends]]\nkind = "searxng"\nurl = "{demo.searxng_url}"\n'
            "[fetch]\nallow_private_networks = true\n"
        )
        c = str(cfg)
        run(capsys, "--config", c, "subject", "add", "Jane Doe")
        photos = tmp_path / "refs"
        photos.mkdir()
        for i, data in enumerate(refs):
            (photos / f"{i}.jpg").write_bytes(data)
        run(capsys, "--config", c, "enroll", "Jane Doe", str(photos))
        code, out, _ = run(capsys, "--config", c, "scan", "Jane Doe", "--json")
        assert code == 0
        summary = json.loads(out)
        assert summary["status"] == "completed" and summary["matches"] >= len(refs)
        assert summary["alerts_queued"] == 1
        code, out, _ = run(capsys, "--config", c, "matches", "Jane Doe", "--json")
    rows = json.loads(out)
    assert {p.image_url for p in demo.planted} <= {r["image_url"] for r in rows}
    for row in rows:
        assert row["first_seen"].endswith("Z") and row["status"] == "new"
        assert {"subject", "page_url", "image_url", "algorithm", "distance"} <= row.keys()
    # No SMTP server configured: the alert went to the local outbox folder.
    code, out, _ = run(capsys, "--config", c, "outbox", "--json")
    (alert,) = json.loads(out)
    assert alert["status"] == "sent"
    assert list((tmp_path / "data" / "outbox").rglob("*")), "no alert file in the outbox folder"
