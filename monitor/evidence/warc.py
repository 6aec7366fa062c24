"""WARC evidence of a page and of an image on it, without keeping the image.

Police advice is to capture what is online with its address, date and time, before asking for
removal. A WARC file (ISO 28500, the web archive format) does that: every HTTP request and
response is a record with its URL, the time (``WARC-Date``, UTC), the server's address and a
SHA-256 digest of what the record holds. Anyone can open it with standard tools (``warcio``,
``pywb``, ReplayWeb.page).

The image is the one thing we must not keep (it may be intimate, and may show a minor). So for
an image the WARC holds:

* a ``request`` record, as for the page;
* a ``response`` record with the status line and every response header **as served**, and an
  empty payload, marked ``WARC-Truncated: unspecified`` and
  ``Exposure-Monitor-Withheld: image payload withheld ...`` with its SHA-256. A truncated
  response is the WARC standard's own way to say "the payload is not all here": the status,
  headers, URL, time and server address of the exchange stay exactly where every WARC tool
  looks for them. (A ``revisit`` record was not used: it claims an identical payload is stored
  in some other record, and here it is stored nowhere.)
* a ``metadata`` record (``WARC-Concurrent-To`` the response, ``application/json``) with what
  identifies the image without its pixels: its SHA-256, length, width, height, PDQ (with
  quality) and pHash. The SHA-256 proves which exact file was served (anyone who later holds the
  file, e.g. the police or the site, can check it); PDQ and pHash show it is the same picture as
  the person's reference, and are what hash-sharing programmes (StopNCII, NCMEC) use.

A video or an animated image is treated the same way, never kept: its response record has no
payload, and its metadata record holds its SHA-256, size and content type and, for every frame
sampled (as a scan samples them, :mod:`monitor.video`), the time offset and hashes, marking the
frame the case matched. The bytes are decoded in memory only; neither they nor any frame are
written anywhere. A video larger than ``max_video_bytes`` is read up to that cap and its start
is what is hashed (the record says so).

The page's body is kept as the application received it: HTTP transfer and content encodings
undone. Headers that described the encoded form on the wire (``Transfer-Encoding``,
``Content-Encoding``, and ``Content-Length`` when it no longer matches) are kept under the
usual ``X-Archive-Orig-`` prefix, so the record is self-consistent and nothing is lost. The
fetcher asks for ``Accept-Encoding: identity`` so most servers send the body unencoded anyway.

:func:`capture_warc` writes what a caller fetched (pure, synchronous);
:func:`fetch_and_capture_warc` fetches a page and an image through
:class:`monitor.fetch.Fetcher` (address guard, robots.txt, size caps) and writes the WARC,
hashing the image in memory and never writing its bytes anywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import hashlib
import io
import json
import re
import socket
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from pathlib import Path
from typing import IO, Any, Self
from urllib.parse import urlsplit

import httpx
import warcio
from warcio.statusandheaders import StatusAndHeaders
from warcio.utils import Digester
from warcio.warcwriter import WARCWriter

import monitor
from monitor.config import FetchConfig
from monitor.errors import FetchError, NotAnImageError
from monitor.evidence.errors import EvidenceError
from monitor.evidence.store import write_new_file
from monitor.extract import VIDEO_SOURCES, extract_images
from monitor.fetch import (
    ACCEPT_ROBOTS,
    VIDEO_APPLICATION_TYPES,
    AddressPredicate,
    Fetcher,
    PartialResource,
    Resolver,
)
from monitor.types import FetchedResource, ImageHashes
from monitor.video import VIDEO_EXTENSIONS, FrameHashes, hash_media, is_video, may_have_frames

__all__ = [
    "WITHHELD_MEDIA_REASON",
    "WITHHELD_REASON",
    "HttpExchange",
    "ImageBytesHook",
    "WarcCapture",
    "WarcInfo",
    "WithheldImage",
    "capture_warc",
    "fetch_and_capture_warc",
    "looks_like_media",
    "redact_inline_media",
]

Headers = tuple[tuple[str, str], ...]

ImageBytesHook = Callable[[bytes, "WithheldImage"], None]
"""Called (in a worker thread) with the fetched image's bytes and its hashes, before the bytes
are dropped: the one way to keep them, for a person who opted in (see
:mod:`monitor.cases.image_copies`). It must not write the bytes anywhere in plain form."""

WITHHELD_REASON = (
    "image payload withheld: the image may be intimate or show a minor, so it is never kept; "
    "the metadata record holds its SHA-256, PDQ and pHash"
)
WITHHELD_MEDIA_REASON = (
    "{kind} payload withheld: it may be intimate or show a minor, so neither it nor any frame "
    "of it is kept; the metadata record holds its SHA-256, size, content type and the PDQ and "
    "pHash of each sampled frame with its time offset"
)
WITHHELD_HEADER = "Exposure-Monitor-Withheld"
REDACTED_HEADER = "Exposure-Monitor-Redacted"
ORIG_PREFIX = "X-Archive-Orig-"

# Magic numbers of image and video formats: a body starting with one is never written.
_MAGIC = (
    b"\xff\xd8\xff",  # JPEG
    b"\x89PNG\r\n\x1a\n",
    b"GIF87a",
    b"GIF89a",
    b"BM",  # BMP
    b"II*\x00",  # TIFF
    b"MM\x00*",
    b"\x00\x00\x01\x00",  # ICO
    b"\xff\x0a",  # JPEG XL codestream
    b"\x00\x00\x00\x0cJXL ",
    b"\x1a\x45\xdf\xa3",  # Matroska / WebM
)


def looks_like_media(body: bytes) -> bool:
    if body.startswith(_MAGIC):
        return True
    if body[:4] == b"RIFF" and body[8:12] in (b"WEBP", b"AVI "):
        return True
    return body[4:8] == b"ftyp"  # HEIC, AVIF, MP4, MOV


_INLINE_MEDIA = re.compile(
    rb"data:(?:image|video)/[A-Za-z0-9.+-]+(?:;[A-Za-z0-9=.+_-]+)*;base64,[A-Za-z0-9+/=\s%]{200,}",
    re.IGNORECASE,
)


def redact_inline_media(body: bytes) -> tuple[bytes, list[dict[str, Any]]]:
    """Replace base64 ``data:image/...`` and ``data:video/...`` URIs (200+ characters) in a page
    by ``data:,withheld-sha256-<hex>``; return the new body and what was replaced."""
    found: list[dict[str, Any]] = []

    def replace(m: re.Match[bytes]) -> bytes:
        digest = hashlib.sha256(m.group(0)).hexdigest()
        found.append({"sha256_of_data_uri": digest, "length": len(m.group(0))})
        return b"data:,withheld-sha256-" + digest.encode()

    return _INLINE_MEDIA.sub(replace, body), found


def _media_type(headers: Iterable[tuple[str, str]]) -> str:
    for name, value in headers:
        if name.lower() == "content-type":
            return value.split(";", 1)[0].strip().lower()
    return ""


def _as_headers(headers: Mapping[str, str] | Iterable[tuple[str, str]]) -> Headers:
    items = headers.items() if isinstance(headers, Mapping) else headers
    return tuple((str(k), str(v)) for k, v in items)


def _utc(when: datetime) -> datetime:
    if when.tzinfo is None:
        raise EvidenceError("capture times must be timezone-aware (UTC)")
    return when.astimezone(UTC)


def _warc_date(when: datetime) -> str:
    return _utc(when).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# --- what the caller passes ------------------------------------------------------------------


def _hashes_json(hashes: ImageHashes) -> dict[str, Any]:
    return {
        h.algorithm: {"value": h.value, "bits": h.bits}
        | ({"quality": h.quality} if h.quality is not None else {})
        for h in hashes.hashes
    }


@dataclass(frozen=True, slots=True)
class WithheldImage:
    """Stands in for an image's (or a video's) bytes in the evidence: what identifies it,
    never its pixels.

    ``hashes`` is None when the bytes could not be decoded as an image or a video (``note``
    says why); the SHA-256 and length still identify the file. For a video or an animated
    image (``kind``), ``hashes`` are those of its first sampled frame and ``frames`` hold every
    sampled frame's time offset and hashes; ``matched_offset`` is the time of the frame the
    case matched, when known. ``complete`` is False when only the start of the file was read
    (a video over ``max_video_bytes``): the SHA-256, length and frames are of that start.
    """

    sha256: str
    length: int
    hashes: ImageHashes | None = None
    note: str = ""
    content_type: str = ""
    kind: str = "image"  # "image", "animation" or "video"
    frames: tuple[FrameHashes, ...] = ()
    matched_offset: float | None = None
    complete: bool = True

    @classmethod
    def from_bytes(
        cls,
        data: bytes,
        *,
        content_type: str = "",
        matched_offset: float | None = None,
        complete: bool = True,
    ) -> Self:
        """Hash image, animation or video bytes in memory (SHA-256, PDQ, pHash; every sampled
        frame of a video or an animation). The caller then drops the bytes."""
        sha256 = hashlib.sha256(data).hexdigest()
        media_type = content_type.split(";", 1)[0].strip().lower()
        video = is_video(data)
        note = ""
        if not complete:
            note = f"only the first {len(data)} bytes were read: the hashes are of those bytes"
        try:
            media = hash_media(data)
        except NotAnImageError as exc:
            note = "; ".join(filter(None, [str(exc), note]))
            kind = "video" if video else "image"
            return cls(
                sha256, len(data), None, note, media_type, kind, (), matched_offset, complete
            )
        kind = "video" if video else "animation" if media.frames else "image"
        return cls(
            sha256,
            len(data),
            media.still,
            note,
            media_type,
            kind,
            media.frames,
            matched_offset,
            complete,
        )

    @classmethod
    def from_known(
        cls,
        data: bytes,
        known: ImageHashes,
        *,
        content_type: str = "",
        matched_offset: float | None = None,
    ) -> Self | None:
        """The scan's stored hashes ``known`` for these bytes, when they are the same bytes (same
        SHA-256) and a still image (no frames possible): nothing is decoded. ``None`` otherwise
        (then :meth:`from_bytes` hashes them)."""
        if may_have_frames(data) or hashlib.sha256(data).hexdigest() != known.sha256:
            return None
        media_type = content_type.split(";", 1)[0].strip().lower()
        return cls(known.sha256, len(data), known, "", media_type, "image", (), matched_offset)

    @property
    def reason(self) -> str:
        """Why the payload is withheld (the record's ``Exposure-Monitor-Withheld`` header)."""
        if self.kind == "image":
            return WITHHELD_REASON
        return WITHHELD_MEDIA_REASON.format(kind=self.kind)

    def as_json(self) -> dict[str, Any]:
        """The metadata record's body (without the URL, which the caller adds)."""
        out: dict[str, Any] = {
            "withheld": True,
            "reason": self.reason,
            "sha256": self.sha256,
            "length": self.length,
        }
        if self.content_type:
            out["content_type"] = self.content_type
        if self.kind != "image":
            out["kind"] = self.kind
        if not self.complete:
            out["complete"] = False
        if self.hashes is not None:
            out["width"] = self.hashes.width
            out["height"] = self.hashes.height
            out["hashes"] = _hashes_json(self.hashes)
        if self.frames:
            out["frames"] = [
                {
                    "offset": f.offset,
                    "width": f.hashes.width,
                    "height": f.hashes.height,
                    "hashes": _hashes_json(f.hashes),
                }
                | ({"matched": True} if self._matched(f.offset) else {})
                for f in self.frames
            ]
        if self.matched_offset is not None and self.kind != "image":
            out["matched_offset"] = self.matched_offset
        if self.note:
            out["note"] = self.note
        return out

    def _matched(self, offset: float) -> bool:
        return self.matched_offset is not None and abs(offset - self.matched_offset) < 0.002


@dataclass(frozen=True, slots=True)
class HttpExchange:
    """One HTTP request and its response, as fetched.

    ``body`` is the response body as the application received it (encodings undone). For an
    image, leave ``body`` empty and pass ``withheld``: an image or video body is refused.
    ``truncated`` marks a body that was not read in full (a redirect's, an error page's).
    Headers are ``(name, value)`` pairs (a mapping is accepted too), in the order received.
    ``fetched_at`` is when the response arrived (timezone-aware; stored in UTC).
    """

    url: str
    status: int
    response_headers: Headers
    body: bytes = b""
    withheld: WithheldImage | None = None
    request_headers: Headers = ()
    method: str = "GET"
    http_version: str = "HTTP/1.1"
    reason: str = ""
    fetched_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    ip_address: str | None = None
    truncated: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "response_headers", _as_headers(self.response_headers))
        object.__setattr__(self, "request_headers", _as_headers(self.request_headers))
        object.__setattr__(self, "fetched_at", _utc(self.fetched_at))
        if self.withheld is not None and self.body:
            raise EvidenceError(
                f"{self.url}: an image's bytes are never kept; pass only its hashes (withheld)"
            )

    @property
    def media_type(self) -> str:
        return _media_type(self.response_headers)


