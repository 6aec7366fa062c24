"""The screenshot browser on adversarial pages: no JavaScript by default, no WebRTC/UDP, a
sandbox (not root), the tool's User-Agent, no downloads or service workers, no navigation
away from the page asked for, and many captures at once in separate contexts.

Pages are served from loopback, so these Screenshotters use ``allow_private_networks``; every
connection still goes through the guard proxy (Chromium resolves no name itself).
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from monitor.config import FetchConfig
from monitor.demo.photos import photo_bytes
from monitor.evidence import Screenshotter, chromium_path, screenshot
from monitor.testing.web import LoopbackWeb, Request, Response

SHOOTER_TIMEOUT = 60.0
needs_chromium = pytest.mark.skipif(
    chromium_path() is None,
    reason="no Chromium at /usr/bin/chromium (apt-get install chromium), $MONITOR_CHROMIUM or "
    "Playwright's own (playwright install chromium)",
)
pytestmark = needs_chromium

GREEN = (0, 200, 0)


def shooter(**kw: object) -> Screenshotter:
    return Screenshotter(allow_private_networks=True, timeout=SHOOTER_TIMEOUT, **kw)  # type: ignore[arg-type]


@pytest.fixture
def web() -> Iterator[LoopbackWeb]:
    with LoopbackWeb() as site:
        yield site


def paths(web: LoopbackWeb) -> list[str]:
    return [r.path for r in web.requests]


def page_pixel(png: Path, banner_height: int) -> tuple[int, int, int]:
    """The colour of the page (below the banner) near its top left corner."""
    with Image.open(png) as im:
        rgb = np.asarray(im.convert("RGB"))
    return tuple(int(v) for v in rgb[banner_height + 5, 5])  # type: ignore[return-value]


# --- WebRTC: no UDP leaves the browser -------------------------------------------------------

RTC_PAGE = """<!doctype html><html><head><title>rtc</title></head><body><p>rtc</p><script>
(async () => {
  const report = (what) => { new Image().src = '/js-ran?r=' + encodeURIComponent(what); };
  const servers = {iceServers: [{urls: 'stun:127.0.0.1:%(port)d'},
    {urls: ['turn:127.0.0.1:%(port)d?transport=udp', 'turn:127.0.0.1:%(port)d?transport=tcp'],
     username: 'u', credential: 'p'}]};
  const tryWith = async (PC, where) => {
    if (!PC) { report(where + ':no-RTCPeerConnection'); return; }
    try {
      const pc = new PC(servers);
      pc.createDataChannel('x');
      await pc.setLocalDescription(await pc.createOffer());
      report(where + ':offer-set');
    } catch (e) { report(where + ':' + e); }
  };
  await tryWith(window.RTCPeerConnection || window.webkitRTCPeerConnection, 'page');
  const frame = document.createElement('iframe');
  document.body.appendChild(frame);
  await tryWith(frame.contentWindow.RTCPeerConnection, 'blank-iframe');
})();
</script></body></html>"""


class UdpListener:
    """A UDP socket on 127.0.0.1 that counts what arrives."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        self.packets: list[bytes] = []

    def drain(self) -> list[bytes]:
        while True:
            try:
                self.packets.append(self.sock.recv(65536))
            except BlockingIOError:
                return self.packets

    def close(self) -> None:
        self.sock.close()


