"""The exporter end to end over real HTTP: simulator -> client -> collector -> /metrics."""

from __future__ import annotations

import io
import threading
import time

import pytest
import requests
from prometheus_client import CollectorRegistry, generate_latest

from smsp_exporter.client import SmsPartnerClient
from smsp_exporter.collection.reader import read_whole
from smsp_exporter.config import ApiConfig
from smsp_exporter.errors import ApiCodeError
from smsp_exporter.exporter import Exporter
from smsp_exporter.logs import add_secret, clear_secrets, setup_logging
from smsp_exporter.simulator import Message

from .helpers import (
    API_KEY,
    campaign,
    expected_statuses,
    make_config,
    samples,
    scrape,
    serve,
    statuses_of,
    value,
)


def test_exact_counts_for_several_tags_across_pages(sim):
    specs = [
        campaign("promo-noel", 95, send_spread=60, report_delay=20),
        campaign(
            "relance",
            250,
            delivered=0.7,
            not_delivered=0.2,
            stop=0.1,
            send_spread=30,
            report_delay=10,
        ),
        campaign("petit", 7),
    ]
    for spec in specs:
        sim.add_tag(spec)
    sim.advance(45)
    with serve(make_config(sim, [s.name for s in specs])) as url:
        found = samples(scrape(url))
    for spec in specs:
        truth = sim.expected(spec.name)
        assert statuses_of(found, spec.name) == expected_statuses(sim, spec.name)
        assert sum(statuses_of(found, spec.name).values()) == truth["total"]
        assert value(found, "sms_stop_total", tag=spec.name) == truth["stop"]
        assert value(found, "sms_up", tag=spec.name) == 1
        assert value(found, "sms_collection_complete", tag=spec.name) == 1
    # The statuses really moved: some delivered, some still waiting, across 10-message pages.
    relance = statuses_of(found, "relance")
    assert relance["Delivered"] > 0 and relance["Not delivered"] > 0
    assert sim.stats()["by_tag"]["relance"] == 25


def test_counts_follow_the_simulator_over_time(sim):
    sim.add_tag(campaign("suivi", 40, send_spread=10, report_delay=30))
    config = make_config(sim, ["suivi"])
    with serve(config) as url:
        before = statuses_of(samples(scrape(url)), "suivi")
        sim.advance(3600)
        after = statuses_of(samples(scrape(url)), "suivi")
    assert before["Waiting"] > after["Waiting"]
    assert after == expected_statuses(sim, "suivi")


def test_tag_with_ampersand_accent_and_space(sim):
    tag = "a&b é c"
    sim.set_messages(
        tag,
        [
            Message("+33600000001", "Delivered", False, 1_700_000_000),
            Message("+33600000002", "Not delivered", True, 1_700_000_001),
        ],
    )
    sim.set_messages("a", [Message("+33600000003", "Waiting", False, 1_700_000_002)])
    with serve(make_config(sim, [tag, "a"])) as url:
        found = samples(scrape(url))
    assert statuses_of(found, tag) == {"Delivered": 1, "Not delivered": 1, "Waiting": 0}
    assert value(found, "sms_stop_total", tag=tag) == 1
    assert statuses_of(found, "a") == {"Delivered": 0, "Not delivered": 0, "Waiting": 1}


def test_unknown_statuses_get_their_own_series_and_documented_ones_stay_at_zero(sim):
    sim.set_messages(
        "codes",
        [
            Message("+33600000001", "ko", False, 1_700_000_000),
            Message("+33600000002", "DELIVRD", False, 1_700_000_000),
            Message("+33600000003", "DELIVRD", False, 1_700_000_000),
        ],
    )
    with serve(make_config(sim, ["codes"])) as url:
        found = samples(scrape(url))
    assert statuses_of(found, "codes") == {
        "Delivered": 0,
        "Not delivered": 0,
        "Waiting": 0,
        "ko": 1,
        "DELIVRD": 2,
    }


def test_a_status_with_a_lone_surrogate_downs_its_tag_not_the_whole_scrape(sim):
    # Valid JSON ("\\ud800"), but no label value can hold it: /metrics used to answer 500.
    sim.set_messages("odd", [Message("+33600000001", "Deliv\ud800", False, 1_700_000_000)])
    sim.set_messages("fine", [Message("+33600000002", "Delivered", False, 1_700_000_000)])
    with serve(make_config(sim, ["odd", "fine"])) as url:
        found = samples(scrape(url))
    assert value(found, "sms_up", tag="odd") == 0
    assert value(found, "sms_api_errors_total", tag="odd", reason="invalid_response") == 1
    assert statuses_of(found, "fine")["Delivered"] == 1


