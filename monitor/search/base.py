"""The search backend interface, the registry of backend kinds, and search errors.

A backend turns one :class:`~monitor.types.SearchQuery` into :class:`~monitor.types.SearchHit`
values. Backends are plug-ins: a module defines a factory and registers it under a ``kind``,
the name used in ``[[search.backends]] kind = "..."``::

    @register_backend("mysearch")
    def _create(cfg: SearchBackendConfig, client: httpx.AsyncClient) -> SearchBackend:
        return MySearch(cfg, client)

and ``monitor/search/__init__.py`` imports the module so the kind is registered.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Protocol, runtime_checkable

import httpx

from monitor.config import SearchBackendConfig
from monitor.errors import ConfigError, SearchBackendError
from monitor.types import SearchHit, SearchQuery

__all__ = [
    "BackendFactory",
    "BadAnswerError",
    "BackendUnavailableError",
    "EnginesUnresponsiveError",
    "RateInfo",
    "RateLimitedError",
    "SearchAnswer",
    "SearchBackend",
    "SearchBackendError",
    "available_kinds",
    "create_backend",
    "parse_retry_after",
    "register_backend",
]


@dataclass(frozen=True, slots=True)
class RateInfo:
    """What a backend's answer said about its limits (``X-RateLimit-*`` and the like).

    Every field is ``None`` when the API did not say."""

    limit: int | None = None  # requests allowed in the current window
    remaining: int | None = None  # requests left in the current window
    reset_seconds: float | None = None  # seconds until the window resets


@dataclass(frozen=True, slots=True)
class SearchAnswer:
    """What one search (one backend, one query, one results page) brought back.

    ``unanswered`` lists the engines behind a meta-search backend (SearXNG, SerpApi's engines)
    that did not answer, as ``(engine, reason)`` pairs: a non-empty list makes the search
    *partial*. A search in which no engine answered at all is not an answer: the backend raises
    :class:`EnginesUnresponsiveError` instead. ``requests`` counts the HTTP requests actually
    sent for this answer (a retry after a 429 makes 2)."""

    hits: list[SearchHit]
    unanswered: tuple[tuple[str, str], ...] = ()
    requests: int = 1
    rate: RateInfo | None = None

    @property
    def partial(self) -> bool:
        return bool(self.unanswered)


@runtime_checkable
class SearchBackend(Protocol):
    """Something that answers search queries.

    ``search`` raises :class:`~monitor.errors.SearchBackendError` (or a subclass) with a
    message for a person when the backend cannot answer; it never raises httpx errors.
    """

    name: str  # shown in scan summaries and error records, e.g. "searxng@localhost:8888"

    async def search(self, query: SearchQuery, *, page: int = 1) -> SearchAnswer:
        """Return the answer for results page ``page`` (1-based) of ``query``."""
        ...

    async def aclose(self) -> None:
        """Release what the backend owns (not the shared HTTP client it was given)."""
        ...


BackendFactory = Callable[[SearchBackendConfig, httpx.AsyncClient], SearchBackend]

_REGISTRY: dict[str, BackendFactory] = {}


def register_backend(kind: str) -> Callable[[BackendFactory], BackendFactory]:
    """Class or function decorator: make ``factory`` the one that builds backends of ``kind``."""
    if not kind or kind != kind.strip():
        raise ValueError(f"search backend kind must be a non-empty word, got {kind!r}")

    def decorate(factory: BackendFactory) -> BackendFactory:
        existing = _REGISTRY.get(kind)
        if existing is not None and existing is not factory:
            raise ValueError(f"search backend kind {kind!r} is already registered by {existing!r}")
        _REGISTRY[kind] = factory
        return factory

    return decorate


def available_kinds() -> list[str]:
    """The registered backend kinds, sorted."""
    return sorted(_REGISTRY)


def create_backend(cfg: SearchBackendConfig, client: httpx.AsyncClient) -> SearchBackend:
    """Build the backend ``cfg.kind`` names, sharing ``client`` for its HTTP requests.

    Raises :class:`~monitor.errors.ConfigError` for an unknown kind or a bad setting.
    """
    factory = _REGISTRY.get(cfg.kind)
    if factory is None:
        known = ", ".join(available_kinds()) or "none"
        raise ConfigError(f"unknown search backend kind {cfg.kind!r}; known: {known}")
    return factory(cfg, client)


# -- errors shared by backends


class BackendUnavailableError(SearchBackendError):
    """The backend could not be reached, timed out, or failed (HTTP 5xx and the like)."""


class BadAnswerError(SearchBackendError):
    """The backend answered, but not with something we can read."""


class EnginesUnresponsiveError(BackendUnavailableError):
    """The backend answered, but every engine behind it failed (blocked, CAPTCHA, timeout).

    SearXNG says so with HTTP 200, ``results: []`` and ``unresponsive_engines``; that is a
    failed search, never "nothing found". ``engines`` holds the ``(engine, reason)`` pairs."""

    def __init__(self, message: str, engines: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(message)
        self.engines = engines


class RateLimitedError(SearchBackendError):
    """The backend asks us to slow down (HTTP 429). ``retry_after`` is in seconds, if given."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delay-seconds or an HTTP-date.

    Returns ``None`` when the header is absent or unreadable; never a negative number.
    ``now`` (a Unix time) is for tests; it defaults to the current time.
    """
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT; tolerate a missing zone
        when = when.replace(tzinfo=UTC)
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)
