"""Encrypted copies of found images: a per-person opt-in, off by default, never for a minor.

Some people want the image itself as evidence (a police officer or lawyer may ask for it). A
person may therefore opt in (``subject add NAME --keep-image-copies`` or
``subject set NAME --keep-image-copies``): each time evidence is captured for one of their
sightings, the image bytes the WARC capture fetched (held in memory there, never fetched twice)
are sealed with AES-256-GCM and written owner-only to the case's evidence folder as
``<time>-image-s<sighting>.enc``. They are never written in plain form, not even to a
temporary file.

* The key is derived (HKDF-SHA256) from the reference key of :mod:`monitor.secrets`: the same
  key file outside the data folder, the same backup, a separate key for this use.
* The associated data binds a copy to its case, sighting and the image's SHA-256: a copy moved
  to another case, or swapped, does not decrypt.
* A copy is kept only when the bytes fetched at capture are exactly the matched image (same
  SHA-256): an image that changed since it matched is not kept.
* A person marked as possibly under 18 cannot opt in, and marking an opted-in person as a minor
  switches copies off and deletes every copy (police advice: never keep images that may show a
  child). Opting out deletes the copies too. Erasure removes the evidence folders, copies in.
* Evidence bundles leave copies out unless asked (``case evidence ID OUT.zip
  --include-image-copy``): then the copy is decrypted in memory into the zip.

File layout: ``MAGIC`` (8 bytes) | key id (4) | nonce (12) | ciphertext + tag.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets as _random
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import select

from monitor.cases.core import evidence_files
from monitor.db import Database
from monitor.db.models import Match, Sighting, SightingState, Subject
from monitor.errors import MonitorError
from monitor.secrets import KeyStore, ReferenceKeyLost

__all__ = [
    "KIND",
    "MAGIC",
    "CopyOutcome",
    "ImageCopyError",
    "ImageCopyRefused",
    "associated_data",
    "check_may_keep",
    "copy_hook",
    "decrypt_copy",
    "delete_image_copies",
    "encrypt_copy",
    "mark_minor",
    "read_copy",
    "set_keep_image_copies",
]

log = logging.getLogger("monitor.cases.image_copies")

KIND = "image_copy"
"""The ``kind`` of a copy in a sighting's recorded evidence files."""

MAGIC = b"EMIMGC1\n"
_KEY_INFO = b"exposure-monitor image copies v1"
_ID_BYTES = 4
_NONCE_BYTES = 12
_GLOB = "*-image-s*.enc"  # the copies' file names (capture_file_name("image", ...))

MINOR_REFUSAL = (
    "a person marked as possibly under 18 cannot have copies of images kept: police advice is "
    "never to keep images that may show a child. Report the addresses to a child-abuse hotline "
    "instead (see `case show ID`)."
)


class ImageCopyError(MonitorError):
    """An image copy could not be written, found or decrypted."""


class ImageCopyRefused(ImageCopyError):
    """Keeping image copies was refused (the person may be a minor)."""


def check_may_keep(*, minor: bool, keep: bool) -> None:
    """Raise :class:`ImageCopyRefused` for ``keep`` together with ``minor``."""
    if keep and minor:
        raise ImageCopyRefused(MINOR_REFUSAL)


# ---------------------------------------------------------------- sealing


def _copy_key(keystore: KeyStore, *, create: bool) -> bytes:
    try:
        master = keystore.key(create=create)
    except ReferenceKeyLost as exc:
        raise ImageCopyError(
            f"the key that encrypts image copies (the reference key, {keystore.path}) is not "
            "available; restore the key file from a backup to read them"
        ) from exc
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_KEY_INFO).derive(master)


def _key_id(key: bytes) -> bytes:
    return hashlib.sha256(b"exposure-monitor image copy key id\0" + key).digest()[:_ID_BYTES]


