"""Find the image URLs a web page shows or points to. Pure: no I/O.

    extract_images(html_bytes, "https://example.org/post/1")
    # -> [ImageCandidate(image_url="https://example.org/og.jpg", page_url=..., source="og:image"), ...]

Looks at ``<img src>``, ``srcset`` (on ``<img>`` and ``<picture><source>``; the largest candidate
is kept), lazy-loading attributes (``data-src``, ``data-srcset``, ...), ``og:image``,
``twitter:image``, ``<link rel=image_src>``, ``<video poster>``, inline ``background-image``
styles, SVG ``<image>``, and links straight to image files (``<a href="full.jpg">``, how
galleries point from a thumbnail to the full-size image). URLs are Videos are candidates too: ``<video src>``, ``<source src>`` inside a
video, and ``og:video`` (``:url``, ``:secure_url``), with a source in :data:`VIDEO_SOURCES`
(the scan fetches and samples those as videos). URLs are resolved against ``<base
href>`` (else the page URL), normalised (fragments removed, non-ASCII percent-encoded as UTF-8)
and deduplicated in document order. Only ``http`` and ``https`` URLs are kept.

Pages are hostile: malformed markup never raises; a page nested deeper than lxml builds trees
(2048 levels, an easy way to hide what follows) is read again with a tokenizer that keeps no
tree; and the work per page is bounded (repeated URLs cost a set lookup, at most
:data:`MAX_DISTINCT_VALUES` distinct URL values are examined, huge ``srcset``s are cut).
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Callable, Iterator
from email.message import Message
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import httpx
import lxml.html
from lxml import etree

from monitor.types import ImageCandidate

__all__ = [
    "VIDEO_SOURCES",
    "charset_from_content_type",
    "extract_images",
    "parse_srcset",
    "pick_from_srcset",
]

# Attributes lazy-loading scripts keep the real image URL in (on <img> and <source>).
LAZY_SRC_ATTRS = (
    "data-src",
    "data-lazy-src",
    "data-lazy",
    "data-original",
    "data-original-src",
    "data-url",
    "data-echo",
    "data-actualsrc",
    "data-hi-res-src",
    "data-full-src",
    "data-large-src",
    "data-large_image",
    "data-zoom-image",
    "data-image",
)
LAZY_SRCSET_ATTRS = ("data-srcset", "data-lazy-srcset", "data-original-srcset")
# Attributes holding a background image, on any element (value is a URL or ``url(...)``).
LAZY_BACKGROUND_ATTRS = ("data-bg", "data-background", "data-background-image", "data-bg-src")

OG_IMAGE_KEYS = frozenset({"og:image", "og:image:url", "og:image:secure_url"})
TWITTER_IMAGE_KEYS = frozenset({"twitter:image", "twitter:image:src"})
OG_VIDEO_KEYS = frozenset({"og:video", "og:video:url", "og:video:secure_url"})
VIDEO_SOURCES = frozenset({"video", "og:video"})
"""Candidate sources that point at a video, not an image."""
AUDIO_EXTENSIONS = (".mp3", ".m4a", ".aac", ".oga", ".ogg", ".opus", ".wav", ".flac")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".jpe", ".png", ".gif", ".webp", ".avif", ".bmp", ".heic")

MAX_DISTINCT_VALUES_PER_IMAGE = 20
MAX_DISTINCT_VALUES = 5000
"""At most ``max(this, MAX_DISTINCT_VALUES_PER_IMAGE * limit)`` distinct raw URL values are
resolved per page: a page of 300,000 different junk URLs would otherwise cost seconds of CPU."""
MAX_SRCSET_CHARS = 20_000
"""A longer ``srcset`` is cut here before it is split (real ones are a few hundred characters)."""

_CSS_BACKGROUND = re.compile(r"background(?:-image)?\s*:([^;]*)", re.IGNORECASE)
_CSS_URL = re.compile(r"""url\(\s*(?:"([^"]*)"|'([^']*)'|([^)'"]*?))\s*\)""", re.IGNORECASE)
_META_CHARSET = re.compile(
    rb"""<meta[^>]*?charset\s*=\s*["']?\s*([A-Za-z0-9_.:\-]+)""", re.IGNORECASE
)
_BOMS = (
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
# Labels browsers read as windows-1252 (WHATWG Encoding Standard).
_ENCODING_ALIASES = {
    "latin1": "cp1252",
    "iso8859_1": "cp1252",
    "ascii": "cp1252",
}


def extract_images(
    html: bytes | str,
    page_url: str,
    *,
    limit: int = 200,
    encoding: str | None = None,
) -> list[ImageCandidate]:
    """Return the image URLs found in ``html``, absolute, deduplicated, in document order.

    ``page_url`` is where the page was fetched from (after redirects); relative URLs resolve
    against ``<base href>`` if the page has one, else against it. ``encoding`` is the charset
    from the HTTP ``Content-Type`` (see :func:`charset_from_content_type`); it wins over a
    ``<meta charset>`` in the page, as in browsers. At most ``limit`` candidates are returned.
    Malformed HTML never raises: whatever can be parsed is used.
    """
    if limit <= 0:
        return []
    data = (
        html.encode("utf-8", errors="replace")
        if isinstance(html, str)
        else _to_utf8(html, encoding)
    )
    if not data.strip():
        return []
    root, too_deep = _parse(data)
    if too_deep or root is None:
        return _tokenize(data, page_url, limit)
    collector = _Collector(page_url, _base_url(root, page_url), limit)
    for el in root.iter(etree.Element):
        tag = str(el.tag).rsplit("}", 1)[-1].lower()
        if tag == "source" and _in_audio(el):
            continue
        for raw, source in _candidates(tag, el.get):
            if collector.add(raw, source):
                return collector.found
    return collector.found


def charset_from_content_type(content_type: str) -> str | None:
    """The ``charset`` of a ``Content-Type`` header, if Python knows it; else ``None``.

    >>> charset_from_content_type('text/html; charset="ISO-8859-1"')
    'iso-8859-1'
    """
    if not content_type:
        return None
    msg = Message()
    msg["content-type"] = content_type
    charset = msg.get_param("charset")
    if not isinstance(charset, str):
        return None
    charset = charset.strip().lower()
    return charset if charset and _codec(charset) else None


def parse_srcset(value: str) -> list[tuple[str, str]]:
    """Split a ``srcset`` into ``(url, descriptors)`` pairs, as the HTML standard does.

    URLs may contain commas (``/c_fill,w_400/a.jpg 400w``); a comma only ends a candidate when
    it follows whitespace-separated descriptors or ends the URL itself.
    """
    out: list[tuple[str, str]] = []
    pos, n = 0, len(value)
    while pos < n:
        while pos < n and (value[pos].isspace() or value[pos] == ","):
            pos += 1
        if pos >= n:
            break
        start = pos
        while pos < n and not value[pos].isspace():
            pos += 1
        url = value[start:pos]
        descriptors = ""
        if url.endswith(","):
            url = url.rstrip(",")
        else:
            d_start, depth = pos, 0
            while pos < n:
                ch = value[pos]
                if ch == "(":
                    depth += 1
                elif ch == ")":
                    depth = max(0, depth - 1)
                elif ch == "," and depth == 0:
                    break
                pos += 1
            descriptors = value[d_start:pos].strip()
            pos += 1
        if url:
            out.append((url, descriptors))
    return out


def pick_from_srcset(value: str) -> str | None:
    """The largest candidate of a ``srcset``: by width (``800w``), else by density (``2x``; no
    descriptor means ``1x``), else the last one. ``None`` when the srcset has no candidate."""
    candidates = parse_srcset(value)
    if not candidates:
        return None
    widths: list[tuple[float, str]] = []
    densities: list[tuple[float, str]] = []
    for url, descriptors in candidates:
        density: float | None = None
        for token in descriptors.split():
            number = _number(token[:-1])
            unit = token[-1:].lower()
            if number is not None and unit == "w":
                widths.append((number, url))
            elif number is not None and unit == "x":
                density = number
        densities.append((1.0 if density is None else density, url))
    if widths:
        return max(widths, key=lambda p: p[0])[1]
    if any(d != 1.0 for d, _ in densities):
        return max(densities, key=lambda p: p[0])[1]
    return candidates[-1][0]


# --- internals ------------------------------------------------------------------------------


class _Collector:
    """Resolves, filters and deduplicates URLs; knows when ``limit`` is reached."""

    def __init__(self, page_url: str, base_url: str, limit: int) -> None:
        self.page_url = page_url
        self.base_url = base_url
        self.limit = limit
        self.found: list[ImageCandidate] = []
        self._seen: set[str] = set()
        self._raw_seen: set[str] = set()
        self._budget = max(MAX_DISTINCT_VALUES, MAX_DISTINCT_VALUES_PER_IMAGE * limit)

    def add(self, raw: str | None, source: str) -> bool:
        """Add one URL if it is usable and new; return True once ``limit`` is reached (or the
        page has used up its budget of distinct values)."""
        if raw is None or raw in self._raw_seen:
            return False
        self._raw_seen.add(raw)
        if len(self._raw_seen) > self._budget:
            return True
        url = _absolute(raw, self.base_url)
        if url is not None and url not in self._seen:
            self._seen.add(url)
            self.found.append(ImageCandidate(image_url=url, page_url=self.page_url, source=source))
        return len(self.found) >= self.limit


class _StopTokenizing(Exception):
    pass


class _Tokenizer(HTMLParser):
    """The fallback for pages too deep for lxml: start tags in order, no tree kept."""

    def __init__(self, page_url: str, limit: int) -> None:
        super().__init__(convert_charrefs=True)
        self.page_url = page_url
        self.collector = _Collector(page_url, page_url, limit)
        self._base_seen = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v for k, v in attrs if v is not None}
        if tag == "base" and not self._base_seen:
            self._base_seen = True
            href = values.get("href", "").strip()
            resolved = urljoin(self.page_url, href) if href else ""
            if urlsplit(resolved).scheme in ("http", "https"):
                self.collector.base_url = resolved
        for raw, source in _candidates(tag, values.get):
            if self.collector.add(raw, source):
                raise _StopTokenizing

    handle_startendtag = handle_starttag


