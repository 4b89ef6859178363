"""Detecting the listing order on a tag's first growth (the model is described in
``state.py``): page 1 either still shows the messages kept (oldest first) or shows them
pushed down by the growth (newest first). While the order is unknown, reads are kept by
position (``lo``, ``hi`` count from the top of the listing), each with the total it was read at.
"""

from __future__ import annotations

import logging
from array import array

from .model import DATES, Detail, Inconsistent, Segment, TagState, check_same
from .pages import Reads

# The name the incremental reader has always logged under (operators filter on it).
log = logging.getLogger("smsp_exporter.incremental")

Row = tuple[str, int, int]  # status, STOP flag, date


def detection_pages(st: TagState, total: int) -> set[int]:
    """The pages that tell the order: where the kept first segment is in either order."""
    first = st.segments[0]
    growth = total - st.label_total
    size = st.size or max(1, first.hi)
    # Oldest-first the kept positions [0, n) are page 1 still; newest-first they moved to
    # [growth, growth + n).
    pages = set(range(1, 2))
    pages.update(range(growth // size + 1, (growth + first.hi - 1) // size + 2))
    return pages


def _newest_keys(st: TagState) -> list[int]:
    """The kept first segment's send indices newest-first: positions [0, n) at the total
    ``label_total``."""
    first = st.segments[0]
    return [st.label_total - 1 - p for p in range(first.hi - first.lo)]


def views(st: TagState, reads: Reads) -> tuple[Detail | None, Detail | None, int]:
    """What the reads show of the kept first segment were the listing oldest-first, and were
    it newest-first (None where a message was not read), and the highest total read. Each
    answer is placed with its own total (the tag may grow between two requests)."""
    by_position: dict[int, Row] = {}  # oldest first: idx = position
    by_newest: dict[int, Row] = {}  # newest first: idx = total-1-position
    for lo, hi, detail, read_total in reads:
        for j in range(hi - lo):
            row = (detail.statuses[j], detail.stops[j], detail.dates[j])
            by_position[lo + j] = row
            by_newest[read_total - 1 - (lo + j)] = row
    total = max(read[3] for read in reads)

    def view(rows: dict[int, Row], keys: list[int]) -> Detail | None:
        if any(k not in rows for k in keys):
            return None
        picked = [rows[k] for k in keys]
        dates = array(DATES, (r[2] for r in picked))
        return Detail(tuple(r[0] for r in picked), bytes(r[1] for r in picked), dates)

    first = st.segments[0]
    oldest = view(by_position, list(range(first.hi - first.lo)))
    return oldest, view(by_newest, _newest_keys(st)), total


def moved_pages(st: TagState, total: int) -> set[int]:
    """Newest-first, the pages the kept first segment's messages are on at ``total`` (the tag
    grew between requests)."""
    first = st.segments[0]
    size = st.size or max(1, first.hi - first.lo)
    wanted = {total - 1 - k for k in _newest_keys(st)}  # their positions now
    return {p // size + 1 for p in wanted}


def fits(st: TagState, oldest: Detail | None, newest: Detail | None, tag: str) -> str:
    """Which order the views explain: oldest, newest or both (they read alike, e.g. nothing
    but Waiting messages); neither is an inconsistency."""
    first = st.segments[0]
    fits_oldest = oldest is not None and check_same(first, st.statuses, oldest) is None
    fits_newest = newest is not None and check_same(first, st.statuses, newest) is None
    log.info(
        "listing order test",
        extra={"tag": tag, "oldest": fits_oldest, "newest": fits_newest},
    )
    if fits_oldest and fits_newest:
        return "both"
    if not (fits_oldest or fits_newest):
        raise Inconsistent("order_undetected")
    return "newest" if fits_newest else "oldest"


def to_newest(st: TagState, reads: Reads) -> Reads:
    """The order is newest-first: the kept segments, read by position at ``label_total``, and
    the detection reads, by position at their own totals, to send indices."""
    label = st.label_total
    st.order = "newest"
    relabelled = []
    for seg in st.segments:
        dates = array(DATES, seg.dates)
        dates.reverse()
        relabelled.append(
            Segment(
                label - seg.hi,
                label - seg.lo,
                seg.codes[::-1],
                seg.stops[::-1],
                dates,
                seg.read_at,
                seg.ref,
                seg.unknown_seen,
                seg.live,
            )
        )
    st.segments = sorted(relabelled, key=lambda s: s.lo)
    return [(t - hi, t - lo, detail.reversed(), t) for lo, hi, detail, t in reads]
