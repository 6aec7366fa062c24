"""A virtual clock for tests of pacing and spacing: time moves only when someone sleeps."""

from __future__ import annotations

import asyncio

__all__ = ["VirtualClock"]


class VirtualClock:
    """Call it for the time; ``await clock.sleep(s)`` records ``s`` and moves the time on by it
    at once (then yields to the event loop), so a test sees what was waited without waiting."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)
