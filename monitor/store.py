"""Reads and writes of the stored records: subjects, scan results, matches, erasure.

Every function takes an open ``Session`` inside a transaction (``with db.session() as s:``), so a
caller decides what commits together. ``record_image`` writes an image, its sighting, its match
and the alert's outbox row in one transaction: a match, once seen, is never without its alert.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Row, bindparam, delete, exists, func, insert, select, update
from sqlalchemy.orm import Session

from monitor import alerts
from monitor.db.models import (
    Alias,
    FetchCacheEntry,
    FetchErrorRecord,
    Hit,
    Image,
    Match,
    MediaFrames,
    PageCacheEntry,
    Reference,
    ReferenceHash,
    Scan,
    SearchCoverage,
    SearchUsage,
    Sighting,
    Subject,
    utcnow,
)
from monitor.errors import MonitorError, SubjectNotFound
from monitor.matching import ReferenceHashRecord
from monitor.types import HashValue, ImageCandidate, ImageHashes, MatchResult, SearchHit
from monitor.types import iso_utc as _iso
from monitor.video import FrameHashes


class SubjectExists(MonitorError):
    """A subject with that name is already monitored."""


# ---------------------------------------------------------------- subjects


def add_subject(
    session: Session,
    name: str,
    *,
    aliases: Sequence[str] = (),
    email: str | None = None,
    interval: timedelta,
) -> Subject:
    """Create a subject; raise :class:`SubjectExists` if the name is taken."""
    name = name.strip()
    if not name:
        raise MonitorError("a subject needs a name")
    if session.scalar(select(Subject).where(Subject.name == name)) is not None:
        raise SubjectExists(f"a subject named {name!r} already exists")
    subject = Subject(
        name=name, email=email or None, interval_seconds=int(interval.total_seconds())
    )
    seen = {name.casefold()}
    for alias in aliases:
        alias = alias.strip()
        if alias and alias.casefold() not in seen:
            seen.add(alias.casefold())
            subject.aliases.append(Alias(alias=alias))
    session.add(subject)
    session.flush()
    return subject


def get_subject(session: Session, name: str) -> Subject:
    subject = session.scalar(select(Subject).where(Subject.name == name))
    if subject is None:
        raise SubjectNotFound(f"no subject named {name!r} (see `subject list`)")
    return subject


def all_subjects(session: Session) -> list[Subject]:
    return list(session.scalars(select(Subject).order_by(Subject.name)))


@dataclass(frozen=True, slots=True)
class SubjectInfo:
    name: str
    aliases: list[str]
    email: str | None
    interval_seconds: int
    references: int
    matches: int
    last_scan_at: datetime | None
    next_scan_at: datetime | None

    def as_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "aliases": self.aliases,
            "email": self.email,
            "interval_seconds": self.interval_seconds,
            "references": self.references,
            "matches": self.matches,
            "last_scan_at": _iso(self.last_scan_at),
            "next_scan_at": _iso(self.next_scan_at),
        }


def subject_infos(session: Session) -> list[SubjectInfo]:
    refs: dict[int, int] = {
        subject_id: n
        for subject_id, n in session.execute(
            select(Reference.subject_id, func.count()).group_by(Reference.subject_id)
        )
    }
    matches: dict[int, int] = {
        subject_id: n
        for subject_id, n in session.execute(
            select(Match.subject_id, func.count()).group_by(Match.subject_id)
        )
    }
    return [
        SubjectInfo(
            name=s.name,
            aliases=[a.alias for a in s.aliases],
            email=s.email,
            interval_seconds=s.interval_seconds,
            references=refs.get(s.id, 0),
            matches=matches.get(s.id, 0),
            last_scan_at=s.last_scan_at,
            next_scan_at=s.next_scan_at,
        )
        for s in all_subjects(session)
    ]


def erase_subject(session: Session, name: str) -> None:
    """Remove a subject and everything about them: references, scans, hits, sightings,
    matches, alerts, and found images that no other subject has seen."""
    subject = get_subject(session, name)
    session.delete(subject)
    session.flush()
    session.execute(
        delete(Image).where(
            ~exists().where(Sighting.image_id == Image.id),
            ~exists().where(Match.image_id == Image.id),
        )
    )
    forget_orphan_fetch_cache(session)  # image URLs only this subject's scans had seen
    forget_orphan_page_cache(session)  # and page URLs


def reference_records(session: Session, subject_id: int) -> list[ReferenceHashRecord]:
    rows = session.execute(
        select(
            ReferenceHash.reference_id,
            ReferenceHash.algorithm,
            ReferenceHash.value,
            ReferenceHash.frame_offset,
        )
        .join(Reference)
        .where(Reference.subject_id == subject_id)
    )
    return [ReferenceHashRecord(ref_id, alg, value, offset) for ref_id, alg, value, offset in rows]


# ---------------------------------------------------------------- scans


def start_scan(session: Session, subject_id: int) -> Scan:
    scan = Scan(subject_id=subject_id, status="running", started_at=utcnow())
    session.add(scan)
    session.flush()
    return scan


def record_hits(
    session: Session,
    scan_id: int,
    hits: Iterable[SearchHit],
    found_by: dict[tuple[str, str, str | None], Sequence[str]] | None = None,
) -> None:
    """Store a scan's hits; ``found_by`` maps ``(kind, page URL, image URL)`` to every backend
    that found the hit (hits merged across backends), else only its own backend is listed."""
    found_by = found_by or {}
    session.add_all(
        Hit(
            scan_id=scan_id,
            backend=h.backend,
            query=h.query.text,
            kind=h.query.kind.value,
            page_url=h.page_url,
            image_url=h.image_url,
            title=h.title[:1000],
            engine=h.engine,
            backends=",".join(
                found_by.get((h.query.kind.value, h.page_url, h.image_url)) or [h.backend]
            ),
        )
        for h in hits
    )


def record_coverage(session: Session, scan_id: int, rows: Iterable[dict[str, Any]]) -> None:
    """Store what each planned search of a scan came to (``monitor.coverage.SearchOutcome``
    as dicts: backend, query, kind, page, asked, answered, partial, results, requests,
    reason, detail)."""
    values = [
        {
            **r,
            "scan_id": scan_id,
            "query": str(r["query"])[:500],
            "reason": (r.get("reason") or None) and str(r["reason"])[:200],
            "detail": (r.get("detail") or None) and str(r["detail"])[:2000],
        }
        for r in rows
    ]
    if values:
        session.execute(insert(SearchCoverage), values)


def scan_coverage(session: Session, scan_id: int) -> list[SearchCoverage]:
    """The coverage rows of a scan, in the order they were planned."""
    return list(
        session.scalars(
            select(SearchCoverage)
            .where(SearchCoverage.scan_id == scan_id)
            .order_by(SearchCoverage.id)
        )
    )


def search_usage(session: Session, backends: Iterable[str], month: str) -> dict[str, int]:
    """Requests sent to each backend in ``month`` ("YYYY-MM"): 0 for those with none."""
    names = list(dict.fromkeys(backends))
    used = dict.fromkeys(names, 0)
    if names:
        for backend, n in session.execute(
            select(SearchUsage.backend, SearchUsage.requests).where(
                SearchUsage.month == month, SearchUsage.backend.in_(names)
            )
        ):
            used[backend] = int(n or 0)
    return used


def add_search_usage(session: Session, sent: dict[str, int], month: str) -> None:
    """Add requests sent to each backend to its count for ``month`` (atomic per row)."""
    for backend, n in sent.items():
        if n <= 0:
            continue
        done = session.execute(
            update(SearchUsage)
            .where(SearchUsage.backend == backend, SearchUsage.month == month)
            .values(requests=SearchUsage.requests + n)
        )
        if not getattr(done, "rowcount", 0):
            session.add(SearchUsage(backend=backend, month=month, requests=n))
            session.flush()


def found_by(session: Session, match_id: int) -> list[str]:
    """The search backends whose hits led the person's scans to a matched image (to a page it
    was seen on, or to the image itself), sorted."""
    match = session.get(Match, match_id)
    if match is None:
        return []
    places = session.execute(
        select(Sighting.page_url, Sighting.image_url).where(
            Sighting.subject_id == match.subject_id, Sighting.image_id == match.image_id
        )
    ).all()
    if not places:
        return []
    pages = {page for page, _ in places}
    images = {image for _, image in places}
    names: set[str] = set()
    for backend, backends in session.execute(
        select(Hit.backend, Hit.backends)
        .join(Scan, Scan.id == Hit.scan_id)
        .where(
            Scan.subject_id == match.subject_id,
            Hit.page_url.in_(pages) | Hit.image_url.in_(images),
        )
    ):
        names.update(b for b in (backends or backend).split(",") if b)
    return sorted(names)


def record_error(session: Session, scan_id: int, url: str, stage: str, reason: str) -> None:
    session.add(FetchErrorRecord(scan_id=scan_id, url=url, stage=stage, reason=reason[:2000]))


_KNOWN_IMAGE = select(
    Image.sha256, Image.width, Image.height, Image.pdq, Image.pdq_quality, Image.phash
).where(Image.sha256 == bindparam("sha"))


def known_image(db: Session | Connection, sha256: str) -> ImageHashes | None:
    """The stored hashes of an image already seen (by content), so it need not be hashed again.

    Takes a session or, cheaper for one lookup per fetched image, a plain connection."""
    row = db.execute(_KNOWN_IMAGE, {"sha": sha256}).first()
    if row is None:
        return None
    return _hashes_from(row.sha256, row.width, row.height, row.pdq, row.pdq_quality, row.phash)


def _hashes_from(
    sha256: str,
    width: int,
    height: int,
    pdq: str | None,
    pdq_quality: int | None,
    phash: str | None,
) -> ImageHashes:
    hashes = []
    if pdq:
        hashes.append(HashValue("pdq", pdq, pdq_quality))
    if phash:
        hashes.append(HashValue("phash", phash))
    return ImageHashes(sha256, width, height, tuple(hashes))


def image_hashes(image: Image) -> ImageHashes:
    return _hashes_from(
        image.sha256, image.width, image.height, image.pdq, image.pdq_quality, image.phash
    )


@dataclass(frozen=True, slots=True)
class RecordOutcome:
    new_sighting: bool
    new_match: bool
    alerted: bool  # this sighting was added to an alert


@dataclass(frozen=True, slots=True)
class SeenImage:
    """One image a scan saw on one page, with its hashes and its match (if any).

    For a video or animation, ``frame_offset`` is the time of the frame that matched and
    ``reference_offset`` that of the enrolled video's frame it matched (else ``None``)."""

    page_url: str
    image_url: str
    hashes: ImageHashes
    match: MatchResult | None
    frame_offset: float | None = None
    reference_offset: float | None = None


