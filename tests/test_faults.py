"""The fault matrix: every upstream failure, injected by the simulator over real HTTP, in both
collection modes.

For each fault: /metrics answers within the scrape timeout, the faulty tag shows ``sms_up 0``
and its reason in ``sms_api_errors_total``, every other tag's counts stay exact, the exporter
keeps serving, and the first healthy round after the fault recovers the tag. Every scenario
also runs under :func:`watch`, which keeps every log line (logfmt and JSON, at debug level, so
urllib3's request lines are in), every HTTP answer and everything printed, and fails the test
if the API key or a phone number shows up in any of it.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests

from smsp_exporter.simulator import Message, Simulator

from .helpers import (
    API_KEY,
    campaign,
    expected_statuses,
    log_streams,
    make_config,
    samples,
    serve,
    statuses_of,
    value,
)

MODES = ["scrape", "background"]
SCRAPE_TIMEOUT = 2.0  # what Prometheus announces in X-Prometheus-Scrape-Timeout-Seconds
API_TIMEOUT = "0.5s"
INTERVAL = "1s"  # background mode: a round every second, whose deadline is that second
SETTLE = 8.0  # background mode: how long a state may take to show

VICTIM = "cible"  # 45 messages: 5 pages of 10
HEALTHY = ("voisin", "prive")
PHONE_CANARY = "+33699887766"
# Any French mobile number the simulator makes up (+336…), raw or URL-encoded, or the canary's
# digits in any form.
PHONE_RE = re.compile(r"(?:\+|%2B)3[36]\d{8,9}|699887766", re.IGNORECASE)


# --- leak watch ------------------------------------------------------------------------------


@dataclass
class Watch:
    """Scrapes with a scrape timeout, checks the answer time, and keeps every answer."""

    answers: list[str] = field(default_factory=list)

    def get(self, url: str) -> requests.Response:
        response = requests.get(url, timeout=SCRAPE_TIMEOUT + 10)
        self.answers.append(response.text + str(response.headers))
        return response

    def scrape(self, url: str) -> dict:
        began = time.monotonic()
        response = requests.get(
            f"{url}/metrics",
            headers={"X-Prometheus-Scrape-Timeout-Seconds": str(SCRAPE_TIMEOUT)},
            timeout=SCRAPE_TIMEOUT + 10,
        )
        elapsed = time.monotonic() - began
        self.answers.append(response.text + str(response.headers))
        assert response.status_code == 200
        assert elapsed < SCRAPE_TIMEOUT, f"/metrics took {elapsed:.2f} s"
        return samples(response.text)

    def until(self, url: str, mode: str, condition: Callable[[dict], bool]) -> dict:
        """Scrape until ``condition`` holds. A scrape-mode scrape is a round of its own, so
        there it must hold at once; the background refresher may need a round or two."""
        deadline = time.monotonic() + SETTLE
        while True:
            found = self.scrape(url)
            if condition(found):
                return found
            assert mode == "background", f"the round did not show the expected state: {found}"
            assert time.monotonic() < deadline, f"never reached the expected state: {found}"
            time.sleep(0.1)


def assert_nothing_leaked(logs: str, everything: str) -> None:
    assert API_KEY not in everything
    assert "LEAKCANARY" not in everything.upper()
    assert not PHONE_RE.search(everything), PHONE_RE.search(everything)
    assert "<phone>" not in logs  # no phone number even reached a log call
    assert "bulk-status-by-tag" in logs  # urllib3's request lines, with the URL, were there


@pytest.fixture
def watch(capfd: pytest.CaptureFixture[str]) -> Iterator[Watch]:
    watcher = Watch()
    with log_streams() as (json_logs, logfmt_logs):
        yield watcher
    out, err = capfd.readouterr()
    logs = json_logs.getvalue() + logfmt_logs.getvalue()
    for line in json_logs.getvalue().splitlines():
        json.loads(line)  # one JSON document a line, whatever failed
    assert_nothing_leaked(logs, logs + "".join(watcher.answers) + out + err)


# --- the scenario ----------------------------------------------------------------------------


def add_campaigns(sim: Simulator) -> None:
    sim.add_tag(campaign(VICTIM, 45, send_spread=30, report_delay=20))
    sim.add_tag(campaign("voisin", 23, send_spread=30, report_delay=20, stop=0.2))
    sim.set_messages(
        "prive",
        [
            Message(PHONE_CANARY, "Delivered", True, 1_764_000_000),
            Message("+33611223344", "Not delivered", False, 1_764_000_001),
            Message("+33655667788", "Waiting", False, 1_764_000_002),
        ],
    )
    sim.advance(35)  # all sent; some delivered, some not, some still waiting


def config_for(
    sim: Simulator, mode: str, tags=(VICTIM, *HEALTHY), interval: str = INTERVAL, **api: Any
):
    api = {"timeout": API_TIMEOUT, "retries": 1, **api}
    return make_config(sim, tags, collection={"mode": mode, "interval": interval}, **api)


def errors_of(found: dict, tag: str) -> dict[str, float]:
    return {
        dict(labels)["reason"]: v
        for (name, labels), v in found.items()
        if name == "sms_api_errors_total" and dict(labels)["tag"] == tag and v
    }


def assert_exact(sim: Simulator, found: dict, tag: str) -> None:
    assert value(found, "sms_up", tag=tag) == 1
    assert statuses_of(found, tag) == expected_statuses(sim, tag)
    assert value(found, "sms_stop_total", tag=tag) == sim.expected(tag)["stop"]
    assert value(found, "sms_collection_complete", tag=tag) == 1


def is_down(tag: str, reason: str) -> Callable[[dict], bool]:
    return lambda found: (
        value(found, "sms_up", tag=tag) == 0
        and bool(value(found, "sms_api_errors_total", tag=tag, reason=reason))
    )


def is_up(tag: str) -> Callable[[dict], bool]:
    return lambda found: value(found, "sms_up", tag=tag) == 1


@dataclass(frozen=True)
class Fault:
    id: str
    kind: str
    reason: str
    params: dict[str, Any] = field(default_factory=dict)
    # Retry-After holds every request back (rate limits are the account's): the background
    # round, whose deadline is its interval, needs room for that second.
    interval: str = INTERVAL


FAULTS = [
    Fault("timeout", "delay", "timeout", {"seconds": 3.0}),
    Fault("reset-mid-body", "reset", "connection", {"at": "body"}),
    Fault("reset-at-start", "reset", "connection", {"at": "start"}),
    Fault("http-500", "http_status", "http_500", {"status": 500}),
    Fault("http-502", "http_status", "http_502", {"status": 502}),
    Fault("http-503", "http_status", "http_503", {"status": 503}),
    Fault("429", "rate_limit", "http_429"),
    Fault("429-retry-after", "rate_limit", "http_429", {"retry_after": 1}, interval="3s"),
    Fault("html-200", "html", "invalid_response"),
    Fault("truncated-json", "truncated_json", "invalid_response"),
    *(
        Fault(f"shape-{variant}", "wrong_shape", "invalid_response", {"variant": variant})
        for variant in (
            "list_missing",
            "list_null",
            "list_not_list",
            "no_status",
            "total_negative",
            "total_absurd",
            "not_object",
        )
    ),
    Fault("page-3-of-5", "page_error", "http_500", {"page": 3, "status": 500}),
    Fault("page-3-of-5-reset", "reset", "connection", {"page": 3}),
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("fault", FAULTS, ids=lambda f: f.id)
def test_a_faulty_tag_is_down_with_its_reason_and_recovers(sim, watch, mode, fault):
    add_campaigns(sim)
    sim.set_fault(VICTIM, fault.kind, **fault.params)
    with serve(config_for(sim, mode, interval=fault.interval)) as url:
        found = watch.until(url, mode, is_down(VICTIM, fault.reason))
        assert statuses_of(found, VICTIM) == {}  # no partial counts of a failed tag
        assert set(errors_of(found, VICTIM)) == {fault.reason}
        if mode == "scrape":
            assert errors_of(found, VICTIM) == {fault.reason: 1}  # one round, one error
        for tag in HEALTHY:
            assert_exact(sim, found, tag)
            assert errors_of(found, tag) == {}

        sim.clear_faults()
        found = watch.until(url, mode, is_up(VICTIM))
        for tag in (VICTIM, *HEALTHY):
            assert_exact(sim, found, tag)
        assert errors_of(found, VICTIM).get(fault.reason, 0) >= 1  # a counter: it stays
        assert watch.get(f"{url}/healthz").status_code == 200


# Every error code the documentation lists for this call and for the account, except 4.
API_CODES = (1, 3, 5, 6, 9, 10, 20, 30, 40, 50, 96)


@pytest.mark.parametrize("mode", MODES)
def test_every_documented_api_error_code_is_its_own_reason(sim, watch, mode):
    add_campaigns(sim)
    victims = [f"code-{code}" for code in API_CODES]
    for code, tag in zip(API_CODES, victims, strict=True):
        sim.add_tag(campaign(tag, 5))
        sim.set_fault(tag, "api_error", code=code, status=200 if code % 2 else 403)
    with serve(config_for(sim, mode, tags=(*victims, *HEALTHY))) as url:
        found = watch.until(
            url,
            mode,
            lambda f: all(
                is_down(tag, f"api_code_{code}")(f)
                for code, tag in zip(API_CODES, victims, strict=True)
            ),
        )
        for tag in HEALTHY:
            assert_exact(sim, found, tag)
        sim.clear_faults()
        found = watch.until(url, mode, lambda f: all(is_up(tag)(f) for tag in victims))
        for tag in (*victims, *HEALTHY):
            assert_exact(sim, found, tag)


@pytest.mark.parametrize("mode", MODES)
def test_connection_refused_then_the_api_comes_back(watch, mode):
    first = Simulator(api_key=API_KEY, page_size=10, seed=7).start()
    port = first.port
    add_campaigns(first)
    first.freeze(first.now())
    config = config_for(first, mode, tags=HEALTHY)
    first.stop()  # the port now refuses connections
    with serve(config) as url:
        found = watch.until(
            url, mode, lambda f: all(is_down(tag, "connection")(f) for tag in HEALTHY)
        )
        for tag in HEALTHY:
            assert statuses_of(found, tag) == {}
        second = Simulator(api_key=API_KEY, page_size=10, seed=7, port=port).start()
        try:
            add_campaigns(second)
            second.freeze(second.now())  # as the first: no report may land between scrape and check
            found = watch.until(url, mode, lambda f: all(is_up(tag)(f) for tag in HEALTHY))
            for tag in HEALTHY:
                assert_exact(second, found, tag)
        finally:
            second.stop()


# --- answers that are not failures: the tag stays up, and says what it could count -----------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("kind", "params", "reason", "counted"),
    [
        pytest.param("ignore_page", {}, "page_ignored", 10, id="api-ignores-page"),
        pytest.param("short_page", {"page": 3, "keep": 4}, "short_page", 45 - 6, id="short-page"),
    ],
)
def test_pages_served_inconsistently_give_a_lower_bound_and_say_so(
    sim, watch, mode, kind, params, reason, counted
):
    add_campaigns(sim)
    sim.set_fault(VICTIM, kind, **params)
    with serve(config_for(sim, mode)) as url:
        found = watch.until(
            url, mode, lambda f: value(f, "sms_collection_complete", tag=VICTIM) == 0
        )
        assert value(found, "sms_up", tag=VICTIM) == 1
        assert sum(statuses_of(found, VICTIM).values()) == counted  # never doubled
        assert value(found, "sms_collection_truncations_total", tag=VICTIM, reason=reason)
        assert value(found, "sms_api_reported_messages", tag=VICTIM) == 45
        for tag in HEALTHY:
            assert_exact(sim, found, tag)
        sim.clear_faults()
        found = watch.until(
            url, mode, lambda f: value(f, "sms_collection_complete", tag=VICTIM) == 1
        )
        assert_exact(sim, found, VICTIM)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("how", ["empty-list", "not-found-code-4", "unknown-tag"])
def test_an_empty_tag_is_up_with_zero_counts(sim, watch, mode, how):
    add_campaigns(sim)
    tag = "jamais-vu" if how == "unknown-tag" else VICTIM
    if how == "empty-list":
        sim.set_fault(VICTIM, "empty")
    elif how == "not-found-code-4":
        sim.set_fault(VICTIM, "api_error", code=4)
    with serve(config_for(sim, mode, tags=(tag, *HEALTHY))) as url:
        found = watch.until(url, mode, is_up(tag))
        assert statuses_of(found, tag) == {"Delivered": 0, "Not delivered": 0, "Waiting": 0}
        assert value(found, "sms_stop_total", tag=tag) == 0
        assert errors_of(found, tag) == {}
        for healthy in HEALTHY:
            assert_exact(sim, found, healthy)


# --- 429: back off, and never go faster than the configured rate while doing so -------------

RATE = 5


def busiest_second(times: list[float], slack: float = 0.05) -> int:
    """The most requests that arrived within any window of one second (less ``slack``, for
    the jitter between the client's start and the simulator's arrival time)."""
    times = sorted(times)
    best, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] >= 1.0 - slack:
            start += 1
        best = max(best, end - start + 1)
    return best


def test_busiest_second_counts_a_window():
    assert busiest_second([0.0, 0.1, 0.2, 0.3, 0.4, 0.5]) == 6
    assert busiest_second([0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.2]) == 5
    assert busiest_second([]) == 0


@pytest.mark.parametrize(
    "limit",
    [
        pytest.param({"retry_after": 1, "times": 3}, id="retry-after"),
        pytest.param({"times": 3}, id="no-retry-after"),
        pytest.param({"rps": 3}, id="upstream-allows-3-per-second"),
    ],
)
def test_429_backs_off_without_exceeding_the_configured_rate(sim, watch, limit):
    tags = [f"lot-{i}" for i in range(3)]
    for tag in tags:
        sim.add_tag(campaign(tag, 25))  # 3 pages each
    sim.set_fault(None, "rate_limit", **limit)
    config = make_config(sim, tags, timeout="2s", retries=2, max_requests_per_second=RATE)
    with serve(config) as url:
        response = requests.get(
            f"{url}/metrics", headers={"X-Prometheus-Scrape-Timeout-Seconds": "15"}, timeout=30
        )
        watch.answers.append(response.text)
        found = samples(response.text)
    times = sim.request_times()
    assert sim.stats()["by_status"].get(429), "the simulator never limited: the test is void"
    assert busiest_second(times) <= RATE, times
    for tag in tags:
        if value(found, "sms_up", tag=tag) == 1:
            assert statuses_of(found, tag) == expected_statuses(sim, tag)
        else:  # out of retries under a strict upstream limit: down, and says why
            assert errors_of(found, tag) == {"http_429": 1}
    if "times" in limit:  # a passing limit: every tag got through on retries
        assert all(value(found, "sms_up", tag=tag) == 1 for tag in tags)
