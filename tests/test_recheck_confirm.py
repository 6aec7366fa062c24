"""Re-checks do not report live images as removed.

A page that no longer shows the image in its HTML (drawn by script, moved) while the image's
own address still serves it is "online, unlinked"; a place is gone only when the image's
address answers 404/410 or serves something else, and only when a second check at least
``[cases] recheck_confirm`` later still says so."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from monitor import cases
from monitor.cases.recheck import _due_cases
from monitor.db.models import CaseEvent, SightingState, utcnow
from monitor.demo.photos import photo_bytes
from tests.test_cases import World, _alerts, _events, _state, make_world

SCRIPTED = "<html><body><div id='album'></div><script src='/album.js'></script></body></html>"


@pytest.fixture
def world(tmp_path: Path):
    w = make_world(tmp_path, capture_evidence=False)
    yield w
    w.db.dispose()
    w.web.stop()


def _sighting_state(world: World) -> SightingState:
    with world.db.session() as s:
        (st,) = s.scalars(select(SightingState)).all()
        return st


def test_a_page_that_draws_the_image_by_script_is_online_unlinked_not_removed(
    world: World,
) -> None:
    page = world.publish("/post/1.html")
    world.scan()
    case_id = world.case_id()
    world.web.add("/post/1.html", SCRIPTED)  # the image is no longer in the HTML...
    for later in (timedelta(0), timedelta(hours=7), timedelta(days=3)):  # ...still served
        report = asyncio.run(
            cases.recheck_case(world.settings, world.db, case_id, now=utcnow() + later)
        )
        assert report.status == "new" and report.online == 1 and report.gone == 0
        assert report.missing == 0
    assert "online, unlinked" in report.details[0] and page in report.details[0]
    st = _sighting_state(world)
    assert st.state == "online" and st.gone_at is None
    assert "gone" not in _events(world.db, case_id)


def test_a_page_answering_404_while_the_image_is_served_is_online_unlinked(
    world: World,
) -> None:
    world.publish("/post/1.html")
    world.scan()
    case_id = world.case_id()
    world.web.remove("/post/1.html")
    report = asyncio.run(cases.recheck_case(world.settings, world.db, case_id))
    assert report.status == "new" and report.online == 1
    assert "online, unlinked" in report.details[0] and "HTTP 404" in report.details[0]


def test_gone_only_when_a_second_check_after_recheck_confirm_agrees(world: World) -> None:
    world.publish("/post/1.html")
    world.scan()
    case_id = world.case_id()
    assert world.settings.cases.recheck_confirm == timedelta(hours=6)
    alerts_before = len(_alerts(world.db))
    t0 = utcnow()
    world.web.remove("/img/1.jpg")  # the image's address answers 404; the page still links it

    first = asyncio.run(cases.recheck_case(world.settings, world.db, case_id, now=t0))
    assert first.status == "new" and first.missing == 1 and first.gone == 0
    st = _sighting_state(world)
    assert st.state == "missing" and st.gone_at == t0 and "HTTP 404" in st.detail
    # Not due yet for the confirmation; due once recheck_confirm has passed.
    confirm = world.settings.cases.recheck_confirm.total_seconds()
    every = world.settings.cases.recheck_every.total_seconds()
    assert _due_cases(world.db, t0 + timedelta(hours=5), every, confirm) == {}
    assert list(_due_cases(world.db, t0 + timedelta(hours=6), every, confirm).values()) == [
        [case_id]
    ]

    sooner = asyncio.run(
        cases.recheck_case(world.settings, world.db, case_id, now=t0 + timedelta(hours=5))
    )
    assert sooner.status == "new" and sooner.missing == 1  # too soon to confirm
    later = asyncio.run(
        cases.recheck_case(world.settings, world.db, case_id, now=t0 + timedelta(hours=6))
    )
    assert later.status == "removed" and later.gone == 1
    st = _sighting_state(world)
    assert st.state == "gone" and st.gone_at == t0
    with world.db.session() as s:
        gone = s.scalars(select(CaseEvent).where(CaseEvent.kind == "gone")).all()
    assert len(gone) == 1
    assert len(_alerts(world.db)) == alerts_before  # a removal does not alert


def test_a_missing_place_seen_again_is_simply_online(world: World) -> None:
    world.publish("/post/1.html")
    world.scan()
    case_id = world.case_id()
    alerts_before = len(_alerts(world.db))
    world.web.add("/img/1.jpg", photo_bytes(55, (640, 480)), "image/jpeg")  # swapped...
    report = asyncio.run(cases.recheck_case(world.settings, world.db, case_id))
    assert report.missing == 1 and "no longer matches" in report.details[0]
    world.web.add("/img/1.jpg", world.photo, "image/jpeg")  # ...and back (a CDN hiccup)
    report = asyncio.run(
        cases.recheck_case(world.settings, world.db, case_id, now=utcnow() + timedelta(hours=7))
    )
    assert report.status == "new" and report.online == 1 and report.reappeared == 0
    assert _state(world.db, case_id) == "new"
    st = _sighting_state(world)
    assert st.state == "online" and st.gone_at is None
    assert len(_alerts(world.db)) == alerts_before  # nothing reappeared: no alert
