"""Enrolment: a person's reference photos, or hashes made elsewhere, become stored hashes.

Photos are read into memory, hashed (:func:`monitor.hashing.compute_reference_hashes`: PDQ,
pHash, and PDQ hashes of variants -- mirrored, turned, cropped) and dropped. The
database receives only the hashes and the SHA-256 of each photo's bytes (so enrolling the same
photo twice is a no-op) -- never the pixels, a thumbnail, a file name or a path. Nothing is
written to disk.

A video (by its name ending, :data:`monitor.video.VIDEO_EXTENSIONS`, or its first bytes) is
one reference made of the hashes of its frames, sampled in memory about once a second
(:func:`monitor.video.hash_frames`), each stored with its time offset so a match can say
which part of the video was found. Frames too flat to say anything (PDQ quality below
:data:`LOW_QUALITY`: black fades, title cards) are left out.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from monitor.db.models import Reference, ReferenceHash, Subject
from monitor.errors import NotAnImageError
from monitor.hashing import algorithms, compute_reference_hashes, get_algorithm, normalise_hex
from monitor.inputs import MAX_HASH_FILE_BYTES
from monitor.types import HashValue, ImageHashes
from monitor.video import VIDEO_EXTENSIONS, FrameHashes, FrameLimits, hash_frames, is_video

__all__ = [
    "LOW_QUALITY",
    "MAX_PHOTO_BYTES",
    "VIDEO_FRAME_LIMITS",
    "EnrolReport",
    "enrol_hash_file",
    "enrol_images",
    "enrol_paths",
    "iter_image_paths",
    "parse_hash_file",
]

LOW_QUALITY = 50
"""PDQ quality below which a reference is flagged: a plain or blurry photo has little detail
for PDQ to hold on to, so its copies may be missed or unrelated images may come close."""

MAX_PHOTO_BYTES = 200_000_000
"""Files larger than this are not read (a disk image in a photo folder)."""

VIDEO_FRAME_LIMITS = FrameLimits(every_seconds=1.0, max_frames=1800, max_decode_seconds=900.0)
"""How an enrolled video is sampled: a frame a second, up to half an hour of it."""


@dataclass
class EnrolReport:
    """What an enrolment did. Messages are one line each and name the file they are about."""

    enrolled: int = 0
    duplicates: int = 0
    errors: list[str] = field(default_factory=list)
    low_quality: list[str] = field(default_factory=list)


# ---------------------------------------------------------------- photos


def _hidden(path: Path) -> bool:
    return path.name.startswith(".")


def _walk(folder: Path, seen: set[Path]) -> Iterator[Path]:
    real = folder.resolve()
    if real in seen:  # a symlink loop
        return
    seen.add(real)
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        return
    for entry in entries:
        if _hidden(entry):
            continue
        if entry.is_dir():
            yield from _walk(entry, seen)
        elif entry.is_file():
            yield entry


def iter_image_paths(paths: Iterable[Path]) -> Iterator[Path]:
    """The files to enrol: files as given; folders walked recursively in sorted order, skipping
    hidden files and folders. A path that does not exist yields nothing."""
    seen: set[Path] = set()
    for path in paths:
        path = Path(path)
        if path.is_dir():
            yield from _walk(path, seen)
        elif path.is_file():
            yield path


class _Enroller:
    """Adds photo references to one subject, skipping photos it already has."""

    def __init__(self, session: Session, subject: Subject) -> None:
        self.session, self.subject = session, subject
        if subject.id is None:
            session.flush()
        self.known = set(
            session.scalars(
                select(Reference.content_sha256).where(
                    Reference.subject_id == subject.id, Reference.content_sha256.is_not(None)
                )
            )
        )
        self.report = EnrolReport()

    def add(self, label: str, data: bytes) -> None:
        if Path(label).suffix.lower() in VIDEO_EXTENSIONS or is_video(data):
            self.add_video(label, data)
            return
        try:
            hashes = compute_reference_hashes(data)
        except NotAnImageError as exc:
            self.report.errors.append(f"{label}: {exc}")
            return
        if hashes.sha256 in self.known:
            self.report.duplicates += 1
            return
        self._store(hashes)
        self.known.add(hashes.sha256)
        self.report.enrolled += 1
        pdq = hashes.get("pdq")
        if pdq is not None and pdq.quality is not None and pdq.quality < LOW_QUALITY:
            self.report.low_quality.append(f"{label}: PDQ quality {pdq.quality}")

    def add_video(self, label: str, data: bytes) -> None:
        try:
            frames = hash_frames(data, VIDEO_FRAME_LIMITS)
        except NotAnImageError as exc:
            self.report.errors.append(f"{label}: {exc}")
            return
        sha256 = frames[0].hashes.sha256
        if sha256 in self.known:
            self.report.duplicates += 1
            return
        detailed = [f for f in frames if _quality(f) >= LOW_QUALITY]
        if not detailed:
            best = max(_quality(f) for f in frames)
            self.report.low_quality.append(f"{label}: every frame is flat (PDQ quality {best})")
            detailed = frames
        reference = Reference(subject=self.subject, origin="video", content_sha256=sha256)
        seen: set[tuple[str, str]] = set()
        for frame in detailed:  # in time order: a repeated hash keeps its first offset
            for h in frame.hashes.hashes:
                if (h.algorithm, h.value) not in seen:
                    seen.add((h.algorithm, h.value))
                    reference.hashes.append(
                        ReferenceHash(
                            algorithm=h.algorithm,
                            value=h.value,
                            quality=h.quality,
                            frame_offset=frame.offset,
                        )
                    )
        self.session.add(reference)
        self.known.add(sha256)
        self.report.enrolled += 1

    def _store(self, hashes: ImageHashes) -> None:
        reference = Reference(subject=self.subject, origin="photo", content_sha256=hashes.sha256)
        reference.hashes = [
            ReferenceHash(algorithm=h.algorithm, value=h.value, quality=h.quality)
            for h in hashes.hashes
        ]
        self.session.add(reference)


def _quality(frame: FrameHashes) -> int:
    pdq = frame.hashes.get("pdq")
    return pdq.quality if pdq is not None and pdq.quality is not None else 100


def enrol_images(
    session: Session,
    subject: Subject,
    images: Iterable[tuple[str, bytes]],
    *,
    progress: Callable[[str], None] | None = None,
) -> EnrolReport:
    """Enrol photos given as ``(label, bytes)``; the label only names them in the report."""
    enroller = _Enroller(session, subject)
    for label, data in images:
        enroller.add(label, data)
        if progress is not None:
            progress(label)
    session.flush()
    return enroller.report


def _read(path: Path) -> bytes:
    """The file's bytes; ``OSError`` with a readable ``strerror`` if it cannot be read."""
    size = path.stat().st_size
    if size > MAX_PHOTO_BYTES:
        raise OSError(0, f"too large to be a photo ({size / 1e6:.0f} MB)")
    return path.read_bytes()


