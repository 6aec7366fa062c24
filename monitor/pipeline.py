"""The scan: subject -> queries -> search -> pages -> image candidates -> hashes -> matches.

Downloads run on one asyncio event loop (one httpx client, bounded concurrency); decoding and
hashing run in a process pool so the CPU work uses every core without stalling downloads.
Found image bytes are held in memory only, passed to a worker through a pipe, and dropped.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import multiprocessing
import os
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Any

import httpx
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from monitor import alerts, coverage, store
from monitor.config import FetchConfig, Settings
from monitor.db import Database
from monitor.db.models import Scan, Subject, utcnow
from monitor.errors import (
    ConfigError,
    FetchError,
    MonitorError,
    NotAnImageError,
    SearchBackendError,
)
from monitor.extract import VIDEO_SOURCES, charset_from_content_type, extract_images
from monitor.fetch import (
    ACCEPT_ENCODING,
    Fetcher,
    PartialResource,
    freshness_lifetime,
    shared_ssl_context,
)
from monitor.fetch import _size as format_size
from monitor.leases import scan_lease
from monitor.matching import MatchDetail, ReferenceIndex, match_how, thresholds_from_config
from monitor.orgs import consent
from monitor.orgs.consent import UNLIMITED, ConsentRequired, Permit
from monitor.pool import DeadlinePool, PoolTaskError
from monitor.queries import ALL_QUERIES, build_queries
from monitor.search import SearchBackend, create_backend
from monitor.search.pacing import PacedBackend, SearchSkipped, limits_for
from monitor.second_stage import is_second_stage, second_stage_from_bytes
from monitor.types import ImageCandidate, ImageHashes, ResultKind, SearchHit
from monitor.video import FrameHashes, FrameLimits, hash_media, may_have_frames

log = logging.getLogger("monitor.pipeline")


class NoReferences(MonitorError):
    """The subject has no enrolled reference hashes, so nothing could ever match."""


@dataclass
class ScanSummary:
    """What one scan did. ``as_json()`` is the ``scan --json`` output."""

    scan_id: int
    subject: str
    # completed: every planned search answered in full; partial: some failed, were skipped or
    # answered in part; failed: none answered (or the scan broke off). See monitor.coverage.
    status: str = "running"
    queries: int = 0  # searches planned: backends x queries x results pages
    searches_answered: int = 0  # answered, fully or in part
    searches_partial: int = 0  # answered, but some engines behind the backend did not answer
    searches_failed: int = 0  # sent, not answered
    searches_skipped: int = 0  # not sent: request cap, monthly budget, rate limit
    search_requests: int = 0  # search requests actually sent (results pages, retries)
    search_status: str = "failed"  # what the searches alone came to (the status, if no crash)
    coverage: list[dict[str, object]] = field(default_factory=list)  # per backend
    searched: str = ""  # "searched 18 of 24; brave: rate limited (6)"
    hits: int = 0
    pages: int = 0
    pages_unchanged: int = 0  # known from an earlier scan and unchanged (HTTP 304): not fetched
    pages_fresh: int = 0  # known and still fresh (Cache-Control, Expires): not even asked for
    images: int = 0
    images_hashed: int = 0
    images_unchanged: int = 0  # known from an earlier scan and unchanged (HTTP 304): not fetched
    images_fresh: int = 0  # known and still fresh (Cache-Control, Expires): not even asked for
    bytes_downloaded: int = 0  # body bytes received from the web (pages, images, robots.txt)
    matches: int = 0  # matched images seen in this scan (new or known)
    new_matches: int = 0
    new_sightings: int = 0  # new (page, image URL) places of matched images: what alerts report
    errors: int = 0
    alerts_queued: int = 0
    alerts_sent: int = 0
    alert_destinations: list[str] = field(default_factory=list)
    evidence_captured: int = 0  # sightings whose evidence (WARC, screenshot) was captured
    evidence_failed: int = 0  # captures that failed (recorded; retried on re-check)
    # Evidence per part, over the sightings tried (evidence_captured + evidence_failed):
    evidence_archives: int = 0  # web archives (WARC) written
    evidence_pages_reused: int = 0  # of those, pages archived as this scan received them
    evidence_screenshots: int = 0  # blurred screenshots written
    evidence_note: str = ""  # why no screenshot was taken (Chromium missing, turned off...)
    evidence_seconds: float = 0.0  # capturing, after the alert was sent (not in ``seconds``)
    alert_seconds: float | None = None  # from the start until the alert was delivered
    seconds: float = 0.0
    error_samples: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, object]:
        return asdict(self)

    def evidence_parts(self) -> str:
        """``archives 6/6, screenshots 0/6: Chromium is not installed ...``"""
        tried = self.evidence_captured + self.evidence_failed
        shots = f"screenshots {self.evidence_screenshots}/{tried}"
        if self.evidence_note:
            shots += f": {self.evidence_note}"
        return f"archives {self.evidence_archives}/{tried}, {shots}"


Progress = Callable[[ScanSummary, int], None]
"""Called as counts change with the summary so far and the number of images known to fetch."""

FetcherFactory = Callable[[FetchConfig], Fetcher]
"""Builds the scan's :class:`Fetcher` (tests pass one with their own resolver and address
rules); by default ``Fetcher(settings.fetch)``."""


HASH_TASK_TIMEOUT = 120.0
"""Seconds one image or video may take in the hashing pool before its worker is killed (a
video's decoding stops itself after ``FrameLimits.max_decode_seconds``; this is for a decoder
that hangs)."""


def hashing_pool(
    workers: int | None = None, task_timeout: float = HASH_TASK_TIMEOUT
) -> DeadlinePool:
    """A process pool for hashing, one worker per core by default, whose tasks have a deadline
    (:class:`monitor.pool.DeadlinePool`: a task still running after ``task_timeout`` seconds
    fails with :class:`~monitor.pool.TaskTimedOut`, its worker is killed and replaced).

    Workers fork from a server that has imported only :mod:`monitor.hashing` (not the caller's
    ``__main__`` with the database, HTTP and CLI libraries), so each costs tens of MB, not 100+.
    """
    ctx = multiprocessing.get_context("forkserver")
    # monitor.thumbnail: the screenshot's decoder pool (monitor.evidence.screenshot) is one too
    ctx.set_forkserver_preload(["monitor.hashing", "monitor.video", "monitor.thumbnail"])
    return DeadlinePool(
        partial(ProcessPoolExecutor, mp_context=ctx),
        workers or os.cpu_count() or 2,
        task_timeout,
    )


async def _all(aws: Iterable[Awaitable[Any]]) -> list[Any]:
    """``asyncio.gather`` of ``aws``, except that the first failure cancels the others and
    waits for them before it is raised: no task of a failed scan goes on recording (and
    holding alerts) after the scan was closed."""
    tasks = [asyncio.ensure_future(aw) for aw in aws]
    try:
        return await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


@contextmanager
def _pool_or(pool: Executor | None) -> Iterator[Executor]:
    if pool is not None:
        yield pool
        return
    own = hashing_pool()
    try:
        yield own
    finally:
        own.shutdown(wait=True, cancel_futures=True)


def _merge_hits(
    hits: Iterable[SearchHit],
) -> tuple[list[SearchHit], dict[tuple[str, str, str | None], list[str]]]:
    """Hits deduplicated across backends and queries (one per kind, page and image URL, the
    first found kept), and every backend that found each."""
    merged: dict[tuple[str, str, str | None], SearchHit] = {}
    found_by: dict[tuple[str, str, str | None], list[str]] = {}
    for hit in hits:
        key = (hit.query.kind.value, hit.page_url, hit.image_url)
        merged.setdefault(key, hit)
        names = found_by.setdefault(key, [])
        if hit.backend not in names:
            names.append(hit.backend)
    return list(merged.values()), found_by


def _backends(settings: Settings, client: httpx.AsyncClient) -> list[SearchBackend]:
    if not settings.search.backends:
        raise ConfigError(
            "no search backend is configured: add a [[search.backends]] table with "
            'kind = "searxng" and the url of a SearXNG instance (see config/monitor.example.toml)'
        )
    return [create_backend(cfg, client) for cfg in settings.search.backends]


WRITE_BATCH = 64
"""Images that matched nothing are written to the database this many at a time."""


class _Scan:
    """The state of one running scan (one subject)."""

    # What the person's consent allows (monitor/orgs/consent.py): which search backends may
    # receive the names. Unlimited for a person monitoring themselves.
    permit: Permit = UNLIMITED

    def __init__(
        self,
        settings: Settings,
        db: Database,
        subject_id: int,
        scan_id: int,
        summary: ScanSummary,
        index: ReferenceIndex,
        pool: Executor,
        progress: Progress | None,
        fetcher_factory: FetcherFactory = Fetcher,
    ) -> None:
        self.settings, self.db, self.subject_id, self.scan_id = settings, db, subject_id, scan_id
        self.summary, self.index, self.pool, self.progress = summary, index, pool, progress
        self.fetcher_factory = fetcher_factory
        self.fetched: list[store.FetchedImage] = []  # for the fetch cache, written with images
        self.image_tasks: dict[str, asyncio.Task[ImageHashes | None]] = {}
        self.seen_pairs: set[tuple[str, str]] = set()
        self.hash_by_sha: dict[str, asyncio.Future[ImageHashes | None]] = {}
        # Sampled frames of the videos and animations hashed (or known) in this scan, by
        # SHA-256; those sampled in this scan are stored with their image (unwritten_frames).
        self.frames_by_sha: dict[str, tuple[FrameHashes, ...]] = {}
        self.unwritten_frames: dict[str, tuple[FrameHashes, ...]] = {}
        # Stored frames of the images of fetch cache hits, looked up a page at a time.
        self.cached_frames: dict[str, tuple[FrameHashes, ...]] = {}
        self.frames_looked_up: set[str] = set()
        fetch_cfg = settings.fetch
        self.frame_limits = FrameLimits(
            max_bytes=max(fetch_cfg.max_video_bytes, fetch_cfg.max_image_bytes)
        )
        self.matched_images: set[str] = set()
        self.unwritten: list[store.SeenImage] = []
        # Fetch cache entries looked up a page at a time (see _look_up_cache).
        self.cache_hits: dict[str, store.CachedImage] = {}
        self.cache_looked_up: set[str] = set()
        # The page cache: entries of this scan's page URLs (looked up at once, see run()), and
        # pages fetched or revalidated, written a batch at a time.
        self.page_hits: dict[str, store.CachedPage] = {}
        self.fetched_pages: list[store.FetchedPage] = []
        self.in_flight = asyncio.Semaphore(settings.fetch.max_concurrency)
        # Evidence: the exchanges of pages as received (when capturing is on), kept for the
        # pages where a match was seen, so their WARC needs no second fetch (HTML only).
        self.recorder: Any = None
        self.matched_pages: set[str] = set()
        self.scanned_pages: dict[str, Any] = {}  # page URL -> cases.capture.ScannedPage
        # Called at the first new sighting committed (see run_scan: starts the browser)
        self.on_new_sighting: Callable[[], None] | None = None
        # Set to a list, image candidates are collected there instead of fetched and hashed:
        # the fetch stage of a queued scan (monitor/queue), whose hash stage takes them over.
        self.deferred: list[ImageCandidate] | None = None

    # -- recording

    def record(self, item: store.SeenImage) -> None:
        """Queue what was seen; write now if it is a match, else in batches.

        A match is committed (with its alert) as soon as it is seen, so a crash cannot lose it.
        Images that matched nothing are written in batches of :data:`WRITE_BATCH`: that keeps
        database work off the scan's critical path, and one lost in a crash is only fetched again
        by the next scan."""
        self.unwritten.append(item)
        if item.match is not None or len(self.unwritten) >= WRITE_BATCH:
            self.flush()

    def flush(self) -> None:
        if not self.unwritten:
            return
        batch, self.unwritten = self.unwritten, []
        with self.db.session() as s:
            subject = s.get(Subject, self.subject_id)
            assert subject is not None
            outcomes = store.record_images(s, subject, self.scan_id, batch)
            if self.unwritten_frames:  # before the cache entries that lead to them
                self.unwritten_frames = store.remember_frames(s, self.unwritten_frames)
            if self.fetched:
                fetched, self.fetched = self.fetched, []
                self.fetched = store.remember_fetches(s, fetched) + self.fetched
        for outcome in outcomes:
            self.summary.new_matches += outcome.new_match
            self.summary.new_sightings += outcome.alerted
            if outcome.new_sighting and self.on_new_sighting is not None:
                hook, self.on_new_sighting = self.on_new_sighting, None
                hook()
        self._tick()

    # -- bookkeeping

    def _tick(self) -> None:
        if self.progress is not None:
            self.progress(self.summary, len(self.image_tasks))

    def error(self, url: str, stage: str, reason: str) -> None:
        self.summary.errors += 1
        if len(self.summary.error_samples) < 20:
            self.summary.error_samples.append(f"{stage}: {reason}")
        # The reason can hold a URL or a search answer, so a name: only at DEBUG.
        log.info("scan %s: %s error", self.scan_id, stage)
        log.debug("scan %s: %s error: %s", self.scan_id, stage, reason)
        with self.db.session() as s:
            store.record_error(s, self.scan_id, url, stage, reason)
        self._tick()

    # -- stages

    async def search(
        self, backends: list[SearchBackend], name: str, aliases: list[str]
    ) -> list[SearchHit]:
        """Send the planned searches (paced per backend, within the request cap and monthly
        budgets), record what came of each (``search_coverage``), and return the hits merged
        across backends."""
        cfg = self.settings.search
        queries = build_queries(name, aliases, ALL_QUERIES)  # those over the cap: skipped
        names = [b.name for b in backends]
        limits = {b.name: limits_for(cfg, b.name, getattr(b, "kind", "")) for b in backends}
        month = coverage.month_of(utcnow())
        with self.db.session() as s:
            used = store.search_usage(s, names, month)
        budget_left = {
            n: coverage.budget_left(lim.monthly_budget, used[n]) for n, lim in limits.items()
        }
        plan = coverage.plan_searches(
            names,
            queries,
            cfg.pages_per_query,
            max_requests=cfg.max_requests_per_scan,
            budget_left=budget_left,
            max_queries=cfg.max_queries_per_scan,
        )
        paced = {b.name: PacedBackend.shared(b, limits[b.name]) for b in backends}
        outcomes = [coverage.SearchOutcome.of(p) for p in plan]
        answers: list[tuple[int, list[SearchHit]]] = []
        sent = 0  # requests sent (or about to be) in this scan, all backends together

        async def one(i: int, planned: coverage.PlannedSearch) -> None:
            nonlocal sent
            outcome = outcomes[i]
            if planned.skip is not None:
                outcome.reason = planned.skip
                return
            if sent >= cfg.max_requests_per_scan:  # retries used up the cap
                outcome.reason = f"over the cap of {cfg.max_requests_per_scan} requests per scan"
                return
            sent += 1
            try:
                answer = await paced[planned.backend].search(planned.query, page=planned.page)
            except SearchSkipped as exc:
                sent -= 1
                outcome.reason, outcome.detail = exc.reason, str(exc)
                return
            except SearchBackendError as exc:
                outcome.asked, outcome.requests = True, 1
                outcome.reason, outcome.detail = coverage.short_reason(exc), str(exc)
                self.error(f"search:{planned.backend}", "search", str(exc))
                return
            sent += answer.requests - 1
            outcome.asked = outcome.answered = True
            outcome.requests, outcome.results = answer.requests, len(answer.hits)
            if answer.partial:
                outcome.partial = True
                outcome.reason = "some engines did not answer"
                outcome.detail = ", ".join(f"{e} ({r})" if r else e for e, r in answer.unanswered)
            answers.append((i, answer.hits))

        self.summary.queries = len(plan)
        await _all(one(i, p) for i, p in enumerate(plan))
        hits, found_by = _merge_hits(hit for _, found in sorted(answers) for hit in found)
        requests = {n: 0 for n in names}
        for o in outcomes:
            requests[o.backend] += o.requests
        cov = coverage.backend_coverage(outcomes, names)
        for c in cov:
            left = budget_left.get(c.backend)
            c.budget_left = None if left is None else max(left - c.requests, 0)
        self.summary.search_requests = sum(requests.values())
        self.summary.searches_answered = sum(c.answered for c in cov)
        self.summary.searches_partial = sum(c.partial for c in cov)
        self.summary.searches_failed = sum(c.failed for c in cov)
        self.summary.searches_skipped = sum(c.skipped for c in cov)
        self.summary.coverage = [c.as_json() for c in cov]
        self.summary.search_status = coverage.scan_status(outcomes)
        self.summary.searched = coverage.coverage_line(cov)
        self.summary.hits = len(hits)
        with self.db.session() as s:
            store.record_hits(s, self.scan_id, hits, found_by)
            store.record_coverage(s, self.scan_id, (o.as_row() for o in outcomes))
            store.add_search_usage(s, requests, month)
        self._tick()
        return hits

    async def page(self, fetcher: Fetcher, url: str) -> None:
        fetch_cfg = self.settings.fetch
        limit = fetch_cfg.max_images_per_page
        cached = self.page_hits.pop(url, None)
        if cached is not None and cached.fresh(utcnow(), fetch_cfg.max_cache_age):
            self.summary.pages += 1  # the server said it stays so for now: not asked for
            self.summary.pages_unchanged += 1
            self.summary.pages_fresh += 1
            await self._page_candidates(fetcher, cached.image_candidates(limit=limit))
            return
        try:
            with self.recorder.recording() if self.recorder else nullcontext([]) as hops:
                res = await fetcher.fetch_page(
                    url,
                    partial=True,
                    etag=cached.etag if cached else None,
                    last_modified=cached.last_modified if cached else None,
                )
        except FetchError as exc:
            self.error(url, "page", exc.reason)
            return
        self.summary.pages += 1
        fresh_until = self._fresh_until(res.headers)
        if res.status == 304 and cached is not None:  # unchanged: reuse what was found on it
            self.summary.pages_unchanged += 1
            self._page_revalidated(cached, res.final_url, res.headers, fresh_until)
            await self._page_candidates(fetcher, cached.image_candidates(res.final_url, limit))
            return
        final_url, etag, modified = (
            res.final_url,
            res.headers.get("etag"),
            res.headers.get("last-modified"),
        )
        as_received = self.recorder.exchanges(hops, res) if self.recorder else None
        received = time.monotonic()
        if isinstance(res, PartialResource):  # padded past the cap: still look at the start
            size = format_size(res.limit)
            self.error(
                url, "page", f"larger than the {size} limit; only its first {size} were read"
            )
            # Only its start was read: not cached (and an entry stored before is dropped).
            etag = modified = fresh_until = None
        extract = partial(
            extract_images,
            res.body,
            res.final_url,
            limit=limit,
            encoding=charset_from_content_type(res.content_type),
        )
        # A big page takes lxml a while: parse it off the event loop, so downloads and their
        # timeouts go on meanwhile.
        big = len(res.body) > 256_000
        del res
        candidates = await asyncio.to_thread(extract) if big else extract()
        if len(candidates) >= limit:  # maybe cut at the limit: the list is not stored, so a
            etag = modified = fresh_until = None  # stored one is complete whatever the limit
        if fetch_cfg.conditional_requests and (cached or etag or modified or fresh_until):
            self._remember_page(
                store.FetchedPage.of(url, final_url, etag, modified, fresh_until, candidates)
            )
        await self._page_candidates(fetcher, candidates)
        if as_received is not None and final_url in self.matched_pages:
            from monitor.cases.capture import ScannedPage

            self.scanned_pages[final_url] = ScannedPage(as_received, received)

    async def _page_candidates(self, fetcher: Fetcher, candidates: list[ImageCandidate]) -> None:
        self._look_up_cache(candidates)
        await _all(self.candidate(fetcher, c) for c in candidates)

    async def candidate(self, fetcher: Fetcher, cand: ImageCandidate) -> None:
        if self.deferred is not None:
            self.deferred.append(cand)
            return
        key = (cand.page_url, cand.image_url)
        if key in self.seen_pairs:
            return
        self.seen_pairs.add(key)
        task = self.image_tasks.get(cand.image_url)
        if task is None:
            video = cand.source in VIDEO_SOURCES
            task = asyncio.create_task(self.image(fetcher, cand.image_url, video=video))
            self.image_tasks[cand.image_url] = task
            self._tick()
        hashes = await task
        if hashes is None:
            return
        detail = self._match(hashes)
        if detail is not None:
            self.matched_pages.add(cand.page_url)
        if detail is not None and hashes.sha256 not in self.matched_images:
            self.matched_images.add(hashes.sha256)
            self.summary.matches += 1
        self.record(
            store.SeenImage(cand.page_url, cand.image_url, hashes, None)
            if detail is None
            else store.SeenImage(
                cand.page_url,
                cand.image_url,
                hashes,
                detail.result,
                detail.frame_offset,
                detail.reference_offset,
                match_how(detail),
            )
        )

    def _match(self, hashes: ImageHashes) -> MatchDetail | None:
        """The best match of an image (every hash it has: the whole picture's and its content
        boxes', fresh or stored), or of any sampled frame of a video or animation; with which
        hashes matched and the offsets of the frames (found, reference)."""
        frames = self.frames_by_sha.get(hashes.sha256)
        if frames:
            detail = self.index.match_frames(
                [(0.0, hashes), *((f.offset, f.hashes) for f in frames)]
            )
        else:
            detail = self.index.match_detail(hashes)
        return detail

    async def image(self, fetcher: Fetcher, url: str, *, video: bool = False) -> ImageHashes | None:
        cached = self._cached(url)
        if cached is not None and cached.fresh(utcnow(), self.settings.fetch.max_cache_age):
            self.summary.images += 1  # the server said it stays so for now: not asked for
            self.summary.images_unchanged += 1
            self.summary.images_fresh += 1
            return self._reuse(cached)
        # A slot is held from download to hash: downloads can outpace hashing, and without this
        # limit fetched bodies would queue up in memory waiting for a worker.
        async with self.in_flight:
            try:
                if video:  # a long video: its start, up to max_video_bytes, is sampled
                    res = await fetcher.fetch_video(
                        url,
                        etag=cached.etag if cached else None,
                        last_modified=cached.last_modified if cached else None,
                        partial=True,
                    )
                else:
                    res = await fetcher.fetch_image(
                        url,
                        etag=cached.etag if cached else None,
                        last_modified=cached.last_modified if cached else None,
                    )
            except FetchError as exc:
                self.error(url, "video" if video else "image", exc.reason)
                return None
            self.summary.images += 1
            fresh_until = self._fresh_until(res.headers)
            if res.status == 304 and cached is not None:  # unchanged: reuse its hashes
                self.summary.images_unchanged += 1
                self._revalidated(cached, res.headers, fresh_until)
                return self._reuse(cached)
            if isinstance(res, PartialResource):
                size = format_size(res.limit)
                reason = f"larger than the {size} limit; only its first {size} were sampled"
                self.error(url, "video", reason)
            body, etag, modified = (
                res.body,
                res.headers.get("etag"),
                res.headers.get("last-modified"),
            )
            del res
            sha = hashlib.sha256(body).hexdigest()
            fut = self.hash_by_sha.get(sha)
            if fut is None:
                fut = asyncio.get_running_loop().create_future()
                self.hash_by_sha[sha] = fut
                hashed = await self._hash(url, sha, body)
                fut.set_result(await self._second_stage(url, hashed, body))
            del body
        hashes = await fut  # the same bytes at another URL are hashed once
        remember = self.settings.fetch.conditional_requests and (
            cached or etag or modified or fresh_until
        )
        # With a video's or an animation's frames (stored with its image, see _hash).
        if hashes is not None and remember:
            self.fetched.append(store.FetchedImage(url, sha, etag, modified, fresh_until))
        return hashes

    # -- the fetch cache

    def _look_up_cache(self, candidates: list[ImageCandidate]) -> None:
        """Look up the cache entries of a page's new image URLs in one query (not one each);
        :meth:`_cached` takes them from here."""
        if not self.settings.fetch.conditional_requests:
            return
        urls = {
            c.image_url
            for c in candidates
            if c.image_url not in self.image_tasks and c.image_url not in self.cache_looked_up
        }
        if not urls:
            return
        with self.db.engine.connect() as conn:
            hits = store.cached_images(conn, urls)
            # ...and the stored frames of those that are videos or animations (one query more).
            shas = {c.hashes.sha256 for c in hits.values()} - self.frames_looked_up
            if shas:
                self.cached_frames.update(store.known_frames(conn, shas))
                self.frames_looked_up |= shas
        self.cache_hits.update(hits)
        self.cache_looked_up |= urls

    def _cached(self, url: str) -> store.CachedImage | None:
        """What an earlier scan stored for this image URL (validators and hashes), if any."""
        if not self.settings.fetch.conditional_requests:
            return None
        if url in self.cache_looked_up:
            return self.cache_hits.pop(url, None)
        with self.db.engine.connect() as conn:
            return store.cached_image(conn, url)

    def _reuse(self, cached: store.CachedImage) -> ImageHashes:
        """The hashes of an image URL found unchanged; for a video or an animation its stored
        frames are matched too (no download, no decoding)."""
        sha = cached.hashes.sha256
        if sha not in self.frames_by_sha:
            if sha in self.frames_looked_up:
                frames = self.cached_frames.get(sha)
            else:
                with self.db.engine.connect() as conn:
                    frames = store.known_frames(conn, [sha]).get(sha)
            if frames:
                self.frames_by_sha[sha] = frames
        return cached.hashes

    def _fresh_until(self, headers: dict[str, str]) -> datetime | None:
        """Until when a response may be reused without asking: its freshness (Cache-Control,
        Expires), capped by ``[fetch] max_cache_age``; None when it must be asked for again."""
        cap = self.settings.fetch.max_cache_age.total_seconds()
        lifetime = min(freshness_lifetime(headers), cap)
        return utcnow() + timedelta(seconds=lifetime) if lifetime > 0 else None

    def _revalidated(
        self, cached: store.CachedImage, headers: dict[str, str], fresh_until: datetime | None
    ) -> None:
        """A 304: store the validators and freshness it came with (if they tell anything new),
        so the next scan can skip the request while it stays fresh."""
        etag = headers.get("etag") or cached.etag
        modified = headers.get("last-modified") or cached.last_modified
        if fresh_until is None and (etag, modified) == (cached.etag, cached.last_modified):
            return  # nothing new: no write
        self.fetched.append(
            store.FetchedImage(cached.url, cached.hashes.sha256, etag, modified, fresh_until)
        )

    # -- the page cache

    def _look_up_pages(self, urls: list[str]) -> None:
        """Look up the cache entries of the scan's page URLs in one query (a few for many)."""
        if not self.settings.fetch.conditional_requests or not urls:
            return
        with self.db.engine.connect() as conn:
            self.page_hits = store.cached_pages(conn, urls)

    def _page_revalidated(
        self,
        cached: store.CachedPage,
        final_url: str,
        headers: dict[str, str],
        fresh_until: datetime | None,
    ) -> None:
        """A 304 for a page: store the validators, freshness and redirect it came with (if
        they tell anything new), so the next scan can skip the request while it stays fresh."""
        etag = headers.get("etag") or cached.etag
        modified = headers.get("last-modified") or cached.last_modified
        same = (etag, modified, final_url) == (cached.etag, cached.last_modified, cached.final_url)
        if fresh_until is None and same:
            return  # nothing new: no write
        self._remember_page(
            store.FetchedPage(cached.url, final_url, etag, modified, fresh_until, cached.candidates)
        )

    def _remember_page(self, fetched: store.FetchedPage) -> None:
        self.fetched_pages.append(fetched)
        if len(self.fetched_pages) >= WRITE_BATCH:
            self._write_pages()

    def _write_pages(self) -> None:
        """Write the page cache entries of the pages fetched so far. One lost in a crash only
        means the page is downloaded whole again by the next scan."""
        if not self.fetched_pages:
            return
        batch, self.fetched_pages = self.fetched_pages, []
        with self.db.session() as s:
            store.remember_pages(s, batch)

    async def _hash(self, url: str, sha: str, body: bytes) -> ImageHashes | None:
        try:
            media_bytes = may_have_frames(body)  # a video, or maybe an animation
            with self.db.engine.connect() as conn:
                hashes = store.known_image(conn, sha)
                if hashes is not None and media_bytes:
                    # Known by its bytes only with its sampled frames (else sampled again).
                    frames = store.known_frames(conn, [sha]).get(sha)
                    if frames is None:
                        hashes = None
                    elif frames:
                        self.frames_by_sha[sha] = frames
            if hashes is None:
                loop = asyncio.get_running_loop()
                media = await loop.run_in_executor(self.pool, hash_media, body, self.frame_limits)
                self.summary.images_hashed += 1
                if media.frames:
                    self.frames_by_sha[sha] = media.frames
                if media_bytes:  # stored with the image (() for a still), see flush()
                    self.unwritten_frames[sha] = media.frames
                hashes = media.still
            return hashes
        except (NotAnImageError, PoolTaskError) as exc:  # PoolTaskError: hung, or crashed
            self.error(url, "hash", str(exc))
        except Exception as exc:  # a worker crash must not end the scan
            self.error(url, "hash", f"hashing failed: {exc!r}")
        return None

    async def _second_stage(
        self, url: str, hashes: ImageHashes | None, body: bytes
    ) -> ImageHashes | None:
        """``hashes`` with the second-stage hashes (:mod:`monitor.second_stage`) when the
        image, a still, matches nothing but is in the grey zone; made from ``body``, in memory,
        and stored with the image's other hashes. An error leaves ``hashes`` as they are."""
        cfg = self.settings.match
        if (
            hashes is None
            or not cfg.second_stage
            or hashes.sha256 in self.frames_by_sha  # a video or an animation: frames matched
            or any(is_second_stage(h.algorithm) for h in hashes.hashes)  # known with them
            or self.index.match_detail(hashes) is not None
            or not self.index.grey(hashes, cfg.second_stage_grey)
        ):
            return hashes
        try:
            loop = asyncio.get_running_loop()
            extra = await loop.run_in_executor(
                self.pool,
                partial(second_stage_from_bytes, max_pixels=self.frame_limits.max_pixels),
                body,
            )
        except (NotAnImageError, PoolTaskError) as exc:
            self.error(url, "hash", f"second stage: {exc}")
            return hashes
        return ImageHashes(hashes.sha256, hashes.width, hashes.height, hashes.hashes + extra)

    async def run(self, name: str, aliases: list[str]) -> None:
        fetch_cfg = self.settings.fetch
        search_headers = {"User-Agent": fetch_cfg.user_agent, "Accept-Encoding": ACCEPT_ENCODING}
        async with (
            httpx.AsyncClient(headers=search_headers, verify=shared_ssl_context()) as search_client,
            self.fetcher_factory(fetch_cfg) as fetcher,
        ):
            if self.settings.cases.capture_evidence:
                from monitor.evidence.warc import PageRecorder

                self.recorder = PageRecorder(fetcher)
            backends = [
                b
                for b in _backends(self.settings, search_client)
                if self.permit.allows_backend(b.name, getattr(b, "kind", ""))
            ]
            if not backends:
                raise ConsentRequired("the consent allows none of the configured search backends")
            hits = await self.search(backends, name, aliases)
            page_urls: list[str] = []
            seen_pages: set[str] = set()
            direct: list[ImageCandidate] = []
            for hit in hits:
                if hit.query.kind is ResultKind.IMAGES and hit.image_url:
                    direct.append(ImageCandidate(hit.image_url, hit.page_url, "search"))
                elif hit.page_url not in seen_pages:
                    seen_pages.add(hit.page_url)
                    page_urls.append(hit.page_url)
            page_urls = page_urls[: fetch_cfg.max_pages_per_scan]
            self._look_up_cache(direct)
            self._look_up_pages(page_urls)
            try:
                await _all(
                    [
                        *(self.candidate(fetcher, c) for c in direct),
                        *(self.page(fetcher, u) for u in page_urls),
                    ]
                )
            finally:
                self.summary.bytes_downloaded = fetcher.bytes_downloaded
        self.flush()
        self._write_pages()
        if self.deferred is None:
            self._forget_old_hashes()

    async def run_images(self, candidates: list[ImageCandidate]) -> None:
        """Fetch, hash, match and record image candidates found by :meth:`run` with
        ``deferred`` set (in another process: the hash stage of a queued scan)."""
        async with self.fetcher_factory(self.settings.fetch) as fetcher:
            self._look_up_cache(candidates)
            try:
                await _all(self.candidate(fetcher, c) for c in candidates)
            finally:
                self.summary.bytes_downloaded += fetcher.bytes_downloaded
        self.flush()
        self._forget_old_hashes()

    def _forget_old_hashes(self) -> None:
        """Delete the hashes of images no person matched and no scan saw for ``[match]
        keep_seen_days`` (kept till then so that a photo enrolled later is matched against
        them, see monitor/retro.py)."""
        keep = timedelta(days=self.settings.match.keep_seen_days)
        try:
            with self.db.session() as s:
                store.forget_unmatched_hashes(s, keep=keep)
        except Exception:  # housekeeping: the scan's results are committed; try next scan
            log.warning("scan %s: forgetting old hashes failed", self.scan_id, exc_info=True)


def _recover_interrupted(db: Database, settings: Settings, subject_id: int) -> None:
    """Mark scans left 'running' by a killed process as interrupted and release their alerts.

    Called while holding the subject's scan lease, so no other scan of it is running."""
    with db.session() as s:
        s.execute(
            update(Scan)
            .where(Scan.subject_id == subject_id, Scan.status == "running")
            .values(status="interrupted", finished_at=utcnow())
        )
        alerts.release_alerts(s, settings)


def _note_search_health(
    s: Session, settings: Settings, subject_id: int, summary: ScanSummary
) -> bool:
    """Count the scan towards "monitoring degraded": it failed its search when a backend
    answered none of its searches (failed, all engines unresponsive, skipped for a rate limit
    or an exhausted budget), or when nothing could be searched. True when a notice to the
    person was queued."""
    silent = [c for c in summary.coverage if c["planned"] and not c["answered"]]
    reason = f"{silent[0]['backend']}: {silent[0]['example']}" if silent else None
    state = alerts.note_search_health(
        s,
        settings,
        subject_id,
        failed=bool(silent) or summary.searches_answered == 0,
        reason=reason,
        scan_id=summary.scan_id,
    )
    return state is not None


@dataclass(frozen=True)
class OpenedScan:
    """A scan row just started for a subject, with what the scan needs of the subject."""

    scan_id: int
    name: str
    aliases: list[str]  # those the consent covers (an organisation's person)
    index: ReferenceIndex
    permit: Permit = UNLIMITED  # which backends may receive the names (monitor/orgs/consent)
    minor: bool = False


def reference_index(settings: Settings, s: Session, subject_id: int, name: str) -> ReferenceIndex:
    """The subject's references, ready to match; :class:`NoReferences` when there are none."""
    refs = store.reference_records(s, subject_id)
    if not refs:
        raise NoReferences(
            f"{name!r} has no enrolled reference photos: run `enroll {name!r} PHOTO...` first"
        )
    return ReferenceIndex(
        refs, thresholds_from_config(settings.match), min_quality=settings.match.min_quality
    )


def open_scan(settings: Settings, db: Database, subject_id: int) -> OpenedScan:
    """Close what a killed scan of the subject left running, and start a new scan row (the
    caller holds the subject's scan lease)."""
    _recover_interrupted(db, settings, subject_id)
    with db.session() as s:
        subject = s.get(Subject, subject_id)
        if subject is None:
            raise MonitorError(f"subject {subject_id} does not exist")
        # An organisation's person: only with valid consent, only the names it covers.
        scan_permit = consent.permit(s, subject)
        if not scan_permit.allows_name(subject.name):
            raise ConsentRequired("the consent does not cover the person's name")
        name = subject.name
        aliases = [a.alias for a in subject.aliases if scan_permit.allows_name(a.alias)]
        index = reference_index(settings, s, subject_id, name)
        scan_id = store.start_scan(s, subject_id).id
        minor = bool(subject.minor)
    return OpenedScan(scan_id, name, aliases, index, scan_permit, minor)


def scan_outcome(summary: ScanSummary) -> tuple[str, str | None]:
    """``(status, error)`` of a scan that ran to its end."""
    status = summary.search_status  # completed, partial, or failed (nothing answered)
    error = None
    if status == "failed":
        error = f"no search was answered: {summary.searched}"
    if status != "completed":  # backend names and reasons only: no name, no query
        level = logging.WARNING if status == "failed" else logging.INFO
        log.log(level, "scan %s: %s: %s", summary.scan_id, status, summary.searched)
    return status, error


def close_scan(
    settings: Settings,
    db: Database,
    subject_id: int,
    summary: ScanSummary,
    *,
    status: str,
    error: str | None,
    finished: bool,
    started: float,
) -> None:
    """Record the scan's end and release its alerts, in one transaction."""
    summary.status = status
    summary.seconds = round(time.monotonic() - started, 3)
    with db.session() as s:
        store.finish_scan(
            s,
            summary.scan_id,
            status=status,
            queries=summary.queries,
            pages=summary.pages,
            images=summary.images,
            matches=summary.matches,
            errors=summary.errors,
            error=error,
        )
        summary.alerts_queued = alerts.release_alerts(s, settings, scan_id=summary.scan_id)
        if finished and _note_search_health(s, settings, subject_id, summary):
            summary.alerts_queued += 1
        subj = s.get(Subject, subject_id)
        if subj is not None:
            subj.last_scan_at = utcnow()


async def alert_and_capture(
    settings: Settings,
    db: Database,
    subject_id: int,
    summary: ScanSummary,
    *,
    started: float,
    deliver: bool = True,
    pages: dict[str, Any] | None = None,
    browser: Any = None,
) -> ScanSummary:
    """After :func:`close_scan`: the alert first (it goes out as soon as the matches are
    committed), then the cases: reappearances of removed places (their alert is sent with it),
    and evidence for new sightings, which never delays the alert nor fails the scan.
    ``browser``: an :class:`~monitor.cases.capture.EarlyBrowser` started during the scan,
    used for the captures and closed here."""
    from monitor.cases import after_scan

    def send_alerts() -> None:
        report = alerts.deliver_pending(db, alerts.notifier_from_settings(settings), settings)
        summary.alerts_sent = report.sent
        summary.alert_destinations = list(report.where)
        if report.sent:
            summary.alert_seconds = round(time.monotonic() - started, 3)

    try:
        captured = await after_scan(
            settings,
            db,
            subject_id,
            summary.scan_id,
            before_capture=send_alerts if deliver else None,
            pages=pages,
            browser=browser,
        )
    finally:
        if browser is not None:
            await browser.aclose()  # (when the capture did not take it)
    if captured is not None:
        summary.evidence_captured, summary.evidence_failed = captured.captured, captured.failed
        summary.evidence_archives, summary.evidence_screenshots = (
            captured.archives,
            captured.screenshots,
        )
        summary.evidence_pages_reused = captured.pages_reused
        summary.evidence_note = captured.screenshot_note
        summary.evidence_seconds = captured.seconds
    return summary


async def run_scan(
    settings: Settings,
    db: Database,
    subject_id: int,
    *,
    pool: Executor | None = None,
    progress: Progress | None = None,
    deliver: bool = True,
    fetcher_factory: FetcherFactory = Fetcher,
) -> ScanSummary:
    """Scan one subject (the caller holds its scan lease). Returns what was done.

    Alerts are written to the outbox with the matches, released when the scan ends, and (with
    ``deliver``) sent right after the commit; undelivered ones stay queued for the next try.
    """
    started = time.monotonic()
    opened = open_scan(settings, db, subject_id)
    summary = ScanSummary(scan_id=opened.scan_id, subject=opened.name)
    status, error, finished = "failed", None, False
    scan: _Scan | None = None
    # The screenshot browser starts at the scan's first new sighting, so its start-up overlaps
    # the rest of the scan; it loads no page before the alert has gone out.
    from monitor.cases.capture import EarlyBrowser

    browser = EarlyBrowser(settings)
    try:
        with _pool_or(pool) as executor:
            scan = _Scan(
                settings,
                db,
                subject_id,
                opened.scan_id,
                summary,
                opened.index,
                executor,
                progress,
                fetcher_factory,
            )
            scan.permit = opened.permit
            if not opened.minor:
                scan.on_new_sighting = browser.start
            await scan.run(opened.name, opened.aliases)
    except BaseException as exc:
        status, error = "failed", f"{type(exc).__name__}: {exc}"
        await browser.aclose()
        raise
    else:
        finished = True  # even when no search was answered: a scan that finished
        status, error = scan_outcome(summary)
    finally:
        close_scan(
            settings,
            db,
            subject_id,
            summary,
            status=status,
            error=error,
            finished=finished,
            started=started,
        )
    pages = scan.scanned_pages if scan is not None else None
    if scan is not None:
        scan.scanned_pages = {}  # the pages' HTML is not needed any more past the capture
    return await alert_and_capture(
        settings,
        db,
        subject_id,
        summary,
        started=started,
        deliver=deliver,
        pages=pages,
        browser=browser,
    )


def scan_subject(
    settings: Settings,
    db: Database,
    name: str,
    *,
    pool: Executor | None = None,
    progress: Progress | None = None,
    deliver: bool = True,
    fetcher_factory: FetcherFactory = Fetcher,
) -> ScanSummary:
    """Scan the subject called ``name`` now, holding its scan lease (CLI entry point)."""
    with db.session() as s:
        subject_id = store.get_subject(s, name).id
    with scan_lease(db, subject_id):
        return asyncio.run(
            run_scan(
                settings,
                db,
                subject_id,
                pool=pool,
                progress=progress,
                deliver=deliver,
                fetcher_factory=fetcher_factory,
            )
        )


def subject_ids(db: Database) -> list[int]:
    with db.session() as s:
        return list(s.scalars(select(Subject.id).order_by(Subject.name)))
