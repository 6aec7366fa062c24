"""Frames of videos and animations, sampled in memory and hashed like photos.

A leaked photo is often posted as a clip or an animated GIF/WebP/APNG, and intimate videos are
enrolled and found as videos. This module turns such bytes into a bounded list of frames, each
with its time offset, and hashes each frame with the registered image hashes
(:mod:`monitor.hashing`): about one a second of a short video; for a video longer than
``max_frames`` seconds, ``max_frames`` frames spread evenly over its whole duration (found by
seeking, so the end of a long video is looked at too); a handful spread over an animation.

Everything happens in memory: the container is read from a ``BytesIO``, never from a file, and
only hashes leave this module. Decoding is bounded in bytes, frames, pixels per frame and
decoding time, and anything that is not a decodable video or animation raises
:class:`~monitor.errors.NotAnImageError` with a readable reason.

``hash_frames`` is a top-level function, so it runs in the scan's hashing process pool.
"""

from __future__ import annotations

import hashlib
import io
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from PIL import Image, ImageSequence

from monitor.errors import NotAnImageError
from monitor.hashing import (
    DEFAULT_MAX_PIXELS,
    WORKING_SIZE,
    compute_hashes,
    compute_hashes_from_image,
)
from monitor.types import ImageHashes

__all__ = [
    "VIDEO_EXTENSIONS",
    "Frame",
    "FrameHashes",
    "FrameLimits",
    "MediaHashes",
    "hash_frames",
    "hash_media",
    "is_animation",
    "is_video",
    "may_have_frames",
    "sample_frames",
    "video_format",
]

VIDEO_EXTENSIONS = frozenset({".mp4", ".m4v", ".mov", ".webm", ".mkv", ".avi", ".3gp", ".ogv"})
"""File name endings that ``enroll`` treats as videos."""

# The containers we sample, each told by its magic numbers (a page can label anything as
# video/mp4) and opened with its own FFmpeg demuxer, never one FFmpeg guesses: its guesses
# include demuxers that open sockets and fetch URLs named in the bytes (SDP, HLS, DASH, concat,
# RTSP...). See :func:`video_format`.
_ISO_BMFF_MAX_FTYP = 1024  # an `ftyp` box: 16 bytes and 4 per compatible brand


def _demuxer_options(fmt: str) -> dict[str, str]:
    """Options that keep a demuxer inside the bytes it is given: no protocol may be opened
    (no file, no network), no other demuxer may be nested, and a MOV may not follow its data
    references (``dref``) to other files."""
    options = {"protocol_whitelist": "", "format_whitelist": fmt}
    if fmt == "mov":
        options |= {"enable_drefs": "0", "use_absolute_path": "0"}
    return options


def video_format(data: bytes) -> str | None:
    """The FFmpeg demuxer for bytes that start like a video container we sample, else None.

    ISO base media (MP4, MOV, 3GP, M4V): an ``ftyp`` box first, of a sane size; Matroska /
    WebM: the EBML header; Ogg: ``OggS``; AVI: ``RIFF`` at 0 *and* ``AVI `` at 8. Nothing
    else: whatever FFmpeg could make of other bytes is not looked at."""
    if data[4:8] == b"ftyp":
        size = int.from_bytes(data[:4], "big")
        if 16 <= size <= min(_ISO_BMFF_MAX_FTYP, len(data)):
            return "mov"
        return None
    if data[:4] == b"\x1a\x45\xdf\xa3":
        return "matroska"
    if data[:4] == b"OggS":
        return "ogg"
    if data[:4] == b"RIFF" and data[8:12] == b"AVI ":
        return "avi"
    return None


@dataclass(frozen=True, slots=True)
class FrameLimits:
    """Bounds on the work one video or animation may cause."""

    every_seconds: float = 1.0  # one frame per this many seconds of a short video
    max_frames: int = 60  # a longer video: this many, spread evenly over all of it
    max_animation_frames: int = 8  # frames spread evenly over an animated image
    max_bytes: int = 200_000_000
    max_pixels: int = DEFAULT_MAX_PIXELS  # per frame, checked before decoding
    max_decode_seconds: float = 30.0


@dataclass(frozen=True, slots=True)
class Frame:
    offset: float  # seconds from the start (for animations: the frame's display time)
    image: Image.Image  # RGB, reduced to the hashing working size