def associated_data(case_id: int, sighting_id: int, image_sha256: str) -> bytes:
    """What a copy is bound to: its case, its sighting and the image's SHA-256."""
    return (
        f"exposure-monitor image copy\0case={case_id}\0sighting={sighting_id}\0"
        f"sha256={image_sha256.lower()}"
    ).encode()


def encrypt_copy(keystore: KeyStore, data: bytes, aad: bytes) -> bytes:
    """The sealed file's bytes (in memory)."""
    key = _copy_key(keystore, create=True)
    nonce = _random.token_bytes(_NONCE_BYTES)
    return MAGIC + _key_id(key) + nonce + AESGCM(key).encrypt(nonce, data, aad)


def decrypt_copy(keystore: KeyStore, blob: bytes, aad: bytes) -> bytes:
    """The image bytes of a sealed copy; :class:`ImageCopyError` when they cannot be read."""
    if not blob.startswith(MAGIC) or len(blob) < len(MAGIC) + _ID_BYTES + _NONCE_BYTES + 16:
        raise ImageCopyError("this is not an image copy written by this tool")
    key = _copy_key(keystore, create=False)
    body = blob[len(MAGIC) :]
    key_id, nonce, sealed = (
        body[:_ID_BYTES],
        body[_ID_BYTES : _ID_BYTES + _NONCE_BYTES],
        body[_ID_BYTES + _NONCE_BYTES :],
    )
    if key_id != _key_id(key):
        raise ImageCopyError(
            f"the image copy was encrypted with a different key than the one in {keystore.path}"
        )
    try:
        return AESGCM(key).decrypt(nonce, sealed, aad)
    except InvalidTag:
        raise ImageCopyError(
            "the image copy does not decrypt: it is damaged or belongs to another case"
        ) from None


def read_copy(keystore: KeyStore, entry: dict[str, Any], case_id: int, sighting_id: int) -> bytes:
    """Decrypt the copy a recorded evidence entry points to, checking its SHA-256."""
    path = Path(str(entry.get("path", "")))
    image_sha = str(entry.get("image_sha256", ""))
    try:
        blob = path.read_bytes()
    except OSError as exc:
        raise ImageCopyError(f"cannot read the image copy {path}: {exc.strerror or exc}") from exc
    if entry.get("sha256") and hashlib.sha256(blob).hexdigest() != entry["sha256"]:
        raise ImageCopyError(f"{path} has changed since it was written")
    data = decrypt_copy(keystore, blob, associated_data(case_id, sighting_id, image_sha))
    if hashlib.sha256(data).hexdigest() != image_sha:
        raise ImageCopyError(f"{path} does not hold the image it was recorded for")
    return data


# ---------------------------------------------------------------- writing (the capture hook)


@dataclass
class CopyOutcome:
    """What :func:`copy_hook` did: the recorded entry, or why nothing was kept."""

    entry: dict[str, Any] | None = None
    error: str | None = None
    note: str | None = None


def copy_hook(
    keystore: KeyStore,
    folder: Path,
    *,
    case_id: int,
    sighting_id: int,
    image_url: str,
    expected_sha256: str,
    now: datetime,
    outcome: CopyOutcome,
) -> Any:
    """An ``on_image_bytes`` hook for :func:`monitor.evidence.fetch_and_capture_warc` that seals
    the bytes into ``folder``. Never raises (the WARC must not be lost): see ``outcome``."""
    from monitor.evidence.store import capture_file_name, write_new_file

    def hook(data: bytes, withheld: Any) -> None:
        try:
            sha = hashlib.sha256(data).hexdigest()
            if sha != expected_sha256.lower():
                outcome.note = "image copy not kept: the image changed since it matched"
                return
            sealed = encrypt_copy(keystore, data, associated_data(case_id, sighting_id, sha))
            path = folder / capture_file_name("image", now, f"-s{sighting_id}.enc")
            write_new_file(path, lambda fh: fh.write(sealed))
            outcome.entry = {
                "kind": KIND,
                "path": str(path),
                "sha256": hashlib.sha256(sealed).hexdigest(),
                "image_sha256": sha,
                "length": len(data),
                "encryption": "AES-256-GCM",
                "url": image_url,
                "captured_at": now.isoformat().replace("+00:00", "Z"),
            }
        except MonitorError as exc:
            outcome.error = str(exc)
        except Exception as exc:  # an unexpected failure must not lose the WARC
            outcome.error = f"{type(exc).__name__}: {exc}"

    return hook


