"""A search backend speaking SearXNG's JSON API (``GET /search?q=...&format=json``).

SearXNG only answers JSON when the instance allows it: ``json`` must be listed under
``search.formats`` in its ``settings.yml``. Image answers mix in general results that carry
no image; only results with an ``img_src`` become image hits.

Its own keys in ``[[search.backends]]`` (see :class:`SearxngOptions`): ``categories_web``,
``categories_images``, ``safesearch`` (0, off, by default: the images we look for are filtered
otherwise) and ``language``.

A rate-limited answer (HTTP 429) with a short ``Retry-After`` (at most
:attr:`SearxngBackend.max_retry_wait` seconds) is waited out and the query asked once more;
a longer or missing one is a :class:`RateLimitedError`. The whole answer must arrive within the
backend's ``timeout`` and be at most :data:`MAX_ANSWER_BYTES` long; redirects are followed only
within the instance's own origin (:func:`~monitor.search.base.get_answer`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
from pydantic import Field

from monitor.config import SearchBackendConfig
from monitor.errors import ConfigError, SearchBackendError
from monitor.search import base
from monitor.search.base import (
    BackendCheck,
    BackendOptions,
    BackendUnavailableError,
    BadAnswerError,
    EnginesUnresponsiveError,
    RateLimitedError,
    RawAnswer,
    SearchAnswer,
    backend_options,
    get_answer,
    parse_json,
    parse_retry_after,
    register_backend,
    result_url,
    retry_once_if_short,
    snippet,
)
from monitor.types import ResultKind, SearchHit, SearchQuery

__all__ = ["JsonDisabledError", "SearxngBackend", "SearxngOptions", "endpoint_url"]

log = logging.getLogger(__name__)

MAX_ANSWER_BYTES = base.MAX_ANSWER_BYTES
"""A longer answer is not read (module attribute: tests lower it)."""

NO_REASON = "no reason given"
"""The reason recorded for an unresponsive engine SearXNG named without one."""

CHECK_QUERY = "weather"
"""What :meth:`SearxngBackend.check` searches for: a neutral word, never a person's name."""


class SearxngOptions(BackendOptions):
    """SearXNG's own keys in ``[[search.backends]]``."""

    categories_web: str = "general"
    categories_images: str = "images"
    safesearch: int = Field(default=0, ge=0, le=2)  # 0: off (needed: the images we look for)
    language: str = ""  # empty: the instance's default


class JsonDisabledError(SearchBackendError):
    """The SearXNG instance refuses ``format=json`` (HTTP 403)."""


def endpoint_url(url: str) -> tuple[str, str]:
    """``(instance_url, search_url)`` for a configured SearXNG URL.

    Accepts ``https://host``, ``https://host/``, ``https://host/searx/`` and URLs that already
    end with ``/search``. Raises :class:`ConfigError` for anything but an http(s) URL.
    """
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"search backend url must be an http:// or https:// URL of a SearXNG instance, "
            f"got {url!r}"
        )
    path = parts.path.rstrip("/")
    if path.endswith("/search"):
        path = path[: -len("/search")]
    instance = urlunsplit((parts.scheme, parts.netloc, path, "", ""))
    return instance, instance + "/search"