def _tokenize(data: bytes, page_url: str, limit: int) -> list[ImageCandidate]:
    tokenizer = _Tokenizer(page_url, limit)
    text = data.decode("utf-8", errors="replace")
    try:
        for i in range(0, len(text), 65536):
            tokenizer.feed(text[i : i + 65536])
        tokenizer.close()
    except _StopTokenizing:
        pass
    except Exception:  # the stdlib tokenizer is lenient; whatever it found still counts
        pass
    return tokenizer.collector.found


def _candidates(tag: str, get: Callable[[str], str | None]) -> Iterator[tuple[str | None, str]]:
    """``(raw URL, source)`` pairs one element (its lowercase tag name and attribute getter)
    contributes, most useful first."""
    if tag in ("img", "source"):
        yield _srcset_pick(get("srcset")), "srcset"
        if tag == "img":
            yield get("src"), "img"
        elif _video_source(get):
            yield get("src"), "video"
        for attr in LAZY_SRCSET_ATTRS:
            yield _srcset_pick(get(attr)), "lazy"
        for attr in LAZY_SRC_ATTRS:
            yield get(attr), "lazy"
    elif tag == "meta":
        key = (get("property") or get("name") or "").strip().lower()
        if key in OG_IMAGE_KEYS:
            yield get("content"), "og:image"
        elif key in TWITTER_IMAGE_KEYS:
            yield get("content"), "twitter:image"
        elif key in OG_VIDEO_KEYS:
            yield get("content"), "og:video"
    elif tag == "link":
        if "image_src" in (get("rel") or "").lower().split():
            yield get("href"), "image_src"
    elif tag == "video":
        yield get("poster"), "poster"
        yield get("src"), "video"
    elif tag == "image":  # SVG
        yield get("href") or get("xlink:href"), "img"
    elif tag == "a":
        href = get("href")
        if href and urlsplit(href.strip()).path.lower().endswith(IMAGE_EXTENSIONS):
            yield href, "link"
    style = get("style")
    if style and "background" in style.lower():
        for decl in _CSS_BACKGROUND.findall(style):
            for m in _CSS_URL.finditer(decl):
                yield m.group(1) or m.group(2) or m.group(3), "background"
    for attr in LAZY_BACKGROUND_ATTRS:
        value = get(attr)
        if value:
            m = _CSS_URL.search(value)
            yield (m.group(1) or m.group(2) or m.group(3)) if m else value, "background"


