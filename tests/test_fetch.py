"""The fetcher, against loopback servers only (several 127.x addresses act as several hosts)."""

from __future__ import annotations

import asyncio
import gzip
import ipaddress
import re
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager

import pytest

from monitor.config import FetchConfig
from monitor.errors import BlockedAddressError, FetchError, RobotsDisallowed
from monitor.fetch import (
    BadStatusError,
    Fetcher,
    TooLargeError,
    is_blocked_address,
)
from monitor.testing.clock import VirtualClock
from monitor.testing.web import LoopbackWeb, Request, Response

PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 100
UA = "ExposureMonitor-Test/1.0 (+https://example.invalid/about)"


def config(**overrides: object) -> FetchConfig:
    values: dict[str, object] = {
        "allow_private_networks": True,
        "timeout": 5,
        "user_agent": UA,
        "max_crawl_delay": 0,
    }
    values.update(overrides)
    return FetchConfig(**values)


@pytest.fixture
def web() -> Iterator[LoopbackWeb]:
    with LoopbackWeb() as w:
        yield w


@pytest.fixture
def web2() -> Iterator[LoopbackWeb]:
    with LoopbackWeb("127.0.0.2") as w:
        yield w


@pytest.fixture
def web3() -> Iterator[LoopbackWeb]:
    with LoopbackWeb("127.0.0.3") as w:
        yield w


def paths(web: LoopbackWeb) -> list[str]:
    return [r.path for r in web.requests]


def redirect(to: str, status: int = 302) -> Response:
    return Response(status, b"", "text/plain", {"Location": to})


# --- pages and images -----------------------------------------------------------------------


async def test_fetches_a_page_and_an_image(web: LoopbackWeb) -> None:
    page_url = web.add(
        "/p.html",
        "<img src=/x.png>",
        "text/html; charset=utf-8",
        headers={"ETag": '"v1"', "Content-Language": "nl", "X-Other": "dropped"},
    )
    img_url = web.add("/x.png", PNG, "image/png")
    async with Fetcher(config()) as f:
        page = await f.fetch_page(page_url)
        img = await f.fetch_image(img_url)
    assert page.body == b"<img src=/x.png>"
    assert page.status == 200
    assert page.url == page.final_url == page_url
    assert page.content_type == "text/html; charset=utf-8"
    assert page.headers["etag"] == '"v1"'
    assert page.headers["content-language"] == "nl"
    assert "x-other" not in page.headers
    assert img.body == PNG
    assert img.content_type == "image/png"


async def test_user_agent_is_sent_on_every_request(web: LoopbackWeb) -> None:
    url = web.add("/p.html", "<p>hi</p>")
    async with Fetcher(config()) as f:
        await f.fetch_page(url)
    assert paths(web) == ["/robots.txt", "/p.html"]
    assert all(r.headers["user-agent"] == UA for r in web.requests)


async def test_non_html_page_is_refused(web: LoopbackWeb) -> None:
    url = web.add("/x.png", PNG, "image/png")
    async with Fetcher(config()) as f:
        with pytest.raises(FetchError) as info:
            await f.fetch_page(url)
    assert info.value.reason == "not an HTML page (image/png)"


async def test_xhtml_page_is_accepted(web: LoopbackWeb) -> None:
    url = web.add("/p.xhtml", "<html/>", "application/xhtml+xml")
    async with Fetcher(config()) as f:
        assert (await f.fetch_page(url)).body == b"<html/>"


async def test_image_accepts_octet_stream_and_missing_type_but_not_html(web: LoopbackWeb) -> None:
    octet = web.add("/a", PNG, "application/octet-stream")
    untyped = web.add("/b", PNG, "")
    html = web.add("/c", "<html></html>", "text/html")
    async with Fetcher(config()) as f:
        assert (await f.fetch_image(octet)).body == PNG
        assert (await f.fetch_image(untyped)).body == PNG
        with pytest.raises(FetchError, match=r"not an image \(text/html\)"):
            await f.fetch_image(html)