def enrol_paths(
    session: Session,
    subject: Subject,
    paths: Sequence[Path],
    progress: Callable[[Path], None] | None = None,
) -> EnrolReport:
    """Enrol photos, videos and folders of them (see :func:`iter_image_paths`).

    A file that cannot be read or decoded adds one line to ``errors`` and the rest still
    enrols; so does a path that does not exist or a folder without files. ``progress`` is
    called with each file once it has been handled.
    """
    enroller = _Enroller(session, subject)
    report = enroller.report
    for given in paths:
        given = Path(given)
        if not given.exists():
            report.errors.append(f"{given}: no such file or folder")
            continue
        found = False
        for path in iter_image_paths([given]):
            found = True
            try:
                data = _read(path)
            except OSError as exc:
                report.errors.append(f"{path}: cannot read: {exc.strerror or exc}")
            else:
                enroller.add(str(path), data)
                del data
            if progress is not None:
                progress(path)
        if not found:
            what = "folder holds no files" if given.is_dir() else "not a regular file"
            report.errors.append(f"{given}: {what}")
    session.flush()
    return report


# ---------------------------------------------------------------- hash files

_FIELD_SPLIT = re.compile(r"[\s,;]+")
_HEX_DIGITS = re.compile(r"[0-9a-f]+")
_PREFIX = re.compile(r"^([A-Za-z][\w-]*)\s*:\s*(.*)$")


