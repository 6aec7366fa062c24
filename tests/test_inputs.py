"""What a person types (names, addresses, intervals, files, database URLs) and what the database
says back: each mistake is one readable line and exit code 2, never a traceback, never a value
that breaks things later, and never a secret (reference hashes, a photo's SHA-256, a password)
in the output."""

from __future__ import annotations

import hashlib
import json
import os
import re
import resource
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest

from monitor.demo.photos import photo_bytes
from tests.conftest import run_cli as run

REPO = Path(__file__).resolve().parents[1]
HEX64 = re.compile(r"[0-9a-f]{64}")


@pytest.fixture
def config(tmp_path: Path) -> str:
    cfg = tmp_path / "monitor.toml"
    cfg.write_text(f'data_dir = "{tmp_path / "data"}"\n')
    return str(cfg)


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and "Traceback" not in err
    return lines[0]


# ---------------------------------------------------------------- keys and database errors


def _cli_subprocess(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "run_monitor.py"), *argv],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
    )


def test_a_wrong_key_is_one_line_without_hashes_or_traceback(
    capsys, config: str, tmp_path: Path
) -> None:
    photo = tmp_path / "me.jpg"
    photo.write_bytes(photo_bytes(3, (400, 300)))
    sha = hashlib.sha256(photo.read_bytes()).hexdigest()
    assert run(capsys, "--config", config, "subject", "add", "Jane Doe")[0] == 0
    key = tmp_path / "data.key"  # a damaged key file beside the data folder
    key.write_text("not a key\n")
    key.chmod(0o600)
    for verbose in ([], ["-v"]):
        done = _cli_subprocess(*verbose, "--config", config, "enroll", "Jane Doe", str(photo))
        output = done.stdout + done.stderr
        assert done.returncode == 2, output
        assert sha not in output and not HEX64.search(output), "a hash reached the output"
        if not verbose:
            line = _one_error_line(done.stderr)
            assert "does not hold a valid key" in line


@pytest.mark.sqlite_default
def test_a_database_error_is_one_line(capsys, config: str, tmp_path: Path) -> None:
    assert run(capsys, "--config", config, "subject", "add", "Jane Doe")[0] == 0
    db_file = tmp_path / "data" / "monitor.db"
    for suffix in ("-wal", "-shm"):
        Path(f"{db_file}{suffix}").unlink(missing_ok=True)
    db_file.write_bytes(b"this is not an SQLite database" * 200)
    code, out, err = run(capsys, "--config", config, "subject", "list")
    assert code == 2
    line = _one_error_line(err)
    assert "database" in line and "[SQL" not in line


# ---------------------------------------------------------------- --every


@pytest.mark.parametrize(
    ("every", "message"),
    [
        ("forever", "not a duration"),
        ("99999999999w", "too long"),
        ("9" * 400 + "d", "too long"),
        ("400d", "between 5m and 365d"),
        ("1m", "between 5m and 365d"),
    ],
)
def test_every_is_bounded(capsys, config: str, every: str, message: str) -> None:
    code, _, err = run(capsys, "--config", config, "subject", "add", "Jane", "--every", every)
    assert code == 2
    assert message in _one_error_line(err)
    assert run(capsys, "--config", config, "subject", "list", "--json")[1].strip() == "[]"


def test_a_configured_default_interval_is_bounded(capsys, tmp_path: Path) -> None:
    cfg = tmp_path / "monitor.toml"
    cfg.write_text(
        f'data_dir = "{tmp_path / "data"}"\n[schedule]\ndefault_interval = "99999999999w"\n'
    )
    code, _, err = run(capsys, "--config", str(cfg), "subject", "list")
    assert code == 2 and "default_interval" in _one_error_line(err)
    # The bounds themselves are accepted.
    cfg.write_text(f'data_dir = "{tmp_path / "data"}"\n')
    assert run(capsys, "--config", str(cfg), "subject", "add", "Jane", "--every", "365d")[0] == 0
    assert run(capsys, "--config", str(cfg), "subject", "add", "Joe", "--every", "5m")[0] == 0
    out = run(capsys, "--config", str(cfg), "subject", "list", "--json")[1]
    assert [s["interval_seconds"] for s in json.loads(out)] == [365 * 86400, 300]


# ---------------------------------------------------------------- e-mail addresses


@pytest.mark.parametrize(
    "email",
    [
        "me@example.org\r\nBcc: other@example.net",
        "me@example.org\n",
        "me@example.org, other@example.net",
        "me@example.org;other@example.net",
        "Jane <me@example.org>",
        "me@example.org other@example.net",
        "not-an-address",
        "@example.org",
        "me@",
        "me@exa mple.org",
        "me@-bad-.org",
        '"me"@example.org',
    ],
)
def test_an_email_must_be_exactly_one_plain_address(capsys, config: str, email: str) -> None:
    code, _, err = run(capsys, "--config", config, "subject", "add", "Jane", "--email", email)
    assert code == 2, err
    assert "--email" in _one_error_line(err)
    assert run(capsys, "--config", config, "subject", "list", "--json")[1].strip() == "[]"


def test_a_plain_address_is_accepted_and_a_header_injection_is_not(capsys, config: str) -> None:
    code, _, err = run(
        capsys,
        "--config",
        config,
        "subject",
        "add",
        "Jo",
        "--email",
        "jo@example.org\r\nBcc: x@y.z",
    )
    assert code == 2 and "line breaks" in _one_error_line(err)
    for name, email in (("Jane", "jane@example.org"), ("Joe", "j.doe+alerts@mail.example.co.uk")):
        assert run(capsys, "--config", config, "subject", "add", name, "--email", email)[0] == 0
    out = run(capsys, "--config", config, "subject", "list", "--json")[1]
    assert [s["email"] for s in json.loads(out)] == [
        "jane@example.org",
        "j.doe+alerts@mail.example.co.uk",
    ]


