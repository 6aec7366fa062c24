"""What a scan searched: the plan of searches, what came of each, and the scan's status.

Pure: no I/O. A scan plans one search per backend x query x results page, in the order a
limit spends them (image searches first, then every query's first page before any second
page), and marks those that do not fit ``[search] max_requests_per_scan`` or a backend's
monthly budget as skipped. Each planned search ends as a :class:`SearchOutcome` (a row of
``search_coverage``): asked or not, answered (fully or in part) or not, and why. From them:

- the scan's status: ``completed`` when every planned search was answered in full,
  ``failed`` when none was answered, ``partial`` otherwise;
- per backend, a :class:`BackendCoverage` for the summary ("searched 18 of 24; Brave: rate
  limited") and for "monitoring degraded" (a backend that answered none of its searches).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime

from monitor.errors import SearchBackendError
from monitor.types import ResultKind, SearchQuery

__all__ = [
    "BackendCoverage",
    "PlannedSearch",
    "SearchOutcome",
    "backend_coverage",
    "budget_left",
    "coverage_line",
    "month_of",
    "plan_searches",
    "scan_status",
    "short_reason",
]

COMPLETED, PARTIAL, FAILED = "completed", "partial", "failed"
EXIT_CODES = {COMPLETED: 0, PARTIAL: 3, FAILED: 4}
"""``scan``'s exit code for a scan's status."""

_KIND_ORDER = (ResultKind.IMAGES, ResultKind.WEB)


def month_of(when: datetime) -> str:
    """The budget month of a UTC time: ``"2026-12"``."""
    return f"{when.year:04d}-{when.month:02d}"


def budget_left(monthly_budget: int | None, used: int) -> int | None:
    """Requests left this month under a budget (None: no budget set)."""
    return None if monthly_budget is None else max(monthly_budget - used, 0)


@dataclass(frozen=True, slots=True)
class PlannedSearch:
    """One search a scan means to send; ``skip`` says why it will not be (None: it will)."""

    backend: str
    query: SearchQuery
    page: int
    skip: str | None = None


def plan_searches(
    backends: Sequence[str],
    queries: Sequence[SearchQuery],
    pages: int,
    *,
    max_requests: int,
    budget_left: Mapping[str, int | None] | None = None,
    max_queries: int | None = None,
) -> list[PlannedSearch]:
    """Every search of a scan, in the order limits spend them: image queries before web ones,
    each query's page 1 before any page 2, backends in turn. Those of queries past
    ``max_queries`` (in the order given), past ``max_requests`` (all backends together) or past
    a backend's ``budget_left`` (None: no budget) get a ``skip``."""
    budget_left = dict(budget_left or {})
    total_left = max_requests
    over = set(queries[max_queries:]) if max_queries is not None else set()
    plan: list[PlannedSearch] = []
    for kind in _KIND_ORDER:
        for page in range(1, pages + 1):
            for query in (q for q in queries if q.kind is kind):
                for backend in backends:
                    left = budget_left.get(backend)
                    skip: str | None = None
                    if query in over:
                        skip = f"over the cap of {max_queries} queries per scan"
                    elif left is not None and left <= 0:
                        skip = "monthly budget used up"
                    elif total_left <= 0:
                        skip = f"over the cap of {max_requests} requests per scan"
                    else:
                        total_left -= 1
                        if left is not None:
                            budget_left[backend] = left - 1
                    plan.append(PlannedSearch(backend, query, page, skip))
    return plan


@dataclass(slots=True)
class SearchOutcome:
    """What came of one planned search (a row of ``search_coverage``)."""

    backend: str
    query: str
    kind: str
    page: int
    asked: bool = False
    answered: bool = False
    partial: bool = False
    results: int = 0
    requests: int = 0
    reason: str | None = None  # short: "rate limited", "unavailable"... None when answered
    detail: str | None = None  # the backend's message, or the engines that did not answer

    @classmethod
    def of(cls, planned: PlannedSearch) -> SearchOutcome:
        return cls(planned.backend, planned.query.text, planned.query.kind.value, planned.page)

    @property
    def skipped(self) -> bool:
        return not self.asked

    @property
    def failed(self) -> bool:
        return self.asked and not self.answered

    def as_row(self) -> dict[str, object]:
        return asdict(self)


