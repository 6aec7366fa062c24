"""Enrolling reference photos and hash files: only hashes reach the database."""

from __future__ import annotations

import builtins
import hashlib
import io
from pathlib import Path

import pytest
from PIL import Image
from sqlalchemy import select

from monitor.db import Database
from monitor.db.models import Reference, ReferenceHash, Subject
from monitor.enrol import (
    enrol_hash_file,
    enrol_images,
    enrol_paths,
    iter_image_paths,
    parse_hash_file,
)
from monitor.hashing import compute_hashes
from monitor.matching import ReferenceHashRecord, ReferenceIndex
from monitor.types import HashValue
from tests.test_hashing import encode, synthetic_photo

PDQ_HEX = "f" * 32 + "0" * 32
PHASH_HEX = "0123456789abcdef"


@pytest.fixture
def db():
    database = Database("sqlite://")  # in memory: migrated like a file
    yield database
    database.dispose()


def new_subject(db: Database, name: str = "Jane Doe") -> int:
    with db.session() as s:
        subject = Subject(name=name, interval_seconds=86400)
        s.add(subject)
        s.flush()
        return subject.id


def stored_rows(db: Database) -> list[tuple]:
    with db.session() as s:
        refs = [
            (r.id, r.subject_id, r.origin, r.content_sha256) for r in s.scalars(select(Reference))
        ]
        hashes = [
            (h.reference_id, h.algorithm, h.value, h.quality)
            for h in s.scalars(select(ReferenceHash))
        ]
    return refs + hashes


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    """A folder with three photos (one in a subfolder), a text file and hidden files."""
    folder = tmp_path / "holiday photos"
    (folder / "day two").mkdir(parents=True)
    (folder / "beach.jpg").write_bytes(encode(synthetic_photo(1), "JPEG", quality=90))
    (folder / "sunset.png").write_bytes(encode(synthetic_photo(2), "PNG"))
    (folder / "day two" / "hike.webp").write_bytes(encode(synthetic_photo(3), "WEBP"))
    (folder / "holiday.txt").write_text("packing list: towel")
    (folder / ".DS_Store").write_bytes(b"\x00\x01junk")
    (folder / ".secret").mkdir()
    (folder / ".secret" / "other.jpg").write_bytes(encode(synthetic_photo(4), "JPEG"))
    return folder


def test_iter_image_paths_walks_folders_sorted_and_skips_hidden(
    photos: Path, tmp_path: Path
) -> None:
    single = photos / "beach.jpg"
    found = list(iter_image_paths([single, photos, tmp_path / "missing.jpg"]))
    assert found == [
        single,
        photos / "beach.jpg",
        photos / "day two" / "hike.webp",
        photos / "holiday.txt",
        photos / "sunset.png",
    ]


def test_enrol_a_folder_reports_the_bad_file_and_enrols_the_rest(
    db: Database, photos: Path
) -> None:
    subject_id = new_subject(db)
    seen: list[Path] = []
    with db.session() as s:
        report = enrol_paths(s, s.get(Subject, subject_id), [photos], progress=seen.append)
    assert report.enrolled == 3 and report.duplicates == 0 and report.low_quality == []
    assert report.errors == [
        f"{photos / 'holiday.txt'}: not a decodable image: cannot identify image file"
    ]
    assert len(seen) == 4  # every file, the bad one too

    with db.session() as s:
        refs = s.scalars(select(Reference).where(Reference.subject_id == subject_id)).all()
        assert {r.origin for r in refs} == {"photo"}
        expected_sha = {
            hashlib.sha256(p.read_bytes()).hexdigest()
            for p in (photos / "beach.jpg", photos / "sunset.png", photos / "day two" / "hike.webp")
        }
        assert {r.content_sha256 for r in refs} == expected_sha
        for ref in refs:
            kinds = {h.algorithm: h for h in ref.hashes}
            assert {"pdq", "phash", "pdq.mirror", "pdq.rot90", "pdq.crop30c"} <= set(kinds)
            # only PDQ variants besides the photo's own hashes, each a 64-hex PDQ hash
            assert all(k.startswith("pdq.") for k in set(kinds) - {"pdq", "phash"})
            assert all(len(h.value) == 64 for k, h in kinds.items() if k != "phash")
            assert len(kinds["pdq"].value) == 64 and kinds["pdq"].quality > 50
            assert len(kinds["phash"].value) == 16 and kinds["phash"].quality is None


