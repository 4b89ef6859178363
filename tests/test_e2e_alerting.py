"""End to end: simulator -> exporter -> a real Prometheus (with the repo's rules) -> a real
Alertmanager (with the repo's routes and inhibitions) -> a webhook receiver run by this test.

Long-lived tags, as people use them: tens of thousands of messages each, a few percent Not
delivered, new messages arriving all the time (the test appends them to the simulator's static
message lists). When the new messages of one tag start failing, its critical Not-delivered
alert must reach the critical receiver with the right labels, the warning must be inhibited, a
healthy long-lived tag and a finished campaign with a bad lifetime share must raise nothing, and
the alert must resolve once the new messages are delivered again. When the new messages of
another tag stop getting reports, the stuck alert must reach the warning receiver, while a tag
with only old never-reported messages raises nothing. In the same run, every query of every
dashboard panel must return data (the exporter reads the account's credit too).

What is not verbatim, and why: the alert rules are loaded from a copy whose `for:` durations
are divided by 60 (15m -> 15s), and the Alertmanager config from a copy with short group
timers and receivers pointed at this test's webhook. The test asserts the copies differ from
the repo's files in nothing else. The recent windows (15 m, 1 h, 3 h) are not scaled: the whole
run fits in them. The `for:` semantics themselves are unit-tested at full length by promtool
(tests/test_prometheus_rules.py).
"""

from __future__ import annotations

import copy
import json
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from smsp_exporter.config import AccountConfig
from smsp_exporter.simulator import Message, Simulator

from .helpers import API_KEY, free_port, make_config, serve
from .monitoring import (
    ALERT_RULES,
    ALERTMANAGER_YML,
    PROMETHEUS_YML,
    RECORDING_RULES,
    RULE_FILES,
    PromAPI,
    binary,
    load_dashboard,
    panels,
    process,
    substitute,
    wait_for,
)

JOB = "smsp-exporter"
FOR_SCALE = 60  # the copy's `for:` are the repo's divided by this
TICK = 0.5  # seconds between two batches of new messages
BATCH = 40  # new messages per tag and batch
DAYS_AGO = 5 * 86400
TAGS = ("otp", "healthy", "campaign", "stall", "residue")


