"""Tasks for the hashing pool's deadline tests (:mod:`tests.test_media_sealed`).

The pool's workers import this module to run them, so it imports only what the workers have
already loaded (:mod:`monitor.video`): a worker started after one was killed is ready at once.
"""

from __future__ import annotations

import os
import time

from monitor.video import FrameLimits, MediaHashes, hash_media

HANG, CRASH = b"HANG-ME:", b"CRASH-ME:"


def hash_or_hang(data: bytes, limits: FrameLimits | None = None) -> MediaHashes:
    """``hash_media``, but bytes starting with ``HANG`` hang and with ``CRASH`` kill the worker
    (as a decoder stuck in a loop or crashing on crafted bytes would)."""
    if data.startswith(HANG):
        time.sleep(600)
    if data.startswith(CRASH):
        os._exit(70)
    return hash_media(data, limits)


def square(x: int) -> int:
    return x * x


def sleep(seconds: float) -> float:
    time.sleep(seconds)
    return seconds
