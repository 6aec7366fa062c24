"""Matching found images against a subject's reference hashes.

A :class:`ReferenceIndex` holds one subject's reference hashes per algorithm, packed into
``uint64`` words, and finds the nearest reference of a found image by Hamming distance with
numpy (XOR, then a population count) -- a brute-force scan, which for the tens to hundreds of
references one person enrols is faster than any tree or FAISS index.

A found image matches when ANY algorithm puts it within that algorithm's threshold (``<=``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from monitor.config import MatchConfig
from monitor.hashing import algorithms, get_algorithm
from monitor.types import ImageHashes, MatchResult

__all__ = ["ReferenceHashRecord", "ReferenceIndex", "thresholds_from_config"]


@dataclass(frozen=True, slots=True)
class ReferenceHashRecord:
    """One stored hash of one reference (a row of ``reference_hashes``)."""

    reference_id: int
    algorithm: str
    value: str  # lowercase hex


def thresholds_from_config(cfg: MatchConfig) -> dict[str, int]:
    """Per-algorithm thresholds: ``<name>_threshold`` of the config, else the algorithm's
    default (e.g. ``{"pdq": 31, "phash": 10}``)."""
    return {
        alg.name: int(getattr(cfg, f"{alg.name}_threshold", alg.default_threshold))
        for alg in algorithms()
    }


_BYTE_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def _popcount_rows_table(words: np.ndarray) -> np.ndarray:
    """Set bits per row of a 2-D ``uint64`` array, with a byte lookup table (any numpy)."""
    as_bytes = np.ascontiguousarray(words).view(np.uint8).reshape(len(words), -1)
    return _BYTE_POPCOUNT[as_bytes].sum(axis=1, dtype=np.int64)


def _popcount_rows_native(words: np.ndarray) -> np.ndarray:
    """Set bits per row of a 2-D ``uint64`` array, with ``np.bitwise_count`` (numpy >= 2.0)."""
    return np.bitwise_count(words).sum(axis=1, dtype=np.int64)


_popcount_rows = _popcount_rows_native if hasattr(np, "bitwise_count") else _popcount_rows_table


_HEX = frozenset("0123456789abcdefABCDEF")


def _pack(value: str, bits: int) -> np.ndarray:
    """Hex to big-endian ``uint64`` words (left-padded to whole words)."""
    if len(value) != bits // 4 or not _HEX.issuperset(value):
        raise ValueError(f"expected {bits // 4} hex digits, got {value!r}")
    width = -(-bits // 64) * 16
    return np.frombuffer(bytes.fromhex(value.rjust(width, "0")), dtype=">u8").astype(np.uint64)


class _Table:
    """All reference hashes of one algorithm."""

    def __init__(self, bits: int, ids: list[int], values: list[str]) -> None:
        self.bits = bits
        self.ids = np.asarray(ids, dtype=np.int64)
        self.words = np.stack([_pack(v, bits) for v in values])

    def nearest(self, value: str) -> tuple[int, int]:
        query = _pack(value.lower(), self.bits)
        distances = _popcount_rows(np.bitwise_xor(self.words, query))
        best = int(np.argmin(distances))  # first of equals: the lowest reference id
        return int(self.ids[best]), int(distances[best])


class ReferenceIndex:
    """One subject's reference hashes, ready to match found images.

    ``thresholds`` maps algorithm names to the largest Hamming distance that still matches;
    an algorithm missing there uses its registered ``default_threshold``, and hashes of
    algorithms that are neither given a threshold nor registered are ignored.
    A malformed stored hash raises ``ValueError`` naming its reference.
    """

    def __init__(
        self,
        references: Iterable[ReferenceHashRecord],
        thresholds: Mapping[str, int],
        *,
        min_quality: int = 0,
    ) -> None:
        self.min_quality = min_quality
        grouped: dict[str, list[ReferenceHashRecord]] = {}
        for rec in references:
            grouped.setdefault(rec.algorithm, []).append(rec)
        order = {alg.name: rank for rank, alg in enumerate(algorithms())}
        self.thresholds: dict[str, int] = {}
        self._tables: dict[str, _Table] = {}
        self._rank: dict[str, int] = {}
        reference_ids: set[int] = set()
        for name, records in grouped.items():
            threshold, bits = self._threshold_and_bits(name, records, thresholds)
            if threshold is None:
                continue
            records.sort(key=lambda r: r.reference_id)
            for rec in records:
                if len(rec.value) != bits // 4 or not _HEX.issuperset(rec.value):
                    raise ValueError(
                        f"reference {rec.reference_id}: its stored {name} hash {rec.value!r} "
                        f"is not {bits // 4} hex digits"
                    )
            table = _Table(bits, [r.reference_id for r in records], [r.value for r in records])
            self._tables[name] = table
            self.thresholds[name] = threshold
            self._rank[name] = order.get(name, len(order))
            reference_ids.update(r.reference_id for r in records)
        self._reference_count = len(reference_ids)

    @staticmethod
    def _threshold_and_bits(
        name: str, records: list[ReferenceHashRecord], thresholds: Mapping[str, int]
    ) -> tuple[int | None, int]:
        try:
            alg = get_algorithm(name)
        except ValueError:  # not registered: needs a given threshold; trust the stored length
            return thresholds.get(name), len(records[0].value) * 4
        return thresholds.get(name, alg.default_threshold), alg.bits

    def __len__(self) -> int:
        """The number of references with at least one usable hash."""
        return self._reference_count

    @property
    def algorithms(self) -> tuple[str, ...]:
        """The algorithms this index can match on."""
        return tuple(self._tables)

    def nearest(self, hashes: ImageHashes) -> dict[str, tuple[int, int]]:
        """Per algorithm present in both: ``(reference_id, distance)`` of the nearest
        reference, whether or not it is within the threshold (for diagnostics)."""
        found: dict[str, tuple[int, int]] = {}
        for hv in hashes.hashes:
            table = self._tables.get(hv.algorithm)
            if table is not None:
                found[hv.algorithm] = table.nearest(hv.value)
        return found

    def match(self, hashes: ImageHashes) -> MatchResult | None:
        """The best match of a found image, or ``None``.

        A found image whose PDQ quality is below ``min_quality`` (blank, flat or tiny images,
        whose hashes are near all-zero) never matches. An algorithm matches when its nearest
        reference is within its threshold; among
        matching algorithms the one with the smallest distance/threshold ratio wins, PDQ (the
        first registered) on ties.
        """
        pdq = hashes.get("pdq")
        if pdq is not None and pdq.quality is not None and pdq.quality < self.min_quality:
            return None  # a flat or blank image: its hashes say nothing about content
        best: tuple[float, int, MatchResult] | None = None
        for name, (reference_id, distance) in self.nearest(hashes).items():
            threshold = self.thresholds[name]
            if distance > threshold:
                continue
            ratio = distance / threshold if threshold else 0.0
            result = MatchResult(reference_id, name, distance, threshold)
            key = (ratio, self._rank[name], result)
            if best is None or key[:2] < best[:2]:
                best = key
        return best[2] if best is not None else None
