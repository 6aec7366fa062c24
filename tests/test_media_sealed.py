"""Nothing on the web reaches the network through the media decoder (issue 11, "Decoder").

FFmpeg can read far more than videos: an SDP file makes it bind UDP ports and wait for RTP, an
HLS or DASH playlist, a concat script or an image2 pattern makes it fetch the URLs they name.
Served as ``image/jpeg`` or ``video/mp4``, each of these must be rejected as "not a decodable
image/video" without a packet leaving or a socket being bound, and the scan must go on. The
listeners here (TCP, UDP, and a watch on the UDP port an SDP names) are on 127.0.0.1 only.

And a hashing task that hangs (or kills its worker) is stopped, its worker replaced, and the
scan still hashes and matches the images after it.
"""

from __future__ import annotations

import io
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import CancelledError
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import av
import pytest
from sqlalchemy import select

from monitor import pipeline, store, video
from monitor.db import Database
from monitor.db.models import FetchErrorRecord
from monitor.demo.photos import photo_bytes
from monitor.demo.transforms import decode, encode, resize
from monitor.enrol import enrol_images
from monitor.errors import NotAnImageError
from monitor.pipeline import hashing_pool, scan_subject
from monitor.pool import DeadlinePool, TaskTimedOut, WorkerCrashed
from monitor.testing.searxng import FakeSearxng
from monitor.testing.web import LoopbackWeb
from monitor.video import FrameLimits, hash_media, is_video, video_format
from tests.conftest import loopback_settings
from tests.hanging_tasks import CRASH, HANG, hash_or_hang, sleep, square

NAME = "Jane Example"


# -- listeners


def _free_udp_port() -> int:
    """A UDP port nothing is bound to (with the next one free too: RTP takes two)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port < 65535 and not _udp_bound({port, port + 1}):
            return port
    raise RuntimeError("no free UDP port pair")


def _udp_bound(ports: set[int]) -> set[str]:
    """Local addresses of UDP sockets (any process, this network namespace) on ``ports``."""
    found = set()
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local = line.split()[1]
            if int(local.rsplit(":", 1)[1], 16) in ports:
                found.add(local)
    return found


@dataclass
class Listeners:
    """A TCP and a UDP listener on 127.0.0.1, and a watch on the ports an SDP file names
    (nothing of ours is bound there: any socket bound there is the decoder's)."""

    tcp: socket.socket
    udp: socket.socket
    sdp_port: int
    connections: list[bytes] = field(default_factory=list)
    datagrams: list[bytes] = field(default_factory=list)
    bound: set[str] = field(default_factory=set)
    stop: threading.Event = field(default_factory=threading.Event)

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.tcp.getsockname()[1]}"

    @property
    def udp_port(self) -> int:
        return self.udp.getsockname()[1]

    def run(self) -> list[threading.Thread]:
        threads = [
            threading.Thread(target=self._accept, daemon=True),
            threading.Thread(target=self._receive, daemon=True),
            threading.Thread(target=self._watch, daemon=True),
        ]
        for t in threads:
            t.start()
        return threads

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.tcp.accept()
            except OSError:  # the 0.1 s poll, or closed
                continue
            with conn:
                conn.settimeout(0.5)
                try:
                    self.connections.append(conn.recv(200) or b"(connected)")
                except OSError:
                    self.connections.append(b"(connected)")

    def _receive(self) -> None:
        while not self.stop.is_set():
            try:
                self.datagrams.append(self.udp.recv(2000))
            except OSError:
                continue

    def _watch(self) -> None:
        while not self.stop.is_set():
            self.bound |= _udp_bound({self.sdp_port, self.sdp_port + 1})
            time.sleep(0.01)

    def assert_untouched(self) -> None:
        time.sleep(0.1)  # a connection or datagram in flight is counted
        assert self.connections == [], f"TCP connections reached the listener: {self.connections}"
        assert self.datagrams == [], f"UDP datagrams reached the listener: {self.datagrams}"
        assert self.bound == set(), f"UDP sockets were bound on the SDP's ports: {self.bound}"


@pytest.fixture
def listeners() -> Iterator[Listeners]:
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.bind(("127.0.0.1", 0))
    tcp.listen(16)
    tcp.settimeout(0.1)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp.settimeout(0.1)
    lis = Listeners(tcp, udp, _free_udp_port())
    threads = lis.run()
    try:
        yield lis
    finally:
        lis.stop.set()
        for t in threads:
            t.join(2)
        tcp.close()
        udp.close()