@dataclass(frozen=True, slots=True)
class WarcInfo:
    """A WARC file written: where, its SHA-256 and size, how many records, when."""

    path: Path
    sha256: str
    size: int
    records: int
    created_at: datetime


@dataclass(frozen=True, slots=True)
class WarcCapture:
    """What :func:`fetch_and_capture_warc` fetched and wrote.

    ``page`` and ``image`` are the final exchanges (after redirects); ``image`` is None when the
    image could not be fetched (``image_error`` says why; the page is captured all the same).
    ``image_on_page`` tells whether the page's HTML references the image URL.
    """

    warc: WarcInfo
    page: HttpExchange
    image: HttpExchange | None
    image_hashes: ImageHashes | None
    image_error: str | None
    image_on_page: bool | None

    @property
    def page_url(self) -> str:
        return self.page.url

    @property
    def image_sha256(self) -> str | None:
        return self.image.withheld.sha256 if self.image and self.image.withheld else None


# --- writing ---------------------------------------------------------------------------------


class _Sha256WARCWriter(WARCWriter):
    """warcio's writer with SHA-256 block and payload digests instead of SHA-1."""

    @staticmethod
    def _create_digester() -> Digester:
        return Digester("sha256")


def _check_no_media(ex: HttpExchange) -> None:
    if ex.withheld is not None or not ex.body:
        return
    media = ex.media_type
    if media.startswith(("image/", "video/")) or looks_like_media(ex.body):
        raise EvidenceError(
            f"{ex.url}: refusing to write an image or video body ({media or 'sniffed'}) into "
            "evidence; pass it as a WithheldImage (hashes only)"
        )