@dataclass(frozen=True, slots=True)
class FrameHashes:
    """The hashes of one sampled frame; ``hashes.sha256`` is that of the whole file."""

    offset: float
    hashes: ImageHashes


@dataclass(frozen=True, slots=True)
class MediaHashes:
    """What the scan's hashing pool returns for fetched bytes.

    ``still`` holds the hashes of the image as a still (for a video: of its first sampled
    frame); ``frames`` those of every sampled frame of an animation or a video, empty for a
    photo. Every ``sha256`` is that of the whole file."""

    still: ImageHashes
    frames: tuple[FrameHashes, ...] = ()


def is_video(data: bytes) -> bool:
    """Whether the bytes start like a video container we can sample (:func:`video_format`)."""
    return video_format(data) is not None


def is_animation(data: bytes) -> bool:
    """Whether the bytes are an image with more than one frame (GIF, WebP, APNG)."""
    try:
        with Image.open(io.BytesIO(data), formats=("GIF", "WEBP", "PNG")) as im:
            return getattr(im, "n_frames", 1) > 1
    except Exception:
        return False


def may_have_frames(data: bytes) -> bool:
    """A cheap look at the first bytes: could this be a video or an animated image?

    True for video containers, every GIF, animated WebP (the VP8X animation flag) and APNG
    (an ``acTL`` chunk before the first ``IDAT``); never False for one that is."""
    if is_video(data) or data[:6] in (b"GIF87a", b"GIF89a"):
        return True
    if data[:4] == b"RIFF" and data[8:16] == b"WEBPVP8X":
        return len(data) > 20 and bool(data[20] & 0x02)
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        idat = data.find(b"IDAT")
        return data.find(b"acTL", 8, idat if idat >= 0 else len(data)) >= 0
    return False


def _reduced_rgb(frame: Image.Image) -> Image.Image:
    if frame.mode in ("RGBA", "LA", "PA") or (frame.mode == "P" and "transparency" in frame.info):
        rgba = frame.convert("RGBA")
        flat = Image.new("RGB", rgba.size, (255, 255, 255))
        flat.paste(rgba, mask=rgba.getchannel("A"))
        frame = flat
    else:
        frame = frame.convert("RGB")
    short = min(frame.size)
    if short > 2 * WORKING_SIZE:
        scale = WORKING_SIZE / short
        frame = frame.resize(
            (max(1, round(frame.width * scale)), max(1, round(frame.height * scale))),
            Image.Resampling.BILINEAR,
        )
    return frame


def _animation_frames(data: bytes, limits: FrameLimits) -> Iterator[Frame]:
    try:
        im = Image.open(io.BytesIO(data), formats=("GIF", "WEBP", "PNG"))
    except Exception as exc:
        raise NotAnImageError(f"not a decodable animation: {exc}") from None
    with im:
        if im.width * im.height > limits.max_pixels:
            raise NotAnImageError(
                f"refused, could be a decompression bomb: {im.width}x{im.height} pixels"
            )
        n = getattr(im, "n_frames", 1)
        count = min(n, limits.max_animation_frames)
        wanted = sorted({round(i * (n - 1) / max(count - 1, 1)) for i in range(count)})
        # Display times: sum of frame durations up to each wanted frame.
        offset, index, wanted_set = 0.0, 0, set(wanted)
        try:
            for index, frame in enumerate(ImageSequence.Iterator(im)):
                if index in wanted_set:
                    yield Frame(round(offset, 3), _reduced_rgb(frame.copy()))
                offset += (frame.info.get("duration") or 100) / 1000
                if index >= wanted[-1]:
                    break
        except (OSError, ValueError, EOFError) as exc:
            if index == 0:
                raise NotAnImageError(f"not a decodable animation: {exc}") from None
            # A truncated animation: keep the frames decoded so far.


def _video_frames(data: bytes, limits: FrameLimits) -> Iterator[Frame]:
    """About one frame every ``every_seconds`` of a short video; for a longer one (more than
    ``max_frames`` such frames), ``max_frames`` frames spread evenly over its whole duration,
    each found by seeking (see :func:`_seek_frames`)."""
    try:
        import av
    except ImportError:  # pragma: no cover - av is a dependency
        raise NotAnImageError("video support needs the 'av' package") from None
    deadline = time.monotonic() + limits.max_decode_seconds
    window = limits.every_seconds * limits.max_frames
    with _open_video(av, data, limits) as container:
        stream = container.streams.video[0]
        span = _declared_seconds(container, stream)
        if span is not None and span <= window:
            yield from _decode_every(container, stream, limits, deadline)
            return
        # Long, or of unknown length: how much of it the bytes really hold (a declared
        # duration can be wrong, and a video cut at the byte cap holds only its start).
        span = _demuxed_seconds(container, stream, deadline)
    with _open_video(av, data, limits) as container:  # from the start again
        stream = container.streams.video[0]
        if span is None or span <= window:
            yield from _decode_every(container, stream, limits, deadline)
        else:
            yield from _seek_frames(container, stream, span, limits, deadline)