async def test_error_status_is_a_fetch_error(web: LoopbackWeb) -> None:
    gone = web.add("/gone", "gone", status=410)
    async with Fetcher(config()) as f:
        with pytest.raises(BadStatusError) as info:
            await f.fetch_page(web.url("/missing"))
        assert info.value.reason == "HTTP 404"
        assert info.value.status == 404
        with pytest.raises(FetchError, match="HTTP 410"):
            await f.fetch_image(gone)


async def test_unreachable_server_and_bad_urls_are_fetch_errors(web: LoopbackWeb) -> None:
    port = web.port
    web.stop()  # nothing listens on this port any more
    async with Fetcher(config(respect_robots=False)) as f:
        with pytest.raises(FetchError, match="could not connect"):
            await f.fetch_page(f"http://127.0.0.1:{port}/")
        with pytest.raises(FetchError, match="only http and https"):
            await f.fetch_page("ftp://example.org/a.html")
        with pytest.raises(FetchError, match="only http and https"):
            await f.fetch_image("/relative.png")


async def test_no_cookies_are_kept(web: LoopbackWeb) -> None:
    url = web.add("/p.html", "<p>", headers={"Set-Cookie": "track=1; Path=/"})
    async with Fetcher(config(respect_robots=False)) as f:
        await f.fetch_page(url)
        await f.fetch_page(url)
    assert all("cookie" not in r.headers for r in web.requests)


# --- size caps ------------------------------------------------------------------------------


def chunked(data: bytes, size: int = 256) -> bytes:
    out = b""
    for i in range(0, len(data), size):
        part = data[i : i + size]
        out += f"{len(part):x}\r\n".encode() + part + b"\r\n"
    return out + b"0\r\n\r\n"


async def test_body_over_cap_with_content_length_is_refused(web: LoopbackWeb) -> None:
    url = web.add("/big.html", b"x" * 5000)
    async with Fetcher(config(max_page_bytes=1024)) as f:
        with pytest.raises(TooLargeError, match="Content-Length"):
            await f.fetch_page(url)


async def test_body_over_cap_without_content_length_is_cut_off(web: LoopbackWeb) -> None:
    big = web.add("/big.html", chunked(b"x" * 5000), headers={"Transfer-Encoding": "chunked"})
    ok = web.add("/ok.html", chunked(b"y" * 1000), headers={"Transfer-Encoding": "chunked"})
    async with Fetcher(config(max_page_bytes=1024)) as f:
        with pytest.raises(TooLargeError, match="larger than the 1.02 KB limit"):
            await f.fetch_page(big)
        assert (await f.fetch_page(ok)).body == b"y" * 1000


async def test_decoded_size_counts_not_compressed_size(web: LoopbackWeb) -> None:
    packed = gzip.compress(b"z" * 50_000)
    assert len(packed) < 1024
    url = web.add("/bomb.png", packed, "image/png", headers={"Content-Encoding": "gzip"})
    small = web.add(
        "/small.png", gzip.compress(PNG), "image/png", headers={"Content-Encoding": "gzip"}
    )
    async with Fetcher(config(max_image_bytes=1024)) as f:
        with pytest.raises(TooLargeError):
            await f.fetch_image(url)
        assert (await f.fetch_image(small)).body == PNG


# --- redirects ------------------------------------------------------------------------------


async def test_redirect_is_followed_across_hosts(web: LoopbackWeb, web2: LoopbackWeb) -> None:
    final = web2.add("/final.html", "<p>final</p>")
    start = web.route("/start", lambda _r: redirect("/middle", 301))
    web.route("/middle", lambda _r: redirect(final, 307))
    async with Fetcher(config()) as f:
        page = await f.fetch_page(start)
    assert page.url == start
    assert page.final_url == final
    assert page.body == b"<p>final</p>"


async def test_redirect_loop_is_refused(web: LoopbackWeb) -> None:
    a = web.route("/a", lambda _r: redirect("/b"))
    web.route("/b", lambda _r: redirect("/a"))
    async with Fetcher(config(max_redirects=10)) as f:
        with pytest.raises(FetchError, match="redirect loop"):
            await f.fetch_page(a)
    assert paths(web).count("/a") == 1


