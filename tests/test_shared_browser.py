"""`run` scans the people due together one after another, each in its own event loop; their
evidence shares one screenshot browser (monitor.cases.capture.shared_screenshots)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest

from monitor.cases import capture
from monitor.config import Settings


class FakeShooter:
    def __init__(self) -> None:
        self.running = True
        self.closed = False
        self.prepared = 0  # tabs asked for ahead of a scan's first capture

    def prepare(self) -> None:
        self.prepared += 1

    async def capture(self, url: str, out_path: Path, *, may_show_minor: bool) -> tuple[str, str]:
        return url, threading.current_thread().name

    async def aclose(self) -> None:
        self.closed = True


def test_scans_in_turn_share_one_browser_and_a_dead_one_is_replaced(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    started: list[FakeShooter] = []

    async def open_screenshotter(settings: Settings) -> tuple[Any, str | None]:
        started.append(FakeShooter())
        return started[-1], None

    monkeypatch.setattr(capture, "_open_screenshotter", open_screenshotter)
    settings = Settings(data_dir=tmp_path)

    async def one_scan() -> tuple[str, str]:
        host = capture._shared_browser(settings)
        assert host is not None
        shooter, problem = await host.open()
        assert problem is None
        return await shooter.capture(
            "http://example.org/", tmp_path / "x.png", may_show_minor=False
        )

    with capture.shared_screenshots(settings):
        assert capture._shared_browser(Settings(data_dir=tmp_path)) is None  # other settings
        first, second = asyncio.run(one_scan()), asyncio.run(one_scan())
        assert len(started) == 1  # one browser for both scans
        assert first[1] == second[1] == "screenshot-browser"  # on its own loop's thread
        assert started[0].prepared == 1  # the second scan's first tab, made as it opens it
        seen: list[object] = []
        other = threading.Thread(target=lambda: seen.append(capture._shared_browser(settings)))
        other.start()
        other.join()
        assert seen == [None]  # another thread (the re-check job) starts its own
        started[0].running = False  # the browser died: the next scan starts another
        asyncio.run(one_scan())
        assert len(started) == 2 and started[0].closed and not started[1].closed
    assert started[1].closed  # closed at the end of the block
    assert capture._shared_browser(settings) is None
