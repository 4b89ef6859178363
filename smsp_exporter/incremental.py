"""Incremental collection: a round reads the pages that can change, and reuses the others.

The model. A tag's messages are kept as *segments*: contiguous runs of messages, each with,
per message, its status (as an index in the tag's status table), its STOP flag and its
``date``. Messages are numbered by *send index* ``idx`` (0 = the oldest), which does not move
as the tag grows, whatever the listing order: with an oldest-first listing page ``k`` holds
``idx`` ``[(k-1)S, kS)``; newest-first it holds ``[T-kS, T-(k-1)S)`` for a total ``T`` (the pages
are aligned on the end, so they straddle old segments when ``T`` grows by other than a multiple
of the page size ``S``: the page read is then cut, message by message, at the segments kept).

A steady round asks only for: the page that tells the new total (the last page known
oldest-first, page 1 newest-first), the pages holding new messages, the pages holding a
message that was ``Waiting`` and young (sent less than ``report_deadline`` ago) when last read,
the newest segment known (the anchor: it checks the order every round) and a small rotating
audit of frozen segments. A final status never changes; a ``Waiting`` message older than the
deadline is final (``Waiting`` for ever).

Everything read is checked against what was kept, message by message, before it is used: a
final message must keep its status and date; a Waiting one may only stay Waiting (same date)
or get a report dated no earlier than its sending and than the read that saw it Waiting (less a
slack for clocks); a STOP flag may only appear. The order is *detected* on the first growth
(which of oldest-first and newest-first explains what page 1 now shows), and re-checked every
round at the anchor. Any failed check (a listing sorted by report date moves messages; one
ignoring ``page``; a shrinking total; a new page size) drops the tag's state: the round's counts
then come from a whole read, as without this module, and the tag stays on whole reads for
``WHOLE_READS_FOR`` seconds when the listing itself is to blame. A check costs requests, never
correctness.

Until a tag has been read completely once, no counts are exported for it: its first read goes
on over as many rounds as it needs (``first_read`` progress).
"""

from __future__ import annotations

import bisect
import itertools
import json
import logging
import math
import queue
import threading
import time
from array import array
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import CancelledError, Future
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, NamedTuple, cast

import msgspec

from .client import SmsPartnerClient, TagCounts, TagPager
from .errors import ConnectionFailed, DeadlineExceeded, InvalidResponse, UpstreamError
from .parse import LIST_KEY, Page, parse_page, read_date, read_stop

log = logging.getLogger(__name__)

WAITING = "Waiting"
# A report seen on a message that was Waiting must be dated no earlier than that read less this
# (seconds): the API's clock and ours, and the time a report takes to show, may differ.
REPORT_SLACK = 3600
# Frozen segments re-read each round: at least AUDIT_MIN, and enough for a whole cycle in
# AUDIT_CYCLE rounds.
AUDIT_MIN = 1
AUDIT_CYCLE = 250
# After an inconsistency in how the API lists a tag, whole reads for this long (s) before the
# incremental way is tried again.
WHOLE_READS_FOR = 3600.0
# Extra request passes a round may make for messages that moved while it ran (newest-first).
MAX_FILL_PASSES = 3
# Dates are kept as unsigned 32-bit Unix seconds (until 2106): 4 bytes a message. A date
# beyond reads as unknown here, which parse_page's aggregates then contradict: the page is
# read whole instead (see _agrees).
DATES = "I"
MAX_DATE = 2**32 - 1
MAX_STATUSES = 127  # distinct statuses a tag's table holds (parse caps a page's far lower)

ORDERS = ("unknown", "oldest", "newest", "whole")


class Inconsistent(Exception):
    """What a page shows contradicts what was kept: the tag's state cannot be trusted."""

    def __init__(self, reason: str, listing: bool = True) -> None:
        super().__init__(reason)
        self.reason = reason
        self.listing = listing  # the listing's order is to blame (whole reads for a while)


# -- the detail of one page ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Detail:
    """Per message, in listing order: status, STOP flag (0, 1, 2 = unknown), date (0 = unknown)."""

    statuses: tuple[str, ...]
    stops: bytes
    dates: array

    def __len__(self) -> int:
        return len(self.statuses)

    def reversed(self) -> Detail:
        dates = array(DATES, self.dates)
        dates.reverse()
        return Detail(self.statuses[::-1], self.stops[::-1], dates)

    def slice(self, start: int, end: int) -> Detail:
        return Detail(self.statuses[start:end], self.stops[start:end], self.dates[start:end])


EMPTY_DETAIL = Detail((), b"", array(DATES))


class Read(NamedTuple):
    """One page as :func:`parse_detailed` gives it; ``detail`` is None when the per-message
    reading disagrees with the page's aggregates (the tag is then read whole)."""

    page: Page
    detail: Detail | None


class _Msg(msgspec.Struct, gc=False):
    status: str | msgspec.UnsetType = msgspec.UNSET
    statut: str | msgspec.UnsetType = msgspec.UNSET  # how message-status spells it
    stopSMS: Any = None
    date: Any = None


class _Answer(msgspec.Struct, gc=False):
    StatutResponse_List: list[_Msg] | None = None


