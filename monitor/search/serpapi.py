"""A search backend for SerpApi (``kind = "serpapi"``): Google, Google Images, Bing Images and
Yandex Images results through one API key.

Every search is ``GET {url}/search.json?engine=...`` on ``https://serpapi.com`` (or ``url``,
e.g. the loopback fake :class:`monitor.testing.serpapi.FakeSerpApi`), with the key from the
environment variable named by ``api_key_env`` (``SERPAPI_API_KEY`` by default) as the
``api_key`` parameter, as SerpApi documents.

``engines`` chooses which of SerpApi's engines are asked; default ``["google",
"google_images"]`` (two searches per person and name: within the free plan for one person
scanned daily with a name and up to three aliases, see ``docs/search.md``). It must hold
``google`` (the only web engine here) and at least one image engine, so that neither kind of
query goes unasked. One :meth:`SerpApiBackend.search`:

* a web query is one request to ``google``;
* an image query is one request to each configured image engine, sent together.

Each request is one SerpApi search (one credit). An engine that fails makes the answer
partial: it is listed in :attr:`SearchAnswer.unanswered` with the reason. When every engine
failed, the search fails: with SerpApi's own refusal (:class:`BackendRefusedError`: a rejected
key, no searches left; :class:`RateLimitedError`: the hourly limit) when that is why, else
:class:`EnginesUnresponsiveError`.

Safe search is off for every engine: ``safe=off`` (google, google_images), ``safeSearch=off``
(bing_images). For yandex_images we found no documented safe-search parameter and send none.
Paging is each engine's own: google ``start`` (10 results a page), google_images ``ijn`` (a
page index, about 100 images a page), bing_images ``first``/``count`` (``bing_count`` a page,
default 100), yandex_images ``p`` (a page index).

SerpApi reports errors as ``{"error": "..."}``, sometimes with HTTP 200. An answer whose error
says the engine returned no results ("Google hasn't returned any results for this query.") and
whose ``search_metadata.status`` is not ``Error`` is an empty answer: nothing was found. Any
other error, or status ``Error``, is a failure of that engine. Image results without an
``original`` image URL fall back to their page (``link``, else ``source`` when it is a URL).

Own keys in ``[[search.backends]]`` (:class:`SerpApiOptions`): ``gl``, ``hl`` (Google's
country and language), ``bing_count``.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from typing import Any

import httpx
from pydantic import Field

from monitor.config import SearchBackendConfig
from monitor.errors import ConfigError, SearchBackendError
from monitor.search.base import (
    BackendCheck,
    BackendOptions,
    BackendRefusedError,
    BackendUnavailableError,
    BadAnswerError,
    EnginesUnresponsiveError,
    RateLimitedError,
    SearchAnswer,
    api_base_url,
    api_key_from_env,
    backend_options,
    default_backend_name,
    get_answer,
    parse_json,
    register_backend,
    result_url,
    snippet,
)
from monitor.types import ResultKind, SearchHit, SearchQuery

__all__ = [
    "DEFAULT_ENGINES",
    "DEFAULT_URL",
    "ENGINES",
    "IMAGE_ENGINES",
    "WEB_ENGINES",
    "SerpApiBackend",
    "SerpApiOptions",
]

DEFAULT_URL = "https://serpapi.com"
SEARCH_PATH = "/search.json"
ACCOUNT_PATH = "/account.json"
KEYS_URL = "https://serpapi.com/manage-api-key"
DEFAULT_KEY_ENV = "SERPAPI_API_KEY"

WEB_ENGINES = ("google",)
IMAGE_ENGINES = ("google_images", "bing_images", "yandex_images")
ENGINES = WEB_ENGINES + IMAGE_ENGINES
DEFAULT_ENGINES = ("google", "google_images")

GOOGLE_PAGE = 10  # organic results per Google page (``start`` steps by this)

# "Google hasn't returned any results for this query." and the like: nothing found.
_NO_RESULTS = re.compile(r"(hasn't|has not|didn't|did not) return(ed)? any results", re.I)
_OUT_OF_SEARCHES = re.compile(r"run out of searches|searches for the month|out of credits", re.I)
_BAD_KEY = re.compile(r"invalid api key|api key .*(invalid|missing)", re.I)


class SerpApiOptions(BackendOptions):
    """SerpApi's own keys in ``[[search.backends]]``."""

    gl: str = Field(default="", max_length=5)  # Google country, e.g. "nl"; empty: default
    hl: str = Field(default="", max_length=10)  # Google language, e.g. "nl"; empty: default
    bing_count: int = Field(default=100, ge=1, le=150)  # Bing image results per page


