"""Encryption at rest for reference hashes, with a key kept outside the database.

The hashes of a person's own photos (``reference_hashes.value``) and the SHA-256 of each enrolled
photo (``references.content_sha256``) are stored encrypted with AES-256-GCM. The key lives in a
key file *beside* the data folder, not in it (``<data folder>.key``, or ``[database] key_file``),
readable by its owner only, or comes from ``$MONITOR_REFERENCE_KEY``. A copied database alone
therefore reveals no reference hash; back the key file up separately.

Encryption is transparent: :class:`EncryptedText` is the column type, and the :class:`KeyStore`
of the ``Database`` that opened the connection is found through the connection's dialect. The
key is created the first time it is needed. When it is lost (or a different one is in place),
reading or writing a reference raises :class:`ReferenceKeyLost`, which says what to do:
restore the key file, or forget the unreadable references and enroll the photos again
(``python -m monitor.secrets forget-references``).

A stored value is ``enc1:`` + base64url(key id (4 bytes) | nonce (12) | ciphertext + tag). The
column's name is bound in as associated data, so a value cannot be moved to another column.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
import secrets as _random
import sys
import threading
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import Text, TypeDecorator, make_url

from monitor.errors import MonitorError
from monitor.paths import default_data_dir

__all__ = [
    "KEY_ENV",
    "PREFIX",
    "EncryptedText",
    "KeyStore",
    "ReferenceKeyLost",
    "default_key_path",
    "forget_unreadable_references",
    "keystore_of",
]

logger = logging.getLogger("monitor.secrets")

KEY_ENV = "MONITOR_REFERENCE_KEY"
"""Environment variable that may hold the key (base64url of 32 bytes) instead of a key file."""

PREFIX = "enc1:"
_KEY_BYTES = 32
_ID_BYTES = 4
_NONCE_BYTES = 12
_DIALECT_ATTR = "_monitor_keystore"


class ReferenceKeyLost(MonitorError):
    """The key that encrypts the reference hashes is missing or is not the one they need."""


def default_key_path(database_url: str, data_dir: Path | None = None) -> Path:
    """Where the key file is when none is configured: ``<data folder>.key`` beside the folder.

    The data folder is ``data_dir`` if given; else, for an SQLite file, the folder that holds
    the database; else the default data folder (``$MONITOR_DATA_DIR`` ...)."""
    if data_dir is None:
        url = make_url(database_url)
        if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
            data_dir = Path(url.database).expanduser().resolve().parent
        else:
            data_dir = default_data_dir()
    data_dir = Path(data_dir).expanduser().resolve()
    return data_dir.parent / f"{data_dir.name}.key"


def _key_id(key: bytes) -> bytes:
    return hashlib.sha256(b"exposure-monitor reference key id\0" + key).digest()[:_ID_BYTES]


def _decode_key(text: str, where: str) -> bytes:
    try:
        key = base64.urlsafe_b64decode(text.strip().encode("ascii"))
    except (binascii.Error, ValueError, UnicodeEncodeError):
        key = b""
    if len(key) != _KEY_BYTES:
        raise ReferenceKeyLost(
            f"{where} does not hold a valid key (expected base64url of {_KEY_BYTES} bytes); "
            "restore the right key file, or see `python -m monitor.secrets --help`"
        )
    return key


class KeyStore:
    """The reference-hash key of one database: loaded from its file, or created on first use.

    ``may_create``: whether a missing key may be created. :class:`~monitor.db.Database` sets it
    to False when the database already holds encrypted references: a new key could not read
    them, so their key is reported lost instead of silently replaced.
    """

    def __init__(self, path: Path, *, may_create: bool = True) -> None:
        self.path = Path(path).expanduser()
        self.may_create = may_create
        self._key: bytes | None = None
        self._lock = threading.Lock()

    # -- the key

    def exists(self) -> bool:
        return bool(os.environ.get(KEY_ENV)) or self.path.is_file()

    def key(self, *, create: bool = True) -> bytes:
        """The key; created (owner-only file) when missing, allowed, and ``create``."""
        with self._lock:
            if self._key is None:
                self._key = self._load(create=create)
            return self._key

    def _load(self, *, create: bool) -> bytes:
        env = os.environ.get(KEY_ENV)
        if env:
            return _decode_key(env, f"${KEY_ENV}")
        try:
            return self._read()
        except FileNotFoundError:
            pass
        if not (create and self.may_create):
            raise self.lost(
                f"the key file {self.path} that encrypts the stored reference hashes is missing"
            )
        return self._create()

    def _read(self) -> bytes:
        with open(self.path, "rb") as fh:
            mode = os.fstat(fh.fileno()).st_mode
            text = fh.read().decode("ascii", "replace")
        if mode & 0o077:
            os.chmod(self.path, 0o600)
            logger.warning("key file %s was readable by others; made it owner-only", self.path)
        return _decode_key(text, f"the key file {self.path}")

    def _create(self) -> bytes:
        key = _random.token_bytes(_KEY_BYTES)
        parent = self.path.parent
        if not parent.exists():
            parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = parent / f".{self.path.name}.{os.getpid()}.{threading.get_ident()}.tmp"
        fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        try:
            try:
                os.write(fd, base64.urlsafe_b64encode(key) + b"\n")
                os.fsync(fd)
            finally:
                os.close(fd)
            os.chmod(tmp, 0o600)
            try:
                os.link(tmp, self.path)  # atomic and never overwrites: a racing creator wins
            except FileExistsError:
                return self._read()
        finally:
            tmp.unlink(missing_ok=True)
        logger.info("created the key for reference hashes at %s (back it up)", self.path)
        return key

    def lost(self, what: str) -> ReferenceKeyLost:
        return ReferenceKeyLost(
            f"{what}, so the enrolled reference photos cannot be used. Put the key file back "
            f"from a backup (it is kept outside the data folder: {self.path}). If it is lost for "
            "good, the references must be enrolled again: run `python -m monitor.secrets "
            "forget-references` (add --config FILE if you use one), then `enroll NAME PHOTOS...` "
            "for each person. Matches found so far are kept."
        )

    # -- values

    def encrypt(self, plaintext: str, purpose: str) -> str:
        key = self.key()
        nonce = _random.token_bytes(_NONCE_BYTES)
        sealed = AESGCM(key).encrypt(nonce, plaintext.encode("utf-8"), purpose.encode())
        blob = _key_id(key) + nonce + sealed
        return PREFIX + base64.urlsafe_b64encode(blob).decode("ascii").rstrip("=")

    def decrypt(self, stored: str, purpose: str) -> str:
        if not stored.startswith(PREFIX):
            return stored  # written before encryption (the 0003 migration converts these)
        key = self.key(create=False)
        body = stored[len(PREFIX) :]
        blob = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        key_id, nonce, sealed = (
            blob[:_ID_BYTES],
            blob[_ID_BYTES : _ID_BYTES + _NONCE_BYTES],
            blob[_ID_BYTES + _NONCE_BYTES :],
        )
        if key_id != _key_id(key):
            raise self.lost(
                f"the reference hashes were encrypted with a different key than the one in "
                f"{self._source()}"
            )
        try:
            return AESGCM(key).decrypt(nonce, sealed, purpose.encode()).decode("utf-8")
        except InvalidTag:
            raise self.lost(
                f"a stored reference hash does not decrypt with the key in {self._source()} "
                "(damaged or from another database)"
            ) from None

    def readable(self, stored: str | None, purpose: str) -> bool:
        """Whether ``stored`` decrypts with this key (never creates one)."""
        if stored is None or not stored.startswith(PREFIX):
            return True
        try:
            self.decrypt(stored, purpose)
        except ReferenceKeyLost:
            return False
        return True

    def _source(self) -> str:
        return f"${KEY_ENV}" if os.environ.get(KEY_ENV) else str(self.path)


def keystore_of(dialect: Any) -> KeyStore:
    """The key store attached to a connection's dialect by :class:`~monitor.db.Database`."""
    store = getattr(dialect, _DIALECT_ATTR, None)
    if store is None:
        raise MonitorError(
            "this database connection has no key for reference hashes: open the database with "
            "monitor.db.Database"
        )
    return store


