"""A fake Brave Search API for tests, benchmarks and scans, served on a :class:`LoopbackWeb`.

It answers ``GET /res/v1/web/search`` and ``GET /res/v1/images/search`` in the documented
shapes, with the documented errors, and records every request::

    fake = FakeBrave(api_key="test-key", limits=(1, 2000))
    fake.add_web("Jane Doe", {"url": page, "title": "...", "description": "..."})
    fake.add_image("Jane Doe", {"url": page, "properties": {"url": image},
                                "thumbnail": {"src": thumb}, "title": "..."})
    with LoopbackWeb() as web:
        url = fake.install(web)
        # [[search.backends]] kind = "brave", url = url, and $BRAVE_API_KEY = "test-key"
        ...
        fake.requests  # [BraveRequest(endpoint="images", params={...}, token="test-key"), ...]

Constructor: ``FakeBrave(*, api_key="test-key", limits=(1, 2000), month_reset=1_419_704)``:

* ``api_key``: the one ``X-Subscription-Token`` accepted; any other (or none) is answered
  401 ``SUBSCRIPTION_TOKEN_INVALID`` like Brave does.
* ``limits``: the plan's requests per window, per second then per month; every answer
  carries ``X-RateLimit-Limit``, ``-Policy``, ``-Remaining`` and ``-Reset`` for them. When the
  month's requests are used up (only successful requests count, as Brave bills), the answer
  is 429 ``RATE_LIMITED`` with the month's reset. The per-second window is reported but only
  enforced when ``enforce_per_second`` is True.
* ``month_reset``: seconds until the month window resets, as reported.

Safe search is modelled: a result added with ``"adult": True`` is only served when the request
says ``safesearch=off`` (web search defaults to moderate, image search to strict), so a test can
tell whether the client turned it off. ``fail_next(status, code=..., detail=...)`` queues an
error answer in Brave's ``ErrorResponse`` shape (or any ``body``); ``fail_next(200, body=...)``
serves a malformed answer.

A query ``q`` matches a key when it is equal, or when ``q`` without surrounding double quotes
equals the key ignoring case. Web answers page with ``offset`` (0-9) times ``count`` (1-20);
images take ``count`` (1-200) and have no paging; out-of-range values are 422 ``VALIDATION``.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from monitor.testing.web import LoopbackWeb, Request, Response, query_words

__all__ = ["BraveRequest", "FakeBrave"]

WEB_PATH = "/res/v1/web/search"
IMAGES_PATH = "/res/v1/images/search"
_JSON = "application/json"


@dataclass(frozen=True)
class BraveRequest:
    """One request the fake received."""

    endpoint: str  # "web" or "images"
    params: dict[str, str]  # the first value of each query parameter
    token: str | None  # X-Subscription-Token, as sent


@dataclass
class _Failure:
    status: int
    code: str
    detail: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None


def error_body(status: int, code: str, detail: str, meta: Mapping[str, Any] | None = None) -> bytes:
    """Brave's error answer: ``{"type": "ErrorResponse", "error": {...}, "time": ...}``."""
    return json.dumps(
        {
            "type": "ErrorResponse",
            "error": {
                "id": str(uuid.uuid4()),
                "status": status,
                "code": code,
                "detail": detail,
                "meta": dict(meta or {}),
            },
            "time": int(time.time()),
        }
    ).encode()


