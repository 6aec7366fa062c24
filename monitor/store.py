"""Reads and writes of the stored records: subjects, scan results, matches, erasure.

Every function takes an open ``Session`` inside a transaction (``with db.session() as s:``), so a
caller decides what commits together. ``record_image`` writes an image, its sighting, its match
and the alert's outbox row in one transaction: a match, once seen, is never without its alert.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Sequence
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
    ImageHash,
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
    UTCDateTime,
    utcnow,
)
from monitor.errors import MonitorError, SubjectNotFound
from monitor.hashing import VARIANT_SEPARATOR
from monitor.matching import ReferenceHashRecord
from monitor.orgs.scope import Scope, every_row, scoped
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
    organisation_id: int | None = None,
) -> Subject:
    """Create a subject (of ``organisation_id``, None: a person monitoring themselves); raise
    :class:`SubjectExists` if the name is taken there (names are unique per organisation)."""
    name = name.strip()
    if not name:
        raise MonitorError("a subject needs a name")
    same_org = (
        Subject.organisation_id.is_(None)
        if organisation_id is None
        else Subject.organisation_id == organisation_id
    )
    if session.scalar(select(Subject).where(Subject.name == name, same_org)) is not None:
        raise SubjectExists(f"a subject named {name!r} already exists")
    subject = Subject(
        name=name,
        email=email or None,
        interval_seconds=int(interval.total_seconds()),
        organisation_id=organisation_id,
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


def get_subject(session: Session, name: str, scope: Scope | None = None) -> Subject:
    """The subject called ``name`` among those ``scope`` may see (the scope in force when
    None; see monitor/orgs/scope.py). Someone outside it is "not found", like no one."""
    found = list(session.scalars(scoped(select(Subject).where(Subject.name == name), scope)))
    if not found:
        raise SubjectNotFound(f"no subject named {name!r} (see `subject list`)")
    if len(found) > 1:  # unscoped, and two organisations monitor people of that name
        raise MonitorError(f"several people are named {name!r}: give the operator (--operator)")
    return found[0]


def all_subjects(session: Session, scope: Scope | None = None) -> list[Subject]:
    return list(session.scalars(scoped(select(Subject).order_by(Subject.name), scope)))


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


def subject_infos(session: Session, scope: Scope | None = None) -> list[SubjectInfo]:
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
        for s in all_subjects(session, scope)
    ]


def erase_subject(session: Session, name: str, scope: Scope | None = None) -> None:
    """Remove a subject and everything about them: references, scans, hits, sightings,
    matches, alerts, consent, and found images that no other subject has seen."""
    subject = get_subject(session, name, scope)
    session.delete(subject)
    session.flush()
    with every_row(session):  # images other organisations' people were seen in are kept
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
    """Add requests sent to each backend to its count for ``month``: one INSERT ... ON CONFLICT
    DO UPDATE per row, so two scans finishing at once both count (no read-then-insert race)."""
    rows = [
        {"backend": backend, "month": month, "requests": n} for backend, n in sent.items() if n > 0
    ]
    if not rows:
        return
    dialect_insert = _dialect_insert(session)
    if dialect_insert is None:  # pragma: no cover - the monitor runs on SQLite and PostgreSQL
        for row in rows:
            done = session.execute(
                update(SearchUsage)
                .where(SearchUsage.backend == row["backend"], SearchUsage.month == month)
                .values(requests=SearchUsage.requests + row["requests"])
            )
            if not getattr(done, "rowcount", 0):
                session.add(SearchUsage(**row))
        session.flush()
        return
    stmt = dialect_insert(SearchUsage)
    stmt = stmt.on_conflict_do_update(
        index_elements=[SearchUsage.backend, SearchUsage.month],
        set_={"requests": SearchUsage.requests + stmt.excluded.requests},
    )
    session.execute(stmt, rows)


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


WHOLE = "whole"
"""The ``role`` of the hash of a whole picture in ``image_hashes`` (else a variant tag such as
``region``: the hash named ``pdq.region``)."""


def hash_row_key(name: str) -> tuple[str, str]:
    """``(algorithm, role)`` of a hash name: ``pdq`` -> ``(pdq, whole)``, ``pdq.region.2`` ->
    ``(pdq, region.2)``."""
    algorithm, _, role = name.partition(VARIANT_SEPARATOR)
    return algorithm, role or WHOLE


def hash_name(algorithm: str, role: str) -> str:
    """The inverse of :func:`hash_row_key`."""
    return algorithm if role == WHOLE else f"{algorithm}{VARIANT_SEPARATOR}{role}"


_IMAGE_HASHES = (
    select(
        ImageHash.image_id, ImageHash.algorithm, ImageHash.role, ImageHash.value, ImageHash.quality
    )
    .where(ImageHash.image_id.in_(bindparam("ids", expanding=True)))
    .order_by(ImageHash.image_id, ImageHash.id)
)


def _hash_values(db: Session | Connection, image_ids: Iterable[int]) -> dict[int, list[HashValue]]:
    """The stored hashes of these images, by image id (only those with any), in the order they
    were stored (the whole picture's first, as computed)."""
    wanted = list(dict.fromkeys(image_ids))
    found: dict[int, list[HashValue]] = {}
    for i in range(0, len(wanted), CACHE_LOOKUP_CHUNK):
        for image_id, alg, role, value, quality in db.execute(
            _IMAGE_HASHES, {"ids": wanted[i : i + CACHE_LOOKUP_CHUNK]}
        ):
            found.setdefault(image_id, []).append(HashValue(hash_name(alg, role), value, quality))
    return found


_KNOWN_IMAGE = select(Image.id, Image.sha256, Image.width, Image.height, Image.rehash).where(
    Image.sha256 == bindparam("sha")
)


def known_image(db: Session | Connection, sha256: str) -> ImageHashes | None:
    """The stored hashes of an image already seen (by content), so it need not be hashed again:
    every hash it had (whole picture and content boxes). ``None`` when unknown, when its
    hashes were forgotten (:func:`forget_unmatched_hashes`), or when it was stored before
    every hash was kept (``Image.rehash``): then it is hashed again.

    Takes a session or, cheaper for one lookup per fetched image, a plain connection."""
    row = db.execute(_KNOWN_IMAGE, {"sha": sha256}).first()
    if row is None or row.rehash:
        return None
    values = _hash_values(db, [row.id]).get(row.id)
    if not values:
        return None
    return ImageHashes(row.sha256, row.width, row.height, tuple(values))


def image_hashes(session: Session, image: Image) -> ImageHashes:
    """Every stored hash of a found image (none if they were forgotten)."""
    values = _hash_values(session, [image.id]).get(image.id, [])
    return ImageHashes(image.sha256, image.width, image.height, tuple(values))


def _hash_rows(image_id: int, hashes: ImageHashes) -> list[dict[str, object]]:
    rows: dict[tuple[str, str], dict[str, object]] = {}
    for h in hashes.hashes:
        algorithm, role = hash_row_key(h.algorithm)
        rows.setdefault(
            (algorithm, role),
            {
                "image_id": image_id,
                "algorithm": algorithm,
                "role": role,
                "value": h.value,
                "quality": h.quality,
            },
        )
    return list(rows.values())


@dataclass(frozen=True, slots=True)
class RecordOutcome:
    new_sighting: bool
    new_match: bool
    alerted: bool  # this sighting was added to an alert


@dataclass(frozen=True, slots=True)
class SeenImage:
    """One image a scan saw on one page, with its hashes and its match (if any).

    For a video or animation, ``frame_offset`` is the time of the frame that matched and
    ``reference_offset`` that of the enrolled video's frame it matched (else ``None``).
    ``how``: which hashes matched (:func:`monitor.matching.match_how`), stored as JSON."""

    page_url: str
    image_url: str
    hashes: ImageHashes
    match: MatchResult | None
    frame_offset: float | None = None
    reference_offset: float | None = None
    how: dict[str, object] | None = None


def record_image(
    session: Session,
    subject: Subject,
    scan_id: int | None,
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


def _dialect_insert(session: Session) -> Any:
    """The database's own ``insert`` (with ``ON CONFLICT``): PostgreSQL's or SQLite's; None
    for another database."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert
    return None  # pragma: no cover - the monitor runs on SQLite and PostgreSQL


def _insert_ignoring(
    session: Session,
    model: type,
    keys: Sequence[str],
    rows: list[dict[str, object]],
    returning: Sequence[Any] = (),
) -> list[Row[Any]]:
    """Insert ``rows``, skipping those whose ``keys`` (a unique constraint) are already stored
    -- by this or by a concurrent transaction, which it waits for -- instead of failing (INSERT
    ... ON CONFLICT DO NOTHING). With ``returning``: those columns of the rows inserted."""
    if not rows:
        return []
    dialect_insert = _dialect_insert(session)
    if dialect_insert is None:  # pragma: no cover - the monitor runs on SQLite and PostgreSQL
        stmt = insert(model)
        if returning:
            return list(session.execute(stmt.returning(*returning), rows))
        session.execute(stmt, rows)
        return []
    stmt = dialect_insert(model).on_conflict_do_nothing(
        index_elements=[getattr(model, k) for k in keys]
    )
    if returning:
        return list(session.execute(stmt.returning(*returning), rows))
    session.execute(stmt, rows)
    return []


def record_images(
    session: Session,
    subject: Subject,
    scan_id: int | None,
    seen: Sequence[SeenImage],
    *,
    now: datetime | None = None,
    hashed: bool = True,
) -> list[RecordOutcome]:
    """:func:`record_image` for many images at once, in a few set-based statements.

    Outcomes are returned in the order of ``seen``; an image seen twice in the batch is stored
    once, and a (page, image URL) pair seen twice is one sighting. Every insert is idempotent
    (``ON CONFLICT DO NOTHING``, then read back): two scans that find the same new image at
    the same time (two people's, or a scan and an enrolment's retro-match) both record their
    sightings and matches instead of one failing on a unique key. ``scan_id`` is ``None`` for
    matches made outside a scan (:func:`monitor.retro.match_seen_images`, which passes
    ``hashed=False``: its hashes were read from the database, not made from the bytes).
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
            new_images[h.sha256] = {
                "sha256": h.sha256,
                "width": h.width,
                "height": h.height,
                "first_fetched_at": now,
            }
    if new_images:
        _insert_ignoring(session, Image, ["sha256"], list(new_images.values()))
        image_ids.update(_image_ids(session, set(new_images)))
    # Every hash of every image (the whole picture's and its content boxes'), one row each;
    # rows already stored are kept (hashes forgotten after keep_seen_days come back here).
    hash_rows: list[dict[str, object]] = []
    done: set[str] = set()
    for item in seen:
        if item.hashes.sha256 not in done:
            done.add(item.hashes.sha256)
            hash_rows += _hash_rows(image_ids[item.hashes.sha256], item.hashes)
    _insert_ignoring(session, ImageHash, ["image_id", "algorithm", "role"], hash_rows)
    # An image marked to be hashed again is never reused unhashed (known_image, cached_images):
    # here it was hashed again, and every hash it has is now stored.
    if hashed:
        session.execute(
            update(Image)
            .where(Image.id.in_(list(image_ids.values())), Image.rehash.is_(True))
            .values(rehash=False)
        )

    ids = set(image_ids.values())
    # (image, page, image URL) -> (sighting id, alert id) of the sightings already stored
    stored = _sightings(session, subject.id, ids)
    matches = {
        m.image_id: m
        for m in session.scalars(
            select(Match).where(Match.subject_id == subject.id, Match.image_id.in_(ids))
        )
    }

    # Matches: new ones inserted (idempotently), better ones replace what is stored.
    new_match_ids: set[int] = set()
    for item in seen:
        image_id, match = image_ids[item.hashes.sha256], item.match
        if match is None:
            continue
        existing = matches.get(image_id)
        how = json.dumps(item.how, separators=(",", ":")) if item.how else None
        if existing is None:
            inserted = _insert_ignoring(
                session,
                Match,
                ["subject_id", "image_id"],
                [
                    {
                        "subject_id": subject.id,
                        "image_id": image_id,
                        "reference_id": match.reference_id,
                        "algorithm": match.algorithm,
                        "distance": match.distance,
                        "first_seen": now,
                        "status": "new",
                        "scan_id": scan_id,
                        "frame_offset": item.frame_offset,
                        "reference_offset": item.reference_offset,
                        "how": how,
                    }
                ],
                returning=[Match.id],
            )
            existing = session.scalar(
                select(Match).where(Match.subject_id == subject.id, Match.image_id == image_id)
            )
            assert existing is not None
            matches[image_id] = existing
            if inserted:
                new_match_ids.add(image_id)
        elif match.distance < existing.distance:
            existing.distance, existing.algorithm = match.distance, match.algorithm
            existing.reference_id = match.reference_id
            existing.frame_offset = item.frame_offset
            existing.reference_offset = item.reference_offset
            existing.how = how or existing.how

    # Sightings: the places not stored yet are inserted (idempotently); those this call
    # inserted are the new ones.
    rows: dict[tuple[int, str, str], dict[str, object]] = {}
    for item in seen:
        key = (image_ids[item.hashes.sha256], item.page_url, item.image_url)
        if key not in stored and key not in rows:
            rows[key] = {
                "subject_id": subject.id,
                "image_id": key[0],
                "page_url": item.page_url,
                "image_url": item.image_url,
                "first_seen": now,
                "last_seen": now,
                "first_scan_id": scan_id,
                "alert_id": None,
            }
    inserted_keys: dict[tuple[int, str, str], int] = {
        (r.image_id, r.page_url, r.image_url): r.id
        for r in _insert_ignoring(
            session,
            Sighting,
            ["subject_id", "image_id", "page_url", "image_url"],
            list(rows.values()),
            returning=[Sighting.id, Sighting.image_id, Sighting.page_url, Sighting.image_url],
        )
    }
    if len(inserted_keys) < len(rows):  # stored meanwhile by another transaction
        stored = _sightings(session, subject.id, ids)

    outcomes: list[RecordOutcome] = []
    reported: set[tuple[int, str, str]] = set()
    to_alert: list[int] = []  # sightings (never alerted yet) to put in the alert
    touched: set[int] = set()
    for item in seen:
        image_id = image_ids[item.hashes.sha256]
        key = (image_id, item.page_url, item.image_url)
        new_sighting = key in inserted_keys and key not in reported
        sighting_id = inserted_keys.get(key)
        alert_id = None
        if sighting_id is None:
            sighting_id, alert_id = stored[key]
            touched.add(sighting_id)
        new_match = image_id in new_match_ids
        new_match_ids.discard(image_id)
        existing = matches.get(image_id)
        alerted = False
        if (
            existing is not None
            and existing.status != "dismissed"
            and (new_sighting or new_match)
            and alert_id is None
            and key not in reported
        ):
            to_alert.append(sighting_id)
            alerted = True
        reported.add(key)
        outcomes.append(RecordOutcome(new_sighting, new_match, alerted))

    if to_alert:
        alert = alerts.hold_alert(session, subject, scan_id, new_items=len(to_alert))  # type: ignore[arg-type]
        session.flush()
        session.execute(update(Sighting), [{"id": i, "alert_id": alert.id} for i in to_alert])
    if touched:
        session.execute(update(Sighting), [{"id": i, "last_seen": now} for i in touched])
    session.flush()
    return outcomes


def _sightings(
    session: Session, subject_id: int, image_ids: set[int]
) -> dict[tuple[int, str, str], tuple[int, int | None]]:
    """(image, page, image URL) -> (sighting id, alert id) of a subject's stored sightings."""
    return {
        (image_id, page_url, image_url): (sid, alert_id)
        for sid, image_id, page_url, image_url, alert_id in session.execute(
            select(
                Sighting.id,
                Sighting.image_id,
                Sighting.page_url,
                Sighting.image_url,
                Sighting.alert_id,
            ).where(Sighting.subject_id == subject_id, Sighting.image_id.in_(image_ids))
        )
    }


def _image_ids(session: Session, shas: set[str]) -> dict[str, int]:
    return dict(
        (sha, image_id)
        for sha, image_id in session.execute(
            select(Image.sha256, Image.id).where(Image.sha256.in_(shas))
        )
    )


# ---------------------------------------------------------------- images seen before


@dataclass(frozen=True, slots=True)
class StoredImage:
    """An image seen before, by its stored hashes (and sampled frames, for a video or an
    animation): what an enrolment matches against without downloading anything."""

    image_id: int
    hashes: ImageHashes
    frames: tuple[FrameHashes, ...] = ()


def stored_images(
    session: Session, *, skip_matched_by: int | None = None, chunk: int = 500
) -> Iterator[StoredImage]:
    """Every found image whose hashes are kept, in id order, a chunk of rows at a time;
    without those ``skip_matched_by`` (a subject id) already matched."""
    last = 0
    while True:
        query = select(Image.id, Image.sha256, Image.width, Image.height).where(
            Image.id > last, exists().where(ImageHash.image_id == Image.id)
        )
        if skip_matched_by is not None:
            query = query.where(
                ~exists().where(Match.image_id == Image.id, Match.subject_id == skip_matched_by)
            )
        rows = session.execute(query.order_by(Image.id).limit(chunk)).all()
        if not rows:
            return
        last = rows[-1].id
        values = _hash_values(session, [r.id for r in rows])
        frames = known_frames(session, [r.sha256 for r in rows])
        for r in rows:
            hashes = ImageHashes(r.sha256, r.width, r.height, tuple(values.get(r.id, ())))
            yield StoredImage(r.id, hashes, frames.get(r.sha256, ()))


def places_of(session: Session, image_ids: Iterable[int]) -> dict[int, list[tuple[str, str]]]:
    """Where images were seen, by any person's scan: ``(page URL, image URL)`` pairs by image
    id, first seen first."""
    found: dict[int, list[tuple[str, str]]] = {}
    wanted = list(dict.fromkeys(image_ids))
    for i in range(0, len(wanted), CACHE_LOOKUP_CHUNK):
        for image_id, page_url, image_url in session.execute(
            select(Sighting.image_id, Sighting.page_url, Sighting.image_url)
            .where(Sighting.image_id.in_(wanted[i : i + CACHE_LOOKUP_CHUNK]))
            .order_by(Sighting.first_seen, Sighting.id)
        ):
            pairs = found.setdefault(image_id, [])
            if (page_url, image_url) not in pairs:
                pairs.append((page_url, image_url))
    return found


def forget_unmatched_hashes(
    session: Session, *, keep: timedelta, now: datetime | None = None
) -> int:
    """Delete the hashes (rows of ``image_hashes``, sampled frames and the image URL's cache
    entries) of found images that no person matched and that no scan has seen for ``keep``
    (``[match] keep_seen_days``). The image row and its sightings (URLs and SHA-256) stay; an
    image seen again is hashed again. Returns how many images' hashes were deleted."""
    cutoff = (now or utcnow()) - keep
    last_seen = (
        select(func.max(Sighting.last_seen)).where(Sighting.image_id == Image.id).scalar_subquery()
    )
    with every_row(session):  # "no person matched": no person of any organisation
        stale = list(
            session.scalars(
                select(Image.id).where(
                    exists().where(ImageHash.image_id == Image.id),
                    ~exists().where(Match.image_id == Image.id),
                    func.coalesce(last_seen, Image.first_fetched_at)
                    < bindparam("cutoff", cutoff, type_=UTCDateTime()),
                )
            )
        )
    for i in range(0, len(stale), CACHE_LOOKUP_CHUNK):
        ids = stale[i : i + CACHE_LOOKUP_CHUNK]
        session.execute(delete(ImageHash).where(ImageHash.image_id.in_(ids)))
        session.execute(delete(MediaFrames).where(MediaFrames.image_id.in_(ids)))
        session.execute(delete(FetchCacheEntry).where(FetchCacheEntry.image_id.in_(ids)))
    return len(stale)


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


def list_matches(
    session: Session, subject_name: str | None = None, scope: Scope | None = None
) -> list[MatchRow]:
    """Every sighting of every matched image, newest first (one row per page and image URL),
    of the people ``scope`` may see."""
    stmt = (
        select(Subject.name, Sighting, Match, Image.sha256)
        .join(
            Match, (Match.subject_id == Sighting.subject_id) & (Match.image_id == Sighting.image_id)
        )
        .join(Subject, Subject.id == Sighting.subject_id)
        .join(Image, Image.id == Sighting.image_id)
        .order_by(Sighting.first_seen.desc(), Sighting.id.desc())
    )
    stmt = scoped(stmt, scope)
    if subject_name is not None:
        subject = get_subject(session, subject_name, scope)
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


def _upsert(session: Session, model: type, key: str, rows: list[dict[str, object]]) -> None:
    """Insert ``rows`` into ``model``'s table, replacing the rows with the same ``key`` (its
    primary key): every other column given in the rows is overwritten. Rows must share keys."""
    if not rows:
        return
    column = getattr(model, key)
    upsert = _dialect_insert(session)
    if upsert is None:  # pragma: no cover - the monitor runs on SQLite and PostgreSQL
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
    Image.id.label("image_id"),
    Image.sha256,
    Image.width,
    Image.height,
    Image.rehash,
).join(Image, Image.id == FetchCacheEntry.image_id)
_CACHED_IMAGE = _CACHED_COLUMNS.where(FetchCacheEntry.url_sha256 == bindparam("key"))
_CACHED_IMAGES = _CACHED_COLUMNS.where(
    FetchCacheEntry.url_sha256.in_(bindparam("keys", expanding=True))
)
CACHE_LOOKUP_CHUNK = 500
"""URLs looked up per query by :func:`cached_images` (well under SQLite's variable limit)."""


def _cached_from(row: Row[Any], values: list[HashValue]) -> CachedImage:
    hashes = ImageHashes(row.sha256, row.width, row.height, tuple(values))
    return CachedImage(
        row.url, row.etag, row.last_modified, hashes, row.fresh_until, row.fetched_at
    )


def cached_image(db: Session | Connection, url: str) -> CachedImage | None:
    """The validators and hashes stored for an image URL, if it was fetched before (and its
    hashes are still kept)."""
    row = db.execute(_CACHED_IMAGE, {"key": url_key(url)}).first()
    if row is None or row.url != url or row.rehash:
        return None
    values = _hash_values(db, [row.image_id]).get(row.image_id)
    return _cached_from(row, values) if values else None


def cached_images(db: Session | Connection, urls: Iterable[str]) -> dict[str, CachedImage]:
    """:func:`cached_image` for many URLs in a few queries: by URL, only those with an entry
    (and hashes)."""
    keys = {url_key(u): u for u in urls}
    rows: list[Row[Any]] = []
    chunks = list(keys)
    for i in range(0, len(chunks), CACHE_LOOKUP_CHUNK):
        for row in db.execute(_CACHED_IMAGES, {"keys": chunks[i : i + CACHE_LOOKUP_CHUNK]}):
            if keys.get(row.url_sha256) == row.url and not row.rehash:
                rows.append(row)
    values = _hash_values(db, (r.image_id for r in rows))
    return {r.url: _cached_from(r, values[r.image_id]) for r in rows if r.image_id in values}


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
