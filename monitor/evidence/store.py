"""Where evidence lives: ``<data_dir>/evidence/<key>/``, owner-only.

``key`` is a case or sighting id chosen by the caller (``"case-12"``, ``"sighting-40"``...).
Folders are created ``0700`` and files ``0600``. Files are written once: a name that exists
already is never overwritten (:func:`write_new_file`), so a capture cannot silently replace
earlier evidence.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Protocol

from monitor.evidence.errors import EvidenceError
from monitor.paths import ensure_private_dir

__all__ = [
    "capture_file_name",
    "evidence_dir",
    "evidence_root",
    "remove_evidence",
    "write_new_file",
]

_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class _HasDataDir(Protocol):
    data_dir: Path


def _check_key(key: str) -> str:
    if not isinstance(key, str) or not _KEY.fullmatch(key) or ".." in key:
        raise EvidenceError(
            f"{key!r} is not a usable evidence folder name: use letters, digits, '.', '_' "
            "and '-' (at most 128, not starting with a dot, no '..'), e.g. 'case-12'"
        )
    return key


def evidence_root(settings: _HasDataDir) -> Path:
    """``<data_dir>/evidence``, created owner-only."""
    ensure_private_dir(Path(settings.data_dir))
    return ensure_private_dir(Path(settings.data_dir) / "evidence")


def evidence_dir(settings: _HasDataDir, key: str) -> Path:
    """``<data_dir>/evidence/<key>/`` for a case or sighting, created ``0700`` if missing."""
    return ensure_private_dir(evidence_root(settings) / _check_key(key))


def remove_evidence(settings: _HasDataDir, key: str) -> bool:
    """Delete ``<data_dir>/evidence/<key>/`` and everything in it (erasure). True if it existed."""
    path = Path(settings.data_dir) / "evidence" / _check_key(key)
    if not path.exists():
        return False
    shutil.rmtree(path)
    return True


def capture_file_name(kind: str, when: datetime | None = None, suffix: str = "") -> str:
    """A file name that sorts by capture time: ``20250102T030405.123456Z-<kind><suffix>``."""
    when = (when or datetime.now(UTC)).astimezone(UTC)
    return f"{when:%Y%m%dT%H%M%S.%fZ}-{kind}{suffix}"


def write_new_file(path: Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Create ``path`` owner-only (``0600``) with what ``write(fh)`` writes; never overwrite.

    The content goes to a hidden temporary file in the same folder first and is linked to
    ``path`` only when complete, so a crash leaves no half-written evidence under its name.
    Raises :class:`EvidenceError` if ``path`` exists already.
    """
    path = Path(path)
    if path.exists():
        raise EvidenceError(f"{path} exists already; evidence files are never overwritten")
    if not path.parent.is_dir():
        raise EvidenceError(f"the folder {path.parent} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)  # fails if the name was taken meanwhile
        except FileExistsError:
            raise EvidenceError(
                f"{path} exists already; evidence files are never overwritten"
            ) from None
        except OSError:  # a file system without hard links: rename (checked just above)
            if path.exists():
                raise EvidenceError(
                    f"{path} exists already; evidence files are never overwritten"
                ) from None
            os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path
