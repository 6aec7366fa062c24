"""Fetch web pages and images safely: one HTTP client per scan, bounded and polite.

    async with Fetcher(settings.fetch) as fetcher:
        page = await fetcher.fetch_page("https://example.org/post/1")
        image = await fetcher.fetch_image("https://example.org/photo.jpg")

Every failure for one URL is a :class:`~monitor.errors.FetchError` whose ``reason`` a person can
read (``"HTTP 404"``, ``"not an HTML page (image/png)"``, ``"larger than the 5 MB limit"``...).

What the fetcher guarantees:

* Addresses in private, loopback, link-local, CGNAT, multicast, reserved or unspecified ranges
  are refused (:class:`~monitor.errors.BlockedAddressError`) unless ``allow_private_networks``.
  The check is made on the address actually connected to: the connection pool's network
  backend resolves the host, drops refused addresses and connects to a checked IP (TLS still
  verifies the host name). Redirects are followed here, hop by hop, each hop checked again.
* ``robots.txt`` is read once per origin and obeyed (:class:`~monitor.errors.RobotsDisallowed`),
  as RFC 9309 says: a 4xx answer (but 429) means there are no rules; a 5xx answer or a 429, a
  network error or a timeout means the site is treated as disallowing everything for the rest
  of this fetcher's life (every URL of the origin fails with a RobotsDisallowed that says
  why), and the next fetcher (scan) asks again. A redirect chain
  that cannot be followed (a loop, too many hops, a refused address) counts as unavailable
  (RFC 9309 section 2.3.1.2), i.e. no rules. Lines the parser cannot read are ignored; should
  the parser itself fail, everything is disallowed (we cannot tell what the file forbids).
* At most ``max_concurrency`` requests at once, and ``max_per_host`` to one host; requests to
  one host start at least ``min_host_interval`` seconds apart, or further apart when its
  robots.txt asks for a ``Crawl-delay`` (obeyed up to ``max_crawl_delay``).
* Bodies are streamed and cut off at ``max_page_bytes`` / ``max_image_bytes``. Compressed bodies
  (gzip, deflate, br) are decoded here, never more than the cap at a time, so a compression
  bomb cannot blow up in memory; the compressed size is capped too.
* Every fetch has an overall ``deadline`` (redirects and the whole body included), so a server
  dripping bytes cannot hold it forever.
* Conditional requests: ``fetch_image(url, etag=..., last_modified=...)`` (and
  ``fetch_page``) sends ``If-None-Match`` / ``If-Modified-Since`` and returns a bodiless
  resource with status 304 when the image (page) has not changed. :func:`freshness_lifetime` reads how long a response may be
  reused without asking at all (``Cache-Control: max-age``, ``Expires``).
* ``bytes_downloaded`` counts the body bytes received on the wire.
* Bodies stay in memory; nothing is written to disk. No cookies are kept or sent.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import socket
import ssl
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from http.cookiejar import CookieJar, DefaultCookiePolicy
from types import TracebackType
from typing import Self
from urllib.parse import urljoin, urlsplit

import httpcore
import httpx
from protego import Protego

try:  # brotli ("br") bodies; without the package they are not asked for
    import brotli
except ImportError:  # pragma: no cover - brotli is a dependency
    brotli = None

from monitor import shared_limits
from monitor.config import FetchConfig
from monitor.errors import BlockedAddressError, FetchError, RobotsDisallowed
from monitor.types import FetchedResource

__all__ = [
    "AddressPredicate",
    "BadStatusError",
    "Fetcher",
    "GuardedNetworkBackend",
    "PartialResource",
    "RedirectError",
    "Resolver",
    "TooLargeError",
    "UndecodableBody",
    "freshness_lifetime",
    "is_blocked_address",
    "read_bounded",
    "shared_ssl_context",
    "system_resolver",
]

log = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[Sequence[str]]]
"""``await resolver(host, port)`` -> the host's IP addresses as strings, in preference order."""
AddressPredicate = Callable[[IPAddress], bool]
"""``is_blocked(ip)`` -> True when the fetcher must not connect to ``ip``."""

ROBOTS_MAX_BYTES = 500_000
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
PAGE_TYPES = frozenset({"text/html", "application/xhtml+xml"})
UNTYPED = frozenset({"", "application/octet-stream", "binary/octet-stream"})
KEPT_HEADERS = (
    "content-type",
    "content-language",
    "etag",
    "last-modified",
    # for freshness_lifetime()
    "cache-control",
    "expires",
    "date",
    "age",
)
ACCEPT_PAGE = "text/html,application/xhtml+xml;q=0.9,*/*;q=0.1"
ACCEPT_IMAGE = "image/avif,image/webp,image/png,image/jpeg,image/*;q=0.9,*/*;q=0.1"
ACCEPT_VIDEO = "video/mp4,video/webm,video/*;q=0.9,image/gif;q=0.5,*/*;q=0.1"
# Containers some servers label as applications (mp4, Matroska, Ogg).
VIDEO_APPLICATION_TYPES = frozenset(
    {"application/mp4", "application/ogg", "application/x-matroska"}
)
ACCEPT_ROBOTS = "text/plain,*/*;q=0.1"
ACCEPT_ENCODING = "gzip, deflate, br" if brotli is not None else "gzip, deflate"
SVG_TYPES = frozenset({"image/svg+xml", "image/svg"})

