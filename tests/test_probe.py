"""/probe?tag=...: one tag on demand, restricted by the configuration."""

from __future__ import annotations

import gzip

import requests

from smsp_exporter.client import SmsPartnerClient
from smsp_exporter.config import config_from_dict
from smsp_exporter.probe import ProbeApp

from .helpers import API_KEY, campaign, samples, scrape, serve, statuses_of, value


def probe_config(sim, **extra):
    return config_from_dict(
        {
            "api": {"url": sim.url, "key": API_KEY, "max_requests_per_second": 0, "retries": 0},
            "probe": {"allowed_tags": ["listed"], "allowed_pattern": "promo-[a-z]+"},
            **extra,
        },
        env={},
    )


def probe(url, tag=None, **params):
    if tag is not None:
        params["tag"] = tag
    return requests.get(f"{url}/probe", params=params, timeout=20)


def test_probe_collects_only_the_asked_tag(sim):
    sim.add_tag(campaign("listed", 25, delivered=1.0, not_delivered=0.0, report_delay=0.001))
    sim.add_tag(campaign("promo-noel", 7))
    sim.advance(60)
    with serve(probe_config(sim)) as url:
        answer = probe(url, "listed", **{"unused": "1"})
        assert answer.status_code == 200
        assert answer.headers["Content-Type"].startswith("text/plain; version=")
        found = samples(answer.text)
        assert statuses_of(found, "listed") == {"Delivered": 25, "Not delivered": 0, "Waiting": 0}
        assert value(found, "sms_up", tag="listed") == 1
        assert {dict(labels)["tag"] for _, labels in found} == {"listed"}
        assert "sms_api_requests_total" not in answer.text  # exporter metrics stay on /metrics
        assert "sms_exporter_build_info" not in answer.text
        assert sim.stats()["by_tag"] == {"listed": 3}  # its 3 pages, nothing else
        assert probe(url, "promo-noel").status_code == 200  # by the pattern
        metrics = scrape(url)
    assert value(metrics, "sms_api_requests_total") == 4  # 3 + 1 pages, all through /probe
    assert not any("tag" in dict(labels) for _, labels in samples(metrics))  # no static tags


def test_probe_refuses_what_is_not_allowed_without_calling_the_api(sim):
    with serve(probe_config(sim)) as url:
        assert probe(url).status_code == 400
        assert probe(url, "").status_code == 400
        assert requests.get(f"{url}/probe?tag=listed&tag=x", timeout=5).status_code == 400
        for tag in ("other", "promo-noel2", "xpromo-noel", "promo-noel\n", "listed "):
            answer = probe(url, tag)
            assert answer.status_code == 403, tag
            assert tag.strip() not in answer.text or tag.strip() == "listed"
        assert requests.post(f"{url}/probe?tag=listed", timeout=5).status_code == 405
    assert sim.stats()["requests"] == 0


def test_probe_without_a_probe_section_refuses_everything(sim):
    sim.add_tag(campaign("a", 3))
    config = config_from_dict({"api": {"url": sim.url, "key": API_KEY}, "tags": ["a"]}, env={})
    with serve(config) as url:
        assert probe(url, "a").status_code == 403


def test_probe_error_counters_survive_between_probes(sim):
    sim.add_tag(campaign("listed", 3))
    sim.set_fault("listed", "http_status", status=500, times=2)
    with serve(probe_config(sim)) as url:
        probe(url, "listed")
        found = samples(probe(url, "listed").text)
        assert value(found, "sms_api_errors_total", tag="listed", reason="http_500") == 2
        assert value(found, "sms_up", tag="listed") == 0
        found = samples(probe(url, "listed").text)
    assert value(found, "sms_up", tag="listed") == 1
    assert value(found, "sms_api_errors_total", tag="listed", reason="http_500") == 2
    assert value(found, "sms_last_success_timestamp_seconds", tag="listed") is not None


def test_probe_state_is_bounded_whatever_the_pattern_admits(sim):
    # allowed_pattern admits any number of tags: the per-tag state (error counters, last good
    # counts, last success) must not grow with every tag ever probed.
    config = probe_config(sim)
    client = SmsPartnerClient(config.api)
    app = ProbeApp(config, client, max_tags=3)
    answers = []

    def get(tag):
        environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/probe", "QUERY_STRING": f"tag={tag}"}
        body = b"".join(app(environ, lambda status, headers: answers.append(status)))
        return samples(body.decode())

    try:
        sim.set_fault("listed", "http_status", status=500, times=1)
        get("listed")
        for name in "abcdefghij":
            get(f"promo-{name}")
            get("listed")  # probed all along: its counter is kept
        found = get("listed")
    finally:
        client.close()
    assert set(answers) == {"200 OK"}
    assert value(found, "sms_api_errors_total", tag="listed", reason="http_500") == 1
    kept = app.poller
    for state in (kept._errors, kept._truncations, kept._last_good, kept._last_success):
        assert set(state) <= {"listed", "promo-i", "promo-j"}, state


def test_probe_answers_are_negotiated_like_metrics(sim):
    sim.add_tag(campaign("listed", 5))
    with serve(probe_config(sim)) as url:
        open_metrics = requests.get(
            f"{url}/probe",
            params={"tag": "listed"},
            headers={"Accept": "application/openmetrics-text; version=1.0.0"},
            timeout=20,
        )
        assert open_metrics.headers["Content-Type"].startswith("application/openmetrics-text")
        assert open_metrics.text.endswith("# EOF\n")
        zipped = requests.get(
            f"{url}/probe",
            params={"tag": "listed"},
            headers={"Accept-Encoding": "gzip"},
            stream=True,
            timeout=20,
        )
        assert zipped.headers["Content-Encoding"] == "gzip"
        assert b'sms_up{tag="listed"} 1.0' in gzip.decompress(zipped.raw.read())
        head = requests.head(f"{url}/probe", params={"tag": "listed"}, timeout=20)
        assert head.status_code == 200 and head.content == b""
