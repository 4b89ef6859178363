"""End to end: simulator -> exporter -> a real Prometheus (with the repo's rules) -> a real
Alertmanager (with the repo's routes and inhibitions) -> a webhook receiver run by this test.

One campaign's Not delivered share is driven over the thresholds; the critical alert must
reach the critical receiver with the right labels, the warning must be inhibited, the healthy
campaign must raise nothing, and the alert must resolve once the campaign recovers. In the same
run, every query of every dashboard panel must return data (the exporter reads the account's
credit, and every tag has a few messages that stay Waiting).

What is not verbatim, and why: the alert rules are loaded from a copy whose `for:` durations
are divided by 60 (15m -> 15s), and the Alertmanager config from a copy with short group
timers and receivers pointed at this test's webhook. The test asserts the copies differ from
the repo's files in nothing else. The `for:` semantics themselves are unit-tested at full length
by promtool (tests/test_prometheus_rules.py).
"""

from __future__ import annotations

import contextlib
import copy
import json
import re
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from smsp_exporter.config import AccountConfig
from smsp_exporter.simulator import Simulator, TagSpec

from .helpers import API_KEY, free_port, make_config, serve
from .monitoring import (
    ALERT_RULES,
    ALERTMANAGER_YML,
    PROMETHEUS_YML,
    RECORDING_RULES,
    RULE_FILES,
    binary,
    load_dashboard,
    panels,
    substitute,
)

JOB = "smsp-exporter"
FOR_SCALE = 60  # the copy's `for:` are the repo's divided by this
HEALTHY = TagSpec("healthy", 200, delivered=0.96, not_delivered=0.03, stop=0.05, send_spread=0)
FAILING = TagSpec("failing", 200, delivered=0.40, not_delivered=0.59, stop=0.05, send_spread=0)
RECOVERED = TagSpec("failing", 200, delivered=0.97, not_delivered=0.02, stop=0.05, send_spread=0)
ALL_REPORTS_IN = 3 * 86400.0  # simulated time past the 48 h cap on report delays