def test_api_ignoring_page_never_doubles_counts(sim):
    sim.add_tag(campaign("sans-page", 35))
    sim.set_fault("sans-page", "ignore_page")
    with serve(make_config(sim, ["sans-page"])) as url:
        found = samples(scrape(url))
    assert sum(statuses_of(found, "sans-page").values()) == 10  # page 1 only, counted once
    assert value(found, "sms_collection_complete", tag="sans-page") == 0
    assert value(found, "sms_collection_truncations_total", tag="sans-page", reason="page_ignored")
    assert value(found, "sms_up", tag="sans-page") == 1
    assert sim.stats()["by_tag"]["sans-page"] == 4  # pages 1..4 asked once each: no loop


def test_short_page_marks_the_tag_incomplete(sim):
    sim.add_tag(campaign("court", 35))
    sim.set_fault("court", "short_page", page=2)
    with serve(make_config(sim, ["court"])) as url:
        found = samples(scrape(url))
    assert sum(statuses_of(found, "court").values()) < 35
    assert value(found, "sms_collection_complete", tag="court") == 0
    assert value(found, "sms_collection_truncations_total", tag="court", reason="short_page") == 1


def test_page_cap_cuts_the_tag_and_says_so(sim):
    sim.add_tag(campaign("gros", 100))
    with serve(make_config(sim, ["gros"], max_pages=3)) as url:
        found = samples(scrape(url))
    assert sum(statuses_of(found, "gros").values()) == 30
    assert value(found, "sms_collection_complete", tag="gros") == 0
    assert value(found, "sms_collection_truncations_total", tag="gros", reason="page_cap") == 1
    assert value(found, "sms_api_reported_messages", tag="gros") == 100
    assert sim.stats()["by_tag"]["gros"] == 3


def test_a_failing_tag_leaves_the_others_exact(sim):
    sim.add_tag(campaign("ok-1", 23))
    sim.add_tag(campaign("casse", 23))
    sim.add_tag(campaign("ok-2", 5))
    sim.set_fault("casse", "page_error", page=2)
    with serve(make_config(sim, ["ok-1", "casse", "ok-2"], retries=0)) as url:
        found = samples(scrape(url))
    assert value(found, "sms_up", tag="casse") == 0
    assert value(found, "sms_api_errors_total", tag="casse", reason="http_500") == 1
    assert statuses_of(found, "casse") == {}
    assert value(found, "sms_stop_total", tag="casse") is None
    for tag in ("ok-1", "ok-2"):
        assert value(found, "sms_up", tag=tag) == 1
        assert statuses_of(found, tag) == expected_statuses(sim, tag)
        assert value(found, "sms_api_errors_total", tag=tag, reason="timeout") == 0


def test_a_failed_tag_stops_asking_for_its_other_pages(sim):
    sim.add_tag(campaign("casse", 300))  # 30 pages
    sim.set_fault("casse", "delay", seconds=0.02)
    sim.set_fault("casse", "page_error", page=2)
    client = SmsPartnerClient(make_config(sim, ["casse"], retries=0, concurrency=1).api)
    try:
        result = read_whole(client, ["casse"], time.monotonic() + 20)["casse"]
    finally:
        client.close()
    assert result.reason == "http_500"
    # page 1, page 2 (failed), at most the page that had already started: not the 27 others
    assert sim.stats()["by_tag"]["casse"] <= 4


def test_failed_tag_recovers_and_last_success_is_kept(sim):
    sim.add_tag(campaign("flaky", 12))
    sim.set_fault("flaky", "http_status", status=503, times=1)
    with serve(make_config(sim, ["flaky"], retries=0)) as url:
        first = samples(scrape(url))
        second = samples(scrape(url))
    assert value(first, "sms_up", tag="flaky") == 0
    assert value(first, "sms_last_success_timestamp_seconds", tag="flaky") is None
    assert value(second, "sms_up", tag="flaky") == 1
    assert value(second, "sms_api_errors_total", tag="flaky", reason="http_503") == 1
    assert abs(value(second, "sms_last_success_timestamp_seconds", tag="flaky") - time.time()) < 60


def test_keep_last_values_exports_the_last_good_counts_when_down(sim):
    sim.add_tag(campaign("garde", 12))
    config = make_config(sim, ["garde"], retries=0, collection={"keep_last_values": True})
    with serve(config) as url:
        good = statuses_of(samples(scrape(url)), "garde")
        sim.set_fault("garde", "http_status", status=500)
        found = samples(scrape(url))
    assert value(found, "sms_up", tag="garde") == 0
    assert statuses_of(found, "garde") == good