async def test_too_many_redirects_are_refused(web: LoopbackWeb) -> None:
    for i in range(10):
        web.route(f"/r{i}", lambda _r, i=i: redirect(f"/r{i + 1}"))
    web.add("/r10", "<p>end</p>")
    async with Fetcher(config(max_redirects=3)) as f:
        with pytest.raises(FetchError, match=r"too many redirects \(more than 3\)"):
            await f.fetch_page(web.url("/r0"))
        web.add("/r7", "<p>near</p>")
        page = await f.fetch_page(web.url("/r4"))  # exactly three redirects is fine
    assert page.final_url == web.url("/r7")
    assert "/r4" in paths(web)


@pytest.mark.parametrize(
    "target", ["javascript:alert(1)", "ftp://127.0.0.1/x.html", "file:///etc/passwd"]
)
async def test_redirect_to_other_schemes_is_refused(web: LoopbackWeb, target: str) -> None:
    url = web.route("/go", lambda _r: redirect(target))
    async with Fetcher(config()) as f:
        with pytest.raises(FetchError, match="only http and https are followed"):
            await f.fetch_page(url)


# --- robots.txt -----------------------------------------------------------------------------


async def test_robots_disallow_is_obeyed(web: LoopbackWeb) -> None:
    web.add("/robots.txt", "User-agent: ExposureMonitor-Test\nDisallow: /private/\n", "text/plain")
    private = web.add("/private/p.html", "<p>")
    public = web.add("/public.html", "<p>")
    async with Fetcher(config()) as f:
        with pytest.raises(RobotsDisallowed, match="robots.txt"):
            await f.fetch_page(private)
        await f.fetch_page(public)
        assert not await f.can_fetch(private)
    assert "/private/p.html" not in paths(web)
    assert paths(web).count("/robots.txt") == 1


async def test_robots_disallow_applies_to_a_redirect_target(
    web: LoopbackWeb, web2: LoopbackWeb
) -> None:
    web2.add("/robots.txt", "User-agent: *\nDisallow: /\n", "text/plain")
    web2.add("/x.png", PNG, "image/png")
    url = web.route("/img", lambda _r: redirect(web2.url("/x.png")))
    async with Fetcher(config()) as f:
        with pytest.raises(RobotsDisallowed, match="redirected to"):
            await f.fetch_image(url)
    assert "/x.png" not in paths(web2)


async def test_robots_is_not_consulted_when_not_respected(web: LoopbackWeb) -> None:
    web.add("/robots.txt", "User-agent: *\nDisallow: /\n", "text/plain")
    url = web.add("/p.html", "<p>")
    async with Fetcher(config(respect_robots=False)) as f:
        await f.fetch_page(url)
    assert paths(web) == ["/p.html"]


@pytest.mark.parametrize("status", [404, 403, 410])
async def test_robots_4xx_allows_everything(web: LoopbackWeb, status: int) -> None:
    # RFC 9309 2.3.1.3: "unavailable" -- the crawler may access any resource.
    web.add("/robots.txt", "User-agent: *\nDisallow: /\n", "text/plain", status=status)
    url = web.add("/p.html", "<p>")
    async with Fetcher(config()) as f:
        assert (await f.fetch_page(url)).body == b"<p>"
        assert await f.can_fetch(url)


@pytest.mark.parametrize("status", [500, 502, 503, 429])
async def test_robots_server_error_disallows_the_whole_origin(
    web: LoopbackWeb, web2: LoopbackWeb, status: int
) -> None:
    # RFC 9309 2.3.1.4: "unreachable" -- assume complete disallow (429 too: "slow down").
    web.add("/robots.txt", "oops", "text/plain", status=status)
    page = web.add("/p.html", "<p>")
    image = web.add("/x.png", PNG, "image/png")
    other = web2.add("/p.html", "<p>other</p>")  # another origin, its robots.txt a 404
    async with Fetcher(config()) as f:
        for fetch, url in ((f.fetch_page, page), (f.fetch_image, image), (f.fetch_page, page)):
            with pytest.raises(RobotsDisallowed) as info:
                await fetch(url)
            assert info.value.url == url
            assert info.value.reason == (
                f"robots.txt of http://127.0.0.1:{web.port} answered HTTP {status}; RFC 9309: "
                "treated as disallowing everything until it can be read"
            )
        assert not await f.can_fetch(page)
        assert await f.crawl_delay(page) is None
        assert (await f.fetch_page(other)).body == b"<p>other</p>"
    assert paths(web) == ["/robots.txt"]  # asked once; nothing else reached the site