def _response_headers_for_record(ex: HttpExchange, stored: int) -> list[tuple[str, str]]:
    """Headers as served; with a full body (``stored`` bytes), wire-encoding headers and a
    Content-Length that no longer matches are renamed with :data:`ORIG_PREFIX`."""
    if ex.withheld is not None or ex.truncated:
        return list(ex.response_headers)
    out: list[tuple[str, str]] = []
    for name, value in ex.response_headers:
        low = name.lower()
        if (
            low in ("transfer-encoding", "content-encoding")
            or low == "content-length"
            and value.strip() != str(stored)
        ):
            out.append((ORIG_PREFIX + name, value))
        else:
            out.append((name, value))
    return out


def _request_target(url: str) -> str:
    parts = urlsplit(url)
    return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


def _request_headers_for_record(ex: HttpExchange) -> list[tuple[str, str]]:
    headers = list(ex.request_headers)
    if not any(k.lower() == "host" for k, _ in headers):
        headers.insert(0, ("Host", urlsplit(ex.url).netloc))
    return headers


def _write_exchange(writer: WARCWriter, ex: HttpExchange) -> int:
    """Write one exchange; return the number of records written."""
    _check_no_media(ex)
    date = _warc_date(ex.fetched_at)
    reason = ex.reason or _phrase(ex.status)
    warc_headers = {"WARC-Date": date}
    if ex.ip_address:
        warc_headers["WARC-IP-Address"] = ex.ip_address
    body, redacted = redact_inline_media(ex.body) if ex.body else (ex.body, [])
    if ex.withheld is not None:
        warc_headers["WARC-Truncated"] = "unspecified"
        warc_headers[WITHHELD_HEADER] = f"{ex.withheld.reason}; sha256={ex.withheld.sha256}"
    elif ex.truncated:
        warc_headers["WARC-Truncated"] = "unspecified"
    if redacted:
        warc_headers[REDACTED_HEADER] = (
            f"{len(redacted)} inline image(s) (data: URIs) replaced by their SHA-256; "
            f"the body as served had SHA-256 {hashlib.sha256(ex.body).hexdigest()}"
        )
    http_headers = StatusAndHeaders(
        f"{ex.status} {reason}".strip(),
        _response_headers_for_record(ex, len(body)),
        protocol=ex.http_version or "HTTP/1.1",
    )
    response = writer.create_warc_record(
        ex.url,
        "response",
        payload=io.BytesIO(body),
        length=len(body),
        http_headers=http_headers,
        warc_headers_dict=warc_headers,
    )
    request = writer.create_warc_record(
        ex.url,
        "request",
        payload=io.BytesIO(b""),
        length=0,
        http_headers=StatusAndHeaders(
            f"{ex.method} {_request_target(ex.url)} {ex.http_version or 'HTTP/1.1'}",
            _request_headers_for_record(ex),
            is_http_request=True,
        ),
        warc_headers_dict={"WARC-Date": date},
    )
    writer.write_request_response_pair(request, response)
    if ex.withheld is None:
        return 2
    body = json.dumps({"url": ex.url, **ex.withheld.as_json()}, indent=2).encode()
    metadata = writer.create_warc_record(
        ex.url,
        "metadata",
        payload=io.BytesIO(body),
        length=len(body),
        warc_content_type="application/json",
        warc_headers_dict={
            "WARC-Date": date,
            "WARC-Concurrent-To": response.rec_headers.get_header("WARC-Record-ID"),
        },
    )
    writer.write_record(metadata)
    return 3


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def capture_warc(
    exchanges: Sequence[HttpExchange],
    out_path: Path | str,
    *,
    description: str = "",
    info: Mapping[str, str] | None = None,
) -> WarcInfo:
    """Write ``exchanges`` (in order: redirect hops, the page, the image...) as a gzipped WARC.

    ``out_path`` (conventionally ``*.warc.gz``) is created owner-only and must not exist.
    ``description`` and ``info`` go into the ``warcinfo`` record. Raises
    :class:`EvidenceError` for an image or video body that is not withheld, or if the file
    exists.
    """
    if not exchanges:
        raise EvidenceError("nothing to capture: no HTTP exchanges were given")
    for ex in exchanges:
        _check_no_media(ex)
    created_at = datetime.now(UTC)
    count = 0

    def write(fh: IO[bytes]) -> None:
        nonlocal count
        writer = _Sha256WARCWriter(fh, gzip=True, warc_version="1.1")
        fields: dict[str, str] = {
            "software": f"exposure-monitor/{monitor.__version__} (warcio {warcio_version()})",
            "format": "WARC File Format 1.1",
            "conformsTo": "https://iipc.github.io/warc-specifications/specifications/"
            "warc-format/warc-1.1/",
            "hostname": socket.gethostname(),
            "description": description
            or "Evidence capture of a page and an image published without consent.",
            "image-payloads": WITHHELD_REASON,
            **dict(info or {}),
        }
        record = writer.create_warcinfo_record(Path(out_path).name, fields)
        record.rec_headers.replace_header("WARC-Date", _warc_date(created_at))
        writer.write_record(record)
        count = 1
        for ex in exchanges:
            count += _write_exchange(writer, ex)

    path = write_new_file(Path(out_path), write)
    data = path.read_bytes()
    return WarcInfo(
        path=path,
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
        records=count,
        created_at=created_at,
    )


