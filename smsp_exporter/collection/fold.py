"""Folding a round's reads into what is kept of a tag, and counting from it (the model is
described in ``state.py``)."""

from __future__ import annotations

import bisect
import itertools
from array import array
from collections import Counter
from types import MappingProxyType

from ..client import TagCounts
from ..errors import DeadlineExceeded, UpstreamError
from .model import (
    WAITING,
    Detail,
    Inconsistent,
    Progress,
    RoundInfo,
    Segment,
    TagState,
    check_same,
)
from .pages import Reads


def merge(
    st: TagState,
    reads: Reads,
    now: float,
    deadline: float,
    mismatches: Counter[tuple[str, str]],
    tag: str,
    api_now: float | None = None,
) -> int:
    """Fold a round's reads (read at wall time ``now``; ``api_now``: the API's clock then, from
    its Date header, if known) into the segments; check what they overlap (a contradiction is
    counted in ``mismatches`` by (tag, reason), then raised). Returns the number of segments
    kept unread."""
    if not reads:
        return len(st.segments)
    pieces = _paint(reads)
    kept: list[Segment] = []
    reused = 0
    his = [p[1] for p in pieces]  # disjoint and sorted: their ends are sorted too
    for seg in st.segments:
        start = bisect.bisect_right(his, seg.lo)
        overlapping = []
        for p in pieces[start:]:
            if p[0] >= seg.hi:
                break
            overlapping.append(p)
        if not overlapping:
            kept.append(seg)
            reused += 1
            continue
        covered = sum(min(p[1], seg.hi) - max(p[0], seg.lo) for p in overlapping)
        for lo, hi, detail in overlapping:
            a, b = max(lo, seg.lo), min(hi, seg.hi)
            reason = check_same(seg, st.statuses, detail.slice(a - lo, b - lo), a - seg.lo)
            if reason is not None:
                mismatches[(tag, reason)] += 1
                raise Inconsistent(reason)
        if covered < seg.hi - seg.lo:
            kept.append(seg)  # partly read: kept whole, the read part is dropped
            reused += 1
    # New segments: the pieces, cut where a kept segment is.
    kept.sort(key=lambda s: s.lo)
    los = [s.lo for s in kept]
    fresh: list[Segment] = []
    newest = max((max(d.dates, default=0) for _, _, d in pieces), default=0)
    if st.api_newest:  # the API's clock ran at least as long as ours since
        newest = max(newest, int(st.api_newest + max(0.0, now - st.api_seen)))
    st.api_newest, st.api_seen = newest, now
    # "Now" for the report deadline, on the API's clock (its dates): its own Date when it sent
    # one; else estimated from the newest date it showed, never ahead of our clock.
    if api_now is not None:
        ref = int(min(now, api_now))
    else:
        ref = int(min(now, newest)) if newest else int(now)
    for lo, hi, detail in pieces:
        cuts = [(lo, hi)]
        first = max(0, bisect.bisect_right(los, lo) - 1)
        for seg in kept[first : bisect.bisect_left(los, hi)]:
            next_cuts = []
            for a, b in cuts:
                if seg.hi <= a or b <= seg.lo:
                    next_cuts.append((a, b))
                    continue
                if a < seg.lo:
                    next_cuts.append((a, seg.lo))
                if seg.hi < b:
                    next_cuts.append((seg.hi, b))
            cuts = next_cuts
        for a, b in cuts:
            fresh.append(_segment(st, a, b, detail.slice(a - lo, b - lo), now, ref, deadline))
    _inherit_unknown(st, fresh, [s for s in st.segments if s.unknown_seen is not None], now)
    st.segments = _coalesce(sorted(kept + fresh, key=lambda s: s.lo), st.size)
    if st.complete:
        st.total = st.covered()
    st.dirty = True
    return reused


def _inherit_unknown(st: TagState, fresh: list[Segment], before: list[Segment], now: float) -> None:
    """A Waiting message of unknown date is aged from when it was first seen: a segment
    read again keeps that time for the messages that were already there, unknown."""
    waiting = st.statuses.index(WAITING) if WAITING in st.statuses else None
    for seg in fresh:
        if seg.unknown_seen is None:
            continue
        seen = []
        for j, (c, d) in enumerate(zip(seg.codes, seg.dates, strict=True)):
            if c != waiting or d:
                continue
            idx = seg.lo + j
            old = next((o for o in before if o.lo <= idx < o.hi), None)
            if old is None or old.codes[idx - old.lo] != waiting or old.dates[idx - old.lo]:
                seen.append(now)
            else:
                seen.append(old.unknown_seen if old.unknown_seen is not None else now)
        seg.unknown_seen = max(seen) if seen else None


def _segment(
    st: TagState, lo: int, hi: int, detail: Detail, now: float, ref: int, deadline: float
) -> Segment:
    codes = bytes(st.code(s) for s in detail.statuses)
    waiting = st.statuses.index(WAITING) if WAITING in st.statuses else None
    unknown = waiting is not None and any(
        c == waiting and not d for c, d in zip(codes, detail.dates, strict=True)
    )
    live = _young(codes, detail.dates, waiting, ref, deadline)
    return Segment(
        lo, hi, codes, detail.stops, detail.dates, now, ref, now if unknown else None, live
    )


def _young(seg_codes: bytes, dates: array, waiting: int | None, ref: int, deadline: float) -> bool:
    """Whether a message is Waiting and sent less than ``deadline`` before ``ref``: its
    segment is then read again every round (``Segment.live``)."""
    if waiting is None:
        return False
    limit = ref - deadline
    return any(c == waiting and d >= limit for c, d in zip(seg_codes, dates, strict=True) if d)


