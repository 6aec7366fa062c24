"""Checks for what a person types on the command line: names, e-mail addresses, intervals and
files to import. Each failure is a :class:`~monitor.errors.MonitorError` with a readable reason
(printed on one line by the CLI), never a traceback or a value stored that breaks things later.
"""

from __future__ import annotations

import os
import re
import stat
import unicodedata
from datetime import timedelta
from email.utils import parseaddr
from pathlib import Path

from monitor.config import MAX_INTERVAL, MIN_INTERVAL, format_duration, parse_duration
from monitor.errors import MonitorError
from monitor.textsafe import is_unsafe_char

__all__ = [
    "MAX_HASH_FILE_BYTES",
    "MAX_NAME_CHARS",
    "check_email",
    "check_hash_file",
    "clean_name",
    "parse_interval",
]

MAX_NAME_CHARS = 200  # the database's column for names and aliases holds 200
MAX_HASH_FILE_BYTES = 10_000_000  # 10 MB: ~150,000 PDQ hashes, far more than anyone enrols

# RFC 5322 dot-atom local part (ASCII), and a domain of letters, digits and hyphens (an IDN is
# checked after IDNA encoding).
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LOCAL = re.compile(rf"^{_ATEXT}(?:\.{_ATEXT})*$")
_LABEL = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")


def clean_name(value: str, what: str = "a name") -> str:
    """A person's name or alias: NFC-normalised, trimmed, 1 to 200 characters, printable.

    Control characters (line breaks, ESC, DEL, C1) and bidi overrides are refused: a name is
    put into search queries and shown on terminals, where they would reorder or hide text."""
    name = unicodedata.normalize("NFC", value).strip()
    if not name:
        raise MonitorError(f"{what} cannot be empty")
    bad = sorted({f"U+{ord(ch):04X}" for ch in name if is_unsafe_char(ch)})
    if bad:
        raise MonitorError(
            f"{what} holds control or text-direction characters ({', '.join(bad[:5])}); "
            "type it without them"
        )
    if len(name) > MAX_NAME_CHARS:
        raise MonitorError(f"{what} is too long ({len(name)} characters; at most {MAX_NAME_CHARS})")
    return name


def check_email(value: str, what: str = "--email") -> str:
    """Exactly one address (an RFC 5322 addr-spec such as ``jane@example.org``), or
    :class:`MonitorError`: no display name, no list, no line break (a CR/LF in a stored
    address used to make every alert to it fail; a comma mailed two people)."""
    if any(is_unsafe_char(ch) for ch in value):
        raise MonitorError(
            f"{what}: an e-mail address cannot hold line breaks or control characters"
        )
    address = value.strip()
    if any(ch in address for ch in ",;") or len(address.split()) > 1:
        raise MonitorError(f"{what}: give exactly one e-mail address (no list)")
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain or len(address) > 254 or len(local) > 64:
        raise MonitorError(f"{what}: {address!r} is not an e-mail address (like jane@example.org)")
    if not _LOCAL.match(local):
        raise MonitorError(
            f"{what}: {address!r} is not a plain e-mail address (like jane@example.org; no name, "
            "no <>, no quotes)"
        )
    try:
        ascii_domain = domain.encode("idna").decode("ascii")
    except UnicodeError:
        ascii_domain = ""
    if not ascii_domain or not all(_LABEL.match(label) for label in ascii_domain.split(".")):
        raise MonitorError(f"{what}: {domain!r} is not a valid mail domain")
    if parseaddr(address) != ("", address):  # the mail library must read it the same way
        raise MonitorError(f"{what}: {address!r} is not a plain e-mail address")
    return address


def parse_interval(value: str, what: str = "--every") -> timedelta:
    """A scan interval such as ``12h`` or ``7d``, between 5 minutes and 365 days."""
    try:
        interval = parse_duration(value)
    except ValueError as exc:
        raise MonitorError(f"{what}: {exc}") from None
    if not MIN_INTERVAL <= interval <= MAX_INTERVAL:
        raise MonitorError(
            f"{what} must be between {format_duration(MIN_INTERVAL)} and "
            f"{format_duration(MAX_INTERVAL)} (got {value!r})"
        )
    return interval


def check_hash_file(path: Path) -> Path:
    """A hash file to import must be a regular file of at most 10 MB.

    A device (``/dev/zero``), a pipe or a folder is refused before it is read: reading one
    whole could take all memory and disk."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise MonitorError(f"{path}: no such file") from None
    except OSError as exc:
        raise MonitorError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if not stat.S_ISREG(st.st_mode):
        kind = "a folder" if stat.S_ISDIR(st.st_mode) else "a device, pipe or socket"
        raise MonitorError(f"{path} is {kind}, not a file of hashes; give a text file")
    if st.st_size > MAX_HASH_FILE_BYTES:
        raise MonitorError(
            f"{path} is too large for a file of hashes ({st.st_size / 1e6:.0f} MB; at most "
            f"{MAX_HASH_FILE_BYTES // 1_000_000} MB)"
        )
    return path
