"""Search backends: the :class:`SearchBackend` interface and a registry by ``kind``.

    backend = create_backend(settings.search.backends[0], client)
    answer = await backend.search(SearchQuery('"Jane Doe"', ResultKind.IMAGES), page=1)
    answer.hits, answer.unanswered  # the hits; engines behind the backend that did not answer

Adding a backend: write ``monitor/search/<kind>.py`` with a factory decorated by
``@register_backend("<kind>")``, and import it below.
"""

from __future__ import annotations

from monitor.errors import SearchBackendError
from monitor.search import searxng as _searxng  # noqa: F401  (registers "searxng")
from monitor.search.base import (
    BackendFactory,
    BackendUnavailableError,
    BadAnswerError,
    EnginesUnresponsiveError,
    RateInfo,
    RateLimitedError,
    SearchAnswer,
    SearchBackend,
    available_kinds,
    create_backend,
    parse_retry_after,
    register_backend,
)
from monitor.search.searxng import JsonDisabledError, SearxngBackend

__all__ = [
    "BackendFactory",
    "BackendUnavailableError",
    "BadAnswerError",
    "EnginesUnresponsiveError",
    "JsonDisabledError",
    "RateInfo",
    "RateLimitedError",
    "SearchAnswer",
    "SearchBackend",
    "SearchBackendError",
    "SearxngBackend",
    "available_kinds",
    "create_backend",
    "parse_retry_after",
    "register_backend",
]
