"""Search backends: the :class:`SearchBackend` interface and a registry by ``kind``.

    backend = create_backend(settings.search.backends[0], client)
    hits = await backend.search(SearchQuery('"Jane Doe"', ResultKind.IMAGES), page=1)

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
    RateLimitedError,
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
    "JsonDisabledError",
    "RateLimitedError",
    "SearchBackend",
    "SearchBackendError",
    "SearxngBackend",
    "available_kinds",
    "create_backend",
    "parse_retry_after",
    "register_backend",
]
