"""The search backend interface, the registry of backend kinds, and search errors.

A backend turns one :class:`~monitor.types.SearchQuery` into :class:`~monitor.types.SearchHit`
values. Backends are plug-ins: a module defines a factory and registers it under a ``kind``,
the name used in ``[[search.backends]] kind = "..."``::

    @register_backend("mysearch")
    def _create(cfg: SearchBackendConfig, client: httpx.AsyncClient) -> SearchBackend:
        return MySearch(cfg, client)

and ``monitor/search/__init__.py`` imports the module so the kind is registered.

Shared by every backend, so each gets the same hardening: :func:`get_answer` (one bounded GET;
redirects only within the configured origin; timeouts and transport errors as
:class:`BackendUnavailableError`), :func:`parse_json` (depth-checked JSON), :func:`snippet`
(short, printable, key-free quotes for messages), :func:`retry_once_if_short` (a short 429 is
waited out once), :func:`backend_options` (a kind's own keys, checked with its pydantic model)
and :func:`api_key_from_env`. Every backend also has ``check()``, returning a
:class:`BackendCheck` for the ``backends`` command.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any, Protocol, TypeVar, runtime_checkable
from urllib.parse import urljoin, urlsplit

import httpx
from pydantic import BaseModel, ConfigDict, ValidationError

from monitor.config import SearchBackendConfig
from monitor.errors import ConfigError, SearchBackendError
from monitor.fetch import ACCEPT_ENCODING, UndecodableBody, read_bounded
from monitor.types import SearchHit, SearchQuery

log = logging.getLogger(__name__)

__all__ = [
    "MAX_ANSWER_BYTES",
    "MAX_JSON_DEPTH",
    "BackendCheck",
    "BackendFactory",
    "BackendOptions",
    "BackendRefusedError",
    "BadAnswerError",
    "BackendUnavailableError",
    "EnginesUnresponsiveError",
    "RateInfo",
    "RateLimitedError",
    "RawAnswer",
    "RedirectRefusedError",
    "SearchAnswer",
    "SearchBackend",
    "SearchBackendError",
    "api_key_from_env",
    "api_base_url",
    "available_kinds",
    "backend_options",
    "create_backend",
    "default_backend_name",
    "get_answer",
    "json_depth_exceeds",
    "parse_json",
    "parse_retry_after",
    "register_backend",
    "result_url",
    "retry_once_if_short",
    "snippet",
]


@dataclass(frozen=True, slots=True)
class RateInfo:
    """What a backend's answer said about its limits (``X-RateLimit-*`` and the like).

    Every field is ``None`` when the API did not say."""

    limit: int | None = None  # requests allowed in the current window
    remaining: int | None = None  # requests left in the current window
    reset_seconds: float | None = None  # seconds until the window resets


@dataclass(frozen=True, slots=True)
class SearchAnswer:
    """What one search (one backend, one query, one results page) brought back.

    ``unanswered`` lists the engines behind a meta-search backend (SearXNG, SerpApi's engines)
    that did not answer, as ``(engine, reason)`` pairs: a non-empty list makes the search
    *partial*. A search in which no engine answered at all is not an answer: the backend raises
    :class:`EnginesUnresponsiveError` instead. ``requests`` counts the HTTP requests actually
    sent for this answer (a retry after a 429 makes 2)."""

    hits: list[SearchHit]
    unanswered: tuple[tuple[str, str], ...] = ()
    requests: int = 1
    rate: RateInfo | None = None

    @property
    def partial(self) -> bool:
        return bool(self.unanswered)


@dataclass(frozen=True, slots=True)
class BackendCheck:
    """What :meth:`SearchBackend.check` found: does the backend work as configured?

    ``message`` says what was found, and when ``ok`` is False, what to change, in words
    (e.g. "enable json in search.formats"). ``quota_remaining`` is the searches left in the
    plan's longest window (a month), when the API says; ``requests`` counts the HTTP requests
    the check sent (each may count against a paid plan)."""

    ok: bool
    message: str
    quota_remaining: int | None = None
    requests: int = 1


@runtime_checkable
class SearchBackend(Protocol):
    """Something that answers search queries.

    ``search`` raises :class:`~monitor.errors.SearchBackendError` (or a subclass) with a
    message for a person when the backend cannot answer; it never raises httpx errors.
    """

    name: str  # shown in scan summaries and error records, e.g. "searxng@localhost:8888"

    async def search(self, query: SearchQuery, *, page: int = 1) -> SearchAnswer:
        """Return the answer for results page ``page`` (1-based) of ``query``."""
        ...

    async def check(self) -> BackendCheck:
        """Send one cheap request (never a person's name) and say whether the backend works.

        Never raises for a backend that fails: that is ``ok=False`` with the fix in words."""
        ...

    async def aclose(self) -> None:
        """Release what the backend owns (not the shared HTTP client it was given)."""
        ...


BackendFactory = Callable[[SearchBackendConfig, httpx.AsyncClient], SearchBackend]

_REGISTRY: dict[str, BackendFactory] = {}


def register_backend(kind: str) -> Callable[[BackendFactory], BackendFactory]:
    """Class or function decorator: make ``factory`` the one that builds backends of ``kind``."""
    if not kind or kind != kind.strip():
        raise ValueError(f"search backend kind must be a non-empty word, got {kind!r}")

    def decorate(factory: BackendFactory) -> BackendFactory:
        existing = _REGISTRY.get(kind)
        if existing is not None and existing is not factory:
            raise ValueError(f"search backend kind {kind!r} is already registered by {existing!r}")
        _REGISTRY[kind] = factory
        return factory

    return decorate


def available_kinds() -> list[str]:
    """The registered backend kinds, sorted."""
    return sorted(_REGISTRY)


def create_backend(cfg: SearchBackendConfig, client: httpx.AsyncClient) -> SearchBackend:
    """Build the backend ``cfg.kind`` names, sharing ``client`` for its HTTP requests.

    Raises :class:`~monitor.errors.ConfigError` for an unknown kind or a bad setting.
    """
    factory = _REGISTRY.get(cfg.kind)
    if factory is None:
        known = ", ".join(available_kinds()) or "none"
        raise ConfigError(f"unknown search backend kind {cfg.kind!r}; known: {known}")
    return factory(cfg, client)


# -- errors shared by backends


class BackendUnavailableError(SearchBackendError):
    """The backend could not be reached, timed out, or failed (HTTP 5xx and the like)."""


class BadAnswerError(SearchBackendError):
    """The backend answered, but not with something we can read."""


class EnginesUnresponsiveError(BackendUnavailableError):
    """The backend answered, but every engine behind it failed (blocked, CAPTCHA, timeout).

    SearXNG says so with HTTP 200, ``results: []`` and ``unresponsive_engines``; that is a
    failed search, never "nothing found". ``engines`` holds the ``(engine, reason)`` pairs;
    ``requests`` the HTTP requests sent for the failed search (SerpApi: one per engine)."""

    def __init__(
        self, message: str, engines: tuple[tuple[str, str], ...] = (), requests: int = 1
    ) -> None:
        super().__init__(message)
        self.engines = engines
        self.requests = requests


class RateLimitedError(SearchBackendError):
    """The backend asks us to slow down (HTTP 429). ``retry_after`` is in seconds, if given."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delay-seconds or an HTTP-date.

    Returns ``None`` when the header is absent or unreadable; never a negative number.
    ``now`` (a Unix time) is for tests; it defaults to the current time.
    """
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT; tolerate a missing zone
        when = when.replace(tzinfo=UTC)
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


class BackendRefusedError(SearchBackendError):
    """The backend refuses our requests as configured: a rejected API key, a plan without this
    kind of search, a used-up quota, parameters it does not accept. Asking again will not help
    until the configuration or the account changes; the message says what to change."""


class RedirectRefusedError(BackendUnavailableError):
    """The backend redirected to another host; search clients do not follow that.

    The configured URL may legitimately be a loopback or private address (a SearXNG on this
    machine); a redirect elsewhere could lead anywhere, so only redirects within the configured
    origin (the same host and port, or the same host upgraded from http to https) are followed.
    The message names the redirect's host only, never its body."""


# -- per-kind settings


class BackendOptions(BaseModel):
    """Base of a kind's own settings: the extra keys of its ``[[search.backends]]`` table."""

    model_config = ConfigDict(extra="forbid")


_Options = TypeVar("_Options", bound=BackendOptions)

_SHARED_ONLY_FOR: dict[str, tuple[str, ...]] = {
    "api_key_env": ("brave", "serpapi"),
    "engines": ("serpapi",),
}


def _table(cfg: SearchBackendConfig) -> str:
    named = f", name = {cfg.name!r}" if cfg.name else ""
    return f"[[search.backends]] kind = {cfg.kind!r}{named}"


def backend_options(cfg: SearchBackendConfig, model: type[_Options]) -> _Options:
    """Check the extra keys of ``cfg`` (those of its kind) with ``model``.

    Raises :class:`ConfigError` naming the table and the key for an unknown key, a shared key
    this kind does not use (``engines`` for ``brave``), or a bad value."""
    for key, kinds in _SHARED_ONLY_FOR.items():
        if key in cfg.model_fields_set and cfg.kind not in kinds:
            used = " and ".join(repr(k) for k in kinds)
            raise ConfigError(f"{_table(cfg)}: `{key}` is only used by kind {used}; remove it")
    try:
        return model.model_validate(dict(cfg.model_extra or {}))
    except ValidationError as exc:
        known = ", ".join(sorted(model.model_fields)) or "none"
        problems = []
        for err in exc.errors():
            key = ".".join(str(part) for part in err["loc"]) or "?"
            if err["type"] == "extra_forbidden":
                problems.append(f"unknown key `{key}` (this kind's own keys: {known})")
            else:
                problems.append(f"`{key}`: {err['msg']}")
        raise ConfigError(f"{_table(cfg)}: " + "; ".join(problems)) from None


def api_key_from_env(cfg: SearchBackendConfig, default_env: str, service: str) -> tuple[str, str]:
    """``(variable, key)``: the API key from the environment variable ``cfg.api_key_env``
    (``default_env`` when empty). Raises :class:`ConfigError` naming the variable when it is
    unset or empty; the key itself is never put in a message."""
    env = cfg.api_key_env.strip() or default_env
    key = os.environ.get(env, "").strip()
    if not key:
        raise ConfigError(
            f"{_table(cfg)}: {service} needs an API key: set the environment variable ${env}"
            + ("" if cfg.api_key_env else " (or name another one with api_key_env)")
        )
    return env, key


def api_base_url(cfg: SearchBackendConfig, default: str) -> str:
    """The API's base URL: ``cfg.url`` (a loopback fake in tests), else ``default``; without a
    trailing slash. Raises :class:`ConfigError` for anything but an http(s) URL."""
    url = (cfg.url or "").strip() or default
    try:
        parts = urlsplit(url)
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"{_table(cfg)}: url must be an http:// or https:// URL (or empty for {default}), "
            f"got {url!r}"
        )
    return url.rstrip("/")


def default_backend_name(kind: str, url: str) -> str:
    """``kind@host`` (``kind@host:port`` when the URL has a port)."""
    parts = urlsplit(url)
    host = parts.hostname or "unknown"
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    return f"{kind}@{host}:{parts.port}" if parts.port else f"{kind}@{host}"


# -- one HTTP exchange with a search API, bounded and without surprises

MAX_ANSWER_BYTES = 10_000_000
"""A longer answer is not read: no results page of a search API is anywhere near this."""

MAX_JSON_DEPTH = 64
"""Answers nested deeper are refused before parsing (search answers nest 3 to 6 levels)."""

MAX_REDIRECTS = 3
"""Redirects within the configured origin followed per request (others are refused)."""

SNIPPET_CHARS = 120

_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]")