async def test_robots_server_error_applies_to_a_redirect_target(
    web: LoopbackWeb, web2: LoopbackWeb
) -> None:
    web2.add("/robots.txt", "oops", "text/plain", status=503)
    web2.add("/x.png", PNG, "image/png")
    url = web.route("/img", lambda _r: redirect(web2.url("/x.png")))
    async with Fetcher(config()) as f:
        with pytest.raises(RobotsDisallowed, match=r"answered HTTP 503; .*\(redirected to"):
            await f.fetch_image(url)
    assert paths(web2) == ["/robots.txt"]


@asynccontextmanager
async def broken_robots_server(behaviour: str) -> AsyncIterator[tuple[str, list[str]]]:
    """A server whose robots.txt fails at the network level (``reset``: the connection is
    closed without an answer; ``silent``: no answer at all) and whose pages are fine. Yields its
    base URL and the request lines it received."""
    seen: list[str] = []
    handlers: set[asyncio.Task[None]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handlers.add(asyncio.current_task())  # type: ignore[arg-type]
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                line = head.split(b"\r\n", 1)[0].decode()
                seen.append(line)
                if " /robots.txt " in line:
                    if behaviour == "silent":
                        await asyncio.sleep(30)
                    return  # reset: close without answering
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 3\r\n\r\n<p>"
                )
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", seen
    finally:
        for task in handlers:
            task.cancel()
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize(
    ("behaviour", "why"),
    [
        ("reset", r"could not be read \(the server broke the HTTP protocol"),
        ("silent", r"could not be read \(the server sent nothing for 0.3 s\)"),
    ],
)
async def test_robots_network_failure_disallows_the_whole_origin(behaviour: str, why: str) -> None:
    async with (
        broken_robots_server(behaviour) as (base, seen),
        Fetcher(config(timeout=0.3)) as f,
    ):
        for _ in range(2):
            with pytest.raises(RobotsDisallowed) as info:
                await f.fetch_page(base + "/p.html")
            assert re.search(f"^robots.txt of {base} {why}.*RFC 9309", info.value.reason)
    assert seen == ["GET /robots.txt HTTP/1.1"]  # once per origin, and the page never asked


async def test_robots_unreachable_host_is_a_robots_refusal() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with Fetcher(config()) as f:
        with pytest.raises(RobotsDisallowed, match=r"could not be read \(could not connect"):
            await f.fetch_page(f"http://127.0.0.1:{port}/p.html")


async def test_robots_failure_is_not_consulted_when_robots_are_not_respected(
    web: LoopbackWeb,
) -> None:
    web.add("/robots.txt", "oops", "text/plain", status=503)
    url = web.add("/p.html", "<p>")
    async with Fetcher(config(respect_robots=False)) as f:
        assert (await f.fetch_page(url)).body == b"<p>"
        assert await f.can_fetch(url)
    assert paths(web) == ["/p.html"]


async def test_robots_failure_lasts_for_the_fetcher_and_is_asked_again_by_the_next(
    web: LoopbackWeb,
) -> None:
    answers = [Response(503, b"", "text/plain"), Response(200, b"", "text/plain")]
    web.route("/robots.txt", lambda _r: answers.pop(0))
    url = web.add("/p.html", "<p>")
    async with Fetcher(config()) as f:
        with pytest.raises(RobotsDisallowed):
            await f.fetch_page(url)
    async with Fetcher(config()) as f:  # the next scan: robots.txt answers now
        assert (await f.fetch_page(url)).body == b"<p>"
    assert paths(web) == ["/robots.txt", "/robots.txt", "/p.html"]


