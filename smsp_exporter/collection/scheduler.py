"""The reads of a round, planned against its budget.

A round may spend ``budget`` requests: the API's rate (``api.max_requests_per_second``) times
the time the round has (the scrape's timeout less a margin, or the background interval); with
no rate limit there is no count, and the deadline alone bounds the round. Each tag's job
*offers* the reads it wants, each with a purpose; the scheduler hands them out, most urgent
first, while the budget lasts. What it cannot hand out is *deferred*: not a failure (the tag
keeps its counts and ``sms_up`` 1; its freshness shows the delay), and the job offers it again
next round, when it is as urgent or more.

The purposes, most urgent first, and what a read of each can change:

============== ===========================================================================
``total``      the page telling the new total of a tag that may have changed (new messages
               lately, or Waiting messages that may still get a report): one request a tag
``new``        pages of the messages the total revealed (and the newest page kept, which
               checks the listing order); an order's detection
``waiting``    pages holding Waiting messages, read again once a quarter of the age of their
               youngest Waiting message has passed since the last read (at least a round)
``whole``      a tag read whole (incremental collection off, or fallen back): all or nothing,
               the tag read longest ago first
``first_read`` a tag's first complete read, one tag after another in a stable order; every
               page read is kept, so every first read ends
``cold_check`` the total of a quiet tag, once a quarter of the time it has been quiet has
               passed (and at most ``collection.cold_check_interval`` apart: then ``total``)
``audit``      frozen pages read again in rotation: at most ``AUDIT_SHARE`` of the budget
============== ===========================================================================

When the read that opens a job's round is handed out (its total), the job *reserves* what it
expects to ask next (the waiting pages due, the pages of its recent growth): reads of later
purposes are handed out only from what no job has reserved, so first reads never take what the
counted tags' steady work needs; and that steady work is bounded by what is due, so whatever is
left goes to first reads, which always progress (never a livelock: see
tests/test_scheduler.py).

Nothing here knows HTTP: the reader (``reader.py``) asks the client for what is handed out.
"""

from __future__ import annotations

import heapq
import math
from collections import Counter
from dataclasses import dataclass, field
from enum import IntEnum


class Purpose(IntEnum):
    """Why a read is made; the lower, the more urgent."""

    TOTAL = 0
    NEW = 1
    WAITING = 2
    WHOLE = 3
    FIRST_READ = 4
    COLD_CHECK = 5
    AUDIT = 6

    @property
    def label(self) -> str:
        """The value of the ``purpose`` label."""
        return self.name.lower()


PURPOSES = tuple(p.label for p in Purpose)
# Purposes whose deferral means a tag's counts are behind (the audit and an early cold check
# are extras: leaving them for later is the plan, not a delay).
BEHIND = frozenset({Purpose.TOTAL, Purpose.NEW, Purpose.WAITING, Purpose.WHOLE})
# The audit's share of a limited budget: it finds what no other read can (a STOP on a frozen
# page, a listing that moved without changing its total), slowly and cheaply.
AUDIT_SHARE = 0.05


@dataclass(frozen=True, order=True)
class Want:
    """A page a job wants read this round. ``key`` orders the wants of one purpose; ``then``
    is how many more reads the job expects once this one is answered (reserved when it is
    handed out); ``atomic``: those reads are worth nothing unless all of them can be made (a
    whole read), so the want is handed out only if they all fit."""

    purpose: Purpose
    key: tuple[float, ...]
    tag: str = field(compare=False)
    page: int = field(compare=False)
    then: int = field(default=0, compare=False)
    atomic: bool = field(default=False, compare=False)


class Scheduler:
    """Hands out the wants of one round, most urgent first, within ``budget`` requests (None:
    no limit). Not thread-safe: one round's reader drives it from one thread."""

    def __init__(self, budget: int | None) -> None:
        self.budget = budget
        self.spent: Counter[Purpose] = Counter()
        self._heap: list[tuple[Want, int]] = []
        self._seq = 0  # ties between equal wants: first offered, first handed out
        self._reserved: dict[str, int] = {}
        self._held: list[Want] = []  # wants that did not fit: handed out if room comes back
        self._whole_admitted = False
        self.audit_cap = None if budget is None else max(1, math.floor(AUDIT_SHARE * budget))

    # -- what jobs do

    def offer(self, want: Want) -> None:
        heapq.heappush(self._heap, (want, self._seq))
        self._seq += 1

    def release(self, tag: str) -> None:
        """The tag's job asks nothing more this round: what it reserved is free again."""
        if self._reserved.pop(tag, 0) and self._held:
            for want in self._held:
                self.offer(want)
            self._held.clear()

    def refund(self, want: Want, keep: bool = True) -> None:
        """A want handed out was never sent (the round's time ran out first): its request is
        not spent, and the want is left for a later round (``keep``) or dropped."""
        self.spent[want.purpose] -= 1
        if keep:
            self._held.append(want)

    def drop(self, tag: str) -> None:
        """Forget the tag's wants not handed out (it failed, or starts over)."""
        self._held = [w for w in self._held if w.tag != tag]
        kept = [(w, n) for w, n in self._heap if w.tag != tag]
        if len(kept) != len(self._heap):
            heapq.heapify(kept)
            self._heap = kept

    # -- what the reader does

    @property
    def left(self) -> float:
        if self.budget is None:
            return math.inf
        return self.budget - sum(self.spent.values())

    def free(self, tag: str | None = None) -> float:
        """What is left that no job (but ``tag``'s) has reserved."""
        reserved = sum(n for t, n in self._reserved.items() if t != tag)
        return self.left - reserved

    def take(self) -> Want | None:
        """The most urgent want the budget allows now, or None: nothing can be handed out
        (until an answer brings new wants, or a job releases what it reserved)."""
        while self._heap:
            want, _ = heapq.heappop(self._heap)
            if self._allowed(want):
                self._hand_out(want)
                return want
            self._held.append(want)
        return None

    def deferred(self) -> Counter[Purpose]:
        """At the round's end: the wants left, by purpose."""
        left: Counter[Purpose] = Counter(w.purpose for w in self._held)
        left.update(w.purpose for w, _ in self._heap)
        return left

    def pending(self) -> Counter[str]:
        """Per tag, its wants that mean it is behind (``BEHIND``) not handed out: at the
        round's end, what was deferred. One pass over what is left, however many tags."""
        left: Counter[str] = Counter(w.tag for w in self._held if w.purpose in BEHIND)
        left.update(w.tag for w, _ in self._heap if w.purpose in BEHIND)
        return left

    def _allowed(self, want: Want) -> bool:
        own = self._reserved.get(want.tag, 0)
        free = self.free(want.tag) - own
        if own <= 0 and free < 1:
            return False
        if want.purpose == Purpose.AUDIT and self.audit_cap is not None:
            return self.spent[Purpose.AUDIT] < self.audit_cap
        if want.atomic and 1 + want.then > own + free:
            # A whole read that cannot fit. The first one of the round is let through all the
            # same: it is the tag read longest ago, and one larger than any round would
            # otherwise never be tried (it then fails on the deadline, as it must).
            return not self._whole_admitted
        return True

    def _hand_out(self, want: Want) -> None:
        self.spent[want.purpose] += 1
        if want.atomic:
            self._whole_admitted = True
        own = self._reserved.get(want.tag, 0)
        if own > 0:
            self._reserved[want.tag] = own - 1
        if want.then > 0:
            room = want.then if want.atomic else min(want.then, max(0.0, self.free()))
            if room > 0:
                self._reserved[want.tag] = self._reserved.get(want.tag, 0) + int(room)
