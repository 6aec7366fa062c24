"""Pacing of search requests, per backend: a token bucket, a cap on requests in flight, and
the waits a backend asks for.

``PacedBackend(backend, limits)`` wraps any :class:`~monitor.search.base.SearchBackend`:

- at most ``limits.concurrency`` searches are in flight at once;
- requests leave at ``limits.rate`` per second on average, at most ``limits.burst`` at once
  (a token bucket: ``burst`` tokens, refilled at ``rate`` a second, one per request);
- an HTTP 429 with a ``Retry-After`` of at most ``limits.max_wait`` seconds is waited out and
  the search sent once more; with a longer one the backend is left alone until then (with
  none, for :data:`NO_RETRY_AFTER`): its searches raise :class:`SearchSkipped` without
  sending anything;
- an answer saying no request is left in the current window (``X-RateLimit-Remaining: 0``
  with ``X-RateLimit-Reset``, :class:`~monitor.search.base.RateInfo`) holds the next requests
  until the reset when that is short, and skips them when it is long.

Scans share this state per backend within a process (:meth:`PacedBackend.shared`): one
scan after another (``scan --all``, the scheduler) keeps to the same rate, and a backend that
asked to be left alone for an hour is not asked again by the next person's scan.

The clock and the sleep are injectable, so tests check pacing without timing anything.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

from monitor import shared_limits
from monitor.config import SearchConfig
from monitor.errors import SearchBackendError
from monitor.search.base import RateInfo, RateLimitedError, SearchAnswer, SearchBackend
from monitor.types import SearchQuery

__all__ = [
    "BackendState",
    "Limits",
    "PacedBackend",
    "SearchSkipped",
    "TokenBucket",
    "forget_shared",
    "limits_for",
]

log = logging.getLogger(__name__)

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


class SearchSkipped(SearchBackendError):
    """A search that was not sent: the backend asked us to wait longer than we do.

    ``reason`` is short, for a summary ("rate limited"); the message says more."""

    def __init__(self, message: str, reason: str = "rate limited") -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Limits:
    """How one backend is paced (see :func:`limits_for`)."""

    rate: float = 2.0  # requests per second, on average
    burst: int = 4  # requests that may leave at once
    concurrency: int = 4  # requests in flight at once
    max_wait: float = 30.0  # a longer wait asked for skips instead
    monthly_budget: int | None = None  # requests per calendar month; None: no budget


def limits_for(cfg: SearchConfig, name: str, kind: str = "") -> Limits:
    """The limits of the backend called ``name`` (of ``kind``): ``[search.limits."<name>"]``,
    else ``[search.limits.<kind>]``, over the ``[search]`` defaults."""
    own = cfg.limits.get(name) or (cfg.limits.get(kind) if kind else None)
    if own is None:
        return Limits(cfg.rate, cfg.burst, cfg.concurrency, cfg.max_wait)
    return Limits(
        rate=cfg.rate if own.rate is None else own.rate,
        burst=cfg.burst if own.burst is None else own.burst,
        concurrency=cfg.concurrency if own.concurrency is None else own.concurrency,
        max_wait=cfg.max_wait,
        monthly_budget=own.monthly_budget,
    )


class TokenBucket:
    """``burst`` tokens, refilled at ``rate`` a second; :meth:`acquire` takes one, waiting
    for it when none is left. :meth:`hold_until` stops every take until a given time."""

    def __init__(
        self,
        rate: float,
        burst: int = 1,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if not (rate > 0 and math.isfinite(rate)):
            raise ValueError(f"rate must be a positive number, got {rate!r}")
        if burst < 1:
            raise ValueError(f"burst must be 1 or more, got {burst!r}")
        self.rate, self.burst = float(rate), int(burst)
        self.clock, self.sleep = clock, sleep
        self.tokens = float(burst)
        self.updated = clock()
        self.held_until = -math.inf
        # One asyncio lock per event loop (a shared bucket serves scans run one after another,
        # each in its own loop), and a thread lock around the arithmetic.
        self._locks: dict[asyncio.AbstractEventLoop, asyncio.Lock] = {}
        self._mutex = threading.Lock()

    def _refill(self, now: float) -> None:
        if now > self.updated:
            self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
            self.updated = now

    def wait_time(self) -> float:
        """Seconds until a token can be taken (0: now)."""
        now = self.clock()
        self._refill(now)
        held = self.held_until - now
        # (a hair short of a whole token is one: float sums of refills can end just below 1)
        short = 0.0 if self.tokens >= 1 - 1e-9 else (1 - self.tokens) / self.rate
        return max(held, short, 0.0)

    async def acquire(self) -> float:
        """Take a token, waiting as long as needed; returns the seconds waited (by the clock)."""
        loop = asyncio.get_running_loop()
        with self._mutex:
            for old in [x for x in self._locks if x.is_closed()]:
                del self._locks[old]
            lock = self._locks.setdefault(loop, asyncio.Lock())
        start = self.clock()
        async with lock:  # first come, first served
            while True:
                with self._mutex:
                    wait = self.wait_time()
                    if wait <= 0:
                        self.tokens = max(self.tokens - 1, 0.0)
                        break
                await self.sleep(wait)
        return self.clock() - start

    def hold_until(self, when: float) -> None:
        """No token is given before ``when`` (a clock time), and none is saved up meanwhile."""
        with self._mutex:
            if when > self.held_until:
                self.held_until = when
                self.tokens = min(self.tokens, 0.0)
                self.updated = max(self.updated, self.clock())


@dataclass
class BackendState:
    """What pacing knows of one backend: its bucket, and until when (and why) it is left
    alone. :meth:`PacedBackend.shared` keeps one per backend for the whole process, so scans
    one after another (``scan --all``, the scheduler) share the rate and a long wait asked for."""

    bucket: TokenBucket
    skip_until: float = -math.inf  # searches before then are skipped...
    skip_reason: str = ""  # ...for this reason


NO_RETRY_AFTER = 600.0
"""Seconds a backend is left alone after a 429 that did not say how long to wait."""

_SHARED: dict[tuple[str, Limits], BackendState] = {}
_SHARED_LOCK = threading.Lock()


def forget_shared() -> None:
    """Drop the process-wide pacing state of every backend (tests; a changed configuration)."""
    with _SHARED_LOCK:
        _SHARED.clear()


class PacedBackend:
    """A backend whose searches are paced by :class:`Limits` (see the module's docstring).

    The bucket and the "left alone" state are ``state`` (by default this object's own; see
    :meth:`shared`); the cap on searches in flight is per :class:`PacedBackend` (per scan)."""

    def __init__(
        self,
        backend: SearchBackend,
        limits: Limits,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        state: BackendState | None = None,
    ) -> None:
        self.backend = backend
        self.name = backend.name
        self.limits = limits
        self.clock, self.sleep = clock, sleep
        self.state = state or BackendState(
            TokenBucket(limits.rate, limits.burst, clock=clock, sleep=sleep)
        )
        self.bucket = self.state.bucket
        self.in_flight = asyncio.Semaphore(limits.concurrency)
        self.sent_at: list[float] = []  # clock times requests were sent (first tries)

    @classmethod
    def shared(cls, backend: SearchBackend, limits: Limits) -> PacedBackend:
        """Paced with the process-wide state of the backend of this name and limits."""
        with _SHARED_LOCK:
            state = _SHARED.get((backend.name, limits))
            if state is None:
                state = BackendState(TokenBucket(limits.rate, limits.burst))
                _SHARED[(backend.name, limits)] = state
        return cls(backend, limits, state=state)

    def __repr__(self) -> str:
        return f"PacedBackend({self.backend!r}, {self.limits!r})"

    async def search(self, query: SearchQuery, *, page: int = 1) -> SearchAnswer:
        async with self.in_flight:
            self._check_skip()
            await self.bucket.acquire()
            # ...and the pace kept by every worker together (monitor.shared_limits; no-op alone)
            await shared_limits.wait_search(self.name, self.limits.rate, self.limits.burst)
            self._check_skip()  # it may have been left alone while this one waited
            self.sent_at.append(self.clock())
            try:
                answer = await self.backend.search(query, page=page)
            except RateLimitedError as exc:
                wait = exc.retry_after
                if wait is None or wait > self.limits.max_wait:
                    self._leave_alone(wait, str(exc))
                    raise
                log.info("%s: rate limited; waiting %.1f s as asked", self.name, wait)
                self.bucket.hold_until(self.clock() + wait)
                await self.bucket.acquire()
                try:
                    answer = await self.backend.search(query, page=page)
                except RateLimitedError as again:
                    self._leave_alone(again.retry_after, str(again))
                    raise
                answer = replace(answer, requests=answer.requests + 1)
            self._note_rate(answer.rate)
            return answer

    async def aclose(self) -> None:
        await self.backend.aclose()

    def _check_skip(self) -> None:
        if self.clock() < self.state.skip_until:
            raise SearchSkipped(f"{self.name}: not sent: {self.state.skip_reason}")
        alone = shared_limits.search_left_alone(self.name)  # by another worker
        if alone is not None:
            raise SearchSkipped(f"{self.name}: not sent: {alone[1]}")

    def _leave_alone(self, wait: float | None, why: str) -> None:
        """Skip this backend's searches for ``wait`` seconds (None: :data:`NO_RETRY_AFTER`)."""
        seconds = NO_RETRY_AFTER if wait is None else wait
        until = self.clock() + seconds
        if until > self.state.skip_until:
            self.state.skip_until = until
            self.state.skip_reason = f"rate limited; left alone for {seconds:g} s ({why})"
            shared_limits.leave_search_alone(self.name, seconds, self.state.skip_reason)
        log.info("%s: rate limited; its searches are skipped for %g s", self.name, seconds)

    def _note_rate(self, rate: RateInfo | None) -> None:
        if rate is None or rate.remaining is None or rate.remaining > 0:
            return
        reset = rate.reset_seconds
        if reset is not None and reset <= self.limits.max_wait:
            self.bucket.hold_until(self.clock() + reset)
            return
        self._leave_alone(reset, "no request left in its current window")
