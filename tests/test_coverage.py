"""Honest coverage: what each scan searched, its status and exit code, request caps, monthly
budgets, rate limits, dry runs, merged hits, the `backends` check and the scheduler.

A scan's "nothing found" is only as good as what it searched: every test here checks that a
scan that could not look says so (status, coverage rows, summary, exit code, notice)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from sqlalchemy import func, select

from monitor import store
from monitor.cli import main
from monitor.config import SearchBackendConfig, Settings
from monitor.db import Database
from monitor.db.models import (
    Hit,
    OutboxMessage,
    Scan,
    SearchCoverage,
    SearchUsage,
    Subject,
    SubjectHealth,
)
from monitor.demo.photos import photo_bytes
from monitor.demo.transforms import decode, encode, resize
from monitor.enrol import enrol_images
from monitor.pipeline import run_scan, scan_subject
from monitor.scheduler import Scheduler
from monitor.search import SearchAnswer, register_backend
from monitor.testing.searxng import FakeSearxng
from monitor.testing.web import LoopbackWeb
from monitor.types import SearchQuery
from tests.conftest import run_cli as cli

NAME = "Marisol Quenby"
ALIAS = "M. Quenby"
REF = photo_bytes(731)
UNRESPONSIVE = json.dumps(
    {
        "query": "x",
        "results": [],
        "unresponsive_engines": [["google", "CAPTCHA"], ["bing", "timeout"]],
    }
)


@dataclass
class Env:
    web: LoopbackWeb
    fake: FakeSearxng
    url: str
    page: str
    image: str

    def settings(self, tmp_path: Path, **search: object) -> Settings:
        backends = search.pop("backends", [{"kind": "searxng", "url": self.url}])
        return Settings(
            data_dir=tmp_path / "data",
            search={"backends": backends, **search},
            fetch={"allow_private_networks": True, "timeout": 10},
            mail={"retry_base": "1s"},
            cases={"capture_evidence": False},
        )

    def config(self, tmp_path: Path, extra: str = "", backends: str | None = None) -> str:
        cfg = tmp_path / "monitor.toml"
        if backends is None:
            backends = f'[[search.backends]]\nkind = "searxng"\nurl = "{self.url}"\n'
        cfg.write_text(
            f'data_dir = "{tmp_path / "data"}"\n[search]\n{extra}\n{backends}'
            "[fetch]\nallow_private_networks = true\ntimeout = 10\n"
            "[cases]\ncapture_evidence = false\n"
        )
        return str(cfg)


@pytest.fixture
def env() -> Iterator[Env]:
    """A page holding an edited copy of the reference photo, found by the name (web) and by
    the name's image search."""
    fake = FakeSearxng(mix_general_into_images=False)
    with LoopbackWeb() as web:
        web.add("/p.html", b'<html><body><img src="/i.jpg"></body></html>', "text/html")
        web.add("/i.jpg", encode(resize(decode(REF), 0.7), "JPEG", 80), "image/jpeg")
        e = Env(web, fake, fake.install(web), web.url("/p.html"), web.url("/i.jpg"))
        fake.add_result(NAME, "general", {"url": e.page, "title": "a page"})
        fake.add_result(NAME, "images", {"url": e.page, "img_src": e.image})
        yield e


def open_db(settings: Settings) -> Database:
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    return Database(settings.database_url, key_file=settings.key_path)


def enrolled(db: Database, aliases: tuple[str, ...] = (ALIAS,)) -> int:
    with db.session() as s:
        subject = store.add_subject(s, NAME, aliases=aliases, interval=timedelta(hours=24))
        assert enrol_images(s, subject, [("ref", REF)]).enrolled == 1
        return subject.id


def scan(settings: Settings, db: Database, **kw: object):  # noqa: ANN201
    with ThreadPoolExecutor(2) as pool:
        return scan_subject(settings, db, NAME, pool=pool, deliver=False, **kw)  # type: ignore[arg-type]