# ---------------------------------------------------------------- switching and deleting


def _subject(session: Any, name: str) -> Subject:
    from monitor import store

    return store.get_subject(session, name)


def delete_image_copies(
    db: Database,
    subject_id: int,
    settings: Any = None,
    *,
    case_id: int | None = None,
    kinds: tuple[str, ...] = (KIND,),
) -> int:
    """Delete every image copy of a person, or of one of their cases (files and their records).
    Returns how many files.

    With ``settings`` the case folders are also swept for copies whose record was lost (e.g. a
    crash between writing and recording)."""
    removed = 0
    with db.session() as s:
        cases_q = select(Match.id).where(Match.subject_id == subject_id)
        if case_id is not None:
            cases_q = cases_q.where(Match.id == case_id)
        case_ids = list(s.scalars(cases_q))
        rows_q = (
            select(SightingState)
            .join(Sighting, Sighting.id == SightingState.sighting_id)
            .where(Sighting.subject_id == subject_id)
        )
        if case_id is not None:
            rows_q = rows_q.join(
                Match,
                (Match.subject_id == Sighting.subject_id) & (Match.image_id == Sighting.image_id),
            ).where(Match.id == case_id)
        rows = s.scalars(rows_q)
        for st in rows:
            files = evidence_files(st)
            keep = [f for f in files if f.get("kind") not in kinds]
            if len(keep) == len(files):
                continue
            for f in files:
                if f.get("kind") in kinds and _unlink(Path(str(f.get("path", "")))):
                    removed += 1
            st.evidence_files = json.dumps(keep) if keep else None
    if settings is not None and KIND in kinds:
        from monitor.cases.capture import evidence_key

        root = Path(settings.data_dir) / "evidence"
        for case_id in case_ids:
            folder = root / evidence_key(case_id)
            if folder.is_dir():
                for path in [*folder.glob(_GLOB), *folder.glob(f".{_GLOB}.*.part")]:
                    removed += _unlink(path)
    return removed


def _unlink(path: Path) -> bool:
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True


def set_keep_image_copies(db: Database, name: str, keep: bool, settings: Any = None) -> int:
    """Switch a person's image copies on or off. Off deletes their copies (returns how many).

    Raises :class:`ImageCopyRefused` for a person marked as possibly under 18."""
    with db.session() as s:
        subject = _subject(s, name)
        check_may_keep(minor=subject.minor, keep=keep)
        subject.keep_image_copies = keep
        subject_id = subject.id
    return 0 if keep else delete_image_copies(db, subject_id, settings)


def mark_minor(db: Database, name: str, settings: Any = None) -> int:
    """Mark a person as possibly under 18: copies are switched off and every copy is deleted
    (returns how many), earlier screenshots are deleted, and no new capture is made for them."""
    with db.session() as s:
        subject = _subject(s, name)
        subject.minor = True
        subject.keep_image_copies = False
        subject_id = subject.id
    removed = delete_image_copies(db, subject_id, settings)
    if removed:
        log.info("deleted %d image copies of a person marked as possibly under 18", removed)
    # No capture of the page is kept for a minor: earlier screenshots go too (they show the page,
    # blurred). The web archives stay: they hold the page's HTML and the image's hashes only.
    shots = delete_image_copies(db, subject_id, settings, kinds=("screenshot",))
    if shots:
        log.info("deleted %d screenshots of a person marked as possibly under 18", shots)
    return removed