_DECODER = msgspec.json.Decoder(_Answer)


def _date(value: object) -> int:
    """parse.read_date's reading (0: unknown), kept if it fits the 32 bits kept."""
    seconds = read_date(value)
    return seconds if seconds is not None and 0 < seconds <= MAX_DATE else 0


def parse_detailed(body: bytes) -> Read:
    """:func:`parse.parse_page` (which decides what is valid and counts), plus the per-message
    detail, read with parse's own readers and checked against the page's aggregates."""
    page = parse_page(body)
    if page.items == 0:
        return Read(page, EMPTY_DETAIL)
    messages: list[tuple[Any, Any, Any]]
    try:
        raw = _DECODER.decode(body).StatutResponse_List or []
        messages = [
            (m.statut if m.status is msgspec.UNSET else m.status, m.stopSMS, m.date) for m in raw
        ]
    except (msgspec.MsgspecError, UnicodeDecodeError):
        try:
            doc = json.loads(body)
            messages = [
                (m["status"] if "status" in m else m.get("statut"), m.get("stopSMS"), m.get("date"))
                for m in doc[LIST_KEY]
            ]
        except (ValueError, TypeError, KeyError, AttributeError, RecursionError):
            return Read(page, None)
    # One object per distinct status: a page's tuple then costs 8 bytes a message, not a string
    # each (a first read holds every page until its round ends).
    canonical: dict[Any, Any] = {}
    statuses = tuple(canonical.setdefault(status, status) for status, _, _ in messages)
    stops = bytes(read_stop(stop) for _, stop, _ in messages)
    dates = array(DATES, (_date(date) for _, _, date in messages))
    detail = Detail(statuses, stops, dates)
    return Read(page, detail if _agrees(page, detail) else None)


def _agrees(page: Page, detail: Detail) -> bool:
    if len(detail) != page.items or Counter(detail.statuses) != dict(page.statuses):
        return False
    if detail.stops.count(1) != page.stop:
        return False
    waiting = sorted(d for s, d in zip(detail.statuses, detail.dates, strict=True) if s == WAITING)
    known = [d for d in waiting if d]
    if tuple(known) != tuple(page.waiting_dates):
        return False
    if len(waiting) - len(known) != page.waiting_unknown:
        return False
    if detail.stops.count(2) != page.unreadable.get("stopSMS", 0):
        return False
    return detail.dates.count(0) == page.unreadable.get("date", 0)


# -- what is kept of a tag -----------------------------------------------------------------


@dataclass(slots=True)
class Segment:
    """Messages ``[lo, hi)`` (send indices) as last read."""

    lo: int
    hi: int
    codes: bytes  # status index in TagState.statuses, per message
    stops: bytes
    dates: array
    read_at: float  # wall time of the read
    ref: int  # "now" for the deadline at that read: min(wall clock, the tag's newest date)
    unknown_seen: float | None  # when a Waiting message of unknown date here was first seen
    live: bool = False  # held a Waiting message still young at that read

    def detail(self, statuses: list[str]) -> Detail:
        return Detail(tuple(statuses[c] for c in self.codes), self.stops, self.dates)


@dataclass
class TagState:
    """Everything kept of one tag between rounds (and in the state file)."""

    order: str = "unknown"
    size: int = 0  # page size; 0 while the tag fits on page 1
    total: int = 0  # messages the segments cover once complete
    label_total: int = 0  # while the order is unknown: the total the positions were read at
    complete: bool = False
    statuses: list[str] = field(default_factory=list)
    segments: list[Segment] = field(default_factory=list)  # by lo, disjoint
    cursor: int = 0  # the audit's position (send index)
    whole_until: float = 0.0  # wall time until which the tag is read whole
    # The API's clock, estimated at our time api_seen: the newest date the tag showed, or the
    # previous estimate plus the time since, whichever is later. "Now" for the report deadline
    # is min(our clock, that): the API's dates rule where they lag (a simulator in the past).
    api_newest: int = 0
    api_seen: float = 0.0
    dirty: bool = True  # changed since the state file was written

    def code(self, status: str) -> int:
        try:
            return self.statuses.index(status)
        except ValueError:
            if len(self.statuses) >= MAX_STATUSES:
                raise Inconsistent("too many statuses", listing=False) from None
            self.statuses.append(status)
            return len(self.statuses) - 1

    def covered(self) -> int:
        """How many messages from idx 0 the segments cover without a gap."""
        end = 0
        for seg in self.segments:
            if seg.lo != end:
                break
            end = seg.hi
        return end


@dataclass(frozen=True, slots=True)
class Progress:
    """A tag whose first complete read is still going on: nothing is exported for it yet."""

    tag: str
    read: int  # messages read so far
    known: int  # messages the tag holds
    total_reported: int | None = None


@dataclass(frozen=True, slots=True)
class RoundInfo:
    """How one tag was collected this round, and the tag's cumulative incremental counters
    (what the ``sms_collection_*`` metrics show)."""

    mode: str  # incremental, first_read, whole
    order: str
    fetched: int = 0  # pages asked this round
    reused: int = 0  # segments kept without reading
    read: int = 0  # first read: messages read so far
    known: int = 0  # first read: messages the tag holds
    fetched_total: int = 0
    reused_total: int = 0
    mismatches: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    fallbacks: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))


