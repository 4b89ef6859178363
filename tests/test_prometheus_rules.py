"""The bundled Prometheus rules and Alertmanager config, checked by the real promtool and
amtool: syntax, the rule unit tests in deploy/prometheus/tests, and what every alert must carry."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from urllib.parse import urlsplit

import pytest
import yaml

from .monitoring import (
    ALERT_RULES,
    ALERTMANAGER_YML,
    PROMETHEUS_DIR,
    PROMETHEUS_YML,
    RECORDING_RULES,
    ROOT,
    RULE_FILES,
    RULE_TESTS,
    RUNBOOK,
    alert_rules,
    binary,
)

PER_EXPORTER_ALERTS = {
    "SmsApiKeyRejected",
    "SmsExporterDown",
    "SmsExporterBehind",
    "SmsExporterAbsent",
    "SmsAccountCreditRunningOut",
    "SmsAccountCreditLow",
    "SmsAccountCreditExhausted",
    "SmsAccountCreditUnreadable",
}
# Per tag, but on /probe targets, whose `instance` is the tag (they have no `tag` label).
PER_PROBE_TARGET_ALERTS = {"SmsProbeTargetDown"}


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


def promtool_test_with(tmp_path, path, old: str, new: str, tests: str = "*.test.yml") -> str:
    """Run the unit tests (those matching `tests`) against a copy of the rules where `old`
    (found exactly once in the rule file `path`) is replaced by `new`; promtool's output,
    which must be a failure."""
    shutil.copytree(PROMETHEUS_DIR / "rules", tmp_path / "rules")
    shutil.copytree(PROMETHEUS_DIR / "tests", tmp_path / "tests")
    copy = tmp_path / "rules" / path.name
    text = copy.read_text()
    assert text.count(old) == 1, old
    copy.write_text(text.replace(old, new))
    result = run(binary("promtool"), "test", "rules", *map(str, (tmp_path / "tests").glob(tests)))
    assert result.returncode != 0, "the unit tests pass without what they should test"
    return result.stdout + result.stderr


def test_rule_unit_tests_catch_a_changed_threshold(tmp_path):
    """The unit tests can fail: the warning threshold moved from 10% to 20% breaks them."""
    out = promtool_test_with(
        tmp_path,
        ALERT_RULES,
        "tag:sms_not_delivered:ratio1h > 0.10",
        "tag:sms_not_delivered:ratio1h > 0.20",
        "smsp-exporter.test.yml",
    )
    assert "SmsNotDeliveredShareHigh" in out


# Each guard of the recent recording rules is there for a jump case of smsp-recent.test.yml and
# smsp-exporter.test.yml: without it, they fail.
@pytest.mark.parametrize(
    ("old", "new", "symptom", "tests"),
    [
        # A count that dips and climbs back (an API answering a partial list): no false alert.
        (
            'sum without (status) (resets(sms_status_total{status!="Waiting"}[30m])) > 0\n'
            "              or ",
            "",
            'tag="dip"',
            "smsp-recent.test.yml",
        ),
        # A read cut short for longer than that: no false alert.
        (
            "              or min_over_time(sms_collection_complete[15m]) == 0\n",
            "",
            'tag="cut"',
            "smsp-recent.test.yml",
        ),
        # A tag Prometheus has seen for less than 3 hours: its stuck share would be too high.
        (
            "present_over_time(tag:sms_messages_final:sum[15m] offset 2h45m)",
            "tag:sms_messages_final:sum",
            'tag="fresh"',
            "smsp-exporter.test.yml",
        ),
    ],
    ids=["dip", "cut-short", "stuck-history"],
)
def test_recent_rule_guards_are_tested(tmp_path, old, new, symptom, tests):
    assert symptom in promtool_test_with(tmp_path, RECORDING_RULES, old, new, tests)


def test_rule_unit_tests_cover_failed_collections():
    """Issue: one failed collection (the tag's series go stale) must not resolve an alert.
    The unit tests of the delivery and stuck alerts feed `stale` samples."""
    for name in ("smsp-recent.test.yml", "smsp-exporter.test.yml"):
        assert " stale " in (PROMETHEUS_DIR / "tests" / name).read_text()


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
    if rule["alert"] in PER_PROBE_TARGET_ALERTS:
        assert "$labels.instance" in annotations["summary"]
    elif rule["alert"] not in PER_EXPORTER_ALERTS:
        assert "$labels.tag" in annotations["summary"]
        assert "$labels.tag" in annotations["description"]
    anchor = rule["alert"].lower()
    # Absolute, so that Prometheus and Alertmanager show a link (issue: a relative path is not).
    base, _, found = annotations["runbook_url"].partition("#")
    assert found == anchor
    assert urlsplit(base).scheme == "https" and urlsplit(base).netloc
    runbook = RUNBOOK.read_text(encoding="utf-8")
    headings = re.findall(r"^## (\S+)$", runbook, re.MULTILINE)
    assert rule["alert"] in headings, f"docs/runbook.md has no section '## {rule['alert']}'"
    # The section says how the alert behaves across a failed collection, a reload and a probe
    # target going down (issue 16).
    section = runbook.split(f"## {rule['alert']}\n", 1)[1].split("\n## ", 1)[0]
    across = " ".join(section[section.index("*Across a failed") :].split())
    assert "reload" in across and "probe target going down" in across, rule["alert"]


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


def test_runbook_url_base_is_set_everywhere_by_one_command(tmp_path):
    """generate.py --runbook-url rewrites every alert's link in the rule files, their unit
    tests and the PrometheusRule; the unit tests still pass; --check notices a mixed base."""
    shutil.copytree(ROOT / "deploy" / "kubernetes", tmp_path / "kubernetes")
    shutil.copytree(PROMETHEUS_DIR, tmp_path / "prometheus")
    generator = str(tmp_path / "kubernetes" / "generate.py")
    base = "https://wiki.example.org/ops/smsp-exporter/runbook"
    result = run(sys.executable, generator, "--runbook-url", base)
    assert result.returncode == 0, result.stderr
    rules = tmp_path / "prometheus" / "rules"
    urls = [
        rule["annotations"]["runbook_url"]
        for path in rules.glob("*.yml")
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    ]
    assert urls and all(url == f"{base}#" + url.partition("#")[2] for url in urls)
    generated = (tmp_path / "kubernetes" / "prometheusrule.yaml").read_text()
    assert generated.count(f"{base}#") == len(urls)
    assert "# Alerting rules of smsp-exporter" in (rules / ALERT_RULES.name).read_text()
    tests = sorted((tmp_path / "prometheus" / "tests").glob("*.test.yml"))
    assert all(base in path.read_text() for path in tests)
    result = run(binary("promtool"), "test", "rules", *map(str, tests))
    assert result.returncode == 0, result.stdout + result.stderr
    assert run(sys.executable, generator, "--check").returncode == 0
    # One alert pointing elsewhere, or a relative base: refused.
    alerts = rules / ALERT_RULES.name
    alerts.write_text(alerts.read_text().replace(f"{base}#smsexporterdown", "x#smsexporterdown"))
    assert run(sys.executable, generator, "--check").returncode != 0
    assert run(sys.executable, generator, "--runbook-url", "docs/runbook.md").returncode != 0


def readme_promql() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return re.findall(r"```promql\n(.*?)```", text, re.DOTALL)


@pytest.mark.parametrize("expr", readme_promql(), ids=lambda e: e.split("\n")[0][:40])
def test_readme_queries_give_no_nan(tmp_path, expr):
    """The README's queries, run by promtool on a tag with reports and a tag with none yet:
    they answer something, and no NaN (issue: 0/0 for the tag with no report)."""
    expr = " ".join(expr.split())
    status = 'sms_status_total{{job="smsp-exporter",instance="exp:9847",tag="{}",status="{}"}}'
    series = [
        (status.format("a", "Delivered"), "0+9x30"),
        (status.format("a", "Not delivered"), "0+1x30"),
        (status.format("a", "Waiting"), "5x30"),
        (status.format("new", "Delivered"), "0x30"),
        (status.format("new", "Not delivered"), "0x30"),
        (status.format("new", "Waiting"), "20x30"),
    ]
    test = {
        "rule_files": [str(path) for path in RULE_FILES],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [{"series": s, "values": v} for s, v in series],
                "promql_expr_test": [
                    {"expr": f"count(({expr}) != ({expr}))", "eval_time": "20m", "exp_samples": []},
                    {"expr": f"absent({expr})", "eval_time": "20m", "exp_samples": []},
                ],
            }
        ],
    }
    path = tmp_path / "readme.test.yml"
    path.write_text(yaml.safe_dump(test))
    result = run(binary("promtool"), "test", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_inhibitions_name_existing_alerts():
    """Every alert name an inhibition matches exists (a typo would silently inhibit nothing),
    and the /probe cases are covered: the key alert per probe job, a replica down."""
    names = {rule["alert"] for rule in alert_rules()}
    inhibit = yaml.safe_load(ALERTMANAGER_YML.read_text())["inhibit_rules"]
    for rule in inhibit:
        for matcher in rule["source_matchers"] + rule["target_matchers"]:
            key, _op, value = re.fullmatch(r'(\w+) (=~|=) "(.*)"', matcher).groups()
            if key == "alertname":
                assert set(value.split("|")) <= names, matcher
    pairs = {(r["source_matchers"][0], r["target_matchers"][0], tuple(r["equal"])) for r in inhibit}
    assert (
        'alertname = "SmsExporterDown"',
        'alertname = "SmsProbeTargetDown"',
        ("replica",),
    ) in pairs
    assert any(
        r["source_matchers"] == ['alertname = "SmsApiKeyRejected"', 'job =~ "smsp-probe.*"']
        and r["equal"] == ["job"]
        for r in inhibit
    )
