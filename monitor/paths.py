"""Where the tool keeps its files: a per-user data folder, created owner-only."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path


def default_data_dir() -> Path:
    """The per-user data folder: ``$MONITOR_DATA_DIR``, else the platform's usual place."""
    env = os.environ.get("MONITOR_DATA_DIR")
    if env:
        return Path(env).expanduser()
    if sys.platform == "win32":  # pragma: no cover - not tested on this machine
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
    elif sys.platform == "darwin":  # pragma: no cover
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "exposure-monitor"


def ensure_private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) if needed and make it readable by its owner only.

    A shared folder is left as it is: one with the sticky bit (``/tmp``) or owned by someone
    else. Closing ``/tmp`` to everyone else once broke every other program on the machine
    (a database file or key file put straight into it made this run on ``/tmp``)."""
    path.mkdir(parents=True, exist_ok=True)
    st = path.stat()
    if st.st_mode & stat.S_ISVTX or (hasattr(os, "geteuid") and st.st_uid != os.geteuid()):
        return path
    os.chmod(path, 0o700)
    return path


def ensure_private_file(path: Path) -> Path:
    """Create ``path`` empty if missing and make it readable and writable by its owner only.

    A missing parent folder is created owner-only; an existing one (the user's choice, such as
    their home folder) is not changed."""
    if not path.parent.exists():
        ensure_private_dir(path.parent)
    fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
    os.close(fd)
    os.chmod(path, 0o600)
    return path