def record_image(
    session: Session,
    subject: Subject,
    scan_id: int,
    *,
    page_url: str,
    image_url: str,
    hashes: ImageHashes,
    match: MatchResult | None,
    now: datetime | None = None,
) -> RecordOutcome:
    """Record that a scan saw ``hashes`` at (page, image URL), with its match if any.

    A new sighting of a matched image (a new match, or a known match at a new URL) is attached
    to this scan's alert in the same transaction. A dismissed match never alerts again.
    """
    (outcome,) = record_images(
        session, subject, scan_id, [SeenImage(page_url, image_url, hashes, match)], now=now
    )
    return outcome


def record_images(
    session: Session,
    subject: Subject,
    scan_id: int,
    seen: Sequence[SeenImage],
    *,
    now: datetime | None = None,
) -> list[RecordOutcome]:
    """:func:`record_image` for many images at once, in a few set-based statements.

    Outcomes are returned in the order of ``seen``; an image seen twice in the batch is stored
    once, and a (page, image URL) pair seen twice is one sighting.
    """
    if not seen:
        return []
    now = now or utcnow()
    shas = {item.hashes.sha256 for item in seen}
    image_ids = _image_ids(session, shas)
    new_images: dict[str, dict[str, object]] = {}
    for item in seen:
        h = item.hashes
        if h.sha256 not in image_ids and h.sha256 not in new_images:
            pdq, phash = h.get("pdq"), h.get("phash")
            new_images[h.sha256] = {
                "sha256": h.sha256,
                "width": h.width,
                "height": h.height,
                "pdq": pdq.value if pdq else None,
                "pdq_quality": pdq.quality if pdq else None,
                "phash": phash.value if phash else None,
                "first_fetched_at": now,
            }
    if new_images:
        session.execute(insert(Image), list(new_images.values()))
        image_ids.update(_image_ids(session, set(new_images)))

    ids = set(image_ids.values())
    # (image, page, image URL) -> (sighting id, alert id) of the sightings already stored
    stored = {
        (image_id, page_url, image_url): (sid, alert_id)
        for sid, image_id, page_url, image_url, alert_id in session.execute(
            select(
                Sighting.id,
                Sighting.image_id,
                Sighting.page_url,
                Sighting.image_url,
                Sighting.alert_id,
            ).where(Sighting.subject_id == subject.id, Sighting.image_id.in_(ids))
        )
    }
    matches = {
        m.image_id: m
        for m in session.scalars(
            select(Match).where(Match.subject_id == subject.id, Match.image_id.in_(ids))
        )
    }

    outcomes: list[RecordOutcome] = []
    new_sightings: dict[tuple[int, str, str], dict[str, object]] = {}
    touched: set[int] = set()
    alert_new: list[dict[str, object]] = []  # new sightings to put in the alert
    alert_old: list[int] = []  # stored sightings (never alerted yet) to put in the alert
    for item in seen:
        image_id = image_ids[item.hashes.sha256]
        key = (image_id, item.page_url, item.image_url)
        old = stored.get(key)
        row = new_sightings.get(key)
        new_sighting = old is None and row is None
        if old is not None:
            touched.add(old[0])
        elif row is None:
            row = {
                "subject_id": subject.id,
                "image_id": image_id,
                "page_url": item.page_url,
                "image_url": item.image_url,
                "first_seen": now,
                "last_seen": now,
                "first_scan_id": scan_id,
                "alert_id": None,
            }
            new_sightings[key] = row

        match, existing = item.match, matches.get(image_id)
        new_match = False
        if existing is None and match is not None:
            existing = Match(
                subject_id=subject.id,
                image_id=image_id,
                reference_id=match.reference_id,
                algorithm=match.algorithm,
                distance=match.distance,
                first_seen=now,
                status="new",
                scan_id=scan_id,
                frame_offset=item.frame_offset,
                reference_offset=item.reference_offset,
            )
            session.add(existing)
            matches[image_id] = existing
            new_match = True
        elif existing is not None and match is not None and match.distance < existing.distance:
            existing.distance, existing.algorithm = match.distance, match.algorithm
            existing.reference_id = match.reference_id
            existing.frame_offset = item.frame_offset
            existing.reference_offset = item.reference_offset

        alerted = False
        if existing is not None and existing.status != "dismissed" and (new_sighting or new_match):
            if old is None and row is not None and not any(r is row for r in alert_new):
                alert_new.append(row)
                alerted = True
            elif old is not None and old[1] is None and old[0] not in alert_old:
                alert_old.append(old[0])
                alerted = True
        outcomes.append(RecordOutcome(new_sighting, new_match, alerted))

    if alert_new or alert_old:
        alert = alerts.hold_alert(
            session, subject, scan_id, new_items=len(alert_new) + len(alert_old)
        )
        session.flush()
        for row in alert_new:
            row["alert_id"] = alert.id
        if alert_old:
            session.execute(update(Sighting), [{"id": i, "alert_id": alert.id} for i in alert_old])
    if new_sightings:
        session.execute(insert(Sighting), list(new_sightings.values()))
    if touched:
        session.execute(update(Sighting), [{"id": i, "last_seen": now} for i in touched])
    session.flush()
    return outcomes