def _default_name(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or "unknown"
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    return f"searxng@{host}:{parts.port}" if parts.port else f"searxng@{host}"


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


class SearxngBackend:
    """Queries one SearXNG instance through a shared :class:`httpx.AsyncClient`."""

    kind = "searxng"
    max_retry_wait = 10.0
    """A 429 asking us to wait at most this many seconds is waited out and retried once."""

    def __init__(self, cfg: SearchBackendConfig, client: httpx.AsyncClient) -> None:
        self.cfg = cfg
        self.options = backend_options(cfg, SearxngOptions)
        self.client = client
        self.instance_url, self.search_url = endpoint_url(cfg.url)
        self.name = cfg.name or _default_name(self.instance_url)
        #: ``(engine, reason)`` pairs SearXNG reported as unresponsive in the latest answer.
        self.unresponsive_engines: list[tuple[str, str]] = []

    def __repr__(self) -> str:
        return f"SearxngBackend(name={self.name!r}, url={self.search_url!r})"

    def params(self, query: SearchQuery, page: int = 1) -> dict[str, str]:
        """The query-string parameters sent for ``query`` and results page ``page``."""
        opts = self.options
        categories = (
            opts.categories_images if query.kind is ResultKind.IMAGES else opts.categories_web
        )
        params = {
            "q": query.text,
            "format": "json",
            "categories": categories,
            "pageno": str(page),
            "safesearch": str(opts.safesearch),
        }
        if opts.language:
            params["language"] = opts.language
        return params

    async def search(self, query: SearchQuery, *, page: int = 1) -> SearchAnswer:
        """The answer for results page ``page`` of ``query``; image queries keep only images.

        Engines SearXNG lists as unresponsive make the answer partial; when it found nothing
        and listed unresponsive engines, no engine answered: :class:`EnginesUnresponsiveError`.
        """
        if page < 1:
            raise ValueError(f"page numbers start at 1, got {page}")
        return await retry_once_if_short(
            lambda requests: self._search_once(query, page, requests=requests),
            max_wait=self.max_retry_wait,
            name=self.name,
        )

    @property
    def where(self) -> str:
        return f"SearXNG at {self.instance_url}"

    async def _exchange(
        self, params: dict[str, str]
    ) -> tuple[dict[str, Any], tuple[tuple[str, str], ...]]:
        """The decoded answer and the engines it lists as unresponsive."""
        raw = await get_answer(
            self.client,
            self.search_url,
            params=params,
            timeout=self.cfg.timeout,
            where=self.where,
            max_bytes=MAX_ANSWER_BYTES,
        )
        self._check_status(raw)
        data = self._decode(raw)
        return data, self._note_unresponsive(data.get("unresponsive_engines"))

    async def _search_once(self, query: SearchQuery, page: int, *, requests: int) -> SearchAnswer:
        data, unanswered = await self._exchange(self.params(query, page))
        hits = list(self._hits(data, query))
        if unanswered and not data["results"]:
            raise EnginesUnresponsiveError(
                f"{self.where}: no search engine answered: {_reasons(unanswered)}",
                unanswered,
                requests=requests,
            )
        return SearchAnswer(hits=hits, unanswered=unanswered, requests=requests)

    async def check(self) -> BackendCheck:
        """One image search for a neutral word: is JSON on, do image engines answer?"""
        params = self.params(SearchQuery(CHECK_QUERY, ResultKind.IMAGES))
        try:
            data, unanswered = await self._exchange(params)
        except JsonDisabledError:
            return BackendCheck(
                False,
                f"{self.where} refuses JSON: enable json in search.formats in its settings.yml "
                "(formats: [html, json]) and restart it",
            )
        except SearchBackendError as exc:
            return BackendCheck(False, str(exc))
        images = sum(1 for _ in self._hits(data, SearchQuery(CHECK_QUERY, ResultKind.IMAGES)))
        if not data["results"]:
            why = f": no engine answered ({_reasons(unanswered)})" if unanswered else ""
            return BackendCheck(
                False,
                f"{self.where} answered, but found no images for {CHECK_QUERY!r}{why}. Enable "
                "image engines (e.g. bing images, google images, duckduckgo images) in its "
                f"settings.yml, for the categories {self.options.categories_images!r}.",
            )
        if images == 0:
            return BackendCheck(
                False,
                f"{self.where} answered, but no result for {CHECK_QUERY!r} had an image: enable "
                "image engines (bing images, google images, duckduckgo images) in settings.yml",
            )
        note = f"; engines that did not answer: {_reasons(unanswered)}" if unanswered else ""
        return BackendCheck(True, f"{self.where} works: {images} image results{note}")

    async def aclose(self) -> None:
        """Nothing to release: the HTTP client belongs to the caller."""

    # -- answer handling

    def _check_status(self, raw: RawAnswer) -> None:
        where, status, body = self.where, raw.status, raw.body
        if status == 200:
            return
        if status == 403:
            raise JsonDisabledError(
                f"{where} refused JSON output (HTTP 403). Enable it by adding `json` to "
                "`search.formats` in the instance's settings.yml, then restart it."
            )
        if status == 429:
            retry_after = parse_retry_after(raw.headers.get("retry-after"))
            wait = f"; retry after {retry_after:g} s" if retry_after is not None else ""
            if retry_after is not None and retry_after > self.max_retry_wait:
                wait += f" (longer than the {self.max_retry_wait:g} s we wait; query skipped)"
            raise RateLimitedError(
                f"{where} is limiting our requests (HTTP 429){wait}. On your own instance, "
                "`server.limiter: false` in settings.yml turns its bot limiter off.",
                retry_after=retry_after,
            )
        if status >= 500:
            raise BackendUnavailableError(f"{where} failed (HTTP {status}): {snippet(body)}")
        hint = "; is the url in [[search.backends]] right?" if status == 404 else ""
        raise SearchBackendError(
            f"{where} answered HTTP {status} to {self.search_url}{hint}: {snippet(body)}"
        )

    def _decode(self, raw: RawAnswer) -> dict[str, Any]:
        where = self.where
        data = parse_json(raw.body, where=where, what="SearXNG JSON", content_type=raw.content_type)
        if not isinstance(data, dict) or not isinstance(data.get("results"), list):
            got = type(data).__name__
            if isinstance(data, dict):
                got = "an object with keys " + ", ".join(sorted(map(str, data))[:8])
            raise BadAnswerError(
                f"{where}: answer was not SearXNG JSON: expected an object with a "
                f"'results' list, got {got}"
            )
        return data

    def _note_unresponsive(self, value: Any) -> tuple[tuple[str, str], ...]:
        engines: list[tuple[str, str]] = []
        if isinstance(value, list):
            for item in value:
                if isinstance(item, list | tuple) and item:
                    reason = snippet(str(item[1]), 80) if len(item) > 1 and item[1] else ""
                    engines.append((snippet(str(item[0]), 60), reason or NO_REASON))
                elif isinstance(item, str):
                    engines.append((snippet(item, 60), NO_REASON))
        self.unresponsive_engines = engines
        if engines:
            log.debug("%s: unresponsive engines: %s", self.name, _reasons(engines))
        return tuple(engines)

    def _hits(self, data: dict[str, Any], query: SearchQuery) -> Iterator[SearchHit]:
        images_only = query.kind is ResultKind.IMAGES
        seen: set[tuple[str, str | None]] = set()
        for result in data["results"]:
            if not isinstance(result, dict):
                continue
            page_url = result_url(result.get("url"))
            if page_url is None:
                continue
            image_url = result_url(result.get("img_src"))
            if images_only and image_url is None:
                continue
            key = (page_url, image_url)
            if key in seen:
                continue
            seen.add(key)
            thumbnail = result_url(result.get("thumbnail_src")) or result_url(
                result.get("thumbnail")
            )
            yield SearchHit(
                backend=self.name,
                query=query,
                page_url=page_url,
                image_url=image_url,
                thumbnail_url=thumbnail,
                title=_text(result.get("title")),
                snippet=_text(result.get("content")),
                engine=_text(result.get("engine")),
            )


def _reasons(engines: tuple[tuple[str, str], ...] | list[tuple[str, str]]) -> str:
    return ", ".join(f"{e} ({r})" if r else e for e, r in engines)


@register_backend("searxng")
def _create(cfg: SearchBackendConfig, client: httpx.AsyncClient) -> SearxngBackend:
    return SearxngBackend(cfg, client)
