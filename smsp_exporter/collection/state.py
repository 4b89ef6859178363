"""Incremental collection: a round reads the pages that can change, and reuses the others.

The model. A tag's messages are kept as *segments*: contiguous runs of messages, each with,
per message, its status (as an index in the tag's status table), its STOP flag and its
``date``. Messages are numbered by *send index* ``idx`` (0 = the oldest), which does not move
as the tag grows, whatever the listing order: with an oldest-first listing page ``k`` holds
``idx`` ``[(k-1)S, kS)``; newest-first it holds ``[T-kS, T-(k-1)S)`` for a total ``T`` (the pages
are aligned on the end, so they straddle old segments when ``T`` grows by other than a multiple
of the page size ``S``: the page read is then cut, message by message, at the segments kept).

A steady round asks only for: the page that tells the new total (the last page known
oldest-first or while the order is unknown, page 1 newest-first), the pages holding new
messages, the pages holding a message that was ``Waiting`` and young (sent less than
``report_deadline`` ago) when last read, the newest segment known (the anchor: it checks the
order) and a small rotating audit of frozen segments. A final status never changes; a
``Waiting`` message older than the deadline is final (``Waiting`` for ever). When each is read,
and what waits for a later round, is the scheduler's (``scheduler.py``).

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

The modules: ``model`` (what is kept, a page read message by message, the check a message read
again must pass), ``pages`` (where pages sit, which a round asks), ``order`` (detecting the
order), ``fold`` (folding reads into what is kept, counting), ``job`` (one tag's round),
``reader`` (a round's reads sent); here, the states of every tag and their metrics.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable
from dataclasses import replace
from types import MappingProxyType
from typing import Any

from .model import RoundInfo, TagState

# -- the states of every tag -------------------------------------------------------------------


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
