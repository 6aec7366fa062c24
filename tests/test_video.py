"""Frames of videos and animations: sampled in memory, hashed, bounded, errors readable."""

from __future__ import annotations

import io
import struct
from fractions import Fraction

import av
import pytest
from PIL import Image

from monitor.demo.photos import generate_photo
from monitor.errors import NotAnImageError
from monitor.hashing import compute_hashes, hamming
from monitor.video import FrameLimits, hash_frames, is_animation, is_video, sample_frames

SIZE = (320, 240)


def _photos(*seeds: int) -> list[Image.Image]:
    return [generate_photo(seed, SIZE) for seed in seeds]


def _pdq(hashes) -> str:
    return hashes.get("pdq").value


def _png(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def make_video(
    scenes: list[tuple[Image.Image, float]],
    fps: int = 10,
    fmt: str = "mp4",
    size: tuple[int, int] = SIZE,
    gop: int | None = None,
) -> bytes:
    """An H.264 (mp4) or VP8 (webm) video showing each image for its number of seconds
    (images of ``size``; a keyframe every ``gop`` frames, else the encoder's default)."""
    buf = io.BytesIO()
    codec = "libx264" if fmt == "mp4" else "libvpx"
    with av.open(buf, mode="w", format=fmt) as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.time_base = Fraction(1, fps)
        if gop is not None:
            stream.codec_context.gop_size = gop
        pts = 0
        for image, seconds in scenes:
            for _ in range(round(seconds * fps)):
                frame = av.VideoFrame.from_image(image)
                frame.pts = pts
                pts += 1
                for packet in stream.encode(frame):
                    out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buf.getvalue()


LONG_SIZE = (128, 96)


def make_long_video(
    target: Image.Image,
    *,
    at: float = 88.0,
    lasting: float = 5.0,
    seconds: float = 100.0,
    fmt: str = "webm",
    first_seed: int = 200,
) -> bytes:
    """A low-resolution video (``LONG_SIZE``, 1 frame a second) of unrelated scenes, 10 s
    each, showing ``target`` (of ``LONG_SIZE``) only from ``at`` for ``lasting`` seconds."""
    scenes: list[tuple[Image.Image, float]] = []
    t, seed = 0.0, first_seed
    while t < at:
        length = min(10.0, at - t)
        scenes.append((generate_photo(seed, LONG_SIZE), length))
        t, seed = t + length, seed + 1
    scenes.append((target, lasting))
    if at + lasting < seconds:
        scenes.append((generate_photo(seed, LONG_SIZE), seconds - at - lasting))
    return make_video(scenes, fps=1, fmt=fmt, size=LONG_SIZE, gop=10)


def make_animation(images: list[Image.Image], fmt: str, duration_ms: int = 500) -> bytes:
    buf = io.BytesIO()
    images[0].save(buf, fmt, save_all=True, append_images=images[1:], duration=duration_ms, loop=0)
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["mp4", "webm"])
def test_a_video_is_sampled_about_once_a_second_and_each_frame_matches_its_scene(fmt) -> None:
    a, b = _photos(1, 2)
    data = make_video([(a, 2.0), (b, 1.5)], fmt=fmt)
    assert is_video(data)
    frames = hash_frames(data)
    assert [round(f.offset) for f in frames] == [0, 1, 2, 3]
    ref_a, ref_b = (_pdq(compute_hashes(_png(im))) for im in (a, b))
    for f in frames:
        near_a, near_b = hamming(_pdq(f.hashes), ref_a), hamming(_pdq(f.hashes), ref_b)
        expected_a = f.offset < 2.0
        assert (near_a <= 31) == expected_a and (near_b <= 31) != expected_a, (
            f.offset,
            near_a,
            near_b,
        )
    # The hashes name the whole file, not the frame, so a sighting points at the video.
    assert {f.hashes.sha256 for f in frames} == {compute_sha(data)}


def compute_sha(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def test_frame_count_is_bounded() -> None:
    (a,) = _photos(3)
    data = make_video([(a, 6.0)], fps=5)
    frames = sample_frames(data, FrameLimits(max_frames=3))
    assert len(frames) == 3
    sparse = sample_frames(data, FrameLimits(every_seconds=2.5))
    assert [round(f.offset, 1) for f in sparse] == [0.0, 2.6, 5.2]


@pytest.mark.parametrize("fmt", ["GIF", "WEBP", "PNG"])
def test_animated_images_are_hashed_on_several_frames(fmt) -> None:
    photos = _photos(4, 5, 6)
    data = make_animation(photos, fmt)
    assert is_animation(data) and not is_video(data)
    frames = hash_frames(data)
    assert [f.offset for f in frames] == [0.0, 0.5, 1.0]
    # The third frame (never the one a still-image decoder looks at) matches its photo.
    ref = _pdq(compute_hashes(_png(photos[2])))
    assert hamming(_pdq(frames[2].hashes), ref) <= 31
    assert hamming(_pdq(frames[0].hashes), ref) > 31


def test_long_animations_are_sampled_evenly_within_the_bound() -> None:
    photos = _photos(*range(10, 30))
    frames = sample_frames(make_animation(photos, "GIF", 100), FrameLimits(max_animation_frames=5))
    assert len(frames) == 5
    assert frames[0].offset == 0.0 and frames[-1].offset == pytest.approx(1.9)


def test_a_still_image_gives_one_frame() -> None:
    (a,) = _photos(7)
    assert not is_animation(_png(a))
    assert len(sample_frames(_png(a))) == 1


def test_a_truncated_video_keeps_the_frames_before_the_damage() -> None:
    a, b = _photos(8, 9)
    data = make_video([(a, 2.0), (b, 2.0)], fmt="webm")
    frames = sample_frames(data[: len(data) * 2 // 3])
    assert 1 <= len(frames) < 4


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 200, "not a decodable video"),
        (b"<html>not a video</html>", "not a decodable animation"),
        (b"", "not a decodable animation"),
    ],
)
def test_garbage_is_a_readable_error(data: bytes, reason: str) -> None:
    with pytest.raises(NotAnImageError, match=reason):
        hash_frames(data)