@pytest.mark.parametrize(
    ("javascript", "constructors_removed"),
    [(False, True), (True, True), (True, False)],
    ids=["javascript-off", "javascript-on", "javascript-on-flags-only"],
)
async def test_webrtc_sends_no_udp_packet(
    web, tmp_path, monkeypatch, javascript, constructors_removed
):
    """A page's script asks for STUN and TURN servers on a loopback UDP port: nothing arrives,
    with scripts off (the default) and on; and on, even if WebRTC's constructors were left in
    place (Chromium's flags alone keep it off UDP)."""
    if not constructors_removed:
        monkeypatch.setattr(screenshot, "_NO_WEBRTC_SCRIPT", "/* constructors kept */")
    udp = UdpListener()
    try:
        url = web.add("/rtc.html", RTC_PAGE % {"port": udp.port})
        web.add("/js-ran", b"", "image/gif")
        async with shooter(**({"javascript": True} if javascript else {})) as s:  # default: off
            info = await s.capture(url, tmp_path / "rtc.png", may_show_minor=False)
            await asyncio.sleep(2.0)  # ICE gathering sends its first packets within ms
        assert info.final_url == url
        assert udp.drain() == []
    finally:
        udp.close()
    reports = [v for r in web.requests if r.path == "/js-ran" for v in r.query.get("r", [])]
    if javascript and constructors_removed:  # the script ran; WebRTC was not there for it
        assert sorted(reports) == [
            "blank-iframe:no-RTCPeerConnection",
            "page:no-RTCPeerConnection",
        ]
    elif javascript:  # the offer was made, ICE gathering started: still no packet
        assert "page:offer-set" in reports, reports
    else:
        assert reports == []


# --- JavaScript off by default ----------------------------------------------------------------

JS_PAGE = """<!doctype html><html><head><title>original</title>
<style>body { margin: 0; background: white; }</style></head><body>
<h1 id=h>original text</h1>
<script>
document.title = 'rewritten';
document.getElementById('h').textContent = 'REWRITTEN';
document.body.style.background = 'rgb(0, 200, 0)';
new Image().src = '/js-ran';
</script></body></html>"""


async def test_javascript_is_off_by_default_and_can_be_turned_on(web, tmp_path):
    url = web.add("/js.html", JS_PAGE)
    web.add("/js-ran", b"", "image/gif")
    async with shooter() as s:
        off = await s.capture(url, tmp_path / "off.png", may_show_minor=False)
    assert "/js-ran" not in paths(web)
    assert page_pixel(off.path, off.banner_height) == (255, 255, 255)  # not rewritten

    async with shooter(javascript=True) as s:
        on = await s.capture(url, tmp_path / "on.png", may_show_minor=False)
    assert "/js-ran" in paths(web)
    assert page_pixel(on.path, on.banner_height) == GREEN


# --- the sandbox: not root, no --no-sandbox ----------------------------------------------------


