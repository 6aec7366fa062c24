"""Query building: exact phrases for a name and its aliases, image searches first."""

from __future__ import annotations

import pytest

from monitor.queries import build_queries
from monitor.types import ResultKind, SearchQuery

IMAGES, WEB = ResultKind.IMAGES, ResultKind.WEB


def test_name_gives_exact_phrase_for_images_then_web() -> None:
    assert build_queries("Jane Doe", [], budget=10) == [
        SearchQuery('"Jane Doe"', IMAGES),
        SearchQuery('"Jane Doe"', WEB),
    ]


def test_every_name_is_searched_for_images_before_any_web_search() -> None:
    queries = build_queries("Jane Doe", ["J. Doe", "Janey"], budget=10)
    assert queries == [
        SearchQuery('"Jane Doe"', IMAGES),
        SearchQuery('"J. Doe"', IMAGES),
        SearchQuery('"Janey"', IMAGES),
        SearchQuery('"Jane Doe"', WEB),
        SearchQuery('"J. Doe"', WEB),
        SearchQuery('"Janey"', WEB),
    ]


def test_tight_budget_still_covers_each_names_image_search() -> None:
    queries = build_queries("Jane Doe", ["J. Doe", "Janey"], budget=4)
    assert [q.kind for q in queries] == [IMAGES, IMAGES, IMAGES, WEB]
    assert [q.text for q in queries[:3]] == ['"Jane Doe"', '"J. Doe"', '"Janey"']
    assert build_queries("Jane Doe", ["J. Doe"], budget=1) == [SearchQuery('"Jane Doe"', IMAGES)]
    assert build_queries("Jane Doe", ["J. Doe"], budget=0) == []


def test_inner_quotes_and_extra_whitespace_are_removed() -> None:
    queries = build_queries('  "Jane   Doe" ', ["Jane\t\u201cJD\u201d\nDoe"], budget=10)
    assert [q.text for q in queries if q.kind is IMAGES] == ['"Jane Doe"', '"Jane JD Doe"']


def test_names_are_deduplicated_ignoring_case_and_spacing() -> None:
    queries = build_queries("Jane Doe", ["jane doe", "JANE  DOE", '"Jane Doe"', "J. Doe"], 10)
    assert [q.text for q in queries] == ['"Jane Doe"', '"J. Doe"', '"Jane Doe"', '"J. Doe"']


def test_empty_names_are_ignored() -> None:
    assert build_queries("Jane Doe", ["", "   ", '""'], budget=10) == [
        SearchQuery('"Jane Doe"', IMAGES),
        SearchQuery('"Jane Doe"', WEB),
    ]
    assert build_queries("", ["Janey"], budget=10) == [
        SearchQuery('"Janey"', IMAGES),
        SearchQuery('"Janey"', WEB),
    ]
    assert build_queries(" ", [], budget=10) == []


def test_negative_budget_is_refused() -> None:
    with pytest.raises(ValueError, match="budget"):
        build_queries("Jane Doe", [], budget=-1)
