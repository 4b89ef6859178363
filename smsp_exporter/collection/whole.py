"""A whole read of a tag: every page, once, in one round; the way a tag is read when
``collection.incremental`` is off, when incremental reading fell back, and by ``/probe``.

:class:`TagPager` follows the pages of one tag: the first page tells how many messages there
are (``total``) and how many a page holds; a page whose number or content repeats one already
counted (an API that ignores ``page``) is dropped, a page shorter than promised ends the tag
early; both mark the tag incomplete, as does the page cap. It never counts a page twice and
never loops.
"""

from __future__ import annotations

import heapq
import itertools
import math
from array import array
from dataclasses import dataclass, field
from types import MappingProxyType

from ..client import TagCounts
from ..parse import Page


@dataclass
class TagPager:
    """Pagination state of one tag's whole read (see the module's documentation)."""

    tag: str
    max_pages: int
    statuses: dict[str, int] = field(default_factory=dict)
    stop: int = 0
    messages: int = 0
    pages: int = 0
    expected_pages: int = 1
    page_size: int = 0
    total: int | None = None
    truncation: str | None = None
    oldest_waiting: int | None = None
    newest: int | None = None
    waiting_unknown: int = 0
    unreadable: dict[str, int] = field(default_factory=dict)
    _fingerprints: set[int] = field(default_factory=set)
    _waiting_runs: list[array[int]] = field(default_factory=list)  # each page's, sorted

    @property
    def waiting_dates(self) -> array[int]:
        """The known dates of the Waiting messages counted so far, ascending."""
        return _merge_runs(self._waiting_runs)

    def first_page(self, page: Page) -> list[int]:
        """Count page 1 and return the numbers of the pages still to fetch."""
        self._add(page)
        self.total = page.total
        if page.total is None or page.total <= page.items:
            return []
        if page.items == 0:
            self._cut("short_page")
            return []
        self.page_size = page.items
        self.expected_pages = math.ceil(page.total / page.items)
        last = self.expected_pages
        if last > self.max_pages:
            self._cut("page_cap")
            last = self.max_pages
        return list(range(2, last + 1))

    def other_page(self, number: int, page: Page) -> None:
        if page.current_page not in (None, number) or (
            page.items and page.fingerprint in self._fingerprints
        ):
            self._cut("page_ignored")
            return
        expected = self.page_size
        if number == self.expected_pages and self.total is not None:
            expected = self.total - self.page_size * (self.expected_pages - 1)
        if page.items < expected:
            self._cut("short_page")
        self._add(page)

    def _add(self, page: Page) -> None:
        self.pages += 1
        if page.items:
            self._fingerprints.add(page.fingerprint)
        self.messages += page.items
        self.stop += page.stop
        for status, count in page.statuses.items():
            self.statuses[status] = self.statuses.get(status, 0) + count
        if page.oldest_waiting is not None and (
            self.oldest_waiting is None or page.oldest_waiting < self.oldest_waiting
        ):
            self.oldest_waiting = page.oldest_waiting
        if page.newest is not None and (self.newest is None or page.newest > self.newest):
            self.newest = page.newest
        if page.waiting_dates:
            self._waiting_runs.append(array("q", page.waiting_dates))
        self.waiting_unknown += page.waiting_unknown
        for name, count in page.unreadable.items():
            self.unreadable[name] = self.unreadable.get(name, 0) + count

    def _cut(self, reason: str) -> None:
        if self.truncation is None:
            self.truncation = reason

    def result(self) -> TagCounts:
        return TagCounts(
            tag=self.tag,
            statuses=MappingProxyType(dict(self.statuses)),
            stop=self.stop,
            messages=self.messages,
            pages=self.pages,
            complete=self.truncation is None,
            truncation=self.truncation,
            total_reported=self.total,
            oldest_waiting=self.oldest_waiting,
            newest=self.newest,
            waiting_dates=self.waiting_dates,
            waiting_unknown=self.waiting_unknown,
            unreadable=MappingProxyType(dict(self.unreadable)),
        )


def _merge_runs(runs: list[array[int]]) -> array[int]:
    """Sorted runs (a page's Waiting dates) merged into one sorted array, without ever holding
    them all as Python ints (40 bytes each, against 8 in the array). Pages in send order cover
    date ranges that do not overlap: then the runs, ordered by their ends, are concatenated at
    C speed; otherwise they are merged as a stream."""
    ordered = sorted(runs, key=lambda run: (run[0], run[-1]))
    merged = array("q")
    if all(a[-1] <= b[0] for a, b in itertools.pairwise(ordered)):
        for run in ordered:
            merged.extend(run)
    else:
        merged.extend(heapq.merge(*ordered))
    return merged