def test_an_animation_declaring_huge_dimensions_is_refused_before_decoding() -> None:
    (a,) = _photos(11)
    data = bytearray(make_animation([a, a.rotate(90)], "GIF"))
    data[6:10] = struct.pack("<HH", 60000, 60000)  # the logical screen size
    with pytest.raises(NotAnImageError, match="decompression bomb"):
        sample_frames(bytes(data))


def test_too_many_bytes_are_refused() -> None:
    with pytest.raises(NotAnImageError, match="more than"):
        sample_frames(b"\x1a\x45\xdf\xa3" + bytes(2000), FrameLimits(max_bytes=1000))


# ---------------------------------------------------------------- the whole of a long video


def _near(frames, ref: str, limit: int = 31) -> list[float]:
    return [f.offset for f in frames if hamming(_pdq(f.hashes), ref) <= limit]


@pytest.mark.parametrize("fmt", ["webm", "mp4"])
def test_a_long_video_is_sampled_over_its_whole_duration(fmt) -> None:
    target = generate_photo(31, LONG_SIZE)
    data = make_long_video(target, at=88.0, lasting=5.0, seconds=100.0, fmt=fmt)
    frames = hash_frames(data)  # the scan's limits: 60 frames
    offsets = [f.offset for f in frames]
    assert 50 <= len(frames) <= 60
    assert offsets == sorted(set(offsets)) and offsets[0] == 0.0 and offsets[-1] >= 95.0
    # The photo is only shown from 88 s to 93 s: found there (a first minute would miss it).
    near = _near(frames, _pdq(compute_hashes(_png(target))))
    assert near and all(88.0 <= at < 93.0 for at in near), (near, offsets)


def test_a_short_video_is_still_sampled_once_a_second() -> None:
    target = generate_photo(32, LONG_SIZE)
    data = make_long_video(target, at=40.0, lasting=3.0, seconds=50.0)
    frames = hash_frames(data)
    assert [f.offset for f in frames] == [float(s) for s in range(50)]
    assert _near(frames, _pdq(compute_hashes(_png(target)))) == [40.0, 41.0, 42.0]


def test_a_video_cut_at_the_byte_cap_is_sampled_over_what_was_read() -> None:
    target = generate_photo(33, LONG_SIZE)
    data = make_long_video(target, at=110.0, lasting=8.0, seconds=200.0)
    cut = data[: len(data) * 3 // 4]  # what a capped download holds: about 140 s of 200
    frames = hash_frames(cut, FrameLimits(max_frames=40))
    offsets = [f.offset for f in frames]
    assert 30 <= len(frames) <= 40 and offsets == sorted(set(offsets))
    # Spread over what the bytes hold (not over 200 s, nor only the first 40 s).
    assert 115.0 <= offsets[-1] <= 141.0
    near = _near(frames, _pdq(compute_hashes(_png(target))))
    assert near and all(110.0 <= at < 118.0 for at in near), (near, offsets)


def test_an_enrolled_video_is_sampled_over_its_whole_duration(monkeypatch, tmp_path) -> None:
    from datetime import timedelta

    from monitor import enrol, store
    from monitor.db import Database
    from monitor.db.models import ReferenceHash

    # Enrolment samples a frame a second up to 1800 frames; bounded at 20 here, a 100 s video
    # is "long" and its 20 frames must reach its end.
    monkeypatch.setattr(
        enrol, "VIDEO_FRAME_LIMITS", FrameLimits(max_frames=20, max_decode_seconds=60.0)
    )
    target = generate_photo(34, LONG_SIZE)
    video = tmp_path / "mine.webm"
    video.write_bytes(make_long_video(target, at=90.0, lasting=6.0, seconds=100.0))
    db = Database(f"sqlite:///{tmp_path / 'refs.db'}")
    try:
        with db.session() as s:
            subject = store.add_subject(s, "Video Ref", interval=timedelta(days=1))
            report = enrol.enrol_paths(s, subject, [video])
            assert report.enrolled == 1, report.errors
        with db.session() as s:
            rows = [
                (h.frame_offset, h.value) for h in s.query(ReferenceHash) if h.algorithm == "pdq"
            ]
    finally:
        db.dispose()
    offsets = sorted({at for at, _ in rows})
    assert len(offsets) <= 20 and offsets[-1] >= 90.0
    ref = _pdq(compute_hashes(_png(target)))
    assert any(hamming(value, ref) <= 31 and at >= 90.0 for at, value in rows)