def wait_for(what: str, check: Callable[[], Any], timeout: float = 45.0) -> Any:
    """Poll `check` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(requests.RequestException):
            result = check()
            if result:
                return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.25)


@contextlib.contextmanager
def process(args: list[str], log: Path, ready_url: str) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
    try:

        def ready() -> bool:
            if proc.poll() is not None:
                pytest.fail(f"{args[0]} exited {proc.returncode}:\n{log.read_text()[-3000:]}")
            return requests.get(ready_url, timeout=2).status_code == 200

        wait_for(f"{args[0]} to be ready", ready, timeout=30)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


class Webhook:
    """Alertmanager webhook receiver on loopback: keeps (receiver path, payload) pairs."""

    def __init__(self) -> None:
        self.received: list[tuple[str, dict[str, Any]]] = []
        lock = threading.Lock()
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with lock:
                    received.append((self.path.strip("/"), json.loads(body)))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def alerts(self) -> list[tuple[str, dict[str, Any]]]:
        """(receiver, alert) for every alert of every notification received so far."""
        return [
            (path, alert) for path, payload in list(self.received) for alert in payload["alerts"]
        ]

    def __enter__(self) -> Webhook:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def seconds(duration: str) -> int:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    return sum(int(n) * units[u] for n, u in re.findall(r"(\d+)([smhd])", duration))


def scaled_alert_rules(path: Path) -> str:
    """The repo's alert rules with every `for:` divided by FOR_SCALE, nothing else changed."""
    original = ALERT_RULES.read_text(encoding="utf-8")
    scaled = re.sub(
        r"^(\s+for: )(\S+)$",
        lambda m: f"{m.group(1)}{max(1, seconds(m.group(2)) // FOR_SCALE)}s",
        original,
        flags=re.MULTILINE,
    )
    before, after = yaml.safe_load(original), yaml.safe_load(scaled)
    for group_before, group_after in zip(before["groups"], after["groups"], strict=True):
        for rule_before, rule_after in zip(
            group_before["rules"], group_after["rules"], strict=True
        ):
            if "for" in rule_before:
                expected = max(1, seconds(rule_before.pop("for")) // FOR_SCALE)
                assert seconds(rule_after.pop("for")) == expected
    assert before == after
    path.write_text(scaled, encoding="utf-8")
    return str(path)


def alertmanager_config(path: Path, webhook_url: str) -> str:
    """The repo's Alertmanager config: same routes and inhibitions, short group timers,
    every receiver a webhook to this test at /<receiver name>."""
    original = yaml.safe_load(ALERTMANAGER_YML.read_text(encoding="utf-8"))
    config = copy.deepcopy(original)

    def shorten(route: dict[str, Any]) -> None:
        for key, value in (
            ("group_wait", "1s"),
            ("group_interval", "1s"),
            ("repeat_interval", "1h"),
        ):
            if key in route:
                route[key] = value
        for child in route.get("routes", []):
            shorten(child)

    shorten(config["route"])
    config["receivers"] = [
        {
            "name": r["name"],
            "webhook_configs": [{"url": f"{webhook_url}/{r['name']}", "send_resolved": True}],
        }
        for r in original["receivers"]
    ]
    assert config["inhibit_rules"] == original["inhibit_rules"]
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return str(path)


def prometheus_config(path: Path, exporter: str, alertmanager: str, alert_rules: str) -> str:
    """The repo's example prometheus.yml with 1 s intervals and this test's targets."""
    config = yaml.safe_load(PROMETHEUS_YML.read_text(encoding="utf-8"))
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    assert sorted([RECORDING_RULES, ALERT_RULES]) == RULE_FILES  # all of them, below
    config["rule_files"] = [str(RECORDING_RULES), alert_rules]
    config["alerting"]["alertmanagers"][0]["static_configs"] = [{"targets": [alertmanager]}]
    (job,) = config["scrape_configs"]
    assert job["job_name"] == JOB
    job.update(scrape_interval="1s", scrape_timeout="1s", static_configs=[{"targets": [exporter]}])
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return str(path)


class PromAPI:
    def __init__(self, url: str) -> None:
        self.url = url

    def query(self, expr: str) -> list[dict[str, Any]]:
        answer = requests.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10)
        body = answer.json()
        assert body["status"] == "success", (expr, body)
        return body["data"]["result"]

    def series(self, match: str) -> list[dict[str, str]]:
        answer = requests.get(f"{self.url}/api/v1/series", params={"match[]": match}, timeout=10)
        body = answer.json()
        assert body["status"] == "success", (match, body)
        return body["data"]

    def alerts(self) -> list[dict[str, Any]]:
        return requests.get(f"{self.url}/api/v1/alerts", timeout=10).json()["data"]["alerts"]


@pytest.fixture
def stack(tmp_path) -> Iterator[dict[str, Any]]:
    """Simulator, exporter, webhook, Alertmanager and Prometheus, all on loopback."""
    sim = Simulator(api_key=API_KEY, page_size=100, seed=11).start()
    try:
        sim.freeze(at=ALL_REPORTS_IN)
        sim.add_tag(HEALTHY)
        sim.add_tag(RECOVERED)  # "failing" starts healthy
        config = replace(
            make_config(sim, [HEALTHY.name, FAILING.name]), account=AccountConfig(enabled=True)
        )
        with serve(config) as exporter_url, Webhook() as webhook:
            am_port, prom_port = free_port(), free_port()
            am_url, prom_url = f"http://127.0.0.1:{am_port}", f"http://127.0.0.1:{prom_port}"
            alertmanager = [
                binary("prometheus-alertmanager", "alertmanager"),
                f"--config.file={alertmanager_config(tmp_path / 'am.yml', webhook.url)}",
                f"--storage.path={tmp_path / 'am-data'}",
                f"--web.listen-address=127.0.0.1:{am_port}",
                "--cluster.listen-address=",  # no gossip port
            ]
            exporter_address = exporter_url.removeprefix("http://")
            prometheus = [
                binary("prometheus"),
                "--config.file="
                + prometheus_config(
                    tmp_path / "prometheus.yml",
                    exporter_address,
                    f"127.0.0.1:{am_port}",
                    scaled_alert_rules(tmp_path / "alerts.yml"),
                ),
                f"--storage.tsdb.path={tmp_path / 'prom-data'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
            ]
            with (
                process(alertmanager, tmp_path / "alertmanager.log", f"{am_url}/-/ready"),
                process(prometheus, tmp_path / "prometheus.log", f"{prom_url}/-/ready"),
            ):
                yield {
                    "sim": sim,
                    "prom": PromAPI(prom_url),
                    "am_url": am_url,
                    "webhook": webhook,
                    "instance": exporter_address,
                }
    finally:
        sim.stop()


