"""Fixtures shared by the search backend tests: one loopback web per test module (stopping one
takes a while) with a fresh request log for each test, and an HTTP client.

tests/conftest.py loads this module as a plug-in, so a test module just names them (a module
that defines its own ``web`` or ``client`` fixture uses its own).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from monitor.testing.web import LoopbackWeb
from monitor.types import ResultKind, SearchQuery

__all__ = ["IMAGES_Q", "WEB_Q", "_shared_web", "client", "web"]

IMAGES_Q = SearchQuery('"Jane Doe"', ResultKind.IMAGES)
WEB_Q = SearchQuery('"Jane Doe"', ResultKind.WEB)


@pytest.fixture(scope="module")
def _shared_web() -> Iterator[LoopbackWeb]:
    with LoopbackWeb() as w:
        yield w


@pytest.fixture
def web(_shared_web: LoopbackWeb) -> LoopbackWeb:
    """The module's loopback web, its request log emptied."""
    _shared_web.requests.clear()
    return _shared_web


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as c:
        yield c