def short_reason(exc: SearchBackendError) -> str:
    """A few words for a summary: why a backend did not answer a search."""
    from monitor.search.base import (
        BackendUnavailableError,
        BadAnswerError,
        EnginesUnresponsiveError,
        RateLimitedError,
    )

    reason = getattr(exc, "reason", None)  # monitor.search.pacing.SearchSkipped
    if isinstance(reason, str) and reason:
        return reason
    if isinstance(exc, RateLimitedError):
        return "rate limited"
    if isinstance(exc, EnginesUnresponsiveError):
        names = ", ".join(e for e, _ in exc.engines[:4])
        return f"no engine answered ({names})" if names else "no engine answered"
    if isinstance(exc, BackendUnavailableError):
        return "unavailable"
    if isinstance(exc, BadAnswerError):
        return "unreadable answer"
    name = type(exc).__name__
    if name == "JsonDisabledError":
        return "refused JSON (HTTP 403)"
    return "refused the search"


def scan_status(outcomes: Iterable[SearchOutcome]) -> str:
    """``completed`` (every planned search answered in full), ``failed`` (none answered, or
    nothing planned), else ``partial``."""
    items = list(outcomes)
    answered = [o for o in items if o.answered]
    if not answered:
        return FAILED
    if len(answered) == len(items) and not any(o.partial for o in answered):
        return COMPLETED
    return PARTIAL


@dataclass(slots=True)
class BackendCoverage:
    """One backend's share of a scan: planned, asked, answered (partial among them), failed,
    skipped searches, requests sent, why not (reason -> count), and budget left."""

    backend: str
    planned: int = 0
    asked: int = 0
    answered: int = 0
    partial: int = 0
    failed: int = 0
    skipped: int = 0
    results: int = 0
    requests: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    budget_left: int | None = None  # this month, after the scan; None: no budget set
    example: str | None = None  # the backend's message for the first search not answered

    @property
    def answered_none(self) -> bool:
        """It answered none of its searches: counts toward "monitoring degraded"."""
        return self.planned > 0 and self.answered == 0

    def first_reason(self) -> str | None:
        return next(iter(self.reasons), None)

    def as_json(self) -> dict[str, object]:
        return asdict(self)


def backend_coverage(
    outcomes: Iterable[SearchOutcome], backends: Sequence[str] = ()
) -> list[BackendCoverage]:
    """Per backend (in ``backends`` order, then any other), what its searches came to."""
    by_name: dict[str, BackendCoverage] = {b: BackendCoverage(b) for b in backends}
    reasons: dict[str, Counter[str]] = {}
    for o in outcomes:
        cov = by_name.setdefault(o.backend, BackendCoverage(o.backend))
        cov.planned += 1
        cov.asked += o.asked
        cov.answered += o.answered
        cov.partial += o.answered and o.partial
        cov.failed += o.failed
        cov.skipped += o.skipped
        cov.results += o.results
        cov.requests += o.requests
        if o.reason:
            reasons.setdefault(o.backend, Counter())[o.reason] += 1
            if cov.example is None and not o.answered:
                cov.example = o.detail or o.reason
    for name, counter in reasons.items():
        by_name[name].reasons = dict(counter.most_common())
    return list(by_name.values())


def coverage_line(coverage: Sequence[BackendCoverage]) -> str:
    """``"searched 18 of 24; brave: rate limited (6)"``: searches answered (fully or in part)
    of those planned, then each backend that missed some, with why."""
    planned = sum(c.planned for c in coverage)
    answered = sum(c.answered for c in coverage)
    parts = [f"searched {answered} of {planned}"]
    for c in coverage:
        if not c.reasons:
            continue
        why = ", ".join(f"{r} ({n})" if n > 1 else r for r, n in c.reasons.items())
        parts.append(f"{c.backend}: {why}")
    return "; ".join(parts)
