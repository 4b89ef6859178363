"""Prometheus custom collector: turns the latest snapshot into metric families.

Families are built fresh on every collect, as the Prometheus guide for exporters asks.
It is also the library entry point: register an :class:`SmsCollector` into any
prometheus-client registry (see docs/configuration.md, "Use as a library").
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Iterator, Sequence
from contextvars import ContextVar

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeHistogramMetricFamily,
    GaugeMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from . import __version__
from .account import account_families
from .collection.rounds import Snapshot, Source
from .collection.scheduler import PURPOSES
from .collection.state import incremental_families
from .parse import UNREADABLE_FIELDS

# Seconds Prometheus will wait for this scrape (X-Prometheus-Scrape-Timeout-Seconds), set by the
# HTTP layer around each /metrics request; None outside a scrape (library use, tests).
scrape_timeout: ContextVar[float | None] = ContextVar("scrape_timeout", default=None)

# The statuses SMS Partner documents: always exported, at 0 when no message has them.
DOCUMENTED_STATUSES = ("Delivered", "Not delivered", "Waiting")
# Error reasons exported at 0 from the start, so that rate() and increase() work at once.
COMMON_ERROR_REASONS = ("timeout", "connection", "invalid_response")
# Upper bounds (seconds since sending) of sms_waiting_age_seconds: reports take seconds on
# average and 48 h at most. 1800 and 10800 bound the band SmsMessagesStuckWaiting looks at
# (deploy/prometheus/rules): change them together.
WAITING_AGE_BUCKETS = (60, 300, 900, 1800, 3600, 10800, 21600, 86400, 172800)


def waiting_age_buckets(
    dates: Sequence[int], unknown: int, now: float
) -> tuple[list[tuple[str, float]], float]:
    """The cumulative buckets (Waiting messages sent at most `le` seconds before `now`) and
    the sum of their ages, from the sorted send dates of the Waiting messages. A message whose
    date is unknown is only in the +Inf bucket (and not in the sum); one dated in the future
    (clock skew) is in every bucket, its age negative."""
    known = len(dates)
    buckets = [
        (str(bound), float(known - bisect_left(dates, now - bound)))
        for bound in WAITING_AGE_BUCKETS
    ]
    buckets.append(("+Inf", float(known + unknown)))
    return buckets, known * now - float(sum(dates))


def families(snapshot: Snapshot, *, cached: bool = False, now: float | None = None) -> list[Metric]:
    """The metric families describing one snapshot (ages of Waiting messages as of `now`, by
    default the time of the call)."""
    now = time.time() if now is None else now
    note = " (cached: refreshed in the background)" if cached else ""
    status = GaugeMetricFamily(
        "sms_status_total",
        "Messages of the tag in each delivery status, as last reported by SMS Partner" + note,
        labels=["tag", "status"],
    )
    stop = GaugeMetricFamily(
        "sms_stop_total",
        "Messages of the tag whose recipient opted out (replied STOP)" + note,
        labels=["tag"],
    )
    up = GaugeMetricFamily(
        "sms_up", "1 if the last collection of the tag succeeded, else 0" + note, labels=["tag"]
    )
    duration = GaugeMetricFamily(
        "sms_scrape_duration_seconds",
        "Seconds the last collection of the tag took, from its first request to its last answer",
        labels=["tag"],
    )
    last_success = GaugeMetricFamily(
        "sms_last_success_timestamp_seconds",
        "Unix time of the last successful collection of the tag",
        labels=["tag"],
    )
    complete = GaugeMetricFamily(
        "sms_collection_complete",
        "1 if every page of the tag was read in the last successful collection, 0 if it was "
        "cut short (page cap, or pages the API served inconsistently)",
        labels=["tag"],
    )
    reported = GaugeMetricFamily(
        "sms_api_reported_messages",
        "Messages of the tag according to the API's own 'total' field",
        labels=["tag"],
    )
    errors = CounterMetricFamily(
        "sms_api_errors",
        "Failed collections of the tag, by reason, from a fixed set: timeout, connection, "
        "invalid_response, deadline, redirect, response_too_large, http_<status> (standard "
        "4xx/5xx) or http_other, api_code_<code> (documented codes) or api_code_other",
        labels=["tag", "reason"],
    )
    truncations = CounterMetricFamily(
        "sms_collection_truncations",
        "Collections of the tag cut short, by reason (page_cap, page_ignored, short_page)",
        labels=["tag", "reason"],
    )
    oldest_waiting = GaugeMetricFamily(
        "sms_oldest_waiting_timestamp_seconds",
        "Oldest 'date' (Unix time) among the tag's messages still Waiting for a delivery report; "
        "absent when none waits; messages without a readable date are left out "
        "(sms_unreadable_fields)" + note,
        labels=["tag"],
    )
    newest = GaugeMetricFamily(
        "sms_last_status_timestamp_seconds",
        "Newest 'date' (Unix time) among the tag's messages: its latest send or report; "
        "messages without a readable date are left out (sms_unreadable_fields)" + note,
        labels=["tag"],
    )
    waiting_age = GaugeHistogramMetricFamily(
        "sms_waiting_age_seconds",
        "Messages of the tag still Waiting for a delivery report, by seconds since they were "
        "sent (bucket le: sent at most le seconds ago; +Inf also counts those of unknown "
        "date)" + note,
        labels=["tag"],
    )
    # A gauge, not a counter of rounds: exact when a collection reuses pages read before.
    unreadable = GaugeMetricFamily(
        "sms_unreadable_fields",
        "Messages of the tag whose field (date, stopSMS) was missing, null, empty or "
        "unreadable: still counted in sms_status_total, left out of sms_stop_total (stopSMS) "
        "and of the date timestamps (date)" + note,
        labels=["tag", "field"],
    )
    for state in snapshot.tags:
        tag = state.tag
        up.add_metric([tag], 1.0 if state.up else 0.0)
        duration.add_metric([tag], state.duration)
        if state.last_success is not None:
            last_success.add_metric([tag], state.last_success)
        counts = state.counts
        if counts is not None:
            for name in DOCUMENTED_STATUSES:
                status.add_metric([tag, name], float(counts.statuses.get(name, 0)))
            for name, value in sorted(counts.statuses.items()):
                if name not in DOCUMENTED_STATUSES:
                    status.add_metric([tag, name], float(value))
            stop.add_metric([tag], float(counts.stop))
            complete.add_metric([tag], 1.0 if counts.complete else 0.0)
            if counts.total_reported is not None:
                reported.add_metric([tag], float(counts.total_reported))
            if counts.oldest_waiting is not None:
                oldest_waiting.add_metric([tag], float(counts.oldest_waiting))
            if counts.newest is not None:
                newest.add_metric([tag], float(counts.newest))
            buckets, age_sum = waiting_age_buckets(
                counts.waiting_dates, counts.waiting_unknown, now
            )
            waiting_age.add_metric([tag], buckets, age_sum)
            for name in UNREADABLE_FIELDS:
                unreadable.add_metric([tag, name], float(counts.unreadable.get(name, 0)))
        for reason in COMMON_ERROR_REASONS:
            errors.add_metric([tag, reason], float(state.errors.get(reason, 0)))
        for reason, value in sorted(state.errors.items()):
            if reason not in COMMON_ERROR_REASONS:
                errors.add_metric([tag, reason], float(value))
        for reason, value in sorted(state.truncations.items()):
            truncations.add_metric([tag, reason], float(value))
    requests_total = CounterMetricFamily(
        "sms_api_requests", "HTTP requests sent to the SMS Partner API, retries included"
    )
    requests_total.add_metric([], float(snapshot.upstream_requests))
    build = GaugeMetricFamily(
        "sms_exporter_build_info", "Build of smsp-exporter; always 1", labels=["version"]
    )
    build.add_metric([__version__], 1.0)
    last_read = GaugeMetricFamily(
        "sms_collection_last_read_timestamp_seconds",
        "Unix time as of which the tag's counts are current: the end of the last round that "
        "did every read the tag was due (reads left for a later round keep it back)",
        labels=["tag"],
    )
    for state in snapshot.tags:
        if state.last_read is not None:
            last_read.add_metric([state.tag], state.last_read)
    per_tag = [
        status,
        stop,
        up,
        duration,
        last_success,
        complete,
        reported,
        errors,
        truncations,
        oldest_waiting,
        newest,
        waiting_age,
        *incremental_families(snapshot.tags),
        last_read,
        unreadable,
    ]
    _label_templates(per_tag, snapshot)
    account = list(account_families(snapshot.account)) if snapshot.account is not None else []
    return [*per_tag, *account, *budget_families(snapshot, now), requests_total, build]


def budget_families(snapshot: Snapshot, now: float) -> list[Metric]:
    """How the rounds spend the API's rate: the last round's budget, what it could not do,
    reads by purpose since the start, and how far behind the stalest tag is."""
    budget = snapshot.budget
    requests = GaugeMetricFamily(
        "sms_collection_budget_requests",
        "Requests the last collection round could send: the API's rate limit times the time "
        "it had (absent without a rate limit)",
    )
    spent = CounterMetricFamily(
        "sms_collection_requests",
        "Pages asked by collection rounds, by purpose (total, new, waiting, whole, "
        "first_read, cold_check, audit); sms_api_requests_total counts every HTTP request",
        labels=["purpose"],
    )
    deferred = GaugeMetricFamily(
        "sms_collection_deferred_reads",
        "Reads the last round wanted but left for a later one (its budget ran out), by purpose",
        labels=["purpose"],
    )
    stalest = GaugeMetricFamily(
        "sms_collection_stalest_read_age_seconds",
        "Seconds since the counts of the up tag read longest ago were current (see "
        "sms_collection_last_read_timestamp_seconds)",
    )
    cold = GaugeMetricFamily(
        "sms_collection_cold_check_interval_seconds",
        "collection.cold_check_interval: a quiet tag's total is read at least this often",
    )
    if budget is not None:
        if budget.requests is not None:
            requests.add_metric([], float(budget.requests))
        for purpose in PURPOSES:
            spent.add_metric([purpose], float(budget.spent_total.get(purpose, 0)))
            deferred.add_metric([purpose], float(budget.deferred.get(purpose, 0)))
        if budget.cold_check_interval is not None:
            cold.add_metric([], budget.cold_check_interval)
    ages = [now - s.last_read for s in snapshot.tags if s.up and s.last_read is not None]
    if ages:
        stalest.add_metric([], max(0.0, max(ages)))
    return [requests, spent, deferred, stalest, cold]


def _label_templates(per_tag: list[Metric], snapshot: Snapshot) -> None:
    """Give the series of tags expanded from a template a ``template`` label (static tags have
    none), so that ``sum by (template)`` adds up a rolling campaign."""
    templates = {state.tag: state.template for state in snapshot.tags if state.template}
    if not templates:
        return
    for family in per_tag:
        family.samples = [
            sample._replace(labels={**sample.labels, "template": templates[sample.labels["tag"]]})
            if sample.labels.get("tag") in templates
            else sample
            for sample in family.samples
        ]


class SmsCollector(Collector):
    """Collects the configured tags from a snapshot source on every scrape."""

    def __init__(self, source: Source, *, cached: bool = False) -> None:
        self.source = source
        self.cached = cached

    def collect(self) -> Iterator[Metric]:
        yield from families(self.source.snapshot(scrape_timeout.get()), cached=self.cached)

    def describe(self) -> list[Metric]:
        # Registering must not trigger a round of API calls.
        return []
