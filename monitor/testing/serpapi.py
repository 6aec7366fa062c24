"""A fake SerpApi for tests, benchmarks and scans, served on a :class:`LoopbackWeb`.

It answers ``GET /search.json`` for the engines ``google``, ``google_images``, ``bing_images``
and ``yandex_images`` and ``GET /account.json``, in the documented shapes and with the
documented errors, and records every search::

    fake = FakeSerpApi(api_key="test-key", searches_per_month=250)
    fake.add_result("google", "Jane Doe", {"link": page, "title": "...", "snippet": "..."})
    fake.add_result("google_images", "Jane Doe",
                    {"link": page, "original": image, "thumbnail": thumb, "title": "..."})
    with LoopbackWeb() as web:
        url = fake.install(web)
        # [[search.backends]] kind = "serpapi", url = url, and $SERPAPI_API_KEY = "test-key"
        ...
        fake.requests  # [SerpApiRequest(engine="google_images", params={...}), ...]

Constructor: ``FakeSerpApi(*, api_key="test-key", searches_per_month=250, plan_name="Free
Plan")``:

* ``api_key``: the one ``api_key`` accepted; another (or none) is answered HTTP 401
  ``{"error": "Invalid API key. ..."}`` like SerpApi does.
* ``searches_per_month``: searches the plan allows; only successful searches count (as
  SerpApi bills), an empty answer included. When they are used up the answer is HTTP 429
  ``{"error": "Your account has run out of searches."}``. ``/account.json`` reports them
  (``plan_searches_left``, ``total_searches_left``, ``this_month_usage``) and costs nothing.

An engine with no results for a query answers HTTP 200 with ``search_metadata.status``
``Success`` and ``"error": "Google hasn't returned any results for this query."`` (Bing,
Yandex alike), as SerpApi does. Safe search is modelled: a result added with ``"adult": True``
is served by google/google_images only with ``safe=off`` and by bing_images only with
``safeSearch=off``. Paging is each engine's: google ``start`` (10 a page), google_images
``ijn`` (100 a page), bing_images ``first`` (1-based) and ``count`` (default 35), yandex_images
``p`` (30 a page); yandex takes its query as ``text``, the others as ``q`` (400 when missing).

``fail_next(status=..., error=..., engine=None, search_status=None, body=None)`` queues one
odd answer (for one engine, or for whichever search comes next), e.g. ``fail_next(200,
error="...", search_status="Error")`` for a failed search reported with HTTP 200.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from monitor.testing.web import LoopbackWeb, Request, Response, query_words

__all__ = ["FakeSerpApi", "SerpApiRequest"]

SEARCH_PATH = "/search.json"
ACCOUNT_PATH = "/account.json"
_JSON = "application/json; charset=utf-8"
INVALID_KEY = "Invalid API key. Your API key should be here: https://serpapi.com/manage-api-key"
OUT_OF_SEARCHES = "Your account has run out of searches."

_PAGE = {"google": 10, "google_images": 100, "yandex_images": 30}
_BRAND = {
    "google": "Google",
    "google_images": "Google",
    "bing_images": "Bing",
    "yandex_images": "Yandex",
}


@dataclass(frozen=True)
class SerpApiRequest:
    """One ``/search.json`` request the fake received."""

    engine: str
    params: dict[str, str]  # the first value of each parameter (api_key included)


@dataclass
class _Failure:
    status: int
    error: str | None
    engine: str | None
    search_status: str | None
    body: bytes | None


def _json(status: int, data: Mapping[str, Any]) -> Response:
    return Response(status, json.dumps(data).encode(), _JSON)


class FakeSerpApi:
    """An in-memory SerpApi: results added per (engine, query)."""

    def __init__(
        self,
        *,
        api_key: str = "test-key",
        searches_per_month: int = 250,
        plan_name: str = "Free Plan",
    ) -> None:
        self.api_key = api_key
        self.searches_per_month = searches_per_month
        self.plan_name = plan_name
        self.used_this_month = 0
        self.requests: list[SerpApiRequest] = []
        self.account_requests = 0
        self._results: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self._failures: list[_Failure] = []
        self._lock = threading.Lock()

    # -- setting up

    def add_result(self, engine: str, query: str, result: Mapping[str, Any]) -> None:
        """Answer ``engine`` searches for ``query`` with ``result``, in SerpApi's shape
        (google: ``link``, ``title``, ``snippet``; image engines: ``link`` of the page,
        ``original`` image, ``thumbnail``, ``source``, ``title``)."""
        if engine not in _BRAND:
            raise ValueError(f"the fake does not answer engine {engine!r}")
        with self._lock:
            self._results.setdefault((engine, query), []).append(dict(result))

    def add_results(self, engine: str, query: str, results: Iterable[Mapping[str, Any]]) -> None:
        for result in results:
            self.add_result(engine, query, result)

    def fail_next(
        self,
        status: int = 200,
        *,
        error: str | None = None,
        engine: str | None = None,
        search_status: str | None = None,
        body: bytes | str | None = None,
        times: int = 1,
    ) -> None:
        """Answer the next ``times`` searches (of ``engine``, or any) with ``status`` and
        ``{"error": error}`` (with ``search_metadata.status`` = ``search_status`` when
        given), or with ``body`` as given."""
        data = body.encode() if isinstance(body, str) else body
        with self._lock:
            for _ in range(times):
                self._failures.append(_Failure(status, error, engine, search_status, data))

    def install(self, web: LoopbackWeb) -> str:
        """Serve ``/search.json`` and ``/account.json`` on ``web``; return the base URL."""
        web.route(SEARCH_PATH, self.handle_search)
        web.route(ACCOUNT_PATH, self.handle_account)
        return web.base_url

    def by_engine(self, engine: str) -> list[SerpApiRequest]:
        """The recorded searches of ``engine``."""
        return [r for r in self.requests if r.engine == engine]

    # -- answering

    def lookup(self, engine: str, q: str) -> list[dict[str, Any]]:
        with self._lock:
            exact = self._results.get((engine, q))
            if exact is not None:
                return list(exact)
            wanted = query_words(q).casefold()
            found: list[dict[str, Any]] = []
            for (eng, key), results in self._results.items():
                if eng == engine and query_words(key).casefold() == wanted:
                    found.extend(results)
            return found

    def _take_failure(self, engine: str) -> _Failure | None:
        for i, failure in enumerate(self._failures):
            if failure.engine in (None, engine):
                return self._failures.pop(i)
        return None

    def _metadata(self, status: str) -> dict[str, Any]:
        ident = uuid.uuid4().hex[:24]
        now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        return {
            "id": ident,
            "status": status,
            "json_endpoint": f"https://serpapi.com/searches/{ident}.json",
            "created_at": now,
            "processed_at": now,
            "total_time_taken": 0.42,
        }

    def handle_account(self, req: Request) -> Response:
        """The LoopbackWeb handler of ``/account.json`` (free: uses no search)."""
        with self._lock:
            self.account_requests += 1
            used = self.used_this_month
        if req.arg("api_key") != self.api_key:
            return _json(401, {"error": INVALID_KEY})
        left = max(0, self.searches_per_month - used)
        return _json(
            200,
            {
                "account_id": "fake",
                "api_key": self.api_key,
                "account_email": "person@example.org",
                "plan_id": "free",
                "plan_name": self.plan_name,
                "searches_per_month": self.searches_per_month,
                "plan_searches_left": left,
                "extra_credits": 0,
                "total_searches_left": left,
                "this_month_usage": used,
                "this_hour_searches": used,
                "last_hour_searches": 0,
                "account_rate_limit_per_hour": self.searches_per_month,
            },
        )

    def handle_search(self, req: Request) -> Response:
        """The LoopbackWeb handler of ``/search.json``."""
        params = {k: v[0] for k, v in req.query.items() if v}
        engine = params.get("engine", "google")
        with self._lock:
            self.requests.append(SerpApiRequest(engine, params))
            failure = self._take_failure(engine)
        if failure is not None:
            if failure.body is not None:
                return Response(failure.status, failure.body, _JSON)
            data: dict[str, Any] = {}
            if failure.search_status is not None:
                data["search_metadata"] = self._metadata(failure.search_status)
            if failure.error is not None:
                data["error"] = failure.error
            return _json(failure.status, data)
        if params.get("api_key") != self.api_key:
            return _json(401, {"error": INVALID_KEY})
        if engine not in _BRAND:
            return _json(400, {"error": f"Unsupported `{engine}` search engine."})
        query_key = "text" if engine == "yandex_images" else "q"
        q = params.get(query_key, "")
        if not q.strip():
            return _json(400, {"error": f"Missing query `{query_key}` parameter."})
        with self._lock:
            if self.used_this_month >= self.searches_per_month:
                return _json(429, {"error": OUT_OF_SEARCHES})
            self.used_this_month += 1
        results = self._filtered(engine, params, self.lookup(engine, q))
        page = self._page(engine, params, results)
        if isinstance(page, str):
            return _json(400, {"error": page})
        key = "organic_results" if engine == "google" else "images_results"
        answer: dict[str, Any] = {
            "search_metadata": self._metadata("Success"),
            "search_parameters": {k: v for k, v in params.items() if k != "api_key"},
        }
        if page:
            answer[key] = [{"position": i + 1, **r} for i, r in enumerate(page)]
        else:
            answer["search_information"] = {f"{key[:-1]}s_state": "Fully empty"}
            answer["error"] = f"{_BRAND[engine]} hasn't returned any results for this query."
        return _json(200, answer)

    @staticmethod
    def _filtered(
        engine: str, params: dict[str, str], results: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        if engine.startswith("google"):
            shown = params.get("safe", "").lower() == "off"
        elif engine == "bing_images":
            shown = params.get("safeSearch", "").lower() == "off"
        else:
            shown = True
        kept = results if shown else [r for r in results if not r.get("adult")]
        return [{k: v for k, v in r.items() if k != "adult"} for r in kept]

    @staticmethod
    def _page(
        engine: str, params: dict[str, str], results: list[dict[str, Any]]
    ) -> list[dict[str, Any]] | str:
        try:
            if engine == "google":
                start = int(params.get("start", "0"))
                size = _PAGE[engine]
            elif engine == "google_images":
                start = int(params.get("ijn", "0")) * _PAGE[engine]
                size = _PAGE[engine]
            elif engine == "bing_images":
                start = int(params.get("first", "1")) - 1
                size = int(params.get("count", "35"))
            else:
                start = int(params.get("p", "0")) * _PAGE[engine]
                size = _PAGE[engine]
        except ValueError:
            return "Invalid pagination parameter."
        if start < 0 or size < 1:
            return "Invalid pagination parameter."
        return results[start : start + size]
