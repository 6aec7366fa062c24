"""A search backend for the Brave Search API (``kind = "brave"``).

Web results come from ``GET /res/v1/web/search``, image results from
``GET /res/v1/images/search``, on ``https://api.search.brave.com`` (or ``url``, e.g. the
loopback fake :class:`monitor.testing.brave.FakeBrave`). The key is read from the environment
variable named by ``api_key_env`` (``BRAVE_API_KEY`` by default) and sent as
``X-Subscription-Token``.

What is sent, and why:

* ``safesearch=off`` always: web search defaults to ``moderate`` and image search to
  ``strict``, which hide exactly the images this tool looks for.
* ``spellcheck=false``: a name is not a typo; Brave would otherwise search a "corrected" one.
* Web: ``count=20`` (the most) and ``offset`` = results page - 1 (Brave allows 0-9), so pages
  1 to 10 can be asked; a later page is answered empty without a request (``requests=0``).
* Images: ``count`` = ``images_count`` (default 100, at most 200). The image endpoint has no
  paging: page 1 is the only page; a later page is answered empty without a request.

An image result's page is its ``url``, the image ``properties.url`` and the thumbnail
``thumbnail.src``; a result without an image URL becomes a hit for its page (the page is then
fetched and its images extracted).

Every answer carries ``X-RateLimit-Limit/Remaining/Reset`` with one comma-separated value per
window (per second, per month): :func:`parse_rate_headers` reads them, and the answer's
:class:`RateInfo` describes the window that binds first (the fewest requests left; of those the
longest to reset). Requests to Brave are sent one at a time, and after an answer that says the
per-second window is spent, the next waits for its reset. A 429 is a :class:`RateLimitedError`
whose ``retry_after`` is the reset of the exhausted window; a short one (at most
:attr:`BraveBackend.max_retry_wait` s, the per-second window) is waited out and asked once
more.

Own keys in ``[[search.backends]]`` (:class:`BraveOptions`): ``country``, ``search_lang``,
``images_count``.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import Field

from monitor.config import SearchBackendConfig
from monitor.errors import SearchBackendError
from monitor.search.base import (
    BackendCheck,
    BackendOptions,
    BackendRefusedError,
    BackendUnavailableError,
    BadAnswerError,
    RateInfo,
    RateLimitedError,
    RawAnswer,
    SearchAnswer,
    api_base_url,
    api_key_from_env,
    backend_options,
    default_backend_name,
    get_answer,
    parse_json,
    parse_retry_after,
    register_backend,
    result_url,
    retry_once_if_short,
    snippet,
)
from monitor.types import ResultKind, SearchHit, SearchQuery

__all__ = [
    "DEFAULT_URL",
    "IMAGES_PATH",
    "WEB_PATH",
    "BraveBackend",
    "BraveOptions",
    "RateWindow",
    "parse_rate_headers",
]

DEFAULT_URL = "https://api.search.brave.com"
WEB_PATH = "/res/v1/web/search"
IMAGES_PATH = "/res/v1/images/search"
KEYS_URL = "https://api-dashboard.search.brave.com/app/keys"
DEFAULT_KEY_ENV = "BRAVE_API_KEY"

WEB_COUNT = 20  # the most web results Brave gives per request
WEB_PAGES = 10  # offset may be 0-9
CHECK_QUERY = "weather"
"""What :meth:`BraveBackend.check` searches for: a neutral word, never a person's name."""

_TAGS = re.compile(r"<[^>]{0,200}>")  # Brave marks matches in descriptions with <strong>


class BraveOptions(BackendOptions):
    """Brave's own keys in ``[[search.backends]]``."""

    country: str = Field(default="", max_length=3)  # e.g. "NL", "ALL"; empty: Brave's default
    search_lang: str = Field(default="", max_length=10)  # e.g. "nl"; empty: Brave's default
    images_count: int = Field(default=100, ge=1, le=200)  # image results per (only) request


@dataclass(frozen=True, slots=True)
class RateWindow:
    """One of Brave's rate-limit windows (``X-RateLimit-*``, one value per window)."""

    limit: int | None
    remaining: int | None
    reset_seconds: float | None