def _image_ids(session: Session, shas: set[str]) -> dict[str, int]:
    return dict(
        (sha, image_id)
        for sha, image_id in session.execute(
            select(Image.sha256, Image.id).where(Image.sha256.in_(shas))
        )
    )


def finish_scan(
    session: Session,
    scan_id: int,
    *,
    status: str,
    queries: int,
    pages: int,
    images: int,
    matches: int,
    errors: int,
    error: str | None = None,
) -> Scan:
    scan = session.get(Scan, scan_id)
    if scan is None:  # pragma: no cover - the scan row is written before any work
        raise MonitorError(f"scan {scan_id} vanished")
    scan.status = status
    scan.finished_at = utcnow()
    scan.queries, scan.pages, scan.images = queries, pages, images
    scan.matches, scan.errors, scan.error = matches, errors, error
    return scan


# ---------------------------------------------------------------- matches


@dataclass(frozen=True, slots=True)
class MatchRow:
    subject: str
    page_url: str
    image_url: str
    algorithm: str
    distance: int
    first_seen: datetime
    status: str
    sha256: str
    match_id: int
    frame_offset: float | None = None  # seconds into a found video/animation; None: a photo
    reference_offset: float | None = None  # seconds into the enrolled video matched

    def as_json(self) -> dict[str, object]:
        return {
            "subject": self.subject,
            "page_url": self.page_url,
            "image_url": self.image_url,
            "algorithm": self.algorithm,
            "distance": self.distance,
            "first_seen": _iso(self.first_seen),
            "status": self.status,
            "sha256": self.sha256,
            "match_id": self.match_id,
            "frame_offset": self.frame_offset,
            "reference_offset": self.reference_offset,
        }