def test_a_sender_with_a_line_break_is_a_configuration_error(capsys, tmp_path: Path) -> None:
    cfg = tmp_path / "monitor.toml"
    cfg.write_text(
        f'data_dir = "{tmp_path / "data"}"\n'
        '[mail]\nsender = "Monitor <m@example.org>\\r\\nBcc: other@example.net"\n'
    )
    code, _, err = run(capsys, "--config", str(cfg), "subject", "list")
    assert code == 2 and "mail.sender" in _one_error_line(err)


# ---------------------------------------------------------------- names


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["Jane\x1b[2J"], "control"),
        (["Jane\nDoe"], "control"),
        (["Jane\u202eeoD"], "control"),
        (["J" * 201], "too long"),
        (["   "], "empty"),
        (["Jane", "--alias", "J.\x07"], "control"),
        (["Jane", "--alias", "x" * 201], "too long"),
    ],
)
def test_names_are_bounded_and_printable(
    capsys, config: str, argv: list[str], message: str
) -> None:
    code, _, err = run(capsys, "--config", config, "subject", "add", *argv)
    assert code == 2, err
    assert message in _one_error_line(err)
    assert run(capsys, "--config", config, "subject", "list", "--json")[1].strip() == "[]"


def test_names_are_stored_nfc(capsys, config: str) -> None:
    nfd = unicodedata.normalize("NFD", "Zoë Ångström")
    code, _, err = run(capsys, "--config", config, "subject", "add", nfd, "--alias", nfd + " Jr")
    assert code == 0, err
    (subject,) = json.loads(run(capsys, "--config", config, "subject", "list", "--json")[1])
    nfc = unicodedata.normalize("NFC", "Zoë Ångström")
    assert subject["name"] == nfc and subject["aliases"] == [nfc + " Jr"]
    # The NFC name finds the person.
    assert run(capsys, "--config", config, "matches", nfc, "--json")[0] == 0


# ---------------------------------------------------------------- hash files


def test_a_hash_file_that_is_a_device_is_refused_before_reading(config: str) -> None:
    """`enroll --hashes /dev/zero` read until the disk and memory were full. Run in a child
    process with a 2 GB memory limit, so the old behaviour fails instead of taking the machine."""
    assert _cli_subprocess("--config", config, "subject", "add", "Jane").returncode == 0

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))

    done = subprocess.run(
        [sys.executable, str(REPO / "run_monitor.py"), "--config", config]
        + ["enroll", "Jane", "--hashes", "/dev/zero"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        preexec_fn=limit,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert "not a file of hashes" in _one_error_line(done.stderr)


def test_a_hash_file_that_is_a_folder_or_too_large_is_refused(
    capsys, config: str, tmp_path: Path
) -> None:
    assert run(capsys, "--config", config, "subject", "add", "Jane")[0] == 0
    code, _, err = run(capsys, "--config", config, "enroll", "Jane", "--hashes", str(tmp_path))
    assert code == 2 and "is a folder" in _one_error_line(err)
    big = tmp_path / "big.txt"
    with open(big, "wb") as fh:
        fh.truncate(11_000_000)  # sparse: no disk used
    code, _, err = run(capsys, "--config", config, "enroll", "Jane", "--hashes", str(big))
    assert code == 2 and "too large" in _one_error_line(err)
    ok = tmp_path / "ok.txt"
    ok.write_text("0" * 63 + "1\n")
    code, out, err = run(capsys, "--config", config, "enroll", "Jane", "--hashes", str(ok))
    assert code == 0 and "Enrolled 1" in out, err


# ---------------------------------------------------------------- database URLs


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("foo://x/y", "unknown kind of database ('foo')"),
        ("mysql://u:s3cretpw@127.0.0.1/db", "driver for 'mysql' is not installed"),
        ("not a url", "not a database URL"),
        (
            "postgresql+psycopg://u:s3cretpw@127.0.0.1:1/db",
            "could not connect to PostgreSQL at 127.0.0.1:1: ",
        ),
    ],
)
def test_a_bad_database_url_is_one_line_without_the_password(
    capsys, config: str, monkeypatch: pytest.MonkeyPatch, url: str, message: str
) -> None:
    monkeypatch.setenv("MONITOR_DATABASE__URL", url)
    code, out, err = run(capsys, "--config", config, "subject", "list")
    assert code == 2
    line = _one_error_line(err)
    assert message in line and "s3cretpw" not in out + err


def test_an_sqlite_url_in_a_missing_folder_is_refused(
    capsys, config: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    missing = tmp_path / "typo" / "monitor.db"
    monkeypatch.setenv("MONITOR_DATABASE__URL", f"sqlite:///{missing}")
    code, _, err = run(capsys, "--config", config, "subject", "add", "Jane")
    assert code == 2 and "does not exist" in _one_error_line(err)
    assert not missing.parent.exists()
    # An existing folder is fine, and the default data folder is created as before.
    missing.parent.mkdir()
    assert run(capsys, "--config", config, "subject", "add", "Jane")[0] == 0
    assert missing.is_file()
    monkeypatch.delenv("MONITOR_DATABASE__URL")
    assert run(capsys, "--config", config, "subject", "list")[0] == 0
    assert (tmp_path / "data" / "monitor.db").is_file()
