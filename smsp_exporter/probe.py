"""``/probe?tag=...``: one tag collected on demand, in the Prometheus multi-target pattern.

Prometheus is the scale-out engine: service discovery (``file_sd``, ``http_sd``) lists the tags
as targets, ``hashmod`` relabelling spreads them over several exporter replicas, and each
replica collects, per probe, just the tag it is asked
(``deploy/prometheus/prometheus-sharded.yml``).

Only the tags the configuration allows may be probed (``probe.allowed_tags`` and/or
``probe.allowed_pattern``, matched against the whole tag): anything else is answered 403
without any API call, so nobody can make the exporter spend API calls on arbitrary input.

A probe answers the per-tag families of ``/metrics`` (same names, same help, same labels) for
its tag. The exporter's own metrics (``sms_api_requests_total``, build info, account credit)
stay on ``/metrics``. Counters are kept between probes of a tag (``sms_api_errors_total`` is a
real counter, ``sms_last_success_timestamp_seconds`` survives a failed probe), in a state
separate from ``/metrics``'s rounds. That state is kept for the ``MAX_PROBED_TAGS`` tags probed
most recently (``allowed_pattern`` admits any number of tags): a tag probed again after that
starts its counters afresh.

Probes cannot starve ``/metrics``:

- probes of one tag at the same time share one fetch (the first one's, within its timeout);
- at most ``MAX_PROBES_IN_FLIGHT`` probes are answered at once, the rest get ``503`` at once
  (``Retry-After: 1``), so they hold a bounded share of the HTTP workers;
- probes have their own fetch threads and connections (``api.concurrency`` halved, at least
  one) and at most ``PROBE_SHARE`` of ``api.max_requests_per_second``, inside the exporter's
  limit: the rest of the API budget stays for ``/metrics``.

The answer is negotiated as ``/metrics``'s (prometheus-client's exposition: OpenMetrics on
``Accept``, gzip on ``Accept-Encoding``).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import replace
from http import HTTPStatus
from urllib.parse import parse_qs
from wsgiref.types import StartResponse, WSGIEnvironment

from prometheus_client import make_wsgi_app
from prometheus_client.registry import Collector, CollectorRegistry

from .client import RateLimiter, SmsPartnerClient
from .collection.rounds import Poller, Snapshot, TagState, round_budget
from .collector import families
from .config import AccountConfig, Config
from .web import SCRAPE_TIMEOUT_HEADER, answer_text, parse_scrape_timeout

# Families describing the exporter itself: served on /metrics only.
EXPORTER_FAMILIES = frozenset(
    {
        "sms_api_requests",
        "sms_exporter_build_info",
        "sms_collection_budget_requests",
        "sms_collection_requests",
        "sms_collection_deferred_reads",
        "sms_collection_stalest_read_age_seconds",
        "sms_collection_cold_check_interval_seconds",
    }
)
MAX_TAG_LENGTH = 200
# Tags whose probe state (error counters, last success) is kept, the most recently probed ones.
MAX_PROBED_TAGS = 1024
# Probes answered at once (the HTTP server has 16 workers by default: half stay for the rest).
MAX_PROBES_IN_FLIGHT = 8
# Share of api.max_requests_per_second that probes may use.
PROBE_SHARE = 0.5


class _ShareLimiter:
    """The probes' rate limit: at most a share of the API budget, taken from the exporter's
    own limiter (so that both together never exceed ``api.max_requests_per_second``)."""

    def __init__(self, shared: RateLimiter, rate: float, closed: threading.Event) -> None:
        self.shared = shared
        self.own = RateLimiter(rate, sleep=closed.wait)

    def acquire(self, deadline: float | None = None) -> None:
        self.own.acquire(deadline)
        self.shared.acquire(deadline)

    def pause_until(self, when: float) -> None:
        self.shared.pause_until(when)  # a Retry-After holds every request back


class _Fetch:
    """One collection of a tag, shared by the probes of that tag that arrive meanwhile."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.states: tuple[TagState, ...] | None = None


class _Families(Collector):
    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator:
        for family in families(self.snapshot):
            if family.name not in EXPORTER_FAMILIES:
                yield family