def check_dashboard_queries(prom: PromAPI, instance: str) -> None:
    """Every panel query, variables substituted as Grafana would, returns data."""
    board = load_dashboard()
    # A selected value is regex-escaped, then escaped for a PromQL string, as Grafana does.
    escaped = re.escape(instance).replace("\\", "\\\\")
    values = {"job": JOB, "instance": escaped, "tag": "healthy|failing"}
    for variable in board["templating"]["list"]:
        match = re.fullmatch(r"label_values\((.+), (\w+)\)", variable.get("query", ""))
        if variable["type"] == "query":
            assert match, variable["query"]
            found = prom.series(substitute(match.group(1), values))
            assert {s.get(match.group(2)) for s in found} - {None}, variable["name"]
    for panel in panels(board):
        for target in panel.get("targets", []):
            expr = substitute(target["expr"], values)
            assert prom.query(expr), f"panel {panel['title']!r} would show No data: {expr}"


def test_not_delivered_alert_reaches_the_receiver(stack):
    prom, webhook, sim = stack["prom"], stack["webhook"], stack["sim"]
    # Three scrapes at least, so that rate() and increase() have data; then the dashboard.
    wait_for(
        "3 scrapes and the recording rules",
        lambda: (
            prom.query(f'count_over_time(up{{job="{JOB}"}}[1m]) >= 3')
            and len(prom.query("tag:sms_not_delivered:ratio")) == 2
        ),
    )
    check_dashboard_queries(prom, stack["instance"])

    sim.add_tag(FAILING)
    critical = wait_for(
        "the critical alert at the webhook",
        lambda: [
            (receiver, alert)
            for receiver, alert in webhook.alerts()
            if alert["labels"]["alertname"] == "SmsNotDeliveredShareCritical"
            and alert["status"] == "firing"
        ],
    )
    receiver, alert = critical[0]
    assert receiver == "sms-critical"
    assert alert["labels"] == {
        "alertname": "SmsNotDeliveredShareCritical",
        "severity": "critical",
        "job": JOB,
        "instance": stack["instance"],
        "tag": "failing",
    }
    assert alert["annotations"]["summary"].startswith("SMS tag failing: ")
    assert alert["annotations"]["runbook_url"] == "docs/runbook.md#smsnotdeliveredsharecritical"

    # The warning fires later (longer `for:`) and is inhibited by the critical one.
    def warning_in_alertmanager() -> list[dict[str, Any]]:
        found = requests.get(f"{stack['am_url']}/api/v2/alerts", timeout=10).json()
        return [a for a in found if a["labels"]["alertname"] == "SmsNotDeliveredShareHigh"]

    (warning,) = wait_for("the warning in Alertmanager", warning_in_alertmanager)
    assert warning["labels"]["tag"] == "failing"
    assert warning["status"]["state"] == "suppressed" and warning["status"]["inhibitedBy"]

    # Nothing for the healthy tag, nor anything else, in Prometheus or at the webhook.
    raised = {(a["labels"]["alertname"], a["labels"].get("tag")) for a in prom.alerts()}
    assert raised == {
        ("SmsNotDeliveredShareCritical", "failing"),
        ("SmsNotDeliveredShareHigh", "failing"),
    }
    assert {(r, a["labels"]["alertname"]) for r, a in webhook.alerts()} == {
        ("sms-critical", "SmsNotDeliveredShareCritical")
    }

    # The campaign recovers: the receiver is told the alert is resolved.
    sim.add_tag(RECOVERED)
    wait_for(
        "the resolved notification",
        lambda: any(
            a["labels"]["alertname"] == "SmsNotDeliveredShareCritical" and a["status"] == "resolved"
            for _, a in webhook.alerts()
        ),
    )
    assert not [a for _, a in webhook.alerts() if a["labels"].get("tag") == "healthy"]