def first_read_end(
    st: TagState,
    tag: str,
    now: float,
    fetched: int,
    latest_total: int | None,
    error: UpstreamError | None,
    budget: int | None = None,
) -> tuple[UpstreamError | Progress, RoundInfo] | None:
    """A first read at the end of a round (its reads folded in): complete, or how far it is
    (None: complete and fresh, the tag is counted)."""
    covered = st.covered()
    known = max([st.total, latest_total or 0, covered])
    if not st.complete and covered >= known and latest_total is not None and error is None:
        st.complete = True
        st.total = covered
        if st.order == "unknown":
            st.label_total = covered
    # Pages read in an earlier round of a first read may have had reports since: the counts
    # wait for a round that reads every changeable page again, as every round did before a
    # budget (they are wanted until then: ``refresh_before``). Under a ``budget`` (requests a
    # round), only while one round can read them all: a huge campaign, young all through, is
    # counted at once, and those pages are read on their schedule.
    if st.refresh_before:
        stale_segments = [s for s in st.segments if s.live and s.read_at <= st.refresh_before]
    else:
        stale_segments = [s for s in st.segments if s.live and s.read_at < now]
    if budget is not None and len(stale_segments) > budget:
        stale_segments = []
    stale = sum(s.hi - s.lo for s in stale_segments)
    if st.complete and not stale:
        st.refresh_before = 0.0
        return None
    if st.complete and not st.refresh_before:
        st.refresh_before = now
    read = sum(seg.hi - seg.lo for seg in st.segments) - stale
    info = RoundInfo("first_read", st.order, fetched, 0, read, known)
    if error is not None and not isinstance(error, DeadlineExceeded):
        return error, info
    # Out of time is how a first read too large for one round ends its rounds: not
    # a failure (the issue is that it used to fail for ever), it goes on next round.
    return Progress(tag, read, known, latest_total), info


def counts(st: TagState, tag: str, pages: int, total_reported: int | None) -> TagCounts:
    """The tag's counts, from its segments (a complete read): those that cover it from its
    first message without a gap. Segments past a gap (pages of new messages read while an
    earlier one was deferred) wait until it is filled: the counts are then exactly those of
    the tag's first ``covered()`` messages, never a set with holes."""
    by_code: Counter[int] = Counter()
    stop = 0
    newest = 0
    waiting_dates: list[int] = []
    unknown = 0
    bad_dates = 0
    bad_stops = 0
    waiting = st.statuses.index(WAITING) if WAITING in st.statuses else None
    covered = st.covered()
    for seg in st.segments:
        if seg.hi > covered:
            break
        codes = seg.codes
        for code in range(len(st.statuses)):
            n = codes.count(code)
            if n:
                by_code[code] += n
        stop += seg.stops.count(1)
        bad_stops += seg.stops.count(2)
        bad_dates += seg.dates.count(0)
        if seg.dates:
            newest = max(newest, max(seg.dates))
        if waiting is not None and waiting in codes:
            for c, d in zip(codes, seg.dates, strict=True):
                if c == waiting:
                    if d:
                        waiting_dates.append(d)
                    else:
                        unknown += 1
    waiting_dates.sort()
    statuses = {st.statuses[c]: n for c, n in by_code.items()}
    unreadable = {k: v for k, v in (("date", bad_dates), ("stopSMS", bad_stops)) if v}
    return TagCounts(
        tag=tag,
        statuses=MappingProxyType(statuses),
        stop=stop,
        messages=sum(statuses.values()),
        pages=pages,
        complete=True,
        truncation=None,
        total_reported=total_reported if total_reported is not None else st.total,
        oldest_waiting=waiting_dates[0] if waiting_dates else None,
        newest=newest or None,
        waiting_dates=array("q", waiting_dates),
        waiting_unknown=unknown,
        unreadable=MappingProxyType(unreadable),
    )


def _coalesce(segments: list[Segment], size: int) -> list[Segment]:
    """Join a frozen segment shorter than a page to its frozen neighbour (up to two pages'
    worth): newest-first pages straddle the segments kept, which would otherwise leave a
    sliver at each round's junction, for ever."""
    if size <= 0:
        return segments
    out: list[Segment] = []
    for seg in segments:
        prev = out[-1] if out else None
        if (
            prev is not None
            and prev.hi == seg.lo
            and not (prev.live or seg.live)
            and prev.unknown_seen is None
            and seg.unknown_seen is None
            and (prev.hi - prev.lo < size or seg.hi - seg.lo < size)
            and seg.hi - prev.lo <= 2 * size
        ):
            out[-1] = Segment(
                prev.lo,
                seg.hi,
                prev.codes + seg.codes,
                prev.stops + seg.stops,
                prev.dates + seg.dates,
                min(prev.read_at, seg.read_at),
                min(prev.ref, seg.ref),
                None,
                False,
            )
        else:
            out.append(seg)
    return out


def _paint(reads: list[tuple[int, int, Detail, int]]) -> list[tuple[int, int, Detail]]:
    """The reads as disjoint pieces by send index; a later read wins where two overlap."""
    ordered = sorted((r for r in reads if r[1] > r[0]), key=lambda r: r[0])
    if all(a[1] <= b[0] for a, b in itertools.pairwise(ordered)):
        return [(lo, hi, detail) for lo, hi, detail, _ in ordered]  # the usual case: disjoint
    pieces: list[tuple[int, int, Detail]] = []
    for lo, hi, detail, _ in reads:
        if hi <= lo:
            continue
        out = []
        for a, b, d in pieces:
            if b <= lo or hi <= a:
                out.append((a, b, d))
                continue
            if a < lo:
                out.append((a, lo, d.slice(0, lo - a)))
            if hi < b:
                out.append((hi, b, d.slice(hi - a, b - a)))
        out.append((lo, hi, detail))
        pieces = sorted(out, key=lambda p: p[0])
    return pieces