def rows(db: Database, scan_id: int) -> list[SearchCoverage]:
    with db.session() as s:
        return store.scan_coverage(s, scan_id)


# ---------------------------------------------------------------- coverage rows and statuses


def test_every_planned_search_is_recorded_and_a_full_answer_is_completed(
    env: Env, tmp_path: Path
) -> None:
    settings = env.settings(tmp_path)
    db = open_db(settings)
    enrolled(db)
    summary = scan(settings, db)
    assert summary.status == "completed" and summary.matches == 1
    assert summary.searched == "searched 4 of 4" and summary.search_requests == 4
    got = rows(db, summary.scan_id)
    assert sorted((r.query, r.kind, r.page) for r in got) == [
        ('"M. Quenby"', "images", 1),
        ('"M. Quenby"', "web", 1),
        ('"Marisol Quenby"', "images", 1),
        ('"Marisol Quenby"', "web", 1),
    ]
    assert all(r.asked and r.answered and not r.partial and r.reason is None for r in got)
    assert {(r.query, r.kind): r.results for r in got}[('"Marisol Quenby"', "images")] == 1
    (cov,) = summary.coverage
    assert cov["planned"] == cov["answered"] == cov["requests"] == 4
    with db.session() as s:  # erasure takes the coverage rows with the scans
        store.erase_subject(s, NAME)
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(SearchCoverage)) == 0
    db.dispose()


def test_some_searches_failing_is_partial_and_none_answering_is_failed(
    env: Env, tmp_path: Path
) -> None:
    settings = env.settings(tmp_path)
    db = open_db(settings)
    enrolled(db)
    env.fake.fail_next(503)
    partial = scan(settings, db)
    assert partial.status == "partial"
    assert partial.searched.startswith("searched 3 of 4; searxng@")
    assert partial.searched.endswith(": unavailable")
    failed_rows = [r for r in rows(db, partial.scan_id) if not r.answered]
    assert [(r.asked, r.reason) for r in failed_rows] == [(True, "unavailable")]
    assert "HTTP 503" in (failed_rows[0].detail or "")

    env.fake.fail_next(200, body=UNRESPONSIVE, times=4)
    failed = scan(settings, db)
    assert failed.status == "failed" and failed.matches == 0
    assert failed.searched.startswith("searched 0 of 4")
    assert "no engine answered (google, bing) (4)" in failed.searched
    with db.session() as s:
        row = s.get(Scan, failed.scan_id)
        assert row is not None and row.status == "failed"
        assert (row.error or "").startswith("no search was answered: searched 0 of 4")

    # some engines unresponsive but results came: answered, in part
    env.fake.fail_next(
        200,
        body=json.dumps(
            {"results": [{"url": env.page}], "unresponsive_engines": [["google", "CAPTCHA"]]}
        ),
    )
    some = scan(settings, db)
    assert some.status == "partial" and some.searches_partial == 1
    (row,) = [r for r in rows(db, some.scan_id) if r.partial]
    assert row.answered and row.reason == "some engines did not answer"
    assert row.detail == "google (CAPTCHA)"
    db.dispose()


def test_all_unresponsive_searxng_fails_every_scan_and_tells_the_person_once(
    env: Env, tmp_path: Path
) -> None:
    settings = env.settings(tmp_path, degraded_after=3)
    db = open_db(settings)
    subject_id = enrolled(db)
    for _ in range(settings.search.degraded_after + 1):
        env.fake.fail_next(200, body=UNRESPONSIVE, times=4)
        assert scan(settings, db).status == "failed"
    with db.session() as s:
        kinds = list(s.scalars(select(OutboxMessage.kind).where(OutboxMessage.kind != "matches")))
        health = s.get(SubjectHealth, subject_id)
        assert health is not None and health.search_failures == 4
        assert "no search engine answered: google (CAPTCHA)" in (health.last_failure or "")
    assert kinds == ["degraded"]  # exactly one notice
    db.dispose()


# ---------------------------------------------------------------- caps, budgets, rate limits


