"""Whole scans against a hostile loopback web: every byte from the web is an attack.

One scan meets, side by side with pages holding good copies of the person's photos, servers that
redirect into private networks, rebind DNS, drip bytes, never answer, send bombs, lie about
types, pad pages to 50 MB, stuff 20,000 images in a page, and robots.txt files that disallow,
are huge, fail or hang (the last two disallow their whole site, as RFC 9309 says). Each must end
as a readable error recorded for its URL, the scan must complete, the good copies must still be
matched, and another person's scan must not notice any of it.
Search-backend failures get a scan each. The table in docs/hostile-input.md lists the cases.

"Public" is 127.0.0.2 (an injected address rule makes only it count as public); 127.0.0.3 plays
the private network, and names resolve through an injected resolver.
"""

from __future__ import annotations

import collections
import gzip
import re
import socket
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import brotli
import pytest
from sqlalchemy import select

from monitor import store
from monitor.config import FetchConfig, Settings
from monitor.db import Database
from monitor.db.models import FetchErrorRecord
from monitor.demo.photos import photo_bytes
from monitor.demo.transforms import decode, encode, resize
from monitor.enrol import enrol_images
from monitor.fetch import Fetcher, system_resolver
from monitor.pipeline import hashing_pool, scan_subject
from monitor.testing.searxng import FakeSearxng
from monitor.testing.web import LoopbackWeb, Request, Response
from tests.conftest import loopback_settings

NAME = "Robin Hostile"
OTHER = "Kim Bystander"
PUBLIC = "127.0.0.2"
PRIVATE = "127.0.0.3"
IMAGE_CAP = 300_000
DEADLINE = 3.0


def only_public(ip: object) -> bool:
    """The address rule of these scans: 127.0.0.2 is the internet, everything else is not."""
    return str(ip) != PUBLIC


def copy_of(ref: bytes, scale: float = 0.7) -> bytes:
    return encode(resize(decode(ref), scale), "JPEG", 80)


