"""Build the search queries for a person: exact phrases for their name and aliases.

Pure: no I/O. ``build_queries("Jane Doe", ["J. Doe"], budget=24)`` gives, in this order::

    "Jane Doe" (images), "J. Doe" (images), "Jane Doe" (web), "J. Doe" (web)

Image searches come first, so even a tight budget searches images for every name before it
spends queries on web pages.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from monitor.types import ResultKind, SearchQuery

__all__ = ["build_queries", "normalize_name", "phrase"]

# Straight and typographic double quotes; any of them would break the exact-phrase syntax.
_QUOTES = re.compile(r"[\"\u201c\u201d\u201e\u201f\u00ab\u00bb\u2033]")
_SPACE = re.compile(r"\s+")

# Query kinds in the order a budget spends them.
_KIND_ORDER = (ResultKind.IMAGES, ResultKind.WEB)


def normalize_name(name: str) -> str:
    """``'  "Jane   Doe" '`` -> ``'Jane Doe'``: drop double quotes, collapse whitespace."""
    return _SPACE.sub(" ", _QUOTES.sub(" ", name)).strip()


def phrase(name: str) -> str:
    """The exact-phrase form of a name as search engines expect it: ``"Jane Doe"``."""
    return f'"{normalize_name(name)}"'


def build_queries(name: str, aliases: Sequence[str], budget: int) -> list[SearchQuery]:
    """Exact-phrase queries for ``name`` and each alias, image results first, at most ``budget``.

    Names are compared case-insensitively after normalising, so ``"jane doe"`` as an alias of
    ``"Jane Doe"`` adds no query; empty names are ignored. ``budget`` must not be negative.
    """
    if budget < 0:
        raise ValueError(f"query budget must be 0 or more, got {budget}")
    names: list[str] = []
    seen: set[str] = set()
    for raw in (name, *aliases):
        clean = normalize_name(raw or "")
        key = clean.casefold()
        if clean and key not in seen:
            seen.add(key)
            names.append(clean)
    queries = [SearchQuery(f'"{n}"', kind) for kind in _KIND_ORDER for n in names]
    return queries[:budget]