def list_matches(session: Session, subject_name: str | None = None) -> list[MatchRow]:
    """Every sighting of every matched image, newest first (one row per page and image URL)."""
    stmt = (
        select(Subject.name, Sighting, Match, Image.sha256)
        .join(
            Match, (Match.subject_id == Sighting.subject_id) & (Match.image_id == Sighting.image_id)
        )
        .join(Subject, Subject.id == Sighting.subject_id)
        .join(Image, Image.id == Sighting.image_id)
        .order_by(Sighting.first_seen.desc(), Sighting.id.desc())
    )
    if subject_name is not None:
        subject = get_subject(session, subject_name)
        stmt = stmt.where(Sighting.subject_id == subject.id)
    return [
        MatchRow(
            subject=name,
            page_url=sighting.page_url,
            image_url=sighting.image_url,
            algorithm=match.algorithm,
            distance=match.distance,
            first_seen=sighting.first_seen,
            status=match.status,
            sha256=sha,
            match_id=match.id,
            frame_offset=match.frame_offset,
            reference_offset=match.reference_offset,
        )
        for name, sighting, match, sha in session.execute(stmt)
    ]


# ---------------------------------------------------------------- monitoring health


def search_failures(session: Session, scan_id: int) -> dict[str, tuple[int, str]]:
    """Per search backend (``search:<name>``): how many of its queries failed in this scan,
    and the first reason."""
    found: dict[str, tuple[int, str]] = {}
    for url, reason in session.execute(
        select(FetchErrorRecord.url, FetchErrorRecord.reason)
        .where(FetchErrorRecord.scan_id == scan_id, FetchErrorRecord.stage == "search")
        .order_by(FetchErrorRecord.id)
    ):
        n, first = found.get(url, (0, reason))
        found[url] = (n + 1, first)
    return found