class ProbeApp:
    """The WSGI application behind ``/probe``. ``client`` is the exporter's: probes get their
    own, sharing its rate limit (see the module's documentation)."""

    def __init__(
        self,
        config: Config,
        client: SmsPartnerClient,
        max_tags: int = MAX_PROBED_TAGS,
        *,
        max_in_flight: int = MAX_PROBES_IN_FLIGHT,
        share: float = PROBE_SHARE,
    ) -> None:
        self.allowed = config.probe
        api = replace(config.api, concurrency=max(1, config.api.concurrency // 2))
        self.client = SmsPartnerClient(api)
        self._closed = threading.Event()
        if config.api.max_requests_per_second > 0:
            rate = config.api.max_requests_per_second * share
            self.client.limiter = _ShareLimiter(client.limiter, rate, self._closed)  # type: ignore[assignment]
        # Its own state: no static tag, no template, no account reading; whole reads (a probe
        # answers at once, never with a first read still going on).
        collection = replace(config.collection, incremental=False, state_file=None)
        self.poller = Poller(
            replace(
                config, tags=(), tag_templates=(), account=AccountConfig(), collection=collection
            ),
            self.client,
        )
        self.max_tags = max_tags
        self._recent: OrderedDict[str, None] = OrderedDict()  # least recently probed first
        self._recent_lock = threading.Lock()
        self._fetches: dict[str, _Fetch] = {}
        self._latest: dict[str, TagState] = {}  # the latest probe of each remembered tag
        self._slots = threading.BoundedSemaphore(max_in_flight)

    @property
    def requests_made(self) -> int:
        return self.client.requests_made

    def probed(self) -> tuple[TagState, ...]:
        """The latest state of each tag probed (of the ``max_tags`` remembered), for the status
        page."""
        with self._recent_lock:
            return tuple(self._latest.values())

    def close(self) -> None:
        self._closed.set()
        self.client.close()

    def _remember(self, tag: str) -> None:
        """Mark ``tag`` as just probed (before its collection, so that a concurrent probe cannot
        evict it mid-way) and forget the state of the tags beyond ``max_tags``."""
        with self._recent_lock:
            self._recent[tag] = None
            self._recent.move_to_end(tag)
            while len(self._recent) > self.max_tags:
                gone, _ = self._recent.popitem(last=False)
                self._latest.pop(gone, None)
                if gone not in self._fetches:
                    self.poller._forget(gone)

    def _collect(self, tag: str, budget: float) -> tuple[TagState, ...] | None:
        """The tag's states from a fetch started now or already under way; None if the one under
        way does not end within ``budget``."""
        with self._recent_lock:
            fetch = self._fetches.get(tag)
            leader = fetch is None
            if fetch is None:
                fetch = self._fetches[tag] = _Fetch()
        if leader:
            try:
                fetch.states, _ = self.poller.collect({tag: None}, time.monotonic() + budget)
            finally:
                with self._recent_lock:
                    del self._fetches[tag]
                    if fetch.states and tag in self._recent:
                        self._latest[tag] = fetch.states[0]
                fetch.done.set()
        elif not fetch.done.wait(budget):
            return None
        return fetch.states

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        tags = parse_qs(str(environ.get("QUERY_STRING", "")), keep_blank_values=True).get("tag")
        if not tags or not tags[0]:
            return answer_text(start_response, HTTPStatus.BAD_REQUEST, "missing ?tag=\n")
        if len(tags) > 1:
            return answer_text(start_response, HTTPStatus.BAD_REQUEST, "one tag per probe\n")
        tag = tags[0]
        if len(tag) > MAX_TAG_LENGTH or not self.allowed.allows(tag):
            return answer_text(
                start_response,
                HTTPStatus.FORBIDDEN,
                "this tag may not be probed (see probe.allowed_tags, probe.allowed_pattern)\n",
            )
        if not self._slots.acquire(blocking=False):
            return answer_text(
                start_response,
                HTTPStatus.SERVICE_UNAVAILABLE,
                "too many probes at once\n",
                ("Retry-After", "1"),
            )
        try:
            budget = round_budget(parse_scrape_timeout(environ.get(SCRAPE_TIMEOUT_HEADER)))
            self._remember(tag)
            started = time.monotonic()
            states = self._collect(tag, budget)
        finally:
            self._slots.release()
        if states is None:
            return answer_text(
                start_response,
                HTTPStatus.SERVICE_UNAVAILABLE,
                "a probe of this tag is still running\n",
                ("Retry-After", "1"),
            )
        snapshot = Snapshot(
            states, time.time(), time.monotonic() - started, self.client.requests_made
        )
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Families(snapshot))
        # As /metrics: OpenMetrics or text, gzip or not, as the client asks.
        answer: Iterable[bytes] = make_wsgi_app(registry)(environ, start_response)
        return answer