class FakeBrave:
    """An in-memory Brave Search API: web and image results added per query."""

    def __init__(
        self,
        *,
        api_key: str = "test-key",
        limits: tuple[int, int] = (1, 2000),
        month_reset: int = 1_419_704,
    ) -> None:
        self.api_key = api_key
        self.limits = limits
        self.month_reset = month_reset
        self.enforce_per_second = False
        self.used_this_month = 0
        self.requests: list[BraveRequest] = []
        self._web: dict[str, list[dict[str, Any]]] = {}
        self._images: dict[str, list[dict[str, Any]]] = {}
        self._failures: list[_Failure] = []
        self._second: tuple[int, int] = (0, 0)  # (unix second, requests in it)
        self._lock = threading.Lock()

    # -- setting up

    def add_web(self, query: str, result: Mapping[str, Any]) -> None:
        """Answer web searches for ``query`` with ``result`` (Brave's shape: ``url``,
        ``title``, ``description``, ``thumbnail: {src}``...; ``"adult": True`` to hide it
        unless safe search is off)."""
        with self._lock:
            self._web.setdefault(query, []).append(dict(result))

    def add_webs(self, query: str, results: Iterable[Mapping[str, Any]]) -> None:
        for result in results:
            self.add_web(query, result)

    def add_image(self, query: str, result: Mapping[str, Any]) -> None:
        """Answer image searches for ``query`` with ``result`` (``url`` of the page,
        ``properties: {url}`` of the image, ``thumbnail: {src}``, ``title``...)."""
        with self._lock:
            self._images.setdefault(query, []).append(dict(result))

    def add_images(self, query: str, results: Iterable[Mapping[str, Any]]) -> None:
        for result in results:
            self.add_image(query, result)

    def fail_next(
        self,
        status: int,
        *,
        code: str = "",
        detail: str = "",
        headers: Mapping[str, str] | None = None,
        body: bytes | str | None = None,
        times: int = 1,
    ) -> None:
        """Answer the next ``times`` requests with ``status``: Brave's error object with
        ``code`` and ``detail`` (defaults per status), or ``body`` as given."""
        data = body.encode() if isinstance(body, str) else body
        defaults = {
            401: ("SUBSCRIPTION_TOKEN_INVALID", "The provided subscription token is invalid."),
            403: ("OPTION_NOT_IN_PLAN", "The option is not subscribed in the plan."),
            422: ("VALIDATION", "Unable to validate request parameter(s)."),
            429: ("RATE_LIMITED", "Request rate limit exceeded for plan."),
        }
        code = code or defaults.get(status, ("INTERNAL_ERROR", "Internal error."))[0]
        detail = detail or defaults.get(status, ("", "Internal error."))[1]
        with self._lock:
            for _ in range(times):
                self._failures.append(_Failure(status, code, detail, dict(headers or {}), data))

    def install(self, web: LoopbackWeb) -> str:
        """Serve the fake's two endpoints on ``web``; return the base URL for the config."""
        web.route(WEB_PATH, self.handle)
        web.route(IMAGES_PATH, self.handle)
        return web.base_url

    # -- answering

    def lookup(self, table: dict[str, list[dict[str, Any]]], q: str) -> list[dict[str, Any]]:
        with self._lock:
            exact = table.get(q)
            if exact is not None:
                return list(exact)
            wanted = query_words(q).casefold()
            found: list[dict[str, Any]] = []
            for key, results in table.items():
                if query_words(key).casefold() == wanted:
                    found.extend(results)
            return found

    def rate_headers(self, per_second_used: int) -> dict[str, str]:
        second, month = self.limits
        left_second = max(0, second - per_second_used)
        left_month = max(0, month - self.used_this_month)
        return {
            "X-RateLimit-Limit": f"{second}, {month}",
            "X-RateLimit-Policy": f"{second};w=1, {month};w=2592000",
            "X-RateLimit-Remaining": f"{left_second}, {left_month}",
            "X-RateLimit-Reset": f"1, {self.month_reset}",
        }

    def _error(self, status: int, code: str, detail: str, headers: Mapping[str, str]) -> Response:
        return Response(status, error_body(status, code, detail), _JSON, dict(headers))

    def handle(self, req: Request) -> Response:
        """The LoopbackWeb handler for both endpoints."""
        endpoint = "images" if req.path == IMAGES_PATH else "web"
        params = {k: v[0] for k, v in req.query.items() if v}
        token = req.headers.get("x-subscription-token")
        now = int(time.time())
        with self._lock:
            self.requests.append(BraveRequest(endpoint, params, token))
            failure = self._failures.pop(0) if self._failures else None
            second, count = self._second
            count = count + 1 if second == now else 1
            self._second = (now, count)
            headers = self.rate_headers(count)
        if failure is not None:
            headers.update(failure.headers)
            if failure.body is not None:
                ctype = _JSON if failure.status < 400 else "text/html; charset=utf-8"
                return Response(failure.status, failure.body, ctype, headers)
            return self._error(failure.status, failure.code, failure.detail, headers)
        if token != self.api_key:
            return self._error(
                401,
                "SUBSCRIPTION_TOKEN_INVALID",
                "The provided subscription token is invalid.",
                headers,
            )
        if self.used_this_month >= self.limits[1]:
            return self._error(
                429,
                "RATE_LIMITED",
                "Request rate limit exceeded for plan.",
                {**headers, "X-RateLimit-Reset": f"1, {self.month_reset}"},
            )
        if self.enforce_per_second and count > self.limits[0]:
            return self._error(
                429, "RATE_LIMITED", "Request rate limit exceeded for plan.", headers
            )
        q = params.get("q", "")
        if not q.strip():
            return self._error(422, "VALIDATION", "Field 'q' is required.", headers)
        if endpoint == "images":
            answer = self._images_answer(q, params)
        else:
            answer = self._web_answer(q, params)
        if isinstance(answer, str):
            return self._error(422, "VALIDATION", answer, headers)
        with self._lock:
            self.used_this_month += 1  # only successful requests count
            headers = self.rate_headers(count)
        return Response(200, json.dumps(answer).encode(), _JSON, headers)

    @staticmethod
    def _number(params: dict[str, str], name: str, default: int, low: int, high: int) -> int | str:
        try:
            value = int(params.get(name, str(default)))
        except ValueError:
            return f"{name} must be an integer"
        if not low <= value <= high:
            return f"{name} must be between {low} and {high}"
        return value

    @staticmethod
    def _served(results: list[dict[str, Any]], safesearch: str) -> list[dict[str, Any]]:
        shown = results if safesearch == "off" else [r for r in results if not r.get("adult")]
        return [{k: v for k, v in r.items() if k != "adult"} for r in shown]

    def _web_answer(self, q: str, params: dict[str, str]) -> dict[str, Any] | str:
        count = self._number(params, "count", 20, 1, 20)
        offset = self._number(params, "offset", 0, 0, 9)
        if isinstance(count, str):
            return count
        if isinstance(offset, str):
            return offset
        safesearch = params.get("safesearch", "moderate")
        if safesearch not in ("off", "moderate", "strict"):
            return "safesearch must be one of off, moderate, strict"
        results = self._served(self.lookup(self._web, q), safesearch)
        page = results[offset * count : offset * count + count]
        answer: dict[str, Any] = {
            "type": "search",
            "query": {
                "original": q,
                "more_results_available": len(results) > (offset + 1) * count,
            },
            "mixed": {"type": "mixed", "main": []},
        }
        if page:
            answer["web"] = {
                "type": "search",
                "results": [{"type": "search_result", **r} for r in page],
                "family_friendly": safesearch != "off",
            }
        return answer

    def _images_answer(self, q: str, params: dict[str, str]) -> dict[str, Any] | str:
        count = self._number(params, "count", 50, 1, 200)
        if isinstance(count, str):
            return count
        safesearch = params.get("safesearch", "strict")
        if safesearch not in ("off", "strict"):
            return "safesearch must be one of off, strict"
        results = self._served(self.lookup(self._images, q), safesearch)
        return {
            "type": "images",
            "query": {"original": q, "spellcheck_off": params.get("spellcheck") == "false"},
            "results": [{"type": "image_result", **r} for r in results[:count]],
            "extra": {"might_be_offensive": safesearch == "off"},
        }
