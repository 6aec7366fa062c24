"""Plain data passed between pipeline stages. No I/O here.

Every stage takes and returns these frozen dataclasses, so a stage can be tested alone and a
new search backend, fetcher or hash only has to speak these types.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime


class ResultKind(enum.StrEnum):
    """Which kind of search results a query asks for."""

    WEB = "web"
    IMAGES = "images"


@dataclass(frozen=True, slots=True)
class SearchQuery:
    """One query to send to a search backend, e.g. ``"Jane Doe"`` for image results."""

    text: str
    kind: ResultKind


@dataclass(frozen=True, slots=True)
class SearchHit:
    """One search result. ``image_url`` is set for image results (SearXNG's ``img_src``)."""

    backend: str
    query: SearchQuery
    page_url: str
    image_url: str | None = None
    thumbnail_url: str | None = None
    title: str = ""
    snippet: str = ""
    engine: str = ""


@dataclass(frozen=True, slots=True)
class FetchedResource:
    """A response body held in memory. Never written to disk."""

    url: str  # the URL asked for
    final_url: str  # after redirects
    status: int
    content_type: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ImageCandidate:
    """An image URL found for a page (from its HTML, or straight from an image search hit)."""

    image_url: str
    page_url: str
    source: str  # how it was found: "img", "srcset", "og:image", "search", ...


@dataclass(frozen=True, slots=True)
class HashValue:
    """One perceptual hash of one image. ``value`` is lowercase hex."""

    algorithm: str  # "pdq" or "phash"
    value: str
    quality: int | None = None  # PDQ's quality score (0-100); None where the algorithm has none

    @property
    def bits(self) -> int:
        return len(self.value) * 4


@dataclass(frozen=True, slots=True)
class ImageHashes:
    """All hashes of one image, plus facts about it that need no pixels."""

    sha256: str
    width: int
    height: int
    hashes: tuple[HashValue, ...]

    def get(self, algorithm: str) -> HashValue | None:
        for h in self.hashes:
            if h.algorithm == algorithm:
                return h
        return None


@dataclass(frozen=True, slots=True)
class MatchResult:
    """The best match of one found image against a subject's references."""

    reference_id: int
    algorithm: str
    distance: int
    threshold: int


def iso_utc(value: datetime | None) -> str | None:
    """A UTC datetime as ISO 8601 with a ``Z`` (what ``--json`` output uses), or None."""
    return value.isoformat().replace("+00:00", "Z") if value is not None else None
