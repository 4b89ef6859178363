"""What incremental collection keeps of a tag, how a page is read message by message, and the
check a message read again must pass (the model is described in ``state.py``)."""

from __future__ import annotations

import json
from array import array
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, NamedTuple

import msgspec

from ..parse import LIST_KEY, Page, parse_page, read_date, read_stop

WAITING = "Waiting"
# A report seen on a message that was Waiting must be dated no earlier than that read less this
# (seconds): the API's clock and ours, and the time a report takes to show, may differ.
REPORT_SLACK = 3600
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
    # Our wall times: of the last read of its total, of the last change seen (growth; at the
    # end of the first read, the tag's newest date), of its last audit read. The scheduler's
    # schedules run on them (see scheduler.py).
    checked_at: float = 0.0
    changed_at: float = 0.0
    audited_at: float = 0.0
    grew: int = 0  # pages of new messages its last round read (not kept in the state file)
    # A first read whose pages cover the tag, not counted yet: the changeable pages read
    # before this (wall) time are read again first (not kept in the state file either).
    refresh_before: float = 0.0
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
