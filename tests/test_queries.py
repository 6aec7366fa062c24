"""Query building: exact phrases for a name and its aliases, image searches first."""

from __future__ import annotations

import unicodedata

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
    queries = build_queries("Jane Doe", ["J. Doe", "Janey D."], budget=10)
    assert queries == [
        SearchQuery('"Jane Doe"', IMAGES),
        SearchQuery('"J. Doe"', IMAGES),
        SearchQuery('"Janey D."', IMAGES),
        SearchQuery('"Jane Doe"', WEB),
        SearchQuery('"J. Doe"', WEB),
        SearchQuery('"Janey D."', WEB),
    ]


def test_tight_budget_still_covers_each_names_image_search() -> None:
    queries = build_queries("Jane Doe", ["J. Doe", "Janey D."], budget=4)
    assert [q.kind for q in queries] == [IMAGES, IMAGES, IMAGES, WEB]
    assert [q.text for q in queries[:3]] == ['"Jane Doe"', '"J. Doe"', '"Janey D."']
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
    assert build_queries("", ["Janey D."], budget=10) == [
        SearchQuery('"Janey D."', IMAGES),
        SearchQuery('"Janey D."', WEB),
    ]
    assert build_queries(" ", [], budget=10) == []


def test_negative_budget_is_refused() -> None:
    with pytest.raises(ValueError, match="budget"):
        build_queries("Jane Doe", [], budget=-1)


def test_nfc_and_nfd_spellings_are_one_query() -> None:
    nfc, nfd = "Jos\u00e9 Mart\u00ednez", "Jose\u0301 Marti\u0301nez"
    queries = build_queries(nfd, [nfc], budget=10)
    texts = [q.text for q in queries if q.kind is IMAGES]
    assert texts == ['"Jos\u00e9 Mart\u00ednez"', '"Jose Martinez"']  # NFC, then folded
    assert all(unicodedata.is_normalized("NFC", q.text) for q in queries)


def test_a_name_with_diacritics_is_also_searched_folded() -> None:
    queries = build_queries("Søren Ærø-Łukasz", ["Zoë Straße"], budget=20)
    assert [q.text for q in queries if q.kind is WEB] == [
        '"Søren Ærø-Łukasz"',
        '"Soren AEro-Lukasz"',
        '"Zoë Straße"',
        '"Zoe Strasse"',
    ]
    # without diacritics: no second form
    assert build_queries("Jane Doe", [], budget=10) == [
        SearchQuery('"Jane Doe"', IMAGES),
        SearchQuery('"Jane Doe"', WEB),
    ]


def test_aliases_that_look_like_handles_are_also_searched_bare() -> None:
    queries = build_queries("Jane Doe", ["@jdoe_92", "J. Doe", "janedoe"], budget=20)
    assert [q.text for q in queries if q.kind is IMAGES] == [
        '"Jane Doe"',
        '"@jdoe_92"',
        '"J. Doe"',
        '"janedoe"',
        "jdoe_92",  # bare: no quotes, no @
        "janedoe",
    ]
    assert [q.kind for q in queries] == [IMAGES] * 6 + [WEB] * 6
    # a tight budget spends itself on the exact phrases first
    assert [q.text for q in build_queries("Jane Doe", ["@jdoe_92"], budget=2)] == [
        '"Jane Doe"',
        '"@jdoe_92"',
    ]


def test_the_main_name_is_not_taken_for_a_handle() -> None:
    assert [q.text for q in build_queries("Madonna", [], budget=10)] == ['"Madonna"'] * 2
