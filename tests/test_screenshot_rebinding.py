"""The screenshot browser connects only to addresses that were checked: no DNS-rebinding gap.

"Public" is 127.0.0.2 (the injected address rule makes only it count as public); 127.0.0.1
and 127.0.0.3 play the private network. Names resolve through an injected resolver, except
where Chromium would resolve them itself, which is the gap these tests close.
"""

from __future__ import annotations

import asyncio
import collections
import ipaddress
from collections.abc import Iterator

import pytest

from monitor.demo.photos import photo_bytes
from monitor.evidence import ScreenshotError, Screenshotter, chromium_path
from monitor.evidence.proxy import GuardProxy
from monitor.testing.web import LoopbackWeb, Response

PUBLIC = "127.0.0.2"
PHOTO = photo_bytes(7, (400, 300))
SHOOTER_TIMEOUT = 60.0
needs_chromium = pytest.mark.skipif(
    chromium_path() is None,
    reason="no Chromium at /usr/bin/chromium (apt-get install chromium) or $MONITOR_CHROMIUM",
)


def only_public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return str(ip) != PUBLIC


def answering(table: dict[str, list[list[str]]]):  # noqa: ANN201
    """A resolver answering ``table[host][i]`` to the i-th question about ``host`` (the last
    answer from then on); it counts the questions in ``.calls``."""
    calls: collections.Counter[str] = collections.Counter()

    async def resolve(host: str, port: int) -> list[str]:
        answers = table.get(host)
        if answers is None:
            raise OSError(f"unknown host {host}")
        calls[host] += 1
        return answers[min(calls[host], len(answers)) - 1]

    resolve.calls = calls  # type: ignore[attr-defined]
    return resolve


@pytest.fixture
def public() -> Iterator[LoopbackWeb]:
    with LoopbackWeb(PUBLIC) as web:
        yield web


# --- with Chromium --------------------------------------------------------------------------


@needs_chromium
async def test_a_name_checked_as_public_cannot_make_the_browser_connect_elsewhere(tmp_path):
    """The check says localhost is 127.0.0.2 (public); Chromium, resolving by itself, would
    connect to 127.0.0.1. The page must come from the address that was checked."""
    with LoopbackWeb(PUBLIC) as public, LoopbackWeb("127.0.0.1", port=public.port) as private:
        for web, word in ((public, "public"), (private, "secret")):
            web.add("/p.html", f"<h1>{word}</h1><img src='/x.jpg'>")
            web.add("/x.jpg", PHOTO, "image/jpeg")
        dns = answering({"localhost": [[PUBLIC]]})
        url = f"http://localhost:{public.port}/p.html"
        async with Screenshotter(
            resolver=dns, is_blocked=only_public, timeout=SHOOTER_TIMEOUT
        ) as s:
            info = await s.capture(url, tmp_path / "p.png", may_show_minor=False)
        assert info.path.exists() and info.final_url == url
        assert private.requests == []
        assert [r.path for r in public.requests] == ["/p.html", "/x.jpg"]


@needs_chromium
async def test_a_name_that_rebinds_after_the_check_reaches_nothing(tmp_path):
    """rebind.test answers public to the first question and private afterwards: the page is
    refused with the reason, and the private server hears nothing."""
    with LoopbackWeb("127.0.0.3") as private:
        private.add("/p.html", "<h1>secret</h1>")
        dns = answering({"rebind.test": [[PUBLIC], ["127.0.0.3"]]})
        url = f"http://rebind.test:{private.port}/p.html"
        async with Screenshotter(
            resolver=dns, is_blocked=only_public, timeout=SHOOTER_TIMEOUT
        ) as s:
            with pytest.raises(ScreenshotError) as info:
                await s.capture(url, tmp_path / "p.png", may_show_minor=False)
        assert str(info.value).startswith(f"{url}: rebind.test resolves to 127.0.0.3")
        assert "private, local or reserved" in str(info.value)
        assert dns.calls["rebind.test"] >= 2
        assert private.requests == []
        assert not (tmp_path / "p.png").exists()


@needs_chromium
async def test_redirects_and_images_to_refused_addresses_go_nowhere(tmp_path):
    """Every redirect hop and every image is checked where it connects; a refused redirect of
    the page itself is a readable error."""
    with LoopbackWeb(PUBLIC) as public, LoopbackWeb("127.0.0.3") as private:
        private.add("/secret.html", "<h1>secret</h1>")
        private.add("/x.jpg", PHOTO, "image/jpeg")
        dns = answering({"site.test": [[PUBLIC]], "intranet.test": [["127.0.0.3"]]})
        site = f"http://site.test:{public.port}"
        public.route("/go", lambda _r: Response(302, b"", headers={"Location": private.url("/")}))
        public.route(
            "/go-name",
            lambda _r: Response(
                302, b"", headers={"Location": f"http://intranet.test:{private.port}/secret.html"}
            ),
        )
        public.route(
            "/img-redirect.jpg",
            lambda _r: Response(302, b"", headers={"Location": private.url("/x.jpg")}),
        )
        public.add(
            "/p.html",
            f"<h1>hello</h1><img src='{private.url('/x.jpg')}'><img src='/img-redirect.jpg'>"
            f"<img src='http://intranet.test:{private.port}/x.jpg'>"
            f"<iframe src='http://intranet.test:{private.port}/secret.html'></iframe>",
        )
        async with Screenshotter(
            resolver=dns, is_blocked=only_public, timeout=SHOOTER_TIMEOUT
        ) as s:
            info = await s.capture(site + "/p.html", tmp_path / "p.png", may_show_minor=False)
            assert info.path.exists()
            with pytest.raises(ScreenshotError, match=r"127\.0\.0\.3 is a private, local"):
                await s.capture(site + "/go", tmp_path / "go.png", may_show_minor=False)
            with pytest.raises(ScreenshotError, match="intranet.test resolves to 127.0.0.3"):
                await s.capture(site + "/go-name", tmp_path / "go2.png", may_show_minor=False)
        assert private.requests == []
        assert "/img-redirect.jpg" in [r.path for r in public.requests]


