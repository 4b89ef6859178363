"""HTTP client for SMS Partner's ``GET /v1/bulk-status-by-tag``.

One :class:`requests.Session` (keep-alive, ``concurrency`` pooled connections) under a
transport that bounds every request in time, size and destination (:mod:`.transport`),
a shared request-rate limit, and retries only where safe (a GET, on connection errors, 429,
502, 503 and 504, inside the round's deadline). It knows requests, never why they are made:
which pages a round asks, and in what order, is decided in :mod:`.collection`.

Nothing here logs or raises text containing the request URL: it holds the API key.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from types import MappingProxyType

from . import transport
from .config import ApiConfig
from .errors import (
    ConnectionFailed,
    DeadlineExceeded,
    HttpStatusError,
    InvalidResponse,
    NotSent,
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
                raise NotSent("the request rate limit leaves no time before the deadline")
            self._next = start + self.interval
        if start > now:
            self._sleep(start - now)


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
        self,
        tag: str,
        page: int = 1,
        deadline: float | None = None,
        parse=parse_page,
        on_send: Callable[[], None] | None = None,
    ) -> Page:
        """GET one page, with safe retries; raise an :class:`UpstreamError` on failure, and
        :class:`NotSent` if the deadline came before the request could be sent. ``parse`` turns
        the body into the page (incremental rounds keep the detail too); ``on_send`` is called
        when the request is about to leave (it then counts against the API's rate)."""
        params: dict[str, str | int] = {"apiKey": self.api.key, "tag": tag}
        if page > 1:
            params["page"] = page
        attempt = 0
        failed: UpstreamError | None = None  # the last attempt that was sent
        while True:
            try:
                return self._attempt(params, deadline, parse, on_send)
            except NotSent:
                if failed is not None:  # a retry that never left: the failure stands
                    raise failed from None
                raise
            except UpstreamError as err:
                failed = err
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
        self,
        params: Mapping[str, str | int],
        deadline: float | None,
        parse=parse_page,
        on_send: Callable[[], None] | None = None,
    ) -> Page:
        status, body, retry_after_header = self._get(self.url, params, deadline, on_send)
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
        self,
        url: str,
        params: Mapping[str, str | int],
        deadline: float | None,
        on_send: Callable[[], None] | None = None,
    ) -> tuple[int, bytes, str | None]:
        self.limiter.acquire(deadline)
        if self._closed.is_set():
            raise ConnectionFailed("the client is closed")
        timeout = self.api.timeout
        if deadline is not None:
            timeout = min(timeout, deadline - time.monotonic())
            if timeout <= 0:
                raise NotSent("no time left for the request")
        with self._lock:
            self.requests_made += 1
        if on_send is not None:
            on_send()
        try:
            return self.transport.get(url, params, timeout)
        except RequestTimeout:
            if timeout >= self.api.timeout:
                raise
        # Cut by the round's deadline, not by api.timeout: say so, like the round does.
        raise DeadlineExceeded("the round ran out of time during the request")

    def api_time(self) -> float | None:
        """The API's clock now (Unix time), from the ``Date`` of its latest answer; None
        before any answer had one."""
        offset = self.transport.clock_offset
        return None if offset is None else time.time() + offset

    def _retry_after(self, header: str | None) -> float | None:
        seconds = transport.retry_after_seconds(header)  # capped: see MAX_RETRY_AFTER
        if seconds is not None:
            self.limiter.pause_until(time.monotonic() + seconds)
        return seconds
