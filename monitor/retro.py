"""Retro-matching: a person's references against every image seen before.

A photo enrolled today may already have been found: by an earlier scan of this person (before
the photo was enrolled), or by another person's scan. Every found image keeps all its hashes
(``image_hashes``: the whole picture's and its content boxes'; ``media_frames`` for videos and
animations) for ``[match] keep_seen_days`` after it was last seen, so enrolling matches the
person's references against them all from the database -- nothing is downloaded or decoded --
and records what matches like a scan does: a match (``how`` says ``"stage": "retro"``), a
sighting for every place the image was seen, and one discreet alert in the outbox.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from monitor import alerts, store
from monitor.config import Settings
from monitor.db.models import Subject
from monitor.matching import MatchDetail, ReferenceIndex, match_how, thresholds_from_config

__all__ = ["RetroReport", "match_seen_images"]


@dataclass
class RetroReport:
    """What a retro-match did: images compared, images that matched (new matches), and new
    places put in an alert."""

    checked: int = 0
    matched: int = 0
    alerted: int = 0

    def as_json(self) -> dict[str, int]:
        return {"checked": self.checked, "matched": self.matched, "alerted": self.alerted}


def match_seen_images(
    session: Session,
    settings: Settings,
    subject: Subject,
    *,
    now: datetime | None = None,
    batch: int = 500,
) -> RetroReport:
    """Match ``subject``'s references against every image seen before whose hashes are kept
    (those already matched to them are skipped), in this transaction; an alert for what is
    new is made ``pending`` (delivered by the outbox job, or the caller)."""
    report = RetroReport()
    refs = store.reference_records(session, subject.id)
    if not refs:
        return report
    index = ReferenceIndex(
        refs, thresholds_from_config(settings.match), min_quality=settings.match.min_quality
    )
    found: list[tuple[int, store.StoredImage, MatchDetail]] = []
    for image in store.stored_images(session, skip_matched_by=subject.id, chunk=batch):
        report.checked += 1
        if image.frames:
            detail = index.match_frames(
                [(0.0, image.hashes), *((f.offset, f.hashes) for f in image.frames)]
            )
        else:
            detail = index.match_detail(image.hashes)
        if detail is not None:
            found.append((image.image_id, image, detail))
    if not found:
        return report
    places = store.places_of(session, [image_id for image_id, _, _ in found])
    seen: list[store.SeenImage] = []
    for image_id, image, detail in found:
        for page_url, image_url in places.get(image_id, []):
            seen.append(
                store.SeenImage(
                    page_url,
                    image_url,
                    image.hashes,
                    detail.result,
                    detail.frame_offset,
                    detail.reference_offset,
                    match_how(detail, "retro"),
                )
            )
    outcomes = store.record_images(session, subject, None, seen, now=now, hashed=False)
    report.matched = sum(o.new_match for o in outcomes)
    report.alerted = sum(o.alerted for o in outcomes)
    if report.alerted:
        alerts.release_alerts(session, settings, now=now)
    return report