# -- the checks ----------------------------------------------------------------------------


def check_same(
    kept: Segment, statuses: list[str], new: Detail, offset: int = 0, slack: int = REPORT_SLACK
) -> str | None:
    """Whether ``new`` can be what ``kept`` (from message ``offset`` on) became; else the
    reason it cannot."""
    codes, stops, dates = kept.codes, kept.stops, kept.dates
    floor = kept.ref - slack
    for j in range(len(new)):
        old_status = statuses[codes[offset + j]]
        old_date, new_date = dates[offset + j], new.dates[j]
        new_status = new.statuses[j]
        old_stop, new_stop = stops[offset + j], new.stops[j]
        if old_stop == 1 and new_stop == 0:
            return "stop_vanished"
        if old_status != WAITING:
            if new_status != old_status:
                return "status_changed"
            if new_date != old_date:
                return "date_changed"
        elif new_status == WAITING:
            if old_date and new_date and new_date != old_date:
                return "waiting_date_changed"
        elif new_date and old_date and new_date < old_date:
            return "report_before_sending"
        elif new_date and new_date < floor:
            return "report_before_last_read"
    return None


def _young(seg_codes: bytes, dates: array, waiting: int | None, ref: int, deadline: float) -> bool:
    if waiting is None:
        return False
    limit = ref - deadline
    return any(c == waiting and d >= limit for c, d in zip(seg_codes, dates, strict=True) if d)


# -- the reader ----------------------------------------------------------------------------


class IncrementalState:
    """The states of every tag (shared by the exporters a reload creates), and the state file."""

    def __init__(self, store: Any = None) -> None:
        self.tags: dict[str, TagState] = {}
        self.store = store
        self._lock = threading.Lock()
        self._busy: set[str] = set()
        self.mismatches: Counter[tuple[str, str]] = Counter()  # (tag, reason)
        self.fallbacks: Counter[tuple[str, str]] = Counter()
        self.fetched: Counter[str] = Counter()
        self.reused: Counter[str] = Counter()
        if store is not None:
            self.tags.update(store.load())

    def checkout(self, tag: str) -> TagState | None:
        """The tag's state for one job (a new one if none); None if another job holds it."""
        with self._lock:
            if tag in self._busy:
                return None
            self._busy.add(tag)
            return self.tags.setdefault(tag, TagState())

    def checkin(self, tag: str, state: TagState | None) -> None:
        with self._lock:
            self._busy.discard(tag)
            if state is None:
                self.tags.pop(tag, None)
            else:
                self.tags[tag] = state

    def forget(self, tag: str) -> None:
        with self._lock:
            self.tags.pop(tag, None)
            for counter in (self.mismatches, self.fallbacks):
                for key in [k for k in counter if k[0] == tag]:
                    del counter[key]
            self.fetched.pop(tag, None)
            self.reused.pop(tag, None)

    def with_totals(self, tag: str, info: RoundInfo) -> RoundInfo:
        """``info`` with the tag's cumulative counters, this round's counted in."""
        with self._lock:
            self.fetched[tag] += info.fetched
            self.reused[tag] += info.reused
            return replace(
                info,
                fetched_total=self.fetched[tag],
                reused_total=self.reused[tag],
                mismatches=MappingProxyType(
                    {r: n for (t, r), n in self.mismatches.items() if t == tag}
                ),
                fallbacks=MappingProxyType(
                    {r: n for (t, r), n in self.fallbacks.items() if t == tag}
                ),
            )

    def save(self, keep: Iterable[str]) -> None:
        """Drop the tags not in ``keep`` (gone from the configuration, or a rolling tag out of
        its window) and write the round's state (one transaction)."""
        keep = set(keep)
        for tag in [t for t in self.tags if t not in keep]:
            self.forget(tag)
        if self.store is None:
            return
        with self._lock:
            tags = {t: s for t, s in self.tags.items() if t not in self._busy}
        self.store.save(tags, set(keep))