# ---------------------------------------------------------------- fetch cache


def _upsert(session: Session, model: type, key: str, rows: list[dict[str, object]]) -> None:
    """Insert ``rows`` into ``model``'s table, replacing the rows with the same ``key`` (its
    primary key): every other column given in the rows is overwritten. Rows must share keys."""
    if not rows:
        return
    column = getattr(model, key)
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as upsert
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as upsert
    else:  # pragma: no cover - the monitor runs on SQLite and PostgreSQL
        session.execute(delete(model).where(column.in_([r[key] for r in rows])))
        session.execute(insert(model), rows)
        return
    stmt = upsert(model)
    stmt = stmt.on_conflict_do_update(
        index_elements=[column],
        set_={name: getattr(stmt.excluded, name) for name in rows[0] if name != key},
    )
    session.execute(stmt, rows)


def _fresh(
    fresh_until: datetime | None, checked_at: datetime | None, now: datetime, max_age: timedelta
) -> bool:
    """Whether a cached URL may be reused at ``now`` without asking: within the server's
    freshness and at most ``max_age`` since it was last checked (a lowered cap applies at once)."""
    if fresh_until is None or checked_at is None or max_age <= timedelta(0):
        return False
    return now < fresh_until and now < checked_at + max_age


@dataclass(frozen=True, slots=True)
class CachedImage:
    """What an image URL held when last fetched: validators to ask with, and its hashes;
    ``fresh_until``: till then the server said it stays so (None: ask every time);
    ``checked_at``: when the server last said so."""

    url: str
    etag: str | None
    last_modified: str | None
    hashes: ImageHashes
    fresh_until: datetime | None = None
    checked_at: datetime | None = None

    def fresh(self, now: datetime, max_age: timedelta) -> bool:
        """Whether it may be reused at ``now`` without asking (:func:`_fresh`)."""
        return _fresh(self.fresh_until, self.checked_at, now, max_age)


@dataclass(frozen=True, slots=True)
class FetchedImage:
    """An image URL just fetched whole (or found unchanged), to remember (with the SHA-256 of
    what it held, and until when the server said it stays so)."""

    url: str
    sha256: str
    etag: str | None
    last_modified: str | None
    fresh_until: datetime | None = None


