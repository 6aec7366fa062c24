"""Passphrases kept only as scrypt hashes: the web app's and the operators'.

A hash is ``scrypt$n$r$p$salt$digest`` (salt and digest URL-safe base64), made with the standard
library's :func:`hashlib.scrypt` (no extra dependency) and checked in constant time. The
parameters travel with the hash, so a later change of :data:`COST` still verifies old ones.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets

__all__ = ["COST", "hash_passphrase", "verify_passphrase"]

COST = 2**15
"""scrypt's ``n``: about 32 MiB and a few tens of milliseconds a hash (tests lower it)."""
_R, _P = 8, 1
_MAXMEM = 64 * 2**20


def hash_passphrase(passphrase: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(
        passphrase.encode(), salt=salt, n=COST, r=_R, p=_P, maxmem=_MAXMEM, dklen=32
    )
    b64 = base64.urlsafe_b64encode
    return f"scrypt${COST}${_R}${_P}${b64(salt).decode()}${b64(digest).decode()}"


def verify_passphrase(stored: str, passphrase: str) -> bool:
    """Whether ``passphrase`` is the one ``stored`` was made from (False for a malformed hash)."""
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        got = hashlib.scrypt(
            passphrase.encode(),
            salt=base64.urlsafe_b64decode(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            maxmem=_MAXMEM,
            dklen=32,
        )
        want = base64.urlsafe_b64decode(digest)
    except (ValueError, TypeError, binascii.Error):
        return False
    return hmac.compare_digest(got, want)