class _Job:
    """One tag's collection in one round."""

    def __init__(self, reader: IncrementalReader, tag: str, state: TagState | None) -> None:
        self.reader = reader
        self.tag = tag
        self.state = state
        self.now = reader.clock()
        self.reads: list[tuple[int, int, Detail, int]] = []  # (lo, hi, detail by idx, total)
        self.want: list[tuple[int, int]] = []  # the send-index ranges this round needs
        self.requested: set[int] = set()
        self.fingerprints: dict[int, int] = {}  # content fingerprint -> page number
        self.latest_total: int | None = None
        self.error: UpstreamError | None = None
        self.whole: TagPager | None = None
        self.fetched = 0
        self.passes = 0
        self.detecting = False
        self.failed: Inconsistent | None = None
        self.outstanding = 0
        self.generation = 0  # answers asked before a switch to a whole read are ignored
        self.settled = False
        self.reused = 0
        self.checked_out = state is not None
        # A first read from page 1 is also a whole read: a TagPager follows it, so that a
        # listing it cannot take (ignored page, short page, page cap) ends as a whole read
        # would, with the same requests and the same truncation.
        self.shadow: TagPager | None = None
        self.shadow_pages: list[int] = []
        self.started: float | None = None
        self.ended: float | None = None
        mode = "whole"
        if state is not None and state.order != "whole":
            mode = "steady" if state.complete else "first"
        elif state is not None and state.whole_until <= self.now:
            state.order = "unknown"
            mode = "first"
        self.mode = mode

    # -- the requests

    def start(self) -> list[int]:
        st = self.state
        if self.mode == "whole":
            return self._go_whole()
        if st is None:
            return self._go_whole()
        if self.mode == "first" and not st.segments:
            self.shadow = TagPager(self.tag, self.reader.client.api.max_pages)
        if self.mode == "steady" and st.order == "oldest" and st.size:
            return self._ask([max(1, math.ceil(st.total / st.size))])
        return self._ask([1])

    def _ask(self, numbers: Iterable[int]) -> list[int]:
        out = [n for n in sorted(set(numbers)) if n not in self.requested]
        self.requested.update(out)
        return out

    def _go_whole(self) -> list[int]:
        self.mode = "whole"
        self.generation += 1
        self.reads.clear()
        self.whole = TagPager(self.tag, self.reader.client.api.max_pages)
        self.requested.clear()
        self.requested.add(1)
        return [1]

    def fail(self, err: Inconsistent) -> list[int]:
        """A check failed: drop the state, count it, and read the tag whole now."""
        self.failed = err
        st = self.state
        shadow = self.shadow
        self.shadow = None
        self.reader.shared.fallbacks[(self.tag, err.reason)] += 1
        log.warning(
            "incremental reading of the tag is inconsistent: reading it whole",
            extra={"tag": self.tag, "reason": err.reason},
        )
        if st is not None:
            fresh = TagState()
            if err.listing:
                fresh.order = "whole"
                fresh.whole_until = self.now + WHOLE_READS_FOR
            self.state = fresh
        if shadow is not None and err.reason in ("page_ignored", "short_page", "page_cap"):
            self.mode = "whole"
            self.whole = shadow
            self.reads.clear()
            return self._ask(self.shadow_pages)
        return self._go_whole()

    def on_page(self, number: int, read: Read | Page) -> list[int]:
        if self.whole is not None:
            page = read.page if isinstance(read, Read) else read
            if number == 1:
                return self._ask_whole(self.whole.first_page(page))
            self.whole.other_page(number, page)
            return []
        try:
            return self._on_page(number, read)
        except Inconsistent as err:
            return self.fail(err)

    def _ask_whole(self, numbers: list[int]) -> list[int]:
        self.requested.update(numbers)
        return numbers

    def _on_page(self, number: int, read: Read | Page) -> list[int]:
        assert isinstance(read, Read)
        page, detail = read
        st = self.state
        assert st is not None
        if self.shadow is not None:
            if number == 1:
                self.shadow_pages = self.shadow.first_page(page)
            else:
                self.shadow.other_page(number, page)
        if detail is None:
            raise Inconsistent("detail_unreadable", listing=False)
        if page.current_page not in (None, number):
            raise Inconsistent("page_ignored")
        if page.items and self.fingerprints.setdefault(page.fingerprint, number) != number:
            raise Inconsistent("page_ignored")  # another page's content: `page` ignored
        total = page.total if page.total is not None else page.items
        # Answers to concurrent requests come back in any order: a total below another
        # answer's says nothing, one below what earlier rounds saw says messages went away.
        if total < (st.label_total if st.order == "unknown" else st.total):
            raise Inconsistent("shrink", listing=False)
        self.latest_total = total if self.latest_total is None else max(self.latest_total, total)
        first = not self.reads and not self.detecting
        if first and number == 1 and total > page.items:
            if st.size and page.items != st.size:
                raise Inconsistent("page_size", listing=False)
            st.size = page.items
        if first and st.size and math.ceil(total / st.size) > self.reader.client.api.max_pages:
            # Beyond api.max_pages the tag is cut, as a whole read cuts it (and says so).
            raise Inconsistent("page_cap", listing=False)
        self._check_size(number, page.items, total, first)
        if not first and st.order == "unknown" and not self.detecting and total != st.label_total:
            # The tag grew while the round ran and its order is not known yet: where this page
            # sits is not known either. Dropped; the next round detects the order.
            return []
        lo, hi = self._range(number, total, page.items)
        by_idx = detail.reversed() if self._order() == "newest" else detail
        self.reads.append((lo, hi, by_idx, total))
        if first:
            return self._plan(total)
        return []

    def idle(self) -> list[int]:
        """Every answer asked is in: detect the order, fill holes, or fold the reads in."""
        if self.whole is not None or self.error is not None or self.settled:
            return []
        try:
            if self.detecting:
                return self._detect()
            more = self.gaps() or self._refresh()
            if more:
                return more
            self.reused = self._merge()
            self.settled = True
            self.reads = []  # folded in: let the pages go
            return []
        except Inconsistent as err:
            return self.fail(err)

    def _order(self) -> str:
        st = self.state
        assert st is not None
        return st.order if st.order in ("oldest", "newest") else "oldest"

    def _check_size(self, number: int, items: int, total: int, first: bool = False) -> None:
        st = self.state
        assert st is not None
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

    def _range(self, number: int, total: int, items: int) -> tuple[int, int]:
        size = self.state.size if self.state is not None and self.state.size else max(items, 1)
        start = (number - 1) * size
        if self._order() == "newest":
            return total - start - items, total - start
        return start, start + items

    def _pages_for(self, lo: int, hi: int, total: int) -> range:
        st = self.state
        assert st is not None
        if hi <= lo:
            return range(0)
        size = st.size
        if not size:
            return range(1, 2)
        if self._order() == "newest":
            lo, hi = total - hi, total - lo
        return range(lo // size + 1, (hi - 1) // size + 2)

    def _plan(self, total: int) -> list[int]:
        """After the first answer: the pages this round needs."""
        st = self.state
        assert st is not None
        if st.order == "unknown" and st.segments and total != st.label_total:
            return self._start_detection(total)
        if st.order == "unknown":
            st.label_total = total
        return self._ask(self._needed_pages(total))

    def _needed_pages(self, total: int) -> list[int]:
        st = self.state
        assert st is not None
        want: list[tuple[int, int]] = []
        if not st.complete:
            end = 0
            for seg in st.segments:
                if seg.lo > end:
                    want.append((end, seg.lo))
                end = max(end, seg.hi)
            want.append((end, total))
        else:
            want.append((st.total, total))
            deadline = self.reader.deadline
            waiting = st.statuses.index(WAITING) if WAITING in st.statuses else None
            frozen = []
            for index, seg in enumerate(st.segments):
                anchor = seg.hi == st.total
                unknown_young = (
                    seg.unknown_seen is not None and seg.unknown_seen >= self.now - deadline
                )
                if seg.live or anchor or unknown_young:
                    want.append((seg.lo, seg.hi))
                else:
                    frozen.append(index)
            want.extend(self._audit(frozen))
            del waiting
        self.want = [(lo, hi) for lo, hi in want if lo < hi]
        pages: set[int] = set()
        for lo, hi in want:
            pages.update(self._pages_for(lo, min(hi, total), total))
        return sorted(pages)

    def _audit(self, frozen: list[int]) -> list[tuple[int, int]]:
        st = self.state
        assert st is not None
        if not frozen:
            return []
        count = min(len(frozen), max(AUDIT_MIN, math.ceil(len(frozen) / AUDIT_CYCLE)))
        los = [st.segments[i].lo for i in frozen]
        start = bisect.bisect_left(los, st.cursor) % len(frozen)
        chosen = [st.segments[frozen[(start + k) % len(frozen)]] for k in range(count)]
        st.cursor = chosen[-1].hi
        return [(seg.lo, seg.hi) for seg in chosen]

    # -- order detection

    def _start_detection(self, total: int) -> list[int]:
        st = self.state
        assert st is not None
        self.detecting = True
        first = st.segments[0]
        growth = total - st.label_total
        size = st.size or max(1, first.hi)
        # Oldest-first the kept positions [0, n) are page 1 still; newest-first they moved to
        # [growth, growth + n).
        pages = set(range(1, 2))
        pages.update(range(growth // size + 1, (growth + first.hi - 1) // size + 2))
        return self._ask(pages)

    def _detect(self) -> list[int]:
        """Every detection page is in: which order explains them? Each answer is placed with
        its own total (the tag may grow between two requests)."""
        st = self.state
        assert st is not None
        self.detecting = False
        first = st.segments[0]
        n = first.hi - first.lo
        label = st.label_total
        by_position: dict[int, tuple[str, int, int]] = {}  # oldest first: idx = position
        by_newest: dict[int, tuple[str, int, int]] = {}  # newest first: idx = total-1-position
        for lo, hi, detail, read_total in self.reads:  # by position while the order is unknown
            for j in range(hi - lo):
                row = (detail.statuses[j], detail.stops[j], detail.dates[j])
                by_position[lo + j] = row
                by_newest[read_total - 1 - (lo + j)] = row
        total = max(read[3] for read in self.reads)

        def view(rows: dict[int, tuple[str, int, int]], keys: list[int]) -> Detail | None:
            if any(k not in rows for k in keys):
                return None
            picked = [rows[k] for k in keys]
            dates = array(DATES, (r[2] for r in picked))
            return Detail(tuple(r[0] for r in picked), bytes(r[1] for r in picked), dates)

        # The kept first segment: positions [0, n) at the total `label`.
        newest_keys = [label - 1 - p for p in range(n)]
        oldest, newest = view(by_position, list(range(n))), view(by_newest, newest_keys)
        if newest is None and self.passes < MAX_FILL_PASSES:
            # The tag grew between requests: ask for where those messages are now.
            self.passes += 1
            self.detecting = True
            size = st.size or max(1, n)
            wanted = {total - 1 - k for k in newest_keys}  # their positions now
            return self._ask_again({p // size + 1 for p in wanted})
        fits_oldest = oldest is not None and check_same(first, st.statuses, oldest) is None
        fits_newest = newest is not None and check_same(first, st.statuses, newest) is None
        log.info(
            "listing order test",
            extra={"tag": self.tag, "oldest": fits_oldest, "newest": fits_newest},
        )
        if fits_oldest and fits_newest:
            # Both read alike (e.g. nothing but Waiting messages): start again at this total.
            self.state = TagState(size=st.size)
            self.reads = []
            return self._restart(total)
        if not (fits_oldest or fits_newest):
            raise Inconsistent("order_undetected")
        if fits_newest:
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
            # The detection reads were by position: to send indices, each with its total.
            self.reads = [
                (t - hi, t - lo, detail.reversed(), t) for lo, hi, detail, t in self.reads
            ]
        else:
            st.order = "oldest"
        st.total = label if st.complete else st.covered()
        st.dirty = True
        log.info("listing order detected", extra={"tag": self.tag, "order": st.order})
        return self._ask(self._needed_pages(total))

    def _ask_again(self, numbers: Iterable[int]) -> list[int]:
        """Pages asked anew even if asked before this round (they moved since)."""
        out = sorted(set(numbers))
        self.requested.update(out)
        return out

    def _restart(self, total: int) -> list[int]:
        self.requested.clear()
        self.fingerprints.clear()
        self.latest_total = None
        return self._ask([1])

    # -- the end of the round

    def gaps(self) -> list[int]:
        """Once every answer is in: pages still needed (messages that moved while it ran)."""
        if self.whole is not None or self.error is not None or self.failed is not None:
            return []
        if self.detecting:
            return []
        st = self.state
        if st is None or not self.reads or self.passes >= MAX_FILL_PASSES:
            return []
        total = max(r[3] for r in self.reads)
        missing = self._uncovered(total)
        if not missing:
            return []
        self.passes += 1
        pages: set[int] = set()
        for lo, hi in missing:
            pages.update(self._pages_for(lo, hi, total))
        self.requested.difference_update(pages)
        return self._ask(pages)

    def _refresh(self) -> list[int]:
        """A first read about to end: read again the pages an earlier round of it read that
        may have had reports since, so that its first counts are as fresh as any round's."""
        st = self.state
        assert st is not None
        if st.complete or not self.reads or self.passes >= MAX_FILL_PASSES:
            return []
        total = max(r[3] for r in self.reads)
        spans = sorted((lo, hi) for lo, hi, _, _ in self.reads)
        end = 0
        for seg in st.segments:  # would the reads fill every hole?
            if seg.lo > end and not _within(end, seg.lo, spans):
                return []
            end = max(end, seg.hi)
        if end < total and not _within(end, total, spans):
            return []
        stale = [
            (seg.lo, seg.hi)
            for seg in st.segments
            if seg.live and seg.read_at < self.now and not _within(seg.lo, seg.hi, spans)
        ]
        if not stale:
            return []
        self.passes += 1
        pages: set[int] = set()
        for lo, hi in stale:
            pages.update(self._pages_for(lo, hi, total))
        self.want.extend(stale)
        return self._ask_again(pages)

    def _uncovered(self, total: int) -> list[tuple[int, int]]:
        """Send-index ranges this round wanted that no read covers: newest-first, pages read
        at different totals (the tag grew while the round ran) may leave holes."""
        st = self.state
        assert st is not None
        if not st.complete or self._order() == "oldest":
            return []
        spans = sorted((lo, hi) for lo, hi, _, _ in self.reads)
        out = []
        for lo, hi in self.want:
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

    def finish(self) -> tuple[TagCounts | UpstreamError | Progress, RoundInfo]:
        if self.whole is not None:
            order = "whole" if self.failed is not None or self.state is None else self.state.order
            info = RoundInfo("whole", order, self.fetched)
            if self.error is not None:
                return self.error, info
            return self.whole.result(), info
        st = self.state
        assert st is not None
        if not self.settled:
            if st.complete or self.detecting or not self.reads:
                # A steady round cut short: nothing of it is used (never a half-updated tag).
                error = self.error or DeadlineExceeded("the round ran out of time")
                return error, RoundInfo("incremental", st.order, self.fetched)
            try:  # a first read keeps what it got
                self.reused = self._merge()
            except Inconsistent as err:
                self.fail(err)
                return DeadlineExceeded("inconsistent pages: the tag is read again"), RoundInfo(
                    "whole", "whole", self.fetched
                )
        if self.error is not None and st.complete:
            return self.error, RoundInfo("incremental", st.order, self.fetched)
        if st.complete and st.covered() != (st.segments[-1].hi if st.segments else 0):
            # A hole (pages that moved while the round ran and could not be caught up): the
            # counts would miss messages. None this round; the next one fills it.
            error = DeadlineExceeded("pages moved while the round ran")
            return error, RoundInfo("incremental", st.order, self.fetched)
        covered = st.covered()
        known = max([st.total, self.latest_total or 0, covered])
        if not st.complete:
            if covered >= known and self.latest_total is not None and self.error is None:
                st.complete = True
                st.total = covered
                if st.order == "unknown":
                    st.label_total = covered
            # Pages read in an earlier round of a first read may have had reports since: the
            # counts wait for the next round, which reads them again, as every round does.
            stale = sum(s.hi - s.lo for s in st.segments if s.live and s.read_at < self.now)
            if not st.complete or stale:
                read = sum(seg.hi - seg.lo for seg in st.segments) - stale
                info = RoundInfo("first_read", st.order, self.fetched, 0, read, known)
                if self.error is not None and not isinstance(self.error, DeadlineExceeded):
                    return self.error, info
                # Out of time is how a first read too large for one round ends its rounds: not
                # a failure (the issue is that it used to fail for ever), it goes on next round.
                return Progress(self.tag, read, known, self.latest_total), info
        info = RoundInfo("incremental", st.order, self.fetched, self.reused)
        return self._counts(st), info

    def _merge(self) -> int:
        """Fold this round's reads into the segments; check what they overlap. Returns the
        number of segments kept unread."""
        st = self.state
        assert st is not None
        if not self.reads:
            return len(st.segments)
        now = self.now
        pieces = _paint(self.reads)
        kept: list[Segment] = []
        reused = 0
        mismatch_tag = self.tag
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
                    self.reader.shared.mismatches[(mismatch_tag, reason)] += 1
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
                fresh.append(self._segment(a, b, detail.slice(a - lo, b - lo), now, ref))
        self._inherit_unknown(fresh, [s for s in st.segments if s.unknown_seen is not None])
        st.segments = _coalesce(sorted(kept + fresh, key=lambda s: s.lo), st.size)
        if st.complete:
            st.total = st.covered()
        st.dirty = True
        return reused

    def _inherit_unknown(self, fresh: list[Segment], before: list[Segment]) -> None:
        """A Waiting message of unknown date is aged from when it was first seen: a segment
        read again keeps that time for the messages that were already there, unknown."""
        st = self.state
        assert st is not None
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
                    seen.append(self.now)
                else:
                    seen.append(old.unknown_seen if old.unknown_seen is not None else self.now)
            seg.unknown_seen = max(seen) if seen else None

    def _segment(self, lo: int, hi: int, detail: Detail, now: float, ref: int) -> Segment:
        st = self.state
        assert st is not None
        codes = bytes(st.code(s) for s in detail.statuses)
        waiting = st.statuses.index(WAITING) if WAITING in st.statuses else None
        unknown = waiting is not None and any(
            c == waiting and not d for c, d in zip(codes, detail.dates, strict=True)
        )
        live = _young(codes, detail.dates, waiting, ref, self.reader.deadline)
        return Segment(
            lo, hi, codes, detail.stops, detail.dates, now, ref, now if unknown else None, live
        )

    def _counts(self, st: TagState) -> TagCounts:
        by_code: Counter[int] = Counter()
        stop = 0
        newest = 0
        waiting_dates: list[int] = []
        unknown = 0
        bad_dates = 0
        bad_stops = 0
        waiting = st.statuses.index(WAITING) if WAITING in st.statuses else None
        for seg in st.segments:
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
            tag=self.tag,
            statuses=MappingProxyType(statuses),
            stop=stop,
            messages=sum(statuses.values()),
            pages=self.fetched,
            complete=True,
            truncation=None,
            total_reported=self.latest_total if self.latest_total is not None else st.total,
            oldest_waiting=waiting_dates[0] if waiting_dates else None,
            newest=newest or None,
            waiting_dates=array("q", waiting_dates),
            waiting_unknown=unknown,
            unreadable=MappingProxyType(unreadable),
        )


def _within(lo: int, hi: int, spans: list[tuple[int, int]]) -> bool:
    """Whether the sorted ``spans`` cover ``[lo, hi)`` whole."""
    for a, b in spans:
        if a > lo:
            return False
        if b > lo:
            lo = b
        if lo >= hi:
            return True
    return lo >= hi


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


class IncrementalReader:
    """Collects tags the incremental way; a drop-in for :meth:`SmsPartnerClient.fetch_tags`
    that returns, besides each tag's result, a :class:`RoundInfo`."""

    def __init__(
        self,
        client: SmsPartnerClient,
        shared: IncrementalState,
        report_deadline: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.shared = shared
        self.deadline = report_deadline
        self.clock = clock  # Unix time (tests follow a simulator's clock)

    def fetch_tags(
        self,
        tags: Iterable[str],
        deadline: float | None = None,
        durations: dict[str, float] | None = None,
    ) -> tuple[dict[str, TagCounts | UpstreamError | Progress], dict[str, RoundInfo]]:
        jobs: dict[str, _Job] = {}
        for tag in dict.fromkeys(tags):
            state = self.shared.checkout(tag)
            jobs[tag] = _Job(self, tag, state)
        pending: dict[Future, tuple[str, int, int]] = {}
        finished: queue.SimpleQueue[Future] = queue.SimpleQueue()
        executor = self.client._executor

        def fetch(tag: str, number: int) -> Read:
            job = jobs[tag]
            if job.started is None:
                job.started = time.monotonic()
            # fetch_page returns what `parse` makes of the body: here a Read.
            return cast(Read, self.client.fetch_page(tag, number, deadline, parse=parse_detailed))

        def submit(tag: str, numbers: list[int]) -> None:
            job = jobs[tag]
            for number in numbers:
                try:
                    future = executor.submit(fetch, tag, number)
                except RuntimeError:  # the client is closed
                    job.error = ConnectionFailed("the client is closed")
                    return
                pending[future] = (tag, number, job.generation)
                job.outstanding += 1
                future.add_done_callback(finished.put)

        for tag, job in jobs.items():
            submit(tag, job.start())
        while pending:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                future = finished.get(timeout=remaining)
            except queue.Empty:
                break
            tag, number, generation = pending.pop(future)
            job = jobs[tag]
            job.outstanding -= 1
            if job.error is not None or generation != job.generation:
                continue
            job.ended = time.monotonic()
            job.fetched += 1
            try:
                result = future.result()
            except UpstreamError as err:
                job.error = err
                _cancel(pending, tag)
                continue
            except CancelledError:
                job.error = ConnectionFailed("the client is closed")
                continue
            except Exception as err:  # a bug must not take the other tags down
                log.exception("unexpected error while reading a page", extra={"tag": tag})
                job.error = InvalidResponse(f"unexpected error ({type(err).__name__})")
                _cancel(pending, tag)
                continue
            before = job.generation
            try:
                more = job.on_page(number, result)
                if not more and job.outstanding == 0:
                    more = job.idle()
            except Exception as err:  # never a wrong count: read the tag whole instead
                log.exception("unexpected error in incremental reading", extra={"tag": tag})
                more = job.fail(Inconsistent(f"bug_{type(err).__name__}", listing=False))
            if job.generation != before:
                _cancel(pending, tag)
            submit(tag, more)
        cut_at = time.monotonic()
        for future, (tag, _, generation) in pending.items():
            future.cancel()
            job = jobs[tag]
            if job.error is None and generation == job.generation:
                job.error = DeadlineExceeded("the round ran out of time")
                job.ended = cut_at
        results: dict[str, TagCounts | UpstreamError | Progress] = {}
        infos: dict[str, RoundInfo] = {}
        for tag, job in jobs.items():
            try:
                results[tag], infos[tag] = job.finish()
            except Exception as err:  # never a wrong count: drop the state instead
                log.exception("unexpected error folding the tag", extra={"tag": tag})
                results[tag] = InvalidResponse(f"unexpected error ({type(err).__name__})")
                infos[tag] = RoundInfo("whole", "whole", job.fetched)
                job.state = None
            if job.checked_out:
                self.shared.checkin(tag, job.state)
            infos[tag] = self.shared.with_totals(tag, infos[tag])
            if durations is not None and job.started is not None and job.ended is not None:
                durations[tag] = max(0.0, job.ended - job.started)
        return results, infos


def _cancel(pending: Mapping[Future, tuple[str, int, int]], tag: str) -> None:
    """Cancel the tag's requests that have not started: their answers are moot."""
    for future, (owner, _, _) in pending.items():
        if owner == tag:
            future.cancel()


# -- metrics ---------------------------------------------------------------------------------


def incremental_families(states: Iterable[Any]) -> list[Any]:
    """The ``sms_collection_*`` families of the tags collected incrementally (``states``: the
    snapshot's :class:`~smsp_exporter.snapshot.TagState`)."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    fetched = CounterMetricFamily(
        "sms_collection_pages_fetched",
        "Pages of the tag asked from the API by incremental rounds (whole reads included)",
        labels=["tag"],
    )
    reused = CounterMetricFamily(
        "sms_collection_pages_reused",
        "Pages (segments) of the tag kept from an earlier round instead of being read again",
        labels=["tag"],
    )
    mismatches = CounterMetricFamily(
        "sms_collection_audit_mismatches",
        "Pages read again that contradicted what was kept, by reason (the tag then fell back "
        "to a whole read)",
        labels=["tag", "reason"],
    )
    fallbacks = CounterMetricFamily(
        "sms_collection_fallbacks",
        "Times the tag's page state was dropped and the tag read whole, by reason",
        labels=["tag", "reason"],
    )
    order = GaugeMetricFamily(
        "sms_collection_listing_order",
        "Listing order detected for the tag (unknown, oldest, newest; whole: read whole "
        "because the listing moves messages); always 1",
        labels=["tag", "order"],
    )
    progress = GaugeMetricFamily(
        "sms_collection_first_read_ratio",
        "Share of the tag's messages read by its first complete read (1 once done; no counts "
        "are exported for the tag before)",
        labels=["tag"],
    )
    for state in states:
        info = getattr(state, "incremental", None)
        if info is None:
            continue
        tag = state.tag
        fetched.add_metric([tag], float(info.fetched_total))
        reused.add_metric([tag], float(info.reused_total))
        for reason, value in sorted(info.mismatches.items()):
            mismatches.add_metric([tag, reason], float(value))
        for reason, value in sorted(info.fallbacks.items()):
            fallbacks.add_metric([tag, reason], float(value))
        order.add_metric([tag, info.order], 1.0)
        ratio = 1.0 if info.mode != "first_read" else info.read / max(info.known, 1)
        progress.add_metric([tag], min(1.0, ratio))
    return [fetched, reused, mismatches, fallbacks, order, progress]