def snippet(data: bytes | str, limit: int = SNIPPET_CHARS, *, secrets: Iterable[str] = ()) -> str:
    """A short, printable quotation of an answer for an error message: control and bidi
    characters removed, whitespace collapsed, at most ``limit`` characters, ``secrets``
    (an API key) replaced by ``***``. "an empty body" for nothing."""
    if isinstance(data, bytes):
        raw = data[: limit * 4]
        text = raw.decode("utf-8", "replace")
        longer = len(data) > len(raw)
    else:
        text, longer = data, False
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    text = " ".join(_CONTROL.sub(" ", text).split())
    if len(text) > limit:
        text, longer = text[:limit].rstrip(), True
    if not text:
        return "an empty body"
    return text + ("..." if longer else "")


_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_AS_PARENS = bytes.maketrans(b"[{]}", b"(())")


def json_depth_exceeds(body: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """True when the JSON text ``body`` nests arrays and objects more than ``limit`` deep.

    Linear passes in C, no recursion: strings are dropped and only brackets kept, then the
    innermost pairs are removed once per level; ``limit`` passes empty anything nested at
    most ``limit`` deep. A run of more than ``limit`` openers ends the scan at once. Brackets
    that do not pair up are left for the JSON parser to refuse (False)."""
    brackets = _JSON_STRING.sub(b"", body).translate(_AS_PARENS, _NOT_BRACKETS)
    too_deep = b"(" * (limit + 1)
    for _ in range(limit):
        if not brackets:
            return False
        if too_deep in brackets:
            return True
        shorter = brackets.replace(b"()", b"")
        if len(shorter) == len(brackets):
            return False  # ")(" and the like: not JSON, the parser says so
        brackets = shorter
    return bool(brackets)


def parse_json(body: bytes, *, where: str, what: str, content_type: str = "") -> Any:
    """The JSON value in ``body``; :class:`BadAnswerError` ("{where}: answer was not
    {what}: ...") for anything else, including nesting deeper than :data:`MAX_JSON_DEPTH`."""
    if json_depth_exceeds(body):
        raise BadAnswerError(
            f"{where}: answer was not {what}: nested more than {MAX_JSON_DEPTH} levels deep"
        )
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:
        ctype = content_type or "no content type"
        raise BadAnswerError(
            f"{where}: answer was not {what}: {snippet(ctype, 60)}, {snippet(body)}"
        ) from exc


@dataclass(frozen=True, slots=True)
class RawAnswer:
    """The status, headers and (decoded, bounded) body of a search API's answer."""

    status: int
    headers: httpx.Headers
    body: bytes
    url: str  # the URL that answered (after redirects within the configured origin)

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    default = {"http": 80, "https": 443}.get(url.scheme)
    return url.scheme, url.host, url.port or default


def _redirect_allowed(start: httpx.URL, target: httpx.URL) -> bool:
    if target.scheme not in ("http", "https") or not target.host:
        return False
    if _origin(target) == _origin(start):
        return True
    # http://host -> https://host (default ports) is the usual "use TLS" redirect.
    return (
        start.scheme == "http"
        and target.scheme == "https"
        and target.host == start.host
        and (start.port in (None, 80))
        and (target.port in (None, 443))
    )


def _location_host(location: str) -> str:
    try:
        host = urlsplit(location).hostname or ""
    except ValueError:
        host = ""
    return snippet(host, 80) if host else "an unreadable address"


async def get_answer(
    client: httpx.AsyncClient,
    url: str,
    *,
    params: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
    timeout: float,
    where: str,
    max_bytes: int | None = None,
    secrets: Iterable[str] = (),
) -> RawAnswer:
    """GET ``url`` with ``params`` and read the answer, at most ``max_bytes`` (default
    :data:`MAX_ANSWER_BYTES`) decoded bytes, all within ``timeout`` seconds.

    Redirects are not left to httpx: one within the configured origin is followed (up to
    :data:`MAX_REDIRECTS`), any other is :class:`RedirectRefusedError` naming only the host.
    Timeouts, refused connections and transport errors are :class:`BackendUnavailableError`;
    an oversized or undecodable body is :class:`BadAnswerError`. Any status is returned: the
    backend judges it. ``secrets`` (an API key) never appear in a message.
    """
    cap = MAX_ANSWER_BYTES if max_bytes is None else max_bytes
    hidden = tuple(s for s in secrets if s)
    send_headers = {"Accept-Encoding": ACCEPT_ENCODING, **(headers or {})}
    start = httpx.URL(url)
    target, target_params = start, params
    try:
        async with asyncio.timeout(timeout):
            for hop in range(MAX_REDIRECTS + 1):
                async with client.stream(
                    "GET",
                    target,
                    params=target_params,
                    headers=send_headers,
                    timeout=timeout,
                    follow_redirects=False,
                ) as resp:
                    location = resp.headers.get("location")
                    if resp.is_redirect and location is not None:
                        following = httpx.URL(urljoin(str(resp.url), location))
                        if not _redirect_allowed(start, following):
                            raise RedirectRefusedError(
                                f"{where} redirected (HTTP {resp.status_code}) to another host, "
                                f"{_location_host(str(following))}; not followed. If the "
                                "service moved, put its new address in [[search.backends]] url."
                            )
                        if hop == MAX_REDIRECTS:
                            raise RedirectRefusedError(
                                f"{where} redirected more than {MAX_REDIRECTS} times; "
                                "not followed further"
                            )
                        target, target_params = following, None
                        continue
                    body, cut = await read_bounded(resp, cap)
                    answer = RawAnswer(resp.status_code, resp.headers, body, str(resp.url))
                    break
    except UndecodableBody as exc:
        raise BadAnswerError(
            f"{where}: answer could not be decoded ({snippet(str(exc), secrets=hidden)})"
        ) from None
    except (httpx.TimeoutException, TimeoutError) as exc:
        raise BackendUnavailableError(
            f"{where} did not answer within {timeout:g} s ({type(exc).__name__})"
        ) from None
    except httpx.ConnectError as exc:
        reason = snippet(str(exc) or type(exc).__name__, secrets=hidden)
        raise BackendUnavailableError(
            f"could not connect to {where} ({reason}); is it running, and is the url in "
            "[[search.backends]] right?"
        ) from None
    except httpx.HTTPError as exc:
        reason = snippet(str(exc) or type(exc).__name__, secrets=hidden)
        raise BackendUnavailableError(f"{where} failed: {reason}") from None
    if cut:
        raise BadAnswerError(f"{where}: answer not read: {cut} for a search answer")
    return answer


async def retry_once_if_short(
    attempt: Callable[[int], Awaitable[SearchAnswer]], *, max_wait: float, name: str
) -> SearchAnswer:
    """``attempt(1)``; when it is rate limited with a ``retry_after`` of at most ``max_wait``
    seconds, wait that long and return ``attempt(2)`` (the argument counts the requests sent).
    A longer or unknown wait, or a second refusal, is raised as :class:`RateLimitedError`."""
    try:
        return await attempt(1)
    except RateLimitedError as exc:
        wait = exc.retry_after
        if wait is None or wait > max_wait:
            raise
        log.info("%s: rate limited; retrying once in %.1f s", name, wait)
        await asyncio.sleep(wait)
    try:
        return await attempt(2)
    except RateLimitedError as exc:
        raise RateLimitedError(
            f"{exc} (still limited after waiting once as asked)", exc.retry_after
        ) from None


def result_url(value: Any) -> str | None:
    """An absolute http(s) URL from a field of a search result, or None (what a backend says
    is a link is not trusted: another scheme, no host or an unparsable URL gives None).
    ``//host/x`` becomes https."""
    if not isinstance(value, str):
        return None
    text = value.strip()
    if text.startswith("//"):
        text = "https:" + text
    try:
        parts = httpx.URL(text)
    except (httpx.InvalidURL, ValueError):
        return None
    if parts.scheme not in ("http", "https") or not parts.host:
        return None
    return text