def _text(value: Any) -> str:
    return " ".join(value.split()) if isinstance(value, str) else ""


class _EngineFailed(Exception):
    """One engine's request failed; ``error`` is what it would raise on its own."""

    def __init__(self, engine: str, error: SearchBackendError) -> None:
        super().__init__(str(error))
        self.engine = engine
        self.error = error


class SerpApiBackend:
    """Queries SerpApi's engines through a shared :class:`httpx.AsyncClient`."""

    kind = "serpapi"

    def __init__(self, cfg: SearchBackendConfig, client: httpx.AsyncClient) -> None:
        self.cfg = cfg
        self.options = backend_options(cfg, SerpApiOptions)
        self.base_url = api_base_url(cfg, DEFAULT_URL)
        self.engines = self._engines(cfg)
        self.api_key_env, self._key = api_key_from_env(cfg, DEFAULT_KEY_ENV, "SerpApi")
        self.client = client
        self.name = cfg.name or default_backend_name(self.kind, self.base_url)

    @staticmethod
    def _engines(cfg: SearchBackendConfig) -> tuple[str, ...]:
        engines = tuple(dict.fromkeys(e.strip() for e in cfg.engines)) or DEFAULT_ENGINES
        where = (
            f"[[search.backends]] kind = 'serpapi'{f', name = {cfg.name!r}' if cfg.name else ''}"
        )
        unknown = [e for e in engines if e not in ENGINES]
        if unknown:
            raise ConfigError(
                f"{where}: unknown engines {', '.join(map(repr, unknown))}; "
                f"known: {', '.join(ENGINES)}"
            )
        if not any(e in WEB_ENGINES for e in engines):
            raise ConfigError(
                f"{where}: engines must include 'google' (web results are searched with it)"
            )
        if not any(e in IMAGE_ENGINES for e in engines):
            raise ConfigError(
                f"{where}: engines must include an image engine ({', '.join(IMAGE_ENGINES)})"
            )
        return engines

    def __repr__(self) -> str:
        return f"SerpApiBackend(name={self.name!r}, engines={list(self.engines)!r})"

    @property
    def where(self) -> str:
        return "SerpApi" if self.base_url == DEFAULT_URL else f"SerpApi at {self.base_url}"

    def engines_for(self, kind: ResultKind) -> tuple[str, ...]:
        """The configured engines asked for a query of ``kind``."""
        wanted = IMAGE_ENGINES if kind is ResultKind.IMAGES else WEB_ENGINES
        return tuple(e for e in self.engines if e in wanted)

    def params(self, engine: str, query: SearchQuery, page: int = 1) -> dict[str, str]:
        """The parameters of ``engine``'s request for results page ``page`` of ``query``
        (without the key)."""
        if engine == "google":
            params = {"q": query.text, "safe": "off", "start": str((page - 1) * GOOGLE_PAGE)}
        elif engine == "google_images":
            params = {"q": query.text, "safe": "off", "ijn": str(page - 1)}
        elif engine == "bing_images":
            count = self.options.bing_count
            params = {
                "q": query.text,
                "safeSearch": "off",
                "first": str((page - 1) * count + 1),
                "count": str(count),
            }
        elif engine == "yandex_images":
            params = {"text": query.text, "p": str(page - 1)}
        else:  # pragma: no cover - engines are checked in __init__
            raise ValueError(engine)
        if engine.startswith("google"):
            if self.options.gl:
                params["gl"] = self.options.gl
            if self.options.hl:
                params["hl"] = self.options.hl
        return {"engine": engine, **params}

    async def search(self, query: SearchQuery, *, page: int = 1) -> SearchAnswer:
        """The answer for results page ``page`` of ``query``: one request per engine."""
        if page < 1:
            raise ValueError(f"page numbers start at 1, got {page}")
        engines = self.engines_for(query.kind)
        outcomes = await asyncio.gather(
            *(self._engine_search(e, query, page) for e in engines), return_exceptions=True
        )
        hits: list[SearchHit] = []
        failed: list[_EngineFailed] = []
        seen: set[tuple[str, str | None]] = set()
        for outcome in outcomes:
            if isinstance(outcome, _EngineFailed):
                failed.append(outcome)
            elif isinstance(outcome, BaseException):
                raise outcome
            else:
                for hit in outcome:
                    if (hit.page_url, hit.image_url) not in seen:
                        seen.add((hit.page_url, hit.image_url))
                        hits.append(hit)
        unanswered = tuple((f.engine, str(f.error)) for f in failed)
        if failed and len(failed) == len(engines):
            raise self._all_failed(failed, unanswered)
        return SearchAnswer(hits=hits, unanswered=unanswered, requests=len(engines))

    def _all_failed(
        self, failed: list[_EngineFailed], unanswered: tuple[tuple[str, str], ...]
    ) -> SearchBackendError:
        errors = [f.error for f in failed]
        first = errors[0]
        if all(isinstance(e, BackendRefusedError) for e in errors) or all(
            isinstance(e, RateLimitedError) for e in errors
        ):
            return first  # the account's problem, said once, clearly
        reasons = "; ".join(f"{engine}: {reason}" for engine, reason in unanswered)
        return EnginesUnresponsiveError(
            f"{self.where}: no engine answered: {reasons}", unanswered, requests=len(failed)
        )

    async def check(self) -> BackendCheck:
        """Ask SerpApi's Account API (free: it uses no search) whether the key works and how
        many searches are left."""
        try:
            data = await self._get(ACCOUNT_PATH, {}, engine="account")
        except SearchBackendError as exc:
            return BackendCheck(False, str(exc), None, 1)
        left = data.get("total_searches_left", data.get("plan_searches_left"))
        left = left if isinstance(left, int) and not isinstance(left, bool) else None
        plan = snippet(str(data.get("plan_name") or ""), 40) if data.get("plan_name") else ""
        plan_note = f" ({plan})" if plan else ""
        engines = ", ".join(self.engines)
        if left == 0:
            return BackendCheck(
                False,
                f"the SerpApi account of the key in ${self.api_key_env}{plan_note} has no "
                "searches left this month: searches fail until it renews, or choose a larger "
                "plan at https://serpapi.com/pricing",
                0,
                1,
            )
        quota = f"; {left} searches left this month" if left is not None else ""
        return BackendCheck(
            True,
            f"{self.where} works with the key in ${self.api_key_env}{plan_note}{quota}; "
            f"engines: {engines}",
            left,
            1,
        )

    async def aclose(self) -> None:
        """Nothing to release: the HTTP client belongs to the caller."""

    # -- one engine

    async def _engine_search(self, engine: str, query: SearchQuery, page: int) -> list[SearchHit]:
        try:
            data = await self._get(SEARCH_PATH, self.params(engine, query, page), engine=engine)
            return list(self._hits(engine, data, query))
        except SearchBackendError as exc:
            raise _EngineFailed(engine, exc) from None

    async def _get(self, path: str, params: dict[str, str], *, engine: str) -> dict[str, Any]:
        where = f"{self.where} ({engine})"
        raw = await get_answer(
            self.client,
            self.base_url + path,
            params={**params, "api_key": self._key},
            headers={"Accept": "application/json"},
            timeout=self.cfg.timeout,
            where=where,
            secrets=(self._key,),
        )
        try:
            data = parse_json(
                raw.body, where=where, what="a SerpApi answer", content_type=raw.content_type
            )
        except BadAnswerError:
            if raw.status == 200:
                raise
            data = None
        if not isinstance(data, dict):
            if raw.status != 200:
                raise self._status_error(raw.status, snippet(raw.body, secrets=(self._key,)), where)
            raise BadAnswerError(
                f"{where}: answer was not a SerpApi answer: got {type(data).__name__}"
            )
        error = data.get("error")
        said = snippet(str(error), secrets=(self._key,)) if error else ""
        if raw.status != 200:
            raise self._status_error(
                raw.status, said or snippet(raw.body, secrets=(self._key,)), where
            )
        metadata = data.get("search_metadata")
        search_status = metadata.get("status") if isinstance(metadata, dict) else None
        if error is not None:
            if _NO_RESULTS.search(str(error)) and search_status != "Error":
                data["_empty"] = True  # "X hasn't returned any results": nothing found
                return data
            raise self._said_error(said, where, failed=search_status == "Error")
        if search_status == "Error":
            raise BackendUnavailableError(f"{where}: the search failed (status Error)")
        return data

    def _said_error(self, said: str, where: str, *, failed: bool) -> SearchBackendError:
        if _BAD_KEY.search(said):
            return self._status_error(401, said, where)
        if _OUT_OF_SEARCHES.search(said):
            return self._status_error(429, said, where)
        if failed:
            return BackendUnavailableError(f"{where}: the search failed: {said}")
        return SearchBackendError(f"{where} answered with an error: {said}")

    def _status_error(self, status: int, said: str, where: str) -> SearchBackendError:
        env = self.api_key_env
        if status == 401:
            return BackendRefusedError(
                f"SerpApi rejected the API key in ${env} (HTTP 401: {said}). Copy the key "
                f"again from {KEYS_URL} into ${env}."
            )
        if status == 403:
            return BackendRefusedError(
                f"SerpApi refused the key in ${env} (HTTP 403: {said}); the account may be "
                "deleted or not allowed this search"
            )
        if status == 429 and _OUT_OF_SEARCHES.search(said):
            return BackendRefusedError(
                f"the SerpApi account of the key in ${env} has run out of searches (HTTP 429: "
                f"{said}). Searches fail until the plan renews, or choose a larger plan at "
                "https://serpapi.com/pricing."
            )
        if status == 429:
            return RateLimitedError(
                f"SerpApi is limiting the key in ${env}: more searches this hour than its plan "
                f"allows (HTTP 429: {said})"
            )
        if status == 400:
            return BackendRefusedError(f"{where} did not accept the request (HTTP 400: {said})")
        if status >= 500:
            return BackendUnavailableError(f"{where} failed (HTTP {status}: {said})")
        return SearchBackendError(f"{where} answered HTTP {status}: {said}")

    # -- results

    def _hits(self, engine: str, data: dict[str, Any], query: SearchQuery) -> Iterator[SearchHit]:
        key = "organic_results" if engine == "google" else "images_results"
        results = data.get(key)
        if results is None:
            if data.get("_empty") or isinstance(data.get("search_metadata"), dict):
                return  # answered, with no results of this kind
            raise BadAnswerError(
                f"{self.where} ({engine}): answer was not a SerpApi answer: no {key} "
                f"(keys: {snippet(', '.join(sorted(map(str, data))[:8]), 80)})"
            )
        if not isinstance(results, list):
            raise BadAnswerError(
                f"{self.where} ({engine}): answer was not a SerpApi answer: {key} is not a list"
            )
        for result in results:
            if not isinstance(result, dict):
                continue
            page_url = result_url(result.get("link")) or result_url(result.get("source"))
            image_url = result_url(result.get("original")) if engine != "google" else None
            if page_url is None:
                if image_url is None:
                    continue
                page_url = image_url
            yield SearchHit(
                backend=self.name,
                query=query,
                page_url=page_url,
                image_url=image_url,
                thumbnail_url=result_url(result.get("thumbnail")),
                title=_text(result.get("title")),
                snippet=_text(result.get("snippet")),
                engine=engine,
            )


@register_backend("serpapi")
def _create(cfg: SearchBackendConfig, client: httpx.AsyncClient) -> SerpApiBackend:
    return SerpApiBackend(cfg, client)
