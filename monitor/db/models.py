"""The stored records (SQLAlchemy 2.0 typed ORM). Schema changes go through Alembic.

What is stored is deliberately narrow: hashes, URLs and facts; never a reference photo, never
the bytes or pixels of a found image. Everything about a person hangs off ``Subject`` with
``ON DELETE CASCADE``, so removing a subject erases them (found images that no other subject
has seen are deleted by ``store.erase_subject``).
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from monitor.secrets import OPERATOR_TOTP, REFERENCE_HASH, REFERENCE_SHA256, EncryptedText


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Subject(Base):
    """A person being monitored (with their consent)."""

    __tablename__ = "subjects"
    __table_args__ = (
        UniqueConstraint("organisation_id", "name", name="uq_subjects_organisation_id_name"),
        Index(
            "uq_subjects_household_name",
            "name",
            unique=True,
            sqlite_where=text("organisation_id IS NULL"),
            postgresql_where=text("organisation_id IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    # Unique per organisation (people without one: unique among themselves), see 0012.
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str | None] = mapped_column(String(320))
    interval_seconds: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    next_scan_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_scan_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # A scan holds this lease while it runs, so two processes never scan the same subject at once.
    scan_lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    scan_lease_owner: Mapped[str | None] = mapped_column(String(100))
    # Possibly under 18: no evidence capture, nothing of an image beyond hashes and URL, and
    # cases point to a child-abuse hotline instead of the site (monitor/cases).
    minor: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # Opt-in: keep an encrypted copy of each found image in the case's evidence folder
    # (monitor/cases/image_copies.py). Off by default; never on for a possible minor.
    keep_image_copies: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # The organisation monitoring this person on their consent (monitor/orgs); NULL: a person
    # monitoring themselves (the single-household mode). 0012.
    organisation_id: Mapped[int | None] = mapped_column(
        ForeignKey("organisations.id", ondelete="RESTRICT"), index=True
    )
    # Why monitoring is paused ("consent expired"); NULL: not paused. No scan runs while set.
    paused_reason: Mapped[str | None] = mapped_column(String(200))
    # Who gets the alerts of an organisation's person: "person", "caseworker" or "both".
    alert_to: Mapped[str] = mapped_column(String(20), default="person", server_default="person")

    aliases: Mapped[list[Alias]] = relationship(
        back_populates="subject",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="Alias.id",
    )
    references: Mapped[list[Reference]] = relationship(
        back_populates="subject",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="Reference.id",
    )


class Alias(Base):
    """Another name the person is known by, searched like the main name."""

    __tablename__ = "aliases"
    __table_args__ = (UniqueConstraint("subject_id", "alias"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    subject_id: Mapped[int] = mapped_column(ForeignKey("subjects.id", ondelete="CASCADE"))
    alias: Mapped[str] = mapped_column(String(200))

    subject: Mapped[Subject] = relationship(back_populates="aliases")


class Reference(Base):
    """One enrolled reference image of a subject: only its hashes, never the image."""

    __tablename__ = "references"

    id: Mapped[int] = mapped_column(primary_key=True)
    subject_id: Mapped[int] = mapped_column(
        ForeignKey("subjects.id", ondelete="CASCADE"), index=True
    )
    origin: Mapped[str] = mapped_column(String(20))  # "photo", "video" or "import"
    # SHA-256 of the photo's bytes, so enrolling the same photo twice is a no-op.
    # Encrypted at rest with the reference key (monitor/secrets.py); reads give the hex digest.
    content_sha256: Mapped[str | None] = mapped_column(EncryptedText(REFERENCE_SHA256))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    subject: Mapped[Subject] = relationship(back_populates="references")
    hashes: Mapped[list[ReferenceHash]] = relationship(
        back_populates="reference",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="ReferenceHash.id",
    )


class ReferenceHash(Base):
    __tablename__ = "reference_hashes"
    __table_args__ = (Index("ix_reference_hashes_algorithm", "algorithm"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    reference_id: Mapped[int] = mapped_column(
        ForeignKey("references.id", ondelete="CASCADE"), index=True
    )
    algorithm: Mapped[str] = mapped_column(String(20))
    # Lowercase hex, encrypted at rest with the reference key (monitor/secrets.py).
    value: Mapped[str] = mapped_column(EncryptedText(REFERENCE_HASH))
    quality: Mapped[int | None] = mapped_column(Integer)
    # For an enrolled video: seconds from its start of the frame hashed (None for a photo).
    frame_offset: Mapped[float | None] = mapped_column(Float)

    reference: Mapped[Reference] = relationship(back_populates="hashes")


class Scan(Base):
    """One run of the pipeline for one subject."""

    __tablename__ = "scans"

    id: Mapped[int] = mapped_column(primary_key=True)
    subject_id: Mapped[int] = mapped_column(
        ForeignKey("subjects.id", ondelete="CASCADE"), index=True
    )
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # running | completed (every planned search answered) | partial (some searches failed,
    # were skipped or answered in part) | failed (no search answered, or the scan broke off)
    # | interrupted (the process died; finished by the next scan)
    status: Mapped[str] = mapped_column(String(20), default="running")
    queries: Mapped[int] = mapped_column(Integer, default=0)
    pages: Mapped[int] = mapped_column(Integer, default=0)
    images: Mapped[int] = mapped_column(Integer, default=0)
    matches: Mapped[int] = mapped_column(Integer, default=0)
    errors: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)


class Hit(Base):
    """A search result returned during a scan."""

    __tablename__ = "hits"

    id: Mapped[int] = mapped_column(primary_key=True)
    scan_id: Mapped[int] = mapped_column(ForeignKey("scans.id", ondelete="CASCADE"), index=True)
    backend: Mapped[str] = mapped_column(String(100))
    query: Mapped[str] = mapped_column(String(500))
    kind: Mapped[str] = mapped_column(String(10))  # "web" | "images"
    page_url: Mapped[str] = mapped_column(Text)
    image_url: Mapped[str | None] = mapped_column(Text)
    title: Mapped[str] = mapped_column(Text, default="")
    engine: Mapped[str] = mapped_column(String(100), default="")
    # Every backend that found it in this scan, comma-separated (hits are merged across
    # backends: one row per kind, page and image URL); NULL before 0010: only ``backend``.
    backends: Mapped[str | None] = mapped_column(Text)


class SearchCoverage(Base):
    """One planned search of a scan (backend x query x kind x results page) and what came of
    it: asked or not, answered or not, how many results, why not (0010). Erased with the scan.

    ``reason`` is short ("rate limited", "unavailable", "monthly budget used up"...) and
    ``detail`` the backend's message; both empty for a search answered in full."""

    __tablename__ = "search_coverage"

    id: Mapped[int] = mapped_column(primary_key=True)
    scan_id: Mapped[int] = mapped_column(ForeignKey("scans.id", ondelete="CASCADE"), index=True)
    backend: Mapped[str] = mapped_column(String(100))
    query: Mapped[str] = mapped_column(String(500))
    kind: Mapped[str] = mapped_column(String(10))  # "web" | "images"
    page: Mapped[int] = mapped_column(Integer)
    asked: Mapped[bool] = mapped_column(Boolean)  # a request was sent
    answered: Mapped[bool] = mapped_column(Boolean)  # an answer came (maybe partial)
    partial: Mapped[bool] = mapped_column(Boolean, default=False)  # some engines did not answer
    results: Mapped[int] = mapped_column(Integer, default=0)
    requests: Mapped[int] = mapped_column(Integer, default=0)  # HTTP requests actually sent
    reason: Mapped[str | None] = mapped_column(String(200))
    detail: Mapped[str | None] = mapped_column(Text)


