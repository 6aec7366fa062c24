"""A search backend speaking SearXNG's JSON API (``GET /search?q=...&format=json``).

SearXNG only answers JSON when the instance allows it: ``json`` must be listed under
``search.formats`` in its ``settings.yml``. Image answers mix in general results that carry
no image; only results with an ``img_src`` become image hits.

A rate-limited answer (HTTP 429) with a short ``Retry-After`` (at most
:attr:`SearxngBackend.max_retry_wait` seconds) is waited out and the query asked once more;
a longer or missing one is a :class:`RateLimitedError`. The whole answer must arrive within the
backend's ``timeout`` and be at most :data:`MAX_ANSWER_BYTES` long.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from monitor.config import SearchBackendConfig
from monitor.errors import ConfigError, SearchBackendError
from monitor.fetch import ACCEPT_ENCODING, UndecodableBody, read_bounded
from monitor.search.base import (
    BackendUnavailableError,
    BadAnswerError,
    EnginesUnresponsiveError,
    RateLimitedError,
    SearchAnswer,
    parse_retry_after,
    register_backend,
)
from monitor.types import ResultKind, SearchHit, SearchQuery

__all__ = ["JsonDisabledError", "SearxngBackend", "endpoint_url"]

log = logging.getLogger(__name__)

MAX_ANSWER_BYTES = 10_000_000
"""A longer answer is not read: no results page of a search engine is anywhere near this."""


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


def _http_url(value: Any) -> str | None:
    """An absolute http(s) URL from a result field, or None. ``//host/x`` becomes https."""
    if not isinstance(value, str):
        return None
    text = value.strip()
    if text.startswith("//"):
        text = "https:" + text
    try:
        parts = urlsplit(text)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        return None
    return text


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def _snippet(body: bytes, limit: int = 120) -> str:
    text = body[:limit].decode("utf-8", "replace")
    text = " ".join(text.split())
    return text + ("..." if len(body) > limit else "") if text else "an empty body"


