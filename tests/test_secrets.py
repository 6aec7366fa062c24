"""Secrets and stored data: reference hashes encrypted at rest with a key kept outside the
database, owner-only files, no photo bytes or pixels stored, no names or hashes in the logs."""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import shutil
import sqlite3
import stat
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from PIL import Image
from sqlalchemy import create_engine, select, text

from monitor import secrets, store
from monitor.cli import main as cli_main
from monitor.config import Settings
from monitor.db import MIGRATIONS_DIR, Database
from monitor.db.models import Reference, ReferenceHash
from monitor.demo.photos import photo_bytes
from monitor.enrol import enrol_images
from monitor.hashing import compute_hashes, decode_image
from monitor.pipeline import scan_subject
from monitor.secrets import ReferenceKeyLost
from tests.conftest import corpus_files
from tests.test_faults import ALIAS, NAME, World, add_enrolled_subject, open_db, world  # noqa: F401

PHOTOS = [photo_bytes(300 + i) for i in range(3)]


def secrets_of(photos: list[bytes]) -> list[str]:
    """The hex strings a copied database must not show: hashes and SHA-256 of each photo."""
    out = []
    for data in photos:
        h = compute_hashes(data)
        out.append(h.sha256)
        out += [v.value for v in h.hashes]
    return out


def raw_reference_values(db: Database) -> list[str]:
    with db.engine.connect() as conn:  # no type processing: what is stored
        values = conn.execute(text("SELECT value FROM reference_hashes")).scalars().all()
        shas = conn.execute(text('SELECT content_sha256 FROM "references"')).scalars().all()
    return [*values, *shas]


def enrol(db: Database, photos: list[bytes] = PHOTOS, name: str = NAME) -> int:
    with db.session() as s:
        try:
            subject = store.get_subject(s, name)
        except Exception:
            subject = store.add_subject(s, name, interval=Settings().schedule.default_interval)
        report = enrol_images(s, subject, [(f"p{i}", b) for i, b in enumerate(photos)])
        return report.enrolled


# ---------------------------------------------------------------- encryption at rest


def test_reference_hashes_are_encrypted_at_rest_and_read_back_for_matching(
    database_url: str, tmp_path: Path
) -> None:
    key_file = tmp_path / "keys" / "reference.key"
    db = Database(database_url, key_file=key_file)
    assert not key_file.exists()  # created on first use, not on opening
    assert enrol(db) == len(PHOTOS)
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600

    with db.session() as s:
        subject = store.get_subject(s, NAME)
        records = store.reference_records(s, subject.id)
    expected = {(h.algorithm, h.value) for p in PHOTOS for h in compute_hashes(p).hashes}
    assert expected <= {(r.algorithm, r.value) for r in records}  # read back for matching

    stored = raw_reference_values(db)
    assert stored and all(v.startswith(secrets.PREFIX) for v in stored)
    joined = "\n".join(stored)
    for secret in [*secrets_of(PHOTOS), *(r.value for r in records)]:
        assert secret not in joined
    assert enrol(db) == 0  # the same photos again: recognised through the encrypted SHA-256
    db.dispose()


def test_a_copied_database_without_its_key_reveals_nothing_and_says_what_to_do(
    tmp_path: Path,
) -> None:
    db = Database(f"sqlite:///{tmp_path / 'data' / 'monitor.db'}")
    enrol(db)
    db.dispose()
    assert (tmp_path / "data.key").is_file()  # beside the data folder, not in it
    assert not any(p.suffix == ".key" for p in (tmp_path / "data").iterdir())

    copy = tmp_path / "elsewhere" / "copy.db"
    copy.parent.mkdir()
    shutil.copy(tmp_path / "data" / "monitor.db", copy)
    stolen = Database(f"sqlite:///{copy}")
    with stolen.session() as s, pytest.raises(ReferenceKeyLost) as lost:
        store.reference_records(s, store.get_subject(s, NAME).id)
    message = str(lost.value)
    assert "enrolled again" in message and "forget-references" in message
    assert str(tmp_path / "elsewhere.key") in message
    assert not (tmp_path / "elsewhere.key").exists()  # no new key replaces a lost one
    with pytest.raises(ReferenceKeyLost):  # nor can new references be added with none
        enrol(stolen, [photo_bytes(399)])
    stolen.dispose()


