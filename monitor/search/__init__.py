"""Search backends: the :class:`SearchBackend` interface and a registry by ``kind``.

Kinds: ``searxng`` (:mod:`monitor.search.searxng`), ``brave`` (:mod:`monitor.search.brave`),
``serpapi`` (:mod:`monitor.search.serpapi`); ``docs/search.md`` compares them.

    backend = create_backend(settings.search.backends[0], client)
    answer = await backend.search(SearchQuery('"Jane Doe"', ResultKind.IMAGES), page=1)
    answer.hits, answer.unanswered  # the hits; engines behind the backend that did not answer

Adding a backend: write ``monitor/search/<kind>.py`` with a factory decorated by
``@register_backend("<kind>")``, and import it below.
"""

from __future__ import annotations

from monitor.errors import SearchBackendError
from monitor.search import brave as _brave  # noqa: F401  (registers "brave")
from monitor.search import searxng as _searxng  # noqa: F401  (registers "searxng")
from monitor.search import serpapi as _serpapi  # noqa: F401  (registers "serpapi")
from monitor.search.base import (
    BackendCheck,
    BackendFactory,
    BackendRefusedError,
    BackendUnavailableError,
    BadAnswerError,
    EnginesUnresponsiveError,
    RateInfo,
    RateLimitedError,
    RedirectRefusedError,
    SearchAnswer,
    SearchBackend,
    available_kinds,
    create_backend,
    parse_retry_after,
    register_backend,
)
from monitor.search.brave import BraveBackend
from monitor.search.searxng import JsonDisabledError, SearxngBackend
from monitor.search.serpapi import SerpApiBackend

__all__ = [
    "BackendCheck",
    "BackendFactory",
    "BackendRefusedError",
    "BackendUnavailableError",
    "BadAnswerError",
    "BraveBackend",
    "EnginesUnresponsiveError",
    "JsonDisabledError",
    "RateInfo",
    "RateLimitedError",
    "RedirectRefusedError",
    "SearchAnswer",
    "SearchBackend",
    "SearchBackendError",
    "SearxngBackend",
    "SerpApiBackend",
    "available_kinds",
    "create_backend",
    "parse_retry_after",
    "register_backend",
]