def png_bomb(side: int = 100_000) -> bytes:
    """A 500-byte PNG whose header claims side x side pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    rows = zlib.compress(b"\0" * (side + 1) * 4)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")
    )


def chunked(data: bytes, size: int = 4096) -> bytes:
    out = bytearray()
    for i in range(0, len(data), size):
        part = data[i : i + size]
        out += f"{len(part):x}\r\n".encode() + part + b"\r\n"
    return bytes(out + b"0\r\n\r\n")


# --- a raw socket server for what an HTTP library would not do ----------------------------


class RawServer:
    """Answers by request path with hand-written misbehaviour, one thread per connection."""

    def __init__(self, host: str = PUBLIC) -> None:
        self.sock = socket.create_server((host, 0))
        self.port = self.sock.getsockname()[1]
        self.host = host
        self.stop = threading.Event()
        self.routes: dict[str, Callable[[socket.socket], None]] = {
            "/robots.txt": lambda c: c.sendall(
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )
        }
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.port}{path}"

    def _accept(self) -> None:
        self.sock.settimeout(0.1)
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            try:
                data = b""
                while b"\r\n\r\n" not in data:
                    more = conn.recv(4096)
                    if not more:
                        return
                    data += more
                path = data.split(b" ", 2)[1].decode()
                self.routes.get(path, lambda c: c.sendall(b"HTTP/1.1 404 x\r\n\r\n"))(conn)
            except OSError:
                pass

    # behaviours

    def drip(self, conn: socket.socket) -> None:
        """Headers, then one body byte every 50 ms, never finishing."""
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 99999\r\n\r\n")
        while not self.stop.wait(0.05):
            conn.sendall(b"<")

    def silent(self, conn: socket.socket) -> None:
        """Reads the request and never answers."""
        self.stop.wait(30)

    def slow_headers(self, conn: socket.socket) -> None:
        """A header line every 200 ms, forever: never idle long enough for a read timeout."""
        conn.sendall(b"HTTP/1.1 200 OK\r\n")
        while not self.stop.wait(0.2):
            conn.sendall(b"X-Wait: more\r\n")

    def endless_image(self, conn: socket.socket) -> None:
        """A chunked image body that never ends, as fast as it is read."""
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        block = b"10000\r\n" + b"\xff" * 0x10000 + b"\r\n"
        while not self.stop.is_set():
            conn.sendall(block)

    def not_http(self, conn: socket.socket) -> None:
        conn.sendall(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")

    def __enter__(self) -> RawServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.sock.close()
        self._thread.join(timeout=5)


# --- the hostile web ------------------------------------------------------------------------


@dataclass
class Hostile:
    settings: Settings
    db: Database
    public: LoopbackWeb
    private: LoopbackWeb
    raw: RawServer
    fake: FakeSearxng
    dns_calls: collections.Counter[str]
    good: list[str] = field(default_factory=list)  # image URLs that must be matched
    expected: list[tuple[str, str, str]] = field(default_factory=list)  # url, stage, reason re
    other_good: list[str] = field(default_factory=list)

    def fetcher(self, config: FetchConfig) -> Fetcher:
        async def resolve(host: str, port: int) -> list[str]:
            self.dns_calls[host] += 1
            if host == "rebind.test":  # public once, then the private network
                return [PUBLIC] if self.dns_calls[host] == 1 else [PRIVATE]
            if host == "metadata.test":
                return ["169.254.169.254"]
            if host == "intranet.test":
                return [PRIVATE]
            if host.endswith(".test"):
                return [PUBLIC]
            return await system_resolver(host, port)

        return Fetcher(config, resolver=resolve, is_blocked=only_public)


@pytest.fixture(scope="module")
def pool() -> Iterator[ProcessPoolExecutor]:
    with hashing_pool(2) as p:
        yield p


def _robots(req: Request) -> Response:
    host = req.headers.get("host", "").split(":")[0]
    close = {"Connection": "close"}  # every request after robots.txt resolves the name again
    if host == "shy.test":
        return Response(200, b"User-agent: *\nDisallow: /\n", "text/plain", close)
    if host == "huge.test":  # 2 MB: read up to the cap, the rest ignored
        body = b"User-agent: *\nDisallow: /private\n" + b"# padding\n" * 200_000
        return Response(200, body, "text/plain", close)
    if host == "broken.test":
        return Response(500, b"oops", "text/plain", close)
    if host == "slowrobots.test":
        time.sleep(DEADLINE + 1)
        return Response(200, b"User-agent: *\nDisallow: /\n", "text/plain", close)
    return Response(404, b"", "text/plain", close)


@pytest.fixture
def hostile(tmp_path: Path) -> Iterator[Hostile]:
    refs = [photo_bytes(4100 + i) for i in range(3)]
    fake = FakeSearxng(results_per_page=100)
    with (
        LoopbackWeb() as search_web,
        LoopbackWeb(PUBLIC) as public,
        LoopbackWeb(PRIVATE) as private,
        RawServer() as raw,
    ):
        settings = loopback_settings(tmp_path, fake.install(search_web))
        settings.fetch = settings.fetch.model_copy(
            update={
                "allow_private_networks": False,
                "timeout": 1.0,
                "deadline": DEADLINE,
                "max_image_bytes": IMAGE_CAP,
                "max_images_per_page": 50,
                "max_redirects": 5,
            }
        )
        settings.cases = settings.cases.model_copy(update={"capture_evidence": False})
        settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        db = Database(settings.database_url, key_file=settings.key_path)
        with db.session() as s:
            subject = store.add_subject(s, NAME, interval=timedelta(days=1))
            assert enrol_images(s, subject, [("a", refs[0]), ("b", refs[1])]).enrolled == 2
            other = store.add_subject(s, OTHER, interval=timedelta(days=1))
            assert enrol_images(s, other, [("c", refs[2])]).enrolled == 1
        h = Hostile(settings, db, public, private, raw, fake, collections.Counter())
        build(h, refs)
        yield h
        db.dispose()


def build(h: Hostile, refs: list[bytes]) -> None:
    pub, port = h.public, h.public.port
    copy0, copy1 = copy_of(refs[0]), copy_of(refs[1], 0.5)
    pages: list[str] = []

    def at(host: str, path: str) -> str:
        return f"http://{host}:{port}{path}"

    def page(host: str, path: str, html: bytes | str, ctype: str = "text/html") -> str:
        pub.add(path, html, ctype)
        pages.append(at(host, path))
        return at(host, path)

    def expect(url: str, stage: str, reason: str) -> None:
        h.expected.append((url, stage, reason))

    pub.route("/robots.txt", _robots)
    h.raw.routes.update(
        {
            "/drip.html": h.raw.drip,
            "/silent.html": h.raw.silent,
            "/slow-headers.html": h.raw.slow_headers,
            "/endless.jpg": h.raw.endless_image,
            "/ssh.html": h.raw.not_http,
        }
    )
    h.private.add("/secret.jpg", copy0, "image/jpeg")  # must never be asked for
    h.private.add("/admin.html", "<img src='/secret.jpg'>")

    # Good copies, in plain and in hostile surroundings: all must be matched.
    pub.add("/good/0.jpg", copy0, "image/jpeg")
    pub.add("/good/1.jpg", copy1, "image/gif")  # a JPEG labelled GIF: the bytes decide
    pub.add("/good/2.jpg", copy1, "application/octet-stream")
    pub.add("/%E5%86%99%E7%9C%9F.jpg", copy0, "image/jpeg")  # 写真.jpg
    pub.add("/good/utf16.jpg", copy1, "image/jpeg")
    pub.add("/good/top.jpg", copy0, "image/jpeg")
    pub.add("/good/huge-robots.jpg", copy1, "image/jpeg")
    pub.add("/good/broken-robots.jpg", copy0, "image/jpeg")
    pub.add("/good/slow-robots.jpg", copy1, "image/jpeg")

    # 1. Addresses: redirects, links and names leading to private, loopback, link-local.
    pub.route("/to-metadata", lambda _r: redirect("http://169.254.169.254/latest/meta-data/"))
    pub.route(
        "/to-intranet.jpg", lambda _r: redirect(f"http://intranet.test:{h.private.port}/secret.jpg")
    )
    pub.route("/to-loopback.jpg", lambda _r: redirect(f"http://127.0.0.1:{h.private.port}/x.jpg"))
    page(
        "good.test",
        "/addresses.html",
        f"""<html><body>
        <img src="/good/0.jpg">
        <img src="http://metadata.test/latest/meta-data/iam.jpg">
        <img src="http://{PRIVATE}:{h.private.port}/secret.jpg">
        <img src="http://[::ffff:{PRIVATE}]:{h.private.port}/secret.jpg">
        <img src="http://2130706433:{h.private.port}/decimal.jpg">
        <img src="/to-intranet.jpg"><img src="/to-loopback.jpg">
        </body></html>""",
    )
    base = at("good.test", "")
    h.good.append(base + "/good/0.jpg")
    expect("http://metadata.test/latest/meta-data/iam.jpg", "image", "resolves to 169.254.169.254")
    expect(f"http://{PRIVATE}:{h.private.port}/secret.jpg", "image", f"{PRIVATE} is a private")
    expect(f"http://[::ffff:{PRIVATE}]:{h.private.port}/secret.jpg", "image", "private, local")
    expect(f"http://2130706433:{h.private.port}/decimal.jpg", "image", "resolves to 127.0.0.1")
    expect(base + "/to-intranet.jpg", "image", "intranet.test resolves to 127.0.0.3")
    expect(base + "/to-loopback.jpg", "image", "127.0.0.1 is a private")
    expect(at("good.test", "/to-metadata"), "page", "169.254.169.254 is a private")
    pages.append(at("good.test", "/to-metadata"))
    pages.append(f"http://{PRIVATE}:{h.private.port}/admin.html")
    expect(pages[-1], "page", f"{PRIVATE} is a private")
    # DNS rebinding: public for robots.txt, private when the page is asked for.
    page("rebind.test", "/rebind.html", "<img src='/good/0.jpg'>")
    expect(pages[-1], "page", "rebind.test resolves to 127.0.0.3")

    # 2. Redirect loops and long chains.
    pub.route("/loop-a", lambda _r: redirect("/loop-b"))
    pub.route("/loop-b", lambda _r: redirect("/loop-a"))
    for i in range(20):
        pub.route(f"/chain/{i}", lambda _r, i=i: redirect(f"/chain/{i + 1}"))
    pages += [at("good.test", "/loop-a"), at("good.test", "/chain/0")]
    expect(pages[-2], "page", "redirect loop")
    expect(pages[-1], "page", "too many redirects")

    # 3. Endless, slow and silent servers; not HTTP at all.
    for path, reason in (
        ("/drip.html", f"gave up after {DEADLINE:g} s"),
        ("/slow-headers.html", f"gave up after {DEADLINE:g} s"),
        ("/silent.html", "sent nothing for 1 s"),
        ("/ssh.html", "broke the HTTP protocol"),
    ):
        pages.append(h.raw.url(path))
        expect(pages[-1], "page", reason)

    # 4. Sizes and bombs.
    pub.add("/big.jpg", b"\xff\xd8" + b"\0" * (IMAGE_CAP * 2), "image/jpeg")
    pub.add(
        "/big-chunked.jpg",
        chunked(b"\xff\xd8" + b"\0" * (IMAGE_CAP * 2)),
        "image/jpeg",
        headers={"Transfer-Encoding": "chunked"},
    )
    pub.add(
        "/gzip-bomb.jpg",
        gzip.compress(b"\0" * 50_000_000, 9),
        "image/jpeg",
        headers={"Content-Encoding": "gzip"},
    )
    pub.add(
        "/br-bomb.jpg",
        brotli.compress(b"\0" * 200_000_000, quality=5),
        "image/jpeg",
        headers={"Content-Encoding": "br"},
    )
    pub.add(
        "/zstd.jpg", b"(\xb5/\xfd" + b"\0" * 50, "image/jpeg", headers={"Content-Encoding": "zstd"}
    )
    pub.add("/pixel-bomb.png", png_bomb(), "image/png")
    half = copy0[: len(copy0) // 2]
    pub.add("/truncated.jpg", half, "image/jpeg")
    pub.add("/corrupt.jpg", bytes(range(256)) * 40, "image/jpeg")
    svg = b"<svg xmlns='http://www.w3.org/2000/svg' width='9' height='9'/>"
    pub.add("/drawing.svg", svg, "image/svg+xml")
    pub.add("/svg-as.png", svg, "image/png")
    pub.add("/html-as-image.jpg", "<html><body>hello</body></html>", "text/html")
    pub.add("/html-as.jpg", "<html><body>hello</body></html>", "image/jpeg")
    image_cases = {
        "/big.jpg": ("image", r"larger than the 300 KB limit \(Content-Length"),
        "/big-chunked.jpg": ("image", r"larger than the 300 KB limit$"),
        "/gzip-bomb.jpg": ("image", r"once decompressed \(gzip"),
        "/br-bomb.jpg": ("image", r"once decompressed \(br"),
        "/zstd.jpg": ("image", "unsupported Content-Encoding 'zstd'"),
        "/pixel-bomb.png": ("hash", "decompression bomb"),
        "/truncated.jpg": ("hash", "not a decodable image"),
        "/corrupt.jpg": ("hash", "not a decodable image"),
        "/drawing.svg": ("image", "SVG drawing"),
        "/svg-as.png": ("hash", "not a decodable image"),
        "/html-as-image.jpg": ("image", r"not an image \(text/html\)"),
        "/html-as.jpg": ("hash", "not a decodable image"),
    }
    imgs = "".join(f"<img src='{p}'>" for p in image_cases)
    page(
        "good.test",
        "/images.html",
        f"<html><body><img src='/good/1.jpg'><img src='/good/2.jpg'>{imgs}"
        f"<img src='{h.raw.url('/endless.jpg')}'></body></html>",
    )
    h.good += [base + "/good/1.jpg", base + "/good/2.jpg"]
    for path, (stage, reason) in image_cases.items():
        expect(base + path, stage, reason)
    expect(h.raw.url("/endless.jpg"), "image", r"larger than the 300 KB limit$")

    # 5. Pages: 50 MB, malformed, other encodings, 20,000 images, data: and javascript: URLs.
    padded = b"<html><body><img src='/good/top.jpg'>" + b"<p>padding</p>" * 3_600_000
    page("good.test", "/50mb.html", padded)
    expect(pages[-1], "page", "larger than the 5 MB limit; only its first 5 MB were read")
    h.good.append(base + "/good/top.jpg")
    pub.add("/good/malformed.jpg", copy0, "image/jpeg")
    page(
        "good.test",
        "/malformed.html",
        "<html><body><div><img src='/good/malformed.jpg'<p><<>>&&</ta",
    )
    h.good.append(base + "/good/malformed.jpg")
    pub.add("/good/deep.jpg", copy1, "image/jpeg")
    page("good.test", "/deep.html", "<div>" * 5000 + "<img src='/good/deep.jpg'>")
    h.good.append(base + "/good/deep.jpg")
    sjis = "<html><head><title>写真</title></head><body><img src='/写真.jpg'></body></html>"
    page("good.test", "/sjis.html", sjis.encode("shift_jis"), "text/html; charset=shift_jis")
    h.good.append(base + "/%E5%86%99%E7%9C%9F.jpg")
    utf16 = "<html><body>ünïcode <img src='/good/utf16.jpg'></body></html>"
    page("good.test", "/utf16.html", b"\xff\xfe" + utf16.encode("utf-16-le"), "text/html")
    h.good.append(base + "/good/utf16.jpg")
    many = "".join(f"<img src='/many/{i}.jpg'>" for i in range(20_000))
    page("good.test", "/many.html", f"<html><body>{many}</body></html>")
    tiny_png = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
    page(
        "good.test",
        "/schemes.html",
        f"<img src='data:image/png;base64,{tiny_png}'><a href='javascript:alert(1)'>"
        "<img src='javascript:void(0)'></a><img src='/good/schemes.jpg'>"
        "<a href='file:///etc/passwd.jpg'>x</a>",
    )
    pub.add("/good/schemes.jpg", copy1, "image/jpeg")
    h.good.append(base + "/good/schemes.jpg")

    # 6. robots.txt that disallows, is huge, fails, or hangs.
    page("shy.test", "/shy.html", "<img src='/good/0.jpg'>")
    expect(pages[-1], "page", "robots.txt of http://shy.test:.* disallows it")
    page("huge.test", "/huge-robots.html", "<img src='/good/huge-robots.jpg'>")
    h.good.append(at("huge.test", "/good/huge-robots.jpg"))
    # A robots.txt that fails (5xx) or cannot be read (hangs) disallows the whole site for the
    # scan (RFC 9309 2.3.1.4): its pages and images are refused, with the reason recorded.
    unreadable = "RFC 9309: treated as disallowing everything until it can be read"
    page("broken.test", "/broken-robots.html", "<img src='/good/broken-robots.jpg'>")
    expect(
        pages[-1],
        "page",
        rf"^robots.txt of http://broken.test:\d+ answered HTTP 500; {unreadable}$",
    )
    page(
        "good.test",
        "/elsewhere.html",
        f"<img src='/good/0.jpg'><img src='{at('broken.test', '/good/broken-robots.jpg')}'>",
    )
    expect(at("broken.test", "/good/broken-robots.jpg"), "image", "answered HTTP 500; RFC 9309")
    page("slowrobots.test", "/slow-robots.html", "<img src='/good/slow-robots.jpg'>")
    expect(pages[-1], "page", r"^robots.txt of http://slowrobots.test:\d+ could not be read \(")

    # Image search results pointing straight at forbidden addresses.
    h.fake.add_result(
        NAME, "images", {"url": base + "/gallery", "img_src": "http://169.254.169.254/x.jpg"}
    )
    expect("http://169.254.169.254/x.jpg", "image", "169.254.169.254 is a private")
    h.fake.add_results(NAME, "general", [{"url": u, "title": "t"} for u in pages])

    # The bystander: a plain page, scanned after the hostile one.
    other = copy_of(refs[2])
    pub.add("/other/0.jpg", other, "image/jpeg")
    pub.add("/other.html", "<img src='/other/0.jpg'>")
    h.fake.add_result(OTHER, "general", {"url": at("good.test", "/other.html")})
    h.other_good.append(at("good.test", "/other/0.jpg"))


def redirect(to: str) -> Response:
    return Response(302, b"", "text/plain", {"Location": to})


@dataclass(frozen=True)
class Err:
    url: str
    stage: str
    reason: str


def errors_of(db: Database, scan_id: int) -> list[Err]:
    """The FetchErrorRecord rows of a scan."""
    with db.session() as s:
        return [
            Err(e.url, e.stage, e.reason)
            for e in s.scalars(select(FetchErrorRecord).where(FetchErrorRecord.scan_id == scan_id))
        ]


def matched_urls(db: Database, name: str) -> set[str]:
    with db.session() as s:
        return {r.image_url for r in store.list_matches(s, name)}


def test_a_scan_of_a_hostile_web_records_every_attack_and_still_finds_the_copies(
    hostile: Hostile, pool: ProcessPoolExecutor
) -> None:
    h = hostile
    summary = scan_subject(
        h.settings, h.db, NAME, pool=pool, deliver=False, fetcher_factory=h.fetcher
    )
    assert summary.status == "completed"

    errors = errors_of(h.db, summary.scan_id)
    by_url: dict[str, list[Err]] = collections.defaultdict(list)
    for e in errors:
        by_url[e.url].append(e)
    for url, stage, reason in h.expected:
        found = by_url.get(url)
        assert found, f"no error recorded for {url} (want {stage}: {reason})"
        assert any(e.stage == stage and re.search(reason, e.reason) for e in found), (
            f"{url}: want {stage}: {reason!r}, got {[(e.stage, e.reason) for e in found]}"
        )
    for e in errors:
        assert e.reason and "Traceback" not in e.reason and len(e.reason) < 600

    # The good copies, wherever they were, are matched.
    missed = set(h.good) - matched_urls(h.db, NAME)
    assert not missed, f"good copies not matched: {sorted(missed)}"

    # Nothing reached the private network, and the rebinding name was looked up again.
    assert h.private.requests == []
    assert h.dns_calls["rebind.test"] >= 2

    # Sites whose robots.txt failed or hung were asked for nothing but robots.txt.
    for r in h.public.requests:
        if r.headers.get("host", "").split(":")[0] in ("broken.test", "slowrobots.test"):
            assert r.path == "/robots.txt", r.path

    # The 20,000-image page cost at most max_images_per_page requests.
    many = [r for r in h.public.requests if r.path.startswith("/many/")]
    assert 0 < len(many) <= 50
    many_errors = [e for e in errors if "/many/" in e.url]
    assert len(many_errors) == len(many) and all(e.reason == "HTTP 404" for e in many_errors)

    # data:, javascript: and file: URLs are not fetched, and are not errors.
    assert not any(e.url.startswith(("data:", "javascript:", "file:")) for e in errors)
    assert all(r.path != "/etc/passwd.jpg" for r in h.public.requests)
    assert summary.errors == len(errors)
    assert summary.bytes_downloaded > 5_000_000  # the 50 MB page was read up to its cap...
    assert summary.bytes_downloaded < 20_000_000  # ...and nothing was read far past a cap

    # Another person's scan on the same web is untouched by all of it.
    other = scan_subject(
        h.settings, h.db, OTHER, pool=pool, deliver=False, fetcher_factory=h.fetcher
    )
    assert other.status == "completed" and other.errors == 0
    assert matched_urls(h.db, OTHER) == set(h.other_good)


# --- search backends ------------------------------------------------------------------------


def _slow_once(fake: FakeSearxng, seconds: float) -> Callable[[Request], Response]:
    slowed = threading.Event()

    def handle(req: Request) -> Response:
        if not slowed.is_set():
            slowed.set()
            time.sleep(seconds)
        return fake.handle(req)

    return handle


@pytest.mark.parametrize(
    ("failure", "reason"),
    [
        ((200, None, "{not json"), "answer was not SearXNG JSON"),
        ((200, None, '{"results": "none"}'), "expected an object with a 'results' list"),
        ((403, None, None), r"refused JSON output \(HTTP 403\)"),
        ((429, {"Retry-After": "3600"}, None), r"HTTP 429.*longer than the 10 s we wait"),
        ((429, None, None), r"limiting our requests \(HTTP 429\)"),
        ((500, None, None), r"failed \(HTTP 500\)"),
        ((503, None, None), r"failed \(HTTP 503\)"),
        ("slow", "did not answer within 1 s"),
        ((429, {"Retry-After": "0.3"}, None), None),  # short: waited out, asked again
    ],
)
def test_search_backend_failures_are_recorded_and_the_other_query_still_finds_the_copy(
    tmp_path: Path, pool: ProcessPoolExecutor, failure: object, reason: str | None
) -> None:
    ref = photo_bytes(4200)
    fake = FakeSearxng()
    with LoopbackWeb() as web:
        url = fake.install(web)
        settings = loopback_settings(tmp_path, url)
        settings.search.backends[0].timeout = 1.0
        settings.cases = settings.cases.model_copy(update={"capture_evidence": False})
        web.add("/img.jpg", copy_of(ref), "image/jpeg")
        web.add("/page.html", "<img src='/img.jpg'>")
        fake.add_result(NAME, "general", {"url": web.url("/page.html")})
        fake.add_result(
            NAME, "images", {"url": web.url("/page.html"), "img_src": web.url("/img.jpg")}
        )
        if failure == "slow":
            web.route("/search", _slow_once(fake, 2.5))
        else:
            status, headers, body = failure  # type: ignore[misc]
            fake.fail_next(status, headers, body)
        settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        db = Database(settings.database_url, key_file=settings.key_path)
        try:
            with db.session() as s:
                subject = store.add_subject(s, NAME, interval=timedelta(days=1))
                enrol_images(s, subject, [("a", ref)])
            summary = scan_subject(settings, db, NAME, pool=pool, deliver=False)
            errors = errors_of(db, summary.scan_id)
            # one of the two searches failed: partial (a short Retry-After waited out: complete)
            assert summary.status == ("completed" if reason is None else "partial")
            assert matched_urls(db, NAME) == {web.url("/img.jpg")}
            if reason is None:
                assert errors == [] and len(fake.queries) == 3  # two queries, one asked twice
            else:
                assert [(e.stage, e.url) for e in errors] == [
                    ("search", f"search:searxng@127.0.0.1:{web.port}")
                ]
                assert re.search(reason, errors[0].reason), errors[0].reason
        finally:
            db.dispose()