def _numbers(value: str | None) -> list[float | None]:
    if not value:
        return []
    out: list[float | None] = []
    for part in value.split(","):
        try:
            number = float(part.strip())
        except ValueError:
            out.append(None)
            continue
        out.append(number if number >= 0 and number != float("inf") else None)
    return out


def parse_rate_headers(headers: Mapping[str, str]) -> list[RateWindow]:
    """Brave's windows from ``X-RateLimit-Limit/Remaining/Reset``, shortest first as sent.

    ``"1, 15000"`` / ``"0, 14999"`` / ``"1, 1419704"`` gives a per-second and a per-month
    window. Unreadable values are ``None``; no headers, no windows."""
    limits = _numbers(headers.get("x-ratelimit-limit"))
    remaining = _numbers(headers.get("x-ratelimit-remaining"))
    resets = _numbers(headers.get("x-ratelimit-reset"))
    count = max(len(limits), len(remaining), len(resets))

    def at(values: list[float | None], i: int) -> float | None:
        return values[i] if i < len(values) else None

    windows = []
    for i in range(count):
        lim, rem = at(limits, i), at(remaining, i)
        windows.append(
            RateWindow(
                None if lim is None else int(lim),
                None if rem is None else int(rem),
                at(resets, i),
            )
        )
    return windows


def binding_window(windows: list[RateWindow]) -> RateWindow | None:
    """The window that stops us first: the fewest requests left, then the longest reset."""
    known = [w for w in windows if w.remaining is not None]
    if not known:
        return windows[0] if windows else None
    return min(known, key=lambda w: (w.remaining, -(w.reset_seconds or 0.0)))


def rate_info(windows: list[RateWindow]) -> RateInfo | None:
    window = binding_window(windows)
    if window is None:
        return None
    return RateInfo(window.limit, window.remaining, window.reset_seconds)


def quota_remaining(windows: list[RateWindow]) -> int | None:
    """Requests left in the longest window (the month), when Brave says."""
    known = [w for w in windows if w.remaining is not None]
    if not known:
        return None
    return max(known, key=lambda w: w.reset_seconds or 0.0).remaining


def _text(value: Any) -> str:
    if not isinstance(value, str):
        return ""
    return " ".join(_TAGS.sub("", value).split())


def _field(obj: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:g} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} days"