_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


class BadStatusError(FetchError):
    """The server answered with a status other than 2xx (and not a redirect)."""

    def __init__(self, url: str, status: int) -> None:
        super().__init__(url, f"HTTP {status}")
        self.status = status


class TooLargeError(FetchError):
    """The body is larger than the configured cap."""


class RedirectError(FetchError):
    """A redirect that is not followed: a loop, too many hops, a bad or non-http Location."""


@dataclass(frozen=True, slots=True)
class PartialResource(FetchedResource):
    """A page larger than the cap, cut off at ``limit`` bytes (``fetch_page(partial=True)``)."""

    limit: int = 0


# --- the address guard ----------------------------------------------------------------------


def is_blocked_address(ip: IPAddress) -> bool:
    """True when ``ip`` is not a public unicast address: private, loopback, link-local, CGNAT
    (100.64/10), multicast, reserved, unspecified, documentation or benchmarking ranges.

    IPv6 addresses that carry an IPv4 address (IPv4-mapped ``::ffff:a.b.c.d``, NAT64
    ``64:ff9b::/96``, 6to4 ``2002::/16``) are judged by that IPv4 address too.
    """
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return is_blocked_address(ip.ipv4_mapped)
        if ip in _NAT64:
            return is_blocked_address(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
        if ip.sixtofour is not None and is_blocked_address(ip.sixtofour):
            return True
        if ip.teredo is not None and is_blocked_address(ip.teredo[1]):
            return True
    return (
        not ip.is_global
        or ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
    )


async def system_resolver(host: str, port: int) -> list[str]:
    """The host's addresses from the operating system's resolver (``getaddrinfo``)."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses: list[str] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        address = str(sockaddr[0])
        if address not in addresses:
            addresses.append(address)
    return addresses


class GuardedNetworkBackend(httpcore.AsyncNetworkBackend):
    """An httpcore network backend that only connects to addresses ``is_blocked`` allows.

    ``connect_tcp`` resolves the host itself, drops refused addresses and connects to the first
    allowed address that answers, by IP; httpcore then starts TLS with the host name, so
    certificates are still checked against the name. When every address is refused it raises
    :class:`~monitor.errors.BlockedAddressError` (with the host as its ``url``).
    """

    def __init__(
        self,
        is_blocked: AddressPredicate = is_blocked_address,
        resolver: Resolver | None = None,
        inner: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self._is_blocked = is_blocked
        self._resolver = resolver or system_resolver
        self._inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        try:
            async with asyncio.timeout(timeout):
                addresses = await self._resolver(host, port)
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"timed out looking up {host}") from None
        except OSError as exc:
            detail = getattr(exc, "strerror", None) or str(exc)
            raise httpcore.ConnectError(f"could not look up {host}: {detail}") from exc

        allowed: list[str] = []
        refused: list[str] = []
        for address in addresses:
            try:
                ip = ipaddress.ip_address(address.split("%", 1)[0])
            except ValueError:
                continue
            (refused if self._is_blocked(ip) else allowed).append(address)
        if not allowed:
            if refused:
                raise BlockedAddressError(host, blocked_reason(host, refused[0]))
            raise httpcore.ConnectError(f"{host} has no address")

        last_error: Exception | None = None
        for address in allowed:
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                break
            try:
                return await self._inner.connect_tcp(
                    address,
                    port,
                    timeout=remaining,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last_error = exc
        if last_error is not None:
            raise last_error
        raise httpcore.ConnectTimeout(f"timed out connecting to {host}")

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("Unix sockets are not fetched")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def blocked_reason(host: str, address: str) -> str:
    """The message for a refused address."""
    where = address if address == host else f"{host} resolves to {address}, which"
    return (
        f"{where} is a private, local or reserved address; not fetched "
        "(set [fetch] allow_private_networks = true to allow it)"
    )


@functools.cache
def shared_ssl_context() -> ssl.SSLContext:
    """The TLS settings (system CA certificates) every client of the process uses: loading the
    certificates takes tens of milliseconds, so it is done once, not for every client."""
    return httpx.create_ssl_context(trust_env=False)


# --- the fetcher ----------------------------------------------------------------------------


class Fetcher:
    """Fetches pages and images for one scan. Use as ``async with Fetcher(config) as f:``.

    ``resolver`` and ``is_blocked`` replace the system resolver and :func:`is_blocked_address`
    (tests use them to make one loopback address count as public). When ``is_blocked`` is not
    given, ``config.allow_private_networks`` decides whether addresses are checked at all.
    ``deadline`` is the most seconds one fetch (every redirect hop and the whole body) may
    spend talking to servers; by default ``config.deadline``. Waiting for a free slot or for a
    host's crawl delay does not count. ``config.timeout`` bounds every wait between bytes.
    ``clock`` and ``sleep`` replace the event loop's clock and ``asyncio.sleep`` for the
    spacing of requests to one host (tests pass a virtual clock).
    """

    def __init__(
        self,
        config: FetchConfig,
        *,
        resolver: Resolver | None = None,
        is_blocked: AddressPredicate | None = None,
        deadline: float | None = None,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
    ) -> None:
        self.config = config
        self._clock = clock
        self._sleep = sleep or asyncio.sleep
        if is_blocked is None and not config.allow_private_networks:
            is_blocked = is_blocked_address
        self._is_blocked = is_blocked
        self._resolver = resolver
        self.deadline = deadline if deadline is not None else config.deadline
        self.bytes_downloaded = 0
        """Body bytes received so far (as sent on the wire, before decompression)."""
        self._client: httpx.AsyncClient | None = None
        self._all = asyncio.Semaphore(config.max_concurrency)
        self._per_host: dict[str, asyncio.Semaphore] = {}
        self._next_start: dict[str, float] = {}
        self._robots: dict[str, asyncio.Task[_Robots]] = {}

    async def __aenter__(self) -> Self:
        self._client = httpx.AsyncClient(
            transport=self._transport(),
            headers={"User-Agent": self.config.user_agent, "Accept-Encoding": ACCEPT_ENCODING},
            timeout=httpx.Timeout(self.config.timeout),
            follow_redirects=False,
            trust_env=False,
            cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),
            event_hooks={"response": [_check_redirect]},
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connections. Called by ``async with``."""
        tasks = list(self._robots.values())
        self._robots.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    async def fetch_page(
        self,
        url: str,
        *,
        partial: bool = False,
        etag: str | None = None,
        last_modified: str | None = None,
    ) -> FetchedResource:
        """Fetch an HTML (or XHTML) page of at most ``max_page_bytes``.

        A larger page is a :class:`TooLargeError`; with ``partial`` its first ``max_page_bytes``
        come back instead, as a :class:`PartialResource`. With ``etag`` / ``last_modified``
        (from an earlier fetch) the request is conditional, as in :meth:`fetch_image`: an
        unchanged page comes back with status 304 and no body.
        """
        return await self._fetch(
            url,
            accept=ACCEPT_PAGE,
            max_bytes=self.config.max_page_bytes,
            check_type=_page_type_problem,
            truncate=partial,
            conditional=_conditional(etag, last_modified),
        )

    async def fetch_image(
        self, url: str, *, etag: str | None = None, last_modified: str | None = None
    ) -> FetchedResource:
        """Fetch an image of at most ``max_image_bytes``.

        Any ``image/*`` type but SVG is accepted, and so are ``application/octet-stream`` and a
        missing type (the hasher decides whether the bytes are an image); HTML and other text
        is not. With ``etag`` / ``last_modified`` (from an earlier fetch) the request is
        conditional: an unchanged image comes back with status 304 and no body.
        """
        return await self._fetch(
            url,
            accept=ACCEPT_IMAGE,
            max_bytes=self.config.max_image_bytes,
            check_type=_image_type_problem,
            conditional=_conditional(etag, last_modified),
        )

    async def fetch_video(
        self,
        url: str,
        *,
        etag: str | None = None,
        last_modified: str | None = None,
        partial: bool = False,
    ) -> FetchedResource:
        """Fetch a video (``<video src>``, ``og:video``) of at most ``max_video_bytes``.

        ``video/*`` (and the mp4/Matroska/Ogg ``application/*`` types), ``image/*`` but SVG
        (a "video" that is an animated GIF), ``application/octet-stream`` and a missing type
        are accepted; the hasher decides whether the bytes can be sampled. A larger body is a
        :class:`TooLargeError`; with ``partial`` its first ``max_video_bytes`` come back
        instead, as a :class:`PartialResource` (the start of a long video can be sampled).
        With ``etag`` / ``last_modified`` the request is conditional, as for
        :meth:`fetch_image` (an unchanged video: status 304 and no body).
        """
        conditional: dict[str, str] = {}
        if etag:
            conditional["If-None-Match"] = etag
        if last_modified:
            conditional["If-Modified-Since"] = last_modified
        return await self._fetch(
            url,
            accept=ACCEPT_VIDEO,
            max_bytes=self.config.max_video_bytes,
            check_type=_video_type_problem,
            truncate=partial,
            conditional=conditional,
        )

    async def can_fetch(self, url: str) -> bool:
        """Whether robots.txt lets us fetch ``url`` (always True if robots are not respected)."""
        parsed = _parse_url(url)
        rules = await self._robots_for(parsed) if self.config.respect_robots else None
        if isinstance(rules, _RobotsUnreadable):
            return False
        return rules is None or rules.can_fetch(str(parsed), self.config.user_agent)

    async def crawl_delay(self, url: str) -> float | None:
        """The ``Crawl-delay`` robots.txt of ``url``'s site asks of us, if any."""
        if not self.config.respect_robots:
            return None
        rules = await self._robots_for(_parse_url(url))
        if rules is None or isinstance(rules, _RobotsUnreadable):
            return None
        return rules.crawl_delay(self.config.user_agent)

    # --- internals --------------------------------------------------------------------------

    def _transport(self) -> httpx.AsyncHTTPTransport:
        limits = httpx.Limits(
            max_connections=self.config.max_concurrency,
            max_keepalive_connections=self.config.max_concurrency,
        )
        transport = httpx.AsyncHTTPTransport(
            verify=shared_ssl_context(), limits=limits, trust_env=False
        )
        if self._is_blocked is None and self._resolver is None:
            return transport
        backend = GuardedNetworkBackend(
            is_blocked=self._is_blocked or (lambda _ip: False), resolver=self._resolver
        )
        # httpx has no public way to pass an httpcore network backend; its transport sends
        # everything through ``_pool``, so give it a pool built with the guarded backend.
        transport._pool = httpcore.AsyncConnectionPool(
            ssl_context=shared_ssl_context(),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=backend,
        )
        return transport

    async def _fetch(
        self,
        url: str,
        *,
        accept: str,
        max_bytes: int,
        check_type: Callable[[str], str | None] | None,
        robots: bool = True,
        truncate: bool = False,
        conditional: dict[str, str] | None = None,
    ) -> FetchedResource:
        if self._client is None:
            raise RuntimeError("use the Fetcher inside `async with Fetcher(config) as fetcher:`")
        current = _parse_url(url)
        seen = {str(current)}
        loop = asyncio.get_running_loop()
        budget = self.deadline  # seconds left of this fetch's deadline
        for hop in range(self.config.max_redirects + 1):
            self._check_literal_address(url, current)
            delay = self.config.min_host_interval
            if robots and self.config.respect_robots:
                asked_delay = await self._check_robots(url, current, redirected=hop > 0)
                delay = max(delay, min(asked_delay or 0.0, self.config.max_crawl_delay))
            async with self._slot(current.host, delay):
                started = loop.time()
                result = await self._exchange(
                    url, current, accept, max_bytes, check_type, truncate, conditional, budget
                )
                budget -= loop.time() - started
            if isinstance(result, FetchedResource):
                return result
            if budget <= 0:
                raise FetchError(url, f"gave up after {self.deadline:g} s: the server is too slow")
            if str(result) in seen:
                raise RedirectError(url, f"redirect loop (back to {result})")
            seen.add(str(result))
            current = result
        raise RedirectError(url, f"too many redirects (more than {self.config.max_redirects})")

    async def _exchange(
        self,
        asked: str,
        url: httpx.URL,
        accept: str,
        max_bytes: int,
        check_type: Callable[[str], str | None] | None,
        truncate: bool,
        conditional: dict[str, str] | None,
        budget: float,
    ) -> FetchedResource | httpx.URL:
        """One request: the resource, or where it redirects to. Takes at most ``budget`` s."""
        assert self._client is not None
        headers = {"Accept": accept, **(conditional or {})}
        try:
            async with asyncio.timeout(max(budget, 0.001)):
                request = self._client.build_request("GET", url, headers=headers)
                response = await self._client.send(request, stream=True)
                try:
                    return await self._answer(
                        asked, url, response, max_bytes, check_type, truncate, bool(conditional)
                    )
                finally:
                    await response.aclose()
        except TimeoutError:
            raise FetchError(
                asked, f"gave up after {self.deadline:g} s: the server is too slow"
            ) from None
        except _RedirectRefused as exc:
            raise RedirectError(asked, exc.reason) from None
        except BlockedAddressError as exc:
            if exc.url == asked:
                raise
            raise BlockedAddressError(asked, exc.reason) from None
        except FetchError:
            raise
        except httpx.HTTPError as exc:
            raise FetchError(asked, describe_http_error(exc, self.config.timeout)) from exc
        except httpx.InvalidURL as exc:
            raise FetchError(asked, f"not a valid URL ({exc})") from exc
        except Exception as exc:  # a per-URL failure must not end the scan
            log.exception("unexpected error fetching %s", asked)
            raise FetchError(asked, f"unexpected error: {type(exc).__name__}: {exc}") from exc

    async def _answer(
        self,
        asked: str,
        url: httpx.URL,
        response: httpx.Response,
        max_bytes: int,
        check_type: Callable[[str], str | None] | None,
        truncate: bool,
        conditional: bool,
    ) -> FetchedResource | httpx.URL:
        status = response.status_code
        if status in REDIRECT_STATUSES:
            target = _redirect_target(url, response.headers.get("location", ""), status)
            await self._drain(response)
            return target
        kept = {k: v for k in KEPT_HEADERS if (v := response.headers.get(k))}
        if status == 304 and conditional:
            await self._drain(response)
            return FetchedResource(asked, str(url), status, kept.get("content-type", ""), b"", kept)
        if not 200 <= status < 300:
            await self._drain(response)
            raise BadStatusError(asked, status)
        content_type = response.headers.get("content-type", "")
        problem = check_type(content_type) if check_type else None
        if problem:
            raise FetchError(asked, problem)
        body, cut = await self._read_capped(asked, response, max_bytes, truncate=truncate)
        if cut:
            return PartialResource(asked, str(url), status, content_type, body, kept, max_bytes)
        return FetchedResource(asked, str(url), status, content_type, body, kept)

    async def _drain(self, response: httpx.Response, limit: int = 16_384) -> None:
        """Read the small body of a response we do not use (a redirect, a 304, an error page),
        so its connection can be used again; a larger one is left and the connection closed."""
        received = 0
        try:
            async for chunk in response.aiter_raw():
                received += len(chunk)
                self.bytes_downloaded += len(chunk)
                if received > limit:
                    return
        except httpx.HTTPError:
            return

    async def _read_capped(
        self, asked: str, response: httpx.Response, cap: int, *, truncate: bool
    ) -> tuple[bytes, bool]:
        """The decoded body and whether it was cut at ``cap`` bytes (only with ``truncate``;
        else a :class:`TooLargeError` past ``cap``). The compressed size is held to ``cap`` too.
        """
        declared = response.headers.get("content-length", "").strip()
        if not truncate and declared.isdigit() and int(declared) > cap:
            raise TooLargeError(
                asked,
                f"larger than the {_size(cap)} limit (Content-Length: {_size(int(declared))})",
            )

        def count(n: int) -> None:
            self.bytes_downloaded += n

        try:
            body, cut = await read_bounded(response, cap, count=count)
        except UndecodableBody as exc:
            raise FetchError(asked, f"the response could not be decoded ({exc})") from None
        if cut and not truncate:
            raise TooLargeError(asked, cut)
        return body, bool(cut)

    @asynccontextmanager
    async def _slot(self, host: str, interval: float = 0.0) -> AsyncIterator[None]:
        """Hold a place among ``max_per_host`` for the host, wait until ``interval`` seconds
        have passed since the previous request to it started, then hold a place among
        ``max_concurrency``."""
        per_host = self._per_host.get(host)
        if per_host is None:
            per_host = self._per_host[host] = asyncio.Semaphore(self.config.max_per_host)
        async with per_host:
            if interval > 0:
                now = self._clock() if self._clock else asyncio.get_running_loop().time()
                start = max(now, self._next_start.get(host, now))
                self._next_start[host] = start + interval
                if start > now:
                    await self._sleep(start - now)
                await shared_limits.wait_host(host, interval)  # other workers' requests too
            async with self._all:
                yield

    def _check_literal_address(self, asked: str, url: httpx.URL) -> None:
        """Refuse a URL whose host is a blocked IP literal before connecting (a clear, early
        error; the connection-time guard would refuse it too)."""
        if self._is_blocked is None:
            return
        try:
            ip = ipaddress.ip_address(url.host)
        except ValueError:
            return
        if self._is_blocked(ip):
            raise BlockedAddressError(asked, blocked_reason(url.host, str(ip)))

    async def _check_robots(self, asked: str, url: httpx.URL, *, redirected: bool) -> float | None:
        """Refuse what robots.txt disallows; return the Crawl-delay it asks for, if any."""
        rules = await self._robots_for(url)
        if rules is None:
            return None
        where = f" (redirected to {url})" if redirected else ""
        if isinstance(rules, _RobotsUnreadable):
            raise RobotsDisallowed(
                asked,
                f"robots.txt of {_origin(url)} {rules.reason}; RFC 9309: treated as disallowing "
                f"everything until it can be read{where}",
            )
        if not rules.can_fetch(str(url), self.config.user_agent):
            raise RobotsDisallowed(asked, f"robots.txt of {_origin(url)} disallows it{where}")
        try:
            delay = rules.crawl_delay(self.config.user_agent)
        except Exception:  # a delay Protego cannot read is no delay
            return None
        return float(delay) if delay is not None and delay > 0 else None

    async def _robots_for(self, url: httpx.URL) -> _Robots:
        """The origin's robots.txt: its parsed rules, None (no rules: everything allowed) or
        :class:`_RobotsUnreadable` (everything disallowed). Fetched once per origin for the
        fetcher's life; concurrent first requests wait for the same fetch."""
        key = _origin(url)
        task = self._robots.get(key)
        if task is None:
            robots_url = url.copy_with(path="/robots.txt", query=None, fragment=None)
            task = asyncio.create_task(self._load_robots(str(robots_url)))
            self._robots[key] = task
        return await asyncio.shield(task)

    async def _load_robots(self, robots_url: str) -> _Robots:
        """Fetch and parse one robots.txt, deciding as RFC 9309 section 2.3.1 says.

        * 2xx: the rules (the first ``ROBOTS_MAX_BYTES`` of the file; lines that are not rules,
          as in an HTML page served as robots.txt, are ignored).
        * 4xx ("unavailable"): no rules, everything allowed. Not 429 (Too Many Requests): the
          site asks us to slow down, so it is treated like a 5xx, as Google does.
        * A redirect that cannot be followed (loop, more than ``max_redirects`` hops, a bad
          Location, a refused address): unavailable too (section 2.3.1.2), everything allowed.
          A host that is itself refused is refused again when the page is asked for.
        * 5xx, any other status, a network error, a timeout, a body that does not decode
          ("unreachable", section 2.3.1.4): everything disallowed.
        * The parser failing (it ignores what it cannot read, so this is a bug on our side, not
          a rule of the site): everything disallowed, as we cannot tell what is forbidden.
        """
        try:
            res = await self._fetch(
                robots_url,
                accept=ACCEPT_ROBOTS,
                max_bytes=ROBOTS_MAX_BYTES,
                check_type=None,
                robots=False,
                truncate=True,
            )
        except BadStatusError as exc:
            if 400 <= exc.status < 500 and exc.status != 429:
                return None  # "unavailable": there are no rules
            log.info("%s: HTTP %d; disallowing the whole site", robots_url, exc.status)
            return _RobotsUnreadable(f"answered HTTP {exc.status}")
        except (RedirectError, BlockedAddressError) as exc:
            log.info("%s: %s; treated as having no rules", robots_url, exc.reason)
            return None
        except FetchError as exc:
            log.info("%s: %s; disallowing the whole site", robots_url, exc.reason)
            return _RobotsUnreadable(f"could not be read ({exc.reason})")
        try:
            return Protego.parse(res.body.decode("utf-8", errors="replace"))
        except Exception as exc:
            log.warning(
                "%s could not be parsed; disallowing the whole site", robots_url, exc_info=True
            )
            return _RobotsUnreadable(
                f"could not be parsed ({type(exc).__name__}: {str(exc)[:200]})"
            )


@dataclass(frozen=True, slots=True)
class _RobotsUnreadable:
    """An origin whose robots.txt could not be read: everything on it is disallowed."""

    reason: str
    """What happened, readable after "robots.txt of <origin> ": "answered HTTP 503"."""


_Robots = Protego | _RobotsUnreadable | None


# --- helpers --------------------------------------------------------------------------------


def _conditional(etag: str | None, last_modified: str | None) -> dict[str, str]:
    """The headers of a conditional request with these validators (none: unconditional)."""
    headers: dict[str, str] = {}
    if etag:
        headers["If-None-Match"] = etag
    if last_modified:
        headers["If-Modified-Since"] = last_modified
    return headers


def _parse_url(url: str) -> httpx.URL:
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise FetchError(str(url), f"not a valid URL ({exc})") from None
    if parsed.scheme not in ("http", "https"):
        what = f"{parsed.scheme}: URLs" if parsed.scheme else "relative URLs"
        raise FetchError(url, f"only http and https URLs are fetched, not {what}")
    if not parsed.host:
        raise FetchError(url, "the URL has no host")
    return parsed.copy_with(fragment=None)


class _RedirectRefused(Exception):
    """A redirect the fetcher will not follow; becomes a FetchError for the URL asked for."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _redirect_target(url: httpx.URL, location: str, status: int) -> httpx.URL:
    """Where a redirect from ``url`` goes, or :class:`_RedirectRefused`."""
    location = location.strip()
    if not location:
        raise _RedirectRefused(f"HTTP {status} redirect without a Location header")
    try:
        target = httpx.URL(urljoin(str(url), location))
    except (httpx.InvalidURL, ValueError) as exc:
        scheme = urlsplit(location).scheme.lower()
        if scheme and scheme not in ("http", "https"):
            raise _RedirectRefused(_scheme_refused(scheme)) from None
        raise _RedirectRefused(
            f"HTTP {status} redirect to a bad URL {location!r} ({exc})"
        ) from None
    if target.scheme not in ("http", "https"):
        raise _RedirectRefused(_scheme_refused(target.scheme))
    if not target.host:
        raise _RedirectRefused(f"redirected to a URL without a host ({location!r})")
    return target.copy_with(fragment=None)


def _scheme_refused(scheme: str) -> str:
    return f"redirected to a {scheme}: URL; only http and https are followed"


async def _check_redirect(response: httpx.Response) -> None:
    """Response hook: refuse a bad ``Location`` before httpx tries to parse it itself."""
    if response.status_code in REDIRECT_STATUSES:
        _redirect_target(
            response.request.url, response.headers.get("location", ""), response.status_code
        )


# --- bounded decoding -----------------------------------------------------------------------


class UndecodableBody(ValueError):
    """A body in a Content-Encoding we cannot or will not decode, or that does not decode."""


async def read_bounded(
    response: httpx.Response, cap: int, *, count: Callable[[int], None] | None = None
) -> tuple[bytes, str]:
    """Read a streamed response's body, decoding gzip, deflate and br here, never holding more
    than about ``cap`` decoded bytes (a compression bomb stops at the cap, not in memory).

    Returns ``(body, cut)``: ``cut`` is empty when the whole body is there, else a readable
    reason why it was cut at ``cap`` bytes. The compressed size is held to ``cap`` too.
    ``count(n)`` is called with the size of every chunk received. Raises
    :class:`UndecodableBody` for an encoding we do not decode or data that does not decode.
    """
    decoder = _decoder(response.headers.get("content-encoding", ""))
    body = bytearray()
    received = 0
    async for chunk in response.aiter_raw():
        received += len(chunk)
        if count is not None:
            count(len(chunk))
        body += decoder.decode(chunk, cap + 1 - len(body))
        if len(body) > cap or received > cap:
            return bytes(body[:cap]), _too_large(cap, decoder, received)
    body += decoder.flush(cap + 1 - len(body))
    if len(body) > cap:
        return bytes(body[:cap]), _too_large(cap, decoder, received)
    return bytes(body), ""


class _Identity:
    name = ""

    def decode(self, data: bytes, room: int) -> bytes:
        return data

    def flush(self, room: int) -> bytes:
        return b""


class _Zlib:
    """gzip or deflate, never producing more than ``room`` bytes per call (zlib's
    ``max_length``), so a small chunk of a bomb cannot expand to gigabytes in memory."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._wbits = zlib.MAX_WBITS | 16 if name == "gzip" else zlib.MAX_WBITS
        self._d = zlib.decompressobj(self._wbits)
        self._started = False

    def decode(self, data: bytes, room: int) -> bytes:
        room = max(room, 1)
        try:
            out = self._d.decompress(data, room)
        except zlib.error as exc:
            if self.name == "deflate" and not self._started:  # raw deflate, no zlib header
                self._started = True
                self._d = zlib.decompressobj(-zlib.MAX_WBITS)
                return self.decode(data, room)
            raise UndecodableBody(f"bad {self.name} data: {exc}") from None
        self._started = True
        return out

    def flush(self, room: int) -> bytes:
        try:
            return self._d.flush(max(room, 1))
        except zlib.error as exc:
            raise UndecodableBody(f"bad {self.name} data: {exc}") from None


class _Brotli:
    """br, with brotli's ``output_buffer_limit`` bounding each call's output."""

    name = "br"

    def __init__(self) -> None:
        assert brotli is not None
        self._d = brotli.Decompressor()

    def decode(self, data: bytes, room: int) -> bytes:
        try:
            return self._d.process(data, output_buffer_limit=max(room, 1))
        except brotli.error as exc:
            raise UndecodableBody(f"bad br data: {exc}") from None

    def flush(self, room: int) -> bytes:
        if self._d.is_finished() or not self._d.can_accept_more_data():
            return b""
        try:
            return self._d.process(b"", output_buffer_limit=max(room, 1))
        except brotli.error as exc:
            raise UndecodableBody(f"bad br data: {exc}") from None


_Decoder = _Identity | _Zlib | _Brotli


def _decoder(content_encoding: str) -> _Decoder:
    """The decoder for a ``Content-Encoding``; UndecodableBody for one we did not ask for."""
    codings = [c.strip().lower() for c in content_encoding.split(",")]
    codings = [c for c in codings if c and c != "identity"]
    if not codings:
        return _Identity()
    if len(codings) > 1:
        raise UndecodableBody(f"stacked Content-Encodings ({content_encoding}) are not decoded")
    coding = codings[0]
    if coding in ("gzip", "x-gzip"):
        return _Zlib("gzip")
    if coding == "deflate":
        return _Zlib("deflate")
    if coding == "br" and brotli is not None:
        return _Brotli()
    raise UndecodableBody(f"unsupported Content-Encoding {coding!r}")


def _too_large(cap: int, decoder: _Decoder, received: int) -> str:
    if decoder.name and received <= cap:
        return (
            f"larger than the {_size(cap)} limit once decompressed "
            f"({decoder.name}; {_size(received)} compressed)"
        )
    return f"larger than the {_size(cap)} limit"


# --- freshness ------------------------------------------------------------------------------


def freshness_lifetime(headers: Mapping[str, str]) -> float:
    """Seconds from now for which the server says this response stays the same, so a client
    may reuse it without asking again (RFC 9111 section 4.2, for a private cache): the
    ``Cache-Control`` ``max-age`` (or ``Expires`` minus ``Date``) less the ``Age`` it already
    has. 0 when the response must be revalidated (``no-store``, ``no-cache``, an unreadable or
    past date, a duplicated ``max-age``) or says nothing; the caller caps the result.
    ``headers`` are looked up by lower-case name (a ``FetchedResource``'s ``headers``)."""
    directives: dict[str, str | None] = {}
    duplicated = False
    for part in headers.get("cache-control", "").split(","):
        name, _, value = part.strip().partition("=")
        name = name.strip().lower()
        if not name:
            continue
        duplicated |= name in directives
        directives[name] = value.strip().strip('"') if value else None
    if "no-store" in directives or "no-cache" in directives:
        return 0.0
    if "max-age" in directives:
        raw = directives["max-age"] or ""
        if duplicated or not raw.isdigit():
            return 0.0  # "a cache ... SHOULD consider the response to be stale"
        lifetime = float(int(raw))
    elif "expires" in headers:
        expires = _http_date(headers["expires"])
        if expires is None:
            return 0.0  # an invalid date (often "0" or "-1") means already expired
        date = _http_date(headers.get("date", "")) or datetime.now(UTC)
        lifetime = (expires - date).total_seconds()
    else:
        return 0.0
    age = headers.get("age", "").strip()
    if age.isdigit():
        lifetime -= int(age)
    return max(lifetime, 0.0)


def _http_date(value: str) -> datetime | None:
    try:
        parsed = parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if parsed is None:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def _page_type_problem(content_type: str) -> str | None:
    media = _media_type(content_type)
    if media in PAGE_TYPES:
        return None
    return f"not an HTML page ({media or 'no Content-Type'})"


def _image_type_problem(content_type: str) -> str | None:
    media = _media_type(content_type)
    if media in SVG_TYPES:
        return f"an SVG drawing ({media}), not a photo; not hashed"
    if media.startswith("image/") or media in UNTYPED:
        return None
    return f"not an image ({media})"


def _video_type_problem(content_type: str) -> str | None:
    media = _media_type(content_type)
    if media.startswith("video/") or media in VIDEO_APPLICATION_TYPES:
        return None
    return _image_type_problem(content_type) and f"not a video ({media})"


def _origin(url: httpx.URL) -> str:
    port = url.port or (443 if url.scheme == "https" else 80)
    host = f"[{url.host}]" if ":" in url.host else url.host
    return f"{url.scheme}://{host}:{port}"


def _size(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n} bytes"


def describe_http_error(exc: httpx.HTTPError, timeout: float) -> str:
    """A readable reason for an httpx error."""
    detail = str(exc) or type(exc).__name__
    if isinstance(exc, httpx.ConnectTimeout):
        return f"timed out connecting ({detail})"
    if isinstance(exc, httpx.ReadTimeout):
        return f"the server sent nothing for {timeout:g} s"
    if isinstance(exc, httpx.WriteTimeout):
        return "timed out sending the request"
    if isinstance(exc, httpx.PoolTimeout):
        return "timed out waiting for a free connection"
    if isinstance(exc, httpx.ConnectError):
        return f"could not connect ({detail})"
    if isinstance(exc, httpx.RemoteProtocolError):
        return f"the server broke the HTTP protocol ({detail})"
    if isinstance(exc, httpx.DecodingError):
        return f"the response could not be decoded ({detail})"
    if isinstance(exc, httpx.TooManyRedirects):
        return "too many redirects"
    if isinstance(exc, httpx.UnsupportedProtocol):
        return f"not a fetchable URL ({detail})"
    if isinstance(exc, httpx.NetworkError):
        return f"the connection failed ({detail})"
    return f"{type(exc).__name__}: {detail}"