async def test_robots_redirect_that_cannot_be_followed_means_no_rules(
    web: LoopbackWeb, web2: LoopbackWeb
) -> None:
    # RFC 9309 2.3.1.2: a robots.txt not reached through redirects is "unavailable".
    web.route("/robots.txt", lambda _r: redirect("/robots-b.txt"))
    web.route("/robots-b.txt", lambda _r: redirect("/robots.txt"))
    looping = web.add("/p.html", "<p>")
    web2.route("/robots.txt", lambda _r: redirect("http://127.0.0.3:1/robots.txt"))
    refused = web2.add("/p.html", "<p>2</p>")
    async with Fetcher(
        config(allow_private_networks=False), is_blocked=lambda ip: str(ip) == "127.0.0.3"
    ) as f:
        assert (await f.fetch_page(looping)).body == b"<p>"
        assert (await f.fetch_page(refused)).body == b"<p>2</p>"


@pytest.mark.parametrize(
    "body",
    [
        b"<!doctype html><html><body><h1>Welcome</h1></body></html>",  # a soft 404
        bytes(range(256)) * 20,
        b"",
    ],
)
async def test_robots_without_readable_rules_allows_everything(
    web: LoopbackWeb, body: bytes
) -> None:
    web.add("/robots.txt", body, "text/html")
    url = web.add("/p.html", "<p>")
    async with Fetcher(config()) as f:
        assert (await f.fetch_page(url)).body == b"<p>"


async def test_robots_parser_failure_disallows_the_origin(
    web: LoopbackWeb, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(_text: str) -> None:
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr("monitor.fetch.Protego.parse", broken)
    web.add("/robots.txt", "User-agent: *\nAllow: /\n", "text/plain")
    url = web.add("/p.html", "<p>")
    async with Fetcher(config()) as f:
        with pytest.raises(RobotsDisallowed, match=r"could not be parsed \(RecursionError"):
            await f.fetch_page(url)
    assert "/p.html" not in paths(web)


async def test_robots_is_fetched_once_per_origin(web: LoopbackWeb, web2: LoopbackWeb) -> None:
    def slow_robots(_req: Request) -> Response:
        time.sleep(0.05)  # so the first page requests all arrive while it is being fetched
        return Response(200, b"User-agent: *\nCrawl-delay: 2\nDisallow: /no\n", "text/plain")

    web.route("/robots.txt", slow_robots)
    for i in range(6):
        web.add(f"/p{i}.html", "<p>")
        web2.add(f"/p{i}.html", "<p>")
    async with Fetcher(config()) as f:
        urls = [w.url(f"/p{i}.html") for w in (web, web2) for i in range(6)]
        await asyncio.gather(*(f.fetch_page(u) for u in urls))
        await f.fetch_page(web.url("/p0.html"))
        assert await f.crawl_delay(web.url("/p1.html")) == 2
    assert paths(web).count("/robots.txt") == 1
    assert paths(web2).count("/robots.txt") == 1


async def test_oversized_robots_txt_is_read_up_to_the_cap(web: LoopbackWeb) -> None:
    rules = b"User-agent: *\nDisallow: /secret\n"
    web.add("/robots.txt", rules + b"# " + b"x" * 600_000 + b"\nDisallow: /late\n", "text/plain")
    secret = web.add("/secret.html", "<p>")
    late = web.add("/late.html", "<p>")
    async with Fetcher(config()) as f:
        with pytest.raises(RobotsDisallowed):
            await f.fetch_page(secret)
        await f.fetch_page(late)  # that rule came after the cap


# --- the address guard ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "224.0.0.1",
        "239.255.255.250",
        "255.255.255.255",
        "240.0.0.1",
        "192.0.2.1",
        "::1",
        "::",
        "fe80::1",
        "fc00::1",
        "ff02::1",
        "::ffff:127.0.0.1",
        "::ffff:169.254.169.254",
        "64:ff9b::a00:1",
        "2002:a00:1::1",
    ],
)
def test_non_public_addresses_are_blocked(address: str) -> None:
    assert is_blocked_address(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    "address",
    [
        "8.8.8.8",
        "1.1.1.1",
        "93.184.216.34",
        "2606:4700:4700::1111",
        "::ffff:8.8.8.8",
        "64:ff9b::808:808",
    ],
)
def test_public_addresses_are_allowed(address: str) -> None:
    assert not is_blocked_address(ipaddress.ip_address(address))


