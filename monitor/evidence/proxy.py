"""A forward proxy on loopback that lets the screenshot browser reach only allowed addresses.

Chromium is started with ``--proxy-server`` pointing here (loopback included, and with its own
name resolution switched off), so every connection it makes, for the page, its images, scripts,
frames, redirects and WebSockets, comes through :class:`GuardProxy`. For each one the proxy
resolves the host once, drops private, loopback, link-local and reserved addresses and connects
to an address it checked, by IP: the same :class:`monitor.fetch.GuardedNetworkBackend` the
fetcher uses. Chromium cannot resolve the name a second time, so a host that answers a public
address to the check and a private one afterwards (DNS rebinding) gets nowhere.

* ``CONNECT host:port`` (HTTPS, WSS): a blind tunnel to the checked address; Chromium speaks TLS
  through it and checks the certificate against the host name as usual.
* ``GET http://host/...`` / ``HEAD`` (plain HTTP): sent on a fresh connection to the checked
  address with ``Connection: close``; one request per browser connection. Other methods are
  refused (405): a screenshot only reads.
* A refused address answers ``403`` with the reason (kept in :attr:`GuardProxy.refusals` for
  the caller's error message); a host that cannot be reached answers ``502``.
* Each connection is bounded: ``max_bytes`` from the server, ``idle_timeout`` between reads.

The proxy binds 127.0.0.1 on a free port and lives as long as one
:class:`~monitor.evidence.screenshot.Screenshotter`. It never connects to anything the address
rule refuses, so another local program using it gains nothing it could not do itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import time
from urllib.parse import urlsplit

import httpcore

from monitor.errors import BlockedAddressError
from monitor.fetch import AddressPredicate, GuardedNetworkBackend, Resolver, system_resolver

__all__ = ["GuardProxy"]

log = logging.getLogger(__name__)

MAX_HEAD_BYTES = 64 * 1024
CHUNK = 64 * 1024
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authorization",
        "proxy-authenticate",
        "te",
        "trailer",
        "upgrade",
    }
)
READ_METHODS = frozenset({"GET", "HEAD"})
MAX_REFUSALS = 1000


class _Refused(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class GuardProxy:
    """``await proxy.start()`` -> the port; ``await proxy.close()``.

    ``is_blocked`` and ``resolver`` are the fetcher's address rule and resolver
    (:func:`monitor.fetch.is_blocked_address`, :func:`monitor.fetch.system_resolver` by
    default). ``connect_timeout`` bounds looking up and connecting, ``idle_timeout`` every wait
    for bytes, ``max_bytes`` what one connection may bring from a server.
    """

    def __init__(
        self,
        is_blocked: AddressPredicate,
        resolver: Resolver | None = None,
        *,
        connect_timeout: float = 20.0,
        idle_timeout: float = 60.0,
        max_bytes: int = 50_000_000,
    ) -> None:
        inner = resolver or system_resolver

        async def resolve(host: str, port: int) -> list[str]:
            try:  # an IP literal is its own address
                return [str(ipaddress.ip_address(host))]
            except ValueError:
                return list(await inner(host, port))

        self._backend = GuardedNetworkBackend(is_blocked=is_blocked, resolver=resolve)
        self.connect_timeout = connect_timeout
        self.idle_timeout = idle_timeout
        self.max_bytes = max_bytes
        self.refusals: dict[tuple[str, int], tuple[float, str]] = {}
        """``(host, port)`` -> (``time.monotonic()`` when, why) for every refused address."""
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    async def start(self) -> int:
        """Listen on 127.0.0.1; return the port."""
        self._server = await asyncio.start_server(
            self._handle, "127.0.0.1", 0, limit=MAX_HEAD_BYTES
        )
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def close(self) -> None:
        """Stop listening and cut every open connection."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if server is not None:
            with contextlib.suppress(Exception):
                await server.wait_closed()

    def refusal_since(self, host: str, port: int, since: float) -> str | None:
        """Why ``host:port`` was refused at or after ``since`` (``time.monotonic()``), if it was."""
        found = self.refusals.get((host.strip("[]").lower(), port))
        return found[1] if found is not None and found[0] >= since else None

    # --- one browser connection ----------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        upstream: httpcore.AsyncNetworkStream | None = None
        try:
            async with asyncio.timeout(self.idle_timeout):
                head = await reader.readuntil(b"\r\n\r\n")
            method, target, lines = _parse_head(head)
            if method == "CONNECT":
                upstream = await self._connect(*_authority(target))
                writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
                await writer.drain()
                await self._splice(reader, writer, upstream, tunnel=True)
            else:
                upstream, request = await self._forward_request(method, target, lines)
                await upstream.write(request, timeout=self.idle_timeout)
                await self._splice(reader, writer, upstream, tunnel=False)
        except _Refused as exc:
            with contextlib.suppress(Exception):
                await _answer(writer, exc.status, exc.reason)
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # the browser went quiet or sent junk
        except (OSError, httpcore.NetworkError, httpcore.TimeoutException):
            pass  # either side hung up or went quiet
        except Exception:  # one connection must not take the proxy down
            log.exception("screenshot proxy: unexpected error")
        finally:
            self._tasks.discard(task)
            if upstream is not None:
                with contextlib.suppress(Exception):
                    await upstream.aclose()
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _forward_request(
        self, method: str, target: str, lines: list[tuple[str, str]]
    ) -> tuple[httpcore.AsyncNetworkStream, bytes]:
        """The upstream connection and the request to send on it, for a plain-HTTP request."""
        if method not in READ_METHODS:
            raise _Refused(405, f"{method} requests are not sent by the screenshot browser")
        parts = urlsplit(target)
        if parts.scheme != "http" or not parts.hostname:
            raise _Refused(400, f"not an absolute http URL: {target[:200]}")
        try:
            port = parts.port or 80
        except ValueError:
            raise _Refused(400, f"bad port in {target[:200]}") from None
        names = {name for name, _ in lines}
        if "content-length" in names or "transfer-encoding" in names:
            raise _Refused(400, "request bodies are not forwarded")
        dropped = set(HOP_BY_HOP)
        for name, value in lines:
            if name == "connection":
                dropped |= {v.strip().lower() for v in value.split(",")}
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        out = [f"{method} {path} HTTP/1.1"]
        out += [f"{name}: {value}" for name, value in lines if name not in dropped]
        if "host" not in names:
            out.append(f"host: {parts.netloc.rsplit('@', 1)[-1]}")
        out.append("connection: close")
        upstream = await self._connect(parts.hostname, port)
        return upstream, ("\r\n".join(out) + "\r\n\r\n").encode("latin-1")

    async def _connect(self, host: str, port: int) -> httpcore.AsyncNetworkStream:
        host = host.strip("[]")
        try:
            return await self._backend.connect_tcp(host, port, timeout=self.connect_timeout)
        except BlockedAddressError as exc:
            if len(self.refusals) >= MAX_REFUSALS:
                self.refusals.clear()
            self.refusals[(host.lower(), port)] = (time.monotonic(), exc.reason)
            raise _Refused(403, exc.reason) from None
        except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
            raise _Refused(502, f"could not connect to {host}:{port}: {exc}") from None

    async def _splice(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        upstream: httpcore.AsyncNetworkStream,
        *,
        tunnel: bool,
    ) -> None:
        """Copy server -> browser (at most ``max_bytes``) and, in a tunnel, browser -> server,
        until either side closes or goes quiet for ``idle_timeout``."""

        async def down() -> None:
            received = 0
            while True:
                data = await upstream.read(CHUNK, timeout=self.idle_timeout)
                if not data:
                    return
                received += len(data)
                if received > self.max_bytes:
                    return
                writer.write(data)
                await writer.drain()

        async def up() -> None:  # the browser may stay quiet while the server talks
            while True:
                data = await reader.read(CHUNK)
                if not data:
                    return
                await upstream.write(data, timeout=self.idle_timeout)

        if not tunnel:  # plain HTTP: one request per connection; the browser's later bytes wait
            await down()
            return
        tasks = [asyncio.create_task(down()), asyncio.create_task(up())]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if not task.cancelled() and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


