"""A round's reads, sent: every tag's job offers what it wants (``job.py``), the scheduler
hands it out within the round's budget (``scheduler.py``), and the client's pool sends it, at
most ``api.concurrency`` at once. The one round loop of the exporter: incremental collection,
whole reads (``collection.incremental: false``) and ``/probe`` all run through it.

The choice of the next read is made when a connection is free, not when the round starts: an
answer that reveals more urgent work (new messages behind a total) goes before what was
waiting. Only this thread touches the jobs and the scheduler; the pool's threads only fetch.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import CancelledError, Future
from dataclasses import dataclass, field

from ..client import SmsPartnerClient
from ..errors import ConnectionFailed, DeadlineExceeded, InvalidResponse, NotSent, UpstreamError
from ..parse import parse_page
from .job import Job, Result, RoundPlan
from .model import Inconsistent, RoundInfo, parse_detailed
from .scheduler import Scheduler, Want
from .state import IncrementalState

log = logging.getLogger("smsp_exporter.incremental")

# Seconds kept free at a round's end for the answers of its last requests to come back.
ANSWER_MARGIN = 0.5


def budget_for(rate: float, seconds: float, interval: float) -> int | None:
    """Requests a round of ``seconds`` can send at ``rate`` a second, spaced ``interval`` s
    apart by the rate limit, leaving ``ANSWER_MARGIN`` for the last answers; None: no limit."""
    if rate <= 0 or interval <= 0:
        return None
    usable = max(0.0, seconds - min(ANSWER_MARGIN, seconds / 4))
    return max(1, math.floor(usable / interval) + 1)


@dataclass
class RoundOutcome:
    """What a round did: each tag's result and how it was read, and what it spent."""

    results: dict[str, Result]
    infos: dict[str, RoundInfo]
    deferred: dict[str, int]  # per tag: reads due this round and left for a later one
    budget: int | None
    spent: Counter[str] = field(default_factory=Counter)  # reads sent, by purpose
    left: Counter[str] = field(default_factory=Counter)  # reads deferred, by purpose