def test_no_file_name_or_path_is_stored(db: Database, photos: Path) -> None:
    subject_id = new_subject(db)
    with db.session() as s:
        enrol_paths(s, s.get(Subject, subject_id), [photos])
    text = repr(stored_rows(db)).lower()
    for word in ("beach", "sunset", "hike", "holiday", "day two", str(photos.parent).lower()):
        assert word not in text


def test_enrolment_writes_no_file(db: Database, photos: Path, monkeypatch) -> None:
    subject_id = new_subject(db)
    real_open = builtins.open
    writes: list[str] = []

    def guarded_open(file, mode="r", *args, **kwargs):
        if any(flag in mode for flag in "wax+"):
            writes.append(str(file))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", guarded_open)
    monkeypatch.setattr(io, "open", guarded_open)
    with db.session() as s:
        report = enrol_paths(s, s.get(Subject, subject_id), [photos])
    assert report.enrolled == 3
    assert writes == []


def test_the_same_photo_twice_is_a_duplicate(db: Database, photos: Path) -> None:
    subject_id = new_subject(db)
    beach = photos / "beach.jpg"
    with db.session() as s:
        first = enrol_paths(s, s.get(Subject, subject_id), [beach, beach])
    assert (first.enrolled, first.duplicates) == (1, 1)
    with db.session() as s:
        again = enrol_paths(s, s.get(Subject, subject_id), [photos])
    assert (again.enrolled, again.duplicates) == (2, 1)

    other = new_subject(db, "Someone Else")  # duplicates are per person
    with db.session() as s:
        theirs = enrol_paths(s, s.get(Subject, other), [beach])
    assert (theirs.enrolled, theirs.duplicates) == (1, 0)


def test_missing_path_is_an_error_and_the_rest_enrols(
    db: Database, photos: Path, tmp_path: Path
) -> None:
    subject_id = new_subject(db)
    missing = tmp_path / "nowhere" / "photo.jpg"
    empty = tmp_path / "empty"
    empty.mkdir()
    with db.session() as s:
        report = enrol_paths(s, s.get(Subject, subject_id), [missing, empty, photos / "beach.jpg"])
    assert report.enrolled == 1
    assert report.errors == [
        f"{missing}: no such file or folder",
        f"{empty}: folder holds no files",
    ]


def test_bland_photo_is_flagged_but_enrolled(db: Database, tmp_path: Path) -> None:
    subject_id = new_subject(db)
    wall = tmp_path / "wall.png"
    wall.write_bytes(encode(Image.new("RGB", (300, 200), (120, 120, 120)), "PNG"))
    with db.session() as s:
        report = enrol_paths(s, s.get(Subject, subject_id), [wall])
    assert report.enrolled == 1
    assert report.low_quality == [f"{wall}: PDQ quality 0"]


def test_enrol_images_from_memory_and_find_a_copy(db: Database) -> None:
    subject_id = new_subject(db)
    originals = [synthetic_photo(seed, (640, 480)) for seed in (20, 21)]
    labelled = [(f"photo {i}", encode(im, "JPEG", quality=92)) for i, im in enumerate(originals)]
    labelled.append(("broken", b"\xff\xd8\xff\xe0 not really"))
    with db.session() as s:
        report = enrol_images(s, s.get(Subject, subject_id), labelled)
    assert report.enrolled == 2 and len(report.errors) == 1
    assert report.errors[0].startswith("broken: not a decodable image")

    with db.session() as s:
        rows = s.execute(
            select(ReferenceHash.reference_id, ReferenceHash.algorithm, ReferenceHash.value)
            .join(Reference)
            .where(Reference.subject_id == subject_id)
        )
        records = [ReferenceHashRecord(ref_id, alg, value) for ref_id, alg, value in rows]
        index = ReferenceIndex(records, {"pdq": 31, "phash": 10})
    copy = originals[1].resize((320, 240))
    found = index.match(compute_hashes(encode(copy, "JPEG", quality=50)))
    assert found is not None
    with db.session() as s:
        assert s.get(Reference, found.reference_id).content_sha256 == (
            hashlib.sha256(labelled[1][1]).hexdigest()
        )


