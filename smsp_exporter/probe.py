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
separate from ``/metrics``'s rounds. Two probes of one tag at the same moment both ask the API.
That state is kept for the ``MAX_PROBED_TAGS`` tags probed most recently (``allowed_pattern``
admits any number of tags): a tag probed again after that starts its counters afresh.
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

from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector, CollectorRegistry

from .client import SmsPartnerClient
from .collector import families
from .config import AccountConfig, Config
from .snapshot import Poller, Snapshot, round_budget
from .web import SCRAPE_TIMEOUT_HEADER, _parse_scrape_timeout, answer_text

# Families describing the exporter itself: served on /metrics only.
EXPORTER_FAMILIES = frozenset({"sms_api_requests", "sms_exporter_build_info"})
MAX_TAG_LENGTH = 200
# Tags whose probe state (error counters, last success) is kept, the most recently probed ones.
MAX_PROBED_TAGS = 1024


class _Families(Collector):
    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator:
        for family in families(self.snapshot):
            if family.name not in EXPORTER_FAMILIES:
                yield family


class ProbeApp:
    """The WSGI application behind ``/probe``."""

    def __init__(
        self, config: Config, client: SmsPartnerClient, max_tags: int = MAX_PROBED_TAGS
    ) -> None:
        self.allowed = config.probe
        self.client = client
        # Its own state: no static tag, no template, no account reading; whole reads (a probe
        # answers at once, never with a first read still going on).
        collection = replace(config.collection, incremental=False, state_file=None)
        self.poller = Poller(
            replace(
                config, tags=(), tag_templates=(), account=AccountConfig(), collection=collection
            ),
            client,
        )
        self.max_tags = max_tags
        self._recent: OrderedDict[str, None] = OrderedDict()  # least recently probed first
        self._recent_lock = threading.Lock()

    def _remember(self, tag: str) -> None:
        """Mark ``tag`` as just probed (before its collection, so that a concurrent probe cannot
        evict it mid-way) and forget the state of the tags beyond ``max_tags``."""
        with self._recent_lock:
            self._recent[tag] = None
            self._recent.move_to_end(tag)
            while len(self._recent) > self.max_tags:
                gone, _ = self._recent.popitem(last=False)
                self.poller._forget(gone)

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        method = str(environ.get("REQUEST_METHOD", "GET")).upper()
        if method not in ("GET", "HEAD"):
            return answer_text(start_response, HTTPStatus.METHOD_NOT_ALLOWED, "use GET\n")
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
        timeout = _parse_scrape_timeout(environ.get(SCRAPE_TIMEOUT_HEADER))
        self._remember(tag)
        started = time.monotonic()
        states = self.poller.collect({tag: None}, started + round_budget(timeout))
        snapshot = Snapshot(
            states, time.time(), time.monotonic() - started, self.client.requests_made
        )
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Families(snapshot))
        body = generate_latest(registry)
        start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST)])
        return [body]
