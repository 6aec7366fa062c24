"""Build the search queries for a person: exact phrases for their name and aliases.

Pure: no I/O. ``build_queries("José Doe", ["J. Doe", "@jdoe_92"], budget=24)`` gives, in this
order::

    "José Doe", "Jose Doe", "J. Doe", "@jdoe_92", jdoe_92   (images)
    "José Doe", "Jose Doe", "J. Doe", "@jdoe_92", jdoe_92   (web)

- Names are normalised to Unicode NFC, so the same name typed with composed or decomposed
  accents (``é`` or ``e`` + a combining accent) is one query, not two.
- A name with diacritics is also searched folded to plain letters (``José`` -> ``Jose``,
  ``Søren`` -> ``Soren``): people and sites often drop them.
- An alias without a space looks like a handle (``@jdoe_92``, ``jdoe92``): it is also searched
  bare, without quotes and without a leading ``@``, as it would appear in a profile address.

Image searches come first, so even a tight budget searches images for every name before it
spends queries on web pages; within a kind, the bare handles come last.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

from monitor.types import ResultKind, SearchQuery

__all__ = [
    "ALL_QUERIES",
    "build_queries",
    "fold_diacritics",
    "name_forms",
    "normalize_name",
    "phrase",
]

# Straight and typographic double quotes; any of them would break the exact-phrase syntax.
_QUOTES = re.compile(r"[\"\u201c\u201d\u201e\u201f\u00ab\u00bb\u2033]")
_SPACE = re.compile(r"\s+")

# Query kinds in the order a budget spends them.
_KIND_ORDER = (ResultKind.IMAGES, ResultKind.WEB)

# Letters that carry no combining mark to strip but are written plainly all the same.
_PLAIN = str.maketrans(
    {
        "ß": "ss",
        "ẞ": "SS",
        "ø": "o",
        "Ø": "O",
        "ł": "l",
        "Ł": "L",
        "đ": "d",
        "Đ": "D",
        "æ": "ae",
        "Æ": "AE",
        "œ": "oe",
        "Œ": "OE",
        "þ": "th",
        "Þ": "Th",
        "ð": "d",
        "Ð": "D",
        "ı": "i",
    }
)


ALL_QUERIES = 1_000_000
"""A budget that keeps every query (a scan marks those over its cap as skipped)."""


def normalize_name(name: str) -> str:
    """``'  "Jane   Doe" '`` -> ``'Jane Doe'``: Unicode NFC, no double quotes, single spaces."""
    text = unicodedata.normalize("NFC", name)
    return _SPACE.sub(" ", _QUOTES.sub(" ", text)).strip()


def fold_diacritics(name: str) -> str:
    """``'José Søren'`` -> ``'Jose Soren'``: accents and the like dropped, NFC again."""
    decomposed = unicodedata.normalize("NFKD", name.translate(_PLAIN))
    plain = "".join(c for c in decomposed if not unicodedata.combining(c))
    return normalize_name(plain)


def phrase(name: str) -> str:
    """The exact-phrase form of a name as search engines expect it: ``"Jane Doe"``."""
    return f'"{normalize_name(name)}"'


def _is_handle(name: str) -> bool:
    return " " not in name


def name_forms(name: str, aliases: Sequence[str]) -> tuple[list[str], list[str]]:
    """``(phrases, bare)``: the names to search as exact phrases (each name, then its folded
    form where that differs), and the handles to search bare; both without duplicates
    (ignoring case) and in order."""
    phrases: list[str] = []
    bare: list[str] = []
    seen: set[str] = set()

    def add(target: list[str], text: str, key: str) -> None:
        if text and key not in seen:
            seen.add(key)
            target.append(text)

    for i, raw in enumerate((name, *aliases)):
        clean = normalize_name(raw or "")
        if not clean:
            continue
        add(phrases, clean, "p:" + clean.casefold())
        add(phrases, fold_diacritics(clean), "p:" + fold_diacritics(clean).casefold())
        if i > 0 and _is_handle(clean):
            handle = clean.lstrip("@")
            add(bare, handle, "b:" + handle.casefold())
    return phrases, bare


def build_queries(name: str, aliases: Sequence[str], budget: int) -> list[SearchQuery]:
    """Queries for ``name`` and each alias (see the module's docstring), image results first,
    at most ``budget``.

    Names are compared case-insensitively after normalising, so ``"jane doe"`` as an alias of
    ``"Jane Doe"`` adds no query; empty names are ignored. ``budget`` must not be negative.
    """
    if budget < 0:
        raise ValueError(f"query budget must be 0 or more, got {budget}")
    phrases, bare = name_forms(name, aliases)
    texts = [f'"{n}"' for n in phrases] + bare
    queries = [SearchQuery(text, kind) for kind in _KIND_ORDER for text in texts]
    return queries[:budget]