class Reader:
    """Runs rounds over ``client``; ``shared``: the page state of incremental collection (None:
    every tag read whole, every round)."""

    def __init__(
        self,
        client: SmsPartnerClient,
        shared: IncrementalState | None,
        report_deadline: float,
        cold_check_interval: float = 600.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.shared = shared
        self.deadline = report_deadline
        self.cold_check_interval = cold_check_interval
        self.clock = clock  # Unix time (tests follow a simulator's clock)
        self.last_read: dict[str, float] = {}  # tag -> when all its due reads were last done
        self.whole_pages: dict[str, int] = {}  # tag -> pages its last whole read took

    def carry_from(self, other: Reader) -> None:
        """Go on from ``other``'s memory (a reload keeping the page state): a tag read a
        minute ago is not made stale, nor its schedule reset, by a reload."""
        self.last_read.update(other.last_read)
        self.whole_pages.update(other.whole_pages)

    def forget(self, tag: str) -> None:
        self.last_read.pop(tag, None)
        self.whole_pages.pop(tag, None)

    def fetch_tags(
        self,
        tags: Iterable[str],
        deadline: float | None = None,
        durations: dict[str, float] | None = None,
        budget: int | None = None,
    ) -> RoundOutcome:
        """One round over ``tags`` (in their stable order), within ``deadline`` (monotonic)
        and ``budget`` requests (None: no limit). ``durations`` receives each tag's seconds
        from its first request to its last answer."""
        plan = RoundPlan(
            now=self.clock(),
            api_clock=self.client.api_time,
            report_deadline=self.deadline,
            every_round=budget is None,
            budget=budget,
            cold_check_interval=self.cold_check_interval,
            max_pages=self.client.api.max_pages,
        )
        return _Round(self, plan, budget, deadline).run(tags, durations)


class _Round:
    def __init__(
        self, reader: Reader, plan: RoundPlan, budget: int | None, deadline: float | None
    ) -> None:
        self.reader = reader
        self.client = reader.client
        self.plan = plan
        self.deadline = deadline
        self.sched = Scheduler(budget)
        self.jobs: dict[str, Job] = {}
        # future -> (tag, page, the job's generation, set once the request has left, want)
        self.in_flight: dict[Future, tuple[str, int, int, threading.Event, Want]] = {}
        self.finished: queue.SimpleQueue[Future] = queue.SimpleQueue()

    def run(self, tags: Iterable[str], durations: dict[str, float] | None) -> RoundOutcome:
        shared = self.reader.shared
        for rank, tag in enumerate(dict.fromkeys(tags)):
            state = shared.checkout(tag) if shared is not None else None
            job = Job(self.plan, shared, tag, state, rank, self.reader.last_read.get(tag, 0.0))
            job.whole_pages = self.reader.whole_pages.get(tag, 1)
            self.jobs[tag] = job
            self._offer(job, job.start())
        concurrency = max(1, self.client.api.concurrency)
        while True:
            while len(self.in_flight) < concurrency and not self._late():
                want = self.sched.take()
                if want is None:
                    break
                if not self._submit(want):
                    break
            if not self.in_flight:
                break
            remaining = None if self.deadline is None else self.deadline - time.monotonic()
            try:
                future = self.finished.get(timeout=None if remaining is None else max(0, remaining))
            except queue.Empty:
                break
            self._deliver(future)
        return self._end(durations)

    def _late(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    def _offer(self, job: Job, wants: list[Want]) -> None:
        for want in wants:
            self.sched.offer(want)
        if job.outstanding <= 0 and job.error is None:
            self.sched.release(job.tag)

    def _submit(self, want: Want) -> bool:
        job = self.jobs[want.tag]
        sent = threading.Event()
        incremental = job.state is not None or self.reader.shared is not None
        parse = parse_detailed if incremental else parse_page
        deadline = self.deadline

        def fetch() -> object:
            if job.started is None:
                job.started = time.monotonic()
            return self.client.fetch_page(want.tag, want.page, deadline, parse, sent.set)

        try:
            future = self.client._executor.submit(fetch)
        except RuntimeError:  # the client is closed
            job.error = ConnectionFailed("the client is closed")
            self.sched.refund(want)
            return False
        self.in_flight[future] = (want.tag, want.page, job.generation, sent, want)
        future.add_done_callback(self.finished.put)
        return True

    def _deliver(self, future: Future) -> None:
        tag, number, generation, _, want = self.in_flight.pop(future)
        job = self.jobs[tag]
        try:
            result = future.result()
        except NotSent:  # never asked: deferred, not failed
            self.sched.refund(want, keep=job.error is None and generation == job.generation)
            return
        except CancelledError:
            result = ConnectionFailed("the client is closed")
        except UpstreamError as err:
            result = err
        except Exception as err:  # a bug must not take the other tags down
            log.exception("unexpected error while reading a page", extra={"tag": tag})
            result = InvalidResponse(f"unexpected error ({type(err).__name__})")
        if job.error is not None or generation != job.generation:
            return
        job.ended = time.monotonic()
        job.fetched += 1
        if isinstance(result, UpstreamError):
            job.error = result
            self._cancel(tag)
            self.sched.drop(tag)
            self.sched.release(tag)
            return
        before = job.generation
        try:
            more = job.on_page(number, result)
            if not more and job.outstanding == 0:
                more = job.idle()
        except Exception as err:  # never a wrong count: read the tag whole instead
            log.exception("unexpected error in incremental reading", extra={"tag": tag})
            more = job.fail(Inconsistent(f"bug_{type(err).__name__}", listing=False))
        if job.generation != before:  # it starts over (a whole read): the rest is moot
            self._cancel(tag)
            self.sched.drop(tag)
        self._offer(job, more)

    def _cancel(self, tag: str) -> None:
        """Cancel the tag's requests that have not started: their answers are moot."""
        for future, (owner, *_) in self.in_flight.items():
            if owner == tag:
                future.cancel()

    def _end(self, durations: dict[str, float] | None) -> RoundOutcome:
        cut_at = time.monotonic()
        for future, (tag, _, generation, sent, want) in self.in_flight.items():
            future.cancel()
            job = self.jobs[tag]
            if job.error is not None or generation != job.generation:
                continue
            if sent.is_set():  # asked, and not answered in time: that is a failure
                job.error = DeadlineExceeded("the round ran out of time")
                job.ended = cut_at
                self.sched.drop(tag)
            else:
                self.sched.refund(want)
        outcome = RoundOutcome({}, {}, {}, self.sched.budget)
        shared = self.reader.shared
        now = self.plan.now
        pending = self.sched.pending()
        for tag, job in self.jobs.items():
            deferred = pending[tag] if job.error is None else 0
            try:
                result, info = job.finish(deferred)
            except Exception as err:  # never a wrong count: drop the state instead
                log.exception("unexpected error folding the tag", extra={"tag": tag})
                result = InvalidResponse(f"unexpected error ({type(err).__name__})")
                info = RoundInfo("whole", "whole", job.fetched)
                job.state = None
            if job.checked_out and shared is not None:
                shared.checkin(tag, job.state)
            if shared is not None:
                info = shared.with_totals(tag, info)
            outcome.results[tag], outcome.infos[tag] = result, info
            outcome.deferred[tag] = deferred
            if job.error is None and not deferred and job.fetched:
                self.reader.last_read[tag] = now
            if job.whole is not None and not deferred and job.error is None:
                self.reader.whole_pages[tag] = max(1, job.whole.pages)
            if durations is not None and job.started is not None and job.ended is not None:
                durations[tag] = max(0.0, job.ended - job.started)
        left = self.sched.deferred()
        outcome.spent.update({p.label: n for p, n in self.sched.spent.items() if n})
        outcome.left.update({p.label: n for p, n in left.items() if n})
        return outcome


def read_whole(
    client: SmsPartnerClient, tags: Iterable[str], deadline: float | None = None
) -> dict[str, Result]:
    """Every page of ``tags``, once, in one round with no budget and no page state: what the
    API says now, the reference incremental collection is checked against."""
    return Reader(client, None, 48 * 3600.0).fetch_tags(tags, deadline).results
