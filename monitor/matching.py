"""Matching found images against a subject's reference hashes.

A :class:`ReferenceIndex` holds one subject's reference hashes per algorithm, packed into
``uint64`` words stored column by column, and finds the nearest reference of a found image by
Hamming distance with numpy (XOR, then a population count) -- an exact brute-force scan that
drops a row once its first three words are already beyond the threshold: a million PDQ hashes
take about 3-4 ms per query on one core (``benchmarks/match_speed.py``), and a person enrols
tens to hundreds of photos, each with about 500 variants.

Variants. A stored hash named ``pdq.mirror`` or ``pdq.crop20tl`` is a variant of a reference
(:func:`monitor.hashing.reference_variants`); a found image's ``pdq.region`` is the hash of its
content box (:func:`monitor.hashing.content_box`). Every hash of a found image is compared with
every hash, original or variant, of the same base algorithm. Each name can have its own
threshold (see :func:`threshold_for`); a negative threshold switches that kind of hash off.

A found image matches when ANY pair of hashes is within its threshold (``<=``).

Videos and animations. A found video or animation is matched frame by frame
(:meth:`ReferenceIndex.match_frames`): the best frame wins and the match names its time offset.
An enrolled video is stored as plain ``pdq``/``phash`` hashes of its sampled frames (never
``pdq.<tag>``: those are reference variants, thresholded as such and switched off with
``variants = false``), each with its offset (:attr:`ReferenceHashRecord.offset`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from monitor.config import MatchConfig
from monitor.hashing import VARIANT_SEPARATOR, algorithms, base_algorithm, get_algorithm
from monitor.second_stage import (
    ASPECT,
    SECOND,
    WINDOW,
    WINDOW_VOTE_SLACK,
    WINDOW_VOTES,
    is_second_stage,
    window_tag,
)
from monitor.types import ImageHashes, MatchResult

__all__ = [
    "MatchDetail",
    "ReferenceHashRecord",
    "ReferenceIndex",
    "explain_match",
    "match_how",
    "threshold_for",
    "thresholds_from_config",
]


@dataclass(frozen=True, slots=True)
class ReferenceHashRecord:
    """One stored hash of one reference (a row of ``reference_hashes``)."""

    reference_id: int
    algorithm: str
    value: str  # lowercase hex
    offset: float | None = None  # seconds into an enrolled video of the frame hashed


def thresholds_from_config(cfg: MatchConfig) -> dict[str, int]:
    """Thresholds by hash name from the ``[match]`` section.

    ``<name>_threshold`` of the config for every registered algorithm (else its default), and
    for PDQ: ``pdq.*`` (reference variants) = ``variant_pdq_threshold`` and ``pdq.region``
    (a found image's content box) = ``region_pdq_threshold``; -1 where switched off
    (``variants = false``, ``regions = false``). E.g. ``{"pdq": 31, "phash": 10, "pdq.*": 31,
    "pdq.region": 31}``.
    """
    out = {
        alg.name: int(getattr(cfg, f"{alg.name}_threshold", alg.default_threshold))
        for alg in algorithms()
    }
    out["pdq.*"] = cfg.variant_pdq_threshold if cfg.variants else -1
    out["pdq.region"] = cfg.region_pdq_threshold if cfg.regions else -1
    if cfg.second_stage:
        out[f"pdq.{SECOND}"] = cfg.second_stage_pdq_threshold
        out[f"pdq.{SECOND}.{WINDOW}"] = cfg.second_stage_window_threshold
        out[f"pdq.{SECOND}.{ASPECT}"] = cfg.second_stage_aspect_threshold
    return out


def threshold_for(name: str, thresholds: Mapping[str, int]) -> int | None:
    """The threshold of hashes named ``name`` (``pdq``, ``pdq.mirror``, ``pdq.region``...):
    ``thresholds[name]``, else that of the nearest named parent (``pdq.region`` for
    ``pdq.region.2``), else for a variant ``thresholds["<base>.*"]``, else
    ``thresholds[<base>]``, else the base algorithm's registered default, else ``None``."""
    if name in thresholds:
        return int(thresholds[name])
    base = base_algorithm(name)
    parent = name.rpartition(VARIANT_SEPARATOR)[0]
    while parent.count(VARIANT_SEPARATOR):  # pdq.region.2 -> pdq.region (not the base)
        if parent in thresholds:
            return int(thresholds[parent])
        parent = parent.rpartition(VARIANT_SEPARATOR)[0]
    if base != name and f"{base}{VARIANT_SEPARATOR}*" in thresholds:
        return int(thresholds[f"{base}{VARIANT_SEPARATOR}*"])
    if base in thresholds:
        return int(thresholds[base])
    try:
        return get_algorithm(base).default_threshold
    except ValueError:
        return None


_BYTE_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def _popcount_rows_table(words: np.ndarray) -> np.ndarray:
    """Set bits per row of a 2-D ``uint64`` array, with a byte lookup table (any numpy)."""
    as_bytes = np.ascontiguousarray(words).view(np.uint8).reshape(len(words), -1)
    return _BYTE_POPCOUNT[as_bytes].sum(axis=1, dtype=np.int64)


def _popcount_rows_native(words: np.ndarray) -> np.ndarray:
    """Set bits per row of a 2-D ``uint64`` array, with ``np.bitwise_count`` (numpy >= 2.0)."""
    return np.bitwise_count(words).sum(axis=1, dtype=np.int64)


_popcount_rows = _popcount_rows_native if hasattr(np, "bitwise_count") else _popcount_rows_table
_NATIVE = hasattr(np, "bitwise_count")

_HEX = frozenset("0123456789abcdefABCDEF")


def _pack(value: str, bits: int) -> np.ndarray:
    """Hex to big-endian ``uint64`` words (left-padded to whole words)."""
    if len(value) != bits // 4 or not _HEX.issuperset(value):
        raise ValueError(f"expected {bits // 4} hex digits, got {value!r}")
    width = -(-bits // 64) * 16
    return np.frombuffer(bytes.fromhex(value.rjust(width, "0")), dtype=">u8").astype(np.uint64)


# Words of a hash scanned over every row before rows are pruned (see :meth:`_Table.within`);
# at most 3 (their distance is summed in bytes).
_HEAD_WORDS = 3


def _count_into(words: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Set bits of each ``uint64`` in ``words`` into ``out`` (``uint8``)."""
    if _NATIVE:
        return np.bitwise_count(words, out=out)
    return np.sum(_BYTE_POPCOUNT[words.view(np.uint8)].reshape(-1, 8), axis=1, out=out)


class _Table:
    """All reference hashes of one base algorithm, originals and variants.

    Words are stored column by column (one contiguous ``uint64`` array per 64 bits), so a query
    is a few passes of XOR and population count over contiguous memory. The scratch buffers
    are reused by every query: a table is not for concurrent use by several threads.
    """

    def __init__(
        self,
        bits: int,
        ids: list[int],
        values: list[str],
        thresholds: list[int],
        tags: list[str],
        offsets: list[float | None] | None = None,
    ) -> None:
        self.bits = bits
        self.offsets = offsets if offsets is not None else [None] * len(ids)
        self.ids = np.asarray(ids, dtype=np.int64)
        width = -(-bits // 64) * 16  # hex digits in whole words (left-padded, as in _pack)
        raw = bytes.fromhex("".join(v.rjust(width, "0") for v in values))
        words = np.frombuffer(raw, dtype=">u8").reshape(len(values), -1).astype(np.uint64)
        self.columns = [np.ascontiguousarray(words[:, i]) for i in range(words.shape[1])]
        self.thresholds = np.asarray(thresholds, dtype=np.int32)
        self.uniform = (
            int(self.thresholds[0]) if (self.thresholds == self.thresholds[0]).all() else None
        )
        self.max_threshold = int(self.thresholds.max())
        # Rows reaching further than the bulk (a reference's own hash, when variants have a
        # lower threshold) are few: the first pass prunes at the bulk's threshold and checks
        # these rows apart, so one far-reaching row kind does not undo the pruning.
        self.bulk_threshold = self.max_threshold
        far = self.thresholds > np.percentile(self.thresholds, 90)
        if 0 < int(far.sum()) <= len(ids) // 10:
            self.bulk_threshold = int(self.thresholds[~far].max())
        self.far_rows = np.flatnonzero(self.thresholds > self.bulk_threshold)
        self.tags = tags
        self.variant = np.asarray([VARIANT_SEPARATOR in t for t in tags], dtype=bool)
        by_tag: dict[str, list[int]] = {}
        for i, t in enumerate(tags):
            by_tag.setdefault(t, []).append(i)
        self.rows_by_tag = {t: np.asarray(r, dtype=np.int64) for t, r in by_tag.items()}
        self._scratch = np.empty(len(ids), dtype=np.uint64)
        self._count = np.empty(len(ids), dtype=np.uint8)
        self._head = np.empty(len(ids), dtype=np.uint8)

    def __len__(self) -> int:
        return len(self.ids)

    def distances(self, value: str) -> np.ndarray:
        """Hamming distance of ``value`` to every row (``uint16``).

        Memory-bound: per 64-bit column one XOR pass and one population count into a byte
        array; up to three columns (192 bits) are summed in bytes, the rest in ``uint16``."""
        return self._distances(_pack(value.lower(), self.bits))

    def _distances(self, query: np.ndarray) -> np.ndarray:
        tmp, count = self._scratch, self._count
        acc8 = np.zeros(len(self.ids), dtype=np.uint8)
        acc: np.ndarray | None = None
        for k, (column, word) in enumerate(zip(self.columns, query, strict=True)):
            np.bitwise_xor(column, word, out=tmp)
            np.add(acc8, _count_into(tmp, count), out=acc8)
            if k % 3 == 2 or k == len(self.columns) - 1:
                if acc is None:
                    acc = acc8.astype(np.uint16)
                else:
                    acc += acc8
                acc8[:] = 0
        assert acc is not None
        return acc

    def paired(self, value: str, tag: str, bound: int) -> tuple[np.ndarray, np.ndarray]:
        """The rows tagged ``tag`` (one per reference: e.g. its ``pdq.crop30tl``) within
        ``bound`` of ``value``, and their distances."""
        rows = self.rows_by_tag.get(tag)
        if rows is None:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.uint16)
        query = _pack(value.lower(), self.bits)
        dist = np.zeros(rows.size, dtype=np.uint16)
        for column, word in zip(self.columns, query, strict=True):
            dist += _count_into(column[rows] ^ word, np.empty(rows.size, dtype=np.uint8))
        keep = dist <= bound
        return rows[keep], dist[keep]

    def within(self, value: str, bound: int, *, own: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """The rows within ``bound`` of ``value`` (ascending) and their distances (``uint16``).

        Exact, and faster than :meth:`distances` when few rows are near: the first
        ``_HEAD_WORDS`` words are scanned over every row, and a row whose distance on them
        already exceeds ``bound`` is dropped (with ``own``, when each row is judged by its own
        threshold: already beyond that threshold, when lower; see ``bulk_threshold``); a
        distance only grows with more words. The remaining words are read for the rows left,
        pruning again after each word. Random PDQ hashes differ in about 96 of their first 192 bits (sd 7), so at the variants'
        threshold of 56 almost no row is left after the first pass; with two words (128 bits,
        about 64 apart) 2% were left at 52 but 10% at 56, and a query at 1M rows took 1.5x as
        long (issue 10, ``benchmarks/match_speed.py``)."""
        query = _pack(value.lower(), self.bits)
        head = min(_HEAD_WORDS, 3, len(self.columns))
        if bound >= 64 * head:  # pruning cannot pay
            full = self._distances(query)
            rows = np.flatnonzero(full <= bound)
            return rows, full[rows]
        tmp, count, acc = self._scratch, self._count, self._head
        np.bitwise_xor(self.columns[0], query[0], out=tmp)
        _count_into(tmp, acc)
        for k in range(1, head):
            np.bitwise_xor(self.columns[k], query[k], out=tmp)
            np.add(acc, _count_into(tmp, count), out=acc)
        low = min(bound, self.bulk_threshold) if own else bound
        if bound > low and self.far_rows.size:  # the few rows reaching further (see __init__)
            keep = acc <= low
            keep[self.far_rows] = acc[self.far_rows] <= bound
            rows = np.flatnonzero(keep)
        else:
            rows = np.flatnonzero(acc <= low)
        dist = acc[rows].astype(np.uint16)
        for k in range(head, len(self.columns)):
            if rows.size == 0:
                break
            words = self.columns[k][rows]
            np.bitwise_xor(words, query[k], out=words)
            dist += _count_into(words, np.empty(rows.size, dtype=np.uint8))
            keep = dist <= (bound if low == bound else np.minimum(self.thresholds[rows], bound))
            if not keep.all():
                rows, dist = rows[keep], dist[keep]
        return rows, dist


@dataclass(frozen=True, slots=True)
class MatchDetail:
    """A match and which hashes made it: ``found`` is the found image's hash name (``pdq``,
    ``pdq.region``), ``reference`` the reference's (``pdq``, ``pdq.mirror``...).
    ``frame_offset``: seconds into the found video or animation of the frame that matched
    (``None`` for a photo); ``reference_offset``: the same in an enrolled video."""

    result: MatchResult
    found: str
    reference: str
    reference_offset: float | None = None
    frame_offset: float | None = None


class ReferenceIndex:
    """One subject's reference hashes, ready to match found images.

    ``thresholds`` maps hash names to the largest Hamming distance that still matches (see
    :func:`threshold_for`: a variant without its own entry uses ``<base>.*``, then the base
    algorithm's, then the registered default); a negative threshold leaves those hashes out.
    Hashes of algorithms
    that are neither given a threshold nor registered are ignored.
    A pair of hashes is judged by the threshold of its variant side: a reference variant's, a
    found image's region's (the smaller where both are variants), else the base algorithm's.
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
        self._given = dict(thresholds)
        grouped: dict[str, list[tuple[ReferenceHashRecord, int]]] = {}
        for rec in references:
            threshold = threshold_for(rec.algorithm, self._given)
            if threshold is None or threshold < 0:
                continue
            if rec.offset is not None:
                # A frame of an enrolled video: up to 60 rows per video, so not the reach of a
                # photo's one own hash (tuned on photos only): at most the variants' threshold.
                frame = threshold_for(f"{rec.algorithm}{VARIANT_SEPARATOR}frame", self._given)
                if frame is not None and frame >= 0:
                    threshold = min(threshold, frame)
            grouped.setdefault(base_algorithm(rec.algorithm), []).append((rec, threshold))
        order = {alg.name: rank for rank, alg in enumerate(algorithms())}
        self.thresholds: dict[str, int] = {}
        self._tables: dict[str, _Table] = {}
        self._rank: dict[str, int] = {}
        reference_ids: set[int] = set()
        for name, rows in grouped.items():
            bits = self._bits(name, rows[0][0])
            # originals first, then by reference: ties go to the original, then the lowest id
            rows.sort(key=lambda r: (r[0].algorithm != name, r[0].reference_id))
            for rec, _ in rows:
                if len(rec.value) != bits // 4 or not _HEX.issuperset(rec.value):
                    raise ValueError(
                        f"reference {rec.reference_id}: its stored {rec.algorithm} hash "
                        f"{rec.value!r} is not {bits // 4} hex digits"
                    )
            self._tables[name] = _Table(
                bits,
                [r.reference_id for r, _ in rows],
                [r.value for r, _ in rows],
                [t for _, t in rows],
                [r.algorithm for r, _ in rows],
                [r.offset for r, _ in rows],
            )
            self.thresholds[name] = threshold_for(name, self._given) or 0
            self._rank[name] = order.get(name, len(order))
            reference_ids.update(r.reference_id for r, _ in rows)
        self._reference_count = len(reference_ids)

    @staticmethod
    def _bits(name: str, first: ReferenceHashRecord) -> int:
        try:
            return get_algorithm(name).bits
        except ValueError:  # not registered: trust the stored length
            return len(first.value) * 4

    def __len__(self) -> int:
        """The number of references with at least one usable hash."""
        return self._reference_count

    @property
    def algorithms(self) -> tuple[str, ...]:
        """The (base) algorithms this index can match on."""
        return tuple(self._tables)

    @property
    def size(self) -> int:
        """The number of stored hashes in the index, variants included."""
        return sum(len(t) for t in self._tables.values())

    def _queries(self, hashes: ImageHashes) -> Iterable[tuple[str, str, _Table, int]]:
        for hv in hashes.hashes:
            table = self._tables.get(base_algorithm(hv.algorithm))
            if table is None:
                continue
            threshold = threshold_for(hv.algorithm, self._given)
            if threshold is None or threshold < 0:
                continue
            if hv.algorithm != base_algorithm(hv.algorithm) and self._low_quality(hv.quality):
                continue  # a flat region (a blank box in a screenshot) says nothing
            if is_second_stage(hv.algorithm) and not self._second_stage(hv.algorithm):
                continue  # only with thresholds given for them (thresholds_from_config)
            yield hv.algorithm, hv.value, table, threshold

    def _second_stage(self, name: str) -> bool:
        base = base_algorithm(name)
        return f"{base}{VARIANT_SEPARATOR}{SECOND}" in self._given

    def grey(self, hashes: ImageHashes, bound: int) -> bool:
        """Whether a found image is a candidate for the second stage
        (:mod:`monitor.second_stage`): one of its own PDQ hashes (the whole picture's, a content
        box's; not second-stage ones) within ``bound`` of any stored hash, and its quality
        enough to match at all. Call it for an image that matched nothing."""
        pdq = hashes.get("pdq")
        if pdq is None or self._low_quality(pdq.quality):
            return False
        table = self._tables.get("pdq")
        if table is None:
            return False
        for hv in hashes.hashes:
            if base_algorithm(hv.algorithm) != "pdq" or is_second_stage(hv.algorithm):
                continue
            if hv.algorithm != "pdq" and self._low_quality(hv.quality):
                continue
            if table.within(hv.value, bound)[0].size:
                return True
        return False

    def _low_quality(self, quality: int | None) -> bool:
        return quality is not None and quality < self.min_quality

    def nearest(self, hashes: ImageHashes) -> dict[str, tuple[int, int]]:
        """Per base algorithm present in both: ``(reference_id, distance)`` of the nearest
        reference hash (any variant, any hash of the found image), whether or not it is within
        the threshold (for diagnostics)."""
        found: dict[str, tuple[int, int]] = {}
        for name, value, table, _ in self._queries(hashes):
            if is_second_stage(name):
                continue  # see nearest_second
            distances = table.distances(value)
            best = int(np.argmin(distances))  # first of equals: originals, lowest id
            alg = base_algorithm(table.tags[best])
            candidate = (int(table.ids[best]), int(distances[best]))
            if alg not in found or candidate[1] < found[alg][1]:
                found[alg] = candidate
        return found

    def nearest_second(self, hashes: ImageHashes) -> dict[str, int]:
        """The nearest distance of a found image's second-stage hashes (for diagnostics):
        ``every`` (turned back, content boxes cut inwards) and ``aspect`` (content boxes cut to
        a photo's shape) over every stored hash, ``window``
        over the same windows only, ``vote`` the distance of the farthest of the nearest
        :data:`~monitor.second_stage.WINDOW_VOTES` windows of one photo (the nearest photo); a
        kind the image has no hashes of is left out."""
        found: dict[str, int] = {}
        for name, value, table, _ in self._queries(hashes):
            if not is_second_stage(name):
                continue
            paired = window_tag(name)
            if paired is not None:
                kind, distances = "window", table.paired(value, paired, table.bits)[1]
            else:
                aspect = name.split(VARIANT_SEPARATOR)[2] == ASPECT
                kind, distances = "aspect" if aspect else "every", table.distances(value)
            if distances.size:
                found[kind] = min(found.get(kind, table.bits + 1), int(distances.min()))
        votes = self._window_votes(hashes, 256)
        nth = [hits[WINDOW_VOTES - 1][0] for hits in votes.values() if len(hits) >= WINDOW_VOTES]
        if nth:
            found["vote"] = min(nth)
        return found

    def comparisons(self, hashes: ImageHashes) -> int:
        """How many stored hashes :meth:`match_detail` compares a found image's hashes with
        (every row of its algorithm, or for a second-stage window its one row per photo)."""
        total = 0
        for name, _, table, _ in self._queries(hashes):
            paired = window_tag(name)
            total += len(table) if paired is None else len(table.rows_by_tag.get(paired, ()))
        return total

    @staticmethod
    def _limits(
        table: _Table, found_name: str, query_threshold: int, rows: np.ndarray
    ) -> int | np.ndarray:
        """The threshold of each of ``rows`` for one hash of a found image: a variant's own
        threshold (a reference variant's, or the found image's region's); the smaller where
        both are variants; the base algorithm's where neither is."""
        if VARIANT_SEPARATOR not in found_name:  # the whole found image: the rows' thresholds
            return table.uniform if table.uniform is not None else table.thresholds[rows]
        if not table.variant.any():
            return query_threshold
        return np.where(
            table.variant[rows], np.minimum(table.thresholds[rows], query_threshold),
            query_threshold,
        )  # fmt: skip

    @staticmethod
    def _bound(table: _Table, found_name: str, query_threshold: int) -> int:
        """The largest of :meth:`_limits` over all rows (or more): no row beyond it matches."""
        if VARIANT_SEPARATOR not in found_name:
            return table.max_threshold
        return query_threshold

    def match_detail(self, hashes: ImageHashes) -> MatchDetail | None:
        """Like :meth:`match`, with the names of the two hashes that matched."""
        pdq = hashes.get("pdq")
        if pdq is not None and self._low_quality(pdq.quality):
            return None  # a flat or blank image: its hashes say nothing about content
        best: tuple[float, int, int, MatchDetail] | None = None
        for found_name, value, table, query_threshold in self._queries(hashes):
            paired = window_tag(found_name)
            limit: int | np.ndarray
            if paired is not None:  # a window: only against the same window of each photo
                rows, distances = table.paired(value, paired, query_threshold)
                limit = query_threshold
            else:
                rows, distances = table.within(
                    value,
                    self._bound(table, found_name, query_threshold),
                    own=VARIANT_SEPARATOR not in found_name,  # judged by the rows' thresholds
                )
                limit = self._limits(table, found_name, query_threshold, rows)
            ok = distances <= limit
            if not ok.any():
                continue
            hits = rows[ok]
            limits = limit[ok] if isinstance(limit, np.ndarray) else np.full(hits.size, limit)
            d = distances[ok].astype(np.float64)
            ratio = np.divide(d, limits, out=np.zeros_like(d), where=limits > 0)
            j = int(np.lexsort((hits, d, ratio))[0])  # then the first row: originals, lowest id
            i, distance, threshold = int(hits[j]), int(d[j]), int(limits[j])
            base = base_algorithm(found_name)
            result = MatchResult(int(table.ids[i]), base, distance, threshold)
            key = (
                float(distance) / threshold if threshold else 0.0,
                self._rank[base],
                distance,
                MatchDetail(result, found_name, table.tags[i], table.offsets[i]),
            )
            if best is None or key[:3] < best[:3]:
                best = key
        if best is None:
            return self._window_vote(hashes)
        return best[3]

    def _window_votes(self, hashes: ImageHashes, slack: int) -> dict[int, list[tuple]]:
        """Per reference id, ``(distance, found name, reference tag, threshold)`` of the found
        image's second-stage windows within their threshold plus ``slack`` of the same window
        of that reference, nearest first."""
        votes: dict[int, list[tuple]] = {}
        for found_name, value, table, query_threshold in self._queries(hashes):
            paired = window_tag(found_name)
            if paired is None:
                continue
            rows, distances = table.paired(value, paired, query_threshold + slack)
            for row, distance in zip(rows.tolist(), distances.tolist(), strict=True):
                votes.setdefault(int(table.ids[row]), []).append(
                    (distance, found_name, table.tags[row], query_threshold + slack)
                )
        for hits in votes.values():
            hits.sort()
        return votes

    def _window_vote(self, hashes: ImageHashes) -> MatchDetail | None:
        """A match by :data:`~monitor.second_stage.WINDOW_VOTES` windows of the found image
        (stickers over several parts of a photo leave no window within the window threshold,
        but several near it): each within the window threshold plus
        :data:`~monitor.second_stage.WINDOW_VOTE_SLACK` of the same window of one photo. The
        distance reported is the farthest of those windows'."""
        best: tuple[int, int, MatchDetail] | None = None
        for ref_id, hits in self._window_votes(hashes, WINDOW_VOTE_SLACK).items():
            if len(hits) < WINDOW_VOTES:
                continue
            distance, found_name, tag, threshold = hits[WINDOW_VOTES - 1]
            result = MatchResult(ref_id, base_algorithm(found_name), distance, threshold)
            key = (distance, ref_id, MatchDetail(result, found_name, tag, None))
            if best is None or key[:2] < best[:2]:
                best = key
        return best[2] if best is not None else None

    def match_frames(
        self, frames: Iterable[tuple[float | None, ImageHashes]]
    ) -> MatchDetail | None:
        """The best match among the frames of a video or animation, given as ``(offset,
        hashes)``: the smallest distance/threshold ratio wins (PDQ on ties, then the earliest
        frame given). The detail carries the winning frame's offset."""
        best: tuple[float, int, int] | None = None
        found: MatchDetail | None = None
        for offset, hashes in frames:
            detail = self.match_detail(hashes)
            if detail is None:
                continue
            r = detail.result
            key = (
                r.distance / r.threshold if r.threshold else 0.0,
                self._rank.get(r.algorithm, len(self._rank)),
                r.distance,
            )
            if best is None or key < best:
                best = key
                found = MatchDetail(
                    r, detail.found, detail.reference, detail.reference_offset, offset
                )
        return found

    def match(self, hashes: ImageHashes) -> MatchResult | None:
        """The best match of a found image, or ``None``.

        A found image whose PDQ quality is below ``min_quality`` (blank, flat or tiny images,
        whose hashes are near all-zero) never matches, nor does a content box of such low
        quality. A pair of hashes matches when within its threshold; among matching pairs the
        one with the smallest distance/threshold ratio wins, PDQ (the first registered) on
        ties. The result names the base algorithm (``pdq``, never ``pdq.mirror``).
        """
        detail = self.match_detail(hashes)
        return detail.result if detail is not None else None


# ---------------------------------------------------------------- how a match matched


def match_how(detail: MatchDetail, stage: str = "scan") -> dict[str, object]:
    """What a match records about how it matched (``matches.how``, JSON): the stage that
    found it (``scan``, ``retro``: an enrolment matched an image seen before), the hash of the
    found image (``pdq``, ``pdq.region``) and of the reference (``pdq``, ``pdq.mirror``,
    ``pdq.crop20-03``...) that matched, their distance, the threshold and the hash's bits; the
    time offsets for videos."""
    r = detail.result
    try:
        bits = get_algorithm(r.algorithm).bits
    except ValueError:
        bits = None
    how: dict[str, object] = {
        "stage": stage,
        "found": detail.found,
        "reference": detail.reference,
        "distance": r.distance,
        "threshold": r.threshold,
        "bits": bits,
    }
    if detail.frame_offset is not None:
        how["frame_offset"] = detail.frame_offset
    if detail.reference_offset is not None:
        how["reference_offset"] = detail.reference_offset
    return how


_DIHEDRAL_WORDS = {
    "mirror": "mirrored copy",
    "flipv": "upside-down mirrored copy",
    "rot90": "copy turned a quarter",
    "rot180": "copy turned upside down",
    "rot270": "copy turned a quarter",
    "transpose": "turned and mirrored copy",
    "transverse": "turned and mirrored copy",
}


def _reference_words(tag: str) -> str:
    """Words for a reference variant tag (the part after ``pdq.``)."""
    if tag in _DIHEDRAL_WORDS:
        return _DIHEDRAL_WORDS[tag]
    if tag.startswith(("mcrop", "mrot")):  # a variant of the mirrored photo
        return f"mirrored and {_reference_words(tag[1:])}"
    if tag.startswith("sq"):
        return "square crop"
    if tag.startswith("crop30"):
        return "cropped copy (about 30% cut away)"
    if tag.startswith("crop"):
        share = tag[4:].split("-", 1)[0]
        return f"cropped copy (about {share}% cut away)" if share.isdigit() else "cropped copy"
    if tag.startswith("rot"):
        body = tag[3:]
        how = "straightened" if body.endswith("c") else "turned"
        degrees = body.rstrip("cw").lstrip("+-")
        return f"{how} copy (about {degrees} degrees)" if degrees else f"{how} copy"
    return f"edited copy ({tag})"


def explain_match(how: Mapping[str, object] | str | None) -> str:
    """A match's ``how`` in words: "mirrored copy, 18 of 256 bits", "the photo inside a border,
    letterbox or screenshot, 12 of 256 bits", "same photo, 3 of 64 bits (pHash)". Empty for a
    match recorded before this was kept."""
    if isinstance(how, str):
        import json

        try:
            how = json.loads(how)
        except ValueError:
            return ""
    if not isinstance(how, Mapping) or "found" not in how:
        return ""
    found, reference = str(how["found"]), str(how.get("reference") or "")
    base, _, ref_tag = reference.partition(VARIANT_SEPARATOR)
    words: list[str] = []
    if window_tag(found) is not None:  # second stage: a window of the found image
        words.append("part of the photo matched (something covers the rest)")
    elif is_second_stage(found) and found.rsplit(VARIANT_SEPARATOR, 1)[-1].startswith("b"):
        words.append("the photo inside a border, letterbox or screenshot (its box cut inwards)")
    elif is_second_stage(found) and found.split(VARIANT_SEPARATOR)[2] == ASPECT:
        words.append("the photo inside a screenshot (its box cut to a photo's shape)")
    elif is_second_stage(found):  # second stage: the found image turned back
        degrees = found.rsplit(VARIANT_SEPARATOR, 1)[-1][1:].rstrip("fsu")
        try:
            turn = f"about {abs(int(degrees)) / 10:g} degrees"
        except ValueError:
            turn = "a little"
        words.append(f"turned by {turn} (found by turning it back)")
    elif VARIANT_SEPARATOR in found:  # a content box of the found image
        words.append("the photo inside a border, letterbox or screenshot")
    if ref_tag and window_tag(found) is None:  # a window is compared with its own window
        words.append(_reference_words(ref_tag))
    if not words:
        words.append("same photo")
    text = ", ".join(words)
    distance, bits = how.get("distance"), how.get("bits")
    if distance is not None:
        text += f", {distance} of {bits} bits" if bits else f", distance {distance}"
    if base and base != "pdq":
        text += f" ({base})"
    if how.get("frame_offset") is not None:
        text += f", at {float(how['frame_offset']):g} s"  # type: ignore[arg-type]
    if how.get("stage") == "retro":
        text += "; found when a photo was enrolled, among images seen before"
    return text