def _descendants(root: int) -> dict[int, tuple[list[str], str]]:
    """pid -> (command line, /proc status) of every process below ``root``."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                parents[int(entry.name)] = int(fields[1])
            except (OSError, IndexError, ValueError):
                continue
    found: dict[int, tuple[list[str], str]] = {}
    for pid in parents:
        p, depth = pid, 0
        while p in parents and p != root and depth < 12:
            p, depth = parents[p], depth + 1
        if p == root and pid != root:
            try:
                cmdline = (Path(f"/proc/{pid}/cmdline")).read_bytes().decode().split("\0")
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            # a renderer's command line may be one string (Chromium rewrites its title)
            found[pid] = (" ".join(cmdline).split(), status)
    return found


def _field(status: str, name: str) -> list[str]:
    for line in status.splitlines():
        if line.startswith(name + ":"):
            return line.split(":", 1)[1].split()
    raise AssertionError(f"no {name} in /proc status")


def _browser_processes() -> dict[int, tuple[list[str], str]]:
    return {
        pid: (cmd, status)
        for pid, (cmd, status) in _descendants(os.getpid()).items()
        if cmd and "chrom" in Path(cmd[0]).name
    }


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
async def test_the_browser_runs_sandboxed_and_never_as_root(web, tmp_path):
    """While a page loads (its image is held back), every browser process runs as a user
    other than root (as root) or as us, without --no-sandbox, and the renderer that has the
    page is confined by a seccomp-bpf filter."""
    release = threading.Event()

    def held(_request: Request) -> Response:
        release.wait(30)
        return Response(200, photo_bytes(1, (100, 80)), "image/jpeg")

    web.route("/held.jpg", held)
    url = web.add("/p.html", "<h1>hello</h1><img src='/held.jpg'>")
    async with shooter() as s:
        task = asyncio.create_task(s.capture(url, tmp_path / "p.png", may_show_minor=False))
        try:
            renderers: list[str] = []
            for _ in range(200):
                procs = _browser_processes()
                renderers = [
                    st
                    for cmd, st in procs.values()
                    if "--type=renderer" in cmd and "--top-chrome-webui" not in cmd
                ]
                if renderers and any(r.path == "/held.jpg" for r in web.requests):
                    break
                await asyncio.sleep(0.05)
            assert procs, "no browser process found below this one"
            assert renderers, "no renderer process"
            for cmd, status in procs.values():
                assert "--no-sandbox" not in cmd, cmd[:3]
                uids = _field(status, "Uid")
                if os.geteuid() == 0:
                    assert "0" not in uids, (cmd[:2], uids)
                else:
                    assert uids == [str(os.geteuid())] * 4
            for status in renderers:  # seccomp-bpf filter on: the sandbox is really there
                assert _field(status, "Seccomp") == ["2"]
                assert _field(status, "NoNewPrivs") == ["1"]
        finally:
            release.set()
            await task


# --- the tool's User-Agent ---------------------------------------------------------------------


async def test_the_tools_user_agent_is_sent(web, tmp_path):
    url = web.add("/ua.html", "<h1>ua</h1><img src='/x.jpg'>")
    web.add("/x.jpg", photo_bytes(3, (200, 150)), "image/jpeg")
    async with shooter() as s:
        await s.capture(url, tmp_path / "default.png", may_show_minor=False)
    async with shooter(user_agent="ExposureMonitor-test/1.0 (+https://example.invalid)") as s:
        await s.capture(url, tmp_path / "custom.png", may_show_minor=False)
    agents = [(r.path, r.headers.get("user-agent")) for r in web.requests]
    default_ua = FetchConfig().user_agent
    assert agents == [
        ("/ua.html", default_ua),
        ("/x.jpg", default_ua),
        ("/ua.html", "ExposureMonitor-test/1.0 (+https://example.invalid)"),
        ("/x.jpg", "ExposureMonitor-test/1.0 (+https://example.invalid)"),
    ]
    for r in web.requests:  # client hints, if any, tell no lie about the platform
        assert "windows" not in r.headers.get("sec-ch-ua-platform", "").lower()


# --- the page stays the page: no navigation, download or service worker ---------------------


@pytest.mark.parametrize("javascript", [False, True], ids=["javascript-off", "javascript-on"])
async def test_the_page_cannot_navigate_download_or_register_a_service_worker(
    web, tmp_path, javascript
):
    """Meta refreshes (to another page, a download, file: and data:), a script's navigation
    and a service worker go nowhere: the shot is of the page asked for, and the server never
    sees the other requests."""
    web.add("/elsewhere.html", "<body style='background: rgb(0, 200, 0)'>elsewhere</body>")
    web.add(
        "/file.bin",
        b"DOWNLOADED-BYTES" * 100,
        "application/octet-stream",
        headers={"Content-Disposition": "attachment; filename=file.bin"},
    )
    web.add("/sw.js", "self.addEventListener('fetch', () => {});", "text/javascript")
    refreshes = {
        "page": "/elsewhere.html",
        "download": "/file.bin",
        "file": "file:///etc/hostname",
        "data": "data:text/html,<body style='background:rgb(0,200,0)'>data</body>",
    }
    urls = {}
    for name, target in refreshes.items():
        urls[name] = web.add(
            f"/{name}.html",
            "<html><head><meta http-equiv='refresh' content=\"0;url=" + target + '">'
            "<style>body { margin: 0; background: white; }</style></head><body>stay</body>"
            "</html>",
        )
    urls["script"] = web.add(
        "/script.html",
        "<body style='margin:0; background: white'>stay<script>"
        "navigator.serviceWorker && navigator.serviceWorker.register('/sw.js');"
        "setTimeout(() => { location.href = '/file.bin'; }, 10);"
        "setTimeout(() => { location.href = '/elsewhere.html'; }, 50);"
        "</script></body>",
    )
    async with shooter(**({"javascript": True} if javascript else {})) as s:  # default: off
        for name, url in urls.items():
            info = await s.capture(url, tmp_path / f"{name}.png", may_show_minor=False)
            assert info.final_url == url, name
            assert page_pixel(info.path, info.banner_height) == (255, 255, 255), name
        await asyncio.sleep(0.5)
    seen = paths(web)
    assert "/elsewhere.html" not in seen
    assert "/file.bin" not in seen
    assert "/sw.js" not in seen
    for found in Path(tmp_path).rglob("*"):
        assert found.suffix == ".png", found


async def test_a_page_opens_no_other_page(web, tmp_path):
    """With scripts on, window.open, a scripted click on a target=_blank link and a form posted
    to a new window open nothing: Chromium's popup blocker is on (Playwright turns it off)."""
    web.add("/popup.html", "<h1>popup</h1>")
    web.route("/post-target", lambda _r: Response(200, b"posted"))
    url = web.add(
        "/p.html",
        "<h1>p</h1><form id=f method=post action='/post-target' target=_blank>"
        "<input name=a value=1></form><a id=l href='/popup.html?via=link' target=_blank>x</a>"
        "<script>window.open('/popup.html?via=open');"
        "document.getElementById('f').submit(); document.getElementById('l').click();</script>",
    )
    async with shooter(javascript=True) as s:
        info = await s.capture(url, tmp_path / "p.png", may_show_minor=False)
        await asyncio.sleep(1.0)
    assert info.final_url == url
    assert paths(web) == ["/p.html"]


