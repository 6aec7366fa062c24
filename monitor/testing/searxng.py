"""A fake SearXNG instance for tests, benchmarks and the demo, served on a :class:`LoopbackWeb`.

It speaks the part of SearXNG's JSON API the monitor uses::

    fake = FakeSearxng()
    fake.add_result("Jane Doe", "images", {"url": page, "img_src": image, "title": "..."})
    fake.add_result("Jane Doe", "general", {"url": page, "title": "...", "content": "..."})
    with LoopbackWeb() as web:
        url = fake.install(web)  # the instance URL to put in [[search.backends]] url
        ...
        fake.queries  # [('"Jane Doe"', 'images', 1), ...]

Constructor: ``FakeSearxng(*, results_per_page=10, mix_general_into_images=True)``; set
``json_disabled = True`` to refuse JSON like an instance without ``json`` in
``search.formats``, ``unresponsive_engines = [("google images", "CAPTCHA")]`` to list engines
that did not answer (a partial answer, or a failed search when nothing was found), and use
``fail_next(status, headers, body)`` for errors and malformed answers.

A query ``q`` matches a key when it is equal, or when ``q`` without surrounding double quotes
equals the key ignoring case (so ``"Jane Doe"`` finds results added under ``jane doe``).
Like real SearXNG, an ``images`` answer also carries the query's ``general`` results (without
``img_src``) unless ``mix_general_into_images`` is False, so clients must filter.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from monitor.testing.web import LoopbackWeb, Request, Response, query_words

__all__ = ["FakeSearxng"]

_JSON = "application/json"
_HTML = "text/html; charset=utf-8"
_REASONS = {
    403: "Forbidden",
    404: "Not Found",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


@dataclass
class _Failure:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None
    category: str | None = None  # None: any search


def _html(status: int, text: str) -> Response:
    body = f"<!DOCTYPE html><html><head><title>{text}</title></head><body><h1>{text}</h1></body></html>"
    return Response(status, body.encode(), _HTML)


class FakeSearxng:
    """An in-memory SearXNG: results added per (query, category), answered as SearXNG JSON."""

    general_category = "general"
    images_category = "images"

    def __init__(self, *, results_per_page: int = 10, mix_general_into_images: bool = True) -> None:
        if results_per_page < 1:
            raise ValueError(f"results_per_page must be 1 or more, got {results_per_page}")
        self.results_per_page = results_per_page
        self.mix_general_into_images = mix_general_into_images
        self.json_disabled = False  # True: answer format=json with HTTP 403, like SearXNG does
        # (engine, reason) pairs listed as unresponsive_engines in every JSON answer, e.g.
        # [("google images", "CAPTCHA")]: with results the answer is partial; with none, it is
        # the "every engine failed" answer SearXNG gives with HTTP 200.
        self.unresponsive_engines: list[tuple[str, str]] = []
        self.queries: list[tuple[str, str, int]] = []  # (q, categories, pageno) received
        self._results: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self._failures: list[_Failure] = []
        self._lock = threading.Lock()

    # -- setting up

    def add_result(self, query: str, category: str, result: Mapping[str, Any]) -> None:
        """Answer ``query`` in ``category`` (``"general"``, ``"images"``...) with ``result``.

        ``result`` is served as given (a copy), in SearXNG's shape: ``url``, ``img_src``,
        ``thumbnail_src``, ``title``, ``content``, ``engine``... so tests can leave fields out.
        """
        entry = dict(result)
        with self._lock:
            self._results.setdefault((query, category), []).append(entry)

    def add_results(self, query: str, category: str, results: Iterable[Mapping[str, Any]]) -> None:
        """:meth:`add_result` for each of ``results``, in order."""
        for result in results:
            self.add_result(query, category, result)

    def fail_next(
        self,
        status: int,
        headers: Mapping[str, str] | None = None,
        body: bytes | str | None = None,
        *,
        times: int = 1,
        category: str | None = None,
    ) -> None:
        """Answer the next ``times`` searches with ``status`` (and ``headers``, ``body``).

        ``fail_next(429, {"Retry-After": "30"})``, ``fail_next(500)``, or a malformed answer:
        ``fail_next(200, body="{not json")``. Calls queue up in order. With ``category``
        (``"images"``...), only searches whose ``categories`` are exactly that fail: a scan
        sends its searches concurrently, so which one arrives first is a race.
        """
        data = body.encode() if isinstance(body, str) else body
        with self._lock:
            for _ in range(times):
                self._failures.append(_Failure(status, dict(headers or {}), data, category))

    def install(self, web: LoopbackWeb, path: str = "/search") -> str:
        """Serve the fake at ``path`` of ``web``; return the instance URL for the config."""
        if not path.startswith("/") or not path.endswith("/search"):
            raise ValueError(f"path must start with '/' and end with '/search', got {path!r}")
        web.route(path, self.handle)
        return web.base_url + path[: -len("/search")]

    # -- answering

    def lookup(self, q: str, category: str) -> list[dict[str, Any]]:
        """The results stored for query ``q`` in ``category`` (exact key, else unquoted match)."""
        with self._lock:
            exact = self._results.get((q, category))
            if exact is not None:
                return list(exact)
            wanted = query_words(q).casefold()
            found: list[dict[str, Any]] = []
            for (key, cat), results in self._results.items():
                if cat == category and query_words(key).casefold() == wanted:
                    found.extend(results)
            return found

    def _answer_results(self, q: str, categories: list[str]) -> list[dict[str, Any]]:
        results: list[dict[str, Any]] = []
        for category in categories:
            results.extend(self.lookup(q, category))
        if (
            self.mix_general_into_images
            and self.images_category in categories
            and self.general_category not in categories
        ):
            for result in self.lookup(q, self.general_category):
                mixed = {k: v for k, v in result.items() if k != "img_src"}
                results.append(mixed)
        return results

    def handle(self, req: Request) -> Response:
        """The LoopbackWeb handler: one SearXNG ``/search`` request."""
        params: dict[str, list[str]] = {k: list(v) for k, v in req.query.items()}
        if req.method == "POST" and req.body:
            for k, v in parse_qs(req.body.decode("utf-8", "replace")).items():
                params.setdefault(k, []).extend(v)

        def arg(name: str, default: str = "") -> str:
            values = params.get(name)
            return values[0] if values else default

        q = arg("q")
        categories = arg("categories", self.general_category)
        try:
            pageno = int(arg("pageno", "1"))
        except ValueError:
            pageno = 0
        with self._lock:
            self.queries.append((q, categories, pageno))
            failure = next((f for f in self._failures if f.category in (None, categories)), None)
            if failure is not None:
                self._failures.remove(failure)
        if failure is not None:
            if failure.body is not None:
                body = failure.body
                ctype = _JSON if failure.status < 400 else _HTML
                return Response(failure.status, body, ctype, failure.headers)
            reason = _REASONS.get(failure.status, "Error")
            resp = _html(failure.status, f"{failure.status} {reason}")
            resp.headers.update(failure.headers)
            return resp

        fmt = arg("format", "html")
        if fmt == "json" and self.json_disabled:
            return _html(403, "403 Forbidden")
        if fmt != "json":
            return _html(200, "SearXNG (fake): only format=json is implemented")
        if not q.strip():
            return _html(400, "400 Bad Request: empty query")
        if pageno < 1:
            return _html(400, "400 Bad Request: invalid pageno")

        wanted = [c.strip() for c in categories.split(",") if c.strip()]
        results = self._answer_results(q, wanted)
        start = (pageno - 1) * self.results_per_page
        page = results[start : start + self.results_per_page]
        answer = {
            "query": q,
            "number_of_results": len(results),
            "results": page,
            "answers": [],
            "corrections": [],
            "infoboxes": [],
            "suggestions": [],
            "unresponsive_engines": [list(pair) for pair in self.unresponsive_engines],
        }
        return Response(200, json.dumps(answer).encode(), _JSON)