def attach(dialect: Any, store: KeyStore) -> None:
    setattr(dialect, _DIALECT_ATTR, store)


class EncryptedText(TypeDecorator[str]):
    """A text column stored encrypted with the database's reference key (see module doc)."""

    impl = Text
    cache_ok = True

    def __init__(self, purpose: str) -> None:
        super().__init__()
        self.purpose = purpose

    def process_bind_param(self, value: str | None, dialect: Any) -> str | None:
        if value is None or value.startswith(PREFIX):
            return value
        return keystore_of(dialect).encrypt(value, self.purpose)

    def process_result_value(self, value: str | None, dialect: Any) -> str | None:
        if value is None:
            return None
        return keystore_of(dialect).decrypt(value, self.purpose)


# The purposes (associated data) of the encrypted columns.
REFERENCE_HASH = "reference_hashes.value"
REFERENCE_SHA256 = "references.content_sha256"
OPERATOR_TOTP = "operators.totp_secret"  # an operator's second factor (monitor/orgs)


def encrypted_rows_exist(connection: Any) -> bool:
    """Whether the database holds encrypted reference data (raw SQL: works mid-migration)."""
    from sqlalchemy import text

    for sql in (
        "SELECT 1 FROM reference_hashes WHERE value LIKE 'enc1:%' LIMIT 1",
        "SELECT 1 FROM \"references\" WHERE content_sha256 LIKE 'enc1:%' LIMIT 1",
        "SELECT 1 FROM operators WHERE totp_secret LIKE 'enc1:%' LIMIT 1",  # 0012 on
    ):
        if connection.execute(text(sql)).first() is not None:
            return True
    return False