@needs_chromium
async def test_the_screenshot_browser_sends_only_gets(tmp_path):
    """Forms and scripts cannot make the screenshot post anything."""
    with LoopbackWeb(PUBLIC) as public:
        public.route("/beacon", lambda _r: Response(204, b""))
        public.add(
            "/p.html",
            "<h1>hi</h1><form id=f method=post action='/beacon'><input name=a value=1></form>"
            "<script>fetch('/beacon', {method: 'POST', body: 'x'}).catch(() => {});"
            "navigator.sendBeacon('/beacon', 'y');</script>",
        )
        dns = answering({"site.test": [[PUBLIC]]})
        async with Screenshotter(
            resolver=dns, is_blocked=only_public, timeout=SHOOTER_TIMEOUT
        ) as s:
            await s.capture(
                f"http://site.test:{public.port}/p.html", tmp_path / "p.png", may_show_minor=False
            )
        assert [r.method for r in public.requests] == ["GET"]


# --- the guard proxy itself -------------------------------------------------------------------


async def _ask(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()


async def test_the_proxy_checks_every_connection_on_the_address_it_connects_to(public):
    public.add("/p.html", "<p>public</p>")
    dns = answering({"rebind.test": [[PUBLIC], ["127.0.0.3"]]})
    proxy = GuardProxy(only_public, dns, connect_timeout=5, idle_timeout=5)
    port = await proxy.start()
    try:
        get = f"GET http://rebind.test:{public.port}/p.html HTTP/1.1\r\nHost: rebind.test\r\n\r\n"
        first = await _ask(port, get.encode())
        second = await _ask(port, get.encode())
        literal = await _ask(port, b"CONNECT 127.0.0.3:443 HTTP/1.1\r\nHost: x\r\n\r\n")
    finally:
        await proxy.close()
    assert first.startswith(b"HTTP/1.1 200") and first.endswith(b"<p>public</p>")
    assert second.startswith(b"HTTP/1.1 403") and b"resolves to 127.0.0.3" in second
    assert literal.startswith(b"HTTP/1.1 403") and b"127.0.0.3 is a private" in literal
    assert [r.path for r in public.requests] == ["/p.html"]
    assert public.requests[0].headers["connection"] == "close"
    assert proxy.refusal_since("rebind.test", public.port, 0.0) is not None


async def test_the_proxy_tunnels_only_to_checked_addresses(public):
    """CONNECT (HTTPS, WebSockets) is a tunnel to the checked address, nothing else."""
    public.add("/t.html", "<p>through the tunnel</p>")
    dns = answering({"site.test": [[PUBLIC]]})
    proxy = GuardProxy(only_public, dns, connect_timeout=5, idle_timeout=5)
    port = await proxy.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"CONNECT site.test:{public.port} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
        writer.write(b"GET /t.html HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(), 10)
        writer.close()
    finally:
        await proxy.close()
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"<p>through the tunnel</p>")


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"POST http://site.test:{port}/x HTTP/1.1\r\nContent-Length: 1\r\n\r\nx", b"405"),
        (b"GET http://site.test:{port}/x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", b"400"),
        (b"GET /relative HTTP/1.1\r\nHost: site.test\r\n\r\n", b"400"),
        (b"CONNECT site.test HTTP/1.1\r\n\r\n", b"400"),
        (b"GET ftp://site.test/x HTTP/1.1\r\n\r\n", b"400"),
        (b"GET http://nowhere.test:{port}/x HTTP/1.1\r\n\r\n", b"502"),
    ],
)
async def test_the_proxy_refuses_what_a_screenshot_does_not_need(
    public: LoopbackWeb, request_bytes: bytes, status: bytes
) -> None:
    dns = answering({"site.test": [[PUBLIC]]})
    proxy = GuardProxy(only_public, dns, connect_timeout=5, idle_timeout=5)
    port = await proxy.start()
    try:
        answer = await _ask(port, request_bytes.replace(b"{port}", str(public.port).encode()))
    finally:
        await proxy.close()
    assert answer.startswith(b"HTTP/1.1 " + status), answer[:200]
    assert public.requests == []


async def test_the_proxy_cuts_a_connection_at_its_byte_cap(public):
    public.add("/big.bin", b"x" * 300_000, "application/octet-stream")
    dns = answering({"site.test": [[PUBLIC]]})
    proxy = GuardProxy(only_public, dns, connect_timeout=5, idle_timeout=5, max_bytes=100_000)
    port = await proxy.start()
    try:
        get = f"GET http://site.test:{public.port}/big.bin HTTP/1.1\r\n\r\n"
        answer = await _ask(port, get.encode())
    finally:
        await proxy.close()
    assert answer.startswith(b"HTTP/1.1 200")
    assert len(answer) <= 100_000
