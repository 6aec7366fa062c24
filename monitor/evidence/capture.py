"""Capture one sighting into its evidence folder: the WARC, then (unless refused) a screenshot.

    async with Screenshotter(allow_private_networks=...) as shooter:   # optional, reusable
        result = await capture_sighting(settings, "case-12", page_url, image_url,
                                        may_show_minor=False, screenshotter=shooter)
    result.captures  # -> CaptureInfo for SightingInfo.captures
    result.files     # -> EvidenceFile for build_bundle

The WARC holds no image, video or frame (only their hashes), so it is taken even when the person
may be a minor; the screenshot is not (``may_show_minor=True`` skips it, see
:mod:`monitor.evidence.screenshot`).
A screenshot failure does not lose the WARC: it is reported in ``screenshot_error``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from monitor.config import FetchConfig
from monitor.evidence.bundle import CaptureInfo, EvidenceFile
from monitor.evidence.errors import MinorSafetyRefusal, ScreenshotError
from monitor.evidence.screenshot import ScreenshotInfo, Screenshotter
from monitor.evidence.store import capture_file_name, evidence_dir
from monitor.evidence.warc import ImageBytesHook, WarcCapture, fetch_and_capture_warc
from monitor.fetch import AddressPredicate, Resolver

__all__ = ["SightingCapture", "capture_sighting"]


class _Settings(Protocol):
    data_dir: Path
    fetch: FetchConfig


@dataclass(frozen=True, slots=True)
class SightingCapture:
    directory: Path
    warc: WarcCapture
    screenshot: ScreenshotInfo | None
    screenshot_error: str | None  # why there is no screenshot (refused, failed), if none
    captures: tuple[CaptureInfo, ...]
    files: tuple[EvidenceFile, ...]


async def capture_sighting(
    settings: _Settings,
    key: str,
    page_url: str,
    image_url: str | None,
    *,
    may_show_minor: bool,
    screenshotter: Screenshotter | None = None,
    screenshot: bool = True,
    resolver: Resolver | None = None,
    is_blocked: AddressPredicate | None = None,
    on_image_bytes: ImageBytesHook | None = None,
    matched_offset: float | None = None,
) -> SightingCapture:
    """Write ``<data_dir>/evidence/<key>/<time>-page.warc.gz`` and ``<time>-page.png``.

    Fetching obeys ``settings.fetch`` (address guard, robots.txt, caps). Without a
    ``screenshotter`` one is started for this call, with the same address rule. Raises
    :class:`~monitor.evidence.EvidenceError` if the page cannot be fetched.
    ``on_image_bytes``: see :func:`~monitor.evidence.warc.fetch_and_capture_warc` (an opted-in
    encrypted copy; never for a possible minor). For a video or an animation,
    ``matched_offset`` (seconds) marks the frame that matched among the sampled frames whose
    hashes the WARC holds (see :mod:`monitor.evidence.warc`).
    """
    if may_show_minor and on_image_bytes is not None:
        raise MinorSafetyRefusal(
            "no copy of an image is ever kept for a person who may be under 18"
        )
    directory = evidence_dir(settings, key)
    warc_path = directory / capture_file_name("page", suffix=".warc.gz")
    warc = await fetch_and_capture_warc(
        settings.fetch,
        page_url,
        image_url,
        warc_path,
        resolver=resolver,
        is_blocked=is_blocked,
        on_image_bytes=on_image_bytes,
        matched_offset=matched_offset,
    )
    captures = [
        CaptureInfo("warc", warc_path.name, warc.warc.created_at, warc.warc.sha256, page_url)
    ]
    files = [EvidenceFile(warc_path, warc.warc.sha256, "warc", f"web archive of {page_url}")]
    shot: ScreenshotInfo | None = None
    error: str | None = None
    focus = (image_url,) if image_url else ()
    if may_show_minor:
        error = "not taken: the person may be a minor"
    elif not screenshot:
        error = "not asked for"
    else:
        png_path = directory / capture_file_name("page", suffix=".png")
        try:
            if screenshotter is not None:
                shot = await screenshotter.capture(
                    page_url, png_path, may_show_minor=False, focus=focus
                )
            else:
                async with Screenshotter(
                    allow_private_networks=settings.fetch.allow_private_networks,
                    resolver=resolver,
                    is_blocked=is_blocked,
                    user_agent=settings.fetch.user_agent,
                ) as own:
                    shot = await own.capture(page_url, png_path, may_show_minor=False, focus=focus)
        except ScreenshotError as exc:
            error = str(exc)
    if shot is not None:
        captures.append(
            CaptureInfo("screenshot", shot.path.name, shot.captured_at, shot.sha256, page_url)
        )
        files.append(
            EvidenceFile(shot.path, shot.sha256, "screenshot", f"screenshot of {page_url}")
        )
    return SightingCapture(directory, warc, shot, error, tuple(captures), tuple(files))