def warcio_version() -> str:
    try:
        from importlib.metadata import version

        return version("warcio")
    except Exception:  # pragma: no cover - metadata missing
        return getattr(warcio, "__version__", "unknown")


# --- fetching --------------------------------------------------------------------------------


@dataclass(slots=True)
class _Hop:
    url: str
    method: str
    request_headers: Headers
    status: int
    reason: str
    http_version: str
    response_headers: Headers
    at: datetime
    ip_address: str | None

    def exchange(
        self, *, body: bytes = b"", withheld: WithheldImage | None = None, truncated: bool = False
    ) -> HttpExchange:
        return HttpExchange(
            url=self.url,
            status=self.status,
            response_headers=self.response_headers,
            body=body,
            withheld=withheld,
            request_headers=self.request_headers,
            method=self.method,
            http_version=self.http_version,
            reason=self.reason,
            fetched_at=self.at,
            ip_address=self.ip_address,
            truncated=truncated,
        )


def _raw_headers(headers: httpx.Headers) -> Headers:
    return tuple((k.decode("latin-1"), v.decode("latin-1")) for k, v in headers.raw)


def _peer_ip(response: httpx.Response) -> str | None:
    stream = response.extensions.get("network_stream")
    if stream is None:
        return None
    try:
        addr = stream.get_extra_info("server_addr")
    except Exception:  # best effort: not every backend tells
        return None
    return str(addr[0]) if addr else None