class SearchUsage(Base):
    """Search requests sent to a backend in a calendar month (UTC), for its monthly budget
    (``[search.limits.<name>] monthly_budget``). A count, nothing about anyone (0010)."""

    __tablename__ = "search_usage"

    backend: Mapped[str] = mapped_column(String(100), primary_key=True)
    month: Mapped[str] = mapped_column(String(7), primary_key=True)  # "2026-12"
    requests: Mapped[int] = mapped_column(Integer, default=0)


class FetchErrorRecord(Base):
    """A URL or backend that failed during a scan, with a readable reason."""

    __tablename__ = "fetch_errors"

    id: Mapped[int] = mapped_column(primary_key=True)
    scan_id: Mapped[int] = mapped_column(ForeignKey("scans.id", ondelete="CASCADE"), index=True)
    url: Mapped[str] = mapped_column(Text)
    stage: Mapped[str] = mapped_column(String(20))  # "search" | "page" | "image" | "hash"
    reason: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Image(Base):
    """A found image, identified by the SHA-256 of its bytes. Hashes only, never bytes."""

    __tablename__ = "images"

    id: Mapped[int] = mapped_column(primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    first_fetched_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Stored before every hash was kept (0011: only its whole-image hashes were): hashed again
    # the next time its bytes are fetched, so its content-box hashes are stored too.
    rehash: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class ImageHash(Base):
    """One perceptual hash of a found image (0011): every hash it has, one row each, so a
    known image is matched again on all of them (region hashes of a letterboxed, bordered or
    screenshot copy included) without its bytes.

    ``algorithm`` is the base algorithm (``pdq``, ``phash``); ``role`` says what was hashed:
    ``whole`` (the whole picture), ``region`` / ``region.2`` (a content box). The hash name
    used in matching is ``algorithm`` for ``whole``, else ``<algorithm>.<role>``
    (``pdq.region``). Sampled frames of videos stay in ``media_frames``. The hashes of an
    image no person matched are deleted ``[match] keep_seen_days`` after it was last seen
    (``store.forget_unmatched_hashes``); the image row and its sightings stay.
    """

    __tablename__ = "image_hashes"
    __table_args__ = (UniqueConstraint("image_id", "algorithm", "role"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"))
    algorithm: Mapped[str] = mapped_column(String(20))
    role: Mapped[str] = mapped_column(String(20))
    value: Mapped[str] = mapped_column(String(128))  # lowercase hex
    quality: Mapped[int | None] = mapped_column(Integer)


class Sighting(Base):
    """Where a subject's scan found an image: a page URL and the image's URL."""

    __tablename__ = "sightings"
    __table_args__ = (UniqueConstraint("subject_id", "image_id", "page_url", "image_url"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    subject_id: Mapped[int] = mapped_column(
        ForeignKey("subjects.id", ondelete="CASCADE"), index=True
    )
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), index=True)
    page_url: Mapped[str] = mapped_column(Text)
    image_url: Mapped[str] = mapped_column(Text)
    first_seen: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_seen: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    first_scan_id: Mapped[int | None] = mapped_column(ForeignKey("scans.id", ondelete="SET NULL"))
    # The alert that told the person about this sighting (only for sightings of a match).
    alert_id: Mapped[int | None] = mapped_column(
        ForeignKey("outbox.id", ondelete="SET NULL"), index=True
    )

    image: Mapped[Image] = relationship()


class Match(Base):
    """A found image that matches one of the subject's references."""

    __tablename__ = "matches"
    __table_args__ = (UniqueConstraint("subject_id", "image_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    subject_id: Mapped[int] = mapped_column(
        ForeignKey("subjects.id", ondelete="CASCADE"), index=True
    )
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"))
    reference_id: Mapped[int | None] = mapped_column(
        ForeignKey("references.id", ondelete="SET NULL")
    )
    algorithm: Mapped[str] = mapped_column(String(20))
    distance: Mapped[int] = mapped_column(Integer)
    first_seen: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # The case's state (monitor/cases): new | confirmed | dismissed | notice_drafted |
    # notice_sent | removed | still_online. Only a person confirms or dismisses.
    status: Mapped[str] = mapped_column(String(20), default="new")
    scan_id: Mapped[int | None] = mapped_column(ForeignKey("scans.id", ondelete="SET NULL"))
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # confirmed or dismissed
    last_checked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # last re-check
    removed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # every place gone
    # A video or animation: seconds into it of the frame that matched (None for a photo), and
    # into the enrolled video of the reference frame it matched (None for a reference photo).
    frame_offset: Mapped[float | None] = mapped_column(Float)
    reference_offset: Mapped[float | None] = mapped_column(Float)
    # How it matched (0011), JSON: {"stage": "scan" | "retro", "found": hash name of the found
    # image ("pdq", "pdq.region"), "reference": the reference's ("pdq.mirror"), "distance",
    # "threshold", "bits"}; see matching.explain_match. NULL for matches made before.
    how: Mapped[str | None] = mapped_column(Text)
    # The caseworker handling the case (an organisation's operator, 0012); NULL: nobody yet.
    assigned_to: Mapped[int | None] = mapped_column(
        ForeignKey("operators.id", ondelete="SET NULL"), index=True
    )

    image: Mapped[Image] = relationship()
    subject: Mapped[Subject] = relationship()


class OutboxMessage(Base):
    """An alert waiting to be delivered. Written in the same transaction as the match it reports.

    ``status``: ``held`` while its scan is still running (so one scan makes one alert),
    ``pending`` when it may be sent, ``sending`` while a sender holds its lease, ``sent``,
    or ``failed`` (permanently rejected, or out of attempts).
    """

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(primary_key=True)
    subject_id: Mapped[int] = mapped_column(
        ForeignKey("subjects.id", ondelete="CASCADE"), index=True
    )
    scan_id: Mapped[int | None] = mapped_column(ForeignKey("scans.id", ondelete="SET NULL"))
    message_id: Mapped[str] = mapped_column(String(200), unique=True)
    recipient: Mapped[str | None] = mapped_column(String(320))
    status: Mapped[str] = mapped_column(String(20), default="held", index=True)
    new_items: Mapped[int] = mapped_column(Integer, default=0)
    subject_line: Mapped[str] = mapped_column(String(200), default="")
    body: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    delivered_to: Mapped[str | None] = mapped_column(Text)  # "smtp:host:port" or a file path
    # "matches" (new items found), or "degraded" / "recovered" (monitoring health notices)
    kind: Mapped[str] = mapped_column(String(20), default="matches", server_default="matches")


# ---------------------------------------------------------------- cases (monitor/cases)


class SightingState(Base):
    """What the last re-check and evidence capture found for one sighting of a case."""

    __tablename__ = "sighting_states"

    sighting_id: Mapped[int] = mapped_column(
        ForeignKey("sightings.id", ondelete="CASCADE"), primary_key=True
    )
    # online | gone (the image's address answers 404/410) | changed (no longer matches) |
    # unreachable | missing (found gone or changed once; confirmed by a later check, see
    # monitor/cases/recheck.py)
    state: Mapped[str] = mapped_column(String(20), default="online")
    detail: Mapped[str] = mapped_column(Text, default="")
    checked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    gone_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    page_lang: Mapped[str | None] = mapped_column(String(35))  # <html lang> / Content-Language
    # Evidence: pending | captured | failed | skipped (minor, or capture switched off)
    evidence_status: Mapped[str] = mapped_column(String(20), default="pending")
    evidence_files: Mapped[str | None] = mapped_column(Text)  # JSON: kind, path, sha256, url, at
    evidence_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    evidence_error: Mapped[str | None] = mapped_column(Text)
    evidence_attempts: Mapped[int] = mapped_column(Integer, default=0)


class CaseEvent(Base):
    """The history of a case, dated: confirmed, dismissed, evidence, notice, removed..."""

    __tablename__ = "case_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    match_id: Mapped[int] = mapped_column(ForeignKey("matches.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    kind: Mapped[str] = mapped_column(String(30))
    detail: Mapped[str] = mapped_column(Text, default="")


class CaseContact(Base):
    """Where to ask for removal of a sighting, ranked (0 first), with where it was found."""

    __tablename__ = "case_contacts"

    id: Mapped[int] = mapped_column(primary_key=True)
    match_id: Mapped[int] = mapped_column(ForeignKey("matches.id", ondelete="CASCADE"), index=True)
    sighting_id: Mapped[int | None] = mapped_column(
        ForeignKey("sightings.id", ondelete="CASCADE"), index=True
    )
    rank: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(10))  # "email" | "url"
    value: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(30))  # page | site | security.txt | rdap-ip...
    found_at: Mapped[str] = mapped_column(Text)  # the URL it was found at
    label: Mapped[str] = mapped_column(Text, default="")
    found_on: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Notice(Base):
    """A removal request drafted for a case; ``sent_at``/``sent_to`` once a person sent it."""

    __tablename__ = "notices"

    id: Mapped[int] = mapped_column(primary_key=True)
    match_id: Mapped[int] = mapped_column(ForeignKey("matches.id", ondelete="CASCADE"), index=True)
    lang: Mapped[str] = mapped_column(String(10))
    subject_line: Mapped[str] = mapped_column(String(300))
    body: Mapped[str] = mapped_column(Text)
    reply_to: Mapped[str | None] = mapped_column(String(320))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    sent_to: Mapped[str | None] = mapped_column(String(320))
    # What came of the request (0012; `case request`): the site acknowledged it, removed the
    # image, or refused; each with its date.
    acknowledged_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    removed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    refused_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    message_id: Mapped[str | None] = mapped_column(String(200))
    delivered_to: Mapped[str | None] = mapped_column(Text)


# ---------------------------------------------------------------- monitoring health


class SubjectHealth(Base):
    """How well a subject's scans work: consecutive scans whose search failed, and whether the
    person was told that monitoring is degraded (so they are told once, and once on recovery)."""

    __tablename__ = "subject_health"

    subject_id: Mapped[int] = mapped_column(
        ForeignKey("subjects.id", ondelete="CASCADE"), primary_key=True
    )
    search_failures: Mapped[int] = mapped_column(Integer, default=0)  # consecutive scans
    last_failure: Mapped[str | None] = mapped_column(Text)  # a readable reason, no name
    last_failure_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    degraded_since: Mapped[datetime | None] = mapped_column(UTCDateTime)  # set when told


# ---------------------------------------------------------------- fetch cache (monitor/fetch.py)


class FetchCacheEntry(Base):
    """What an image URL held when last fetched: its validators and the image (its hashes).

    Lets the next scan ask with ``If-None-Match`` / ``If-Modified-Since`` and, on 304, reuse
    the stored hashes without downloading or hashing again. Never bytes: a URL, two validators
    and a link to the image row. Deleted with the image (erasure), and by
    ``store.forget_orphan_fetch_cache`` when no sighting has the URL any more.
    """

    __tablename__ = "fetch_cache"

    id: Mapped[int] = mapped_column(primary_key=True)
    # SHA-256 of the URL: the unique key (URLs can be longer than an index entry may be).
    url_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    url: Mapped[str] = mapped_column(Text)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), index=True)
    etag: Mapped[str | None] = mapped_column(String(500))
    last_modified: Mapped[str | None] = mapped_column(String(100))
    fetched_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Until then the server said the image will not change (Cache-Control max-age / Expires,
    # capped by [fetch] max_cache_age): reused without a request. NULL: ask again (0006).
    fresh_until: Mapped[datetime | None] = mapped_column(UTCDateTime)


class MediaFrames(Base):
    """The sampled frames of a found video or animation: each frame's time offset and hashes
    (0009). Never pixels or bytes.

    Lets a scan that reuses an image row (the URL unchanged, HTTP 304 or still fresh, through
    ``fetch_cache``; or the same bytes at another URL) match every sampled frame again without
    downloading or decoding the video. ``frames`` is ``[]`` for bytes that could have had
    frames but were a still (a one-frame GIF). Deleted with the image (erasure).
    """

    __tablename__ = "media_frames"

    image_id: Mapped[int] = mapped_column(
        ForeignKey("images.id", ondelete="CASCADE"), primary_key=True
    )
    # JSON: [{"offset": s, "width": w, "height": h, "hashes": [[algorithm, hex, quality]]}]
    frames: Mapped[str] = mapped_column(Text)
    sampled_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class PageCacheEntry(Base):
    """What a page URL held when last fetched: its validators and the image and video URLs
    found on it (0008).

    Lets the next scan skip a page the server said stays the same for a while, or ask for it
    with ``If-None-Match`` / ``If-Modified-Since`` and, on 304, reuse the stored list instead
    of downloading and parsing the page again. Never the page itself: URLs and validators.
    Like ``fetch_cache``, shared by every subject's scans and deleted by
    ``store.forget_orphan_page_cache`` when no sighting has the page URL any more (erasure).
    """

    __tablename__ = "page_cache"

    id: Mapped[int] = mapped_column(primary_key=True)
    # SHA-256 of the URL asked for: the unique key (URLs can be longer than an index entry).
    url_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    url: Mapped[str] = mapped_column(Text)
    # Where it redirected to, the page URL its images were found on; NULL: not redirected.
    final_url: Mapped[str | None] = mapped_column(Text)
    etag: Mapped[str | None] = mapped_column(String(500))
    last_modified: Mapped[str | None] = mapped_column(String(100))
    fetched_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Until then the server said the page will not change (capped by [fetch] max_cache_age).
    fresh_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # JSON: [[source, image URL], ...] as extracted ("img", "og:image", "video", ...).
    candidates: Mapped[str] = mapped_column(Text, default="[]")


# ---------------------------------------------------------------- organisations (monitor/orgs)


class Organisation(Base):
    """A victim-support organisation monitoring people on their consent (0012)."""

    __tablename__ = "organisations"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Operator(Base):
    """Someone who works for an organisation: an admin, a caseworker or a viewer (0012).

    The passphrase is kept as a scrypt hash; the TOTP secret (second factor) encrypted with
    the reference key (monitor/secrets.py)."""

    __tablename__ = "operators"

    id: Mapped[int] = mapped_column(primary_key=True)
    organisation_id: Mapped[int] = mapped_column(
        ForeignKey("organisations.id", ondelete="CASCADE"), index=True
    )
    email: Mapped[str] = mapped_column(String(320), unique=True)
    role: Mapped[str] = mapped_column(String(20))  # admin | caseworker | viewer
    passphrase_hash: Mapped[str] = mapped_column(String(300))
    totp_secret: Mapped[str] = mapped_column(EncryptedText(OPERATOR_TOTP))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # the last TOTP time step accepted: a code works once, not again within its window (0014)
    totp_last_step: Mapped[int | None] = mapped_column(BigInteger)


class Membership(Base):
    """An operator's role in an organisation other than their home one
    (``Operator.organisation_id``), e.g. a helpline network's coordinator who is admin of its
    regional member organisations (0016). Only admin memberships are made; the web app's
    organisation switcher lets the operator's session act for any organisation they are an
    active admin of. Disabled by that organisation's admins (``disabled_at``); the operator's
    log-in (passphrase, second factor) stays their home organisation's to manage."""

    __tablename__ = "memberships"
    __table_args__ = (UniqueConstraint("operator_id", "organisation_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    operator_id: Mapped[int] = mapped_column(
        ForeignKey("operators.id", ondelete="CASCADE"), index=True
    )
    organisation_id: Mapped[int] = mapped_column(
        ForeignKey("organisations.id", ondelete="CASCADE"), index=True
    )
    role: Mapped[str] = mapped_column(String(20))  # admin
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Consent(Base):
    """A person's consent to be monitored by an organisation (0012): who gave it (the person,
    or a representative with stated authority), when, how (the SHA-256 of the signed form, or
    a confirmation link mailed to the person), which names may be searched, which search
    backends may receive them, until when, and whether it was withdrawn. Erased with the
    person (withdrawal erases at once)."""

    __tablename__ = "consents"

    id: Mapped[int] = mapped_column(primary_key=True)
    subject_id: Mapped[int] = mapped_column(
        ForeignKey("subjects.id", ondelete="CASCADE"), index=True
    )
    given_by: Mapped[str] = mapped_column(String(20))  # "person" | "representative"
    representative: Mapped[str | None] = mapped_column(String(200))  # name, when not the person
    authority: Mapped[str | None] = mapped_column(Text)  # the representative's stated authority
    given_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    method: Mapped[str] = mapped_column(String(20))  # "signed_form" | "mailed_link"
    form_sha256: Mapped[str | None] = mapped_column(String(64))
    link_token_sha256: Mapped[str | None] = mapped_column(String(64))  # mailed link's token
    confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # link clicked / form
    names: Mapped[str] = mapped_column(Text)  # JSON list: the name and aliases consented to
    backends: Mapped[str] = mapped_column(Text)  # JSON list of backend names, or ["*"]: any
    valid_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    withdrawn_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    recorded_by: Mapped[int | None] = mapped_column(ForeignKey("operators.id", ondelete="SET NULL"))


class PersonLogin(Base):
    """A monitored person's own log-in to see their cases, read only (0015): invited by a
    caseworker with a mailed one-time link (only its SHA-256 is kept, until it is used or
    expires), then a passphrase (scrypt hash). ``login`` is the address the invitation went
    to. Erased with the person."""

    __tablename__ = "person_logins"

    id: Mapped[int] = mapped_column(primary_key=True)
    subject_id: Mapped[int] = mapped_column(
        ForeignKey("subjects.id", ondelete="CASCADE"), unique=True
    )
    # not unique: the same address may be a person of two organisations (and must not tell
    # one organisation that the other knows it)
    login: Mapped[str] = mapped_column(String(320), index=True)
    passphrase_hash: Mapped[str | None] = mapped_column(String(300))  # None until set
    invite_sha256: Mapped[str | None] = mapped_column(String(64), index=True)
    invite_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class AuditEntry(Base):
    """One view, change or export of a person's data (0012). Append-only: the database
    refuses UPDATE and DELETE (triggers). ``detail`` never holds personal data (ids, counts,
    field names), so after an erasure the log keeps that it happened and nothing about whom;
    ``subject_id`` then points to no one."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    organisation_id: Mapped[int | None] = mapped_column(Integer, index=True)  # no FK: kept
    operator: Mapped[str] = mapped_column(String(320))  # operator email, or "local", "system"
    action: Mapped[str] = mapped_column(String(40))
    subject_id: Mapped[int | None] = mapped_column(Integer, index=True)  # no FK: kept
    detail: Mapped[str] = mapped_column(Text, default="")


# ---------------------------------------------------------------- web app (monitor/web/)


class WebAccess(Base):
    """The local web app's passphrase (an scrypt hash with its parameters, never the
    passphrase), set on the first visit (0013). One row."""

    __tablename__ = "web_access"

    id: Mapped[int] = mapped_column(primary_key=True)
    passphrase_hash: Mapped[str] = mapped_column(String(400))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