def test_the_request_cap_counts_every_results_page_and_keeps_image_searches_first(
    env: Env, tmp_path: Path
) -> None:
    aliases = ("M. Q. One", "M. Q. Two", "M. Q. Three", "M. Q. Four")  # 5 names
    settings = env.settings(tmp_path, pages_per_query=3, max_requests_per_scan=10, burst=20)
    db = open_db(settings)
    enrolled(db, aliases)
    summary = scan(settings, db)
    assert len(env.fake.queries) == 10 == summary.search_requests  # not 30
    assert {(cat, page) for _, cat, page in env.fake.queries} == {("images", 1), ("images", 2)}
    got = rows(db, summary.scan_id)
    assert len(got) == 30 and sum(r.asked for r in got) == 10
    skipped = [r for r in got if not r.asked]
    assert {r.reason for r in skipped} == {"over the cap of 10 requests per scan"}
    assert summary.status == "partial" and summary.searches_skipped == 20
    assert "over the cap of 10 requests per scan (20)" in summary.searched
    db.dispose()


def test_queries_over_max_queries_per_scan_are_skipped_and_said_so(
    env: Env, tmp_path: Path
) -> None:
    settings = env.settings(tmp_path, max_queries_per_scan=2)
    db = open_db(settings)
    enrolled(db)
    summary = scan(settings, db)
    assert [c for _, c, _ in env.fake.queries] == ["images", "images"]  # images first
    assert summary.status == "partial"
    assert summary.searched.endswith(": over the cap of 2 queries per scan (2)")
    db.dispose()