async def test_scripts_get_no_webgl_or_webgpu(web, tmp_path):
    web.add("/r", b"", "image/gif")
    url = web.add(
        "/gl.html",
        "<canvas id=c></canvas><script>"
        "const gl = document.getElementById('c').getContext('webgl');"
        "new Image().src = '/r?webgl=' + (gl ? 'yes' : 'no');"
        "(async () => { let a = null;"
        "  try { a = navigator.gpu && await navigator.gpu.requestAdapter(); } catch (e) {}"
        "  new Image().src = '/r?webgpu=' + (a ? 'yes' : 'no'); })();"
        "</script>",
    )
    async with shooter(javascript=True) as s:
        await s.capture(url, tmp_path / "gl.png", may_show_minor=False)
        await asyncio.sleep(0.5)
    answers = sorted(
        f"{k}={v[0]}" for r in web.requests if r.path == "/r" for k, v in r.query.items()
    )
    assert answers == ["webgl=no", "webgpu=no"]


# --- many captures at once, one browser, separate contexts ------------------------------------


async def test_one_browser_serves_concurrent_captures_one_page_at_a_time_per_site(web, tmp_path):
    """Six captures at once on two sites with max_concurrent=2: the two sites load at the same
    time, each site's pages one after another (in the tab kept for the site), every shot is
    written, and no capture sees another's cookie."""
    lock = threading.Lock()
    state = {"now": 0, "peak": 0, "hosts": set(), "same_host_at_once": False}

    def slow_page(request: Request) -> Response:
        host = request.headers.get("host", "")
        with lock:
            state["now"] += 1
            state["peak"] = max(state["peak"], state["now"])
            state["same_host_at_once"] |= host in state["hosts"]
            state["hosts"].add(host)
        time.sleep(0.4)
        with lock:
            state["now"] -= 1
            state["hosts"].discard(host)
        n = request.path.rsplit("-", 1)[1]
        return Response(
            200,
            f"<h1>page {n}</h1><img src='/img-{n}.jpg'>".encode(),
            headers={"Set-Cookie": f"visited={n}; Path=/"},
        )

    urls = []
    for n in range(6):
        url = web.route(f"/page-{n}", slow_page)
        urls.append(url if n % 2 else url.replace("127.0.0.1", "localhost"))  # two sites
        web.add(f"/img-{n}.jpg", photo_bytes(n, (160, 120)), "image/jpeg")
    async with shooter(max_concurrent=2) as s:
        shots = await asyncio.gather(
            *(s.capture(u, tmp_path / f"{i}.png", may_show_minor=False) for i, u in enumerate(urls))
        )
    assert [shot.url for shot in shots] == urls
    assert len({shot.sha256 for shot in shots}) == 6
    assert all(shot.drawn_images == 1 for shot in shots)  # each page's image, in a kept tab too
    assert state["peak"] == 2 and not state["same_host_at_once"]
    for r in web.requests:  # a capture sees its own page's cookie, never another's
        if r.path.startswith("/page-"):
            assert "cookie" not in r.headers, r.headers
        else:
            assert r.headers.get("cookie") == f"visited={r.path[5:-4]}", (r.path, r.headers)