def _video_source(get: Callable[[str], str | None]) -> bool:
    """Whether a ``<source>`` points at a video: it has a ``src`` (``<picture>`` sources use
    ``srcset``) that is not audio."""
    src = get("src")
    if not src:
        return False
    kind = (get("type") or "").strip().lower()
    if kind.startswith("audio/"):
        return False
    return not urlsplit(src.strip()).path.lower().endswith(AUDIO_EXTENSIONS)


def _in_audio(el: etree._Element) -> bool:
    parent = el.getparent()
    return parent is not None and str(parent.tag).rsplit("}", 1)[-1].lower() == "audio"


def _srcset_pick(value: str | None) -> str | None:
    return pick_from_srcset(value[:MAX_SRCSET_CHARS]) if value else None


def _absolute(raw: str | None, base_url: str) -> str | None:
    """An absolute, normalised http(s) URL without fragment, or None if unusable."""
    if raw is None:
        return None
    raw = raw.strip()
    if not raw or raw.startswith("#"):
        return None
    try:
        joined = urljoin(base_url, raw)
        url = httpx.URL(joined).copy_with(fragment=None)
    except (ValueError, httpx.InvalidURL):
        return None
    if url.scheme not in ("http", "https") or not url.host:
        return None
    return str(url)


def _base_url(root: etree._Element, page_url: str) -> str:
    for base in root.iter("base"):
        href = (base.get("href") or "").strip()
        if href:
            resolved = urljoin(page_url, href)
            if urlsplit(resolved).scheme in ("http", "https"):
                return resolved
        break  # only the first <base> counts
    return page_url