def url_key(url: str) -> str:
    """The fetch cache's key for a URL: its SHA-256 (hex)."""
    return hashlib.sha256(url.encode("utf-8", "surrogatepass")).hexdigest()


_CACHED_COLUMNS = select(
    FetchCacheEntry.url_sha256,
    FetchCacheEntry.url,
    FetchCacheEntry.etag,
    FetchCacheEntry.last_modified,
    FetchCacheEntry.fresh_until,
    FetchCacheEntry.fetched_at,
    Image.sha256,
    Image.width,
    Image.height,
    Image.pdq,
    Image.pdq_quality,
    Image.phash,
).join(Image, Image.id == FetchCacheEntry.image_id)
_CACHED_IMAGE = _CACHED_COLUMNS.where(FetchCacheEntry.url_sha256 == bindparam("key"))
_CACHED_IMAGES = _CACHED_COLUMNS.where(
    FetchCacheEntry.url_sha256.in_(bindparam("keys", expanding=True))
)
CACHE_LOOKUP_CHUNK = 500
"""URLs looked up per query by :func:`cached_images` (well under SQLite's variable limit)."""


def _cached_from(row: Row[Any]) -> CachedImage:
    hashes = _hashes_from(row.sha256, row.width, row.height, row.pdq, row.pdq_quality, row.phash)
    return CachedImage(
        row.url, row.etag, row.last_modified, hashes, row.fresh_until, row.fetched_at
    )


def cached_image(db: Session | Connection, url: str) -> CachedImage | None:
    """The validators and hashes stored for an image URL, if it was fetched before."""
    row = db.execute(_CACHED_IMAGE, {"key": url_key(url)}).first()
    if row is None or row.url != url:
        return None
    return _cached_from(row)


def cached_images(db: Session | Connection, urls: Iterable[str]) -> dict[str, CachedImage]:
    """:func:`cached_image` for many URLs in one query (a few for very many): by URL, only
    those with an entry."""
    keys = {url_key(u): u for u in urls}
    found: dict[str, CachedImage] = {}
    chunks = list(keys)
    for i in range(0, len(chunks), CACHE_LOOKUP_CHUNK):
        for row in db.execute(_CACHED_IMAGES, {"keys": chunks[i : i + CACHE_LOOKUP_CHUNK]}):
            if keys.get(row.url_sha256) == row.url:
                found[row.url] = _cached_from(row)
    return found


def remember_fetches(session: Session, fetched: Sequence[FetchedImage]) -> list[FetchedImage]:
    """Store (or replace) the cache entries of image URLs fetched whole.

    An entry needs its image row (written by :func:`record_images`); those whose image is not
    stored yet are returned, to try again later. URLs with neither validators nor freshness
    are forgotten: with nothing to ask with, the next scan downloads them anyway.
    """
    if not fetched:
        return []
    ids = _image_ids(session, {f.sha256 for f in fetched})
    latest = {f.url: f for f in fetched}  # the last fetch of a URL wins
    waiting = [f for f in latest.values() if f.sha256 not in ids]
    rows = [
        {
            "url_sha256": url_key(f.url),
            "url": f.url,
            "image_id": ids[f.sha256],
            "etag": (f.etag or None) and f.etag[:500],
            "last_modified": (f.last_modified or None) and f.last_modified[:100],
            "fetched_at": utcnow(),
            "fresh_until": f.fresh_until,
        }
        for f in latest.values()
        if f.sha256 in ids and _cacheable(f)
    ]
    stale = [url_key(f.url) for f in latest.values() if not _cacheable(f)]
    if stale:
        session.execute(delete(FetchCacheEntry).where(FetchCacheEntry.url_sha256.in_(stale)))
    _upsert(session, FetchCacheEntry, "url_sha256", rows)
    return waiting


def _cacheable(f: FetchedImage) -> bool:
    return bool(f.etag or f.last_modified or f.fresh_until)


def forget_fetch(session: Session, url: str) -> None:
    """Drop the cache entry of an image URL (it is gone, or no longer an image)."""
    session.execute(delete(FetchCacheEntry).where(FetchCacheEntry.url_sha256 == url_key(url)))


