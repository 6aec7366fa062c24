"""Pacing of search requests: the token bucket (with an injected clock), waits a backend asks
for, and a loopback SearXNG paced at 5 requests a second.

No assertion here depends on how fast the machine is: the bucket and the paced backend run on
a virtual clock, and the one real-time check is a lower bound the bucket guarantees."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import httpx
import pytest

from monitor.config import SearchBackendConfig, SearchConfig
from monitor.search import RateInfo, RateLimitedError, SearchAnswer, create_backend
from monitor.search.pacing import (
    Limits,
    PacedBackend,
    SearchSkipped,
    TokenBucket,
    forget_shared,
    limits_for,
)
from monitor.testing.clock import VirtualClock
from monitor.testing.searxng import FakeSearxng
from monitor.testing.web import LoopbackWeb
from monitor.types import ResultKind, SearchQuery

Q = SearchQuery('"Jane Doe"', ResultKind.IMAGES)


@dataclass
class ScriptedBackend:
    """A backend answering from a script: an exception to raise or a RateInfo to return."""

    clock: VirtualClock
    script: list[object] = field(default_factory=list)
    name: str = "scripted"
    calls: list[float] = field(default_factory=list)

    async def search(self, query: SearchQuery, *, page: int = 1) -> SearchAnswer:
        self.calls.append(self.clock())
        step = self.script.pop(0) if self.script else None
        if isinstance(step, Exception):
            raise step
        return SearchAnswer(hits=[], rate=step if isinstance(step, RateInfo) else None)

    async def aclose(self) -> None:
        pass


def test_token_bucket_spaces_requests_by_the_rate_after_the_burst() -> None:
    clock = VirtualClock()
    bucket = TokenBucket(5.0, burst=1, clock=clock, sleep=clock.sleep)

    async def take(n: int) -> list[float]:
        times = []
        for _ in range(n):
            await bucket.acquire()
            times.append(clock())
        return times

    times = asyncio.run(take(10))
    assert times[-1] - times[0] == pytest.approx(1.8)  # 10 requests at 5/s: 9 gaps of 0.2 s
    assert all(b - a == pytest.approx(0.2) for a, b in zip(times, times[1:], strict=False))

    clock2 = VirtualClock()
    burst = TokenBucket(5.0, burst=4, clock=clock2, sleep=clock2.sleep)
    times = []

    async def burst_take() -> None:
        for _ in range(10):
            await burst.acquire()
            times.append(clock2())

    asyncio.run(burst_take())
    assert times[:4] == [times[0]] * 4  # the burst leaves at once
    assert times[-1] - times[0] == pytest.approx(6 / 5)  # then 5 a second


def test_token_bucket_shared_by_concurrent_searches_and_held_until_a_time() -> None:
    clock = VirtualClock()
    bucket = TokenBucket(2.0, burst=2, clock=clock, sleep=clock.sleep)
    taken: list[float] = []

    async def one() -> None:
        await bucket.acquire()
        taken.append(clock())

    async def main() -> None:
        await asyncio.gather(*(one() for _ in range(6)))
        bucket.hold_until(clock() + 30)
        await one()

    asyncio.run(main())
    assert sorted(taken[:6]) == taken[:6]
    assert taken[5] - taken[0] == pytest.approx(2.0)  # 4 after the burst, at 2 a second
    assert taken[6] - taken[5] == pytest.approx(30.0)  # held: nothing saved up meanwhile


def test_bucket_refuses_nonsense() -> None:
    with pytest.raises(ValueError):
        TokenBucket(0)
    with pytest.raises(ValueError):
        TokenBucket(1.0, burst=0)


def _paced(backend: ScriptedBackend, **kw: object) -> PacedBackend:
    limits = Limits(**{"rate": 100.0, "burst": 10, "concurrency": 1, "max_wait": 30.0, **kw})  # type: ignore[arg-type]
    return PacedBackend(backend, limits, clock=backend.clock, sleep=backend.clock.sleep)


def test_a_short_retry_after_is_waited_out_and_the_search_sent_once_more() -> None:
    clock = VirtualClock()
    backend = ScriptedBackend(clock, [RateLimitedError("429", retry_after=12.0)])
    answer = asyncio.run(_paced(backend).search(Q))
    assert answer.requests == 2  # both requests counted
    assert len(backend.calls) == 2 and backend.calls[1] - backend.calls[0] >= 12.0


def test_a_long_or_missing_retry_after_leaves_the_backend_alone() -> None:
    for retry_after in (3600.0, None):
        clock = VirtualClock()
        backend = ScriptedBackend(clock, [RateLimitedError("429", retry_after=retry_after)])
        paced = _paced(backend)

        async def run(p: PacedBackend = paced) -> list[object]:
            return await asyncio.gather(*(p.search(Q) for _ in range(4)), return_exceptions=True)

        results = asyncio.run(run())
        assert isinstance(results[0], RateLimitedError)
        assert all(isinstance(r, SearchSkipped) and r.reason == "rate limited" for r in results[1:])
        assert len(backend.calls) == 1  # nothing more was sent
        assert clock.slept == []  # and nothing waited for


def test_x_ratelimit_reset_holds_the_next_requests_when_short_and_skips_them_when_long() -> None:
    clock = VirtualClock()
    backend = ScriptedBackend(clock, [RateInfo(limit=10, remaining=0, reset_seconds=20.0)])
    paced = _paced(backend)

    async def two(p: PacedBackend) -> None:
        await p.search(Q)
        await p.search(Q)

    asyncio.run(two(paced))
    assert backend.calls[1] - backend.calls[0] >= 20.0

    clock = VirtualClock()
    backend = ScriptedBackend(clock, [RateInfo(limit=10, remaining=0, reset_seconds=86400.0)])
    paced = _paced(backend)
    with pytest.raises(SearchSkipped, match="rate limited"):
        asyncio.run(two(paced))
    assert len(backend.calls) == 1


def test_concurrency_limits_searches_in_flight() -> None:
    in_flight, most = 0, 0

    class Slow:
        name = "slow"

        async def search(self, query: SearchQuery, *, page: int = 1) -> SearchAnswer:
            nonlocal in_flight, most
            in_flight += 1
            most = max(most, in_flight)
            await asyncio.sleep(0.01)
            in_flight -= 1
            return SearchAnswer(hits=[])

        async def aclose(self) -> None:
            pass

    async def run() -> None:
        paced = PacedBackend(Slow(), Limits(rate=1000.0, burst=100, concurrency=2))
        await asyncio.gather(*(paced.search(Q) for _ in range(8)))

    asyncio.run(run())
    assert most == 2


def test_limits_come_from_the_backend_name_then_kind_then_the_defaults() -> None:
    cfg = SearchConfig(
        rate=3.0,
        burst=2,
        limits={"brave": {"rate": 1.0, "monthly_budget": 2000}, "mine": {"concurrency": 1}},
    )
    assert limits_for(cfg, "searxng@x") == Limits(3.0, 2, 4, 30.0, None)
    assert limits_for(cfg, "brave@api", "brave") == Limits(1.0, 2, 4, 30.0, 2000)
    assert limits_for(cfg, "mine", "brave") == Limits(3.0, 2, 1, 30.0, None)


def test_a_loopback_searxng_paced_at_5_a_second() -> None:
    """10 searches at 5/s (burst 1) through the real SearXNG backend and a loopback fake: on a
    virtual clock the requests leave 0.2 s apart; on the real clock they take at least 1.8 s
    (a lower bound the bucket guarantees, whatever the machine's load)."""
    fake = FakeSearxng()
    with LoopbackWeb() as web:
        url = fake.install(web)

        async def run(virtual: VirtualClock | None) -> list[float]:
            async with httpx.AsyncClient() as client:
                backend = create_backend(SearchBackendConfig(url=url), client)
                limits = Limits(rate=5.0, burst=1, concurrency=4)
                if virtual is None:
                    paced = PacedBackend(backend, limits)
                else:
                    paced = PacedBackend(backend, limits, clock=virtual, sleep=virtual.sleep)
                await asyncio.gather(*(paced.search(Q, page=p) for p in range(1, 11)))
                return paced.sent_at

        clock = VirtualClock()
        sent = sorted(asyncio.run(run(clock)))
        assert len(fake.queries) == 10
        assert [round(b - a, 6) for a, b in zip(sent, sent[1:], strict=False)] == [0.2] * 9

        fake.queries.clear()
        started = time.monotonic()
        asyncio.run(run(None))
        assert time.monotonic() - started >= 1.8 - 1e-6
        assert len(fake.queries) == 10


def test_scans_one_after_another_share_a_backends_pacing_state() -> None:
    clock = VirtualClock()
    backend = ScriptedBackend(clock, [RateLimitedError("429", retry_after=3600.0)])
    limits = Limits(rate=1000.0, burst=10)
    first = PacedBackend.shared(backend, limits)
    second = PacedBackend.shared(backend, limits)  # the next scan, in its own event loop
    assert first.state is second.state
    assert PacedBackend.shared(backend, Limits(rate=1.0)).state is not first.state
    with pytest.raises(RateLimitedError):
        asyncio.run(first.search(Q))
    with pytest.raises(SearchSkipped, match="left alone for 3600 s"):
        asyncio.run(second.search(Q))  # not sent
    assert len(backend.calls) == 1
    forget_shared()
    assert PacedBackend.shared(backend, limits).state is not first.state
