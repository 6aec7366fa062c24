"""A screenshot of a page, every image on it blurred, stamped with its address and UTC time.

Police advice: capture what is online *with the web address visible* and note the date and
time. A screenshot shows a person, a site or a court what the page looked like; the WARC
(:mod:`monitor.evidence.warc`) proves what was served.

How it is taken:

* Chromium (:func:`~monitor.evidence.browser.chromium_path`: ``$MONITOR_CHROMIUM``, Debian's
  headless shell when JavaScript is off, Debian's ``/usr/bin/chromium``, or Playwright's own)
  driven by Playwright, headless, with
  :data:`CHROMIUM_ARGS`, **sandboxed**: never ``--no-sandbox``; as root it runs as an
  unprivileged user (see :mod:`monitor.evidence.browser`). Playwright gives it a new, empty,
  temporary user-data-dir (deleted when the browser closes), and captures run in off-the-record
  browser contexts: no logins, cookies cleared before each capture, and the HTTP cache kept in
  memory, so the browser writes no image to disk. One browser serves many captures, at most
  ``max_concurrent`` at once and one at a time per site (scheme, host and port): a site's next
  page is shot in the tab its last one used (a new tab costs Chromium a renderer process, most
  of a capture's CPU; without JavaScript a page leaves nothing but cookies behind), any other
  page in a fresh context; ``close_tabs()`` ends the kept ones.
* **No JavaScript** by default (``java_script_enabled=False``): the page is shown as served.
  ``javascript=True`` (``[cases] screenshot_javascript``) runs its scripts; WebRTC's
  constructors (``RTCPeerConnection``...) are then deleted before any of the page's scripts
  run, in every frame, and Chromium keeps WebRTC off UDP anyway
  (``--webrtc-ip-handling-policy=disable_non_proxied_udp``; an HTTP proxy carries no UDP).
  No service workers, no downloads. The User-Agent is the tool's (``[fetch] user_agent``).
* The browser reaches the network only through a :class:`~monitor.evidence.proxy.GuardProxy`
  on loopback (``--proxy-server``, loopback not bypassed, Chromium's own name resolution
  switched off with ``--host-resolver-rules``), with ``allow_private_networks`` too (then the
  proxy refuses no address). The proxy resolves each host once, refuses private, loopback,
  link-local and reserved addresses and connects to the very address it checked, with the
  fetcher's :class:`~monitor.fetch.GuardedNetworkBackend`: the check applies to the address
  connected to, for the page, every image, script and frame, every redirect hop and
  WebSockets, so a name that answers a public address to the check and a private one
  afterwards (DNS rebinding) reaches nothing. HTTPS is tunnelled (Chromium checks the
  certificate against the name). A request filter in the browser lets through only GET and
  HEAD of ``http``/``https`` URLs, and the top frame loads only the page asked for and its
  redirects: a later navigation (``<meta http-equiv=refresh>``, a script, a download link) is
  dropped, so the shot shows the page at the address in its banner.

  Why a proxy: fulfilling each request from Python (``route.fulfill``) was tried and rejected,
  because Chromium follows a fulfilled redirect without asking the route again (the next hop
  would go out unchecked, or, with name resolution off, fail), and ``--host-resolver-rules``
  alone is fixed at launch while the hosts a page uses are not known in advance.
* **The browser never gets a photo's pixels** (``draw_images``, on by default): the request
  filter answers each of the page's image requests itself. The image is fetched by us,
  through the same guard proxy and with the tool's User-Agent (with the browser's Referer
  and Accept and the capture's own cookies), kept in memory only; its size is read from its
  header (Pillow, web raster formats only, nothing decoded) and the browser gets a grey SVG
  of that intrinsic size (:data:`PLACEHOLDER_FILL`), so the layout is the page's. A tiny
  blurred thumbnail of the image (:func:`monitor.thumbnail.blurred_thumbnail`, JPEG decoded
  at 1/8 scale) is made in a one-worker process pool with a deadline (hostile bytes are not
  decoded in this process), and drawn stretched over each ``<img>`` box showing it, about one
  thumbnail pixel per blur radius (:func:`_draw_copy`). An element that shows only grey boxes
  is not blurred by the browser (nothing to blur; a camera-size blur cost seconds), so a
  page with only such images is shot in one pass. Images in CSS (backgrounds, ``content``)
  stay grey boxes; bytes Pillow does not read (SVG, AVIF) go to the browser as served and
  are blurred by it as below. The banner says so (:data:`IMAGES_LINE`).
* Once the page's ``load`` event has fired (and, with JavaScript on, its network has been
  quiet for :data:`QUIET_SECONDS`, at most :data:`MAX_SETTLE_SECONDS`), every image is
  blurred with a CSS ``filter: blur()`` stronger for larger images, transitions and animations
  off: ``img``, ``picture``, ``video``, ``canvas``, ``svg image``, ``iframe``/``embed``/
  ``object``, ``input type=image`` and every element (or ``::before``/``::after``) with a
  ``url(...)`` background image, including inside open shadow roots. (With JavaScript on, a
  stylesheet inserted at document start also blurs images from the first paint on.)
* The shot is taken in two passes of the same layout (see :meth:`Screenshotter._shoot`): the
  page with its images blurred at a quarter of the scale (Chromium's blur of a camera-size
  photo at full scale cost 6-10 s a page), then the page at full scale with every blurred
  element, and every element of a kind that is blurred, not painted at all (``visibility:
  hidden`` and ``opacity: 0``: no image in it, blurred or not); each blurred element's box is
  then taken from the first pass into the second. The text stays sharp, the images are blurred
  as strongly as before, and no pass ever shows an image unblurred. A page with no image, or
  with more than :data:`MAX_BLURRED_BOXES` of them, is shot once at full scale, blurred.
* The picture is the page from its top, as tall as the page up to ``max_height`` pixels; a page
  taller than :data:`FULL_PAGE_HEIGHT` that shows an image the capture is about (``focus``: a
  case's matched image) is shot in parts instead: its top (one viewport) and each such image
  with half a viewport above and below, joined by grey strips drawn by us that say how many
  pixels are left out; the banner and the PNG text chunks name the parts (see :func:`_spans`).
* The banner is drawn with Pillow onto the PNG **after** the capture, in a strip added *above*
  the page: the page's own CSS or scripts can neither hide it nor be hidden by it. It shows the
  full URL asked for, the URL shown after redirects if different, the UTC capture time and that
  images are blurred. The same facts are stored as PNG text chunks.

Never call this when the person in the image may be a minor: ``may_show_minor`` is a
required keyword and ``True`` raises :class:`MinorSafetyRefusal` before anything is loaded.
Police advice is to keep no copy at all (even blurred) and report the page to the police or a
hotline instead.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import io
import ipaddress
import logging
import math
import os
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self
from urllib.parse import urlsplit

from PIL import Image, ImageDraw, ImageFont

import monitor
from monitor.config import FetchConfig
from monitor.evidence.browser import (
    DEFAULT_CHROMIUM,
    Launcher,
    chromium_path,
    is_headless_shell,
)
from monitor.evidence.errors import MinorSafetyRefusal, ScreenshotError
from monitor.evidence.png import encode_png
from monitor.evidence.proxy import GuardProxy
from monitor.evidence.store import write_new_file
from monitor.fetch import AddressPredicate, Resolver, is_blocked_address, system_resolver
from monitor.thumbnail import FORMATS, blurred_thumbnail

__all__ = [
    "BANNER_BACKGROUND",
    "BANNER_FOREGROUND",
    "CHROMIUM_ARGS",
    "ScreenshotInfo",
    "Screenshotter",
    "TakenShot",
    "capture_screenshot",
    "chromium_path",
]

log = logging.getLogger(__name__)

CHROMIUM_ARGS = (  # never --no-sandbox (see monitor.evidence.browser)
    "--headless",
    "--disable-gpu",
    "--disable-3d-apis",  # no WebGL for pages' scripts: less of the browser within their reach
    "--disable-background-networking",
    "--disable-quic",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
)
# Playwright's default arguments the screenshot browser does without: Chromium's popup blocker
# stays on (a page opens no other page by itself), and no software WebGL/WebGPU fallback
# (SwiftShader; Chromium calls enabling it for web content unsafe)
PLAYWRIGHT_ARGS_REFUSED = ["--disable-popup-blocking", "--enable-unsafe-swiftshader"]
DEFAULT_USER_AGENT: str = FetchConfig.model_fields["user_agent"].default
# zlib level of the written PNG: 1 is several times faster than 6 on a page-sized image and
# the file only a little larger (screenshots of pages compress well either way); the rows are
# filtered "Up" (monitor.evidence.png), not chosen row by row as Pillow's encoder does
PNG_COMPRESS_LEVEL = 1
BANNER_BACKGROUND = (255, 214, 0)  # a signal yellow no page is likely to fill a strip with
BANNER_FOREGROUND = (0, 0, 0)
BANNER_RULE = (200, 0, 0)  # a red line between the banner and the page
BANNER_FONT_SIZE = 18
MIN_BLUR_PX = 24
# The pass with the images blurred is shot at this scale (see Screenshotter._shoot): a blur
# radius of at least MIN_BLUR_PX CSS pixels is still at least 6 of its pixels, so scaling it
# back up shows nothing a full-scale blur would not.
BLURRED_PASS_SCALE = 0.25
BOX_MARGIN_PX = 2  # a blurred box also takes this much around it (rounding, antialiasing)
MAX_BLURRED_BOXES = 2000  # more blurred elements than this: one pass at full scale
MINOR_REFUSAL = (
    "no screenshot taken: the person may be a minor. Keep no copy of the image, not even "
    "blurred; report the page to the police or a hotline (in the UK the Internet Watch "
    "Foundation, report.iwf.org.uk)"
)

# Inserted at document start (and again after load): with JavaScript on, images are blurred
# from the first paint; with it off (the default) the blur script after load does it all.
BLUR_CSS = f"""
img, picture, video, canvas, svg image, svg feImage, iframe, embed, object,
input[type="image"], [style*="url("] {{
  transition: none !important;
  animation: none !important;
  filter: blur({MIN_BLUR_PX}px) !important;
}}
"""

_INIT_SCRIPT = (
    "(() => { const css = %s; const add = () => {"
    " const s = document.createElement('style'); s.dataset.exposureMonitor = 'blur';"
    " s.textContent = css; (document.head || document.documentElement).appendChild(s); };"
    " if (document.documentElement) add();"
    " else document.addEventListener('readystatechange', add, {once: true}); })();"
)

# After load: blur every image-bearing element in proportion to its size (at least
# MIN_BLUR_PX), background images and pseudo-elements included, in open shadow roots too.
_BLUR_SCRIPT = """
(args) => {
  const [css, minBlur, focusUrls, greyUrls] = args;
  const MEDIA = new Set(['IMG', 'PICTURE', 'VIDEO', 'CANVAS', 'IFRAME', 'EMBED', 'OBJECT']);
  const hasUrl = (v) => v && v !== 'none' && v.includes('url(');
  const absolute = (u) => {
    try { const x = new URL(u, document.baseURI); x.hash = ''; return x.href; }
    catch (e) { return ''; }
  };
  const focus = new Set((focusUrls || []).map(absolute).filter((u) => u));
  // Images the browser got as grey boxes of the same size (see Screenshotter._image): an
  // element showing nothing else needs no blur, only its box (see below).
  const grey = new Set(greyUrls || []);
  const MAY_BE_GREY = new Set(['IMG', 'PICTURE', 'INPUT']);
  // Every address an element shows an image from: its src-like attributes (srcset and
  // lazy-load ones too), those of its <source> children, and its CSS url(...) values.
  const shown = (el, styles) => {
    const out = [];
    const attrs = (e) => {
      for (const a of e.attributes || []) {
        if (/src|poster|original|^data$/i.test(a.name)) {
          for (const part of a.value.split(',')) out.push(part.trim().split(/\\s+/)[0]);
        }
      }
    };
    attrs(el);
    for (const child of el.children || []) if (child.tagName === 'SOURCE') attrs(child);
    if (el.currentSrc) out.push(el.currentSrc);
    for (const v of styles) {
      for (const m of (v || '').matchAll(/url\\(\\s*(['"]?)(.*?)\\1\\s*\\)/g)) out.push(m[2]);
    }
    return out;
  };
  let count = 0;
  const drawn = [];  // each <img>'s box and the address it shows (a copy of it is drawn there)
  const rects = [];  // each blurred element's box on the page (CSS px) and its blur radius
  const greyRects = [];  // the same for elements showing only grey boxes (not blurred)
  const focusRects = [];  // the boxes of those showing one of focusUrls
  const blur = (el, styles) => {
    const r = el.getBoundingClientRect();
    if (focus.size && r.width > 0 && r.height > 0
        && shown(el, styles).some((u) => u && focus.has(absolute(u)))) {
      focusRects.push([r.left + window.scrollX, r.top + window.scrollY, r.width, r.height]);
    }
    const tagName = el.tagName.toUpperCase();
    const urls = shown(el, styles).filter((u) => u).map(absolute);
    const onlyGrey = urls.length > 0 && urls.every((u) => grey.has(u))
      && (MAY_BE_GREY.has(tagName) || !MEDIA.has(tagName)) && !(el instanceof SVGElement);
    const px = onlyGrey ? 0 : Math.max(minBlur, Math.round(0.08 * Math.max(r.width, r.height)));
    // no transition or animation may delay the blur (or undo it) before the shot
    el.style.setProperty('transition', 'none', 'important');
    el.style.setProperty('animation', 'none', 'important');
    el.style.setProperty('filter', onlyGrey ? 'none' : `blur(${px}px)`, 'important');
    el.dataset.exposureMonitorBlurred = '1';
    if (r.width > 0 && r.height > 0) {
      (onlyGrey ? greyRects : rects).push(
        [r.left + window.scrollX, r.top + window.scrollY, r.width, r.height, px]);
      const tag = el.tagName.toUpperCase();
      const src = tag === 'IMG' ? (el.currentSrc || el.src)
        : (tag === 'INPUT' && el.type === 'image') ? el.src : '';
      if (src) {
        drawn.push([r.left + window.scrollX, r.top + window.scrollY, r.width, r.height,
                    absolute(src)]);
      }
    }
    count += 1;
  };
  const visit = (root) => {
    if (root !== document) {
      const s = document.createElement('style');
      s.textContent = css;
      root.appendChild(s);
    }
    for (const el of root.querySelectorAll('*')) {
      if (el.shadowRoot) visit(el.shadowRoot);
      const tag = el.tagName.toUpperCase();
      const isMedia = MEDIA.has(tag) || (tag === 'INPUT' && el.type === 'image')
        || (tag === 'IMAGE' && el instanceof SVGElement);
      const cs = getComputedStyle(el);
      const before = getComputedStyle(el, '::before');
      const after = getComputedStyle(el, '::after');
      if (isMedia || hasUrl(cs.backgroundImage) || hasUrl(cs.listStyleImage)
          || hasUrl(cs.borderImageSource) || hasUrl(cs.maskImage)
          || hasUrl(before.backgroundImage) || hasUrl(after.backgroundImage)
          || hasUrl(before.content) || hasUrl(after.content) || hasUrl(cs.content)) {
        blur(el, [cs.backgroundImage, before.backgroundImage, after.backgroundImage,
                  before.content, after.content, cs.content]);
      }
    }
  };
  const s = document.createElement('style');
  s.dataset.exposureMonitor = 'blur';
  s.textContent = css;
  (document.head || document.documentElement).appendChild(s);
  visit(document);
  // With any element blurred, the shot takes two passes (see Screenshotter._shoot) and the
  // second hides every image: the grey ones are then laid in from the first pass too.
  if (rects.length) rects.push(...greyRects);
  return [count, rects, focusRects, drawn];
}
"""

# For the sharp pass (see Screenshotter._shoot): every blurred element, and every element of
# a kind that is blurred (one a page's script added since included), is not painted at all.
# Opacity as well as visibility: an element's opacity hides its children and pseudo-elements
# whatever they say, as its blur filter does.
HIDE_CSS = """
img, picture, video, canvas, svg image, svg feImage, iframe, embed, object,
input[type="image"], [style*="url("], [data-exposure-monitor-blurred],
[data-exposure-monitor-blurred]::before, [data-exposure-monitor-blurred]::after {
  visibility: hidden !important;
  opacity: 0 !important;
}
"""
_HIDE_SCRIPT = """
(css) => {
  const hide = (root) => {
    const s = document.createElement('style');
    s.textContent = css;
    (root === document ? (document.head || document.documentElement) : root).appendChild(s);
    for (const el of root.querySelectorAll('*')) {
      if (el.shadowRoot) hide(el.shadowRoot);
      if (el.dataset && el.dataset.exposureMonitorBlurred) {
        el.style.setProperty('visibility', 'hidden', 'important');
        el.style.setProperty('opacity', '0', 'important');
        // not painted at all now: its blur (seconds for a big photo) would be wasted work
        el.style.setProperty('filter', 'none', 'important');
      }
    }
  };
  hide(document);
}
"""

# Polled from Python: with the page's JavaScript off, no event listener, timer or animation
# frame callback ever runs, so nothing here may wait for one.
_READY_STATE = "() => document.readyState"
_IMAGES_PENDING = "() => [...document.images].filter(i => !i.complete).length"
_PAGE_HEIGHT = (
    "() => Math.max(document.documentElement.scrollHeight,"
    " document.body ? document.body.scrollHeight : 0)"
)


Thumb = tuple[tuple[int, int], bytes]  # a blurred thumbnail: (width, height), RGB bytes
Thumbs = dict[str, "asyncio.Future[Thumb]"]  # one capture's, by image address

KEPT_TABS = 4
"""Most tabs kept open between captures (one per site, the least recently used closed)."""

NOT_KEPT = {"Cache-Control": "no-store"}
"""On the images the tool answers: a tab used again for its site's next page asks for them
again (so their thumbnails are made for that capture), never from the renderer's memory."""


@dataclass(slots=True)
class _Tab:
    """A browser context with its one page, the request filter routing its requests and the
    thumbnails of the capture it is doing."""

    context: Any
    page: Any
    thumbs: Thumbs
    requests: _RequestFilter


def site_of(url: str) -> str:
    """The site a tab may be reused for: scheme, host and port (``https://a.example:443``)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{(parts.hostname or '').lower()}:{parts.port or _default_port(parts.scheme)}"


THUMBNAIL_TIMEOUT = 20.0  # seconds one image's thumbnail may take in its worker
PLACEHOLDER_FILL = "#8c8c8c"
IMAGES_LINE = (
    "Images: blurred copies drawn by Exposure Monitor from the bytes served (the browser"
    " got same-size grey boxes); a plain grey box is an image not drawn"
)

READ_METHODS = frozenset({"GET", "HEAD"})
WEB_SCHEMES = frozenset({"http", "https"})
MAX_CONCURRENT_CAPTURES = 3
QUIET_SECONDS = 0.3  # with JavaScript on: the network counts as quiet after this long idle
MAX_SETTLE_SECONDS = 5.0  # ... but a page that never goes quiet is shot after this long

# With JavaScript on (``[cases] screenshot_javascript``), run in every frame before the page's
# own scripts: WebRTC's constructors are gone (the flags above keep it off UDP anyway).
_NO_WEBRTC_SCRIPT = """
(() => {
  for (const name of Object.getOwnPropertyNames(window)) {
    if (/^(webkit|moz)?RTC/.test(name)) { try { delete window[name]; } catch (e) {} }
  }
})();
"""


def guard_args(proxy_port: int) -> list[str]:
    """Chromium flags that send every connection through the guard proxy on ``proxy_port``:
    loopback included (``<-loopback>``), names never resolved by Chromium itself (only the
    proxy's address is), WebRTC never on UDP (``disable_non_proxied_udp``: no STUN, no
    TURN/UDP, no host candidates; an HTTP proxy carries no UDP). Chromium 156 knows no
    ``--force-webrtc-ip-handling-policy``: that flag did nothing."""
    return [
        f"--proxy-server=http://127.0.0.1:{proxy_port}",
        "--proxy-bypass-list=<-loopback>",
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
        "--webrtc-ip-handling-policy=disable_non_proxied_udp",
    ]


@dataclass(frozen=True, slots=True)
class ScreenshotInfo:
    """A screenshot written: where, of what, when (UTC), its size, SHA-256, which browser."""

    path: Path
    url: str
    final_url: str
    captured_at: datetime
    width: int
    height: int
    sha256: str
    browser_version: str
    banner_height: int
    blurred_elements: int
    # The parts of the page shown, (top, bottom) in CSS px from its top, and its whole height
    parts: tuple[tuple[int, int], ...] = ()
    page_height: int = 0
    drawn_images: int = 0  # images drawn by us, blurred, from the bytes served


class TakenShot:
    """A screenshot taken, in memory, not yet written (see :meth:`Screenshotter.shoot`)."""

    __slots__ = ("_write",)

    def __init__(self, write: Callable[[], ScreenshotInfo]) -> None:
        self._write: Callable[[], ScreenshotInfo] | None = write

    def write(self) -> ScreenshotInfo:
        """Lay the blurred boxes in, stamp the banner, write the PNG (once)."""
        write, self._write = self._write, None
        if write is None:
            raise RuntimeError("this screenshot was written already")
        return write()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def _launch_problem(exc: BaseException) -> str:
    """Why Chromium did not start: Playwright's first line, and what the browser said about
    its sandbox (which is never turned off to make it start)."""
    text = str(exc)
    problem = _first_line(exc)
    said = [  # "[pid=12][err] [1206/084700.0:FATAL:zygote_host_impl_linux.cc(128)] No usable..."
        re.sub(r"^.*?\[err\]\s*(\[[^\]]*\]\s*)?", "", line)
        for line in text.splitlines()
        if "[err]" in line and "sandbox" in line.lower()
    ]
    if said or "sandboxing failed" in text.lower():
        problem += f" ({said[0][:200]})" if said else ""
        problem += (
            "; Chromium's sandbox needs unprivileged user namespaces (sysctl"
            " kernel.unprivileged_userns_clone=1, kernel.apparmor_restrict_unprivileged_userns=0,"
            " or a container that allows them)"
        )
    return problem


class Screenshotter:
    """One headless Chromium for many screenshots: ``async with Screenshotter() as s:``.

    ``timeout`` bounds starting the browser and each whole capture (load, blur, shot), in
    seconds. Every connection the browser makes goes through a
    :class:`~monitor.evidence.proxy.GuardProxy`; ``allow_private_networks`` lets it reach
    private and loopback addresses (tests and the demo). ``resolver``/``is_blocked`` replace
    the system resolver and the address rule as in :class:`monitor.fetch.Fetcher`; the guard
    proxy uses them for every connection. ``max_connection_bytes`` bounds what one connection
    may bring from a server. ``user_agent`` is sent instead of Chromium's own (the fetcher's,
    ``[fetch] user_agent``, by default). ``javascript`` runs the page's scripts (off by
    default: ``[cases] screenshot_javascript``). At most ``max_concurrent`` captures run at
    once, each in its own browser context.
    """

    def __init__(
        self,
        *,
        timeout: float = 45.0,
        allow_private_networks: bool = False,
        viewport: tuple[int, int] = (1280, 900),
        max_height: int = 12_000,
        executable_path: str | None = None,
        resolver: Resolver | None = None,
        is_blocked: AddressPredicate | None = None,
        max_connection_bytes: int = 50_000_000,
        user_agent: str | None = None,
        javascript: bool = False,
        max_concurrent: int = MAX_CONCURRENT_CAPTURES,
        draw_images: bool = True,
    ) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        if max_concurrent < 1:
            raise ValueError("max_concurrent must be at least 1")
        self.timeout = timeout
        self.viewport = viewport
        self.max_height = max_height
        self.executable_path = executable_path
        if is_blocked is None and not allow_private_networks:
            is_blocked = is_blocked_address
        self._is_blocked = is_blocked
        self._resolver = resolver or system_resolver
        self.max_connection_bytes = max_connection_bytes
        self.user_agent = user_agent or DEFAULT_USER_AGENT
        self.javascript = javascript
        self.max_concurrent = max_concurrent
        self._slots = asyncio.Semaphore(max_concurrent)
        self._proxy: GuardProxy | None = None
        self._launcher: Launcher | None = None
        self._playwright: Any = None
        self._browser: Any = None
        self._spare: asyncio.Task[_Tab] | None = None
        self._waiting = 0  # captures waiting for a slot that will need a new tab
        self._kept: dict[str, _Tab] = {}  # an idle tab per site, to be used again
        self._sites: dict[str, asyncio.Lock] = {}  # one capture at a time per site
        self.draw_images = draw_images
        self._http: Any = None  # httpx.AsyncClient through the guard proxy (draw_images)
        self._decoder: Executor | None = None  # the thumbnails' process pool (draw_images)
        self._decoder_start: asyncio.Future[Executor] | None = None
        self.browser_version = ""

    @property
    def running(self) -> bool:
        """Started, and the browser still there (not closed, not crashed)."""
        return self._browser is not None and self._browser.is_connected()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def start(self) -> None:
        """Start the guard proxy, Playwright and Chromium (called by ``async with``)."""
        if self._browser is not None:
            return
        executable = self.executable_path or chromium_path(scripts=self.javascript)
        if executable is None or not os.path.isfile(executable):
            raise ScreenshotError(
                f"Chromium is not installed at {executable or DEFAULT_CHROMIUM}: install "
                "Debian's packages (apt-get install chromium chromium-headless-shell), or "
                "Playwright's (playwright install chromium), or set $MONITOR_CHROMIUM"
            )
        if self.javascript and is_headless_shell(executable):
            raise ScreenshotError(
                f"{executable} is Chromium's headless shell, which has no popup blocker and "
                "ignores the WebRTC policy: with JavaScript on ([cases] screenshot_javascript) "
                "captures need the full Chromium (/usr/bin/chromium or $MONITOR_CHROMIUM)"
            )
        try:
            from playwright.async_api import async_playwright
        except ImportError:  # pragma: no cover - a dependency
            raise ScreenshotError("Playwright is not installed: pip install playwright") from None
        launcher = Launcher(executable)  # raises ScreenshotError when it cannot drop root
        self._launcher = launcher
        if self.draw_images:  # its worker starts while the browser does, off the event loop
            self._decoder_start = asyncio.ensure_future(asyncio.to_thread(_decoder_pool))
        try:
            async with asyncio.timeout(self.timeout):
                self._proxy = GuardProxy(
                    self._is_blocked or _allow_any,
                    self._resolver,
                    connect_timeout=min(self.timeout, 20.0),
                    idle_timeout=self.timeout,
                    max_bytes=self.max_connection_bytes,
                )
                args = [
                    *CHROMIUM_ARGS,
                    *guard_args(await self._proxy.start()),
                    # browser-wide: every frame and worker. (Playwright's per-context
                    # user_agent would add made-up client hints: Sec-CH-UA-Platform "Windows")
                    f"--user-agent={self.user_agent}",
                ]
                self._playwright = await async_playwright().start()
                self._browser = await self._playwright.chromium.launch(
                    executable_path=launcher.executable,
                    args=args,
                    ignore_default_args=PLAYWRIGHT_ARGS_REFUSED,
                    chromium_sandbox=True,
                    timeout=self.timeout * 1000,
                )
        except TimeoutError:
            await self.aclose()
            raise ScreenshotError(
                f"Chromium ({executable}) did not start within {self.timeout:g} s"
            ) from None
        except Exception as exc:
            await self.aclose()
            who = f" as user {launcher.user.name}" if launcher.user is not None else ""
            raise ScreenshotError(
                f"Chromium ({executable}) could not be started{who}, sandboxed: "
                f"{_launch_problem(exc)}"
            ) from exc
        self.browser_version = f"Chromium {self._browser.version}"
        if self.draw_images:
            import httpx

            self._http = httpx.AsyncClient(
                proxy=f"http://127.0.0.1:{self._proxy.port}",
                follow_redirects=True,
                max_redirects=10,
                timeout=httpx.Timeout(self.timeout),
                headers={"User-Agent": self.user_agent},
                trust_env=False,
            )
        self._make_spare()

    async def aclose(self) -> None:
        """Close the browser, Playwright and the guard proxy."""
        await self._drop_spare()
        await self.close_tabs()
        browser, self._browser = self._browser, None
        pw, self._playwright = self._playwright, None
        proxy, self._proxy = self._proxy, None
        launcher, self._launcher = self._launcher, None
        http, self._http = self._http, None
        decoder, self._decoder = self._decoder, None
        starting, self._decoder_start = self._decoder_start, None
        if starting is not None:  # (the same pool, or one no capture has used yet)
            with contextlib.suppress(Exception):
                decoder = await starting
        if browser is not None:
            with contextlib.suppress(Exception):  # already gone
                await browser.close()
        if pw is not None:
            with contextlib.suppress(Exception):
                await pw.stop()
        if http is not None:
            await http.aclose()
        if decoder is not None:
            decoder.shutdown(wait=False, cancel_futures=True)
        if proxy is not None:
            await proxy.close()
        if launcher is not None:
            launcher.close()

    async def capture(
        self,
        url: str,
        out_path: Path | str,
        *,
        may_show_minor: bool,
        timeout: float | None = None,
        focus: Sequence[str] = (),
    ) -> ScreenshotInfo:
        """Load ``url``, blur its images, take the shot, stamp the banner, write ``out_path``:
        :meth:`shoot`, then its :meth:`TakenShot.write` in a worker thread.

        ``focus``: the addresses of the images the capture is about (a case's matched image).
        A page taller than :data:`FULL_PAGE_HEIGHT` that shows one of them is shot in parts:
        its top (one viewport) and each such image with half a viewport above and below,
        joined by grey strips that say how much of the page is left out (see :func:`_spans`).
        Any other page is shot whole, from its top, up to ``max_height``.

        ``out_path`` (a ``.png``) is created owner-only and must not exist. ``timeout``
        (seconds) replaces the Screenshotter's for this capture (waiting for a free slot not
        included). Raises :class:`MinorSafetyRefusal` if ``may_show_minor`` (before anything
        is loaded), :class:`ScreenshotError` with a readable reason if the address is refused
        or the page cannot be loaded and shot in time.
        """
        taken = await self.shoot(
            url, out_path, may_show_minor=may_show_minor, timeout=timeout, focus=focus
        )
        return await asyncio.to_thread(taken.write)

    async def shoot(
        self,
        url: str,
        out_path: Path | str,
        *,
        may_show_minor: bool,
        timeout: float | None = None,
        focus: Sequence[str] = (),
    ) -> TakenShot:
        """The browser's part of :meth:`capture` (same arguments, same errors): the shot in
        memory, written to ``out_path`` by its :meth:`~TakenShot.write` (CPU-bound: call it in
        a worker thread). The write needs no browser: the Screenshotter may be closed meanwhile
        (the last capture's write and the browser's exit then overlap)."""
        timeout = timeout or self.timeout
        if may_show_minor:
            raise MinorSafetyRefusal(MINOR_REFUSAL)
        parts = urlsplit(url)
        if parts.scheme not in WEB_SCHEMES or not parts.hostname:
            raise ScreenshotError(f"{url}: only http and https URLs are captured")
        if Path(out_path).exists():
            raise ScreenshotError(f"{out_path} exists already; evidence is never overwritten")
        await self._check_host(url, parts.hostname, parts.port or _default_port(parts.scheme))
        if self._browser is None:
            raise RuntimeError("use `async with Screenshotter() as s:` before capture()")
        site = site_of(url)
        async with self._sites.setdefault(site, asyncio.Lock()):  # a site's pages one by one
            needs_tab = site not in self._kept
            if needs_tab and self._slots.locked():  # it waits for a slot: its tab made meanwhile
                self._make_spare()
            self._waiting += needs_tab
            try:
                await self._slots.acquire()
            finally:
                self._waiting -= needs_tab
            try:
                shot, final_url, blurred, captured_at = await self._load_and_shoot(
                    url, timeout, tuple(focus)
                )
            finally:
                self._slots.release()
                if self._waiting:  # the next capture's tab, while this shot is written
                    self._make_spare()
        return TakenShot(
            partial(self._write, shot, url, final_url, blurred, captured_at, Path(out_path))
        )

    def prepare(self) -> None:
        """Make the next capture's tab in the background now, if none is ready (a browser kept
        open between scans: called when a scan will capture again)."""
        self._make_spare()

    async def close_tabs(self) -> None:
        """Close the tabs kept for their sites (a scan's captures are over: the next scan's
        start in tabs of their own)."""
        kept, self._kept = self._kept, {}
        self._sites = {site: lock for site, lock in self._sites.items() if lock.locked()}
        for tab in kept.values():
            with contextlib.suppress(Exception):
                await tab.context.close()

    # --- internals --------------------------------------------------------------------------

    async def _new_tab(self) -> _Tab:
        """A new browser context (nothing shared with any other) and an empty page in it."""
        context = await self._browser.new_context(
            viewport={"width": self.viewport[0], "height": self.viewport[1]},
            java_script_enabled=self.javascript,
            service_workers="block",
            accept_downloads=False,
        )
        try:
            thumbs: Thumbs = {}
            images = None
            if self._http is not None:

                async def images(route: Any) -> None:
                    await self._image(route, thumbs, context)

            requests = _RequestFilter(images)
            await context.route("**/*", requests)
            await context.add_init_script(_INIT_SCRIPT % _js_string(BLUR_CSS))
            if self.javascript:
                await context.add_init_script(_NO_WEBRTC_SCRIPT)
            page = await context.new_page()
            context.on("page", _close_popup)  # any other page (a popup): closed at once
            return _Tab(context, page, thumbs, requests)
        except BaseException:
            with contextlib.suppress(Exception):
                await context.close()
            raise

    def _make_spare(self) -> None:
        """Prepare the next capture's context and page in the background: one spare at a time,
        never used twice. A new page costs Chromium a renderer process (about 0.3 s, and 0.8-0.9
        CPU s of the browser's and the renderer's), so a spare is made only when a capture is
        sure to want it: at the start (the first capture), and when a capture waits for a
        slot; not after every capture (the last one's spare was work thrown away, on the same
        two cores as the other captures' shots)."""
        if self._browser is not None and self._spare is None:
            self._spare = asyncio.create_task(self._new_tab())

    async def _take_tab(self) -> _Tab:
        spare, self._spare = self._spare, None
        if spare is not None:
            with contextlib.suppress(Exception):
                return await spare
        return await self._new_tab()

    async def _drop_spare(self) -> None:
        spare, self._spare = self._spare, None
        if spare is None:
            return
        if not spare.done():
            spare.cancel()
        with contextlib.suppress(BaseException):
            await (await spare).context.close()

    async def _load_and_shoot(
        self, url: str, timeout: float, focus: tuple[str, ...] = ()
    ) -> tuple[Picture, str, int, datetime]:
        """The page's PNG, in the tab kept for its site if there is one (its cookies cleared
        first: each capture is a first visit), else in a fresh context of its own. A tab that
        shot its page and stayed on its site is kept for the site's next page (a new tab costs
        Chromium a renderer process, most of a capture's CPU); any other is closed."""
        started = time.monotonic()
        site = site_of(url)
        tab: _Tab | None = None
        keep = False
        try:
            async with asyncio.timeout(timeout):
                tab = self._kept.pop(site, None)
                if tab is None:
                    tab = await self._take_tab()
                else:
                    await tab.context.clear_cookies()
                    tab.thumbs.clear()
                tab.requests.reset()
                result = await self._shoot(tab.page, url, timeout, started, focus, tab.thumbs)
                # with scripts on, a page could leave storage behind for the next: not kept
                keep = (
                    not self.javascript and site_of(result[1]) == site and not tab.page.is_closed()
                )
                return result
        except TimeoutError:
            raise ScreenshotError(
                f"{url}: gave up after {timeout:g} s (the page did not finish loading)"
            ) from None
        except ScreenshotError as exc:
            raise self._refused(url, started) or exc from None
        except Exception as exc:
            if refused := self._refused(url, started):
                raise refused from exc
            if type(exc).__name__ == "TimeoutError":  # Playwright's own
                raise ScreenshotError(
                    f"{url}: gave up after {timeout:g} s ({_first_line(exc)})"
                ) from None
            raise ScreenshotError(
                f"{url}: could not take a screenshot: {_first_line(exc)}"
            ) from exc
        finally:
            if tab is not None:
                if keep and self._browser is not None:
                    self._keep(site, tab)
                else:
                    with contextlib.suppress(Exception):
                        await tab.context.close()

    def _keep(self, site: str, tab: _Tab) -> None:
        """Keep ``tab`` for ``site``'s next capture; past :data:`KEPT_TABS`, the least recently
        used one is closed."""
        self._kept[site] = tab
        while len(self._kept) > KEPT_TABS:
            oldest = next(iter(self._kept))
            asyncio.ensure_future(self._kept.pop(oldest).context.close()).add_done_callback(
                lambda f: f.cancelled() or f.exception()
            )

    def _write(
        self,
        shot: Picture,
        url: str,
        final_url: str,
        blurred: int,
        captured_at: datetime,
        out_path: Path,
    ) -> ScreenshotInfo:
        """Lay the blurred boxes in, stamp the banner, write the PNG (in a worker thread:
        Pillow's work is CPU-bound)."""
        spans, page_height, drawn = shot.spans, shot.page_height, len(shot.drawn)
        stamped, banner_height = stamp_banner(
            shot.image(),
            url,
            final_url,
            captured_at,
            parts_line=shot.parts_line(),
            images_line=IMAGES_LINE if self.draw_images else "",
        )
        del shot
        text = [("Source", url)]
        if final_url != url:
            text.append(("Source (after redirects)", final_url))
        text.append(("Creation Time", _utc_text(captured_at)))
        text.append(
            (
                "Page parts shown",
                ", ".join(f"{top}-{bottom}" for top, bottom in spans) + f" of {page_height} px",
            )
        )
        text.append(("Software", f"exposure-monitor/{monitor.__version__}; {self.browser_version}"))
        text.append(("Comment", "Every image on the page is blurred."))
        if self.draw_images:
            text.append(("Images", IMAGES_LINE))
        data = encode_png(stamped, text, level=PNG_COMPRESS_LEVEL)

        def write(fh: IO[bytes]) -> None:
            fh.write(data)

        path = write_new_file(out_path, write)
        return ScreenshotInfo(
            path=path,
            url=url,
            final_url=final_url,
            captured_at=captured_at,
            width=stamped.width,
            height=stamped.height,
            sha256=hashlib.sha256(data).hexdigest(),
            browser_version=self.browser_version,
            banner_height=banner_height,
            blurred_elements=blurred,
            drawn_images=drawn,
            parts=spans,
            page_height=page_height,
        )

    async def _shoot(
        self,
        page: Any,
        url: str,
        timeout: float,
        started: float,
        focus: tuple[str, ...] = (),
        thumbs: Thumbs | None = None,
    ) -> tuple[Picture, str, int, datetime]:
        page.set_default_timeout(timeout * 1000)
        in_flight = _InFlight(page)
        # Up to the commit only: Playwright's own wait for `load` can hang for good when the
        # page starts a navigation that the request filter then drops.
        response = await page.goto(url, wait_until="commit")
        if response is not None and response.status >= 400:
            # a redirect to a refused address is answered 403 by the guard proxy
            refused = self._refused(url, started, hop=response.url)
            if refused is not None:
                raise refused
            raise ScreenshotError(f"{url}: the server answered HTTP {response.status}")
        while await page.evaluate(_READY_STATE) != "complete":  # the `load` event has fired
            await asyncio.sleep(0.02)
        # Give late requests (scripts, lazy images) a moment; a page that never goes quiet is
        # shot anyway. Without JavaScript nothing starts after `load`: no wait at all.
        settle = min(MAX_SETTLE_SECONDS, timeout / 4)
        await in_flight.quiet(QUIET_SECONDS if self.javascript else 0.0, settle)
        in_flight.close()
        await _images_settled(page, settle)
        blurred, rects, focus_rects, drawn = await page.evaluate(
            _BLUR_SCRIPT, [BLUR_CSS, MIN_BLUR_PX, list(focus), list(thumbs or ())]
        )
        page_height = max(1, int(await page.evaluate(_PAGE_HEIGHT)))
        width = self.viewport[0]
        spans = _spans(page_height, focus_rects, self.viewport[1], self.max_height)
        # Each part: one pass at full scale (no image in it, or too many: the slow way, big
        # blurs cost seconds), or two passes of the same layout: the part with its images
        # blurred, at a quarter of the scale (Chromium's blur of a camera-size photo costs
        # seconds at full scale, a tenth of that here), then at full scale with every blurred
        # element not painted (its text sharp, no image at all); the blurred boxes of the first
        # are laid into the second when the PNG is written. Every blurred pass comes first:
        # hiding the images is for the whole page.
        boxes = [
            _blurred_boxes([[x, y - top, w, h, px] for x, y, w, h, px in rects], width, b - top)
            for top, b in spans
        ]
        first: list[bytes] = []
        for (top, bottom), part_boxes in zip(spans, boxes, strict=True):
            scale = 1.0 if part_boxes is None else BLURRED_PASS_SCALE
            first.append(await _screenshot(page, width, bottom - top, scale, top=top))
        parts: list[tuple[tuple[int, int], Shot]] = []
        if any(part_boxes is not None for part_boxes in boxes):
            await page.evaluate(_HIDE_SCRIPT, HIDE_CSS)
        for (top, bottom), part_boxes, png in zip(spans, boxes, first, strict=True):
            if part_boxes is None:
                parts.append(((top, bottom), Shot(png)))
            else:
                sharp = await _screenshot(page, width, bottom - top, top=top)
                parts.append(((top, bottom), Shot(sharp, png, part_boxes)))
        copies = await _copies(drawn, thumbs or {}, settle)
        picture = Picture(tuple(parts), page_height, copies)
        captured_at = datetime.now(UTC)
        final_url = page.url
        if urlsplit(final_url).scheme not in WEB_SCHEMES:
            raise ScreenshotError(f"{url}: the page went to {final_url[:200]}; not captured")
        return picture, final_url, int(blurred), captured_at

    async def _image(self, route: Any, thumbs: Thumbs, context: Any) -> None:
        try:
            await self._answer_image(route, thumbs, context)
        except Exception as exc:  # the capture is over (its context closed), or a bug
            log.debug("image request %s: %s", route.request.url[:200], exc)
            with contextlib.suppress(Exception):
                await route.abort("failed")

    async def _answer_image(self, route: Any, thumbs: Thumbs, context: Any) -> None:
        """Answer one of the page's image requests: the image is fetched here, through the
        same guard proxy, with the tool's User-Agent; the browser gets a grey SVG of its
        intrinsic size (read from the header) and a blurred thumbnail is made of it in the
        decoder pool, to be drawn over its box (see :func:`_draw_copy`). Bytes that Pillow
        cannot read (an SVG) go to the browser as served, to be blurred by it as before."""
        request = route.request
        if request.method.upper() != "GET":
            await route.continue_()
            return
        got = await self._fetch_image(request, context)
        if got is None:
            await route.abort("failed")
            return
        body, content_type = got
        size = _intrinsic_size(body)
        if size is None:
            await route.fulfill(status=200, body=body, content_type=content_type, headers=NOT_KEPT)
            return
        address = request.url.split("#", 1)[0]
        if self._decoder is None and self._decoder_start is not None:  # started with the browser
            self._decoder = await asyncio.shield(self._decoder_start)
        if address not in thumbs and self._decoder is not None:
            loop = asyncio.get_running_loop()
            future = loop.run_in_executor(self._decoder, blurred_thumbnail, body)
            future.add_done_callback(lambda f: f.cancelled() or f.exception())
            thumbs[address] = future
        del body
        await route.fulfill(
            status=200,
            body=_placeholder_svg(*size),
            content_type="image/svg+xml",
            headers=NOT_KEPT,
        )

    async def _fetch_image(self, request: Any, context: Any) -> tuple[bytes, str] | None:
        """The image's bytes (in memory only) and content type, or None if not served. Sent
        as the browser would: its Referer and Accept, and the capture's own cookies for that
        address (the ones the page set; a capture's context starts with none)."""
        headers = {k: v for k, v in request.headers.items() if k.lower() in ("referer", "accept")}
        try:
            cookies = await context.cookies([request.url])
            if cookies:
                headers["Cookie"] = "; ".join(f"{c['name']}={c['value']}" for c in cookies)
        except Exception:  # the context is closing: the capture is over anyway
            return None
        try:
            async with self._http.stream("GET", request.url, headers=headers) as response:
                if response.status_code != 200:
                    return None
                chunks: list[bytes] = []
                total = 0
                async for chunk in response.aiter_bytes():
                    total += len(chunk)
                    if total > self.max_connection_bytes:
                        return None
                    chunks.append(chunk)
                return b"".join(chunks), response.headers.get("content-type", "image/jpeg")
        except Exception as exc:
            log.debug("image %s not fetched: %s", request.url[:200], exc)
            return None

    def _refused(self, url: str, since: float, *, hop: str = "") -> ScreenshotError | None:
        """The error for a capture of ``url`` whose page (or redirect ``hop``) the guard proxy
        refused to connect to since ``since``, if it did."""
        if self._proxy is None:
            return None
        parts = urlsplit(hop or url)
        port = parts.port or _default_port(parts.scheme)
        reason = self._proxy.refusal_since(parts.hostname or "", port, since)
        return ScreenshotError(f"{url}: {reason}") if reason is not None else None

    async def _refusal(self, host: str, port: int) -> str | None:
        """Why ``host`` may not be loaded, or None if it may."""
        assert self._is_blocked is not None
        try:
            literal = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            try:
                addresses = await self._resolver(host, port)
            except OSError as exc:
                return f"could not look up {host}: {exc}"
        else:
            addresses = [str(literal)]
        for address in addresses:
            try:
                ip = ipaddress.ip_address(address.split("%", 1)[0])
            except ValueError:
                continue
            if self._is_blocked(ip):
                return (
                    f"{host} resolves to {address}, a private, local or reserved address; not "
                    "loaded (set [fetch] allow_private_networks = true to allow it)"
                )
        return None

    async def _check_host(self, url: str, host: str, port: int) -> None:
        """Refuse a page on a refused address before starting anything (a clear, early error;
        the guard proxy would refuse every connection to it anyway)."""
        if self._is_blocked is None:
            return
        reason = await self._refusal(host, port)
        if reason is not None:
            raise ScreenshotError(f"{url}: {reason}")


async def capture_screenshot(
    url: str,
    out_path: Path | str,
    *,
    may_show_minor: bool,
    timeout: float = 45.0,
    allow_private_networks: bool = False,
    user_agent: str | None = None,
    javascript: bool = False,
) -> ScreenshotInfo:
    """One screenshot with its own browser (starting Chromium takes about half a second).

    For several pages, keep one :class:`Screenshotter` open instead.
    """
    if may_show_minor:  # refuse before starting a browser
        raise MinorSafetyRefusal(MINOR_REFUSAL)
    shooter = Screenshotter(
        timeout=timeout,
        allow_private_networks=allow_private_networks,
        user_agent=user_agent,
        javascript=javascript,
    )
    async with shooter:
        return await shooter.capture(url, out_path, may_show_minor=may_show_minor)


# --- the banner ------------------------------------------------------------------------------


def _utc_text(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    for name in ("DejaVuSansMono.ttf", "/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf"):
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            continue
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # pragma: no cover - Pillow without FreeType
        return ImageFont.load_default()


def _wrap(draw: ImageDraw.ImageDraw, text: str, font: Any, width: int) -> list[str]:
    """Break ``text`` into lines no wider than ``width`` pixels (anywhere: URLs have no spaces)."""
    lines: list[str] = []
    current = ""
    for ch in text:
        if current and draw.textlength(current + ch, font=font) > width:
            lines.append(current)
            current = ch
        else:
            current += ch
    if current or not lines:
        lines.append(current)
    return lines


def banner_lines(
    url: str, final_url: str, captured_at: datetime, parts_line: str = "", images_line: str = ""
) -> list[str]:
    """The banner's text, before wrapping."""
    lines = [
        f"Captured {_utc_text(captured_at)} by Exposure Monitor {monitor.__version__}"
        " - every image on the page is blurred",
        f"URL: {url}",
    ]
    if final_url and final_url != url:
        lines.append(f"Shown after redirects: {final_url}")
    if parts_line:
        lines.append(parts_line)
    if images_line:
        lines.append(images_line)
    return lines


def stamp_banner(
    png: bytes | Image.Image,
    url: str,
    final_url: str,
    captured_at: datetime,
    *,
    parts_line: str = "",
    images_line: str = "",
) -> tuple[Image.Image, int]:
    """The screenshot with a banner strip added above it; and the strip's height in pixels."""
    if isinstance(png, Image.Image):
        page = png if png.mode == "RGB" else png.convert("RGB")
    else:
        with Image.open(io.BytesIO(png)) as shot:
            page = shot.convert("RGB")
    font = _font(BANNER_FONT_SIZE)
    measure = ImageDraw.Draw(page)
    margin = 12
    lines: list[str] = []
    for text in banner_lines(url, final_url, captured_at, parts_line, images_line):
        lines += _wrap(measure, text, font, page.width - 2 * margin)
    ascent, descent = font.getmetrics() if hasattr(font, "getmetrics") else (BANNER_FONT_SIZE, 4)
    line_height = ascent + descent + 4
    height = 2 * margin + line_height * len(lines) + 3
    out = Image.new("RGB", (page.width, page.height + height), BANNER_BACKGROUND)
    out.paste(page, (0, height))
    draw = ImageDraw.Draw(out)
    for i, line in enumerate(lines):
        draw.text((margin, margin + i * line_height), line, fill=BANNER_FOREGROUND, font=font)
    draw.rectangle((0, height - 3, page.width, height - 1), fill=BANNER_RULE)
    return out, height


def _js_string(text: str) -> str:
    import json

    return json.dumps(text)


class _RequestFilter:
    """Route handler of one capture. Only GET and HEAD of http(s) URLs go on (through the guard
    proxy). The top frame loads the page asked for and follows its redirects, nothing else: a
    later navigation (``<meta http-equiv=refresh>``, a script, a download) is aborted, so the
    shot shows the page at the address in the banner and nothing is downloaded."""

    def __init__(self, images: Callable[[Any], Awaitable[None]] | None = None) -> None:
        self._chain: list[Any] = []  # the top frame's first request and its redirect hops
        self._images = images  # answers the page's image requests (see Screenshotter._image)

    def reset(self) -> None:
        """A new capture in the same tab: its first navigation is the one to let through."""
        self._chain.clear()

    async def __call__(self, route: Any) -> None:
        request = route.request
        if urlsplit(request.url).scheme not in WEB_SCHEMES or (
            request.method.upper() not in READ_METHODS
        ):
            await route.abort("blockedbyclient")
        elif self._in_top_frame(request) and not self._first_navigation(request):
            # "aborted": the navigation is dropped and the page stays (a blocked one would
            # replace it with Chromium's error page)
            await route.abort("aborted")
        elif self._images is not None and request.resource_type == "image":
            await self._images(route)
        else:
            await route.continue_()

    @staticmethod
    def _in_top_frame(request: Any) -> bool:
        if not request.is_navigation_request():
            return False
        try:
            return request.frame.parent_frame is None
        except Exception:  # no frame (a worker's request): not a page navigation
            return False

    def _first_navigation(self, request: Any) -> bool:
        if not self._chain or any(request.redirected_from is hop for hop in self._chain):
            self._chain.append(request)
            return True
        return False


class _InFlight:
    """Counts a page's requests that have not finished, to see when its network is quiet."""

    def __init__(self, page: Any) -> None:
        self.count = 0
        self._page = page
        page.on("request", self._started)
        page.on("requestfinished", self._ended)
        page.on("requestfailed", self._ended)

    def close(self) -> None:
        """Stop counting (the tab may serve another capture)."""
        self._page.remove_listener("request", self._started)
        self._page.remove_listener("requestfinished", self._ended)
        self._page.remove_listener("requestfailed", self._ended)

    def _started(self, _request: Any) -> None:
        self.count += 1

    def _ended(self, _request: Any) -> None:
        self.count = max(0, self.count - 1)

    async def quiet(self, for_seconds: float, at_most: float) -> None:
        """Return once no request has been open for ``for_seconds``, or after ``at_most``."""
        deadline = time.monotonic() + at_most
        calm_since: float | None = None
        while (now := time.monotonic()) < deadline:
            if self.count:
                calm_since = None
            else:
                calm_since = calm_since if calm_since is not None else now
                if now - calm_since >= for_seconds:
                    return
            await asyncio.sleep(0.02)


async def _screenshot(
    page: Any, width: int, height: int, scale: float = 1.0, *, top: int = 0
) -> bytes:
    """The page from ``top``, ``width`` x ``height`` CSS pixels (times ``scale``), as PNG.

    Chromium's screenshot command directly rather than ``page.screenshot``: with
    ``optimizeForSpeed`` Chromium encodes the PNG with fast zlib settings, about four times
    faster on a page-sized shot (it is decoded and written again with the banner anyway).
    """
    cdp = await page.context.new_cdp_session(page)
    try:
        shot = await cdp.send(
            "Page.captureScreenshot",
            {
                "format": "png",
                "clip": {"x": 0, "y": top, "width": width, "height": height, "scale": scale},
                "captureBeyondViewport": True,
                "optimizeForSpeed": True,
            },
        )
    finally:
        with contextlib.suppress(Exception):
            await cdp.detach()
    return base64.b64decode(shot["data"])


@dataclass(frozen=True, slots=True)
class Shot:
    """What the browser gave: the page's PNG at full scale and, when taken in two passes, the
    page with its images blurred at :data:`BLURRED_PASS_SCALE` and the boxes (CSS pixels,
    ``(left, top, right, bottom)``) to take from it."""

    png: bytes
    blurred_png: bytes | None = None
    boxes: tuple[tuple[int, int, int, int], ...] = ()

    def page(self) -> Image.Image:
        """The page as one picture: the sharp pass with the blurred boxes laid in."""
        with Image.open(io.BytesIO(self.png)) as im:
            page = im.convert("RGB")  # (a copy: the shot is pasted into it)
        if self.blurred_png is None:
            return page
        with Image.open(io.BytesIO(self.blurred_png)) as im:
            blurred = im.convert("RGB")
        sx, sy = blurred.width / page.width, blurred.height / page.height
        for left, top, right, bottom in self.boxes:
            right, bottom = min(right, page.width), min(bottom, page.height)
            if right <= left or bottom <= top:
                continue
            part = blurred.resize(
                (right - left, bottom - top),
                Image.Resampling.BILINEAR,
                box=(left * sx, top * sy, right * sx, bottom * sy),
            )
            page.paste(part, (left, top))
        return page


def _blurred_boxes(
    rects: list[list[float]], width: int, height: int
) -> tuple[tuple[int, int, int, int], ...] | None:
    """The boxes (whole CSS pixels) to take from the blurred pass: each blurred element's,
    grown by :data:`BOX_MARGIN_PX` (rounding, antialiased edges) and clipped to the shot; None
    when one pass is better: no image, or too many boxes to lay in."""
    if not rects or len(rects) > MAX_BLURRED_BOXES:
        return None
    boxes = []
    for x, y, w, h, px in rects:
        grow = min(float(px), BOX_MARGIN_PX)  # (px: the element's blur radius)
        left, top = max(0, math.floor(x - grow)), max(0, math.floor(y - grow))
        right = min(width, math.ceil(x + w + grow))
        bottom = min(height, math.ceil(y + h + grow))
        if right > left and bottom > top:
            boxes.append((left, top, right, bottom))
    return tuple(boxes)


@dataclass(frozen=True, slots=True)
class Picture:
    """What the browser gave for one capture: the shot of each part of the page shown, with
    its ``(top, bottom)`` in CSS pixels from the page's top, and the page's whole height."""

    parts: tuple[tuple[tuple[int, int], Shot], ...]
    page_height: int
    # blurred copies to draw: each image's box (CSS px from the page's top) and its thumbnail
    drawn: tuple[tuple[float, float, float, float, Thumb], ...] = ()

    @property
    def spans(self) -> tuple[tuple[int, int], ...]:
        return tuple(span for span, _ in self.parts)

    @property
    def whole(self) -> bool:
        """Whether the picture is the whole page, in one piece."""
        return self.spans == ((0, self.page_height),)

    def parts_line(self) -> str:
        """The banner's line saying which parts of the page are shown ("" for the whole)."""
        if self.whole:
            return ""
        shown = ", ".join(f"{top:,}-{bottom:,}" for top, bottom in self.spans)
        return (
            f"Parts of the page shown (px from its top): {shown} of {self.page_height:,}; "
            "grey strips mark what is left out (the web archive holds the whole page)"
        )

    def image(self) -> Image.Image:
        """The parts one under the other, with a grey strip wherever the page is left out."""
        pieces: list[Image.Image] = []
        end = 0
        for (top, bottom), shot in self.parts:
            if top > end:
                pieces.append(_gap_strip(pieces, f"{top - end:,} px of the page left out here"))
            piece = shot.page()
            for x, y, w, h, thumb in self.drawn:
                _draw_copy(piece, x, y - top, w, h, thumb)
            pieces.append(piece)
            end = bottom
        if end < self.page_height:
            left = self.page_height - end
            pieces.append(_gap_strip(pieces, f"the page goes on for {left:,} px, left out"))
        if len(pieces) == 1:
            return pieces[0]
        out = Image.new("RGB", (pieces[0].width, sum(p.height for p in pieces)))
        y = 0
        for piece in pieces:
            out.paste(piece, (0, y))
            y += piece.height
        return out


def _draw_copy(piece: Image.Image, x: float, y: float, w: float, h: float, thumb: Thumb) -> None:
    """Draw an image's blurred thumbnail stretched over its box ``(x, y, w, h)`` (CSS px in
    ``piece``), no sharper than the browser's blur of it was: at most one thumbnail pixel per
    blur radius (``max(MIN_BLUR_PX, 8%`` of the box's longer side``)``)."""
    left, upper = math.floor(x), math.floor(y)
    width, height = max(1, math.ceil(w)), max(1, math.ceil(h))
    x0, y0 = max(0, -left), max(0, -upper)  # the part of the box inside the piece
    x1, y1 = min(width, piece.width - left), min(height, piece.height - upper)
    if x1 <= x0 or y1 <= y0:
        return
    radius = max(MIN_BLUR_PX, 0.08 * max(width, height))
    size, rgb = thumb
    tiny = Image.frombytes("RGB", size, rgb)
    across = (
        max(1, min(size[0], math.ceil(width / radius))),
        max(1, min(size[1], math.ceil(height / radius))),
    )
    if across != tiny.size:
        tiny = tiny.resize(across, Image.Resampling.BOX)
    sx, sy = across[0] / width, across[1] / height
    part = tiny.resize(
        (x1 - x0, y1 - y0),
        Image.Resampling.BICUBIC,
        box=(x0 * sx, y0 * sy, x1 * sx, y1 * sy),
    )
    piece.paste(part, (left + x0, upper + y0))


async def _copies(
    drawn: list[list[Any]], thumbs: Thumbs, at_most: float
) -> tuple[tuple[float, float, float, float, Thumb], ...]:
    """The blurred copies to draw: each ``<img>`` box whose image's thumbnail was made (within
    ``at_most`` seconds; one that failed or is late stays the grey box the browser drew)."""
    wanted = [(x, y, w, h, thumbs[src]) for x, y, w, h, src in drawn if src in thumbs]
    if not wanted:
        return ()
    await asyncio.wait({f for *_, f in wanted}, timeout=at_most)
    return tuple(
        (x, y, w, h, f.result())
        for x, y, w, h, f in wanted
        if f.done() and not f.cancelled() and f.exception() is None
    )


def _intrinsic_size(body: bytes) -> tuple[int, int] | None:
    """An image's size as the browser lays it out, from its header alone (Pillow reads the
    header on open and decodes nothing until asked); EXIF orientations that turn it by a
    quarter swap width and height. None when Pillow cannot read the header."""
    try:
        with Image.open(io.BytesIO(body), formats=FORMATS) as im:
            width, height = im.size
            turned = (im.getexif() or {}).get(0x0112) in (5, 6, 7, 8)
    except Exception:
        return None
    return (height, width) if turned else (width, height)


def _placeholder_svg(width: int, height: int) -> bytes:
    """A grey image of this intrinsic size: the page's layout as with the real image, and no
    photo for the browser to decode, scale and blur."""
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}">'
        f'<rect width="100%" height="100%" fill="{PLACEHOLDER_FILL}"/></svg>'
    ).encode()


GAP_HEIGHT = 40  # the grey strip marking a part of the page left out
GAP_BACKGROUND = (96, 96, 96)
GAP_FOREGROUND = (255, 255, 255)
FULL_PAGE_HEIGHT = 3000
"""A page up to this tall (CSS px) is always shot whole; a taller one is shot in parts around
the images a capture is about (``focus``): see :func:`_spans`."""
MAX_FOCUS_PARTS = 4  # parts around focus images, at most (the page's top not counted)


def _gap_strip(pieces: list[Image.Image], text: str) -> Image.Image:
    """A grey strip as wide as the shot, saying what is left out (drawn by us, like the banner:
    nothing of the page)."""
    width = pieces[0].width if pieces else 1280
    strip = Image.new("RGB", (width, GAP_HEIGHT), GAP_BACKGROUND)
    font = _font(BANNER_FONT_SIZE - 2)
    ImageDraw.Draw(strip).text((12, 10), f"[ {text} ]", fill=GAP_FOREGROUND, font=font)
    return strip


def _spans(
    page_height: int, focus_rects: list[list[float]], viewport_height: int, max_height: int
) -> tuple[tuple[int, int], ...]:
    """The parts of the page to shoot, ``(top, bottom)`` in CSS px.

    The whole page (up to ``max_height``) when it is at most :data:`FULL_PAGE_HEIGHT` tall or
    no focus image is on it. Else its top (one viewport: the site, the title) and each focus
    image's box (``[x, y, w, h]``, the first :data:`MAX_FOCUS_PARTS` from the top) with half a
    viewport above and below (a caption, a user name); parts less than half a viewport apart
    are joined, and all of them together are at most ``max_height`` tall. Shooting a tall page
    of camera-size photos whole costs seconds of browser and Pillow work for pixels that are
    not about the case; and an image more than ``max_height`` down the page is now shown too.
    """
    whole = ((0, min(page_height, max_height)),)
    if page_height <= FULL_PAGE_HEIGHT or not focus_rects:
        return whole
    margin = viewport_height // 2
    spans = [(0, min(viewport_height, page_height))]
    for _x, y, _w, h in sorted(focus_rects, key=lambda r: r[1])[:MAX_FOCUS_PARTS]:
        top = max(0, math.floor(y) - margin)
        bottom = min(page_height, math.ceil(y + h) + margin)
        if bottom > top:
            spans.append((top, bottom))
    spans.sort()
    merged: list[tuple[int, int]] = []
    for top, bottom in spans:
        if merged and top <= merged[-1][1] + margin:  # a short gap is shown, not cut out
            merged[-1] = (merged[-1][0], max(merged[-1][1], bottom))
        else:
            merged.append((top, bottom))
    out: list[tuple[int, int]] = []
    room = max_height
    for top, bottom in merged:
        if room <= 0:
            break
        bottom = min(bottom, top + room)
        out.append((top, bottom))
        room -= bottom - top
    if page_height <= max_height and max_height - room >= page_height * 2 // 3:
        return whole  # nearly all of it anyway: the whole page
    return tuple(out)


async def _images_settled(page: Any, at_most: float) -> None:
    """Return once every ``<img>`` has loaded or failed, or after ``at_most`` seconds."""
    deadline = time.monotonic() + at_most
    while await page.evaluate(_IMAGES_PENDING) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)


def _close_popup(page: Any) -> None:
    task = asyncio.ensure_future(page.close())
    task.add_done_callback(lambda t: t.cancelled() or t.exception())


def _decoder_pool() -> Executor:
    """The thumbnails' pool: one worker, forked from the hashing workers' forkserver, whose
    tasks have a deadline (see :func:`monitor.pipeline.hashing_pool`)."""
    from monitor.pipeline import hashing_pool

    return hashing_pool(1, THUMBNAIL_TIMEOUT)


def _allow_any(_ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """The guard proxy's address rule with ``allow_private_networks``: nothing is refused."""
    return False


def _default_port(scheme: str) -> int:
    return 443 if scheme in ("https", "wss") else 80