# -- what a hostile server sends instead of a photo or a video


def payloads(lis: Listeners) -> dict[str, bytes]:
    """Files that make FFmpeg open sockets or fetch URLs, all pointing at ``lis``."""
    return _payloads(lis.http, lis.udp_port, lis.sdp_port)


def _payloads(http: str, udp_port: int, port: int) -> dict[str, bytes]:
    """Each file also as a "fake AVI" (``AVI `` at offset 8 without ``RIFF`` at 0, which the
    old sniff took for a video) where its syntax allows, and the SDP behind an ISO BMFF
    ``ftyp`` box of the ``jp2`` brand (which FFmpeg's MOV probe scores low)."""
    sdp = f"c=IN IP4 127.0.0.1\r\nt=0 0\r\nm=video {port} RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n"
    hls = (
        "#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:10\n#EXTINF:10.0,\n"
        f"{http}/hls/0.ts\n#EXTINF:10.0,\nudp://127.0.0.1:{udp_port}\n#EXT-X-ENDLIST\n"
    )
    master = f"#EXT-X-STREAM-INF:BANDWIDTH=100000\n{http}/hls/variant.m3u8\n"
    mpd = (
        '<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static" minBufferTime="PT1S"'
        ' profiles="urn:mpeg:dash:profile:isoff-on-demand:2011"'
        ' mediaPresentationDuration="PT10S">'
        f'<BaseURL>{http}/dash/</BaseURL><Period><AdaptationSet mimeType="video/mp4">'
        '<Representation id="v" bandwidth="100000" width="64" height="48"'
        ' codecs="avc1.42E01E"><SegmentList duration="10" timescale="1">'
        '<Initialization sourceURL="init.mp4"/><SegmentURL media="seg-1.m4s"/>'
        "</SegmentList></Representation></AdaptationSet></Period></MPD>\n"
    )
    concat = f"file '{http}/concat/a.mp4'\nfile 'rtp://127.0.0.1:{udp_port}'\n"
    image2 = f"{http}/image2/img-%03d.jpg\n"
    texts = {
        "sdp": "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=-\r\n" + sdp,
        "sdp, fake AVI": "v=0\r\no= AVI 0 0 IN IP4 127.0.0.1\r\ns=-\r\n" + sdp,
        "hls": "#EXTM3U\n" + hls,
        "hls, fake AVI": "#EXTM3U\nAVI \n" + hls,
        "hls master": "#EXTM3U\n" + master,
        "hls master, fake AVI": "#EXTM3U\nAVI \n" + master,
        "dash": mpd,
        "dash, fake AVI": "<!--0123AVI -->\n" + mpd,
        "concat": concat,
        "concat, fake AVI": "#234567AVI \n" + concat,
        "ffconcat": "ffconcat version 1.0\n" + concat,
        "image2 pattern": image2,
        "image2 pattern, fake AVI": "#234567AVI \n" + image2,
    }
    out = {name: text.encode() for name, text in texts.items()}
    out["sdp, jp2 ftyp"] = b"\x00\x00\x00\x0cftypjp2 \r\n" + out["sdp"]
    return out


PAYLOADS = list(_payloads("http://127.0.0.1:1", 1, 1))


@pytest.mark.parametrize("name", PAYLOADS)
def test_network_capable_files_are_rejected_without_touching_the_network(
    listeners: Listeners, name: str
) -> None:
    data = payloads(listeners)[name]
    with pytest.raises(NotAnImageError):
        hash_media(data)
    listeners.assert_untouched()
    assert not is_video(data)


@pytest.mark.parametrize("fmt", ["sdp", "hls", "dash", "concat"])
def test_even_a_network_demuxer_opened_by_mistake_cannot_reach_the_network(
    listeners: Listeners, monkeypatch: pytest.MonkeyPatch, fmt: str
) -> None:
    """Were the magic numbers ever fooled into naming a demuxer that opens URLs, the options
    the decoder opens it with still allow no protocol and no nested open."""
    data = {
        "sdp": payloads(listeners)["sdp"],
        "hls": payloads(listeners)["hls"],
        "dash": payloads(listeners)["dash"],
        "concat": payloads(listeners)["ffconcat"],
    }[fmt]
    monkeypatch.setattr(video, "video_format", lambda _data: fmt, raising=False)
    with pytest.raises(NotAnImageError):
        video._open_video(av, data, FrameLimits()).close()
    listeners.assert_untouched()