async def test_a_sites_pages_share_one_tab_and_a_tab_is_made_ahead_only_when_needed(web, tmp_path):
    """A fresh page costs the browser a renderer process (most of a capture's CPU): a site's
    pages are shot one after another in the tab kept for it (its cookies cleared); a tab is
    made ahead at the start and for a capture that waits for a slot and has no tab, none after
    the last capture; close_tabs() ends the kept tabs (a scan's captures are over)."""
    url = web.add("/plain", "<h1>plain</h1><p>text</p>", "text/html")
    other = url.replace("127.0.0.1", "localhost")  # another site
    async with shooter(max_concurrent=1) as s:
        made = 0
        new_tab = s._new_tab

        async def counted() -> object:
            nonlocal made
            made += 1
            return await new_tab()

        s._new_tab = counted  # type: ignore[method-assign]
        if s._spare is not None:  # the one made at the start counts as the first capture's
            await asyncio.wait({s._spare})
            made = 1
        await s.capture(url, tmp_path / "a.png", may_show_minor=False)
        assert s._spare is None  # nobody waits for a slot: no tab made ahead
        await s.capture(url, tmp_path / "b.png", may_show_minor=False)
        await asyncio.gather(
            *(s.capture(url, tmp_path / f"c{i}.png", may_show_minor=False) for i in range(3))
        )
        assert made == 1  # five pages of one site, one tab
        await asyncio.gather(
            s.capture(url, tmp_path / "d.png", may_show_minor=False),
            s.capture(other, tmp_path / "e.png", may_show_minor=False),
        )
        assert made == 2 and s._spare is None  # the other site's, made while it waited
        await s.close_tabs()
        await s.capture(url, tmp_path / "f.png", may_show_minor=False)
        assert made == 3 and s._spare is None


async def test_a_shot_is_written_after_the_browser_has_closed(web, tmp_path):
    """The last page's PNG is written while the browser exits: what shoot() took needs no
    browser, and nothing is on disk before write()."""
    url = web.add("/plain", "<h1>plain</h1><p>text</p>", "text/html")
    async with shooter() as s:
        taken = await s.shoot(url, tmp_path / "late.png", may_show_minor=False)
    assert not s.running
    assert list(tmp_path.iterdir()) == []
    info = await asyncio.to_thread(taken.write)
    assert info.path == tmp_path / "late.png" and info.final_url == url
    with Image.open(info.path) as im:
        assert im.format == "PNG" and im.text["Source"] == url
    assert page_pixel(info.path, info.banner_height) == (255, 255, 255)
    with pytest.raises(RuntimeError, match="written already"):
        taken.write()


async def test_with_scripts_on_no_tab_is_used_twice(web, tmp_path):
    """A page's scripts could leave storage behind (cleared cookies are not all of it): with
    JavaScript on, every capture gets a fresh context, its site's pages too."""
    url = web.add("/plain", "<h1>plain</h1>", "text/html")
    async with shooter(max_concurrent=1, javascript=True) as s:
        for name in ("a", "b"):
            await s.capture(url, tmp_path / f"{name}.png", may_show_minor=False)
            assert s._kept == {}
