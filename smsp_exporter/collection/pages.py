"""Pages and send indices: where a page's messages sit, whether an answer has the shape kept,
and which messages a round asks for (the model is described in ``state.py``)."""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable

from ..parse import Page
from .model import WAITING, Detail, Inconsistent, Read, Segment, TagState
from .scheduler import Purpose

# Frozen segments re-read each round: at least AUDIT_MIN, and enough for a whole cycle in
# AUDIT_CYCLE rounds.
AUDIT_MIN = 1
AUDIT_CYCLE = 250

Reads = list[tuple[int, int, Detail, int]]  # (lo, hi, detail by idx, total at that read)

# -- where a page's messages sit


def listing_order(st: TagState) -> str:
    """The order pages are placed by: oldest-first while no other is known."""
    return st.order if st.order in ("oldest", "newest") else "oldest"


def page_span(st: TagState, number: int, total: int, items: int) -> tuple[int, int]:
    """The send indices ``[lo, hi)`` page ``number`` holds at ``total``."""
    size = st.size if st.size else max(items, 1)
    start = (number - 1) * size
    if listing_order(st) == "newest":
        return total - start - items, total - start
    return start, start + items


def pages_for(st: TagState, lo: int, hi: int, total: int) -> range:
    """The pages holding send indices ``[lo, hi)`` at ``total``."""
    if hi <= lo:
        return range(0)
    size = st.size
    if not size:
        return range(1, 2)
    if listing_order(st) == "newest":
        lo, hi = total - hi, total - lo
    return range(lo // size + 1, (hi - 1) // size + 2)


def pages_of(st: TagState, spans: Iterable[tuple[int, int]], total: int) -> set[int]:
    pages: set[int] = set()
    for lo, hi in spans:
        pages.update(pages_for(st, lo, hi, total))
    return pages


# -- whether an answer has the shape kept


def answer_total(
    st: TagState, number: int, read: Read, fingerprints: dict[int, int]
) -> tuple[Page, Detail, int]:
    """The page, its detail and its total, once checked that the answer is the page asked and
    that the tag did not shrink."""
    page, detail = read
    if detail is None:
        raise Inconsistent("detail_unreadable", listing=False)
    if page.current_page not in (None, number):
        raise Inconsistent("page_ignored")
    if page.items and fingerprints.setdefault(page.fingerprint, number) != number:
        raise Inconsistent("page_ignored")  # another page's content: `page` ignored
    total = page.total if page.total is not None else page.items
    # Answers to concurrent requests come back in any order: a total below another
    # answer's says nothing, one below what earlier rounds saw says messages went away.
    if total < (st.label_total if st.order == "unknown" else st.total):
        raise Inconsistent("shrink", listing=False)
    return page, detail, total


def check_layout(
    st: TagState, number: int, page: Page, total: int, first: bool, max_pages: int
) -> None:
    """The page size, learnt from (or checked on) the round's first answer, and the page's
    length against it."""
    if first and number == 1 and total > page.items:
        if st.size and page.items != st.size:
            raise Inconsistent("page_size", listing=False)
        st.size = page.items
    if first and st.size and math.ceil(total / st.size) > max_pages:
        # Beyond api.max_pages the tag is cut, as a whole read cuts it (and says so).
        raise Inconsistent("page_cap", listing=False)
    check_size(st, number, page.items, total, first)


def check_size(st: TagState, number: int, items: int, total: int, first: bool = False) -> None:
    if not st.size:
        if number != 1 or items != total:
            raise Inconsistent("page_size", listing=False)
        return
    expected = max(0, min(st.size, total - (number - 1) * st.size))
    if items != expected:
        # The round's first answer not as before: the page size changed; later, a page
        # shorter than its total promises is cut short.
        short = items < expected and not first
        raise Inconsistent("short_page" if short else "page_size", listing=False)


# -- which messages a round asks for


# A range of send indices a round wants, why, and its order among the wants of that purpose.
Span = tuple[int, int, Purpose, float]


def waiting_due(st: TagState, seg: Segment, now: float, api_now: float | None) -> bool:
    """Whether a segment holding young Waiting messages is worth reading again: once a
    quarter of the age its youngest Waiting message had at the last read has passed. A message
    that never gets its report then costs a handful of reads over the report deadline, not one
    a round; a report that arrives at age A is seen within about A/4 (or a round).

    Ages are reckoned on the API's clock (``api_now``, from its Date header: reports arrive on
    its time); a message without a date is aged from when it was first seen, on ours."""
    if seg.live:
        waiting = st.statuses.index(WAITING) if WAITING in st.statuses else None
        youngest = max(
            (d for c, d in zip(seg.codes, seg.dates, strict=True) if c == waiting and d),
            default=None,
        )
        if youngest is not None:
            age = max(0.0, float(seg.ref - youngest))
            if api_now is None or api_now >= seg.ref + age / 4:
                return True
    if seg.unknown_seen is not None:
        age = max(0.0, seg.read_at - seg.unknown_seen)
        if now >= seg.read_at + age / 4:
            return True
    return False


def changeable(seg: Segment, now: float, deadline: float) -> bool:
    """Whether the segment holds a Waiting message that may still get its report."""
    unknown_young = seg.unknown_seen is not None and seg.unknown_seen >= now - deadline
    return seg.live or unknown_young


def needed(
    st: TagState,
    total: int,
    now: float,
    deadline: float,
    every_round: bool = True,
    api_now: float | None = None,
) -> list[Span]:
    """The send-index ranges this round needs, once the first answer told ``total``, each
    with its purpose and its order among the wants of that purpose (the segment read longest
    ago first). ``every_round`` (no rate limit): a changeable segment is read every round,
    not on its decaying schedule (:func:`waiting_due`)."""
    want: list[Span] = []
    if not st.complete:
        end = 0
        for seg in st.segments:
            if seg.lo > end:
                want.append((end, seg.lo, Purpose.FIRST_READ, end))
            end = max(end, seg.hi)
        want.append((end, total, Purpose.FIRST_READ, end))
    else:
        # New messages, from the oldest: what an earlier round read of them (past one it
        # could not read) is kept, and the counts grow from the oldest as the gap fills.
        start = st.total
        for seg in st.segments:
            if seg.hi <= start:
                continue
            if seg.lo > start:
                want.append((start, min(seg.lo, total), Purpose.NEW, start))
            start = max(start, seg.hi)
        want.append((start, total, Purpose.NEW, start))
        frozen = []
        for index, seg in enumerate(st.segments):
            if seg.hi == st.total:  # the anchor: the order is checked on it
                want.append((seg.lo, seg.hi, Purpose.NEW, seg.lo))
            elif changeable(seg, now, deadline):
                due = every_round or seg.read_at <= st.refresh_before
                if due or waiting_due(st, seg, now, api_now):
                    want.append((seg.lo, seg.hi, Purpose.WAITING, seg.read_at))
            else:
                frozen.append(index)
        want.extend((lo, hi, Purpose.AUDIT, lo) for lo, hi in audit(st, frozen))
    return [w for w in want if w[0] < w[1]]


def waiting_count(st: TagState, now: float, deadline: float, api_now: float | None) -> int:
    """How many changeable segments are due for a read (what a round reserves for them)."""
    return sum(
        1
        for seg in st.segments
        if seg.hi != st.total
        and changeable(seg, now, deadline)
        and waiting_due(st, seg, now, api_now)
    )


def audit(st: TagState, frozen: list[int]) -> list[tuple[int, int]]:
    """The frozen segments (indices in ``st.segments``) to read again this round, in turn from
    the audit's cursor (which moves once they are read: :func:`audited`)."""
    if not frozen:
        return []
    count = min(len(frozen), max(AUDIT_MIN, math.ceil(len(frozen) / AUDIT_CYCLE)))
    los = [st.segments[i].lo for i in frozen]
    start = bisect.bisect_left(los, st.cursor) % len(frozen)
    chosen = [st.segments[frozen[(start + k) % len(frozen)]] for k in range(count)]
    return [(seg.lo, seg.hi) for seg in chosen]


def uncovered(
    st: TagState, want: list[tuple[int, int]], reads: Reads, total: int
) -> list[tuple[int, int]]:
    """Send-index ranges this round wanted that no read covers: newest-first, pages read
    at different totals (the tag grew while the round ran) may leave holes."""
    if not st.complete or listing_order(st) == "oldest":
        return []
    spans = sorted((lo, hi) for lo, hi, _, _ in reads)
    out = []
    for lo, hi in want:
        hi = min(hi, total)
        for a, b in spans:
            if b <= lo or hi <= a:
                continue
            if a > lo:
                out.append((lo, a))
            lo = max(lo, b)
            if lo >= hi:
                break
        if lo < hi:
            out.append((lo, hi))
    return out


def stale(st: TagState, reads: Reads, now: float) -> list[tuple[int, int]]:
    """A first read about to end (its reads fill every hole): the segments an earlier round of
    it read that may have had reports since."""
    total = max(r[3] for r in reads)
    spans = sorted((lo, hi) for lo, hi, _, _ in reads)
    end = 0
    for seg in st.segments:  # would the reads fill every hole?
        if seg.lo > end and not within(end, seg.lo, spans):
            return []
        end = max(end, seg.hi)
    if end < total and not within(end, total, spans):
        return []
    return [
        (seg.lo, seg.hi)
        for seg in st.segments
        if seg.live and seg.read_at < now and not within(seg.lo, seg.hi, spans)
    ]


def within(lo: int, hi: int, spans: list[tuple[int, int]]) -> bool:
    """Whether the sorted ``spans`` cover ``[lo, hi)`` whole."""
    for a, b in spans:
        if a > lo:
            return False
        if b > lo:
            lo = b
        if lo >= hi:
            return True
    return lo >= hi
