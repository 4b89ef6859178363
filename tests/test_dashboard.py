"""The Grafana dashboard: its committed JSON is what grafana/dashboard.py generates, and it is
built to load both through Grafana's UI import and through file provisioning."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter

import yaml

from .monitoring import (
    DASHBOARD_JSON,
    RECORDING_RULES,
    ROOT,
    binary,
    dashboard_generator,
    load_dashboard,
    panels,
    substitute,
)

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


def test_committed_json_is_what_the_generator_builds():
    assert DASHBOARD_JSON.read_text(encoding="utf-8") == dashboard_generator().render(), (
        "grafana/dashboards/smsp-exporter.json drifted: run python grafana/dashboard.py --write"
    )


def test_check_mode_fails_on_drift(tmp_path):
    generator = dashboard_generator()
    stale = tmp_path / "smsp-exporter.json"
    stale.write_text(generator.render().replace("Delivered, last hour", "Delivred, last hour"))
    generator.PATH = stale
    assert generator.main(["--check"]) == 1
    stale.write_text(generator.render())
    assert generator.main(["--check"]) == 0


def test_generator_runs_as_a_script():
    out = subprocess.run(
        [sys.executable, str(ROOT / "grafana" / "dashboard.py")],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert json.loads(out) == load_dashboard()


def test_structure():
    board = load_dashboard()
    assert board["uid"] == "smsp-exporter"
    assert "__inputs" not in board  # provisioning would not substitute them
    ids = [panel["id"] for panel in panels(board)]
    assert len(ids) == len(set(ids)), Counter(ids)
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("job", "instance", "tag"):
        assert variables[name]["type"] == "query"
        assert variables[name]["datasource"] == DATASOURCE
        assert variables[name]["includeAll"] and variables[name]["allValue"] == ".*"
    assert variables["tag"]["multi"]
    queries = 0
    for panel in panels(board):
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]
            assert target["refId"]
            queries += 1
            if "tag" in target["expr"] and "sms_api_requests" not in target["expr"]:
                assert 'tag=~"$tag"' in target["expr"], panel["title"]
    assert queries >= 12


def test_panels_fit_the_grid():
    for panel in panels(load_dashboard()):
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]


def test_no_hard_coded_datasource_uid():
    text = DASHBOARD_JSON.read_text(encoding="utf-8")
    uids = set(re.findall(r'"uid": "([^"]*)"', text))
    assert uids == {"smsp-exporter", "${datasource}"}


def test_panels_cover_what_operators_ask_for():
    exprs = " ".join(t["expr"] for p in panels(load_dashboard()) for t in p.get("targets", []))
    for needed in (
        "tag:sms_not_delivered:ratio",
        "tag:sms_delivered:ratio",
        "sms_status_total",
        "tag:sms_messages_waiting:sum",
        "sms_stop_total",
        "sms_up",
        "sms_scrape_duration_seconds",
        "sms_api_errors_total",
        "sms_oldest_waiting_timestamp_seconds",
        "sms_last_status_timestamp_seconds",
        "sms_account_credits",
        "sms_account_balance",
        "tag:sms_not_delivered:ratio15m",
        "tag:sms_not_delivered:ratio1h",
        "tag:sms_delivered:ratio1h",
        "tag:sms_messages_final:delta15m",
        "sms_waiting_age_seconds_bucket",
        "tag:sms_waiting_30m_3h:ratio",
        "account:sms_account_credits_spent:rate6h",
        "sms_collection_pages_fetched_total",
        "sms_collection_pages_reused_total",
        "sms_collection_listing_order",
        "sms_collection_first_read_ratio",
        "sms_collection_fallbacks_total",
    ):
        assert needed in exprs


def test_recent_shares_come_first():
    """During an incident the operator looks at what happens now: the first panel of the
    Delivery row is a recent share, the lifetime share beside it."""
    board = load_dashboard()
    titles = [p["title"] for p in board["panels"]]
    first = board["panels"][titles.index("Delivery") + 1]
    assert "ratio1h" in first["targets"][0]["expr"] or "ratio15m" in first["targets"][0]["expr"]


def test_per_tag_queries_do_not_add_up_targets():
    """A tag scraped by two targets (its exporter's /metrics and a /probe job) is counted once:
    no per-tag panel sums over targets (live: tests/test_dashboard_live.py). Counters of
    collection errors and requests do add up: each target collects on its own."""
    for panel in panels(load_dashboard()):
        for target in panel.get("targets", []):
            if "increase(" in target["expr"] or "rate(" in target["expr"]:
                continue
            assert not re.search(r"sum by \((tag|tag, \w+)\)", target["expr"]), panel["title"]


def test_provisioning_points_at_the_dashboards_folder():
    provider = yaml.safe_load(
        (ROOT / "grafana/provisioning/dashboards/smsp-exporter.yml").read_text()
    )
    assert provider["apiVersion"] == 1
    assert provider["providers"][0]["type"] == "file"
    datasource = yaml.safe_load(
        (ROOT / "grafana/provisioning/datasources/prometheus.yml").read_text()
    )
    assert datasource["datasources"][0]["type"] == "prometheus"


def test_hours_of_credit_panel(tmp_path):
    """The 'Hours of credit left' query, run by promtool with the recording rules: 0 (not "No
    data") once the credit has sat at 0 for hours; the hours left across a partial top-up (not
    "not being spent"); the cap when nothing is spent."""
    (panel,) = [p for p in panels(load_dashboard()) if p["title"] == "Hours of credit left"]
    expr = substitute(panel["targets"][0]["expr"], {"job": ".*", "instance": ".*"})
    cap = dashboard_generator().CREDIT_HOURS_CAP
    credits = 'sms_account_credits{{job="smsp-exporter",instance="{}",kind="sms"}}'
    test = {
        "rule_files": [str(RECORDING_RULES)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    # Spent down to 0 in the first hour, then 0 for 9 hours.
                    {"series": credits.format("zero"), "values": "600-10x60 0x540"},
                    # 2 a minute; 300 left at 4h10m, 1000 added: 1202 left at 5h, 10 h (10.1:
                    # the minute of the top-up counts no spending).
                    {"series": credits.format("topped"), "values": "800-2x250 1300-2x350"},
                    {"series": credits.format("idle"), "values": "5000x600"},
                ],
                "promql_expr_test": [
                    {
                        "expr": f"round({expr}, 0.1)",
                        "eval_time": "10h",
                        "exp_samples": [
                            {
                                "labels": '{instance="zero",job="smsp-exporter",kind="sms"}',
                                "value": 0,
                            },
                            {
                                "labels": '{instance="topped",job="smsp-exporter",kind="sms"}',
                                "value": 5,
                            },
                            {
                                "labels": '{instance="idle",job="smsp-exporter",kind="sms"}',
                                "value": cap,
                            },
                        ],
                    },
                    {
                        "expr": f"round({expr}, 0.1)",
                        "eval_time": "5h",
                        "exp_samples": [
                            {
                                "labels": '{instance="zero",job="smsp-exporter",kind="sms"}',
                                "value": 0,
                            },
                            {
                                "labels": '{instance="topped",job="smsp-exporter",kind="sms"}',
                                "value": 10.1,
                            },
                            {
                                "labels": '{instance="idle",job="smsp-exporter",kind="sms"}',
                                "value": cap,
                            },
                        ],
                    },
                ],
            }
        ],
    }
    path = tmp_path / "hours.test.yml"
    path.write_text(yaml.safe_dump(test))
    result = subprocess.run(
        [binary("promtool"), "test", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
