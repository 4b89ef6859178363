"""The Grafana dashboard: its committed JSON is what grafana/dashboard.py generates, and it is
built to load both through Grafana's UI import and through file provisioning."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter

import yaml

from .monitoring import DASHBOARD_JSON, ROOT, dashboard_generator, load_dashboard, panels

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


def test_committed_json_is_what_the_generator_builds():
    assert DASHBOARD_JSON.read_text(encoding="utf-8") == dashboard_generator().render(), (
        "grafana/dashboards/smsp-exporter.json drifted: run python grafana/dashboard.py --write"
    )


def test_check_mode_fails_on_drift(tmp_path):
    generator = dashboard_generator()
    stale = tmp_path / "smsp-exporter.json"
    stale.write_text(generator.render().replace("Delivered share", "Delivred share"))
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
        "sms_collection_pages_fetched_total",
        "sms_collection_pages_reused_total",
        "sms_collection_listing_order",
        "sms_collection_first_read_ratio",
        "sms_collection_fallbacks_total",
    ):
        assert needed in exprs


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