def _clip(fmt: str, codec: str) -> bytes:
    import numpy as np

    buf = io.BytesIO()
    with av.open(buf, mode="w", format=fmt) as out:
        stream = out.add_stream(codec, rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(12):
            frame = np.full((48, 64, 3), i * 20, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("fmt", "codec", "demuxer"),
    [
        ("mp4", "libx264", "mov"),
        ("mov", "mpeg4", "mov"),
        ("ipod", "libx264", "mov"),  # .m4v
        ("webm", "libvpx", "matroska"),
        ("matroska", "mpeg4", "matroska"),
        ("avi", "mpeg4", "avi"),
        ("ogg", "libvpx", "ogg"),
    ],
)
def test_real_containers_are_told_by_their_magic_numbers_and_still_decode(
    fmt: str, codec: str, demuxer: str
) -> None:
    data = _clip(fmt, codec)
    assert video_format(data) == demuxer
    media = hash_media(data)
    assert len(media.frames) >= 1 and media.still == media.frames[0].hashes


def test_magic_numbers_are_checked_whole() -> None:
    mp4 = _clip("mp4", "libx264")
    avi = _clip("avi", "mpeg4")
    assert video_format(b"XXXX" + avi[4:]) is None  # "AVI " at 8 without "RIFF" at 0
    assert video_format(b"RIFF\0\0\0\0WEBPVP8X") is None  # a WebP is not an AVI
    for size in (0, 1, 8, 15, 1025, 0xFFFFFFFF):  # an ftyp box of no sane size
        assert video_format(size.to_bytes(4, "big") + mp4[4:]) is None
    smallest = b"\x00\x00\x00\x10ftypisom\x00\x00\x02\x00"  # no compatible brand
    assert video_format(smallest) == "mov" and video_format(smallest[:15]) is None
    assert video_format(mp4[:31]) is None  # cut inside its ftyp box
    assert video_format(b"\x1a\x45\xdf") is None and video_format(b"") is None
    with pytest.raises(NotAnImageError):
        hash_media(b"XXXX" + avi[4:])


# -- whole scans


def _copy(ref: bytes, scale: float = 0.7) -> bytes:
    return encode(resize(decode(ref), scale), "JPEG", 80)


def _errors(db: Database, scan_id: int) -> dict[str, tuple[str, str]]:
    with db.session() as s:
        rows = s.scalars(select(FetchErrorRecord).where(FetchErrorRecord.scan_id == scan_id))
        return {e.url: (e.stage, e.reason) for e in rows}


def _scan(
    tmp_path: Path, files: dict[str, tuple[bytes, str]], html: str, pool: DeadlinePool, ref: bytes
):
    """Scan a loopback web whose one page holds ``html``; ``files`` are served beside it.
    Returns (summary, errors by URL, matched URLs, the web's base URL)."""
    fake = FakeSearxng()
    with LoopbackWeb() as web:
        for path, (body, content_type) in files.items():
            web.add(path, body, content_type)
        web.add("/robots.txt", "", "text/plain")
        page = web.add("/post.html", f"<html><body>{html}</body></html>")
        fake.add_result(NAME, "general", {"url": page, "title": "a post", "engine": "fake"})
        settings = loopback_settings(tmp_path, fake.install(web))
        settings.cases.screenshots = False
        settings.cases.capture_evidence = False
        settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        db = Database(settings.database_url, key_file=settings.key_path)
        try:
            with db.session() as s:
                subject = store.add_subject(s, NAME, interval=timedelta(days=1))
                assert enrol_images(s, subject, [("ref", ref)]).enrolled == 1
            summary = scan_subject(settings, db, NAME, pool=pool, deliver=False)
            with db.session() as s:
                matched = {r.image_url for r in store.list_matches(s, NAME)}
            return summary, _errors(db, summary.scan_id), matched, web.url("/")
        finally:
            db.dispose()


@pytest.fixture(scope="module")
def pool() -> Iterator[DeadlinePool]:
    with hashing_pool(2) as p:
        yield p


def test_a_scan_of_network_capable_files_records_errors_and_reaches_nothing(
    tmp_path: Path, listeners: Listeners, pool: DeadlinePool
) -> None:
    ref = photo_bytes(4300)
    files, tags = {"/copy.jpg": (_copy(ref), "image/jpeg")}, []
    for i, data in enumerate(payloads(listeners).values()):
        files[f"/img{i}.jpg"] = (data, "image/jpeg")
        files[f"/clip{i}.mp4"] = (data + b"\n", "video/mp4")  # other bytes: hashed again
        tags.append(f'<img src="/img{i}.jpg"><video src="/clip{i}.mp4"></video>')
    tags.append('<img src="/copy.jpg">')
    summary, errors, matched, base = _scan(tmp_path, files, "\n".join(tags), pool, ref)

    assert summary.status == "completed", summary.error_samples
    assert matched == {base + "copy.jpg"}
    hostile = {base + path.lstrip("/") for path in files if path != "/copy.jpg"}
    assert set(errors) == hostile
    for url, (stage, reason) in errors.items():
        assert stage == "hash" and reason.startswith("not a decodable"), (url, reason)
    assert summary.errors == len(hostile)
    listeners.assert_untouched()


# -- deadlines

# The deadline of the pool test below, whose tasks are trivial (a scan decoding photos keeps
# the 5 s it had): short, because every hung task waits it out, some twice.
DEADLINE = 2.0


@pytest.fixture
def forkserver_started() -> None:
    """The pools' forkserver is running (started once per test process; a pool's first task
    would otherwise count its start, seconds, against a deadline of a few seconds)."""
    with hashing_pool(1, task_timeout=300) as p:
        assert p.submit(square, 2).result() == 4


@pytest.mark.usefixtures("forkserver_started")
def test_a_hung_task_is_stopped_its_worker_replaced_and_the_scan_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ref = photo_bytes(4301)
    copy = _copy(ref)
    monkeypatch.setattr(pipeline, "hash_media", hash_or_hang)
    files = {
        "/hang.jpg": (HANG + copy, "image/jpeg"),
        "/crash.jpg": (CRASH + copy, "image/jpeg"),
        **{f"/copy{i}.jpg": (_copy(ref, 0.7 - i / 20), "image/jpeg") for i in range(4)},
    }
    html = "".join(f'<img src="{path}">' for path in files)
    with hashing_pool(2, task_timeout=5) as deadline_pool:
        summary, errors, matched, base = _scan(tmp_path, files, html, deadline_pool, ref)
        replaced = deadline_pool.replaced

    assert summary.status == "completed", summary.error_samples
    assert matched == {base + f"copy{i}.jpg" for i in range(4)}  # hashed after the hang
    assert set(errors) == {base + "hang.jpg", base + "crash.jpg"}
    assert errors[base + "hang.jpg"] == (
        "hash",
        "gave up after 5 s: decoding took too long (its worker process was stopped)",
    )
    stage, reason = errors[base + "crash.jpg"]
    assert stage == "hash" and "crashed" in reason
    assert replaced >= 2  # once for the hang, at least once for the crash


@pytest.mark.usefixtures("forkserver_started")
def test_the_deadline_pool_fails_only_the_guilty_task() -> None:
    with hashing_pool(2, task_timeout=DEADLINE) as p:
        assert p.submit(square, 2).result() == 4
        hang = p.submit(hash_or_hang, HANG)
        crash = p.submit(hash_or_hang, CRASH)
        slow = p.submit(sleep, 0.4)  # running when the others are stopped: run again
        bad = p.submit(hash_or_hang, b"not an image")
        later = [p.submit(square, i) for i in range(20)]
        with pytest.raises(TaskTimedOut):
            hang.result(timeout=60)
        with pytest.raises(WorkerCrashed):
            crash.result(timeout=60)
        with pytest.raises(NotAnImageError):
            bad.result(timeout=60)
        assert slow.result(timeout=60) == 0.4
        assert [f.result(timeout=60) for f in later] == [i * i for i in range(20)]
        assert p.replaced >= 2
        waiting = [p.submit(sleep, 0.2) for _ in range(6)]
    # shutdown(wait=True) waited for them all
    assert all(f.done() for f in waiting)

    p = hashing_pool(1, task_timeout=30)
    running = p.submit(sleep, 0.5)
    queued = [p.submit(square, i) for i in range(5)]
    for _ in range(3000):  # handed over once its worker has started
        if running.running() or running.done():
            break
        time.sleep(0.01)
    p.shutdown(wait=True, cancel_futures=True)
    assert running.result() == 0.5
    for f in queued:
        assert f.cancelled() or f.result() in {i * i for i in range(5)}
        if f.cancelled():
            with pytest.raises(CancelledError):
                f.result()
    with pytest.raises(RuntimeError):
        p.submit(square, 1)