def _refuse_to_open(url: str, flags: int, options: dict[str, Any]) -> Any:
    """PyAV's ``io_open``: a demuxer asking for another file or URL gets an error."""
    raise PermissionError("it refers to another file or URL, which is never opened")


def _open_video(av: Any, data: bytes, limits: FrameLimits) -> Any:
    """The container of ``data``, opened with the demuxer its magic numbers name (FFmpeg does
    not probe) and no way to open anything else: no protocol is allowed (the SDP and RTSP
    demuxers open sockets with it) and any nested open is refused (``io_open``)."""
    fmt = video_format(data)
    if fmt is None:
        raise NotAnImageError("not a decodable video: not an MP4, MOV, WebM, Matroska, Ogg or AVI")
    try:
        container = av.open(
            io.BytesIO(data),
            mode="r",
            format=fmt,
            container_options=_demuxer_options(fmt),
            io_open=_refuse_to_open,
        )
    except Exception as exc:
        raise NotAnImageError(f"not a decodable video: {_first_line(exc)}") from None
    if not container.streams.video:
        container.close()
        raise NotAnImageError("not a decodable video: it has no video stream")
    stream = container.streams.video[0]
    width, height = stream.codec_context.width or 0, stream.codec_context.height or 0
    if width * height > limits.max_pixels:
        container.close()
        raise NotAnImageError(f"refused, could be a decompression bomb: {width}x{height}")
    stream.thread_type = "AUTO"
    return container


def _start(stream: Any) -> float:
    if stream.start_time is None or stream.time_base is None:
        return 0.0
    return float(stream.start_time * stream.time_base)


def _declared_seconds(container: Any, stream: Any) -> float | None:
    """The duration the container declares (of the stream, else of the file), if any."""
    if stream.duration and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return container.duration / 1_000_000  # AV_TIME_BASE
    return None


def _demuxed_seconds(container: Any, stream: Any, deadline: float) -> float | None:
    """Seconds of video the bytes hold, from the time stamps of its packets (read, not
    decoded: fast). None when no packet has one."""
    end = None
    try:
        for packet in container.demux(stream):
            if packet.pts is not None and packet.time_base is not None:
                at = float((packet.pts + (packet.duration or 0)) * packet.time_base)
                end = at if end is None else max(end, at)
            if time.monotonic() > deadline:
                break
    except Exception:  # a cut or damaged tail: what was read so far counts
        pass
    return None if end is None else max(end - _start(stream), 0.0)


def _frame_time(frame: Any) -> float:
    if frame.pts is None or frame.time_base is None:
        return float(frame.time or 0.0)
    return float(frame.pts * frame.time_base)


def _decode_every(
    container: Any, stream: Any, limits: FrameLimits, deadline: float
) -> Iterator[Frame]:
    """Decode from the start, keeping a frame every ``every_seconds``."""
    next_at, taken = 0.0, 0
    try:
        for frame in container.decode(stream):
            if time.monotonic() > deadline:
                break
            at = _frame_time(frame)
            if at + 1e-6 < next_at:
                continue
            yield Frame(round(at, 3), _reduced_rgb(frame.to_image()))
            taken += 1
            if taken >= limits.max_frames:
                break
            next_at = at + limits.every_seconds
    except Exception as exc:
        if taken == 0:
            raise NotAnImageError(f"not a decodable video: {_first_line(exc)}") from None
        # A truncated or corrupt tail: keep the frames decoded so far.


SEEK_GAP = 5.0
"""Sampling a long video, a time at most this many seconds (or one keyframe interval, if that
is longer) past the frame decoded last is decoded on to, not sought: a seek lands on the
keyframe before the time, which may be one already decoded past."""


