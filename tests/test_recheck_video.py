"""Re-checks of a case that is a video: the video still on the page is online, not 'changed'."""

from __future__ import annotations

from monitor.cases.recheck import check_sighting
from monitor.config import FetchConfig
from monitor.demo.photos import generate_photo
from monitor.fetch import Fetcher
from monitor.testing.web import LoopbackWeb
from monitor.video import hash_media
from tests.test_video import make_video

THRESHOLDS = {"pdq": 52, "phash": 10}


async def test_a_video_case_is_online_while_its_video_is_on_the_page_and_gone_after() -> None:
    a, b, c = (generate_photo(seed, (320, 240)) for seed in (21, 22, 23))
    clip = make_video([(a, 1.0), (b, 2.0)])  # the matched part (b) is not the first frame
    other = make_video([(c, 2.0)])
    # What the case knows: the matched frame's hashes (b, at 1 s or later).
    known = next(f.hashes for f in hash_media(clip).frames if f.offset >= 1.5)
    with LoopbackWeb() as web:
        web.add("/clip.mp4", clip, "video/mp4")
        page = web.add("/post.html", '<video controls><source src="/clip.mp4"></video>')
        clip_url = web.url("/clip.mp4")
        async with Fetcher(FetchConfig(allow_private_networks=True)) as fetcher:
            still_there = await check_sighting(fetcher, page, clip_url, known, THRESHOLDS)
            web.add("/clip.mp4", other, "video/mp4")  # swapped for another video
            swapped = await check_sighting(fetcher, page, clip_url, known, THRESHOLDS)
            web.add("/post.html", "<p>removed</p>")
            web.add("/clip.mp4", clip, "video/mp4")  # unlinked, still served
            unlinked = await check_sighting(fetcher, page, clip_url, known, THRESHOLDS)
            web.remove("/clip.mp4")
            removed = await check_sighting(fetcher, page, clip_url, known, THRESHOLDS)
    assert still_there.state == "online", still_there.detail
    assert swapped.state == "changed", swapped.detail
    assert unlinked.state == "online" and "unlinked" in unlinked.detail, unlinked.detail
    assert removed.state == "gone", removed.detail
