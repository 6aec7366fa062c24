"""Frames of videos and animations, sampled in memory and hashed like photos.

A leaked photo is often posted as a clip or an animated GIF/WebP/APNG, and intimate videos are
enrolled and found as videos. This module turns such bytes into a bounded list of frames (about
one a second for videos, a handful spread over an animation), each with its time offset, and
hashes each frame with the registered image hashes (:mod:`monitor.hashing`).

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
]

VIDEO_EXTENSIONS = frozenset({".mp4", ".m4v", ".mov", ".webm", ".mkv", ".avi", ".3gp", ".ogv"})
"""File name endings that ``enroll`` treats as videos."""

# Magic numbers of the containers we sample (a page can label anything as video/mp4).
_VIDEO_MAGIC = (
    (4, b"ftyp"),  # MP4, MOV, 3GP, M4V (ISO base media)
    (0, b"\x1a\x45\xdf\xa3"),  # Matroska / WebM
    (0, b"OggS"),
    (8, b"AVI "),
)


@dataclass(frozen=True, slots=True)
class FrameLimits:
    """Bounds on the work one video or animation may cause."""

    every_seconds: float = 1.0  # one frame per this many seconds of video
    max_frames: int = 60
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
    """Whether the bytes start like a video container we can sample."""
    return any(data[at : at + len(magic)] == magic for at, magic in _VIDEO_MAGIC)


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
    try:
        import av
    except ImportError:  # pragma: no cover - av is a dependency
        raise NotAnImageError("video support needs the 'av' package") from None
    try:
        container = av.open(io.BytesIO(data), mode="r")
    except Exception as exc:
        raise NotAnImageError(f"not a decodable video: {_first_line(exc)}") from None
    with container:
        if not container.streams.video:
            raise NotAnImageError("not a decodable video: it has no video stream")
        stream = container.streams.video[0]
        width, height = stream.codec_context.width or 0, stream.codec_context.height or 0
        if width * height > limits.max_pixels:
            raise NotAnImageError(f"refused, could be a decompression bomb: {width}x{height}")
        stream.thread_type = "AUTO"
        deadline = time.monotonic() + limits.max_decode_seconds
        next_at, taken = 0.0, 0
        try:
            for frame in container.decode(stream):
                if time.monotonic() > deadline:
                    break
                if frame.pts is None or frame.time_base is None:
                    at = float(frame.time or 0.0)
                else:
                    at = float(frame.pts * frame.time_base)
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


def sample_frames(data: bytes, limits: FrameLimits | None = None) -> list[Frame]:
    """Frames of a video (about one per ``every_seconds``) or of an animated image.

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