async def test_private_addresses_are_refused_by_default(web: LoopbackWeb) -> None:
    web.add("/p.html", "<p>")
    async with Fetcher(config(allow_private_networks=False)) as f:
        for url in (
            web.url("/p.html"),  # a literal loopback IP
            f"http://localhost:{web.port}/p.html",  # a name that resolves to loopback
            f"http://2130706433:{web.port}/p.html",  # 127.0.0.1 written as one number
        ):
            with pytest.raises(BlockedAddressError, match="allow_private_networks") as info:
                await f.fetch_page(url)
            assert info.value.url == url
    assert web.requests == []


def only_127_0_0_2_is_public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return ip != ipaddress.ip_address("127.0.0.2")


def fake_dns(table: dict[str, list[str]]):  # noqa: ANN201
    async def resolve(host: str, port: int) -> list[str]:
        if host not in table:
            raise OSError(f"unknown host {host}")
        return table[host]

    return resolve


async def test_redirect_to_a_blocked_literal_address_is_refused(
    web2: LoopbackWeb, web3: LoopbackWeb
) -> None:
    web3.add("/secret.html", "<p>secret</p>")
    url = web2.route("/go", lambda _r: redirect(web3.url("/secret.html")))
    web2.add("/fine.html", "<p>fine</p>")
    async with Fetcher(
        config(allow_private_networks=False), is_blocked=only_127_0_0_2_is_public
    ) as f:
        assert (await f.fetch_page(web2.url("/fine.html"))).body == b"<p>fine</p>"
        with pytest.raises(BlockedAddressError) as info:
            await f.fetch_page(url)
    assert info.value.url == url
    assert "127.0.0.3" in info.value.reason
    assert web3.requests == []


async def test_redirect_to_a_name_resolving_to_a_blocked_address_is_refused_at_connect(
    web2: LoopbackWeb, web3: LoopbackWeb
) -> None:
    dns = fake_dns({"public.test": ["127.0.0.2"], "private.test": ["127.0.0.3"]})
    web3.add("/secret.html", "<p>secret</p>")
    web2.route("/go", lambda _r: redirect(f"http://private.test:{web3.port}/secret.html"))
    url = f"http://public.test:{web2.port}/go"
    async with Fetcher(
        config(allow_private_networks=False), is_blocked=only_127_0_0_2_is_public, resolver=dns
    ) as f:
        with pytest.raises(BlockedAddressError, match="private.test resolves to 127.0.0.3"):
            await f.fetch_page(url)
    assert paths(web2) == ["/robots.txt", "/go"]
    assert web3.requests == []


async def test_only_allowed_addresses_of_a_host_are_connected_to(web3: LoopbackWeb) -> None:
    web3.add("/p.html", "<p>private</p>")
    with LoopbackWeb("127.0.0.2", port=web3.port) as web2:
        web2.add("/p.html", "<p>public</p>")
        dns = fake_dns({"mixed.test": ["127.0.0.3", "127.0.0.2"]})
        async with Fetcher(
            config(allow_private_networks=False), is_blocked=only_127_0_0_2_is_public, resolver=dns
        ) as f:
            page = await f.fetch_page(f"http://mixed.test:{web3.port}/p.html")
    assert page.body == b"<p>public</p>"
    assert web3.requests == []


# --- time and concurrency -------------------------------------------------------------------


@asynccontextmanager
async def drip_server() -> AsyncIterator[str]:
    """A server that sends headers, then one body byte every 20 ms, never finishing."""
    handlers: set[asyncio.Task[None]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handlers.add(asyncio.current_task())  # type: ignore[arg-type]
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 1000000\r\n\r\n"
            )
            while True:
                writer.write(b"x")
                await writer.drain()
                await asyncio.sleep(0.02)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/slow.html"
    finally:
        for task in handlers:
            task.cancel()
        server.close()
        await server.wait_closed()