def forget_orphan_fetch_cache(session: Session) -> int:
    """Drop cache entries of URLs no sighting holds any more (after an erasure)."""
    result = session.execute(
        delete(FetchCacheEntry).where(~exists().where(Sighting.image_url == FetchCacheEntry.url))
    )
    return int(getattr(result, "rowcount", 0) or 0)


# ---------------------------------------------------------------- sampled frames of media


def _frames_json(frames: Sequence[FrameHashes]) -> str:
    return json.dumps(
        [
            {
                "offset": f.offset,
                "width": f.hashes.width,
                "height": f.hashes.height,
                "hashes": [[h.algorithm, h.value, h.quality] for h in f.hashes.hashes],
            }
            for f in frames
        ],
        separators=(",", ":"),
    )


def _frames_from(sha256: str, text: str) -> tuple[FrameHashes, ...] | None:
    try:
        return tuple(
            FrameHashes(
                float(f["offset"]),
                ImageHashes(
                    sha256,
                    int(f["width"]),
                    int(f["height"]),
                    tuple(
                        HashValue(str(alg), str(value), None if q is None else int(q))
                        for alg, value, q in f["hashes"]
                    ),
                ),
            )
            for f in json.loads(text)
        )
    except (ValueError, TypeError, KeyError):  # unreadable: as if not stored (sampled again)
        return None


_KNOWN_FRAMES = (
    select(Image.sha256, MediaFrames.frames)
    .join(MediaFrames, MediaFrames.image_id == Image.id)
    .where(Image.sha256.in_(bindparam("shas", expanding=True)))
)


def known_frames(
    db: Session | Connection, shas: Iterable[str]
) -> dict[str, tuple[FrameHashes, ...]]:
    """The stored sampled frames of videos and animations, by the SHA-256 of their bytes: only
    those stored (``()`` for bytes that could have had frames but were a still). With the image
    row (:func:`known_image`, :func:`cached_images`) they stand for the whole media, so an
    unchanged video is matched again without being downloaded or decoded."""
    wanted = list(dict.fromkeys(shas))
    found: dict[str, tuple[FrameHashes, ...]] = {}
    for i in range(0, len(wanted), CACHE_LOOKUP_CHUNK):
        for sha, text in db.execute(_KNOWN_FRAMES, {"shas": wanted[i : i + CACHE_LOOKUP_CHUNK]}):
            frames = _frames_from(sha, text)
            if frames is not None:
                found[sha] = frames
    return found


def remember_frames(
    session: Session, frames: dict[str, tuple[FrameHashes, ...]]
) -> dict[str, tuple[FrameHashes, ...]]:
    """Store (or replace) the sampled frames of media, by the SHA-256 of their bytes. A row
    needs its image row (written by :func:`record_images`): those whose image is not stored
    yet are returned, to try again later. Erased with the image (``ON DELETE CASCADE``)."""
    if not frames:
        return {}
    ids = _image_ids(session, set(frames))
    now = utcnow()
    rows = [
        {"image_id": ids[sha], "frames": _frames_json(f), "sampled_at": now}
        for sha, f in frames.items()
        if sha in ids
    ]
    _upsert(session, MediaFrames, "image_id", rows)
    return {sha: f for sha, f in frames.items() if sha not in ids}


# ---------------------------------------------------------------- page cache


@dataclass(frozen=True, slots=True)
class CachedPage:
    """What a page URL held when last fetched: validators to ask with, where it redirected to,
    and the image and video URLs found on it as ``(source, image URL)`` pairs;
    ``fresh_until``: till then the server said it stays so (None: ask every time);
    ``checked_at``: when the server last said so."""

    url: str
    final_url: str
    etag: str | None
    last_modified: str | None
    candidates: tuple[tuple[str, str], ...]
    fresh_until: datetime | None = None
    checked_at: datetime | None = None

    def fresh(self, now: datetime, max_age: timedelta) -> bool:
        """Whether it may be reused at ``now`` without asking (:func:`_fresh`)."""
        return _fresh(self.fresh_until, self.checked_at, now, max_age)

    def image_candidates(
        self, page_url: str | None = None, limit: int | None = None
    ) -> list[ImageCandidate]:
        """The stored candidates, found on ``page_url`` (by default where it redirected to
        last time), at most ``limit`` of them."""
        where = page_url or self.final_url
        pairs = self.candidates if limit is None else self.candidates[: max(limit, 0)]
        return [ImageCandidate(image_url, where, source) for source, image_url in pairs]


