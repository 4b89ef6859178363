"""One tag's collection in one round (the model is described in ``state.py``): which
pages it asks, in what sequence, and what it makes of their answers. Where pages sit and which
messages a round needs are in ``pages``, the order's detection in
``order``, the folding and counting in ``fold``."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from typing import TYPE_CHECKING

from ..client import TagCounts, TagPager
from ..errors import DeadlineExceeded, UpstreamError
from ..parse import Page
from . import fold as fold
from . import order as order
from . import pages as pages
from .model import Detail, Inconsistent, Progress, Read, RoundInfo, TagState

if TYPE_CHECKING:
    from .state import IncrementalReader

# The name the incremental reader has always logged under (operators filter on it).
log = logging.getLogger("smsp_exporter.incremental")

# After an inconsistency in how the API lists a tag, whole reads for this long (s) before the
# incremental way is tried again.
WHOLE_READS_FOR = 3600.0
# Extra request passes a round may make for messages that moved while it ran (newest-first).
MAX_FILL_PASSES = 3


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


class _Job:
    """One tag's collection in one round."""

    def __init__(self, reader: IncrementalReader, tag: str, state: TagState | None) -> None:
        self.reader = reader
        self.tag = tag
        self.state = state
        self.now = reader.clock()
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

    # -- the requests

    def start(self) -> list[int]:
        st = self.state
        if self.mode == "whole" or st is None:
            return self._go_whole()
        if self.mode == "first" and not st.segments:
            self.shadow = TagPager(self.tag, self.reader.client.api.max_pages)
        if self.mode == "steady" and st.order == "oldest" and st.size:
            return self.asked.new([max(1, math.ceil(st.total / st.size))])
        return self.asked.new([1])

    def _go_whole(self) -> list[int]:
        self.mode = "whole"
        self.generation += 1
        self.reads.clear()
        self.whole = TagPager(self.tag, self.reader.client.api.max_pages)
        self.asked = _Asked()
        return self.asked.new([1])

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
            return self.asked.new(self.shadow_pages)
        return self._go_whole()

    # -- the answers

    def on_page(self, number: int, read: Read | Page) -> list[int]:
        if self.whole is not None:
            page = read.page if isinstance(read, Read) else read
            if number == 1:
                numbers = self.whole.first_page(page)
                self.asked.pages.update(numbers)
                return numbers
            self.whole.other_page(number, page)
            return []
        try:
            return self._on_page(number, read)
        except Inconsistent as err:
            return self.fail(err)

    def _on_page(self, number: int, read: Read | Page) -> list[int]:
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
        pages.check_layout(st, number, page, total, first, self.reader.client.api.max_pages)
        if not first and st.order == "unknown" and not self.detecting and total != st.label_total:
            # The tag grew while the round ran and its order is not known yet: where this page
            # sits is not known either. Dropped; the next round detects the order.
            return []
        lo, hi = pages.page_span(st, number, total, page.items)
        by_idx = detail.reversed() if pages.listing_order(st) == "newest" else detail
        self.reads.append((lo, hi, by_idx, total))
        if not first:
            return []
        # After the first answer: the pages this round needs.
        if st.order == "unknown" and st.segments and total != st.label_total:
            self.detecting = True
            return self.asked.new(order.detection_pages(st, total))
        if st.order == "unknown":
            st.label_total = total
        return self.asked.new(self._needed_pages(total))

    def _needed_pages(self, total: int) -> set[int]:
        st = self.state
        assert st is not None
        self.want = pages.needed(st, total, self.now, self.reader.deadline)
        return pages.pages_of(st, [(lo, min(hi, total)) for lo, hi in self.want], total)

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

    def _detect(self) -> list[int]:
        """Every detection page is in: which order explains them?"""
        st = self.state
        assert st is not None
        self.detecting = False
        oldest, newest, total = order.views(st, self.reads)
        if newest is None and self.passes < MAX_FILL_PASSES:
            # The tag grew between requests: ask for where those messages are now.
            self.passes += 1
            self.detecting = True
            return self.asked.again(order.moved_pages(st, total))
        fits = order.fits(st, oldest, newest, self.tag)
        if fits == "both":
            # Both read alike (e.g. nothing but Waiting messages): start again at this total.
            self.state = TagState(size=st.size)
            self.reads = []
            self.asked = _Asked()
            self.fingerprints.clear()
            self.latest_total = None
            return self.asked.new([1])
        label = st.label_total
        if fits == "newest":
            self.reads = order.to_newest(st, self.reads)
        else:
            st.order = "oldest"
        st.total = label if st.complete else st.covered()
        st.dirty = True
        log.info("listing order detected", extra={"tag": self.tag, "order": st.order})
        return self.asked.new(self._needed_pages(total))

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
        may have had reports since, so that its first counts are as fresh as any round's."""
        st = self.state
        assert st is not None
        if st.complete or not self.reads or self.passes >= MAX_FILL_PASSES:
            return []
        stale = pages.stale(st, self.reads, self.now)
        if not stale:
            return []
        self.passes += 1
        numbers = pages.pages_of(st, stale, max(r[3] for r in self.reads))
        self.want.extend(stale)
        return self.asked.again(numbers)

    def _merge(self) -> int:
        assert self.state is not None
        shared, deadline = self.reader.shared, self.reader.deadline
        return fold.merge(self.state, self.reads, self.now, deadline, shared.mismatches, self.tag)

    def finish(self) -> tuple[TagCounts | UpstreamError | Progress, RoundInfo]:
        if self.whole is not None:
            listing = "whole" if self.failed is not None or self.state is None else self.state.order
            info = RoundInfo("whole", listing, self.fetched)
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
                error = DeadlineExceeded("inconsistent pages: the tag is read again")
                return error, RoundInfo("whole", "whole", self.fetched)
        if self.error is not None and st.complete:
            return self.error, RoundInfo("incremental", st.order, self.fetched)
        if st.complete and st.covered() != (st.segments[-1].hi if st.segments else 0):
            # A hole (pages that moved while the round ran and could not be caught up): the
            # counts would miss messages. None this round; the next one fills it.
            error = DeadlineExceeded("pages moved while the round ran")
            return error, RoundInfo("incremental", st.order, self.fetched)
        if not st.complete:
            ended = fold.first_read_end(
                st, self.tag, self.now, self.fetched, self.latest_total, self.error
            )
            if ended is not None:
                return ended
        info = RoundInfo("incremental", st.order, self.fetched, self.reused)
        return fold.counts(st, self.tag, self.fetched, self.latest_total), info