async def test_slow_drip_body_hits_the_deadline() -> None:
    async with (
        drip_server() as url,
        Fetcher(config(timeout=0.2, deadline=0.6, respect_robots=False)) as f,
    ):
        with pytest.raises(FetchError, match="gave up after 0.6 s"):
            await f.fetch_page(url)


class Gauge:
    """Counts requests in flight in a handler that sleeps briefly."""

    def __init__(self) -> None:
        self.now = 0
        self.peak = 0
        self._lock = threading.Lock()

    def handler(self, _req: Request) -> Response:
        with self._lock:
            self.now += 1
            self.peak = max(self.peak, self.now)
        time.sleep(0.05)
        with self._lock:
            self.now -= 1
        return Response(200, b"<p>", "text/html")


async def test_per_host_concurrency_is_bounded(web: LoopbackWeb, web2: LoopbackWeb) -> None:
    gauge, gauge2 = Gauge(), Gauge()
    web.route("/p.html", gauge.handler)
    web2.route("/p.html", gauge2.handler)
    urls = [web.url("/p.html")] * 8 + [web2.url("/p.html")] * 8
    async with Fetcher(config(max_per_host=2, max_concurrency=10, respect_robots=False)) as f:
        await asyncio.gather(*(f.fetch_page(u) for u in urls))
    assert gauge.peak == 2
    assert gauge2.peak == 2


async def test_overall_concurrency_is_bounded(web: LoopbackWeb, web2: LoopbackWeb) -> None:
    gauge = Gauge()
    web.route("/p.html", gauge.handler)
    web2.route("/p.html", gauge.handler)
    urls = [web.url("/p.html")] * 6 + [web2.url("/p.html")] * 6
    async with Fetcher(config(max_per_host=4, max_concurrency=3, respect_robots=False)) as f:
        await asyncio.gather(*(f.fetch_page(u) for u in urls))
    assert gauge.peak == 3


# --- decoding, politeness, conditional requests ----------------------------------------------


@pytest.mark.parametrize("coding", ["gzip", "deflate", "raw-deflate", "br"])
async def test_compressed_bodies_are_decoded_and_counted_as_sent(
    web: LoopbackWeb, coding: str
) -> None:
    import zlib

    import brotli

    html = b"<html><body>" + b"<p>compressible</p>" * 500 + b"</body></html>"
    packed = {
        "gzip": gzip.compress(html),
        "deflate": zlib.compress(html),
        "raw-deflate": _raw_deflate(html),
        "br": brotli.compress(html),
    }[coding]
    header = "deflate" if coding == "raw-deflate" else coding
    url = web.add("/c.html", packed, headers={"Content-Encoding": header})
    async with Fetcher(config(respect_robots=False)) as f:
        page = await f.fetch_page(url)
        assert page.body == html
        assert f.bytes_downloaded == len(packed)
    assert "br" in web.requests[0].headers["accept-encoding"]


def _raw_deflate(data: bytes) -> bytes:
    import zlib

    c = zlib.compressobj(wbits=-15)
    return c.compress(data) + c.flush()


async def test_a_brotli_bomb_stops_at_the_cap(web: LoopbackWeb) -> None:
    import brotli

    bomb = brotli.compress(b"\0" * 100_000_000, quality=5)
    assert len(bomb) < 100_000
    url = web.add("/bomb.png", bomb, "image/png", headers={"Content-Encoding": "br"})
    async with Fetcher(config(max_image_bytes=10_000, respect_robots=False)) as f:
        with pytest.raises(TooLargeError, match=r"once decompressed \(br"):
            await f.fetch_image(url)


async def test_corrupt_compressed_body_is_a_readable_error(web: LoopbackWeb) -> None:
    url = web.add("/bad.html", b"this is not gzip", headers={"Content-Encoding": "gzip"})
    async with Fetcher(config(respect_robots=False)) as f:
        with pytest.raises(FetchError, match="could not be decoded"):
            await f.fetch_page(url)


