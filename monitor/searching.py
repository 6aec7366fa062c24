"""Search without scanning: a scan's plan for ``scan --dry-run``, and ``backends`` (each
configured backend checked with one cheap request).

A dry run builds the same plan a scan would (queries, pages, request cap, monthly budgets
from the database) and sends nothing: the backends are built, never asked.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict, dataclass, field

import httpx

from monitor import coverage, store
from monitor.config import SearchBackendConfig, Settings
from monitor.db import Database
from monitor.db.models import utcnow
from monitor.errors import ConfigError, SearchBackendError
from monitor.orgs import consent
from monitor.queries import ALL_QUERIES, build_queries
from monitor.search import SearchBackend, create_backend
from monitor.search.base import (
    BackendUnavailableError,
    BadAnswerError,
    EnginesUnresponsiveError,
    RateLimitedError,
)
from monitor.search.pacing import limits_for
from monitor.types import ResultKind, SearchQuery

__all__ = ["BackendPlan", "BackendReport", "check_backends", "exit_code", "fix_for", "plan_scan"]

CHECK_QUERY = SearchQuery('"weather"', ResultKind.WEB)
"""The one tiny search sent to a backend that has no cheaper ``check()``."""


def _no_backends() -> ConfigError:
    return ConfigError(
        "no search backend is configured: add a [[search.backends]] table with "
        'kind = "searxng" and the url of a SearXNG instance (see config/monitor.example.toml)'
    )


async def _build(
    settings: Settings, client: httpx.AsyncClient
) -> list[tuple[SearchBackendConfig, SearchBackend | None, str | None]]:
    """``(config, backend or None, why not)`` for each configured backend."""
    if not settings.search.backends:
        raise _no_backends()
    built: list[tuple[SearchBackendConfig, SearchBackend | None, str | None]] = []
    for cfg in settings.search.backends:
        try:
            built.append((cfg, create_backend(cfg, client), None))
        except ConfigError as exc:
            built.append((cfg, None, str(exc)))
    return built


# ---------------------------------------------------------------- scan --dry-run


@dataclass
class BackendPlan:
    """What a scan would send one backend: its searches (with why some would be skipped),
    the requests that makes, its monthly budget and what is left of it, the least time the
    pacing needs."""

    backend: str
    requests: int = 0
    skipped: int = 0
    monthly_budget: int | None = None
    used_this_month: int = 0
    budget_left: int | None = None  # before the scan
    rate: float = 0.0
    burst: int = 0
    min_seconds: float = 0.0
    searches: list[dict[str, object]] = field(default_factory=list)

    def as_json(self) -> dict[str, object]:
        return asdict(self)


def plan_scan(settings: Settings, db: Database, name: str) -> list[BackendPlan]:
    """The searches a scan of ``name`` would send now, per backend. Sends nothing."""
    with db.session() as s:
        subject = store.get_subject(s, name)
        # only what the person's consent allows (monitor/orgs/consent.py)
        scan_permit = consent.permit(s, subject)
        aliases = [a.alias for a in subject.aliases if scan_permit.allows_name(a.alias)]

    async def names() -> list[tuple[str, str]]:
        async with httpx.AsyncClient() as client:  # handed to the backends, never used
            built = await _build(settings, client)
        bad = [why for _, b, why in built if b is None]
        if bad:
            raise ConfigError(bad[0])
        return [(b.name, cfg.kind) for cfg, b, _ in built if b is not None]

    backends = [(n, k) for n, k in asyncio.run(names()) if scan_permit.allows_backend(n, k)]
    cfg = settings.search
    month = coverage.month_of(utcnow())
    with db.session() as s:
        used = store.search_usage(s, [n for n, _ in backends], month)
    plans: dict[str, BackendPlan] = {}
    left: dict[str, int | None] = {}
    for n, kind in backends:
        lim = limits_for(cfg, n, kind)
        left[n] = coverage.budget_left(lim.monthly_budget, used[n])
        plans[n] = BackendPlan(
            n,
            monthly_budget=lim.monthly_budget,
            used_this_month=used[n],
            budget_left=left[n],
            rate=lim.rate,
            burst=lim.burst,
        )
    plan = coverage.plan_searches(
        [n for n, _ in backends],
        build_queries(subject.name, aliases, ALL_QUERIES),
        cfg.pages_per_query,
        max_requests=cfg.max_requests_per_scan,
        budget_left=left,
        max_queries=cfg.max_queries_per_scan,
    )
    for p in plan:
        bp = plans[p.backend]
        bp.searches.append(
            {"query": p.query.text, "kind": p.query.kind.value, "page": p.page, "skip": p.skip}
        )
        if p.skip is None:
            bp.requests += 1
        else:
            bp.skipped += 1
    for bp in plans.values():
        bp.min_seconds = round(max(bp.requests - bp.burst, 0) / bp.rate, 1)
    return list(plans.values())


# ---------------------------------------------------------------- backends


@dataclass
class BackendReport:
    """One backend's check: did it answer, what it said, quota left where the API says,
    the fix in words when it failed, and its monthly budget."""

    backend: str
    kind: str
    ok: bool
    message: str
    fix: str | None = None
    quota_remaining: int | None = None
    requests: int = 0
    checked_with: str = "check"  # "check" (the backend's own), "search" (one tiny search)
    monthly_budget: int | None = None
    budget_left: int | None = None  # this month, after the check

    def as_json(self) -> dict[str, object]:
        return asdict(self)


def fix_for(exc: BaseException) -> str:
    """What to do about a backend that failed, in words."""
    if type(exc).__name__ == "JsonDisabledError":
        return (
            "add `json` to `search.formats` in the SearXNG instance's settings.yml and restart it"
        )
    if isinstance(exc, EnginesUnresponsiveError):
        return (
            "the search engines behind it are blocking it (CAPTCHA, rate limits): enable other "
            "engines in its settings.yml, run your own instance, or add another backend"
        )
    if isinstance(exc, RateLimitedError):
        wait = f" (it asks for {exc.retry_after:g} s)" if exc.retry_after is not None else ""
        return (
            f"it is limiting our requests{wait}: wait, lower [search] rate or "
            "[search.limits.<name>] rate for it, or use your own instance or an API plan"
        )
    if isinstance(exc, BackendUnavailableError):
        return (
            "check that it is running and reachable from here, and that its url in "
            "[[search.backends]] is right"
        )
    if isinstance(exc, BadAnswerError):
        return "its url may point at something else than its search API: check url and kind"
    if isinstance(exc, ConfigError):
        return str(exc)
    return "check its url and, for an API, its key, in [[search.backends]]"


async def _check_one(backend: SearchBackend) -> tuple[bool, str, int | None, int, str, str | None]:
    check = getattr(backend, "check", None)
    try:
        if callable(check):
            res = await check()
            ok = bool(res.ok)
            message = str(res.message)
            return (
                ok,
                message,
                res.quota_remaining,
                int(res.requests),
                "check",
                None if ok else message,
            )
        answer = await backend.search(CHECK_QUERY, page=1)
    except SearchBackendError as exc:
        return False, str(exc), None, 1, "check" if callable(check) else "search", fix_for(exc)
    quota = answer.rate.remaining if answer.rate is not None else None
    message = (
        f"answered one search ({len(answer.hits)} results); it has no cheaper check, so a "
        "search was sent instead"
    )
    if answer.partial:
        engines = ", ".join(e for e, _ in answer.unanswered)
        message += f"; engines that did not answer: {engines}"
    return True, message, quota, answer.requests, "search", None


def check_backends(settings: Settings, db: Database) -> list[BackendReport]:
    """Check every configured backend with one cheap request (counted in its monthly use)."""

    async def run() -> list[BackendReport]:
        reports: list[BackendReport] = []
        async with httpx.AsyncClient(headers={"User-Agent": settings.fetch.user_agent}) as client:
            built = await _build(settings, client)
            results = await asyncio.gather(
                *(_check_one(b) for _, b, _ in built if b is not None), return_exceptions=True
            )
            it = iter(results)
            for cfg, backend, why in built:
                unbuilt = cfg.name or (f"{cfg.kind}@{cfg.url}" if cfg.url else cfg.kind)
                name = backend.name if backend is not None else unbuilt
                if backend is None:
                    reports.append(
                        BackendReport(name, cfg.kind, False, why or "", fix=why, requests=0)
                    )
                    continue
                res = next(it)
                if isinstance(res, BaseException):
                    if not isinstance(res, Exception):
                        raise res
                    reports.append(
                        BackendReport(
                            name,
                            cfg.kind,
                            False,
                            f"{type(res).__name__}: {res}",
                            fix=fix_for(res),
                            requests=1,
                        )
                    )
                    continue
                ok, message, quota, requests, how, fix = res
                reports.append(
                    BackendReport(name, cfg.kind, ok, message, fix, quota, requests, how)
                )
                await backend.aclose()
        return reports

    reports = asyncio.run(run())
    month = coverage.month_of(utcnow())
    with db.session() as s:
        store.add_search_usage(s, {r.backend: r.requests for r in reports}, month)
        used = store.search_usage(s, [r.backend for r in reports], month)
    for r, cfg in zip(reports, settings.search.backends, strict=True):
        lim = limits_for(settings.search, r.backend, cfg.kind)
        r.monthly_budget = lim.monthly_budget
        r.budget_left = coverage.budget_left(lim.monthly_budget, used[r.backend])
    return reports


def exit_code(ok: list[bool]) -> int:
    """0 when every check passed, 4 when none did, else 3 (like ``scan``)."""
    if all(ok):
        return 0
    return 4 if not any(ok) else 3
