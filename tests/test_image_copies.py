"""Encrypted image copies: opt-in per person, off by default, never for a minor, left out of
evidence bundles unless asked, erased with the person."""

from __future__ import annotations

import asyncio
import json
import stat
import zipfile
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from monitor import store
from monitor.cases import capture, image_copies
from monitor.cases.core import evidence_files
from monitor.cli import main
from monitor.config import Settings
from monitor.db import Database
from monitor.db.models import Match, Sighting, SightingState, Subject
from monitor.demo.photos import photo_bytes
from monitor.enrol import enrol_paths
from monitor.pipeline import scan_subject
from monitor.secrets import KeyStore
from monitor.testing.searxng import FakeSearxng
from monitor.testing.web import LoopbackWeb

NAME = "Jane Example"
PAGE = '<html lang="en"><body><img src="/img/1.jpg"><img src="/img/other.jpg"></body></html>'


@dataclass
class World:
    web: LoopbackWeb
    settings: Settings
    db: Database
    tmp: Path
    photo: bytes

    def scan(self) -> None:
        scan_subject(self.settings, self.db, NAME, deliver=False)

    def case_and_sighting(self) -> tuple[int, int]:
        with self.db.session() as s:
            return s.execute(
                select(Match.id, Sighting.id).join(
                    Sighting,
                    (Sighting.subject_id == Match.subject_id)
                    & (Sighting.image_id == Match.image_id),
                )
            ).one()  # type: ignore[return-value]

    def files(self) -> list[dict]:
        with self.db.session() as s:
            return [f for st in s.scalars(select(SightingState)) for f in evidence_files(st)]

    def copies(self) -> list[dict]:
        return [f for f in self.files() if f["kind"] == image_copies.KIND]

    def cli(self, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
        cfg = self.tmp / "monitor.toml"
        cfg.write_text(
            f'data_dir = "{self.settings.data_dir}"\n[fetch]\nallow_private_networks = true\n'
            '[cases]\nscreenshots = false\nrdap_domain_url = ""\nrdap_ip_url = ""\n'
        )
        code = main(["--config", str(cfg), *argv])
        got = capsys.readouterr()
        return code, " ".join(got.out.split()), " ".join(got.err.split())  # unwrapped


def make_world(tmp_path: Path, *, keep: bool) -> World:
    web = LoopbackWeb().start()
    search = FakeSearxng()
    searxng_url = search.install(web)
    photo = photo_bytes(7, (640, 480))
    web.add("/img/1.jpg", photo, "image/jpeg")
    web.add("/img/other.jpg", photo_bytes(99, (640, 480)), "image/jpeg")
    url = web.add("/post/1.html", PAGE)
    search.add_result(NAME, "general", {"url": url, "title": "album"})
    settings = Settings(
        data_dir=tmp_path / "data",
        search={"backends": [{"kind": "searxng", "url": searxng_url}]},
        fetch={"allow_private_networks": True, "timeout": 10},
        cases={
            "capture_evidence": True,
            "screenshots": False,
            "rdap_domain_url": "",
            "rdap_ip_url": "",
        },
    )
    db = Database(settings.database_url, key_file=settings.key_path)
    ref = tmp_path / "me.jpg"
    ref.write_bytes(photo)
    with db.session() as s:
        subject = store.add_subject(s, NAME, interval=timedelta(days=1))
        subject.keep_image_copies = keep
        assert enrol_paths(s, subject, [ref]).enrolled == 1
    ref.unlink()
    return World(web, settings, db, tmp_path, photo)


@pytest.fixture
def world(request: pytest.FixtureRequest, tmp_path: Path):
    w = make_world(tmp_path, keep=getattr(request, "param", False))
    yield w
    w.db.dispose()
    w.web.stop()


opted_in = pytest.mark.parametrize("world", [True], indirect=True)


def _runs(data: bytes) -> list[bytes]:
    """Aligned 32-byte blocks of ``data``: any 64-byte run of ``data`` contains one of them.
    Blocks of a few distinct byte values (padding) are left out: they are not the image."""
    blocks = (data[i : i + 32] for i in range(0, len(data) - 31, 32))
    return [b for b in blocks if len(set(b)) >= 12]


def _holding_image_bytes(folder: Path, image: bytes) -> list[Path]:
    runs = _runs(image)
    found = []
    for path in folder.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            if any(r in data for r in runs):
                found.append(path)
    return found


def test_by_default_no_copy_is_kept_and_no_image_bytes_are_on_disk(world: World) -> None:
    world.scan()
    kinds = [f["kind"] for f in world.files()]
    assert kinds == ["warc"]  # evidence was captured, without a copy
    assert not list(world.settings.data_dir.rglob("*.enc"))
    assert _holding_image_bytes(world.settings.data_dir, world.photo) == []


@opted_in
def test_an_opted_in_copy_is_encrypted_bound_to_its_case_and_owner_only(world: World) -> None:
    world.scan()
    case_id, sighting_id = world.case_and_sighting()
    (entry,) = world.copies()
    path = Path(entry["path"])
    assert path.parent == world.settings.data_dir / "evidence" / f"case-{case_id}"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    blob = path.read_bytes()
    assert not any(r in blob for r in _runs(world.photo))  # not the image, nor a 64-byte run
    assert _holding_image_bytes(world.settings.data_dir, world.photo) == []
    assert not list(path.parent.glob(".*.part"))  # no temporary file left behind

    assert image_copies.read_copy(world.db.keystore, entry, case_id, sighting_id) == world.photo
    aad = image_copies.associated_data(case_id, sighting_id, entry["image_sha256"])
    assert image_copies.decrypt_copy(world.db.keystore, blob, aad) == world.photo
    other_key = KeyStore(world.tmp / "other.key")
    other_key.key()  # another, existing key
    with pytest.raises(image_copies.ImageCopyError, match="different key"):
        image_copies.decrypt_copy(other_key, blob, aad)
    moved = image_copies.associated_data(case_id + 1, sighting_id, entry["image_sha256"])
    with pytest.raises(image_copies.ImageCopyError, match="another case"):
        image_copies.decrypt_copy(world.db.keystore, blob, moved)
    missing = KeyStore(world.tmp / "missing.key", may_create=False)
    with pytest.raises(image_copies.ImageCopyError, match="restore the key file"):
        image_copies.decrypt_copy(missing, blob, aad)


@opted_in
def test_an_image_that_changed_since_it_matched_is_not_kept(world: World) -> None:
    world.settings.cases.capture_evidence = False
    world.scan()
    world.web.add("/img/1.jpg", photo_bytes(8, (640, 480)), "image/jpeg")
    report = asyncio.run(capture.capture_pending(world.settings, world.db, force=True))
    assert report.captured == 1 and report.failed == 0
    assert [f["kind"] for f in world.files()] == ["warc"]


def test_a_minor_cannot_opt_in(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = world.cli(capsys, "subject", "add", "Young", "--minor", "--keep-image-copies")
    assert code == 2 and "under 18" in err
    with world.db.session() as s:
        assert s.scalar(select(Subject).where(Subject.name == "Young")) is None
    assert world.cli(capsys, "subject", "add", "Young", "--minor")[0] == 0
    code, _, err = world.cli(capsys, "subject", "set", "Young", "--keep-image-copies")
    assert code == 2 and "under 18" in err
    with pytest.raises(image_copies.ImageCopyRefused):
        image_copies.set_keep_image_copies(world.db, "Young", True)
    with world.db.session() as s:
        assert s.scalar(select(Subject.keep_image_copies).where(Subject.name == "Young")) is False


def test_opting_in_later_keeps_copies_and_opting_out_deletes_them(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = world.cli(capsys, "subject", "set", NAME, "--keep-image-copies")
    assert code == 0 and "--include-image-copy" in out
    world.scan()
    (entry,) = world.copies()
    code, out, _ = world.cli(capsys, "subject", "set", NAME, "--no-keep-image-copies")
    assert code == 0 and "1 were deleted" in out
    assert not Path(entry["path"]).exists() and world.copies() == []
    assert [f["kind"] for f in world.files()] == ["warc"]  # the rest of the evidence stays


@opted_in
def test_marking_a_person_minor_switches_copies_off_and_deletes_them(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    world.scan()
    (entry,) = world.copies()
    code, out, _ = world.cli(capsys, "subject", "set", NAME, "--minor")
    assert code == 0 and "1 image copies were deleted" in out
    assert not Path(entry["path"]).exists() and world.copies() == []
    assert not list(world.settings.data_dir.rglob("*.enc"))
    with world.db.session() as s:
        subject = s.scalars(select(Subject).where(Subject.name == NAME)).one()
        assert subject.minor is True and subject.keep_image_copies is False
    case_id, _ = world.case_and_sighting()
    with pytest.raises(image_copies.ImageCopyRefused):
        capture.export_bundle(
            world.settings, world.db, case_id, world.tmp / "x.zip", include_image_copy=True
        )


@opted_in
def test_dismissing_a_case_deletes_its_copy_and_keeps_the_rest_of_its_evidence(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    world.scan()
    (entry,) = world.copies()
    case_id, _ = world.case_and_sighting()
    code, out, _ = world.cli(capsys, "case", "dismiss", str(case_id))
    assert code == 0 and "dismissed" in out and "Deleted 1 kept image copy" in out
    assert not Path(entry["path"]).exists() and world.copies() == []
    assert [f["kind"] for f in world.files()] == ["warc"]


@opted_in
def test_the_bundle_leaves_the_copy_out_unless_asked(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    world.scan()
    case_id, _ = world.case_and_sighting()
    plain = world.tmp / "plain.zip"
    code, _, err = world.cli(capsys, "case", "evidence", str(case_id), str(plain))
    assert code == 0, err
    with zipfile.ZipFile(plain) as z:
        names = z.namelist()
        manifest = json.loads(z.read("manifest.json"))
        contents = b"".join(z.read(n) for n in names)
    assert not any(n.startswith("images/") or n.endswith(".enc") for n in names)
    assert all(f["kind"] != "image_copy" for f in manifest["files"])
    assert not any(r in contents for r in _runs(world.photo))

    asked = world.tmp / "asked.zip"
    argv = ("case", "evidence", str(case_id), str(asked), "--include-image-copy")
    code, _, err = world.cli(capsys, *argv)  # no terminal to confirm on, no --yes
    assert code == 2 and "--yes" in err and not asked.exists()
    code, _, err = world.cli(capsys, *argv, "--yes")
    assert code == 0, err
    with zipfile.ZipFile(asked) as z:
        (image_name,) = [n for n in z.namelist() if n.startswith("images/")]
        assert z.read(image_name) == world.photo and image_name.endswith(".jpg")
        manifest = json.loads(z.read("manifest.json"))
        sums = z.read("SHA256SUMS").decode()
    (listed,) = [f for f in manifest["files"] if f["name"] == image_name]
    assert listed["kind"] == "image_copy" and listed["sha256"] in sums


def test_asking_for_a_copy_that_was_never_kept_writes_nothing(world: World) -> None:
    world.scan()
    case_id, _ = world.case_and_sighting()
    out = world.tmp / "none.zip"
    with pytest.raises(image_copies.ImageCopyError, match="no kept image copy"):
        capture.export_bundle(world.settings, world.db, case_id, out, include_image_copy=True)
    assert not out.exists()


@opted_in
def test_erasure_removes_the_copies(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    world.scan()
    (entry,) = world.copies()
    code, _, err = world.cli(capsys, "subject", "remove", NAME, "--yes")
    assert code == 0, err
    assert not Path(entry["path"]).exists()
    assert not list(world.settings.data_dir.rglob("*.enc"))


@pytest.fixture
def db(database_url: str, tmp_path: Path):
    database = Database(database_url, key_file=tmp_path / "k.key")
    yield database
    database.dispose()


def test_the_flag_is_stored_off_by_default_on_sqlite_and_postgresql(db: Database) -> None:
    with db.session() as s:
        store.add_subject(s, "A", interval=timedelta(days=1))
        store.add_subject(s, "B", interval=timedelta(days=1))
    image_copies.set_keep_image_copies(db, "B", True)
    with db.session() as s:
        rows = dict(s.execute(select(Subject.name, Subject.keep_image_copies)).all())
    assert rows == {"A": False, "B": True}
    assert image_copies.mark_minor(db, "B") == 0
    with db.session() as s:
        assert s.scalar(select(Subject.keep_image_copies).where(Subject.name == "B")) is False