# ---------------------------------------------------------------- hash files


def test_parse_hash_file() -> None:
    text = "\n".join(
        [
            "\ufeff# hashes from my phone",
            PDQ_HEX.upper(),
            "",
            f"phash:{PHASH_HEX}   # the pHash of the same photo",
            "not-a-hash",
            f"pdq: {PDQ_HEX[::-1]},87,IMG_0001.jpg",
            "md5:d41d8cd98f00b204e9800998ecf8427e",
            f"phash:{PDQ_HEX}",
            PHASH_HEX,
        ]
    )
    hashes, errors = parse_hash_file(text)
    assert hashes == [
        HashValue("pdq", PDQ_HEX),
        HashValue("phash", PHASH_HEX),
        HashValue("pdq", PDQ_HEX[::-1], 87),
        HashValue("phash", PHASH_HEX),
    ]
    assert errors == [
        "line 5: not a PDQ (64 hex) or pHash (16 hex) hash",
        "line 7: unknown hash algorithm 'md5' (known: pdq, phash)",
        f"line 8: not a pHash hash (16 hex digits): '{PDQ_HEX}'",
    ]


def test_enrol_hash_file(db: Database, tmp_path: Path) -> None:
    subject_id = new_subject(db)
    hash_file = tmp_path / "hashes.txt"
    hash_file.write_text(f"{PDQ_HEX}\n{PHASH_HEX}\nzz-bad\n{PDQ_HEX}\n")
    with db.session() as s:
        report = enrol_hash_file(s, s.get(Subject, subject_id), hash_file)
    assert (report.enrolled, report.duplicates) == (2, 1)
    assert report.errors == [f"{hash_file}: line 3: not a PDQ (64 hex) or pHash (16 hex) hash"]

    with db.session() as s:
        refs = s.scalars(select(Reference).where(Reference.subject_id == subject_id)).all()
        assert [(r.origin, r.content_sha256) for r in refs] == [("import", None)] * 2
        assert [[(h.algorithm, h.value) for h in r.hashes] for r in refs] == [
            [("pdq", PDQ_HEX)],
            [("phash", PHASH_HEX)],
        ]
        again = enrol_hash_file(s, s.get(Subject, subject_id), hash_file)
    assert (again.enrolled, again.duplicates) == (0, 3)


def test_hash_file_problems_are_reported(db: Database, tmp_path: Path) -> None:
    subject_id = new_subject(db)
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing yet\n\n")
    binary = tmp_path / "photo.jpg"
    binary.write_bytes(encode(synthetic_photo(5), "JPEG"))
    with db.session() as s:
        subject = s.get(Subject, subject_id)
        assert enrol_hash_file(s, subject, tmp_path / "gone.txt").errors == [
            f"{tmp_path / 'gone.txt'}: no such file"
        ]
        assert enrol_hash_file(s, subject, empty).errors == [f"{empty}: no hashes found"]
        assert enrol_hash_file(s, subject, binary).errors == [
            f"{binary}: not a text file of hashes"
        ]
    assert stored_rows(db) == []


def test_hash_file_read_is_bounded(db: Database, tmp_path: Path) -> None:
    """The library reads at most the cap, whatever the CLI checked: /dev/zero or a file that grew
    after the check is refused instead of filling memory."""
    subject_id = new_subject(db)
    with db.session() as s:
        report = enrol_hash_file(s, s.get(Subject, subject_id), Path("/dev/zero"))
        assert report.enrolled == 0
        assert report.errors == ["/dev/zero: too large for a file of hashes (at most 10 MB)"]
    big = tmp_path / "big.txt"
    big.write_text((PDQ_HEX + "\n") * (10_000_000 // 65 + 1))
    with db.session() as s:
        report = enrol_hash_file(s, s.get(Subject, subject_id), big)
    assert report.enrolled == 0 and "too large" in report.errors[0]