def _shapes() -> str:
    """``PDQ (64 hex) or pHash (16 hex)``: the bare hashes a hash file may hold."""
    return " or ".join(f"{alg.label} ({alg.bits // 4} hex)" for alg in algorithms())


def _parse_line(line: str) -> HashValue:
    """One hash line; ``ValueError`` with the reason (without the line number)."""
    prefix = _PREFIX.match(line)
    first, *rest = _FIELD_SPLIT.split(prefix.group(2) if prefix else line)
    if prefix:
        alg = get_algorithm(prefix.group(1).lower())  # ValueError names the known ones
        value = normalise_hex(alg.name, first)
    else:
        value = first.lower()
        fitting = [a for a in algorithms() if a.bits // 4 == len(value)]
        if len(fitting) > 1:
            names = " or ".join(a.name for a in fitting)
            raise ValueError(f"a {len(value)}-hex hash could be {names}: write NAME:HEX")
        if not fitting or not _HEX_DIGITS.fullmatch(value):
            raise ValueError(f"not a {_shapes()} hash")
        alg = fitting[0]
    quality = None
    if alg.name == "pdq" and rest and rest[0].isdigit() and int(rest[0]) <= 100:
        quality = int(rest[0])
    return HashValue(alg.name, value, quality)


def parse_hash_file(text: str) -> tuple[list[HashValue], list[str]]:
    """Read hashes made elsewhere: one hex hash per line.

    Blank lines and ``#`` comments are ignored. A hash may carry its algorithm
    (``pdq:<64 hex>``, ``phash:<16 hex>``); a bare one is taken by its length (64 hex digits:
    PDQ, 16: pHash). A PDQ hash may be followed by its quality (``<hex>,87``, as the PDQ
    reference tools print it); anything after that is ignored. Returns the hashes and one
    error per bad line (``"line 3: not a PDQ (64 hex) or pHash (16 hex) hash"``).
    """
    hashes: list[HashValue] = []
    errors: list[str] = []
    for number, raw in enumerate(text.lstrip("\ufeff").splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            hashes.append(_parse_line(line))
        except ValueError as exc:
            errors.append(f"line {number}: {exc}")
    return hashes, errors


def enrol_hash_file(session: Session, subject: Subject, path: Path) -> EnrolReport:
    """Enrol every hash of a hash file (see :func:`parse_hash_file`) as its own reference.

    Hashes the subject already has (same algorithm and value) are counted as duplicates.
    Errors name the file and the line.
    """
    path = Path(path)
    report = EnrolReport()
    try:
        with path.open("rb") as fh:  # bounded: /dev/zero or a growing file must not fill memory
            raw = fh.read(MAX_HASH_FILE_BYTES + 1)
        if len(raw) > MAX_HASH_FILE_BYTES:
            report.errors.append(
                f"{path}: too large for a file of hashes (at most "
                f"{MAX_HASH_FILE_BYTES // 1_000_000} MB)"
            )
            return report
        text = raw.decode("utf-8")
    except FileNotFoundError:
        report.errors.append(f"{path}: no such file")
        return report
    except UnicodeDecodeError:
        report.errors.append(f"{path}: not a text file of hashes")
        return report
    except OSError as exc:
        report.errors.append(f"{path}: cannot read: {exc.strerror or exc}")
        return report
    hashes, errors = parse_hash_file(text)
    report.errors.extend(f"{path}: {e}" for e in errors)
    if not hashes and not errors:
        report.errors.append(f"{path}: no hashes found")
    if subject.id is None:
        session.flush()
    known = {
        (algorithm, value)
        for algorithm, value in session.execute(
            select(ReferenceHash.algorithm, ReferenceHash.value)
            .join(Reference)
            .where(Reference.subject_id == subject.id)
        )
    }
    for hv in hashes:
        key = (hv.algorithm, hv.value)
        if key in known:
            report.duplicates += 1
            continue
        known.add(key)
        reference = Reference(subject=subject, origin="import", content_sha256=None)
        reference.hashes = [
            ReferenceHash(algorithm=hv.algorithm, value=hv.value, quality=hv.quality)
        ]
        session.add(reference)
        report.enrolled += 1
        if hv.quality is not None and hv.quality < LOW_QUALITY:
            report.low_quality.append(f"{path}: pdq:{hv.value}: PDQ quality {hv.quality}")
    session.flush()
    return report