class BraveBackend:
    """Queries the Brave Search API through a shared :class:`httpx.AsyncClient`."""

    kind = "brave"
    max_retry_wait = 2.0
    """A 429 asking us to wait at most this many seconds (the per-second window) is waited
    out and the query asked once more. Also the longest pause :meth:`_send` makes between
    requests for a spent short window."""

    def __init__(self, cfg: SearchBackendConfig, client: httpx.AsyncClient) -> None:
        self.cfg = cfg
        self.options = backend_options(cfg, BraveOptions)
        self.base_url = api_base_url(cfg, DEFAULT_URL)
        self.api_key_env, self._key = api_key_from_env(cfg, DEFAULT_KEY_ENV, "Brave Search")
        self.client = client
        self.name = cfg.name or default_backend_name(self.kind, self.base_url)
        #: The rate-limit windows of the latest answer (see :func:`parse_rate_headers`).
        self.rate_windows: list[RateWindow] = []
        self._gate = asyncio.Lock()
        self._not_before = 0.0  # time.monotonic() before which no request is sent

    def __repr__(self) -> str:
        return f"BraveBackend(name={self.name!r}, url={self.base_url!r})"

    @property
    def where(self) -> str:
        return (
            "Brave Search" if self.base_url == DEFAULT_URL else f"Brave Search at {self.base_url}"
        )

    def request(self, query: SearchQuery, page: int = 1) -> tuple[str, dict[str, str]] | None:
        """``(endpoint URL, parameters)`` for results page ``page`` of ``query``, or None when
        Brave has no such page (web: after page 10; images: after page 1)."""
        params = {"q": query.text, "safesearch": "off", "spellcheck": "false"}
        if query.kind is ResultKind.IMAGES:
            if page > 1:
                return None
            path = IMAGES_PATH
            params["count"] = str(self.options.images_count)
        else:
            if page > WEB_PAGES:
                return None
            path = WEB_PATH
            params.update(count=str(WEB_COUNT), offset=str(page - 1), result_filter="web")
        if self.options.country:
            params["country"] = self.options.country
        if self.options.search_lang:
            params["search_lang"] = self.options.search_lang
        return self.base_url + path, params

    async def search(self, query: SearchQuery, *, page: int = 1) -> SearchAnswer:
        """The answer for results page ``page`` of ``query``."""
        if page < 1:
            raise ValueError(f"page numbers start at 1, got {page}")
        request = self.request(query, page)
        if request is None:
            return SearchAnswer(hits=[], requests=0)
        url, params = request

        async def attempt(requests: int) -> SearchAnswer:
            data, rate = await self._exchange(url, params)
            return SearchAnswer(hits=list(self._hits(data, query)), requests=requests, rate=rate)

        return await retry_once_if_short(attempt, max_wait=self.max_retry_wait, name=self.name)

    async def check(self) -> BackendCheck:
        """One web search for a neutral word, one result: is the key good, what is left?"""
        url = self.base_url + WEB_PATH
        params = {"q": CHECK_QUERY, "count": "1", "safesearch": "off", "result_filter": "web"}
        try:
            await self._exchange(url, params)
        except SearchBackendError as exc:
            return BackendCheck(False, str(exc), quota_remaining(self.rate_windows), 1)
        left = quota_remaining(self.rate_windows)
        quota = f"; {left} requests left in this plan's period" if left is not None else ""
        return BackendCheck(
            True, f"{self.where} works with the key in ${self.api_key_env}{quota}", left, 1
        )

    async def aclose(self) -> None:
        """Nothing to release: the HTTP client belongs to the caller."""

    # -- one exchange

    async def _exchange(
        self, url: str, params: dict[str, str]
    ) -> tuple[dict[str, Any], RateInfo | None]:
        raw, windows = await self._send(url, params)
        if raw.status != 200:
            raise self._error(raw, windows, images=url.endswith(IMAGES_PATH))
        data = parse_json(
            raw.body, where=self.where, what="a Brave Search answer", content_type=raw.content_type
        )
        if not isinstance(data, dict):
            raise BadAnswerError(
                f"{self.where}: answer was not a Brave Search answer: got {type(data).__name__}"
            )
        if data.get("type") == "ErrorResponse" or isinstance(data.get("error"), dict):
            raise self._error(raw, windows, images=url.endswith(IMAGES_PATH), data=data)
        return data, rate_info(windows)

    def _error(
        self,
        raw: RawAnswer,
        windows: list[RateWindow],
        *,
        images: bool,
        data: dict[str, Any] | None = None,
    ) -> SearchBackendError:
        """The error for a refused request, from its status and Brave's error object."""
        if data is None:
            try:
                parsed = parse_json(raw.body, where=self.where, what="JSON")
            except BadAnswerError:
                parsed = None
            data = parsed if isinstance(parsed, dict) else {}
        error = data.get("error") if isinstance(data.get("error"), dict) else {}
        code = snippet(str(error.get("code") or ""), 60) if error.get("code") else ""
        detail = snippet(str(error.get("detail") or ""), 120) if error.get("detail") else ""
        status = raw.status if raw.status != 200 else _int(error.get("status")) or 200
        said = ", ".join(x for x in (code, detail) if x) or snippet(raw.body)
        where, env = self.where, self.api_key_env
        if status == 401:
            return BackendRefusedError(
                f"Brave rejected the API key in ${env} (HTTP 401, {said}). Copy the key again "
                f"from {KEYS_URL} into ${env}; a new key needs a subscription (the free plan "
                "too) before it works."
            )
        if status == 403:
            what = "image search" if images else "web search"
            return BackendRefusedError(
                f"Brave refused {what} for the key in ${env} (HTTP 403, {said}): the key's "
                "plan may not include it; see the subscriptions in the Brave Search API "
                "dashboard."
            )
        if status == 422:
            return BackendRefusedError(
                f"Brave did not accept the request (HTTP 422, {said}). Check country and "
                "search_lang in [[search.backends]]; a malformed key is refused this way too."
            )
        if status == 429:
            return self._rate_limited(raw, windows, said)
        if status >= 500:
            return BackendUnavailableError(f"{where} failed (HTTP {status}, {said})")
        if status == 200:
            return BackendRefusedError(f"{where} answered with an error: {said}")
        return SearchBackendError(f"{where} answered HTTP {status} ({said})")

    def _rate_limited(
        self, raw: RawAnswer, windows: list[RateWindow], said: str
    ) -> RateLimitedError:
        retry_after = parse_retry_after(raw.headers.get("retry-after"))
        spent = [w for w in windows if w.remaining == 0 and w.reset_seconds is not None]
        window = max(spent, key=lambda w: w.reset_seconds or 0.0) if spent else None
        if retry_after is None and window is not None:
            retry_after = window.reset_seconds
        if window is not None and (window.reset_seconds or 0) > 86400:
            limit = f"{window.limit} requests" if window.limit is not None else "its requests"
            return RateLimitedError(
                f"the plan of the Brave API key in ${self.api_key_env} has used up {limit} for "
                f"this period; it resets in {_duration(window.reset_seconds or 0)} "
                f"(HTTP 429, {said}). Searches fail until then, or choose a larger plan.",
                retry_after=retry_after,
            )
        wait = f"; retry after {_duration(retry_after)}" if retry_after is not None else ""
        return RateLimitedError(
            f"{self.where} is limiting our requests (HTTP 429, {said}){wait}",
            retry_after=retry_after,
        )

    async def _send(self, url: str, params: dict[str, str]) -> tuple[RawAnswer, list[RateWindow]]:
        """One request, paced: requests go one at a time, and when an answer says a short
        window (per second) is spent, the next waits for its reset. Brave's cheaper plans allow
        1 request a second; a scan's searches, started together, would otherwise be refused."""
        async with self._gate:
            wait = self._not_before - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            raw = await get_answer(
                self.client,
                url,
                params=params,
                headers={"X-Subscription-Token": self._key, "Accept": "application/json"},
                timeout=self.cfg.timeout,
                where=self.where,
                secrets=(self._key,),
            )
            windows = parse_rate_headers(raw.headers)
            if windows:
                self.rate_windows = windows
            spent = [
                w.reset_seconds
                for w in windows
                if w.remaining == 0
                and w.reset_seconds is not None
                and w.reset_seconds <= self.max_retry_wait
            ]
            if spent:
                self._not_before = time.monotonic() + max(spent)
        return raw, windows

    # -- results

    def _hits(self, data: dict[str, Any], query: SearchQuery) -> Iterator[SearchHit]:
        if query.kind is ResultKind.IMAGES:
            results = data.get("results")
            if results is None and data.get("type") == "images":
                results = []
        else:
            web = data.get("web")
            if web is None and data.get("type") == "search":
                results = []  # Brave leaves "web" out when it found no web page
            else:
                results = web.get("results") if isinstance(web, dict) else None
        if not isinstance(results, list):
            keys = ", ".join(sorted(map(str, data))[:8])
            raise BadAnswerError(
                f"{self.where}: answer was not a Brave Search answer: no results list "
                f"(keys: {snippet(keys, 80)})"
            )
        seen: set[tuple[str, str | None]] = set()
        for result in results:
            if not isinstance(result, dict):
                continue
            page_url = result_url(result.get("url"))
            image_url = (
                result_url(_field(result, "properties", "url"))
                if query.kind is ResultKind.IMAGES
                else None
            )
            if page_url is None:
                if image_url is None:
                    continue
                page_url = image_url
            key = (page_url, image_url)
            if key in seen:
                continue
            seen.add(key)
            yield SearchHit(
                backend=self.name,
                query=query,
                page_url=page_url,
                image_url=image_url,
                thumbnail_url=result_url(_field(result, "thumbnail", "src")),
                title=_text(result.get("title")),
                snippet=_text(result.get("description")),
                engine="brave",
            )


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


@register_backend("brave")
def _create(cfg: SearchBackendConfig, client: httpx.AsyncClient) -> BraveBackend:
    return BraveBackend(cfg, client)