class SearxngBackend:
    """Queries one SearXNG instance through a shared :class:`httpx.AsyncClient`."""

    kind = "searxng"
    max_retry_wait = 10.0
    """A 429 asking us to wait at most this many seconds is waited out and retried once."""

    def __init__(self, cfg: SearchBackendConfig, client: httpx.AsyncClient) -> None:
        self.cfg = cfg
        self.client = client
        self.instance_url, self.search_url = endpoint_url(cfg.url)
        self.name = cfg.name or _default_name(self.instance_url)
        #: ``(engine, reason)`` pairs SearXNG reported as unresponsive in the latest answer.
        self.unresponsive_engines: list[tuple[str, str]] = []

    def __repr__(self) -> str:
        return f"SearxngBackend(name={self.name!r}, url={self.search_url!r})"

    def params(self, query: SearchQuery, page: int = 1) -> dict[str, str]:
        """The query-string parameters sent for ``query`` and results page ``page``."""
        categories = (
            self.cfg.categories_images
            if query.kind is ResultKind.IMAGES
            else self.cfg.categories_web
        )
        params = {
            "q": query.text,
            "format": "json",
            "categories": categories,
            "pageno": str(page),
            "safesearch": str(self.cfg.safesearch),
        }
        if self.cfg.language:
            params["language"] = self.cfg.language
        return params

    async def search(self, query: SearchQuery, *, page: int = 1) -> SearchAnswer:
        """The answer for results page ``page`` of ``query``; image queries keep only images.

        Engines SearXNG lists as unresponsive make the answer partial; when it found nothing
        and listed unresponsive engines, no engine answered: :class:`EnginesUnresponsiveError`.
        """
        if page < 1:
            raise ValueError(f"page numbers start at 1, got {page}")
        where = f"SearXNG at {self.instance_url}"
        try:
            return await self._search_once(query, page, where, requests=1)
        except RateLimitedError as exc:
            wait = exc.retry_after
            if wait is None or wait > self.max_retry_wait:
                raise
            log.info("%s: rate limited; retrying once in %.1f s", self.name, wait)
            await asyncio.sleep(wait)
        try:
            return await self._search_once(query, page, where, requests=2)
        except RateLimitedError as exc:
            raise RateLimitedError(
                f"{exc} (still limited after waiting once as asked)", exc.retry_after
            ) from None

    async def _search_once(
        self, query: SearchQuery, page: int, where: str, *, requests: int
    ) -> SearchAnswer:
        try:
            async with (
                asyncio.timeout(self.cfg.timeout),
                self.client.stream(
                    "GET",
                    self.search_url,
                    params=self.params(query, page),
                    headers={"Accept-Encoding": ACCEPT_ENCODING},
                    timeout=self.cfg.timeout,
                    follow_redirects=True,
                ) as resp,
            ):
                body, cut = await read_bounded(resp, MAX_ANSWER_BYTES)
        except UndecodableBody as exc:
            raise BadAnswerError(f"{where}: answer could not be decoded ({exc})") from None
        except (httpx.TimeoutException, TimeoutError) as exc:
            raise BackendUnavailableError(
                f"{where} did not answer within {self.cfg.timeout:g} s ({type(exc).__name__})"
            ) from exc
        except httpx.ConnectError as exc:
            raise BackendUnavailableError(
                f"could not connect to {where} ({exc or type(exc).__name__}); is it running, "
                "and is the url in [[search.backends]] right?"
            ) from exc
        except httpx.HTTPError as exc:
            raise BackendUnavailableError(f"{where} failed: {exc or type(exc).__name__}") from exc
        if cut:
            raise BadAnswerError(f"{where}: answer not read: {cut} for a search answer")
        self._check_status(resp, body, where)
        data = self._decode(resp, body, where)
        hits = list(self._hits(data, query))
        unanswered = tuple(self.unresponsive_engines)
        if unanswered and not data["results"]:
            reasons = ", ".join(f"{e} ({r})" if r else e for e, r in unanswered)
            raise EnginesUnresponsiveError(
                f"{where}: no search engine answered: {reasons}", unanswered
            )
        return SearchAnswer(hits=hits, unanswered=unanswered, requests=requests)

    async def aclose(self) -> None:
        """Nothing to release: the HTTP client belongs to the caller."""

    # -- answer handling

    def _check_status(self, resp: httpx.Response, body: bytes, where: str) -> None:
        status = resp.status_code
        if status == 200:
            return
        if status == 403:
            raise JsonDisabledError(
                f"{where} refused JSON output (HTTP 403). Enable it by adding `json` to "
                "`search.formats` in the instance's settings.yml, then restart it."
            )
        if status == 429:
            retry_after = parse_retry_after(resp.headers.get("retry-after"))
            wait = f"; retry after {retry_after:g} s" if retry_after is not None else ""
            if retry_after is not None and retry_after > self.max_retry_wait:
                wait += f" (longer than the {self.max_retry_wait:g} s we wait; query skipped)"
            raise RateLimitedError(
                f"{where} is limiting our requests (HTTP 429){wait}. On your own instance, "
                "`server.limiter: false` in settings.yml turns its bot limiter off.",
                retry_after=retry_after,
            )
        if status >= 500:
            raise BackendUnavailableError(f"{where} failed (HTTP {status}): {_snippet(body)}")
        hint = "; is the url in [[search.backends]] right?" if status == 404 else ""
        raise SearchBackendError(
            f"{where} answered HTTP {status} to {self.search_url}{hint}: {_snippet(body)}"
        )

    def _decode(self, resp: httpx.Response, body: bytes, where: str) -> dict[str, Any]:
        try:
            data = json.loads(body)
        except ValueError as exc:
            ctype = resp.headers.get("content-type", "no content type")
            raise BadAnswerError(
                f"{where}: answer was not SearXNG JSON: {ctype}, {_snippet(body)}"
            ) from exc
        if not isinstance(data, dict) or not isinstance(data.get("results"), list):
            got = type(data).__name__
            if isinstance(data, dict):
                got = "an object with keys " + ", ".join(sorted(map(str, data))[:8])
            raise BadAnswerError(
                f"{where}: answer was not SearXNG JSON: expected an object with a "
                f"'results' list, got {got}"
            )
        self._note_unresponsive(data.get("unresponsive_engines"))
        return data

    def _note_unresponsive(self, value: Any) -> None:
        engines: list[tuple[str, str]] = []
        if isinstance(value, list):
            for item in value:
                if isinstance(item, list | tuple) and item:
                    reason = str(item[1]) if len(item) > 1 else ""
                    engines.append((str(item[0]), reason))
                elif isinstance(item, str):
                    engines.append((item, ""))
        self.unresponsive_engines = engines
        if engines:
            log.debug(
                "%s: unresponsive engines: %s",
                self.name,
                ", ".join(f"{e} ({r})" if r else e for e, r in engines),
            )

    def _hits(self, data: dict[str, Any], query: SearchQuery) -> Iterator[SearchHit]:
        images_only = query.kind is ResultKind.IMAGES
        seen: set[tuple[str, str | None]] = set()
        for result in data["results"]:
            if not isinstance(result, dict):
                continue
            page_url = _http_url(result.get("url"))
            if page_url is None:
                continue
            image_url = _http_url(result.get("img_src"))
            if images_only and image_url is None:
                continue
            key = (page_url, image_url)
            if key in seen:
                continue
            seen.add(key)
            thumbnail = _http_url(result.get("thumbnail_src")) or _http_url(result.get("thumbnail"))
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


@register_backend("searxng")
def _create(cfg: SearchBackendConfig, client: httpx.AsyncClient) -> SearxngBackend:
    return SearxngBackend(cfg, client)
