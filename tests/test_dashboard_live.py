"""The dashboard against a real Prometheus where a tag is scraped by two targets: its exporter's
/metrics (job smsp-exporter) and a /probe job (smsp-probe-0, whose instance is the tag), as in
deploy/prometheus/prometheus-sharded.yml. The job and instance variables must list the probe
job and the probed tag, and the delivery and account panels must show each tag once, with its
real counts (not twice them)."""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

import pytest
import yaml

from smsp_exporter.config import AccountConfig, config_from_dict

from .helpers import API_KEY, campaign, free_port, require_tool, serve
from .monitoring import RECORDING_RULES, PromAPI, load_dashboard, process, substitute, wait_for

pytestmark = pytest.mark.timeout(120)

# Rows whose panels show one series per tag (or per account series): the exporter-health row
# shows each target's own collection, where two lines for one tag are two collections.
ROWS = ("Delivery", "Account")


def rows(board: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    current = None
    for panel in board["panels"]:
        if panel["type"] == "row":
            current = panel["title"]
            found[current] = list(panel.get("panels", []))
        elif current is not None:
            found[current].append(panel)
    return found


def legend(template: str, labels: dict[str, str]) -> str:
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), template)


def variable_values(prom: PromAPI, board: dict[str, Any], name: str, values: dict) -> set[str]:
    (variable,) = [v for v in board["templating"]["list"] if v["name"] == name]
    match = re.fullmatch(r"label_values\((.+), (\w+)\)", variable["query"])
    assert match, variable["query"]
    return {s.get(match.group(2)) for s in prom.series(substitute(match.group(1), values))} - {None}


@pytest.fixture
def two_targets(sim, tmp_path):
    sim.add_tag(campaign("promo-a", 100, delivered=0.5, not_delivered=0.27))
    sim.add_tag(campaign("promo-b", 40))
    config = config_from_dict(
        {
            "api": {"url": sim.url, "key": API_KEY, "max_requests_per_second": 0},
            "tags": ["promo-a", "promo-b"],
            "probe": {"allowed_pattern": "promo-[a-z]+"},
        },
        env={},
    )
    config = replace(config, account=AccountConfig(enabled=True))
    with serve(config) as url:
        address = url.removeprefix("http://")
        prometheus_yml = {
            "global": {
                "scrape_interval": "1s",
                "scrape_timeout": "1s",
                "evaluation_interval": "1s",
            },
            "rule_files": [str(RECORDING_RULES)],
            "scrape_configs": [
                {"job_name": "smsp-exporter", "static_configs": [{"targets": [address]}]},
                {
                    "job_name": "smsp-probe-0",
                    "metrics_path": "/probe",
                    "static_configs": [{"targets": ["promo-a"]}],
                    "relabel_configs": [
                        {"source_labels": ["__address__"], "target_label": "__param_tag"},
                        {"source_labels": ["__param_tag"], "target_label": "instance"},
                        {"target_label": "__address__", "replacement": address},
                    ],
                },
            ],
        }
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(prometheus_yml))
        port = free_port()
        args = [
            require_tool("prometheus"),
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ]
        with process(args, tmp_path / "prometheus.log", f"http://127.0.0.1:{port}/-/ready"):
            prom = PromAPI(f"http://127.0.0.1:{port}")
            wait_for(
                "both targets scraped and the rules evaluated",
                lambda: (
                    len(prom.query('tag:sms_messages_waiting:sum{tag="promo-a"}')) == 2
                    and prom.query('sms_account_credits{kind="sms"}')
                ),
            )
            yield prom, address


def test_probe_jobs_and_probed_tags_are_in_the_variables(two_targets):
    prom, address = two_targets
    board = load_dashboard()
    assert variable_values(prom, board, "job", {}) == {"smsp-exporter", "smsp-probe-0"}
    assert variable_values(prom, board, "instance", {"job": "smsp-probe-0"}) == {"promo-a"}
    assert variable_values(prom, board, "instance", {"job": ".*"}) == {"promo-a", address}
    # With the probe job and its tag selected, the delivery panels show the tag.
    values = {"job": "smsp-probe-0", "instance": "promo-a", "tag": ".*"}
    waiting = [p for p in rows(board)["Delivery"] if p["title"] == "Waiting"]
    assert prom.query(substitute(waiting[0]["targets"][0]["expr"], values))


def test_a_tag_scraped_twice_shows_once(sim, two_targets):
    prom, _ = two_targets
    board = load_dashboard()
    values = {"job": ".*", "instance": ".*", "tag": ".*"}
    checked = 0
    for row in ROWS:
        for panel in rows(board)[row]:
            for target in panel.get("targets", []):
                found = prom.query(substitute(target["expr"], values))
                legends = [legend(target["legendFormat"], s["metric"]) for s in found]
                assert len(legends) == len(set(legends)), (panel["title"], legends)
                checked += 1
    assert checked >= 10
    (waiting,) = [p for p in rows(board)["Delivery"] if p["title"] == "Waiting"]
    found = prom.query(substitute(waiting["targets"][0]["expr"], values))
    by_tag = {s["metric"]["tag"]: float(s["value"][1]) for s in found}
    assert by_tag["promo-a"] == sim.expected("promo-a")["statuses"]["Waiting"]


def test_waiting_ages_stored_from_both_formats(sim, two_targets):
    """The gauge histogram as Prometheus stores it from /metrics (OpenMetrics: type
    gaugehistogram) and from /probe (the text format: a histogram with only _bucket, and gauges
    _gcount and _gsum): the same series, the same counts."""
    prom, _ = two_targets
    waiting = sim.expected("promo-a")["statuses"]["Waiting"]
    for job in ("smsp-exporter", "smsp-probe-0"):
        sel = f'job="{job}", tag="promo-a"'
        (count,) = prom.query(f"sms_waiting_age_seconds_gcount{{{sel}}}")
        assert float(count["value"][1]) == waiting
        (inf,) = prom.query(f'sms_waiting_age_seconds_bucket{{{sel}, le="+Inf"}}')
        assert float(inf["value"][1]) == waiting
        assert len(prom.query(f"sms_waiting_age_seconds_bucket{{{sel}}}")) == 10
        assert prom.query(f"sms_waiting_age_seconds_gsum{{{sel}}}")