class _RecordingFetcher(Fetcher):
    """A :class:`Fetcher` that also notes every exchange's request and response headers.

    It asks for ``Accept-Encoding: identity`` so bodies are, for most servers, byte for byte
    what was sent. robots.txt exchanges are not noted.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.hops: list[_Hop] = []

    async def __aenter__(self) -> Self:
        await super().__aenter__()
        client = self._client
        assert client is not None
        hooks = client.event_hooks
        client.event_hooks = {
            "request": [*hooks.get("request", []), self._on_request],
            "response": [*hooks.get("response", []), self._on_response],
        }
        return self

    async def _on_request(self, request: httpx.Request) -> None:
        request.headers["Accept-Encoding"] = "identity"

    async def _on_response(self, response: httpx.Response) -> None:
        if (hop := _hop_of(response)) is not None:
            self.hops.append(hop)

    def take_hops(self) -> list[_Hop]:
        hops, self.hops = self.hops, []
        return hops


def _hop_of(response: httpx.Response) -> _Hop | None:
    """The exchange of a response as received (None for robots.txt)."""
    request = response.request
    if request.headers.get("accept") == ACCEPT_ROBOTS:
        return None
    return _Hop(
        url=str(request.url),
        method=request.method,
        request_headers=_raw_headers(request.headers),
        status=response.status_code,
        reason=response.reason_phrase,
        http_version=response.http_version,
        response_headers=_raw_headers(response.headers),
        at=datetime.now(UTC),
        ip_address=_peer_ip(response),
    )


_PAGE_HOPS: contextvars.ContextVar[list[_Hop] | None] = contextvars.ContextVar(
    "monitor_page_hops", default=None
)


class PageRecorder:
    """Notes the exchanges (request and response headers, redirect hops, server address) of
    pages a running :class:`Fetcher` fetches, so a page a scan already received can be
    archived as it was received instead of being fetched again.

    ``PageRecorder(fetcher)`` once the fetcher is entered; then, in the task fetching a page::

        with recorder.recording() as hops:
            res = await fetcher.fetch_page(url)
        exchanges = PageRecorder.exchanges(hops, res)   # for fetch_and_capture_warc(page_exchanges=)

    Only headers are noted; the body is the caller's (the page's HTML, never an image).
    """

    def __init__(self, fetcher: Fetcher) -> None:
        client = fetcher._client
        if client is None:
            raise RuntimeError("PageRecorder needs an entered Fetcher")
        hooks = client.event_hooks
        client.event_hooks = {**hooks, "response": [*hooks.get("response", []), self._note]}

    @staticmethod
    async def _note(response: httpx.Response) -> None:
        hops = _PAGE_HOPS.get()
        if hops is not None and (hop := _hop_of(response)) is not None:
            hops.append(hop)

    @contextlib.contextmanager
    def recording(self) -> Iterator[list[_Hop]]:
        """Note the exchanges of the fetches this task makes inside the block."""
        hops: list[_Hop] = []
        token = _PAGE_HOPS.set(hops)
        try:
            yield hops
        finally:
            _PAGE_HOPS.reset(token)

    @staticmethod
    def exchanges(hops: list[_Hop], page: FetchedResource) -> tuple[HttpExchange, ...] | None:
        """The page's exchanges for a WARC (redirects, then the page with its body), or None
        when they cannot stand for it (a 304, a body cut at the cap, a hop not noted)."""
        if (
            page.status != 200
            or isinstance(page, PartialResource)
            or not hops
            or hops[-1].status != page.status
            or hops[-1].url != page.final_url
        ):
            return None
        return (
            *(hop.exchange(truncated=True) for hop in hops[:-1]),
            hops[-1].exchange(body=page.body),
        )


async def fetch_and_capture_warc(
    config: FetchConfig,
    page_url: str,
    image_url: str | None,
    out_path: Path | str,
    *,
    resolver: Resolver | None = None,
    is_blocked: AddressPredicate | None = None,
    description: str = "",
    on_image_bytes: ImageBytesHook | None = None,
    matched_offset: float | None = None,
    page_exchanges: Sequence[HttpExchange] | None = None,
    known_hashes: ImageHashes | None = None,
) -> WarcCapture:
    """Fetch ``page_url`` and ``image_url`` and write both exchanges (and redirects) as a WARC.

    Fetching goes through :class:`monitor.fetch.Fetcher` with ``config``: private addresses are
    refused unless ``config.allow_private_networks``, robots.txt is obeyed if
    ``config.respect_robots``, bodies are capped. The image is hashed in memory (SHA-256, PDQ,
    pHash) and only its hashes and headers are written. Raises :class:`EvidenceError` if the
    page cannot be fetched; an image that cannot be fetched is reported in ``image_error``
    (whatever response came back is still recorded).

    ``image_url`` may be a video or an animation (fetched as a video when the page links it as
    one, its name ends like a video, or it answers with a video type): every sampled frame is
    hashed in memory, and the metadata record lists them; ``matched_offset`` (seconds) marks
    the frame the case matched.

    ``on_image_bytes``, when given, is called with the image's bytes (held in memory only) and
    its hashes, so an opted-in encrypted copy needs no second download; an exception it raises
    propagates and no WARC is written. Never for a video: no copy of one is kept.

    ``page_exchanges`` (see :class:`PageRecorder`): the page as a scan already received it
    (redirect hops, then the page with its body); it is archived as it is, not fetched again.

    ``known_hashes``: the scan's stored hashes of the matched image. When the image fetched
    has the same SHA-256 (and is a still image), they are recorded as they are and the bytes
    are not decoded again (:meth:`WithheldImage.from_known`); otherwise it is hashed whole.
    """
    exchanges: list[HttpExchange] = list(page_exchanges or ())
    image: HttpExchange | None = None
    image_error: str | None = None
    async with _RecordingFetcher(config, resolver=resolver, is_blocked=is_blocked) as fetcher:
        if exchanges:
            page_exchange = exchanges[-1]
        else:
            await fetcher.can_fetch(page_url)  # load robots.txt first: its exchange is not noted
            fetcher.take_hops()
            try:
                page = await fetcher.fetch_page(page_url)
            except FetchError as exc:
                raise EvidenceError(f"could not capture the page {page_url}: {exc.reason}") from exc
            hops = fetcher.take_hops()
            if not hops or hops[-1].status != page.status:
                raise EvidenceError(f"could not capture the page {page_url}: exchange not recorded")
            exchanges += [hop.exchange(truncated=True) for hop in hops[:-1]]
            page_exchange = hops[-1].exchange(body=page.body)
            exchanges.append(page_exchange)
            del page

        image_on_page: bool | None = None
        if image_url:
            found = extract_images(page_exchange.body, page_exchange.url, limit=10_000)
            on_page = [c for c in found if c.image_url == image_url]
            image_on_page = bool(on_page)
            video = any(c.source in VIDEO_SOURCES for c in on_page) or _named_like_video(image_url)
            image, image_error, more = await _fetch_image(
                fetcher,
                image_url,
                on_image_bytes,
                video=video,
                matched_offset=matched_offset,
                known=known_hashes,
            )
            exchanges += more

    warc = await asyncio.to_thread(
        capture_warc, exchanges, out_path, description=description, info={"page": page_url}
    )
    return WarcCapture(
        warc=warc,
        page=page_exchange,
        image=image,
        image_hashes=image.withheld.hashes if image and image.withheld else None,
        image_error=image_error,
        image_on_page=image_on_page,
    )


def _named_like_video(url: str) -> bool:
    path = urlsplit(url).path.lower()
    return any(path.endswith(ext) for ext in VIDEO_EXTENSIONS)


def _video_typed(hops: list[_Hop]) -> bool:
    """Whether the last response was labelled as a video (an image request it refused)."""
    if not hops:
        return False
    media = _media_type(hops[-1].response_headers)
    return media.startswith("video/") or media in VIDEO_APPLICATION_TYPES


async def _fetch_image(
    fetcher: _RecordingFetcher,
    image_url: str,
    on_image_bytes: ImageBytesHook | None = None,
    *,
    video: bool = False,
    matched_offset: float | None = None,
    known: ImageHashes | None = None,
) -> tuple[HttpExchange | None, str | None, list[HttpExchange]]:
    """Fetch and hash the image (or video); the bytes never leave this function (except to
    ``on_image_bytes``, a person's explicit opt-in, and never a video's)."""
    await fetcher.can_fetch(image_url)
    fetcher.take_hops()
    refused: list[HttpExchange] = []
    try:
        if video:
            resource = await fetcher.fetch_video(image_url, partial=True)
        else:
            try:
                resource = await fetcher.fetch_image(image_url)
            except FetchError:
                hops = fetcher.take_hops()
                refused = [hop.exchange(truncated=True) for hop in hops]
                if not _video_typed(hops):
                    raise
                # Served as a video: recorded as refused, then asked for again as one.
                resource = await fetcher.fetch_video(image_url, partial=True)
    except FetchError as exc:
        hops = fetcher.take_hops()
        return None, exc.reason, refused + [hop.exchange(truncated=True) for hop in hops]
    withheld: WithheldImage | None = None
    if known is not None and not isinstance(resource, PartialResource):
        withheld = await asyncio.to_thread(
            WithheldImage.from_known,
            resource.body,
            known,
            content_type=resource.content_type,
            matched_offset=matched_offset,
        )
    if withheld is None:
        withheld = await asyncio.to_thread(
            WithheldImage.from_bytes,
            resource.body,
            content_type=resource.content_type,
            matched_offset=matched_offset,
            complete=not isinstance(resource, PartialResource),
        )
    if on_image_bytes is not None and withheld.kind != "video":
        await asyncio.to_thread(on_image_bytes, resource.body, withheld)
    status = resource.status
    del resource  # the bytes go out of scope here; nothing else holds them
    hops = fetcher.take_hops()
    if not hops or hops[-1].status != status:
        return None, "exchange not recorded", refused
    final = hops[-1].exchange(withheld=withheld)
    return final, None, refused + [hop.exchange(truncated=True) for hop in hops[:-1]] + [final]