def _parse_head(head: bytes) -> tuple[str, str, list[tuple[str, str]]]:
    """The method, target and (lower-case name, value) header lines of a request head."""
    text = head.decode("latin-1")
    first, *rest = text.split("\r\n")
    parts = first.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise _Refused(400, "not an HTTP/1 request")
    lines: list[tuple[str, str]] = []
    for line in rest:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name.strip() or name != name.strip():
            raise _Refused(400, "bad header line")
        lines.append((name.lower(), value.strip()))
    return parts[0].upper(), parts[1], lines


def _authority(target: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port``) of a CONNECT request."""
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise _Refused(400, f"bad CONNECT target {target[:200]!r}")
    if ":" in host and not (host.startswith("[") and host.endswith("]")):
        raise _Refused(400, f"bad CONNECT target {target[:200]!r}")
    number = int(port)
    if not 0 < number < 65536:
        raise _Refused(400, f"bad CONNECT port {port}")
    return host.strip("[]"), number


async def _answer(writer: asyncio.StreamWriter, status: int, reason: str) -> None:
    phrase = {400: "Bad Request", 403: "Forbidden", 405: "Method Not Allowed"}.get(
        status, "Bad Gateway"
    )
    body = f"Exposure Monitor screenshot proxy: {reason}\n".encode()
    writer.write(
        f"HTTP/1.1 {status} {phrase}\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        + body
    )
    await writer.drain()
