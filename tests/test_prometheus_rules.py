"""The bundled Prometheus rules and Alertmanager config, checked by the real promtool and
amtool: syntax, the rule unit tests in deploy/prometheus/tests, and what every alert must carry."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import yaml

from .monitoring import (
    ALERT_RULES,
    ALERTMANAGER_YML,
    PROMETHEUS_DIR,
    PROMETHEUS_YML,
    RECORDING_RULES,
    RULE_FILES,
    RULE_TESTS,
    RUNBOOK,
    alert_rules,
    binary,
)

PER_EXPORTER_ALERTS = {
    "SmsApiKeyRejected",
    "SmsExporterDown",
    "SmsExporterAbsent",
    "SmsAccountCreditRunningOut",
    "SmsAccountCreditLow",
    "SmsAccountCreditUnreadable",
}


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=60)


def test_promtool_check_rules():
    assert {RECORDING_RULES, ALERT_RULES} <= set(RULE_FILES)
    result = run(binary("promtool"), "check", "rules", *map(str, RULE_FILES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_example_prometheus_loads_every_rule_file():
    rule_files = yaml.safe_load(PROMETHEUS_YML.read_text())["rule_files"]
    assert sorted(PROMETHEUS_DIR / name for name in rule_files) == RULE_FILES


def test_every_rule_file_is_unit_tested():
    tested = {
        (path.parent / name).resolve()
        for path in RULE_TESTS
        for name in yaml.safe_load(path.read_text())["rule_files"]
    }
    assert tested == set(RULE_FILES)


def test_promtool_check_example_config():
    result = run(binary("promtool"), "check", "config", str(PROMETHEUS_YML))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_rule_unit_tests_pass():
    assert RULE_TESTS
    result = run(binary("promtool"), "test", "rules", *map(str, RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_rule_unit_tests_catch_a_changed_threshold(tmp_path):
    """The unit tests can fail: the warning threshold moved from 10% to 20% breaks them."""
    shutil.copytree(PROMETHEUS_DIR / "rules", tmp_path / "rules")
    shutil.copytree(PROMETHEUS_DIR / "tests", tmp_path / "tests")
    alerts = tmp_path / "rules" / ALERT_RULES.name
    text = alerts.read_text()
    assert text.count("tag:sms_not_delivered:ratio > 0.10") == 1
    alerts.write_text(
        text.replace("tag:sms_not_delivered:ratio > 0.10", "tag:sms_not_delivered:ratio > 0.20")
    )
    result = run(binary("promtool"), "test", "rules", *map(str, (tmp_path / "tests").glob("*.yml")))
    assert result.returncode != 0
    assert "SmsNotDeliveredShareHigh" in result.stdout + result.stderr


def test_every_alert_is_unit_tested_firing_and_silent():
    firing, silent = set(), set()
    for path in RULE_TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                (firing if check.get("exp_alerts") else silent).add(check["alertname"])
    names = {rule["alert"] for rule in alert_rules()}
    assert names - firing == set(), "alerts never tested firing"
    assert names - silent == set(), "alerts never tested silent or resolved"


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda rule: rule["alert"])
def test_alert_labels_and_annotations(rule):
    assert rule["labels"]["severity"] in ("warning", "critical")
    annotations = rule["annotations"]
    assert set(annotations) >= {"summary", "description", "runbook_url"}
    assert "$value" in annotations["description"]
    if rule["alert"] not in PER_EXPORTER_ALERTS:
        assert "$labels.tag" in annotations["summary"]
        assert "$labels.tag" in annotations["description"]
    anchor = rule["alert"].lower()
    assert annotations["runbook_url"] == f"docs/runbook.md#{anchor}"
    headings = re.findall(r"^## (\S+)$", RUNBOOK.read_text(encoding="utf-8"), re.MULTILINE)
    assert rule["alert"] in headings, f"docs/runbook.md has no section '## {rule['alert']}'"


def test_amtool_check_config():
    result = run(binary("amtool"), "check-config", str(ALERTMANAGER_YML))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        (
            ("severity=critical", "alertname=SmsNotDeliveredShareCritical", "tag=promo"),
            "sms-critical",
        ),
        (("severity=warning", "alertname=SmsNotDeliveredShareHigh", "tag=promo"), "sms-warning"),
        (("severity=critical", "alertname=SmsExporterDown"), "sms-critical"),
    ],
)
def test_alertmanager_routes_by_severity(labels, receiver):
    result = run(
        binary("amtool"), "config", "routes", "test", f"--config.file={ALERTMANAGER_YML}", *labels
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == receiver


def test_alertmanager_groups_by_tag():
    route = yaml.safe_load(ALERTMANAGER_YML.read_text())["route"]
    assert "tag" in route["group_by"]