@dataclass(frozen=True, slots=True)
class FetchedPage:
    """A page URL just fetched whole (or found unchanged), to remember: where it redirected
    to, its validators, until when the server said it stays so, and its candidates."""

    url: str
    final_url: str
    etag: str | None
    last_modified: str | None
    fresh_until: datetime | None
    candidates: tuple[tuple[str, str], ...]

    @staticmethod
    def of(
        url: str,
        final_url: str,
        etag: str | None,
        last_modified: str | None,
        fresh_until: datetime | None,
        candidates: Iterable[ImageCandidate],
    ) -> FetchedPage:
        pairs = tuple((c.source, c.image_url) for c in candidates)
        return FetchedPage(url, final_url, etag, last_modified, fresh_until, pairs)


PAGE_CANDIDATES_MAX_CHARS = 200_000
"""A page whose candidate list (as JSON) is longer is not cached: it is fetched whole again."""

_PAGE_COLUMNS = select(
    PageCacheEntry.url_sha256,
    PageCacheEntry.url,
    PageCacheEntry.final_url,
    PageCacheEntry.etag,
    PageCacheEntry.last_modified,
    PageCacheEntry.fresh_until,
    PageCacheEntry.fetched_at,
    PageCacheEntry.candidates,
).where(PageCacheEntry.url_sha256.in_(bindparam("keys", expanding=True)))


def _page_from(row: Row[Any]) -> CachedPage | None:
    try:
        pairs = tuple((str(src), str(u)) for src, u in json.loads(row.candidates or "[]"))
    except (ValueError, TypeError):  # unreadable: as if not cached
        return None
    return CachedPage(
        row.url,
        row.final_url or row.url,
        row.etag,
        row.last_modified,
        pairs,
        row.fresh_until,
        row.fetched_at,
    )


def cached_pages(db: Session | Connection, urls: Iterable[str]) -> dict[str, CachedPage]:
    """The stored validators and candidates of these page URLs, by URL (only those with an
    entry), in one query (a few for very many)."""
    keys = {url_key(u): u for u in urls}
    found: dict[str, CachedPage] = {}
    chunks = list(keys)
    for i in range(0, len(chunks), CACHE_LOOKUP_CHUNK):
        for row in db.execute(_PAGE_COLUMNS, {"keys": chunks[i : i + CACHE_LOOKUP_CHUNK]}):
            if keys.get(row.url_sha256) == row.url and (page := _page_from(row)) is not None:
                found[row.url] = page
    return found


def remember_pages(session: Session, fetched: Sequence[FetchedPage]) -> None:
    """Store (or replace) the cache entries of page URLs fetched whole or found unchanged.

    Pages with neither validators nor freshness are forgotten (with nothing to ask with, the
    next scan downloads them anyway), and so are those with a huge candidate list."""
    if not fetched:
        return
    latest = {f.url: f for f in fetched}  # the last fetch of a URL wins
    now = utcnow()
    rows, stale = [], []
    for f in latest.values():
        listed = json.dumps([list(p) for p in f.candidates], separators=(",", ":"))
        if (
            not (f.etag or f.last_modified or f.fresh_until)
            or len(listed) > PAGE_CANDIDATES_MAX_CHARS
        ):
            stale.append(url_key(f.url))
            continue
        rows.append(
            {
                "url_sha256": url_key(f.url),
                "url": f.url,
                "final_url": f.final_url if f.final_url != f.url else None,
                "etag": (f.etag or None) and f.etag[:500],
                "last_modified": (f.last_modified or None) and f.last_modified[:100],
                "fetched_at": now,
                "fresh_until": f.fresh_until,
                "candidates": listed,
            }
        )
    if stale:
        session.execute(delete(PageCacheEntry).where(PageCacheEntry.url_sha256.in_(stale)))
    _upsert(session, PageCacheEntry, "url_sha256", rows)


def forget_orphan_page_cache(session: Session) -> int:
    """Drop cache entries of page URLs no sighting holds any more (after an erasure): a page
    found only by an erased person's scans is forgotten with them, as their image URLs are."""
    found_on = func.coalesce(PageCacheEntry.final_url, PageCacheEntry.url)
    result = session.execute(
        delete(PageCacheEntry).where(~exists().where(Sighting.page_url == found_on))
    )
    return int(getattr(result, "rowcount", 0) or 0)
