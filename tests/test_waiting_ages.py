"""sms_waiting_age_seconds: the tag's Waiting messages by time since sending, a gauge histogram
built from the send dates of the Waiting messages (TagCounts.waiting_dates), as of the scrape."""

from __future__ import annotations

import subprocess
import time
from dataclasses import replace

import requests
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from smsp_exporter.client import TagCounts
from smsp_exporter.collection.rounds import Snapshot, TagState
from smsp_exporter.collector import WAITING_AGE_BUCKETS, families, waiting_age_buckets
from smsp_exporter.simulator import Message

from .helpers import make_config, require_tool, samples, serve, value

NOW = 1_764_000_000


def test_buckets_are_cumulative_by_age():
    # Sent 10 s, 100 s, 1000 s, 5000 s, 3 days ago, and one in the future (clock skew).
    dates = sorted(NOW - age for age in (10, 100, 1000, 5000, 3 * 86400, -30))
    buckets, age_sum = waiting_age_buckets(dates, unknown=2, now=NOW)
    assert dict(buckets) == {
        "60": 2.0,  # 10 s and the future one
        "300": 3.0,
        "900": 3.0,
        "1800": 4.0,
        "3600": 4.0,
        "10800": 5.0,
        "21600": 5.0,
        "86400": 5.0,
        "172800": 5.0,
        "+Inf": 8.0,  # the 3-day-old one and the 2 of unknown date
    }
    assert [bound for bound, _ in buckets] == [*map(str, WAITING_AGE_BUCKETS), "+Inf"]
    assert age_sum == 10 + 100 + 1000 + 5000 + 3 * 86400 - 30


def test_a_message_exactly_at_a_bound_is_in_it():
    buckets, _ = waiting_age_buckets([NOW - 1800], unknown=0, now=NOW)
    assert dict(buckets)["1800"] == 1.0 and dict(buckets)["900"] == 0.0


def test_nothing_waiting_gives_zero_buckets():
    buckets, age_sum = waiting_age_buckets([], unknown=0, now=NOW)
    assert {count for _, count in buckets} == {0.0} and age_sum == 0.0


def snapshot(dates, **extra) -> Snapshot:
    counts = TagCounts(
        tag="otp",
        statuses={"Waiting": len(dates), "Delivered": 5},
        stop=0,
        messages=len(dates) + 5,
        pages=1,
        waiting_dates=sorted(dates),
        **extra,
    )
    return Snapshot(
        tags=(TagState(tag="otp", up=True, counts=counts),),
        taken_at=NOW,
        duration=0,
        upstream_requests=0,
    )


def age_samples(snap: Snapshot, now: float) -> dict[str, float]:
    (family,) = [f for f in families(snap, now=now) if f.name == "sms_waiting_age_seconds"]
    assert family.type == "gaugehistogram"
    return {s.labels.get("le", s.name): s.value for s in family.samples}


def test_ages_are_as_of_the_scrape_not_the_round():
    """The same snapshot (a cached round, pages kept from earlier rounds) served later: its
    Waiting messages are older by then."""
    snap = snapshot([NOW - 1000])
    assert age_samples(snap, NOW)["1800"] == 1.0
    later = age_samples(snap, NOW + 1000)
    assert later["1800"] == 0.0 and later["3600"] == 1.0
    assert later["sms_waiting_age_seconds_gcount"] == 1.0
    assert later["sms_waiting_age_seconds_gsum"] == 2000.0


def test_unknown_dates_count_in_inf_only():
    found = age_samples(snapshot([NOW - 10], waiting_unknown=3), NOW)
    assert found["60"] == 1.0 and found["172800"] == 1.0 and found["+Inf"] == 4.0
    assert found["sms_waiting_age_seconds_gcount"] == 4.0


def test_a_down_tag_has_no_ages():
    snap = Snapshot(
        tags=(TagState(tag="otp", up=False, counts=None),),
        taken_at=NOW,
        duration=0,
        upstream_requests=0,
    )
    (family,) = [f for f in families(snap, now=NOW) if f.name == "sms_waiting_age_seconds"]
    assert family.samples == []


def test_served_by_the_exporter_in_both_formats(sim):
    """Through the real exporter: the Prometheus text format (what /probe and promtool speak)
    and OpenMetrics (what Prometheus asks /metrics for), from the simulator's messages."""
    now = int(time.time())
    ages = [5, 40, 400, 2400, 2400, 7200, 4 * 86400]
    messages = [
        Message(phone=f"+3360000{i:04d}", status="Waiting", stop=False, date=now - age)
        for i, age in enumerate(ages)
    ] + [Message(phone="+33600009999", status="Delivered", stop=False, date=now)]
    sim.set_messages("otp", messages)
    with serve(make_config(sim, ["otp"])) as url:
        text = requests.get(f"{url}/metrics", timeout=20).text
        found = samples(text)
        expected = {"60": 2, "300": 2, "900": 3, "1800": 3, "3600": 5, "10800": 6}
        expected |= {"21600": 6, "86400": 6, "172800": 6, "+Inf": 7}
        for bound, count in expected.items():
            assert value(found, "sms_waiting_age_seconds_bucket", tag="otp", le=bound) == count
        assert value(found, "sms_waiting_age_seconds_gcount", tag="otp") == 7
        lint = subprocess.run(
            [require_tool("promtool"), "check", "metrics"],
            input=text,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert "sms_waiting_age_seconds" not in lint.stdout + lint.stderr
        openmetrics = requests.get(
            f"{url}/metrics",
            headers={"Accept": "application/openmetrics-text; version=1.0.0"},
            timeout=20,
        ).text
    assert "# TYPE sms_waiting_age_seconds gaugehistogram" in openmetrics
    (family,) = [
        f
        for f in text_string_to_metric_families(openmetrics)
        if f.name == "sms_waiting_age_seconds"
    ]
    assert family.type == "gaugehistogram"
    found = {(s.name, s.labels.get("le")): s.value for s in family.samples}
    assert found[("sms_waiting_age_seconds_bucket", "+Inf")] == 7
    assert found[("sms_waiting_age_seconds_gcount", None)] == 7


def test_a_rolling_tag_keeps_its_template_label():
    snap = snapshot([NOW - 10])
    rolling = Snapshot(
        tags=(replace(snap.tags[0], template="otp-{date:%Y%m%d}"),),
        taken_at=NOW,
        duration=0,
        upstream_requests=0,
    )
    (family,) = [f for f in families(rolling, now=NOW) if f.name == "sms_waiting_age_seconds"]
    assert family.samples
    assert {s.labels.get("template") for s in family.samples} == {"otp-{date:%Y%m%d}"}