def test_wrong_key_is_api_code_10_for_every_tag(sim):
    sim.add_tag(campaign("t1", 3))
    sim.add_tag(campaign("t2", 3))
    config = make_config(sim, ["t1", "t2"], key="not-the-right-key")
    with serve(config) as url:
        found = samples(scrape(url))
    for tag in ("t1", "t2"):
        assert value(found, "sms_up", tag=tag) == 0
        assert value(found, "sms_api_errors_total", tag=tag, reason="api_code_10") == 1


def test_missing_key_is_api_code_1(sim):
    sim.add_tag(campaign("t1", 3))
    client = SmsPartnerClient(ApiConfig(url=sim.url, key="", max_requests_per_second=0))
    try:
        with pytest.raises(ApiCodeError) as info:
            client.fetch_page("t1")
    finally:
        client.close()
    assert info.value.code == 1


@pytest.mark.parametrize("status", [200, 401, 403])
def test_error_body_decides_whatever_the_http_status(sim, status):
    sim.error_http_status = status
    sim.add_tag(campaign("t1", 3))
    with serve(make_config(sim, ["t1"], key="bad-key")) as url:
        found = samples(scrape(url))
    assert value(found, "sms_api_errors_total", tag="t1", reason="api_code_10") == 1


def test_non_json_body_is_invalid_response(sim):
    sim.add_tag(campaign("html", 3))
    sim.add_tag(campaign("fine", 3))
    sim.set_fault("html", "html")
    with serve(make_config(sim, ["html", "fine"])) as url:
        found = samples(scrape(url))
    assert value(found, "sms_up", tag="html") == 0
    assert value(found, "sms_api_errors_total", tag="html", reason="invalid_response") == 1
    assert value(found, "sms_up", tag="fine") == 1


def test_unknown_tag_is_up_with_zero_counts(sim):
    with serve(make_config(sim, ["jamais-vu"])) as url:
        found = samples(scrape(url))
    assert value(found, "sms_up", tag="jamais-vu") == 1
    assert statuses_of(found, "jamais-vu") == {"Delivered": 0, "Not delivered": 0, "Waiting": 0}
    assert value(found, "sms_stop_total", tag="jamais-vu") == 0


def test_retry_after_on_429_is_honoured_then_succeeds(sim):
    sim.add_tag(campaign("limite", 5))
    sim.set_fault("limite", "rate_limit", retry_after=1, times=1)
    with serve(make_config(sim, ["limite"], retries=2)) as url:
        started = time.monotonic()
        found = samples(scrape(url))
        elapsed = time.monotonic() - started
    assert value(found, "sms_up", tag="limite") == 1
    assert elapsed >= 0.9  # waited for Retry-After before asking again
    assert sim.stats()["by_tag"]["limite"] == 2


