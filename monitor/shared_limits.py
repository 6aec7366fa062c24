"""Politeness and search rates shared by every worker, kept in Redis with the ``limits`` library.

One process paces itself (:mod:`monitor.fetch` per host, :mod:`monitor.search.pacing` per
backend). Ten workers pacing themselves would hit a site or a search API ten times as hard, so
with ``[queue]`` on, each worker also takes a place from a moving window kept in Redis before it
sends a request:

- ``host:<host>``: one request per ``interval`` seconds to a host (``[fetch] min_host_interval``
  or the robots.txt ``Crawl-delay``, whichever is longer), for all workers together;
- ``search:<backend>``: ``burst`` requests per ``burst / rate`` seconds to a search backend;
- a backend that asked to be left alone (HTTP 429 with a long ``Retry-After``) is left alone by
  every worker until then (:meth:`SharedLimiter.leave_alone`).

Monthly search budgets are counted in the database, which all workers share already.

Windows are whole seconds (what ``limits`` counts in), rounded so that the shared pace is never
faster than the configured one. Without a shared limiter (:func:`install` not called: one
process, the default) the ``wait_*`` functions return at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the `limits` library is imported only when a shared limiter is used
    from limits import RateLimitItemPerSecond
    from limits.storage import Storage

__all__ = [
    "SharedLimiter",
    "current",
    "install",
    "uninstall",
    "wait_host",
    "wait_search",
    "window_for",
]

log = logging.getLogger(__name__)

NAMESPACE = "monitor"
MAX_SLEEP = 5.0  # seconds slept at most before asking Redis again


def window_for(rate: float, burst: int = 1) -> RateLimitItemPerSecond:
    """``burst`` requests per ``burst / rate`` seconds, in whole seconds, never faster than
    ``rate`` a second on average: 2/s burst 4 -> 4 per 2 s; 0.4/s -> 1 per 3 s; 2.5/s burst 1 ->
    1 per 1 s."""
    from limits import RateLimitItemPerSecond

    if not (rate > 0 and math.isfinite(rate)):
        raise ValueError(f"rate must be a positive number, got {rate!r}")
    seconds = max(1, math.ceil(max(burst, 1) / rate - 1e-9))
    amount = max(1, math.floor(seconds * rate + 1e-9))
    return RateLimitItemPerSecond(min(amount, max(burst, 1)), seconds, namespace=NAMESPACE)


@dataclass
class SharedLimiter:
    """Moving windows in a ``limits`` storage (Redis for workers; memory in tests)."""

    storage: Storage
    prefix: str = ""  # before every key ([queue] key_prefix)

    @classmethod
    def from_url(cls, url: str, prefix: str = "") -> SharedLimiter:
        """``redis://host:6379/0`` (any URL the ``limits`` library knows)."""
        from limits.storage import storage_from_string

        return cls(storage_from_string(url), prefix)

    def __post_init__(self) -> None:
        from limits.strategies import MovingWindowRateLimiter

        self.limiter: Any = MovingWindowRateLimiter(self.storage)

    def check(self) -> bool:
        """True when the storage answers."""
        return bool(self.storage.check())

    def try_take(self, key: str, item: RateLimitItemPerSecond) -> float:
        """Take a place now (0.0), or the seconds until one may be free."""
        key = self.prefix + key
        if self.limiter.hit(item, key):
            return 0.0
        stats = self.limiter.get_window_stats(item, key)
        return max(stats.reset_time - time.time(), 0.05)

    async def take(self, key: str, item: RateLimitItemPerSecond) -> float:
        """Wait for a place in ``key``'s window; the seconds waited."""
        waited = 0.0
        while True:
            wait = self.try_take(key, item)
            if wait <= 0:
                return waited
            wait = min(wait, MAX_SLEEP)
            await asyncio.sleep(wait)
            waited += wait

    def leave_alone(self, key: str, seconds: float, reason: str) -> None:
        """Every worker skips ``key`` for ``seconds`` (a Redis key that expires)."""
        client = getattr(self.storage, "storage", None)
        if client is None or seconds <= 0:
            return
        client.set(f"{self.prefix}{NAMESPACE}:alone:{key}", reason, px=max(int(seconds * 1000), 1))

    def left_alone(self, key: str) -> tuple[float, str] | None:
        """``(seconds left, reason)`` while ``key`` is left alone, else None."""
        client = getattr(self.storage, "storage", None)
        if client is None:
            return None
        name = f"{self.prefix}{NAMESPACE}:alone:{key}"
        reason, ttl = client.get(name), client.pttl(name)
        if reason is None or ttl is None or ttl <= 0:
            return None
        text = reason.decode() if isinstance(reason, bytes) else str(reason)
        return ttl / 1000, text


_CURRENT: SharedLimiter | None = None


def install(limiter: SharedLimiter | None) -> None:
    """Make ``limiter`` the one every fetch and search of this process goes through."""
    global _CURRENT
    _CURRENT = limiter


def uninstall() -> None:
    install(None)


def current() -> SharedLimiter | None:
    return _CURRENT


def _safe(key: str) -> str:
    return key.replace(" ", "_")[:200]


async def wait_host(host: str, interval: float) -> None:
    """Wait until every worker together keeps ``interval`` seconds between requests to
    ``host``. Does nothing without a shared limiter or an interval; a Redis failure is logged
    and does not stop the fetch (each worker still keeps the interval itself)."""
    limiter = _CURRENT
    if limiter is None or interval <= 0:
        return
    try:
        await limiter.take(f"host:{_safe(host)}", window_for(1 / interval))
    except Exception as exc:  # pragma: no cover - Redis gone: pace per worker only
        log.warning("shared host pacing unavailable (%s)", type(exc).__name__)


async def wait_search(backend: str, rate: float, burst: int) -> None:
    """Wait for a place in the backend's shared search window (see :func:`wait_host`)."""
    limiter = _CURRENT
    if limiter is None:
        return
    try:
        await limiter.take(f"search:{_safe(backend)}", window_for(rate, burst))
    except Exception as exc:  # pragma: no cover - Redis gone: pace per worker only
        log.warning("shared search pacing unavailable (%s)", type(exc).__name__)


def search_left_alone(backend: str) -> tuple[float, str] | None:
    limiter = _CURRENT
    if limiter is None:
        return None
    try:
        return limiter.left_alone(f"search:{_safe(backend)}")
    except Exception:  # pragma: no cover
        return None


def leave_search_alone(backend: str, seconds: float, reason: str) -> None:
    limiter = _CURRENT
    if limiter is None:
        return
    with contextlib.suppress(Exception):  # Redis gone: this worker still leaves it alone
        limiter.leave_alone(f"search:{_safe(backend)}", seconds, reason)