def _seek_frames(
    container: Any, stream: Any, span: float, limits: FrameLimits, deadline: float
) -> Iterator[Frame]:
    """``max_frames`` frames at ``i * span / max_frames`` seconds: seek to the keyframe at or
    before each time (or decode on, when it is near, see :data:`SEEK_GAP`) and take the first
    frame within half a step of it (a keyframe when one is that close). Stops at the end of
    what can be decoded."""
    step = span / limits.max_frames
    start = _start(stream)
    last: float | None = None  # the offset of the frame taken last
    frames: Iterator[Any] | None = None  # the decoder's frames since the last seek
    at: float | None = None  # the time of the frame decoded last
    key_at: float | None = None  # the time of the keyframe decoded last since the last seek
    key_gap = 0.0  # the longest interval seen between two keyframes decoded in a row
    for i in range(limits.max_frames):
        if time.monotonic() > deadline:
            break
        target = start + i * step
        floor = target - step / 2
        if last is not None:
            floor = max(floor, last + 1e-3)
        got = None
        try:
            if frames is None or at is None or target - at > max(SEEK_GAP, key_gap):
                if i:
                    container.seek(
                        int(target / stream.time_base),
                        stream=stream,
                        backward=True,
                        any_frame=False,
                    )
                frames, key_at = container.decode(stream), None
            for frame in frames:
                at = _frame_time(frame)
                if frame.key_frame:
                    if key_at is not None:
                        key_gap = max(key_gap, at - key_at)
                    key_at = at
                if at >= floor:
                    got = Frame(round(at, 3), _reduced_rgb(frame.to_image()))
                    break
                if time.monotonic() > deadline:
                    break
        except Exception as exc:
            if last is None:
                raise NotAnImageError(f"not a decodable video: {_first_line(exc)}") from None
            break  # a damaged part: keep the frames sampled so far
        if got is None:
            break  # nothing decodable past the last frame: the end of what the bytes hold
        yield got
        last = got.offset


def sample_frames(data: bytes, limits: FrameLimits | None = None) -> list[Frame]:
    """Frames of a video (about one per ``every_seconds``; at most ``max_frames``, spread over
    the whole of a longer one) or of an animated image.

    A still image gives its one frame. Raises :class:`NotAnImageError` for anything else.
    """
    return list(_frames(data, limits or FrameLimits()))


def _frames(data: bytes, limits: FrameLimits) -> Iterator[Frame]:
    """The frames of :func:`sample_frames`, one at a time (a long video's frames are not all
    held at once)."""
    if len(data) > limits.max_bytes:
        raise NotAnImageError(f"refused: {len(data)} bytes is more than {limits.max_bytes}")
    any_frame = False
    for frame in _video_frames(data, limits) if is_video(data) else _animation_frames(data, limits):
        any_frame = True
        yield frame
    if not any_frame:
        raise NotAnImageError("no frame could be decoded")


def hash_frames(data: bytes, limits: FrameLimits | None = None) -> list[FrameHashes]:
    """Every registered hash of each sampled frame, with the frame's time offset.

    A top-level function, so it can run in a process pool. Raises :class:`NotAnImageError`.
    """
    sha256 = hashlib.sha256(data).hexdigest()
    out = []
    for frame in _frames(data, limits or FrameLimits()):
        image = frame.image
        try:
            hashes = compute_hashes_from_image(image, sha256, image.width, image.height)
        except Exception as exc:
            raise NotAnImageError(f"hashing a frame failed: {_first_line(exc)}") from None
        out.append(FrameHashes(frame.offset, hashes))
    return out


def hash_media(data: bytes, limits: FrameLimits | None = None) -> MediaHashes:
    """The hashes the scan matches: of a photo; of an animation as a still (its first frame,
    as browsers show it before playing) and of its sampled frames; of a video's sampled frames
    (the first standing in as the still).

    A top-level function, so it can run in a process pool. Raises :class:`NotAnImageError`
    for bytes that are neither an image nor a video.
    """
    if is_video(data):
        frames = hash_frames(data, limits)
        return MediaHashes(frames[0].hashes, tuple(frames))
    still = compute_hashes(data, max_pixels=(limits or FrameLimits()).max_pixels)
    if not may_have_frames(data) or not is_animation(data):
        return MediaHashes(still)
    try:
        frames = hash_frames(data, limits)
    except NotAnImageError:  # the first frame decoded, the rest did not: the still stands
        return MediaHashes(still)
    return MediaHashes(still, tuple(frames))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