def test_a_lost_key_is_explained_and_references_can_be_enrolled_again(
    world: World,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    world.gate.set()
    settings = world.settings(tmp_path)
    config = world.config_file(tmp_path)
    db = open_db(settings)
    add_enrolled_subject(db, world.references)
    assert scan_subject(settings, db, NAME).new_matches == 4
    db.dispose()

    settings.key_path.unlink()  # the key is lost
    assert cli_main(["--config", str(config), "scan", NAME]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "key file" in err and "enrolled again" in err and "is missing" in err

    assert secrets.main(["forget-references", "--config", str(config)]) == 0
    assert "Forgot 4" in capsys.readouterr().out
    assert settings.key_path.is_file()  # a new key, for the new enrolment
    db = open_db(settings)
    with db.session() as s:
        assert s.scalars(select(Reference)).all() == []
        assert len(store.list_matches(s, NAME)) == 4  # what was found is kept
        enrol_images(s, store.get_subject(s, NAME), [("again", world.references[0])])
    with db.session() as s:
        assert len(s.scalars(select(Reference)).all()) == 1
        assert store.reference_records(s, store.get_subject(s, NAME).id)
    db.dispose()


def test_a_different_key_is_reported_not_used(tmp_path: Path) -> None:
    key_file = tmp_path / "k.key"
    db = Database(f"sqlite:///{tmp_path / 'd' / 'm.db'}", key_file=key_file)
    enrol(db)
    db.dispose()
    key_file.write_text(base64.urlsafe_b64encode(os.urandom(32)).decode())
    db = Database(f"sqlite:///{tmp_path / 'd' / 'm.db'}", key_file=key_file)
    with db.session() as s, pytest.raises(ReferenceKeyLost, match="different key"):
        store.reference_records(s, store.get_subject(s, NAME).id)
    db.dispose()


def test_the_key_can_come_from_the_environment_instead_of_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(secrets.KEY_ENV, base64.urlsafe_b64encode(os.urandom(32)).decode())
    key_file = tmp_path / "unused.key"
    db = Database(f"sqlite:///{tmp_path / 'd' / 'm.db'}", key_file=key_file)
    enrol(db)
    assert not key_file.exists()
    monkeypatch.setenv(secrets.KEY_ENV, base64.urlsafe_b64encode(os.urandom(32)).decode())
    db2 = Database(f"sqlite:///{tmp_path / 'd' / 'm.db'}", key_file=key_file)
    with db2.session() as s, pytest.raises(ReferenceKeyLost, match="MONITOR_REFERENCE_KEY"):
        store.reference_records(s, store.get_subject(s, NAME).id)
    db.dispose()
    db2.dispose()


def test_migration_0003_encrypts_references_stored_in_plain_text(
    database_url: str, tmp_path: Path
) -> None:
    engine = create_engine(database_url)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as conn:  # a database as the previous release left it
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0002")
        conn.execute(
            text(
                "INSERT INTO subjects (id, name, interval_seconds, created_at) "
                "VALUES (1, :n, 86400, CURRENT_TIMESTAMP)"
            ),
            {"n": NAME},
        )
        conn.execute(
            text(
                'INSERT INTO "references" (id, subject_id, origin, content_sha256, created_at) '
                "VALUES (1, 1, 'photo', :sha, CURRENT_TIMESTAMP)"
            ),
            {"sha": "ab" * 32},
        )
        conn.execute(
            text(
                "INSERT INTO reference_hashes (reference_id, algorithm, value, quality) "
                "VALUES (1, 'pdq', :pdq, 90), (1, 'phash', :ph, NULL)"
            ),
            {"pdq": "cd" * 32, "ph": "ef" * 8},
        )
    engine.dispose()

    key_file = tmp_path / "m.key"
    db = Database(database_url, key_file=key_file)
    assert key_file.is_file()
    stored = raw_reference_values(db)
    assert len(stored) == 3 and all(v.startswith(secrets.PREFIX) for v in stored)
    with db.session() as s:
        records = store.reference_records(s, 1)
        sha = s.scalar(select(Reference.content_sha256))
        assert len(s.scalars(select(ReferenceHash)).all()) == 2
    assert {(r.algorithm, r.value) for r in records} == {("pdq", "cd" * 32), ("phash", "ef" * 8)}
    assert sha == "ab" * 32
    db.dispose()


# ---------------------------------------------------------------- files and logs


def _modes(root: Path) -> dict[str, int]:
    return {
        str(p.relative_to(root)): stat.S_IMODE(p.stat().st_mode) for p in [root, *root.rglob("*")]
    }


@pytest.mark.sqlite_default  # checks the SQLite file's mode too
def test_files_the_tool_creates_are_owner_only(
    world: World,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    world.gate.set()
    config = world.config_file(tmp_path)
    photo = tmp_path / "me.jpg"
    photo.write_bytes(world.references[0])
    for argv in (
        ["subject", "add", NAME, "--alias", ALIAS],
        ["enroll", NAME, str(photo)],
        ["scan", NAME],  # delivers its alert into the outbox folder
        ["outbox"],
    ):
        assert cli_main(["--config", str(config), *argv]) == 0, capsys.readouterr()
    data = tmp_path / "data"
    modes = _modes(data)
    assert "monitor.db" in modes and any(k.startswith("outbox/new/") for k in modes)
    for name, mode in modes.items():
        wanted = 0o700 if (data / name).is_dir() else 0o600
        assert mode == wanted, f"{name} is {oct(mode)}"
    assert stat.S_IMODE((tmp_path / "data.key").stat().st_mode) == 0o600


def test_scan_logs_at_info_carry_no_name_alias_or_hash(
    world: World,  # noqa: F811
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    world.gate.set()
    slug = NAME.lower().replace(" ", "-")
    # A page that is gone (HTTP 404), with the name in its address, and a failing search.
    world.fake.add_result(NAME, "general", {"url": world.web.url(f"/{slug}/gone.html")})
    # (an image search: the web search for the name is the one leading to the pages)
    world.fake.fail_next(500, body=f"<h1>search for {NAME} failed</h1>", category="images")
    settings = world.settings(tmp_path)
    db = open_db(settings)
    add_enrolled_subject(db, world.references)
    db.dispose()
    caplog.set_level(logging.DEBUG)
    try:
        code = cli_main(["-v", "--config", str(world.config_file(tmp_path)), "scan", NAME])
    finally:
        for name in ("httpx", "httpcore", "apscheduler"):  # set by the CLI; leave no trace
            logging.getLogger(name).setLevel(logging.NOTSET)
    assert code == 3, capsys.readouterr()  # partial: one search failed
    assert "4 matches" in capsys.readouterr().out

    forbidden = [NAME, ALIAS, slug, *NAME.split(), *secrets_of(world.references)]
    formatter = logging.Formatter("%(name)s %(message)s")
    shown = [formatter.format(r) for r in caplog.records if r.levelno >= logging.INFO]
    assert any("search error" in line for line in shown)  # failures are logged, discreetly
    assert any("page error" in line for line in shown)
    for line in shown:
        for secret in forbidden:
            assert secret not in line, f"{secret!r} logged at INFO or above: {line}"
    debug = [formatter.format(r) for r in caplog.records if r.levelno < logging.INFO]
    assert any(NAME in line for line in debug)  # the detail is there at DEBUG (-vv)


def _needles(data: bytes, count: int = 5, size: int = 64) -> list[bytes]:
    """``count`` runs of ``size`` bytes spread over ``data``, each varied enough (at least 24
    distinct byte values) that finding it anywhere else by chance is impossible."""
    found: list[bytes] = []
    for k in range(1, count + 1):
        at = len(data) * k // (count + 1)
        while at + size <= len(data):
            run = data[at : at + size]
            if len(set(run)) >= 24:
                found.append(run)
                break
            at += size
    return found


@pytest.mark.sqlite_default  # reads the SQLite file byte by byte
def test_enrolment_stores_no_photo_bytes_pixels_or_plain_hashes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    photos = corpus_files("reference", 5)
    config = tmp_path / "monitor.toml"
    config.write_text(f'data_dir = "{tmp_path / "data"}"\n')
    assert cli_main(["--config", str(config), "subject", "add", NAME]) == 0
    assert cli_main(["--config", str(config), "enroll", NAME, *map(str, photos)]) == 0
    assert f"Enrolled {len(photos)}" in capsys.readouterr().out

    needles: list[bytes] = []
    plain: list[str] = []
    for path in photos:
        data = path.read_bytes()
        with Image.open(path) as im:
            full = im.convert("RGB").tobytes()
        working = decode_image(data).convert("RGB").tobytes()
        for source in (data, full, working):
            runs = _needles(source)
            assert len(runs) >= 3, f"{path.name}: too few varied runs to look for"
            needles += runs
        plain += secrets_of([data])
        plain.append(hashlib.sha256(data).hexdigest())
    db = Database(f"sqlite:///{tmp_path / 'data' / 'monitor.db'}", key_file=tmp_path / "data.key")
    with db.session() as s:
        records = store.reference_records(s, store.get_subject(s, NAME).id)
    db.dispose()
    plain += [r.value for r in records]  # everything enrolment derived from the photos
    files = [p for p in (tmp_path / "data").rglob("*") if p.is_file()]
    assert any(p.name == "monitor.db" for p in files)
    for path in files:
        content = path.read_bytes()
        for needle in needles:
            assert needle not in content, f"photo bytes or pixels found in {path}"
        for value in plain:
            assert value.encode() not in content, f"a plain reference hash found in {path}"
    with sqlite3.connect(tmp_path / "data" / "monitor.db") as conn:
        assert conn.execute("SELECT count(*) FROM reference_hashes").fetchone()[0] >= len(photos)