def test_concurrent_scrapes_share_one_round(sim):
    for name in ("c1", "c2", "c3"):
        sim.add_tag(campaign(name, 25))  # 3 pages each
    sim.latency = 0.2
    with serve(make_config(sim, ["c1", "c2", "c3"], concurrency=4)) as url:
        results: list[str] = []

        def one() -> None:
            results.append(scrape(url))

        threads = [threading.Thread(target=one) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(20)
    assert len(results) == 8
    assert sim.stats()["requests"] == 9  # one round: 3 tags x 3 pages, not 8 rounds
    assert sim.stats()["max_in_flight"] <= 4
    for text in results:
        assert sum(statuses_of(samples(text), "c1").values()) == 25


def test_min_interval_reuses_a_recent_round(sim):
    sim.add_tag(campaign("m", 5))
    config = make_config(sim, ["m"], collection={"min_interval": "30s"})
    with serve(config) as url:
        scrape(url)
        scrape(url)
    assert sim.stats()["requests"] == 1


def test_scrape_mode_asks_upstream_on_every_scrape_by_default(sim):
    sim.add_tag(campaign("m", 5))
    with serve(make_config(sim, ["m"])) as url:
        scrape(url)
        scrape(url)
    assert sim.stats()["requests"] == 2


def test_round_stays_within_the_scrape_timeout(sim):
    sim.add_tag(campaign("lent", 5))
    sim.add_tag(campaign("rapide", 5))
    sim.set_fault("lent", "delay", seconds=5)
    with serve(make_config(sim, ["lent", "rapide"], timeout="10s")) as url:
        started = time.monotonic()
        found = samples(scrape(url, headers={"X-Prometheus-Scrape-Timeout-Seconds": "1.5"}))
        elapsed = time.monotonic() - started
    assert elapsed < 1.5
    assert value(found, "sms_up", tag="lent") == 0
    assert value(found, "sms_up", tag="rapide") == 1
    lent_errors = {
        dict(labels)["reason"]: v
        for (name, labels), v in found.items()
        if name == "sms_api_errors_total" and dict(labels)["tag"] == "lent" and v
    }
    assert set(lent_errors) <= {"deadline", "timeout"} and lent_errors


def test_background_mode_serves_cached_values_without_asking_upstream(sim):
    sim.add_tag(campaign("fond", 15, send_spread=10, report_delay=30))
    config = make_config(sim, ["fond"], collection={"mode": "background", "interval": "0.3s"})
    with serve(config) as url:
        first = scrape(url)
        assert "cached" in first
        sim.advance(3600)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            found = samples(scrape(url))
            if statuses_of(found, "fond") == expected_statuses(sim, "fond"):
                break
            time.sleep(0.1)
        else:
            pytest.fail("background refresh never caught up with the simulator")
        requests_before = sim.stats()["requests"]
        sim.latency = 2.0  # a scrape must not wait for upstream
        started = time.monotonic()
        scrape(url)
        assert time.monotonic() - started < 1.0
    assert requests_before >= 2


def test_used_as_a_library_in_any_registry(sim):
    sim.add_tag(campaign("lib", 12))
    registry = CollectorRegistry()
    with Exporter(make_config(sim, ["lib"])) as exporter:
        registry.register(exporter.collector)
        text = generate_latest(registry).decode()
    assert sum(statuses_of(samples(text), "lib").values()) == 12


def test_every_family_has_help_and_names_follow_the_contract(sim):
    sim.add_tag(campaign("h", 3))
    with serve(make_config(sim, ["h"])) as url:
        text = scrape(url)
    for line in text.splitlines():
        if line.startswith("# TYPE"):
            name = line.split()[2]
            assert f"# HELP {name} " in text
    assert "# TYPE sms_status_total gauge" in text
    assert "# TYPE sms_stop_total gauge" in text
    assert (
        value(
            samples(text),
            "sms_exporter_build_info",
            version=__import__("smsp_exporter").__version__,
        )
        == 1
    )


@pytest.mark.parametrize("fmt", ["logfmt", "json"])
def test_key_and_phone_numbers_never_leave_the_process(sim, fmt):
    stream = io.StringIO()
    setup_logging("debug", fmt, stream=stream)
    add_secret(API_KEY)
    try:
        sim.set_messages("prive", [Message("+33612345678", "Delivered", True, 1_700_000_000)])
        sim.add_tag(campaign("casse", 3))
        sim.add_tag(campaign("coupe", 3))
        sim.set_fault("casse", "http_status", status=500)
        sim.set_fault("coupe", "reset")
        answers = []
        with serve(make_config(sim, ["prive", "casse", "coupe"], retries=1)) as url:
            for path in ("/metrics", "/", "/healthz", "/nope"):
                response = requests.get(url + path, timeout=20)
                answers.append(response.text + str(response.headers))
        sim.stop()  # connection refused now
        with serve(make_config(sim, ["prive"], retries=0)) as url:
            answers.append(scrape(url))
    finally:
        logs = stream.getvalue()
        setup_logging("info", "logfmt")
        clear_secrets()
    everything = logs + "".join(answers)
    assert "GET /v1/bulk-status-by-tag" in logs or "bulk-status-by-tag" in logs  # urllib3 spoke
    assert API_KEY not in everything
    assert "LEAKCANARY" not in everything
    assert "+33612345678" not in everything and "33612345678" not in everything
    assert "collecting tag failed" in logs


def test_scrape_duration_is_each_tags_own(sim):
    # It was the whole round's duration for every tag: a slow tag made every tag look slow.
    sim.add_tag(campaign("slow", 25))
    sim.add_tag(campaign("quick", 25))
    sim.set_fault("slow", "delay", seconds=1.0, page=2)
    with serve(make_config(sim, ["slow", "quick"], concurrency=2)) as url:
        found = samples(scrape(url))
    slow = value(found, "sms_scrape_duration_seconds", tag="slow")
    quick = value(found, "sms_scrape_duration_seconds", tag="quick")
    assert slow >= 1.0
    assert quick < slow / 2
