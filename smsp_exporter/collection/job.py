"""One tag's collection in one round (the model is described in ``state.py``): which pages it
wants, why (each want has a purpose: see ``scheduler.py``), and what it makes of the answers.
Where pages sit and which messages a round needs are in ``pages``, the order's detection in
``order``, the folding and counting in ``fold``.

A round may hand out only part of what a job wants (the budget ran out): the job then keeps
what it read when that is safe (a first read's pages; a steady round's pages, each placed by
the total its answer gave) and is *deferred* otherwise (a whole read, an order's detection):
its state is left as it was, and the tag keeps the counts it had.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ..client import TagCounts
from ..errors import DeadlineExceeded, UpstreamError
from ..parse import Page
from . import fold as fold
from . import order as order
from . import pages as pages
from .model import Detail, Inconsistent, Progress, Read, RoundInfo, TagState
from .scheduler import Purpose, Want
from .state import IncrementalState
from .whole import TagPager

# The name the incremental reader has always logged under (operators filter on it).
log = logging.getLogger("smsp_exporter.incremental")

# After an inconsistency in how the API lists a tag, whole reads for this long (s) before the
# incremental way is tried again.
WHOLE_READS_FOR = 3600.0
# Extra request passes a round may make for messages that moved while it ran (newest-first).
MAX_FILL_PASSES = 3


@dataclass(frozen=True, slots=True)
class RoundPlan:
    """What every job of a round shares."""

    now: float  # wall time of the round's start (the reader's clock)
    api_clock: Callable[[], float | None]  # the API's clock now, from its Date (None: unknown)
    report_deadline: float
    every_round: bool  # no budget: every page that may have changed, every round
    budget: int | None  # requests the round may send (None: no limit)
    cold_check_interval: float
    max_pages: int


@dataclass(frozen=True, slots=True)
class Deferred:
    """A tag whose reads this round were left for a later one: it keeps its counts."""

    tag: str


Result = TagCounts | UpstreamError | Progress | Deferred


def _mode(state: TagState | None, now: float) -> str:
    """How a round reads the tag: whole (no state; or the listing moved messages, for a
    while), first (until read completely once, over as many rounds as it takes) or steady."""
    if state is not None and state.order != "whole":
        return "steady" if state.complete else "first"
    if state is not None and state.whole_until <= now:
        state.order = "unknown"  # the whole reads' time is up: the incremental way again
        return "first"
    return "whole"


class _Asked:
    """The pages a round asked: each once, unless it moved since."""

    def __init__(self) -> None:
        self.pages: set[int] = set()

    def new(self, numbers: Iterable[int]) -> list[int]:
        """Of ``numbers``, the pages not asked yet this round, asked now."""
        out = [n for n in sorted(set(numbers)) if n not in self.pages]
        self.pages.update(out)
        return out

    def again(self, numbers: Iterable[int]) -> list[int]:
        """Pages asked anew even if asked before this round (they moved since)."""
        out = sorted(set(numbers))
        self.pages.update(out)
        return out


class Job:
    """One tag's collection in one round. ``rank``: the tag's place in the round's stable
    order (first reads go one tag after another in it); ``last_read``: when the tag was last
    read whole-heartedly (the stalest goes first)."""

    def __init__(
        self,
        plan: RoundPlan,
        shared: IncrementalState | None,
        tag: str,
        state: TagState | None,
        rank: int = 0,
        last_read: float = 0.0,
    ) -> None:
        self.plan = plan
        self.shared = shared
        self.tag = tag
        self.state = state
        self.now = plan.now
        self.rank = rank
        self.last_read = last_read
        self.reads: list[tuple[int, int, Detail, int]] = []  # (lo, hi, detail by idx, total)
        self.want: list[tuple[int, int]] = []  # the send-index ranges this round needs
        self.asked = _Asked()
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
        self.mode = _mode(state, self.now)
        self.why: dict[int, tuple[Purpose, float]] = {}  # page -> (purpose, key) of its want
        self.audits: list[tuple[int, int]] = []  # the audit's segments this round, in turn
        self.answered: set[int] = set()  # pages whose answer was folded in
        self.whole_pages = 1  # a whole read: the pages it takes (from the last one)

    # -- the wants

    def _wants(self, numbers: Iterable[int], purpose: Purpose | None = None) -> list[Want]:
        """Wants for ``numbers``: each with the purpose noted for it (or ``purpose``)."""
        out = []
        default = Purpose.NEW if self.mode == "steady" else Purpose.FIRST_READ
        for number in numbers:
            why, key = self.why.get(number, (default, 0.0))
            if purpose is not None:
                why = purpose
            out.append(Want(why, self._key(why, key, number), self.tag, number))
        self.outstanding += len(out)
        return out

    def _key(self, purpose: Purpose, key: float, number: int) -> tuple[float, ...]:
        if purpose == Purpose.FIRST_READ:
            return (self.rank, key, number)  # one tag after another, its pages in send order
        if purpose == Purpose.NEW:
            return (self.last_read, self.rank, key, number)  # the stalest tag first, oldest up
        if purpose == Purpose.WHOLE:
            return (self.last_read, self.rank, number)  # the stalest tag first
        if purpose == Purpose.AUDIT and self.state is not None:
            return (self.state.audited_at, self.rank, number)  # the tag audited longest ago
        return (key, self.rank, number)  # waiting: the page due the earliest first

    def start(self) -> list[Want]:
        st = self.state
        if self.mode == "whole" or st is None:
            return self._whole_wants(self._go_whole())
        if self.mode == "first":
            if not st.segments:
                self.shadow = TagPager(self.tag, self.plan.max_pages)
                return self._wants(self.asked.new([1]), Purpose.FIRST_READ)
            # Going on: from its first page not read yet (that answer tells the total too).
            return self._wants(self.asked.new([self._first_hole()]), Purpose.FIRST_READ)
        purpose = self._total_due(st)
        if purpose is None:
            self.settled = True  # nothing due: the counts stand as kept
            return []
        # The page whose answer tells the total and holds the newest messages kept (the
        # anchor): the last one oldest-first, and while the order is unknown (pages are then
        # kept by position: a growth shows in its total, and the order is detected); page 1
        # newest-first.
        page = 1
        if st.order in ("oldest", "unknown") and st.size:
            page = max(1, math.ceil(st.total / st.size))
        then = 0
        if not self.plan.every_round:
            api_now = self.plan.api_clock()
            then = st.grew + pages.waiting_count(st, self.now, self.plan.report_deadline, api_now)
        self.asked.new([page])
        self.outstanding += 1
        key = st.checked_at if purpose == Purpose.COLD_CHECK else self.last_read
        return [Want(purpose, (key, self.rank, page), self.tag, page, then)]

    def _first_hole(self) -> int:
        st = self.state
        assert st is not None
        end = st.covered()  # the first message not read
        known = max(st.label_total, st.total, end)
        found = sorted(pages.pages_for(st, end, end + 1, max(known, end + 1)))
        return found[0] if found else 1

    def _total_due(self, st: TagState) -> Purpose | None:
        """Whether a steady round reads the tag's total, and why (None: not this round).

        A tag that may have changed is read every round: it holds Waiting messages that may
        still get a report, or it had new messages within ``cold_check_interval``. A quiet
        (cold) one is read again once a quarter of the time it has been quiet has passed
        (``cold_check``), and at least every ``cold_check_interval`` (then as ``total``).
        Without a budget, every tag every round."""
        if self.plan.every_round:
            return Purpose.TOTAL
        now, deadline = self.now, self.plan.report_deadline
        if any(pages.changeable(seg, now, deadline) for seg in st.segments):
            return Purpose.TOTAL
        quiet = now - st.changed_at
        interval = self.plan.cold_check_interval
        since = now - st.checked_at
        if quiet < interval or since >= interval:
            return Purpose.TOTAL
        if since >= quiet / 4:
            return Purpose.COLD_CHECK
        return None

    def _whole_wants(self, numbers: list[int]) -> list[Want]:
        """A whole read's first page: handed out only if all its pages fit (see Want)."""
        wants = self._wants(numbers, Purpose.WHOLE)
        return [Want(w.purpose, w.key, w.tag, w.page, self.whole_pages - 1, True) for w in wants]

    def _go_whole(self) -> list[int]:
        self.mode = "whole"
        self.generation += 1
        self.outstanding = 0
        self.reads.clear()
        self.whole = TagPager(self.tag, self.plan.max_pages)
        self.asked = _Asked()
        return self.asked.new([1])

    def fail(self, err: Inconsistent) -> list[Want]:
        """A check failed: drop the state, count it, and read the tag whole now."""
        self.failed = err
        st = self.state
        shadow = self.shadow
        self.shadow = None
        if self.shared is not None:
            self.shared.fallbacks[(self.tag, err.reason)] += 1
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
            return self._wants(self.asked.new(self.shadow_pages), Purpose.WHOLE)
        return self._wants(self._go_whole(), Purpose.WHOLE)

    # -- the answers

    def on_page(self, number: int, read: Read | Page) -> list[Want]:
        self.outstanding -= 1
        self.answered.add(number)
        if self.whole is not None:
            page = read.page if isinstance(read, Read) else read
            if number == 1:
                numbers = self.whole.first_page(page)
                self.asked.pages.update(numbers)
                return self._wants(numbers, Purpose.WHOLE)
            self.whole.other_page(number, page)
            return []
        try:
            return self._on_page(number, read)
        except Inconsistent as err:
            return self.fail(err)

    def _on_page(self, number: int, read: Read | Page) -> list[Want]:
        assert isinstance(read, Read)
        st = self.state
        assert st is not None
        if self.shadow is not None:
            if number == 1:
                self.shadow_pages = self.shadow.first_page(read.page)
            else:
                self.shadow.other_page(number, read.page)
        page, detail, total = pages.answer_total(st, number, read, self.fingerprints)
        self.latest_total = total if self.latest_total is None else max(self.latest_total, total)
        first = not self.reads and not self.detecting
        pages.check_layout(st, number, page, total, first, self.plan.max_pages)
        if not first and st.order == "unknown" and not self.detecting and total != st.label_total:
            # The tag grew while the round ran and its order is not known yet: where this page
            # sits is not known either. Dropped; the next round detects the order.
            return []
        lo, hi = pages.page_span(st, number, total, page.items)
        by_idx = detail.reversed() if pages.listing_order(st) == "newest" else detail
        self.reads.append((lo, hi, by_idx, total))
        if not first:
            return []
        if st.complete:
            st.checked_at = self.now
        # After the first answer: the pages this round needs.
        if st.order == "unknown" and st.segments and total != st.label_total:
            self.detecting = True
            return self._wants(self.asked.new(order.detection_pages(st, total)), Purpose.NEW)
        if st.order == "unknown":
            st.label_total = total
        return self._wants(self.asked.new(self._needed_pages(total)))

    def _needed_pages(self, total: int) -> set[int]:
        st = self.state
        assert st is not None
        plan = self.plan
        spans = pages.needed(
            st, total, self.now, plan.report_deadline, plan.every_round, plan.api_clock()
        )
        self.want = [(lo, hi) for lo, hi, _, _ in spans]
        numbers: set[int] = set()
        for lo, hi, purpose, key in spans:
            hi = min(hi, total)
            if purpose == Purpose.AUDIT:
                self.audits.append((lo, hi))
            for number in pages.pages_for(st, lo, hi, total):
                numbers.add(number)
                known = self.why.get(number)
                if known is None or purpose < known[0]:
                    if purpose in (Purpose.NEW, Purpose.FIRST_READ):
                        # In send order, whatever the listing's: the oldest first.
                        key = pages.page_span(st, number, total, st.size or 1)[0]
                    self.why[number] = (purpose, key)
        return numbers

    def idle(self) -> list[Want]:
        """Every answer asked is in: detect the order, fill holes, or fold the reads in."""
        if self.whole is not None or self.error is not None or self.settled:
            return []
        try:
            if self.detecting:
                return self._detect()
            more = self.gaps() or self._refresh()
            if more:
                return self._wants(more)
            self._fold_in()
            return []
        except Inconsistent as err:
            return self.fail(err)

    def _fold_in(self) -> None:
        st = self.state
        assert st is not None
        grown = st.complete and self.latest_total is not None and self.latest_total > st.total
        self.reused = self._merge()
        if grown:
            st.changed_at = self.now
        st.grew = sum(
            1 for n, (p, _) in self.why.items() if p == Purpose.NEW and n in self.answered
        )
        self._audited()
        self.settled = True
        self.reads = []  # folded in: let the pages go

    def _audited(self) -> None:
        """Move the audit's cursor past the segments it read, in turn."""
        st = self.state
        if st is None or not self.audits:
            return
        total = self.latest_total or st.total
        for lo, hi in self.audits:
            if not all(n in self.answered for n in pages.pages_for(st, lo, hi, total)):
                break
            st.cursor = hi
            st.audited_at = self.now

    def _detect(self) -> list[Want]:
        """Every detection page is in: which order explains them?"""
        st = self.state
        assert st is not None
        self.detecting = False
        oldest, newest, total = order.views(st, self.reads)
        if newest is None and self.passes < MAX_FILL_PASSES:
            # The tag grew between requests: ask for where those messages are now.
            self.passes += 1
            self.detecting = True
            return self._wants(self.asked.again(order.moved_pages(st, total)), Purpose.NEW)
        fits = order.fits(st, oldest, newest, self.tag)
        if fits == "both":
            # Both read alike (e.g. nothing but Waiting messages): start again at this total.
            self.state = TagState(size=st.size)
            self.reads = []
            self.asked = _Asked()
            self.fingerprints.clear()
            self.latest_total = None
            return self._wants(self.asked.new([1]), Purpose.NEW)
        label = st.label_total
        if fits == "newest":
            self.reads = order.to_newest(st, self.reads)
        else:
            st.order = "oldest"
        st.total = label if st.complete else st.covered()
        st.dirty = True
        log.info("listing order detected", extra={"tag": self.tag, "order": st.order})
        return self._wants(self.asked.new(self._needed_pages(total)))

    # -- the end of the round

    def gaps(self) -> list[int]:
        """Once every answer is in: pages still needed (messages that moved while it ran)."""
        if self.whole is not None or self.error is not None or self.failed is not None:
            return []
        if self.detecting:  # the order's detection asks for what it misses itself
            return []
        st = self.state
        if st is None or not self.reads or self.passes >= MAX_FILL_PASSES:
            return []
        total = max(r[3] for r in self.reads)
        missing = pages.uncovered(st, self.want, self.reads, total)
        if not missing:
            return []
        self.passes += 1
        return self.asked.again(pages.pages_of(st, missing, total))

    def _refresh(self) -> list[int]:
        """A first read about to end: read again the pages an earlier round of it read that
        may have had reports since, so that its first counts are as fresh as any round's.
        Under a budget, what of it is deferred does not hold the counts back (see
        ``fold.first_read_end``): those pages are then read on their schedule, as any tag's."""
        st = self.state
        assert st is not None
        if st.complete or not self.reads or self.passes >= MAX_FILL_PASSES:
            return []
        stale = pages.stale(st, self.reads, self.now)
        if not stale:
            return []
        self.passes += 1
        numbers = pages.pages_of(st, stale, max(r[3] for r in self.reads))
        for number in numbers:
            self.why.setdefault(number, (Purpose.WAITING, 0.0))
        self.want.extend(stale)
        return self.asked.again(numbers)

    def _merge(self) -> int:
        assert self.state is not None
        mismatches = self.shared.mismatches if self.shared is not None else Counter()
        return fold.merge(
            self.state,
            self.reads,
            self.now,
            self.plan.report_deadline,
            mismatches,
            self.tag,
            self.plan.api_clock(),
        )

    def finish(
        self, deferred: int = 0
    ) -> tuple[TagCounts | UpstreamError | Progress | Deferred, RoundInfo]:
        """The round's result for the tag; ``deferred``: its wants the round could not hand
        out."""
        if self.whole is not None:
            listing = "whole" if self.failed is not None or self.state is None else self.state.order
            info = RoundInfo("whole", listing, self.fetched)
            if self.error is not None:
                return self.error, info
            if deferred:
                return Deferred(self.tag), info
            return self.whole.result(), info
        st = self.state
        assert st is not None
        if not self.settled:
            if self.error is not None and (st.complete or not self.reads):
                # A steady round that failed: nothing of it is used (never a half-read tag);
                # a first read that read nothing this round failed too.
                return self.error, RoundInfo("incremental", st.order, self.fetched)
            if self.detecting or (st.complete and not self.reads):
                # The order's detection, or the total itself, left for a later round.
                if self.error is not None:
                    return self.error, RoundInfo("incremental", st.order, self.fetched)
                return Deferred(self.tag), RoundInfo("incremental", st.order, self.fetched)
            try:  # what it read is kept: a first read's pages, a steady round's part
                self._fold_in()
            except Inconsistent as err:
                self.fail(err)
                error = DeadlineExceeded("inconsistent pages: the tag is read again")
                return error, RoundInfo("whole", "whole", self.fetched)
        if self.error is not None and st.complete:
            return self.error, RoundInfo("incremental", st.order, self.fetched)
        if not st.complete or st.refresh_before:
            ended = fold.first_read_end(
                st,
                self.tag,
                self.now,
                self.fetched,
                self.latest_total,
                self.error,
                budget=self.plan.budget,
            )
            if ended is not None:
                return ended
            self._first_counts()
        info = RoundInfo("incremental", st.order, self.fetched, self.reused)
        return fold.counts(st, self.tag, self.fetched, self.latest_total), info

    def _first_counts(self) -> None:
        """A first read just ended: date its last change from the tag's own dates (a campaign
        finished days ago is quiet from the start), and its total as just read."""
        st = self.state
        assert st is not None
        st.checked_at = self.now
        newest = max((max(seg.dates, default=0) for seg in st.segments), default=0)
        api_now = self.plan.api_clock()
        if api_now is not None and newest:
            st.changed_at = self.now - max(0.0, api_now - newest)
        else:
            st.changed_at = self.now