def forget_unreadable_references(db: Any) -> int:
    """Delete the references whose hashes the current key cannot read (after a key loss).

    Matches keep their place (their ``reference_id`` becomes empty). Returns how many
    references were deleted. Creates a key if none exists, so enrolment can start again.
    """
    from sqlalchemy import delete, select, text

    from monitor.db.models import Reference

    ks: KeyStore = db.keystore
    ks.may_create = True
    ks.key()  # the current key, or a new one when it is lost
    with db.engine.connect() as conn:  # raw values: no decryption on read
        rows = conn.execute(
            text(
                'SELECT r.id, r.content_sha256, h.value FROM "references" r '
                "LEFT JOIN reference_hashes h ON h.reference_id = r.id"
            )
        ).all()
    bad = {
        ref_id
        for ref_id, sha, value in rows
        if not ks.readable(sha, REFERENCE_SHA256) or not ks.readable(value, REFERENCE_HASH)
    }
    if bad:
        with db.session() as s:
            ids = list(s.scalars(select(Reference.id).where(Reference.id.in_(bad))))
            s.execute(delete(Reference).where(Reference.id.in_(ids)))
    return len(bad)


def main(argv: list[str] | None = None) -> int:
    """``python -m monitor.secrets forget-references [--config FILE]``."""
    import argparse

    p = argparse.ArgumentParser(
        prog="python -m monitor.secrets",
        description="Reference-hash key maintenance. forget-references deletes the enrolled "
        "references the current key cannot read (after the key file was lost), so the photos "
        "can be enrolled again. Matches found so far are kept.",
    )
    p.add_argument("command", choices=["forget-references"])
    p.add_argument("--config", metavar="FILE")
    args = p.parse_args(argv)
    from sqlalchemy.exc import SQLAlchemyError

    from monitor.config import load_settings
    from monitor.db import Database, check_sqlite_folder, describe_db_error
    from monitor.paths import ensure_private_dir
    from monitor.textsafe import visible

    try:
        settings = load_settings(args.config)
        ensure_private_dir(settings.data_dir)
        if settings.database.url:
            check_sqlite_folder(settings.database.url)
        db = Database(settings.database_url, key_file=settings.key_path)
        n = forget_unreadable_references(db)
    except MonitorError as exc:
        print(f"error: {visible(exc)}", file=sys.stderr)
        return 2
    except SQLAlchemyError as exc:  # one line: never the statement or its parameters
        print(f"error: database error: {visible(describe_db_error(exc))}", file=sys.stderr)
        return 2
    print(f"Forgot {n} unreadable reference(s). Enroll the photos again with `enroll NAME ...`.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