async def test_a_page_over_the_cap_can_be_read_in_part(web: LoopbackWeb) -> None:
    from monitor.fetch import PartialResource

    url = web.add("/long.html", b"<img src=a.jpg>" + b"x" * 5000)
    async with Fetcher(config(max_page_bytes=1024, respect_robots=False)) as f:
        page = await f.fetch_page(url, partial=True)
    assert isinstance(page, PartialResource) and page.limit == 1024
    assert page.body.startswith(b"<img src=a.jpg>") and len(page.body) == 1024


async def test_svg_is_not_fetched_as_an_image(web: LoopbackWeb) -> None:
    url = web.add("/d.svg", b"<svg/>", "image/svg+xml")
    async with Fetcher(config(respect_robots=False)) as f:
        with pytest.raises(FetchError, match="SVG drawing"):
            await f.fetch_image(url)


@pytest.mark.parametrize(
    ("robots", "cfg", "gap", "waits"),
    [
        ("User-agent: *\nCrawl-delay: 0.25\n", {"max_crawl_delay": 5}, 0.25, 3),
        ("User-agent: *\nCrawl-delay: 3600\n", {"max_crawl_delay": 0.2}, 0.2, 3),  # bounded
        # the interval spaces robots.txt too: the first image waits for it
        ("User-agent: *\nAllow: /\n", {"min_host_interval": 0.2}, 0.2, 4),
    ],
)
async def test_requests_to_one_host_are_spaced_by_crawl_delay_or_interval(
    web: LoopbackWeb, robots: str, cfg: dict[str, object], gap: float, waits: int
) -> None:
    web.add("/robots.txt", robots, "text/plain")
    for i in range(4):
        web.add(f"/i{i}.png", PNG, "image/png")
    clock = VirtualClock()
    async with Fetcher(config(max_per_host=4, **cfg), clock=clock, sleep=clock.sleep) as f:
        got = await asyncio.gather(*(f.fetch_image(web.url(f"/i{i}.png")) for i in range(4)))
    assert [g.status for g in got] == [200] * 4
    # Each request waits for its turn, a gap after the one before (on a virtual clock: no
    # timing in the test); the 3600 s asked for is bounded.
    assert clock.slept == pytest.approx([gap] * waits), clock.slept
    assert clock.now == pytest.approx(1000.0 + waits * gap)


async def test_conditional_request_returns_304_without_a_body(web: LoopbackWeb) -> None:
    def handler(req: Request) -> Response:
        if req.headers.get("if-none-match") == '"x"':
            return Response(304, b"", "image/png", {"ETag": '"x"'})
        return Response(200, PNG, "image/png", {"ETag": '"x"', "Last-Modified": "yesterday"})

    url = web.route("/e.png", handler)
    async with Fetcher(config(respect_robots=False)) as f:
        full = await f.fetch_image(url)
        assert full.status == 200 and full.headers["etag"] == '"x"'
        assert full.headers["last-modified"] == "yesterday"
        again = await f.fetch_image(url, etag='"x"', last_modified="yesterday")
        assert again.status == 304 and again.body == b""
        assert f.bytes_downloaded == len(PNG)
    assert web.requests[-1].headers["if-modified-since"] == "yesterday"
    web.add("/unasked.png", b"", "image/png", status=304)
    async with Fetcher(config(respect_robots=False)) as f:
        with pytest.raises(BadStatusError, match="HTTP 304"):
            await f.fetch_image(web.url("/unasked.png"))


async def test_the_deadline_covers_every_redirect_hop() -> None:
    def slow_redirect(to: str) -> Callable[[Request], Response]:
        def handler(_req: Request) -> Response:
            time.sleep(1.0)  # most of the deadline spent on the first hop
            return redirect(to)

        return handler

    async with drip_server() as url:
        web = LoopbackWeb().start()
        try:
            start = web.route("/hop", slow_redirect(url))
            async with Fetcher(config(timeout=1.5, deadline=1.2, respect_robots=False)) as f:
                t0 = time.monotonic()
                with pytest.raises(FetchError, match="gave up after 1.2 s"):
                    await f.fetch_page(start)
                # A deadline per hop would have allowed 1.0 + 1.2 s.
                assert time.monotonic() - t0 < 1.9
        finally:
            web.stop()
