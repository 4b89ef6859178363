"""HTTP client for SMS Partner's ``GET /v1/bulk-status-by-tag``.

One :class:`requests.Session` (keep-alive, ``concurrency`` pooled connections) under a
transport that bounds every request in time, size and destination (:mod:`.transport`),
a shared request-rate limit, retries only where safe (a GET, on connection
errors, 429, 502, 503 and 504, inside the round's deadline), and pagination that never counts
a page twice and never loops: see :class:`TagPager`.

Nothing here logs or raises text containing the request URL: it holds the API key.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import queue
import threading
import time
from array import array
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from types import MappingProxyType

from . import transport
from .config import ApiConfig
from .errors import (
    ConnectionFailed,
    DeadlineExceeded,
    HttpStatusError,
    InvalidResponse,
    RequestTimeout,
    UpstreamError,
    detached,
)
from .parse import Page, parse_page

log = logging.getLogger(__name__)

ENDPOINT = "bulk-status-by-tag"
RETRY_STATUSES = frozenset({429, 502, 503, 504})
BACKOFF_BASE = 0.5
BACKOFF_MAX = 10.0
# Seconds of network jitter the rate limit absorbs: requests are spaced (1 + this) / rate apart,
# so that the API never sees more than `rate` of them in one second even when some are late.
RATE_JITTER_MARGIN = 0.05


@dataclass(frozen=True, slots=True)
class TagCounts:
    """Everything counted for one tag in one round."""

    tag: str
    statuses: Mapping[str, int]
    stop: int
    messages: int
    pages: int
    complete: bool = True
    truncation: str | None = None  # why the tag was cut short: page_cap, page_ignored, short_page
    total_reported: int | None = None
    oldest_waiting: int | None = None
    newest: int | None = None
    # The known dates of the tag's Waiting messages, ascending (an array('q'): 8 bytes each).
    waiting_dates: Sequence[int] = ()
    waiting_unknown: int = 0  # Waiting messages whose date is unknown
    # field ("date", "stopSMS") -> messages whose field was unknown (see parse.Page.unreadable)
    unreadable: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))


class RateLimiter:
    """Spaces request starts at least ``1/rate`` seconds apart, shared by all threads.

    ``pause_until`` holds every request back (an upstream ``Retry-After``). ``margin`` (s)
    widens the spacing to ``(1 + margin) / rate``: then ``rate + 1`` consecutive starts span at
    least ``1 + margin`` seconds, and jitter of up to ``margin`` on the way cannot squeeze more
    than ``rate`` of them into one second at the other end."""

    def __init__(
        self, rate: float, clock=time.monotonic, sleep=time.sleep, margin: float = 0.0
    ) -> None:
        self.interval = (1.0 + margin) / rate if rate > 0 else 0.0
        self._next = 0.0
        self._lock = threading.Lock()
        self._clock = clock
        self._sleep = sleep

    def pause_until(self, when: float) -> None:
        with self._lock:
            self._next = max(self._next, when)

    def acquire(self, deadline: float | None = None) -> None:
        with self._lock:
            now = self._clock()
            start = max(now, self._next)
            if deadline is not None and start > deadline:
                raise DeadlineExceeded("the request rate limit leaves no time before the deadline")
            self._next = start + self.interval
        if start > now:
            self._sleep(start - now)


@dataclass
class TagPager:
    """Pagination state of one tag during a round.

    The first page tells how many messages there are (``total``) and how many a page holds;
    the other pages are then fetched concurrently. A page whose number or content repeats one
    already counted (an API that ignores ``page``) is dropped, a page shorter than promised
    ends the tag early; both mark the tag incomplete, as does the page cap.
    """

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
    error: UpstreamError | None = None
    outstanding: int = 0
    started: float | None = None  # monotonic time its page 1 request began
    ended: float | None = None  # monotonic time its last answer (or error) came back
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


class SmsPartnerClient:
    """Reads tags from the API. Thread-safe; one instance per exporter."""

    def __init__(self, api: ApiConfig) -> None:
        self.api = api
        self.url = f"{api.url}/{ENDPOINT}"
        self._closed = threading.Event()
        # Waits (rate limit, back-off) end at once when the client is closed.
        self.limiter = RateLimiter(
            api.max_requests_per_second, sleep=self._closed.wait, margin=RATE_JITTER_MARGIN
        )
        # Every GET goes through it: a total deadline, a body cap, no redirects (transport.py).
        self.transport = transport.Transport(api.url, api.concurrency, api.max_response_bytes)
        self.session = self.transport.session
        self._executor = ThreadPoolExecutor(api.concurrency, thread_name_prefix="smsp-fetch")
        self._lock = threading.Lock()
        self.requests_made = 0  # every HTTP request sent upstream, retries included

    def close(self) -> None:
        """Stop: no new request or retry starts, and the requests in flight are aborted."""
        self._closed.set()
        self._executor.shutdown(wait=False, cancel_futures=True)
        self.transport.close()

    # -- one page -------------------------------------------------------------------------
    def fetch_page(
        self, tag: str, page: int = 1, deadline: float | None = None, parse=parse_page
    ) -> Page:
        """GET one page, with safe retries; raise an :class:`UpstreamError` on failure.
        ``parse`` turns the body into the page (incremental rounds keep the detail too)."""
        params: dict[str, str | int] = {"apiKey": self.api.key, "tag": tag}
        if page > 1:
            params["page"] = page
        attempt = 0
        while True:
            try:
                return self._attempt(params, deadline, parse)
            except UpstreamError as err:
                wait_for = self._retry_delay(err, attempt)
                if wait_for is None:
                    raise
                if deadline is not None and time.monotonic() + wait_for >= deadline:
                    raise
                attempt += 1
                log.debug(
                    "retrying",
                    extra={"tag": tag, "page": page, "reason": err.reason, "wait": wait_for},
                )
                if self._closed.wait(wait_for):
                    raise

    def _retry_delay(self, err: UpstreamError, attempt: int) -> float | None:
        if attempt >= self.api.retries:
            return None
        backoff = min(BACKOFF_MAX, BACKOFF_BASE * 2**attempt)
        if isinstance(err, ConnectionFailed):
            return backoff
        if isinstance(err, HttpStatusError) and err.status in RETRY_STATUSES:
            if err.retry_after is not None:
                return err.retry_after
            if err.status == 429:
                self.limiter.pause_until(time.monotonic() + backoff)
            return backoff
        return None

    def _attempt(
        self, params: Mapping[str, str | int], deadline: float | None, parse=parse_page
    ) -> Page:
        status, body, retry_after_header = self._get(self.url, params, deadline)
        try:
            return parse(body)
        except UpstreamError as err:
            failure = detached(err)  # raised below, out of the frames that hold the body
        del body
        if isinstance(failure, InvalidResponse) and status >= 400:
            error = HttpStatusError(status)
            if status == 429 or status == 503:
                error.retry_after = self._retry_after(retry_after_header)
            raise error
        raise failure

    def get_endpoint(self, endpoint: str, deadline: float | None = None) -> tuple[int, bytes]:
        """One GET of ``{api.url}/{endpoint}?apiKey=...`` (e.g. ``me``): rate-limited, counted
        in ``requests_made``, not retried. Returns the HTTP status and the body."""
        status, body, _ = self._get(
            f"{self.api.url}/{endpoint}", {"apiKey": self.api.key}, deadline
        )
        return status, body

    def _get(
        self, url: str, params: Mapping[str, str | int], deadline: float | None
    ) -> tuple[int, bytes, str | None]:
        self.limiter.acquire(deadline)
        if self._closed.is_set():
            raise ConnectionFailed("the client is closed")
        timeout = self.api.timeout
        if deadline is not None:
            timeout = min(timeout, deadline - time.monotonic())
            if timeout <= 0:
                raise DeadlineExceeded("no time left for the request")
        with self._lock:
            self.requests_made += 1
        try:
            return self.transport.get(url, params, timeout)
        except RequestTimeout:
            if timeout >= self.api.timeout:
                raise
        # Cut by the round's deadline, not by api.timeout: say so, like the round does.
        raise DeadlineExceeded("the round ran out of time during the request")

    def _retry_after(self, header: str | None) -> float | None:
        seconds = transport.retry_after_seconds(header)  # capped: see MAX_RETRY_AFTER
        if seconds is not None:
            self.limiter.pause_until(time.monotonic() + seconds)
        return seconds

    # -- a round --------------------------------------------------------------------------
    def fetch_tags(
        self,
        tags: Iterable[str],
        deadline: float | None = None,
        durations: dict[str, float] | None = None,
    ) -> dict[str, TagCounts | UpstreamError]:
        """Collect every tag, at most ``concurrency`` requests in flight, within ``deadline``.

        Page 1 of every tag is asked first; a tag's other pages are asked as soon as its page 1
        tells how many there are (behind the page 1s still queued, so the pool never idles). A
        tag whose page fails is reported by its error, and its pages not yet sent are dropped.
        Each answer is folded into its tag's counts as it arrives, then let go. ``durations``,
        if given, receives each started tag's seconds from its first request to its last
        answer (a tag whose page 1 never started before the deadline is left out)."""
        pagers = {tag: TagPager(tag, self.api.max_pages) for tag in dict.fromkeys(tags)}
        pending: dict[Future[Page], tuple[str, int]] = {}
        # Futures in the order they finish: O(1) a page, however many pages are pending.
        finished: queue.SimpleQueue[Future[Page]] = queue.SimpleQueue()

        def first(tag: str) -> Page:
            pagers[tag].started = time.monotonic()  # read once its future is done
            return self.fetch_page(tag, 1, deadline)

        def submit(tag: str, number: int) -> None:
            if number == 1:
                future = self._executor.submit(first, tag)
            else:
                future = self._executor.submit(self.fetch_page, tag, number, deadline)
            pending[future] = (tag, number)
            pagers[tag].outstanding += 1
            future.add_done_callback(finished.put)

        for tag in pagers:
            submit(tag, 1)
        while pending:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                future = finished.get(timeout=remaining)
            except queue.Empty:
                break
            tag, number = pending.pop(future)
            pager = pagers[tag]
            pager.outstanding -= 1
            if pager.error is not None:
                continue
            pager.ended = time.monotonic()
            try:
                page = future.result()
            except UpstreamError as err:
                pager.error = err
                self._drop_pending(pending, tag)
                continue
            except CancelledError:  # the client was closed
                pager.error = ConnectionFailed("the client is closed")
                continue
            except Exception as err:  # a bug must not take the other tags down
                log.exception("unexpected error while reading a page", extra={"tag": tag})
                pager.error = InvalidResponse(f"unexpected error ({type(err).__name__})")
                self._drop_pending(pending, tag)
                continue
            if number == 1:
                for other in pager.first_page(page):
                    submit(tag, other)
            else:
                pager.other_page(number, page)
        cut_at = time.monotonic()
        for future, (tag, _) in pending.items():
            future.cancel()
            if pagers[tag].error is None:
                pagers[tag].error = DeadlineExceeded("the round ran out of time")
                pagers[tag].ended = cut_at
        if durations is not None:
            for tag, p in pagers.items():
                if p.started is not None and p.ended is not None:
                    durations[tag] = max(0.0, p.ended - p.started)
        return {tag: p.error if p.error is not None else p.result() for tag, p in pagers.items()}

    @staticmethod
    def _drop_pending(pending: Mapping[Future[Page], tuple[str, int]], tag: str) -> None:
        """Cancel the requests of a failed tag that have not started: their answers are moot."""
        for future, (owner, _) in pending.items():
            if owner == tag:
                future.cancel()