def test_a_monthly_budget_is_kept_in_the_database_and_a_scan_searches_what_fits(
    env: Env, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = env.settings(tmp_path, limits={"searxng": {"monthly_budget": 6}})
    db = open_db(settings)
    enrolled(db)
    assert scan(settings, db).status == "completed"  # 4 of 6
    second = scan(settings, db)  # 2 left: the two image searches
    assert second.status == "partial" and len(env.fake.queries) == 6
    assert [c for _, c, _ in env.fake.queries[4:]] == ["images", "images"]
    assert "monthly budget used up (2)" in second.searched
    assert second.coverage[0]["budget_left"] == 0
    with db.session() as s:
        (usage,) = s.scalars(select(SearchUsage))
        assert usage.requests == 6 and len(usage.month) == 7
    third = scan(settings, db)
    assert third.status == "failed" and len(env.fake.queries) == 6  # nothing sent
    db.dispose()

    # the dry run says so too, and sends nothing
    extra = "[search.limits.searxng]\nmonthly_budget = 6\n"
    c = _cfg_with_limits(env, tmp_path, extra)
    code, out, _ = cli(capsys, "--config", c, "scan", NAME, "--dry-run", "--json")
    plan = json.loads(out)
    assert code == 0 and plan["requests"] == 0 and plan["backends"][0]["budget_left"] == 0
    assert {x["skip"] for x in plan["backends"][0]["searches"]} == {"monthly budget used up"}
    assert len(env.fake.queries) == 6


def _cfg_with_limits(env: Env, tmp_path: Path, limits: str) -> str:
    cfg = tmp_path / "limits.toml"
    cfg.write_text(
        f'data_dir = "{tmp_path / "data"}"\n'
        f'[[search.backends]]\nkind = "searxng"\nurl = "{env.url}"\n'
        f"{limits}[fetch]\nallow_private_networks = true\n[cases]\ncapture_evidence = false\n"
    )
    return str(cfg)


def test_a_long_retry_after_leaves_the_backend_alone_and_the_summary_says_rate_limited(
    env: Env, tmp_path: Path
) -> None:
    settings = env.settings(tmp_path, concurrency=1)
    db = open_db(settings)
    enrolled(db)
    env.fake.fail_next(429, {"Retry-After": "3600"})
    summary = scan(settings, db)
    assert len(env.fake.queries) == 1  # the other three were not sent
    assert summary.status == "failed"
    got = rows(db, summary.scan_id)
    assert [(r.asked, r.reason) for r in got] == [(True, "rate limited")] + [
        (False, "rate limited")
    ] * 3
    assert summary.searched.endswith(": rate limited (4)")
    # the next scan (the next person's, in `scan --all` or the scheduler) leaves it alone too
    again = scan(settings, db)
    assert again.status == "failed" and len(env.fake.queries) == 1
    assert {r.reason for r in rows(db, again.scan_id)} == {"rate limited"}
    db.dispose()


# ---------------------------------------------------------------- merged hits, case show


def test_hits_are_merged_across_backends_and_case_show_says_which_found_them(
    env: Env, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = FakeSearxng(mix_general_into_images=False)
    other_url = other.install(env.web, "/other/search")
    other.add_result(NAME, "general", {"url": env.page, "title": "the same page"})
    backends = (
        f'[[search.backends]]\nkind = "searxng"\nurl = "{env.url}"\nname = "alpha"\n'
        f'[[search.backends]]\nkind = "searxng"\nurl = "{other_url}"\nname = "beta"\n'
    )
    c = env.config(tmp_path, backends=backends)
    photos = tmp_path / "refs"
    photos.mkdir()
    (photos / "me.jpg").write_bytes(REF)
    cli(capsys, "--config", c, "subject", "add", NAME)
    cli(capsys, "--config", c, "enroll", NAME, str(photos))
    code, out, _ = cli(capsys, "--config", c, "scan", NAME, "--json")
    summary = json.loads(out)
    assert code == 0 and summary["status"] == "completed" and summary["matches"] == 1
    assert [b["backend"] for b in summary["coverage"]] == ["alpha", "beta"]
    settings = env.settings(tmp_path)
    db = open_db(settings)
    with db.session() as s:
        web_hits = s.execute(
            select(Hit.backend, Hit.backends).where(Hit.kind == "web", Hit.page_url == env.page)
        ).all()
    assert web_hits == [("alpha", "alpha,beta")]  # one row, both backends
    code, out, _ = cli(capsys, "--config", c, "cases", "--json")
    (case,) = json.loads(out)
    code, out, _ = cli(capsys, "--config", c, "case", "show", str(case["id"]), "--json")
    assert json.loads(out)["found_by"] == ["alpha", "beta"]
    code, out, _ = cli(capsys, "--config", c, "case", "show", str(case["id"]))
    assert "Found by: alpha, beta" in out
    db.dispose()


# ---------------------------------------------------------------- the command line


def test_scan_exit_codes_and_what_the_summary_says(
    env: Env, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    c = env.config(tmp_path)
    photos = tmp_path / "refs"
    photos.mkdir()
    (photos / "me.jpg").write_bytes(REF)
    cli(capsys, "--config", c, "subject", "add", NAME, "--alias", ALIAS)
    cli(capsys, "--config", c, "enroll", NAME, str(photos))

    code, out, _ = cli(capsys, "--config", c, "scan", NAME, "--json")
    data = json.loads(out)
    assert code == 0 and data["status"] == "completed" and data["searched"] == "searched 4 of 4"
    assert data["coverage"][0]["answered"] == 4

    env.fake.fail_next(403)
    code, out, _ = cli(capsys, "--config", c, "scan", NAME)
    assert code == 3
    assert "partial: searched 3 of 4; searxng@" in out and "refused JSON (HTTP 403)" in out

    env.fake.fail_next(200, body=UNRESPONSIVE, times=4)
    code, out, _ = cli(capsys, "--config", c, "scan", NAME)
    assert code == 4
    assert "0 matches" in out and "failed: searched 0 of 4" in out
    assert "not 'nothing found'" in out

    env.fake.fail_next(200, body=UNRESPONSIVE, times=4)
    code, out, _ = cli(capsys, "--config", c, "scan", "--all", "--json")
    assert code == 4 and json.loads(out)["scans"][0]["status"] == "failed"

    with pytest.raises(SystemExit):
        main(["scan", "--help"])
    helptext = capsys.readouterr().out
    for line in ("0  completed", "3  partial", "4  failed"):
        assert line in helptext


def test_dry_run_prints_the_requests_and_sends_nothing(
    env: Env, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    c = env.config(tmp_path, extra="pages_per_query = 2\nmax_requests_per_scan = 6")
    cli(capsys, "--config", c, "subject", "add", "José Núñez", "--alias", "@jnunez")
    code, out, _ = cli(capsys, "--config", c, "scan", "José Núñez", "--dry-run", "--json")
    plan = json.loads(out)
    assert code == 0 and plan["dry_run"] and plan["requests"] == 6
    (backend,) = plan["backends"]
    assert backend["requests"] == 6 and backend["budget_left"] is None
    texts = [(x["query"], x["kind"], x["page"], x["skip"]) for x in backend["searches"]]
    assert texts[:5] == [
        ('"José Núñez"', "images", 1, None),
        ('"Jose Nunez"', "images", 1, None),
        ('"@jnunez"', "images", 1, None),
        ("jnunez", "images", 1, None),
        ('"José Núñez"', "images", 2, None),
    ]
    assert sum(1 for t in texts if t[3]) == len(texts) - 6
    code, out, _ = cli(capsys, "--config", c, "scan", "José Núñez", "--dry-run")
    assert code == 0 and "nothing was sent" in out and "6 request(s)" in out
    assert env.fake.queries == []  # nothing was sent


# ---------------------------------------------------------------- backends


class _Checked:
    """A backend with its own cheap check (as Brave and SerpApi backends have)."""

    kind = "checked"

    def __init__(self, cfg: SearchBackendConfig, client: httpx.AsyncClient) -> None:
        self.name = cfg.name or "checked"

    async def check(self) -> SimpleNamespace:
        return SimpleNamespace(ok=True, message="key accepted", quota_remaining=1234, requests=1)

    async def search(self, query: SearchQuery, *, page: int = 1) -> SearchAnswer:
        raise AssertionError("check() is used, not a search")

    async def aclose(self) -> None:
        pass


class _Plain:
    """A plug-in backend without a check() of its own."""

    kind = "plain"

    def __init__(self, cfg: SearchBackendConfig, client: httpx.AsyncClient) -> None:
        self.name = cfg.name or "plain"

    async def search(self, query: SearchQuery, *, page: int = 1) -> SearchAnswer:
        return SearchAnswer([])

    async def aclose(self) -> None:
        pass


def test_backends_checks_each_one_and_says_what_to_fix(
    env: Env, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from monitor.search import base as search_base

    monkeypatch.setattr(search_base, "_REGISTRY", dict(search_base._REGISTRY))
    register_backend("checked-test")(_Checked)
    register_backend("plain-test")(_Plain)
    broken = FakeSearxng()
    broken.json_disabled = True
    broken_url = broken.install(env.web, "/broken/search")
    backends = (
        f'[[search.backends]]\nkind = "searxng"\nurl = "{env.url}"\nname = "good"\n'
        f'[[search.backends]]\nkind = "searxng"\nurl = "{broken_url}"\nname = "bad"\n'
        '[[search.backends]]\nkind = "checked-test"\nurl = "http://127.0.0.1:9"\nname = "api"\n'
        '[[search.backends]]\nkind = "plain-test"\nurl = "http://127.0.0.1:9"\nname = "plain"\n'
    )
    extra = "[search.limits.api]\nmonthly_budget = 100\n"
    env.fake.add_result("weather", "images", {"url": env.page, "img_src": env.image})
    c = env.config(tmp_path, backends=extra + backends)
    code, out, _ = cli(capsys, "--config", c, "backends", "--json")
    reports = {r["backend"]: r for r in json.loads(out)}
    assert code == 3
    # SearXNG checks itself with one image search for a neutral word
    assert reports["good"]["ok"] and reports["good"]["checked_with"] == "check"
    assert "1 image results" in reports["good"]["message"]
    # a plug-in backend without check(): one tiny search instead, and it says so
    assert reports["plain"]["ok"] and reports["plain"]["checked_with"] == "search"
    assert "a search was sent instead" in reports["plain"]["message"]
    assert not reports["bad"]["ok"] and "settings.yml" in reports["bad"]["fix"]
    assert reports["api"]["ok"] and reports["api"]["quota_remaining"] == 1234
    assert reports["api"]["checked_with"] == "check" and reports["api"]["budget_left"] == 99
    assert len(env.fake.queries) == 1 and len(broken.queries) == 1
    code, out, _ = cli(capsys, "--config", c, "backends")
    assert code == 3 and "FAILING bad" in out
    assert "enable json in search.formats" in out  # the fix in words, said once
    assert out.count("enable json in search.formats") == 1
    assert "quota left: 1234" in out


# ---------------------------------------------------------------- the scheduler


def test_the_scheduler_finishes_failed_and_partial_scans_and_delivers_their_alerts(
    env: Env, tmp_path: Path
) -> None:
    settings = env.settings(tmp_path, concurrency=1)  # one at a time: images go first
    db = open_db(settings)
    subject_id = enrolled(db, ())  # two searches: images, then web
    statuses: list[str] = []
    with ThreadPoolExecutor(2) as pool:

        def scan_fn(sid: int) -> object:
            summary = asyncio.run(run_scan(settings, db, sid, pool=pool))
            statuses.append(summary.status)
            return summary

        def due_again() -> None:
            with db.session() as s:
                subj = s.get(Subject, subject_id)
                assert subj is not None and subj.scan_lease_owner is None  # released
                assert subj.next_scan_at is not None
                subj.next_scan_at = None

        scheduler = Scheduler(db, settings, scan_fn)
        env.fake.fail_next(200, body=UNRESPONSIVE, times=2)
        assert scheduler.run_due() == [subject_id]  # no search answered: a finished scan
        due_again()
        env.fake.fail_next(503)  # the image search fails; the web search finds the page
        assert scheduler.run_due() == [subject_id]
        due_again()
    assert statuses == ["failed", "partial"]
    with db.session() as s:
        assert [x.status for x in s.scalars(select(Scan).order_by(Scan.id))] == statuses
        (alert,) = s.scalars(select(OutboxMessage).where(OutboxMessage.kind == "matches"))
        assert alert.status == "sent"  # the match of a partial scan is still delivered
    db.dispose()


def test_coverage_rows_and_monthly_counts_on_sqlite_and_postgresql(
    database_url: str, tmp_path: Path
) -> None:
    from monitor.coverage import PlannedSearch, SearchOutcome
    from monitor.types import ResultKind

    db = Database(database_url, key_file=tmp_path / "key")
    with db.session() as s:
        subject = store.add_subject(s, NAME, interval=timedelta(hours=24))
        scan_id = store.start_scan(s, subject.id).id
        planned = PlannedSearch("alpha", SearchQuery('"x"', ResultKind.IMAGES), 2)
        outcome = SearchOutcome.of(planned)
        outcome.reason, outcome.detail = "rate limited", "HTTP 429"
        store.record_coverage(s, scan_id, [outcome.as_row()])
        store.add_search_usage(s, {"alpha": 3, "beta": 0}, "2026-12")
    with db.session() as s:
        store.add_search_usage(s, {"alpha": 2}, "2026-12")
        store.add_search_usage(s, {"alpha": 7}, "2027-01")
        assert store.search_usage(s, ["alpha", "beta"], "2026-12") == {"alpha": 5, "beta": 0}
        (row,) = store.scan_coverage(s, scan_id)
        assert (row.backend, row.kind, row.page, row.asked, row.reason) == (
            "alpha",
            "images",
            2,
            False,
            "rate limited",
        )
        store.erase_subject(s, NAME)
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(SearchCoverage)) == 0
        assert s.scalar(select(func.count()).select_from(SearchUsage)) == 2  # no person in it
    db.dispose()