def _parse(data: bytes) -> tuple[etree._Element | None, bool]:
    """The parsed document (None if lxml made nothing of it), and whether it was too deep for
    lxml to build the whole tree (what follows the cut would be lost)."""
    parser = lxml.html.HTMLParser(encoding="utf-8", remove_comments=True, huge_tree=True)
    try:
        root = lxml.html.document_fromstring(data, parser=parser)
    except (etree.LxmlError, ValueError):
        return None, False
    too_deep = any(e.type_name == "ERR_RESOURCE_LIMIT" for e in parser.error_log)
    return root, too_deep


def _to_utf8(data: bytes, encoding: str | None) -> bytes:
    """Decode page bytes the way a browser picks the encoding, and re-encode as UTF-8.

    Order: byte-order mark, the HTTP charset, a ``<meta charset>`` near the top, UTF-8 if the
    bytes are valid UTF-8, else windows-1252.
    """
    for bom, name in _BOMS:
        if data.startswith(bom):
            return data[len(bom) :].decode(name, errors="replace").encode("utf-8")
    codec = _codec(encoding) if encoding else None
    if codec is None:
        m = _META_CHARSET.search(data[:4096])
        codec = _codec(m.group(1).decode("ascii"), in_page=True) if m else None
    if codec is None:
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            codec = "cp1252"
        else:
            return data
    if codec == "utf-8":
        return data.decode("utf-8", errors="replace").encode("utf-8")
    return data.decode(codec, errors="replace").encode("utf-8", errors="replace")


def _codec(label: str, *, in_page: bool = False) -> str | None:
    """Python's codec name for an encoding label, with browsers' aliases; None if unknown.

    A page cannot declare itself UTF-16 in a ``<meta>`` (it could not be read to find the
    tag); browsers read that as UTF-8.
    """
    try:
        name = codecs.lookup(label).name.replace("-", "_")
    except (LookupError, ValueError):
        return None
    if in_page and name.startswith("utf_16"):
        return "utf-8"
    name = _ENCODING_ALIASES.get(name, name)
    return "utf-8" if name == "utf_8" else name


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if value > 0 and value == value and value != float("inf") else None