class LongLivedTags:
    """The simulator's tags as static message lists that grow by a batch every TICK, from a
    thread; `mode[tag]` says what the next batches are. Dates are wall-clock Unix times (the
    exporter ages Waiting messages against its own clock): a report is dated when it arrives,
    a Waiting message when it was sent.

    - otp: 20,000 old messages (96% Delivered, 3% Not delivered, 1% Waiting for days: never
      reported); healthy: the same with 10,000; batches "healthy" (39 Delivered, 1 Not
      delivered), "failing" (16 and 24), "recovered" (400 Delivered).
    - campaign: a finished campaign, 5,000 old messages, 30% Not delivered; no batch.
    - stall: a tag that started with the monitoring: 300 old messages never reported, then
      batches "healthy", or "stalled" (Waiting, sent 45 minutes ago: no report came).
    - residue: 5,000 old messages with 1% never reported; no batch.
    """

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.lists: dict[str, list[Message]] = {tag: [] for tag in TAGS}
        self.mode = {"otp": "healthy", "healthy": "healthy", "stall": "healthy"}
        self.stop = threading.Event()
        old = time.time() - DAYS_AGO
        for tag, size in (("otp", 20_000), ("healthy", 10_000), ("residue", 5_000)):
            self.add(tag, size * 96 // 100, "Delivered", old)
            self.add(tag, size * 3 // 100, "Not delivered", old)
            self.add(tag, size // 100, "Waiting", old)
        self.add("campaign", 3_500, "Delivered", old)
        self.add("campaign", 1_500, "Not delivered", old)
        self.add("stall", 300, "Waiting", old)
        for tag in TAGS:
            self.publish(tag)
        self.thread = threading.Thread(target=self.run, daemon=True)

    def add(self, tag: str, count: int, status: str, date: float) -> None:
        messages = self.lists[tag]
        start = len(messages)
        messages.extend(
            Message(phone=f"+336{i:08d}", status=status, stop=False, date=int(date))
            for i in range(start, start + count)
        )

    def publish(self, tag: str) -> None:
        self.sim.set_messages(tag, self.lists[tag])

    def batch(self, tag: str, mode: str) -> None:
        now = time.time()
        if mode == "healthy":
            self.add(tag, BATCH - 1, "Delivered", now)
            self.add(tag, 1, "Not delivered", now)
        elif mode == "failing":
            self.add(tag, 16, "Delivered", now)
            self.add(tag, 24, "Not delivered", now)
        elif mode == "recovered":
            self.add(tag, 10 * BATCH, "Delivered", now)
        elif mode == "stalled":
            self.add(tag, BATCH, "Waiting", now - 45 * 60)
        self.publish(tag)

    def run(self) -> None:
        while not self.stop.wait(TICK):
            for tag, mode in list(self.mode.items()):
                self.batch(tag, mode)

    def start(self) -> None:
        self.thread.start()

    def __enter__(self) -> LongLivedTags:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join(timeout=10)


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
    # 2 s to read the tags: whole reads of tens of thousands of messages on a loaded machine.
    job.update(scrape_interval="2s", scrape_timeout="2s", static_configs=[{"targets": [exporter]}])
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return str(path)


@pytest.fixture
def stack(tmp_path) -> Iterator[dict[str, Any]]:
    """Simulator, exporter, webhook, Alertmanager and Prometheus, all on loopback."""
    # One page per tag (whole reads are cheap), and credit for the whole run.
    sim = Simulator(api_key=API_KEY, page_size=100_000, seed=11, credits_sms=10**9).start()
    try:
        tags = LongLivedTags(sim)
        config = replace(make_config(sim, TAGS), account=AccountConfig(enabled=True))
        with serve(config) as exporter_url, Webhook() as webhook, tags:
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
                    "tags": tags,
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
    values = {"job": JOB, "instance": escaped, "tag": "|".join(TAGS)}
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


def firing(webhook: Webhook, alertname: str) -> list[tuple[str, dict[str, Any]]]:
    return [
        (receiver, alert)
        for receiver, alert in webhook.alerts()
        if alert["labels"]["alertname"] == alertname and alert["status"] == "firing"
    ]


def test_long_lived_tags_alert_on_what_happens_now(stack):
    prom, webhook, tags = stack["prom"], stack["webhook"], stack["tags"]
    # Prometheus sees the "stall" tag before it has any report (it started with the
    # monitoring); then new messages arrive.
    wait_for("a first scrape", lambda: len(prom.query("tag:sms_messages_final:sum")) == len(TAGS))
    tags.start()
    # A few scrapes so that delta() has data; then the dashboard, before anything fails.
    wait_for(
        "3 scrapes and the recent recording rules",
        lambda: (
            prom.query(f'count_over_time(up{{job="{JOB}"}}[1m]) >= 3')
            and len(prom.query("tag:sms_not_delivered:ratio15m")) == 3
            and prom.query("tag:sms_waiting_30m_3h:ratio")
        ),
    )
    check_dashboard_queries(prom, stack["instance"])
    # The finished campaign's lifetime share is over the critical threshold: the old
    # lifetime alerts would page for it.
    (campaign,) = prom.query('tag:sms_not_delivered:ratio{tag="campaign"}')
    assert float(campaign["value"][1]) == 0.3

    tags.mode["otp"] = "failing"
    tags.mode["stall"] = "stalled"
    (receiver, alert), *_ = wait_for(
        "the critical alert at the webhook",
        lambda: firing(webhook, "SmsNotDeliveredShareCritical"),
    )
    assert receiver == "sms-critical"
    assert alert["labels"] == {
        "alertname": "SmsNotDeliveredShareCritical",
        "severity": "critical",
        "job": JOB,
        "instance": stack["instance"],
        "tag": "otp",
    }
    assert alert["annotations"]["summary"].startswith("SMS tag otp: ")
    assert alert["annotations"]["runbook_url"].endswith("#smsnotdeliveredsharecritical")
    # Its lifetime share has hardly moved: 3% of 20,000 and a few batches.
    (otp,) = prom.query('tag:sms_not_delivered:ratio{tag="otp"}')
    assert float(otp["value"][1]) < 0.10

    # The warning fires later (longer `for:`) and is inhibited by the critical one.
    def warning_in_alertmanager() -> list[dict[str, Any]]:
        found = requests.get(f"{stack['am_url']}/api/v2/alerts", timeout=10).json()
        return [a for a in found if a["labels"]["alertname"] == "SmsNotDeliveredShareHigh"]

    (warning,) = wait_for("the warning in Alertmanager", warning_in_alertmanager)
    assert warning["labels"]["tag"] == "otp"
    assert warning["status"]["state"] == "suppressed" and warning["status"]["inhibitedBy"]

    (receiver, stuck), *_ = wait_for(
        "the stuck alert at the webhook", lambda: firing(webhook, "SmsMessagesStuckWaiting")
    )
    assert receiver == "sms-warning"
    assert stuck["labels"]["tag"] == "stall"

    # Nothing for the healthy tag, the finished campaign or the old unreported messages, nor
    # anything else, in Prometheus or at the webhook.
    raised = {(a["labels"]["alertname"], a["labels"].get("tag")) for a in prom.alerts()}
    assert raised == {
        ("SmsNotDeliveredShareCritical", "otp"),
        ("SmsNotDeliveredShareHigh", "otp"),
        ("SmsMessagesStuckWaiting", "stall"),
    }
    assert {(r, a["labels"]["alertname"]) for r, a in webhook.alerts()} == {
        ("sms-critical", "SmsNotDeliveredShareCritical"),
        ("sms-warning", "SmsMessagesStuckWaiting"),
    }

    # The new messages are delivered again: the receiver is told the alert is resolved.
    tags.mode["otp"] = "recovered"
    wait_for(
        "the resolved notification",
        lambda: any(
            a["labels"]["alertname"] == "SmsNotDeliveredShareCritical" and a["status"] == "resolved"
            for _, a in webhook.alerts()
        ),
    )
    quiet = {"healthy", "campaign", "residue"}
    assert not [a for _, a in webhook.alerts() if a["labels"].get("tag") in quiet]
