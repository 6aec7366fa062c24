"""Video sampling speed: frames spread over a whole video against the first minute only.

Videos are made in code (PyAV; scenes of synthetic photos changing every 10 s, 640x360, 25 fps,
a keyframe every 2 s or every 10 s), held in memory. For each, in the same run:

- first minute: a frame a second decoded from the start, up to ``max_frames`` (60) -- how
  videos were sampled before, which never looked past the first minute;
- whole video: :func:`monitor.video.sample_frames` with the scan's limits (a frame a second of
  a video up to a minute long; 60 frames spread evenly over a longer one, by seeking).

It prints the seconds each took (best of ``--repeats``), the last offset sampled and the ratio
whole / first minute.

    OMP_NUM_THREADS=1 taskset -c 0 python benchmarks/video_sampling.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import av  # noqa: E402

from monitor import video  # noqa: E402
from monitor.demo.photos import generate_photo  # noqa: E402
from tests.test_video import make_video  # noqa: E402

SIZE = (640, 360)
CASES = ((100, 2, "mp4"), (100, 10, "mp4"), (600, 2, "mp4"), (600, 10, "mp4"), (600, 10, "webm"))


def first_minute(data: bytes, limits: video.FrameLimits) -> list[video.Frame]:
    """The sampling before: a frame every ``every_seconds`` from the start, ``max_frames``."""
    deadline = time.monotonic() + limits.max_decode_seconds
    with video._open_video(av, data, limits) as container:
        stream = container.streams.video[0]
        return list(video._decode_every(container, stream, limits, deadline))


def best(fn, data: bytes, repeats: int) -> tuple[float, list[video.Frame]]:
    times, frames = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        frames = fn(data, video.FrameLimits())
        times.append(time.perf_counter() - started)
    return min(times), frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print("video                     first minute             whole video              ratio")
    for seconds, key_every, fmt in CASES:
        scenes = [(generate_photo(300 + i, SIZE).rotate(i % 7), 10.0) for i in range(seconds // 10)]
        data = make_video(scenes, fps=25, fmt=fmt, size=SIZE, gop=25 * key_every)
        old_s, old = best(first_minute, data, args.repeats)
        new_s, new = best(video.sample_frames, data, args.repeats)
        label = f"{seconds} s, key {key_every} s, {fmt}"
        print(
            f"{label:<25} {old_s:5.2f} s ({len(old)} to {old[-1].offset:5.1f} s)   "
            f"{new_s:5.2f} s ({len(new)} to {new[-1].offset:5.1f} s)   {new_s / old_s:4.2f}x"
        )


if __name__ == "__main__":
    main()
